"""The drop-in: the layer between the reference's Python inputs and the kernel.

It reads the reference's inputs (lists of lists, NumPy arrays, other
sequences and buffers) without converting whole rows until the algorithm needs
them, validates them with errors that name the argument and the position,
draws uniforms in the reference's order, and builds the reference's result
dict.  Two-dimensional float arrays go straight to the kernel's ``verify_row``;
rows given as Python sequences are read here, element by element, by a loop
that follows the same rules (R1-R8) and samples with the same kernel functions.
The GIL is held throughout: use ``verify_batch`` for GIL-free batches.

Numbers with their own arithmetic (a NumPy ``float32`` scalar, a ``Fraction``,
a ``Decimal``, an int beyond 2**53) are not doubles: the reference computes
with them in their arithmetic.  When the loop meets one among the entries or
uniforms it reads, the call starts again in the reference itself, from the
same uniforms, reading the same rows through ``CheckedRows`` (the same checks).
"""
import os
from collections.abc import Mapping, Set
from decimal import Decimal
from fractions import Fraction

import numpy as np

cimport cython
cimport numpy as cnp
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_AsDouble, PyFloat_CheckExact
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE, PyList_New, PyList_SET_ITEM
from cpython.long cimport (PyLong_AsLongLongAndOverflow, PyLong_CheckExact, PyLong_FromDouble,
                           PyLong_FromSsize_t)
from cpython.number cimport PyNumber_Index
from cpython.complex cimport PyComplex_Check
from cpython.object cimport PyObject, PyObject_TypeCheck, PyTypeObject
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.ref cimport Py_INCREF
from libc.float cimport DBL_MAX
from libc.math cimport INFINITY, nextafter
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy

from specdec_fast._kernel cimport (BAD_DRAFT, BAD_DRAFT_VALUE, BAD_TARGET, BAD_TARGET_VALUE, EXACT,
                                   OUT_OF_UNIFORMS, REFERENCE, SUM_FLOAT, SUM_INT, SUM_OTHER,
                                   UniformStream, VerifyOutcome,
                                   any_order_sum, bonus_follows, cumulative_sample, is_probability,
                                   next_uniform, residual_sample,
                                   verify_row)
from specdec_fast._rng cimport Rng, ready, xoshiro256plus_next_double, xoshiro256plus_state
from specdec_fast.reference import speculative_decode_sim as reference_sim

cnp.import_array()

cdef extern from "Python.h":
    # Borrowed-pointer forms of the item macros, so hot loops do no refcounting.
    PyObject** PySequence_Fast_ITEMS(object seq)
    Py_ssize_t PySequence_Fast_GET_SIZE(object seq)
    PyObject** PySequence_Fast_ITEMS_ptr "PySequence_Fast_ITEMS"(PyObject* seq)
    Py_ssize_t PySequence_Fast_GET_SIZE_ptr "PySequence_Fast_GET_SIZE"(PyObject* seq)
    bint PyFloat_CheckExact_ptr "PyFloat_CheckExact"(PyObject* op)
    bint PyFloat_Check_ptr "PyFloat_Check"(PyObject* op)
    double PyFloat_AS_DOUBLE_ptr "PyFloat_AS_DOUBLE"(PyObject* op)
    bint PyLong_CheckExact_ptr "PyLong_CheckExact"(PyObject* op)
    bint PyLong_Check_ptr "PyLong_Check"(PyObject* op)
    bint PyList_CheckExact_ptr "PyList_CheckExact"(PyObject* op)
    bint PyTuple_CheckExact_ptr "PyTuple_CheckExact"(PyObject* op)
    Py_ssize_t PyList_GET_SIZE_ptr "PyList_GET_SIZE"(PyObject* op)
    PyObject* PyList_GET_ITEM_ptr "PyList_GET_ITEM"(PyObject* op, Py_ssize_t i)
    PyObject* PyTuple_GET_ITEM_ptr "PyTuple_GET_ITEM"(PyObject* op, Py_ssize_t i)
    void PyList_SET_ITEM_ptr "PyList_SET_ITEM"(PyObject* op, Py_ssize_t i, PyObject* item)

cdef extern from "Python.h":
    # Just enough of a type object to tell whose arithmetic its instances use.
    ctypedef struct PyNumberMethods:
        void* nb_add
        void* nb_subtract
        void* nb_true_divide
    ctypedef struct NumberType "PyTypeObject":
        PyNumberMethods* tp_as_number
        void* tp_richcompare
    NumberType PyFloat_Type
    NumberType PyLong_Type
    NumberType* Py_TYPE_ptr "Py_TYPE"(PyObject* op)
    bint PyType_IsSubtype(NumberType* a, NumberType* b)

cdef extern from "Python.h":
    # PyFloat_AsDouble without Cython's error check: the caller looks at the error.
    double PyFloat_AsDouble_noraise "PyFloat_AsDouble"(PyObject* op) noexcept
    PyObject* PyErr_Occurred() noexcept
    int PyErr_ExceptionMatches(object exc) noexcept
    void PyErr_Clear() noexcept

cdef extern from "exact_int.h":
    # An exact int's value if it is in [0, PY_SSIZE_T_MAX], else -1; never raises.
    Py_ssize_t specdec_exact_index(PyObject* op) noexcept

cdef Rng default_rng = Rng()


def seed(value=None):
    """Reseed the module's default generator (``None``: from OS entropy)."""
    default_rng.state = Rng(value).state


def _reseed_after_fork():
    """A forked child (a multiprocessing worker) reseeds the default generator from OS
    entropy, as the random module does: otherwise every worker would repeat the
    parent's draws."""
    seed(None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed_after_fork)


def get_default_rng():
    """The generator used when a call passes neither ``rng`` nor ``uniforms``."""
    return default_rng


# --------------------------------------------------------------------------
# Probability matrices: a 2-D array read in place, or a list of rows.

cdef struct Matrix:
    char* data              # a 2-D array: row i at data + i * row_stride; else NULL
    Py_ssize_t row_stride
    bint single             # elements are float32 (else float64)
    PyObject* rows          # when data is NULL: the list or tuple of rows, read live
    Py_ssize_t nrows        # rows in the argument when the call began
    bint hand_over          # an entry with its own arithmetic raises OwnArithmetic
    bint integral           # a float64 copy of an int or bool array, whose tolist() holds ints


cdef inline char dtype_kind(object arr):
    """The array's dtype kind ('f', 'i', 'u', 'b', 'O', ...), read without Python attributes."""
    return (<cnp.ndarray>arr).descr.kind


cdef inline bint in_place_dtype(cnp.ndarray arr):
    """float32 or float64, native order, aligned, last axis contiguous."""
    cdef int t = cnp.PyArray_TYPE(arr)
    if t != cnp.NPY_DOUBLE and t != cnp.NPY_FLOAT:
        return False
    if not cnp.PyArray_ISNOTSWAPPED(arr) or not cnp.PyArray_ISALIGNED(arr):
        return False
    return (cnp.PyArray_NDIM(arr) == 0
            or cnp.PyArray_STRIDE(arr, cnp.PyArray_NDIM(arr) - 1) == cnp.PyArray_ITEMSIZE(arr))


cdef cnp.ndarray as_real_array(object obj, str name):
    """``obj`` as an array of real numbers: in place if possible, else float64."""
    cdef cnp.ndarray arr = obj if cnp.PyArray_Check(obj) else np.asarray(obj)
    if in_place_dtype(arr):
        return arr
    if dtype_kind(arr) not in b"fiub":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float64)


cdef bint is_buffer(object obj):
    try:
        memoryview(obj)
    except TypeError:
        return False
    return True


cdef object open_matrix(object obj, str name, Py_ssize_t need, Py_ssize_t readable,
                        Py_ssize_t vocab_size, Matrix* m):
    """Check ``obj`` has ``need`` rows of at least ``vocab_size`` entries and fill ``m``.

    Of a sequence, the first ``readable`` rows (those the call may read) are
    checked.  Returns the object that keeps ``m``'s memory alive.
    """
    cdef cnp.ndarray arr
    cdef PyObject* row
    cdef PyObject** items
    cdef Py_ssize_t i, size
    m.data = NULL
    m.rows = NULL
    m.hand_over = False
    m.integral = False
    if cnp.PyArray_CheckExact(obj) and in_place_dtype(<cnp.ndarray>obj):
        return open_array(<cnp.ndarray>obj, name, need, readable, vocab_size, m)
    if type(obj) is not list and type(obj) is not tuple:
        obj = rows_or_array(obj, name, readable)
        if cnp.PyArray_Check(obj) and cnp.PyArray_NDIM(obj) == 2 and items_need_python(obj):
            obj = list(obj)     # its rows, whose entries are read as the reference's
    if type(obj) is list or type(obj) is tuple:
        m.nrows = PySequence_Fast_GET_SIZE(obj)
        if m.nrows < need:
            raise ValueError(f"{name} has {m.nrows} rows, fewer than the {need} it needs")
        # The rows are read where they are, as the reference reads them; each
        # read checks the row is still there (user code run by the call, a
        # __float__ say, may have removed or shortened it).
        m.rows = <PyObject*>obj
        items = PySequence_Fast_ITEMS(obj)
        size = m.nrows
        for i in range(min(m.nrows, readable)):
            if i < size:
                row = items[i]
                if PyList_CheckExact_ptr(row) and PyList_GET_SIZE_ptr(row) >= vocab_size:
                    continue
            check_row(row_at(m, i, name), name, i, vocab_size)
            # check_row may have run user code (a __len__) that changed the list.
            items = PySequence_Fast_ITEMS(obj)
            size = PySequence_Fast_GET_SIZE(obj)
        return obj
    m.integral = cnp.PyArray_Check(obj) and dtype_kind(obj) in b"iub"
    return open_array(as_real_array(obj, name), name, need, readable, vocab_size, m)


