/*
 * specdec_exact_index(op): the value of the exact Python int op as a
 * non-negative Py_ssize_t, or -1 when it is negative or does not fit.
 *
 * Draft tokens are small ints; most fit in one internal digit of CPython's
 * int, whose value can be read without a call.  The digit layout is
 * CPython's own: public since 3.12 (PyUnstable_Long_CompactValue), the
 * PyLongObject struct before.  Anything else goes through
 * PyLong_AsLongLongAndOverflow, which never raises for an int.
 */
#ifndef SPECDEC_EXACT_INT_H
#define SPECDEC_EXACT_INT_H

#include <Python.h>

#if !defined(PYPY_VERSION) && PY_VERSION_HEX < 0x030B0000
#include "longintrepr.h"            /* Python.h includes it from 3.11 */
#endif

static inline Py_ssize_t specdec_exact_index_slow(PyObject *op)
{
    int overflow = 0;
    long long value = PyLong_AsLongLongAndOverflow(op, &overflow);
    return (overflow || value < 0 || (unsigned long long)value > (unsigned long long)PY_SSIZE_T_MAX)
           ? -1 : (Py_ssize_t)value;
}

static inline Py_ssize_t specdec_exact_index(PyObject *op)
{
#if defined(PYPY_VERSION)
    return specdec_exact_index_slow(op);
#elif PY_VERSION_HEX >= 0x030C0000
    if (PyUnstable_Long_IsCompact((PyLongObject *)op)) {
        Py_ssize_t value = PyUnstable_Long_CompactValue((PyLongObject *)op);
        return value < 0 ? -1 : value;
    }
    return specdec_exact_index_slow(op);
#else
    Py_ssize_t size = Py_SIZE(op);
    if (size == 0)
        return 0;
    if (size == 1)
        return (Py_ssize_t)((PyLongObject *)op)->ob_digit[0];
    return size < 0 ? -1 : specdec_exact_index_slow(op);
#endif
}

#endif