cdef cnp.ndarray open_array(cnp.ndarray arr, str name, Py_ssize_t need, Py_ssize_t readable,
                            Py_ssize_t vocab_size, Matrix* m):
    """``open_matrix`` of an array to read in place."""
    if cnp.PyArray_NDIM(arr) != 2:
        raise ValueError(f"{name} must be 2-D (rows by vocabulary), got {cnp.PyArray_NDIM(arr)}-D")
    m.nrows = cnp.PyArray_DIM(arr, 0)
    if m.nrows < need:
        raise ValueError(f"{name} has {m.nrows} rows, fewer than the {need} it needs")
    if min(m.nrows, readable) > 0 and cnp.PyArray_DIM(arr, 1) < vocab_size:
        raise ValueError(f"{name}[0] has {cnp.PyArray_DIM(arr, 1)} entries, "
                         f"fewer than vocab_size={vocab_size}")
    m.data = <char*>cnp.PyArray_DATA(arr)
    m.row_stride = cnp.PyArray_STRIDE(arr, 0)
    m.single = cnp.PyArray_TYPE(arr) == cnp.NPY_FLOAT
    return arr


cdef bint items_need_python(cnp.ndarray arr) except -1:
    """Whether the array's ``tolist()`` holds numbers with their own arithmetic, which
    a float64 copy would round: long doubles wider than a double, ints beyond 2**53."""
    cdef char kind = dtype_kind(arr)
    if kind == b"f":
        return cnp.PyArray_ITEMSIZE(arr) > 8 and np.finfo(arr.dtype).nmant > 52
    if kind in b"iu" and cnp.PyArray_ITEMSIZE(arr) > 4 and cnp.PyArray_SIZE(arr) > 0:
        return arr.max() > EXACT_INT_LIMIT or arr.min() < -EXACT_INT_LIMIT
    return False


cdef object rows_or_array(object obj, str name, Py_ssize_t readable):
    """A matrix argument that is not a list or tuple: an array to read in place,
    or a private list of its rows (the first ``readable``, those a call may read)."""
    if cnp.PyArray_Check(obj) and cnp.PyArray_TYPE(obj) == cnp.NPY_OBJECT:
        if not 1 <= cnp.PyArray_NDIM(obj) <= 2:
            raise ValueError(f"{name} must be 2-D (rows by vocabulary) or a 1-D array of rows, "
                             f"got {cnp.PyArray_NDIM(obj)}-D")
        return list(obj)        # the rows of an object array, read as a sequence's
    if cnp.PyArray_Check(obj):
        return obj
    if isinstance(obj, (str, bytes)) or not (hasattr(obj, "__len__") or hasattr(obj, "__array__")):
        raise TypeError(f"{name} must be a sequence of rows or a 2-D array, "
                        f"not {type(obj).__name__}")
    if hasattr(obj, "__array__") or is_buffer(obj):
        try:
            return np.asarray(obj)
        except (TypeError, RuntimeError) as exc:    # a bfloat16 or requires_grad tensor
            raise TypeError(f"{name} cannot be read as an array "
                            f"({type(exc).__name__}: {exc})") from exc
    return read_items(obj, name, readable)


cdef list read_items(object obj, str name, Py_ssize_t limit):
    """The first ``limit`` items of a sequence, read as the reference reads it
    (``len(obj)``, then ``obj[i]``: a subclass's own ``__len__`` and
    ``__getitem__`` count, not its storage), into a private list that code run
    later by the call cannot change."""
    cdef Py_ssize_t i, n
    cdef list items = []
    if not hasattr(type(obj), "__getitem__"):
        raise TypeError(f"{name} must be a sequence, not {type(obj).__name__}")
    n = len(obj)
    for i in range(min(n, limit)):
        try:
            items.append(obj[i])
        except LookupError as exc:
            raise ValueError(f"{name}[{i}] cannot be read although len({name}) is {n} "
                             f"({type(exc).__name__}: {exc})") from None
    return items


cdef inline Py_ssize_t row_count(Matrix* m) noexcept:
    """The number of rows now (code run by the call may have added or removed some)."""
    return m.nrows if m.data != NULL else PySequence_Fast_GET_SIZE_ptr(m.rows)


cdef object row_at(Matrix* m, Py_ssize_t i, str name):
    """Row ``i`` of a matrix of rows as it is now, checked to be there."""
    if i >= PySequence_Fast_GET_SIZE_ptr(m.rows):
        raise ValueError(f"{name} changed size while being read")
    return <object>PySequence_Fast_ITEMS_ptr(m.rows)[i]


cdef object held_row(Matrix* m, Py_ssize_t i, Py_ssize_t n, str name):
    """Row ``i`` as it is now, checked to still hold ``n`` entries."""
    cdef object row = row_at(m, i, name)
    if (PyList_GET_SIZE(row) if type(row) is list else row_length(row, name, i)) < n:
        raise ValueError(f"{name}[{i}] changed size while being read")
    return row


cdef int check_row(object row, str name, Py_ssize_t i, Py_ssize_t vocab_size) except -1:
    """A row must be a 1-D sequence with at least ``vocab_size`` entries."""
    cdef Py_ssize_t length = row_length(row, name, i)
    if length < vocab_size:
        raise ValueError(f"{name}[{i}] has {length} entries, fewer than vocab_size={vocab_size}")
    return 0


cdef Py_ssize_t row_length(object row, str name, Py_ssize_t i) except -1:
    """The length of a row, checked to be a 1-D sequence of numbers."""
    if type(row) is list or type(row) is tuple:
        return PySequence_Fast_GET_SIZE(row)
    if cnp.PyArray_Check(row):
        if cnp.PyArray_NDIM(row) != 1:
            raise ValueError(f"{name}[{i}] must be 1-D, got {cnp.PyArray_NDIM(row)}-D")
        if dtype_kind(row) not in b"fiubO":     # objects: read one by one
            raise TypeError(f"{name}[{i}] must hold real numbers, got dtype {row.dtype}")
        return cnp.PyArray_DIM(row, 0)
    if isinstance(row, (str, bytes)) or not hasattr(row, "__len__"):
        raise TypeError(f"{name}[{i}] must be a sequence of probabilities, "
                        f"not {type(row).__name__}")
    return len(row)


cdef double as_real(object item, str name, Py_ssize_t i, Py_ssize_t v) except? -1.0:
    """A probability as the reference reads it: any real number, as a double."""
    if PyFloat_CheckExact(item):
        return PyFloat_AS_DOUBLE(item)
    if not PyLong_CheckExact(item) and (isinstance(item, (str, bytes, complex)) or item is None):
        raise TypeError(f"{name}[{i}][{v}] must be a real number, not {type(item).__name__}")
    try:
        return PyFloat_AsDouble(item)
    except OverflowError:
        raise ValueError(f"{name}[{i}][{v}] is too large for a float") from None
    except (TypeError, ValueError):
        raise TypeError(f"{name}[{i}][{v}] must be a real number, "
                        f"not {type(item).__name__}") from None


# --------------------------------------------------------------------------
# Numbers with their own arithmetic: the reference computes in it, so the call
# is handed to the reference (``hand_over`` in ``speculative_decode_sim``).

class OwnArithmetic(Exception):
    """Raised where the compiled loop meets a number that the reference would not
    compute with as a double; caught by ``speculative_decode_sim``."""


cdef object FLOAT64_SCALAR = np.float64
cdef object COMPLEX_SCALAR = np.complexfloating
cdef long long EXACT_INT_LIMIT = 9007199254740992      # 2**53
cdef object ONE = 1                                    # an int, standing for an integral array's entry


class PythonArithmetic:
    """Its type's slots are those of every class that defines arithmetic in Python."""

    def __add__(self, other):
        return NotImplemented

    def __sub__(self, other):
        return NotImplemented

    def __truediv__(self, other):
        return NotImplemented


cdef object PYTHON_ARITHMETIC = PythonArithmetic
cdef object FRACTION = Fraction


cdef bint same_arithmetic(NumberType* t, NumberType* model) noexcept:
    """Whether ``t`` adds, subtracts, divides and compares with ``model``'s functions
    (the operations the reference applies to probabilities and uniforms)."""
    cdef PyNumberMethods* a = t.tp_as_number
    cdef PyNumberMethods* b = model.tp_as_number
    return (a != NULL and t.tp_richcompare == model.tp_richcompare
            and a.nb_add == b.nb_add and a.nb_subtract == b.nb_subtract
            and a.nb_true_divide == b.nb_true_divide)


cdef bint computes_as_double(PyObject* x) noexcept:
    """Whether the reference's arithmetic on ``x`` is IEEE double arithmetic on its
    value: a float (or a subclass keeping float's or NumPy float64's arithmetic),
    or an int (or bool) of at most 2**53 in magnitude, which a double holds exactly."""
    cdef NumberType* t = Py_TYPE_ptr(x)
    cdef int overflow = 0
    cdef long long value
    if PyFloat_CheckExact_ptr(x) or <PyObject*>t == <PyObject*>FLOAT64_SCALAR:
        return True
    if PyFloat_Check_ptr(x):
        return (same_arithmetic(t, &PyFloat_Type)
                or same_arithmetic(t, <NumberType*><PyObject*>FLOAT64_SCALAR))
    if PyLong_Check_ptr(x) and same_arithmetic(t, &PyLong_Type):
        value = PyLong_AsLongLongAndOverflow(<object>x, &overflow)
        return overflow == 0 and -EXACT_INT_LIMIT <= value <= EXACT_INT_LIMIT
    return False


cdef bint own_arithmetic(PyObject* x) noexcept:
    """A number that the reference would compute with in its own arithmetic, with
    no user code run in it or in ``float()``: a NumPy scalar other than float64, a
    ``Decimal``, an int beyond 2**53, a ``Fraction``.  Objects of classes that
    define their arithmetic in Python, and objects without arithmetic, are read
    through ``float()`` (``as_real``), once, as the compiled loop reaches them."""
    cdef NumberType* t = Py_TYPE_ptr(x)
    cdef PyNumberMethods* a = t.tp_as_number
    cdef PyNumberMethods* python = (<NumberType*><PyObject*>PYTHON_ARITHMETIC).tp_as_number
    if computes_as_double(x) or a == NULL:
        return False
    if a.nb_add == NULL and a.nb_subtract == NULL and a.nb_true_divide == NULL:
        return False
    if <PyObject*>t == <PyObject*>FRACTION:
        return True
    return (a.nb_add != python.nb_add and a.nb_subtract != python.nb_subtract
            and a.nb_true_divide != python.nb_true_divide)


cdef int hand_over_if_own(Matrix* m, object item) except -1:
    if m.hand_over and own_arithmetic(<PyObject*>item):
        raise OwnArithmetic()
    return 0


cdef inline bint is_float(PyObject* item) noexcept:
    """A float, or a float subclass (NumPy float64) that computes as one: its value
    is read without user code, and the reference computes with it as a double."""
    return PyFloat_CheckExact_ptr(item) or (PyFloat_Check_ptr(item) and computes_as_double(item))


cdef inline bint quick_entry(Matrix* m, Py_ssize_t i, Py_ssize_t v, double* x) noexcept:
    """Entry ``[i][v]`` into ``x`` when reading it runs no user code (an array's
    entry, or a float in a list row); else False."""
    cdef char* data
    cdef PyObject* row
    cdef PyObject* item
    if m.data != NULL:
        data = m.data + i * m.row_stride
        x[0] = (<float*>data)[v] if m.single else (<double*>data)[v]
        return True
    if i < PySequence_Fast_GET_SIZE_ptr(m.rows):
        row = PySequence_Fast_ITEMS_ptr(m.rows)[i]
        if PyList_CheckExact_ptr(row) and v < PyList_GET_SIZE_ptr(row):
            item = PyList_GET_ITEM_ptr(row, v)
            if is_float(item):
                x[0] = PyFloat_AS_DOUBLE_ptr(item)
                return True
    return False


cdef inline double read_entry(Matrix* m, Py_ssize_t i, Py_ssize_t v, str name) except? -1.0:
    """Entry ``[i][v]`` of the matrix as a double (or ``OwnArithmetic``)."""
    cdef double x
    if quick_entry(m, i, v, &x):
        return x
    return entry_value(m, i, v, name)


cdef double entry_value(Matrix* m, Py_ssize_t i, Py_ssize_t v, str name) except? -1.0:
    """``read_entry`` of an entry that reading may run user code for."""
    item = entry_object(m, i, v, name)
    hand_over_if_own(m, item)
    return as_real(item, name, i, v)


cdef object entry_object(Matrix* m, Py_ssize_t i, Py_ssize_t v, str name):
    """Entry ``[i][v]`` as the object the reference holds before computing with it:
    fetched from the row as it is now, not converted.  An array stands for its
    ``tolist()``: its entry is the Python float, int or bool (or object) found there."""
    cdef object row
    if m.data != NULL:
        if m.integral:
            return PyLong_FromDouble(read_entry(m, i, v, name))    # exact: at most 2**53
        return read_entry(m, i, v, name)
    row = held_row(m, i, v + 1, name)
    if type(row) is list or type(row) is tuple:
        return <object>PySequence_Fast_ITEMS(row)[v]
    if cnp.PyArray_Check(row):
        if in_place_dtype(row):
            if cnp.PyArray_TYPE(row) == cnp.NPY_FLOAT:
                return (<float*>cnp.PyArray_GETPTR1(row, v))[0]
            return (<double*>cnp.PyArray_GETPTR1(row, v))[0]
        return row.item(v)
    return row[v]


cdef struct Row:
    const void* data        # contiguous elements, or NULL
    bint single             # float32 (else float64)


cdef object in_place_row(Matrix* m, Py_ssize_t i, Py_ssize_t n, str name, Row* r):
    """Row ``i`` as contiguous memory when it is an array of at least ``n`` entries
    read in place (else ``r.data`` is NULL).  Returns the row (None for a 2-D array)."""
    cdef object row
    r.data = NULL
    r.single = False
    if m.data != NULL:
        r.data = m.data + i * m.row_stride
        r.single = m.single
        return None
    row = row_at(m, i, name)
    if (type(row) is not list and cnp.PyArray_Check(row) and cnp.PyArray_NDIM(row) == 1
            and in_place_dtype(row) and cnp.PyArray_DIM(row, 0) >= n):
        r.data = cnp.PyArray_DATA(row)
        r.single = cnp.PyArray_TYPE(row) == cnp.NPY_FLOAT
    return row


cdef Py_ssize_t quick_entries(Matrix* m, Py_ssize_t i, Py_ssize_t v, Py_ssize_t stop,
                             double* out, Py_ssize_t* plain_end) noexcept:
    """Copies entries ``[v, stop)`` of row ``i`` to ``out`` up to the first whose
    reading may run user code; returns its index (``stop`` when there is none).
    The entries before ``plain_end[0]`` are exact floats or a float array's."""
    cdef char* data
    cdef PyObject* row
    cdef Py_ssize_t w
    plain_end[0] = v if m.integral else stop
    if m.data != NULL:
        data = m.data + i * m.row_stride
        for w in range(v, stop):
            out[w] = (<float*>data)[w] if m.single else (<double*>data)[w]
        return stop
    if i >= PySequence_Fast_GET_SIZE_ptr(m.rows):
        return v
    row = PySequence_Fast_ITEMS_ptr(m.rows)[i]
    if PyList_CheckExact_ptr(row) or PyTuple_CheckExact_ptr(row):
        if PySequence_Fast_GET_SIZE_ptr(row) < stop:
            return v
        return copy_floats(PySequence_Fast_ITEMS_ptr(row), v, stop, out, plain_end)
    if (cnp.PyArray_Check(<object>row) and cnp.PyArray_NDIM(<object>row) == 1
            and in_place_dtype(<object>row) and cnp.PyArray_DIM(<object>row, 0) >= stop):
        data = <char*>cnp.PyArray_DATA(<object>row)
        for w in range(v, stop):
            out[w] = ((<float*>data)[w] if cnp.PyArray_TYPE(<object>row) == cnp.NPY_FLOAT
                      else (<double*>data)[w])
        return stop
    return v


cdef int read_row_pair(Matrix* target, Matrix* draft, Py_ssize_t i, Py_ssize_t n,
                       double* p, double* q, unsigned char* kinds) except -1:
    """Rows ``i`` of both matrices as float64, read in the reference's order
    (``target[i][v]``, ``draft[i][v]``, then ``v + 1``): runs of entries whose
    reading runs no user code are copied; at an entry that may run some, both
    objects are fetched before either is converted.  Unless NULL, ``kinds``
    (``n`` zeros: floats) gets the ``SumKind`` of each residual."""
    cdef Py_ssize_t v = 0, w, end, stop, window = FIRST_CHUNK, checked = 0, p_plain, q_plain
    while v < n:
        end = min(n, v + window)
        stop = quick_entries(draft, i, v, quick_entries(target, i, v, end, p, &p_plain), q,
                             &q_plain)
        if kinds != NULL:       # the entries just copied, before any user code runs
            record_kinds(target, draft, i, min(p_plain, q_plain, stop), stop, kinds)
        if stop == end:
            v = end
            window = min(2 * window, LAST_CHUNK)
            continue
        # The values read so far come first: an invalid one among them is the error.
        for w in range(checked, stop):
            check_probability(p[w], "target_probs", i, w)
            check_probability(q[w], "draft_probs", i, w)
        p_item = entry_object(target, i, stop, "target_probs")
        q_item = entry_object(draft, i, stop, "draft_probs")
        hand_over_if_own(target, p_item)
        hand_over_if_own(draft, q_item)
        if kinds != NULL:
            kinds[stop] = residual_kind(<PyObject*>p_item, <PyObject*>q_item)
        p[stop] = as_real(p_item, "target_probs", i, stop)
        check_probability(p[stop], "target_probs", i, stop)
        q[stop] = as_real(q_item, "draft_probs", i, stop)
        check_probability(q[stop], "draft_probs", i, stop)
        v = checked = stop + 1
        window = FIRST_CHUNK
    return 0


cdef inline PyObject** sequence_items(Matrix* m, Py_ssize_t i) noexcept:
    """The items of row ``i`` when it is a list or tuple, else NULL (an array)."""
    cdef PyObject* row
    if m.data != NULL or i >= PySequence_Fast_GET_SIZE_ptr(m.rows):
        return NULL
    row = PySequence_Fast_ITEMS_ptr(m.rows)[i]
    if PyList_CheckExact_ptr(row) or PyTuple_CheckExact_ptr(row):
        return PySequence_Fast_ITEMS_ptr(row)
    return NULL


cdef inline PyObject* array_stand_in(Matrix* m) noexcept:
    """What ``residual_kind`` takes for an entry of an array row: an int for an
    integral array (its ``tolist()`` holds ints), else NULL (a float)."""
    return <PyObject*>ONE if m.integral else NULL


cdef void record_kinds(Matrix* target, Matrix* draft, Py_ssize_t i, Py_ssize_t v,
                       Py_ssize_t stop, unsigned char* kinds) noexcept:
    """``kinds[v:stop]`` for entries of row ``i`` copied by ``quick_entries``: floats
    (subclasses too), or arrays' entries."""
    cdef PyObject** p_items = sequence_items(target, i)
    cdef PyObject** q_items = sequence_items(draft, i)
    cdef PyObject* p_item
    cdef PyObject* q_item
    cdef Py_ssize_t w
    if p_items == NULL and q_items == NULL and not (target.integral and draft.integral):
        return
    for w in range(v, stop):
        p_item = p_items[w] if p_items != NULL else array_stand_in(target)
        q_item = q_items[w] if q_items != NULL else array_stand_in(draft)
        if not (plain_float(p_item) and plain_float(q_item)):    # else SUM_FLOAT, 0 already
            kinds[w] = residual_kind(p_item, q_item)


cdef inline bint plain_float(PyObject* x) noexcept:
    return x == NULL or PyFloat_CheckExact_ptr(x)


cdef enum:
    DECLINED = 255          # a subtraction slot that returns NotImplemented for these operands


cdef unsigned char residual_kind(PyObject* p_item, PyObject* q_item) noexcept:
    """The ``SumKind`` of ``p_item - q_item`` in the reference, found the way Python
    picks the subtraction: the right operand's first if its type is a subclass of
    the left's with its own, else the left's, then the other if that one declines.
    float's takes floats and ints (a float), int's only ints (an int), any other
    (NumPy's, say) gives another type.  NULL stands for an array's entry: an array
    stands for its ``tolist()``, so that entry is a float."""
    cdef NumberType* p_type = Py_TYPE_ptr(p_item) if p_item != NULL else &PyFloat_Type
    cdef NumberType* q_type = Py_TYPE_ptr(q_item) if q_item != NULL else &PyFloat_Type
    cdef void* first = subtraction_of(p_type)
    cdef void* second = subtraction_of(q_type)
    cdef unsigned char kind
    if second == first:
        second = NULL
    elif second != NULL and PyType_IsSubtype(q_type, p_type):
        first, second = second, first
    kind = subtraction_result(first, p_item, q_item)
    if kind == DECLINED:
        kind = subtraction_result(second, p_item, q_item)
    return SUM_OTHER if kind == DECLINED else kind


cdef inline void* subtraction_of(NumberType* t) noexcept:
    return t.tp_as_number.nb_subtract if t.tp_as_number != NULL else NULL


cdef unsigned char subtraction_result(void* slot, PyObject* p_item, PyObject* q_item) noexcept:
    """The ``SumKind`` of what ``slot`` returns for the operands, or DECLINED."""
    if slot == NULL:
        return DECLINED
    if slot == subtraction_of(&PyFloat_Type):
        return SUM_FLOAT if real_operand(p_item) and real_operand(q_item) else DECLINED
    if slot == subtraction_of(&PyLong_Type):
        return SUM_INT if int_operand(p_item) and int_operand(q_item) else DECLINED
    return SUM_OTHER


cdef inline bint real_operand(PyObject* x) noexcept:
    return plain_float(x) or PyFloat_Check_ptr(x) or PyLong_Check_ptr(x)


cdef inline bint int_operand(PyObject* x) noexcept:
    return x != NULL and PyLong_Check_ptr(x)


# --------------------------------------------------------------------------
# Uniforms: drawn from an Rng, or replayed from a sequence, in the reference's order.

cdef object open_uniforms(object rng, object uniforms, Py_ssize_t needed, double* room,
                          UniformStream* stream, bint* own):
    """Fill ``stream`` from ``rng``, or from ``uniforms``: every value is checked,
    and the first ``needed`` (the most a call draws) are copied to ``room``, out
    of reach of user code that the call runs later (a ``__float__``, say).
    Returns the generator, or the list of uniforms given as a sequence (None for
    an array); ``own[0]`` tells whether one of the first ``needed`` of those has
    its own arithmetic."""
    cdef cnp.ndarray arr
    cdef const double* values
    cdef Py_ssize_t i, count
    cdef double x
    stream.state = NULL
    stream.values = NULL
    stream.count = 0
    stream.used = 0
    if uniforms is None:
        if rng is None:
            rng = default_rng
        elif not isinstance(rng, Rng):
            try:
                rng = Rng(rng)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"rng: {exc}") from None
        ready(<Rng>rng)
        (<Rng>rng).drawing_calls += 1       # until the call ends: no verify_batch may hold it
        stream.state = &(<Rng>rng).c_state
        return rng
    if rng is not None:
        raise ValueError("pass rng or uniforms, not both")
    if isinstance(uniforms, (str, bytes)):
        raise TypeError("uniforms must be a 1-D sequence of floats in [0, 1), not str")
    if (cnp.PyArray_Check(uniforms) and cnp.PyArray_TYPE(uniforms) != cnp.NPY_OBJECT
            and cnp.PyArray_NDIM(uniforms) == 1 and items_need_python(uniforms)):
        uniforms = uniforms.tolist()    # long doubles: the reference compares in them
    if cnp.PyArray_Check(uniforms) and cnp.PyArray_TYPE(uniforms) != cnp.NPY_OBJECT:
        if dtype_kind(uniforms) not in b"fiu":
            raise TypeError(f"uniforms must hold real numbers, got dtype {uniforms.dtype}")
        if cnp.PyArray_NDIM(uniforms) != 1:
            raise ValueError(f"uniforms must be 1-D, got {cnp.PyArray_NDIM(uniforms)}-D")
        arr = uniforms
        if cnp.PyArray_TYPE(arr) != cnp.NPY_DOUBLE or not cnp.PyArray_ISCARRAY_RO(arr):
            arr = np.ascontiguousarray(uniforms, dtype=np.float64)
        values = <const double*>cnp.PyArray_DATA(arr)
        count = cnp.PyArray_DIM(arr, 0)
        for i in range(count):
            x = values[i]
            if not (0.0 <= x < 1.0):
                raise ValueError(f"uniforms[{i}] = {x!r} is outside [0, 1)")
            if i < needed:
                room[i] = x
    else:
        # A sequence, which has a length and an order: not an iterator (which may
        # never end), a set or a mapping.  (A list or tuple is one: asking the
        # ABCs would cost more than the rest of a short call.)
        if not (PyList_CheckExact_ptr(<PyObject*>uniforms)
                or PyTuple_CheckExact_ptr(<PyObject*>uniforms)) and (
                not hasattr(type(uniforms), "__len__")
                or not (hasattr(type(uniforms), "__iter__")
                        or hasattr(type(uniforms), "__getitem__"))
                or isinstance(uniforms, (Set, Mapping))):
            raise TypeError(f"uniforms must be a 1-D sequence of floats in [0, 1), "
                            f"not {type(uniforms).__name__}")
        items = list(uniforms)
        count = len(items)
        for i in range(count):
            x = as_uniform(items[i], i)
            if i < needed:
                room[i] = x
                own[0] = own[0] or own_arithmetic(<PyObject*>items[i])
        stream.values = room
        stream.count = min(count, needed)
        return items
    stream.values = room
    stream.count = min(count, needed)
    return None


cdef double BELOW_ONE = nextafter(1.0, 0.0)         # 1 - 2**-53, the largest double below 1


cdef double as_uniform(object item, Py_ssize_t i) except? -1.0:
    """Item ``i`` of a sequence of uniforms: a real number in [0, 1)."""
    cdef double x
    if PyFloat_CheckExact(item):
        x = PyFloat_AS_DOUBLE(item)
        if 0.0 <= x < 1.0:
            return x
    if isinstance(item, (str, bytes, complex)) or item is None or (
            hasattr(item, "__len__") and not (cnp.PyArray_Check(item)
                                              and cnp.PyArray_NDIM(item) == 0)):
        raise TypeError(f"uniforms[{i}] must be a real number, not {type(item).__name__}")
    try:
        x = PyFloat_AsDouble(item)
    except (TypeError, ValueError, OverflowError):
        raise TypeError(f"uniforms[{i}] must be a real number in [0, 1), "
                        f"not {item!r}") from None
    if x == 1.0 and own_arithmetic(<PyObject*>item) and item < 1:
        return BELOW_ONE        # below 1 in its own precision (a longdouble, a Fraction)
    if not (0.0 <= x < 1.0):
        raise ValueError(f"uniforms[{i}] = {x!r} is outside [0, 1)")
    return x


cdef inline int draw(UniformStream* stream, double* u, double* drawn) except -1:
    """The next uniform.  A generator's draws are also kept in ``drawn`` (the call's
    K + 2 slots, counted by ``stream.used``): a call handed to the reference
    replays them rather than rewinding the generator, which another thread may
    have drawn from meanwhile (while user code that the call ran let it)."""
    if not next_uniform(stream, u):
        raise out_of_uniforms(stream.count)
    if stream.state != NULL:
        drawn[stream.used] = u[0]
        stream.used += 1
    return 0


cdef out_of_uniforms(Py_ssize_t count):
    return ValueError(f"uniforms: the call needs more than the {count} values given")


# --------------------------------------------------------------------------
# Tokens and sizes.

cdef Py_ssize_t as_size(object value, str name) except -1:
    """A positive size given as an int (or NumPy integer)."""
    cdef Py_ssize_t size
    if PyLong_CheckExact(value):
        size = specdec_exact_index(<PyObject*>value)
        if size >= 1:
            return size
    else:
        if isinstance(value, (bool, float)) or not hasattr(type(value), "__index__"):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        value = value.__index__()
    if not 1 <= value <= PY_SSIZE_T_MAX:
        raise ValueError(f"{name} must be at least 1 and fit in memory, got {value}")
    return value


cdef Py_ssize_t as_token(object item, Py_ssize_t i) except? -2:
    """A draft token as an index: an int (or NumPy integer); -1 when out of range."""
    cdef int overflow = 0
    cdef long long t
    if not PyLong_CheckExact(item):
        if isinstance(item, float) or not hasattr(type(item), "__index__"):
            raise TypeError(f"draft_tokens[{i}] must be an int, not {type(item).__name__}")
        item = item.__index__()
    t = PyLong_AsLongLongAndOverflow(item, &overflow)
    return -1 if overflow or t < 0 or t > PY_SSIZE_T_MAX else <Py_ssize_t>t


cdef object open_tokens(object tokens):
    """The draft tokens as an integer array, or as a list: the argument itself when it
    holds only exact ints (reading those runs no user code), else a private copy."""
    if type(tokens) is list and all_exact_ints(tokens):
        return tokens           # reading exact ints runs no user code: no copy needed
    if cnp.PyArray_Check(tokens):
        if cnp.PyArray_TYPE(tokens) == cnp.NPY_OBJECT:
            pass                # its items, read as a sequence's (below)
        elif dtype_kind(tokens) not in b"iu" and not (cnp.PyArray_SIZE(tokens) == 0
                                                      and dtype_kind(tokens) == b"f"):
            raise TypeError(f"draft_tokens must hold integers, got dtype {tokens.dtype}")
        if cnp.PyArray_NDIM(tokens) != 1:
            raise ValueError(f"draft_tokens must be 1-D, got {cnp.PyArray_NDIM(tokens)}-D")
        if cnp.PyArray_TYPE(tokens) != cnp.NPY_OBJECT:
            return tokens
    if type(tokens) is list or type(tokens) is tuple:
        return list(tokens)     # a private copy: __index__ cannot resize it under us
    if isinstance(tokens, (str, bytes)) or not hasattr(tokens, "__len__"):
        raise TypeError(f"draft_tokens must be a sequence of ints, not {type(tokens).__name__}")
    if hasattr(tokens, "__array__") and not cnp.PyArray_Check(tokens):
        return open_tokens(np.asarray(tokens))     # array-like (a tensor, a Series): its values
    return read_items(tokens, "draft_tokens", PY_SSIZE_T_MAX)


cdef bint all_exact_ints(list items):
    cdef PyObject** item = PySequence_Fast_ITEMS(items)
    cdef Py_ssize_t i
    for i in range(PyList_GET_SIZE(items)):
        if not PyLong_CheckExact_ptr(item[i]):
            return False
    return True


cdef int read_tokens(object tokens, Py_ssize_t K, Py_ssize_t vocab_size, Py_ssize_t* out) except -1:
    """Each draft token must be an integer in [0, vocab_size)."""
    cdef Py_ssize_t i, t
    cdef cnp.ndarray arr
    cdef PyObject* item
    cdef PyObject** items
    if type(tokens) is not list:        # an integer array (open_tokens)
        arr = tokens
        if cnp.PyArray_TYPE(arr) != cnp.NPY_INTP or not cnp.PyArray_ISCARRAY_RO(arr):
            arr = np.ascontiguousarray(tokens, dtype=np.intp)
        for i in range(K):
            out[i] = (<Py_ssize_t*>cnp.PyArray_DATA(arr))[i]
            if not 0 <= out[i] < vocab_size:
                raise ValueError(f"draft_tokens[{i}] = {tokens[i]} is outside "
                                 f"[0, vocab_size={vocab_size})")
        return 0
    items = PySequence_Fast_ITEMS(tokens)
    i = 0
    if PyList_GET_SIZE(tokens) >= K:    # no user code runs in this loop: items stays put
        while i < K:
            item = items[i]
            if not PyLong_CheckExact_ptr(item):
                break
            t = specdec_exact_index(item)
            if <size_t>t >= <size_t>vocab_size:     # also t == -1 (negative or too large)
                break
            out[i] = t
            i += 1
    while i < K:
        out[i] = list_token(tokens, i, vocab_size)
        i += 1
    return 0


cdef inline Py_ssize_t list_token(list tokens, Py_ssize_t i, Py_ssize_t vocab_size) except -1:
    """``tokens[i]`` as it is now, checked to be an integer in [0, vocab_size)."""
    cdef PyObject* item
    cdef Py_ssize_t t
    if i < PyList_GET_SIZE(tokens):
        item = PyList_GET_ITEM_ptr(<PyObject*>tokens, i)
        if PyLong_CheckExact_ptr(item):
            t = specdec_exact_index(item)
            if 0 <= t < vocab_size:
                return t
    return list_token_object(tokens, i, vocab_size)


cdef Py_ssize_t list_token_object(list tokens, Py_ssize_t i, Py_ssize_t vocab_size) except -1:
    """``list_token`` of an item that is not an int in range (or is gone)."""
    cdef Py_ssize_t t
    # User code (a row's __len__, an __index__, a __float__) may have resized the list.
    if i >= PyList_GET_SIZE(tokens):
        raise ValueError("draft_tokens changed size while being read")
    token = tokens[i]           # our own reference: __index__ may drop the list's
    t = specdec_exact_index(<PyObject*>token) if PyLong_CheckExact(token) else as_token(token, i)
    if not 0 <= t < vocab_size:
        raise ValueError(f"draft_tokens[{i}] = {token!r} is outside [0, vocab_size={vocab_size})")
    return t


# --------------------------------------------------------------------------
# Sampling from rows, with errors that name the position.

cdef bad_probability(str name, Py_ssize_t i, Py_ssize_t v, object value):
    return ValueError(f"{name}[{i}][{v}] = {value!r}: probabilities must be finite and non-negative")


cdef inline int check_probability(double x, str name, Py_ssize_t i, Py_ssize_t v) except -1:
    if not is_probability(x):
        raise bad_probability(name, i, v, x)
    return 0


cdef Py_ssize_t sample_residual(Matrix* target, Matrix* draft, Py_ssize_t i, Py_ssize_t n,
                                UniformStream* stream, double* drawn) except -1:
    """R4: a token from max(0, p_i - q_i) normalised; reads both rows whole,
    in place when both are arrays of one dtype, else into float64 copies.  The
    uniform is drawn after the rows are read, as the reference draws it after
    computing the residual: a read that hands the call over, or meets an entry
    that is not a number, has not drawn it.  (Negative, NaN and infinite values
    are found after the draw, by the scan; the reference raises for none of them.)"""
    cdef Row p, q
    cdef Py_ssize_t token, bad = 0
    cdef double u
    cdef double* pair = NULL
    cdef unsigned char* kinds = NULL
    keep_p = in_place_row(target, i, n, "target_probs", &p)
    keep_q = in_place_row(draft, i, n, "draft_probs", &q)
    try:
        if (p.data == NULL or q.data == NULL or p.single != q.single
                or (target.integral and draft.integral)):
            pair = <double*>malloc(2 * max(n, 1) * sizeof(double))
            kinds = <unsigned char*>calloc(max(n, 1), 1)  # the reference's sum() depends on them
            if pair == NULL or kinds == NULL:
                raise MemoryError()
            read_row_pair(target, draft, i, n, pair, pair + n, kinds)
            p.data = pair
            q.data = pair + n
            p.single = q.single = False
        draw(stream, &u, drawn)
        if p.single:
            token = residual_sample(<const float*>p.data, <const float*>q.data, -1, n, u,
                                    kinds, &bad)
        else:
            token = residual_sample(<const double*>p.data, <const double*>q.data, -1, n, u,
                                    kinds, &bad)
        if token == BAD_TARGET:
            raise bad_probability("target_probs", i, bad, row_value(&p, bad))
        if token == BAD_DRAFT:
            raise bad_probability("draft_probs", i, bad, row_value(&q, bad))
        return token
    finally:
        free(pair)
        free(kinds)


cdef inline double row_value(Row* r, Py_ssize_t v) noexcept:
    return (<const float*>r.data)[v] if r.single else (<const double*>r.data)[v]


cdef Py_ssize_t sample_cumulative(Matrix* target, Py_ssize_t i, Py_ssize_t n, double u) except -1:
    """R6: the first v with u <= p_0 + ... + p_v; reads the row up to there."""
    cdef Py_ssize_t token, bad = 0
    cdef Row p
    row = in_place_row(target, i, n, "target_probs", &p)
    if p.data != NULL:
        if p.single:
            token = cumulative_sample(<const float*>p.data, n, u, &bad)
        else:
            token = cumulative_sample(<const double*>p.data, n, u, &bad)
        if token == BAD_TARGET:
            raise bad_probability("target_probs", i, bad, row_value(&p, bad))
        return token
    if whole_items(row, n):
        return sample_cumulative_items(target, i, row, n, u)
    return running_sum_from(target, i, NULL, 0, n, u)


cdef inline bint whole_items(object row, Py_ssize_t n):
    """A list or tuple row holding at least ``n`` items."""
    return (type(row) is list or type(row) is tuple) and PySequence_Fast_GET_SIZE(row) >= n


cdef Py_ssize_t running_sum_from(Matrix* target, Py_ssize_t i, const double* read,
                                 Py_ssize_t count, Py_ssize_t n, double u) except -1:
    """R6 the reference's way: its running sum over the ``count`` values already
    ``read``, then over entries read one at a time from the row as it is now."""
    cdef double cum = 0.0, x
    cdef Py_ssize_t v
    for v in range(n):
        x = read[v] if v < count else read_entry(target, i, v, "target_probs")
        check_probability(x, "target_probs", i, v)
        cum += x
        if u <= cum:
            return v
    return 0


cdef enum:
    SERIAL_ITEMS = 64       # list items the bonus scan sums one by one, as the reference does
    FIRST_CHUNK = 64        # then items read ahead, doubling ...
    LAST_CHUNK = 4096       # ... up to this many at a time


cdef Py_ssize_t copy_floats(PyObject** items, Py_ssize_t v, Py_ssize_t stop,
                            double* out, Py_ssize_t* plain_end) noexcept:
    """Copies ``items[v:stop]`` to ``out[v:stop]`` up to the first that is not a
    float (subclasses count); returns its index (``stop`` when all are).  Unless
    NULL, ``plain_end[0]`` gets an index up to which all are exact floats."""
    cdef PyObject* a
    cdef PyObject* b
    cdef PyObject* c
    cdef PyObject* d
    while v + 4 <= stop:         # four at a time: one branch for four type checks
        a = items[v]
        b = items[v + 1]
        c = items[v + 2]
        d = items[v + 3]
        if not (PyFloat_CheckExact_ptr(a) & PyFloat_CheckExact_ptr(b)
                & PyFloat_CheckExact_ptr(c) & PyFloat_CheckExact_ptr(d)):
            break
        out[v] = PyFloat_AS_DOUBLE_ptr(a)
        out[v + 1] = PyFloat_AS_DOUBLE_ptr(b)
        out[v + 2] = PyFloat_AS_DOUBLE_ptr(c)
        out[v + 3] = PyFloat_AS_DOUBLE_ptr(d)
        v += 4
    if plain_end != NULL:
        plain_end[0] = v
    while v < stop and is_float(items[v]):
        out[v] = PyFloat_AS_DOUBLE_ptr(items[v])
        v += 1
    return v


cdef inline unsigned long long bit_pattern(double x) noexcept:
    cdef unsigned long long bits
    memcpy(&bits, &x, sizeof(bits))
    return bits


cdef inline bint sign_bits_clear(double a, double b, double c, double d) noexcept:
    """None of the four has its sign bit set (a negative number, -0.0, a negative NaN)."""
    return ((bit_pattern(a) | bit_pattern(b) | bit_pattern(c) | bit_pattern(d)) >> 63) == 0


cdef inline Py_ssize_t running_sum_floats(PyObject** items, Py_ssize_t v, Py_ssize_t stop,
                                          double u, double* total, double* out) noexcept:
    """The reference's running sum ``total`` over items[v:stop], copied to ``out``,
    while they are floats and valid probabilities: returns ``~v`` (negative) at
    the item where it reaches ``u``, else the index of the first other item
    (``stop`` when there is none)."""
    cdef double cum = total[0], x, a, b, c, d, ab, abc, abcd
    while v + 4 <= stop:        # four at a time: one branch for four type checks, one for the sums
        if not (PyFloat_CheckExact_ptr(items[v]) & PyFloat_CheckExact_ptr(items[v + 1])
                & PyFloat_CheckExact_ptr(items[v + 2]) & PyFloat_CheckExact_ptr(items[v + 3])):
            break
        a = PyFloat_AS_DOUBLE_ptr(items[v])
        b = PyFloat_AS_DOUBLE_ptr(items[v + 1])
        c = PyFloat_AS_DOUBLE_ptr(items[v + 2])
        d = PyFloat_AS_DOUBLE_ptr(items[v + 3])
        ab = cum + a
        abc = ab + b
        abcd = abc + c
        x = abcd + d
        # All four valid (no sign bit, a finite sum) needs no test of each; else
        # (a -0.0 too) the loop below finds the invalid one, one at a time.
        if not (sign_bits_clear(a, b, c, d) and x <= DBL_MAX):
            break
        out[v] = a
        out[v + 1] = b
        out[v + 2] = c
        out[v + 3] = d
        if u <= x:              # the running sum never decreases: the crossing is here
            return ~(v if u <= ab else v + 1 if u <= abc else v + 2 if u <= abcd else v + 3)
        cum = x
        v += 4
    while v < stop and PyFloat_CheckExact_ptr(items[v]):
        x = PyFloat_AS_DOUBLE_ptr(items[v])
        if not is_probability(x):
            break
        out[v] = x
        cum += x
        if u <= cum:
            return ~v
        v += 1
    total[0] = cum
    return v


cdef Py_ssize_t sample_cumulative_items(Matrix* target, Py_ssize_t i, object row, Py_ssize_t n,
                                        double u) except -1:
    """R6 on a list or tuple row: the first items summed one by one, as the
    reference does; past them, floats read ahead in chunks until the sum surely
    passes u, and the kernel finds and certifies the crossing in what was read.
    From an item that is not a float (or not a valid probability) on, the
    reference's own running sum, an entry at a time (``running_sum_from``).

    Reading ahead never raises for a value the reference does not read: floats
    are only copied (the kernel validates up to the crossing).  No user code
    runs here, so the row stays as it is.
    """
    cdef double first[SERIAL_ITEMS]
    cdef double* values = NULL
    cdef double* grown
    cdef PyObject** items = PySequence_Fast_ITEMS(row)
    cdef Py_ssize_t filled, size, chunk = FIRST_CHUNK, start, stop, token, bad = 0
    cdef double total = 0.0
    # Over a few items the reference's own running sum is as quick as reading
    # ahead, and exact by construction.
    filled = running_sum_floats(items, 0, min(n, SERIAL_ITEMS), u, &total, first)
    if filled < 0:
        return ~filled                      # the crossing
    if filled < min(n, SERIAL_ITEMS):
        return running_sum_from(target, i, first, filled, n, u)
    if filled == n:
        return 0
    try:
        size = min(n, 4 * SERIAL_ITEMS)
        values = <double*>malloc(size * sizeof(double))
        if values == NULL:
            raise MemoryError()
        memcpy(values, first, filled * sizeof(double))
        while filled < n:
            stop = min(n, filled + chunk)
            chunk = min(2 * chunk, LAST_CHUNK)
            if stop > size:
                size = min(n, max(2 * size, stop))
                grown = <double*>realloc(values, size * sizeof(double))
                if grown == NULL:
                    raise MemoryError()
                values = grown
            start = filled
            filled = copy_floats(items, filled, stop, values, NULL)
            total += any_order_sum(values + start, filled - start)
            # Every summation order is within gamma(n) of the exact sum, so past this
            # the reference's running sum has reached u inside values[0 .. filled).
            if total * (1.0 - 4.0 * <double>(filled + 2) * 1.1102230246251565e-16) > u:
                break
            if filled < stop:
                return running_sum_from(target, i, values, filled, n, u)
        token = cumulative_sample(values, filled, u, &bad)
        if token == BAD_TARGET:
            raise bad_probability("target_probs", i, bad, values[bad])
        return token
    finally:
        free(values)


cdef int check_all_probabilities(Matrix* m, str name, Py_ssize_t nrows, Py_ssize_t n) except -1:
    cdef Py_ssize_t i, v
    cdef double x
    for i in range(nrows):
        for v in range(n):
            if quick_entry(m, i, v, &x):
                check_probability(x, name, i, v)
            else:
                check_entry(entry_object(m, i, v, name), name, i, v)
    return 0


# --------------------------------------------------------------------------
# The two verify loops: arrays in the kernel, Python rows here.

cdef Py_ssize_t verify_arrays(Matrix* target, Matrix* draft, const Py_ssize_t* tokens,
                              Py_ssize_t K, Py_ssize_t V, int semantics,
                              UniformStream* stream, Py_ssize_t* out) except -1:
    """Both matrices are arrays of one dtype: ``verify_row`` does the whole step."""
    cdef VerifyOutcome r
    cdef Py_ssize_t item = 4 if target.single else 8
    if target.single:
        r = verify_row(<const float*>target.data, target.row_stride // item, target.nrows,
                       <const float*>draft.data, draft.row_stride // item, tokens, K, V,
                       semantics, False, stream, out)
    else:
        r = verify_row(<const double*>target.data, target.row_stride // item, target.nrows,
                       <const double*>draft.data, draft.row_stride // item, tokens, K, V,
                       semantics, False, stream, out)
    if r.error == OUT_OF_UNIFORMS:
        raise out_of_uniforms(stream.count)
    if r.error == BAD_TARGET_VALUE:
        raise bad_probability("target_probs", r.row, r.index, read_entry(target, r.row, r.index, ""))
    if r.error == BAD_DRAFT_VALUE:
        raise bad_probability("draft_probs", r.row, r.index, read_entry(draft, r.row, r.index, ""))
    return r.emitted


cdef inline PyObject** list_rows(Matrix* m, Py_ssize_t count) noexcept:
    """The items of a list or tuple of rows that holds ``count`` rows now, else NULL."""
    if m.data != NULL or PySequence_Fast_GET_SIZE_ptr(m.rows) < count:
        return NULL
    return PySequence_Fast_ITEMS_ptr(m.rows)


cdef inline bint list_float(PyObject* row, Py_ssize_t v, double* x) noexcept:
    """Item ``v`` of ``row`` into ``x`` when the row is a list and the item a float."""
    cdef PyObject* item
    if not (PyList_CheckExact_ptr(row) and v < PyList_GET_SIZE_ptr(row)):
        return False
    item = PyList_GET_ITEM_ptr(row, v)
    if not PyFloat_CheckExact_ptr(item):
        return False
    x[0] = PyFloat_AS_DOUBLE_ptr(item)
    return True


cdef Py_ssize_t plain_accepts(Matrix* target, Matrix* draft, const Py_ssize_t* tokens,
                              Py_ssize_t K, UniformStream* stream, double* drawn,
                              Py_ssize_t* out, bint* rejected) noexcept:
    """R1-R3 while both entries are floats in list rows (reading them runs no user
    code), valid, with q > 0: the common case, in a loop with no Python calls.
    Accepted tokens go to ``out``.  Returns the first position not accepted;
    ``rejected[0]`` tells whether it drew its uniform and rejected.  Otherwise
    nothing was drawn for it, and ``verify_rows`` takes it up."""
    cdef PyObject** p_rows = list_rows(target, K)
    cdef PyObject** q_rows = list_rows(draft, K)
    cdef Py_ssize_t i, t
    cdef double p, q, u
    rejected[0] = False
    if p_rows == NULL or q_rows == NULL:
        return 0
    for i in range(K):
        t = tokens[i]
        if not (list_float(p_rows[i], t, &p) and list_float(q_rows[i], t, &q)):
            return i
        if not (is_probability(p) and q > 0.0 and q <= DBL_MAX):
            return i
        if not next_uniform(stream, &u):
            return i
        if stream.state != NULL:
            drawn[stream.used] = u
            stream.used += 1
        if not u < p / q:                                    # R3
            rejected[0] = True
            return i
        out[i] = t
    return K


cdef Py_ssize_t verify_rows(Matrix* target, Matrix* draft, const Py_ssize_t* tokens,
                            object drafted, Py_ssize_t K, Py_ssize_t V, int semantics,
                            UniformStream* stream, double* drawn, Py_ssize_t* out) except -1:
    """The same step as ``verify_row``, reading Python rows only where it must.
    Once user code has run (converting an entry), each draft token of a list
    (``drafted``) is read again when its turn comes, as the reference does:
    that code may have changed it."""
    cdef Py_ssize_t i, t, n
    cdef double p, q, u
    cdef bint reread = False, rejected
    i = plain_accepts(target, draft, tokens, K, stream, drawn, out, &rejected)
    n = i
    while i < K and not rejected:                            # R1
        t = list_token(drafted, i, V) if reread else tokens[i]
        if quick_entry(target, i, t, &p) and quick_entry(draft, i, t, &q):        # R2
            check_probability(p, "target_probs", i, t)
        else:
            # Converting an entry may run user code: fetch both first, as the reference does.
            reread = type(drafted) is list
            p_item = entry_object(target, i, t, "target_probs")
            q_item = entry_object(draft, i, t, "draft_probs")
            hand_over_if_own(target, p_item)
            hand_over_if_own(draft, q_item)
            p = as_real(p_item, "target_probs", i, t)
            check_probability(p, "target_probs", i, t)
            q = as_real(q_item, "draft_probs", i, t)
        check_probability(q, "draft_probs", i, t)
        if q == 0.0 and semantics == REFERENCE:
            return n                                         # R2: no token, no bonus
        rejected = q == 0.0
        if not rejected:
            draw(stream, &u, drawn)                          # R3
            rejected = not u < p / q
        if not rejected:
            out[n] = t
            n += 1
            i += 1
    if rejected:
        out[n] = sample_residual(target, draft, i, V, stream, drawn)   # R4
        n += 1
    if bonus_follows(semantics, i, n, K, row_count(target)):   # R6, R7
        draw(stream, &u, drawn)
        out[n] = sample_cumulative(target, K, V, u)
        n += 1
    return n


cdef enum:
    SMALL_INT = 256
    SMALL_K = 64            # calls with K up to this keep their buffers on the stack

# The ints 0 .. SMALL_INT, which CPython caches too: taken from here, an emitted
# token costs an incref instead of a call.
cdef tuple SMALL_INTS = tuple(range(SMALL_INT + 1))


cdef list token_list(const Py_ssize_t* out, Py_ssize_t n, object drafted):
    """The emitted tokens as a list of ints, filled in place (no appends).

    An emitted token above SMALL_INT that equals the draft at its position is
    that draft's int object when ``drafted`` is a list holding it, as in the
    reference (which appends ``draft_tokens[i]``); this spares allocating it.
    """
    cdef list tokens = PyList_New(n)
    cdef Py_ssize_t i
    cdef PyObject* item
    for i in range(n):
        if out[i] <= SMALL_INT:
            item = PyTuple_GET_ITEM_ptr(<PyObject*>SMALL_INTS, out[i])
        else:
            item = NULL
            if type(drafted) is list and i < PyList_GET_SIZE(drafted):
                item = PyList_GET_ITEM_ptr(<PyObject*>drafted, i)
                if not (PyLong_CheckExact_ptr(item) and specdec_exact_index(item) == out[i]):
                    item = NULL
        if item != NULL:
            Py_INCREF(<object>item)     # PyList_SET_ITEM steals a reference
            PyList_SET_ITEM_ptr(<PyObject*>tokens, i, item)
        else:
            token = PyLong_FromSsize_t(out[i])
            Py_INCREF(token)
            PyList_SET_ITEM(tokens, i, token)
    return tokens


cdef dict result_for(object K, object n):
    """R9: the reference's result for ``n`` tokens of ``K`` drafts, computed as it
    does (Python ints and floats), keys in its order; ``"tokens"`` is to fill in."""
    return {
        "num_draft_tokens": K,
        "num_accepted": n,
        "acceptance_rate": round(n / (K + 1), 4) if K > 0 else 0,
        "tokens": None,
        "speedup_over_sequential": round(n / 2, 2),
    }


cdef enum:
    CACHED_RESULTS = 256    # results of K < this are copied from cached templates

# RESULTS[K][n] is result_for(K, n); the values are immutable, so copies share them.
cdef list RESULTS = [None] * CACHED_RESULTS


cdef dict new_result(Py_ssize_t K, Py_ssize_t n, const Py_ssize_t* out, object drafted):
    cdef tuple templates
    cdef dict result
    if K < CACHED_RESULTS:
        if RESULTS[K] is None:
            RESULTS[K] = tuple([result_for(K, j) for j in range(K + 2)])
        templates = <tuple>PyList_GET_ITEM(RESULTS, K)
        result = (<dict>PyTuple_GET_ITEM_ptr(<PyObject*>templates, n)).copy()
    else:
        result = result_for(K, n)
    result["tokens"] = token_list(out, n, drafted)
    return result


# --------------------------------------------------------------------------
# A call handed to the reference: numbers with their own arithmetic.

cdef class ReadLog:
    """The entry the reference read last, across both matrices, to name it when
    the reference's own arithmetic fails (``checking``: a read is under way)."""
    cdef str name
    cdef Py_ssize_t i, v
    cdef object item
    cdef bint checking


cdef class CheckedRows:
    """A matrix argument as the reference indexes it, for a call handed to it:
    ``rows[i][v]`` is the entry the compiled loop would read (an array's as in its
    ``tolist()``), after the same checks, with the same errors."""
    cdef Matrix m
    cdef object keep
    cdef str name
    cdef Py_ssize_t vocab_size
    cdef ReadLog log

    def __init__(self, object opened, str name, Py_ssize_t vocab_size, ReadLog log,
                 bint integral=False):
        self.keep = open_matrix(opened, name, 0, 0, vocab_size, &self.m)
        self.m.integral = self.m.integral or (integral and self.m.data != NULL)
        self.name = name
        self.vocab_size = vocab_size
        self.log = log

    def __len__(self):
        return row_count(&self.m)

    def __getitem__(self, Py_ssize_t i):
        if not 0 <= i < row_count(&self.m):
            raise ValueError(f"{self.name} changed size while being read")
        return CheckedRow(self, i)


cdef class CheckedRow:
    """Row ``i`` of a ``CheckedRows``, read as it is when each entry is read."""
    cdef CheckedRows rows
    cdef Py_ssize_t i

    def __init__(self, CheckedRows rows, Py_ssize_t i):
        self.rows = rows
        self.i = i

    def __getitem__(self, index):
        cdef CheckedRows rows = self.rows
        cdef ReadLog log = rows.log
        cdef Py_ssize_t v
        log.checking = True
        v = as_token(index, self.i)
        if not 0 <= v < rows.vocab_size:    # a draft token that user code changed
            raise ValueError(f"{rows.name}[{self.i}][{index!r}]: the index is outside "
                             f"[0, vocab_size={rows.vocab_size})")
        item = entry_object(&rows.m, self.i, v, rows.name)
        check_entry(item, rows.name, self.i, v)
        log.name, log.i, log.v, log.item, log.checking = rows.name, self.i, v, item, False
        return item


cdef int check_entry(object item, str name, Py_ssize_t i, Py_ssize_t v) except -1:
    """An entry as given must be a finite, non-negative real number."""
    if own_arithmetic(<PyObject*>item):
        return check_own_probability(item, name, i, v)
    return check_probability(as_real(item, name, i, v), name, i, v)


cdef int check_own_probability(object item, str name, Py_ssize_t i, Py_ssize_t v) except -1:
    """``check_probability`` of a number with its own arithmetic: as a double, unless
    it is beyond the doubles' range (an int of 400 digits, a long double of 1e400),
    where its own arithmetic says whether it is finite and non-negative."""
    cdef double x
    if PyComplex_Check(item) or PyObject_TypeCheck(item, <PyTypeObject*>COMPLEX_SCALAR):
        raise TypeError(f"{name}[{i}][{v}] must be a real number, not {type(item).__name__}")
    x = PyFloat_AsDouble_noraise(<PyObject*>item)
    if x == -1.0 and PyErr_Occurred() != NULL:
        if not PyErr_ExceptionMatches(OverflowError):
            PyErr_Clear()
            x = as_real(item, name, i, v)       # says why it is not a real number
        else:
            PyErr_Clear()
            x = INFINITY
    if is_probability(x):
        return 0
    if x == INFINITY and finite_non_negative(item):
        return 0
    raise bad_probability(name, i, v, item)


cdef bint finite_non_negative(object item):
    """In the number's own arithmetic."""
    if isinstance(item, np.generic):
        return bool(np.isfinite(item)) and bool(item >= 0)
    if isinstance(item, Decimal):
        return item.is_finite() and item >= 0
    try:
        return bool(item >= 0) and bool(item - item == 0)     # inf - inf is NaN
    except ArithmeticError:
        return False


cdef class UniformReplay:
    """``random`` for a call handed to the reference: ``random()`` returns
    ``values`` in turn (the uniforms given, or those the compiled loop already
    drew), then draws from ``rng`` as that loop does (not through an ``Rng``
    subclass's override), or without one runs out as the compiled loop does."""
    cdef list values
    cdef Rng rng
    cdef Py_ssize_t used

    def __init__(self, list values, Rng rng=None):
        self.values = values
        self.rng = rng
        self.used = 0

    def random(self):
        if self.used < len(self.values):
            self.used += 1
            return self.values[self.used - 1]
        if self.rng is None:
            raise out_of_uniforms(len(self.values))
        return xoshiro256plus_next_double(&self.rng.c_state)


cdef dict hand_to_reference(object draft, object target, object tokens, Py_ssize_t V,
                            object opened_stream, UniformStream* stream, const double* drawn,
                            bint draft_integral, bint target_integral):
    """The call run by the reference on the opened arguments (``*_integral``: the
    float64 copy of an int or bool array, whose entries the reference gets as ints,
    as in its ``tolist()``), from the start of the
    stream (the generator's ``stream.used`` values already ``drawn``, then the
    generator ``opened_stream``; or the uniforms given: the list ``opened_stream``,
    or None for an array); the tokens come back as Python ints (R9), as the
    compiled loop gives them."""
    cdef Py_ssize_t i
    cdef dict result
    if stream.state != NULL:
        source = UniformReplay([drawn[i] for i in range(stream.used)], opened_stream)
    else:
        # The uniforms as checked at the start, but those given as numbers with their
        # own arithmetic as the objects given: the reference compares in it.
        values = [stream.values[i] for i in range(stream.count)]
        if opened_stream is not None:
            for i in range(stream.count):
                item = opened_stream[i]
                if own_arithmetic(<PyObject*>item):
                    values[i] = item
        source = UniformReplay(values)
    log = ReadLog()
    try:
        result = reference_sim(CheckedRows(draft, "draft_probs", V, log, draft_integral),
                               CheckedRows(target, "target_probs", V, log, target_integral),
                               tokens, V, random=source)
    except TypeError as exc:            # the reference's arithmetic, as on a Decimal
        if log.checking or log.name is None:
            raise
        raise TypeError(f"{exc} (in the reference's arithmetic on what it read, the last "
                        f"entry being {log.name}[{log.i}][{log.v}] = {log.item!r})") from exc
    result["tokens"] = [int(PyNumber_Index(t)) for t in result["tokens"]]
    return result


# --------------------------------------------------------------------------
# The common call's arguments, opened in one pass.

cdef inline bint plain_matrix(PyObject* obj, Py_ssize_t need, Py_ssize_t readable,
                              Py_ssize_t V, Matrix* m) noexcept:
    """``open_matrix`` where it cannot fail or run user code: a list or tuple of at
    least ``need`` rows, the first ``readable`` of them lists of ``V`` or more
    entries, or a 2-D array it reads in place, big enough.  False otherwise."""
    cdef PyObject** rows
    cdef PyObject* row
    cdef Py_ssize_t i
    m.data = NULL
    m.rows = NULL
    m.hand_over = False
    m.integral = False
    if PyList_CheckExact_ptr(obj) or PyTuple_CheckExact_ptr(obj):
        m.nrows = PySequence_Fast_GET_SIZE_ptr(obj)
        if m.nrows < need:
            return False
        rows = PySequence_Fast_ITEMS_ptr(obj)
        for i in range(min(m.nrows, readable)):
            row = rows[i]
            if not (PyList_CheckExact_ptr(row) and PyList_GET_SIZE_ptr(row) >= V):
                return False
        m.rows = obj
        return True
    if not (cnp.PyArray_CheckExact(<object>obj) and in_place_dtype(<cnp.ndarray>obj)
            and cnp.PyArray_NDIM(<cnp.ndarray>obj) == 2):
        return False
    m.nrows = cnp.PyArray_DIM(<cnp.ndarray>obj, 0)
    if m.nrows < need or (min(m.nrows, readable) > 0 and cnp.PyArray_DIM(<cnp.ndarray>obj, 1) < V):
        return False
    m.data = <char*>cnp.PyArray_DATA(<cnp.ndarray>obj)
    m.row_stride = cnp.PyArray_STRIDE(<cnp.ndarray>obj, 0)
    m.single = cnp.PyArray_TYPE(<cnp.ndarray>obj) == cnp.NPY_FLOAT
    return True


cdef bint open_plain(PyObject* draft_probs, PyObject* target_probs, PyObject* drafted,
                     PyObject* vocab_size, Py_ssize_t* V, Py_ssize_t* K, Py_ssize_t* tokens,
                     Matrix* target, Matrix* draft) noexcept:
    """What ``as_size``, ``open_tokens``, ``open_matrix`` and ``read_tokens`` make of
    the common call's arguments, in one pass with no dispatch: ``vocab_size`` an
    int, ``draft_tokens`` a list of at most SMALL_K ints in ``[0, vocab_size)``,
    matrices as ``plain_matrix`` takes them.  False for anything else, having run
    no user code and raised nothing: the general path then opens the call."""
    cdef PyObject** items
    cdef Py_ssize_t i, t
    if not (PyLong_CheckExact_ptr(vocab_size) and PyList_CheckExact_ptr(drafted)):
        return False
    V[0] = specdec_exact_index(vocab_size)
    K[0] = PyList_GET_SIZE_ptr(drafted)
    if V[0] < 1 or K[0] > SMALL_K:
        return False
    items = PySequence_Fast_ITEMS_ptr(drafted)
    for i in range(K[0]):
        if not PyLong_CheckExact_ptr(items[i]):
            return False
        t = specdec_exact_index(items[i])
        if <size_t>t >= <size_t>V[0]:      # also t == -1 (negative or too large)
            return False
        tokens[i] = t
    return (plain_matrix(target_probs, K[0], K[0] + 1, V[0], target)     # R5
            and plain_matrix(draft_probs, K[0], K[0], V[0], draft))


# The drop-in (and call_floor, its yardstick) is a builtin function rather than a
# Cython function object: a call costs a few nanoseconds less, a few percent of a
# short call.  The clinic-format signature keeps inspect.signature working.
@cython.binding(False)
@cython.embedsignature.format("clinic")
def speculative_decode_sim(draft_probs, target_probs, draft_tokens, vocab_size, *,
                           rng=None, uniforms=None, check_all=False, semantics="reference"):
    """The verify step of speculative decoding: the reference's function, compiled.

    Returns the reference's dict (``num_draft_tokens``, ``num_accepted``,
    ``acceptance_rate``, ``tokens``, ``speedup_over_sequential``); given the same
    uniforms, the reference's very dict.

    Parameters
    ----------
    draft_probs : K rows of at least vocab_size probabilities
        Lists of floats, a 2-D array (float64/float32 read in place), or rows.
    target_probs : K rows, plus an optional bonus row K
    draft_tokens : K ints in [0, vocab_size)
    vocab_size : int >= 1
        Only the first vocab_size entries of a row are read.
    rng : None (the default generator), an int seed, or an Rng (advanced)
    uniforms : 1-D sequence of floats in [0, 1), optional
        Used instead of rng, in the order the reference calls random.random().
    check_all : bool
        Also validate every probability the call may use (O(K*V)); by default
        only the entries read are checked.
    semantics : "reference" (default) or "exact"
        "exact": the papers' algorithm (a draft with q == 0 is rejected and
        corrected; the bonus only when every draft passed).

    Bad input raises TypeError or ValueError naming the argument and position.
    """
    cdef Matrix target, draft
    cdef UniformStream stream
    cdef Py_ssize_t small_tokens[2 * SMALL_K + 2]
    cdef double small_room[SMALL_K + 2]
    cdef Py_ssize_t* tokens = small_tokens  # K tokens, then verify_row's K + 2 for those emitted
    cdef double* room = small_room          # the K + 2 uniforms a call uses (R3-R7): given, or drawn
    cdef Py_ssize_t* out
    cdef Py_ssize_t K, V, i, n
    cdef int mode
    cdef bint own_uniforms = False, plain
    if isinstance(semantics, str) and semantics == "reference":
        mode = REFERENCE
    elif isinstance(semantics, str) and semantics == "exact":
        mode = EXACT
    else:       # not compared unless a str: an array's == answers with an array
        raise ValueError(f"semantics must be 'reference' or 'exact', got {semantics!r}")
    if check_all is not False and check_all is not True and not isinstance(check_all, np.bool_):
        raise TypeError(f"check_all must be a bool, not {type(check_all).__name__}")
    # The common call opens in one pass.  It reads the tokens before the generator,
    # where the general path reads them after the uniforms and check_all's pass:
    # the same, since neither is there to run user code (nor a seed's __index__).
    plain = (uniforms is None and check_all is False and (rng is None or isinstance(rng, Rng))
             and open_plain(<PyObject*>draft_probs, <PyObject*>target_probs,
                            <PyObject*>draft_tokens, <PyObject*>vocab_size, &V, &K, tokens,
                            &target, &draft))
    if plain:
        keep_target, keep_draft = target_probs, draft_probs
    else:
        V = as_size(vocab_size, "vocab_size")
        draft_tokens = open_tokens(draft_tokens)
        K = len(draft_tokens)
        keep_target = open_matrix(target_probs, "target_probs", K, K + 1, V, &target)   # R5
        keep_draft = open_matrix(draft_probs, "draft_probs", K, K, V, &draft)
    if K > SMALL_K:
        tokens = <Py_ssize_t*>calloc(2 * K + 2, sizeof(Py_ssize_t))
        room = <double*>calloc(K + 2, sizeof(double))
    stream.state = NULL
    try:
        if tokens == NULL or room == NULL:
            raise MemoryError()
        out = tokens + K
        keep_stream = open_uniforms(rng, uniforms, K + 2, room, &stream, &own_uniforms)
        if check_all:
            check_all_probabilities(&target, "target_probs", min(target.nrows, K + 1), V)
            check_all_probabilities(&draft, "draft_probs", K, V)
        if not plain:
            read_tokens(draft_tokens, K, V, tokens)
        target.hand_over = draft.hand_over = mode == REFERENCE
        n = -1                              # -1: the call goes to the reference
        try:
            if not (own_uniforms and mode == REFERENCE):
                if (target.data != NULL and draft.data != NULL and target.single == draft.single
                        and not (target.integral and draft.integral)):
                    n = verify_arrays(&target, &draft, tokens, K, V, mode, &stream, out)
                else:
                    n = verify_rows(&target, &draft, tokens, draft_tokens, K, V, mode,
                                    &stream, room, out)
        except OwnArithmetic:
            pass
        if n >= 0:
            return new_result(K, n, out, draft_tokens)
        return hand_to_reference(keep_draft, keep_target, draft_tokens, V, keep_stream, &stream,
                                 room, draft.integral, target.integral)
    finally:
        if stream.state != NULL:
            (<Rng>keep_stream).drawing_calls -= 1
        if tokens != small_tokens:
            free(tokens)
        if room != small_room:
            free(room)


@cython.binding(False)
@cython.embedsignature.format("clinic")
def call_floor(draft_probs, target_probs, draft_tokens, vocab_size, *, rng=None, uniforms=None,
               check_all=False, semantics="reference"):
    """For benchmarks: what a call costs before any of its work.

    Takes the drop-in's arguments and returns the dict of a call that accepted
    every draft (tokens ``0 .. K``), built as the drop-in builds its result,
    but reads, checks and draws nothing.  Its time is a floor for the drop-in
    (and for anything behind the same signature that returns a fresh dict).
    """
    cdef Py_ssize_t small[130]
    cdef Py_ssize_t K = len(draft_tokens), i
    if K + 1 > 130:
        raise ValueError("call_floor takes at most 129 draft tokens")
    for i in range(K + 1):
        small[i] = i
    return new_result(K, K + 1, small, None)

