"""A minimal list call, to measure how far below the drop-in's list path a call can go.

``minimal_call(draft_probs, target_probs, draft_tokens, vocab_size, *, rng)`` does what
``speculative_decode_sim`` does on the benchmark's matched case and nothing more: lists
of float lists, a list of int tokens, an ``Rng``, every draft accepted, then the bonus
row summed item by item as the reference does, with the drop-in's checks of what it
reads.  Anything else (a rejection, another input form) returns None: it is a
benchmark's yardstick, not an implementation.  ``benchmarks/minimal_call.py`` builds
and times it.
"""
from cpython.list cimport PyList_New
from cpython.object cimport PyObject
from libc.float cimport DBL_MAX

from specdec_fast._rng cimport Rng, ready, xoshiro256plus_next_double, xoshiro256plus_state

cdef extern from "Python.h":
    bint list_exact "PyList_CheckExact"(PyObject* op)
    bint float_exact "PyFloat_CheckExact"(PyObject* op)
    bint int_exact "PyLong_CheckExact"(PyObject* op)
    Py_ssize_t list_size "PyList_GET_SIZE"(PyObject* op)
    PyObject** list_items "PySequence_Fast_ITEMS"(PyObject* op)
    double float_value "PyFloat_AS_DOUBLE"(PyObject* op)
    PyObject* tuple_item "PyTuple_GET_ITEM"(PyObject* op, Py_ssize_t i)
    void list_set "PyList_SET_ITEM"(PyObject* op, Py_ssize_t i, PyObject* item)
    void incref "Py_INCREF"(PyObject* op)

cdef extern from "exact_int.h":
    Py_ssize_t specdec_exact_index(PyObject* op) noexcept

cdef enum:
    MAX_K = 64
    SMALL_INT = 256

cdef tuple SMALL_INTS = tuple(range(SMALL_INT + 1))
cdef list RESULTS = [None] * (MAX_K + 1)     # RESULTS[K][n]: the dict for n tokens, as the drop-in


cdef dict result_for(object K, object n):    # Python ints: true division, as the reference
    return {"num_draft_tokens": K, "num_accepted": n,
            "acceptance_rate": round(n / (K + 1), 4) if K > 0 else 0, "tokens": None,
            "speedup_over_sequential": round(n / 2, 2)}


cdef Py_ssize_t accept_all(PyObject* draft, PyObject* target, PyObject* drafted, Py_ssize_t V,
                           xoshiro256plus_state* state, Py_ssize_t* out) noexcept:
    """Tokens emitted when every draft is accepted, else -1."""
    cdef Py_ssize_t K, i, t, v, rows
    cdef PyObject** tokens
    cdef PyObject** p_rows
    cdef PyObject** q_rows
    cdef PyObject** bonus
    cdef PyObject* a
    cdef PyObject* b
    cdef double p, q, u, cum = 0.0
    if not (list_exact(drafted) and list_exact(target) and list_exact(draft)):
        return -1
    K = list_size(drafted)
    rows = list_size(target)
    if K > MAX_K or rows < K or list_size(draft) < K:
        return -1
    tokens = list_items(drafted)
    p_rows = list_items(target)
    q_rows = list_items(draft)
    for i in range(K):
        if not int_exact(tokens[i]):
            return -1
        t = specdec_exact_index(tokens[i])
        if <size_t>t >= <size_t>V or not (list_exact(p_rows[i]) and list_size(p_rows[i]) >= V
                                         and list_exact(q_rows[i]) and list_size(q_rows[i]) >= V):
            return -1
        out[i] = t
    if rows > K and not (list_exact(p_rows[K]) and list_size(p_rows[K]) >= V):
        return -1
    for i in range(K):
        a = list_items(p_rows[i])[out[i]]
        b = list_items(q_rows[i])[out[i]]
        if not (float_exact(a) and float_exact(b)):
            return -1
        p = float_value(a)
        q = float_value(b)
        if not (p >= 0.0 and p <= DBL_MAX and q > 0.0 and q <= DBL_MAX):
            return -1
        u = xoshiro256plus_next_double(state)
        if not u < p / q:
            return -1
    if rows == K:
        return K
    u = xoshiro256plus_next_double(state)
    bonus = list_items(p_rows[K])
    out[K] = 0
    for v in range(V):
        if not float_exact(bonus[v]):
            return -1
        p = float_value(bonus[v])
        if not (p >= 0.0 and p <= DBL_MAX):
            return -1
        cum += p
        if u <= cum:
            out[K] = v
            break
    return K + 1


def minimal_call(draft_probs, target_probs, draft_tokens, vocab_size, *, rng):
    """The matched call's dict, or None (see the module's docstring)."""
    cdef Py_ssize_t out[MAX_K + 1]
    cdef Py_ssize_t n, V, i, K
    cdef xoshiro256plus_state saved
    cdef list tokens
    cdef dict result
    if type(rng) is not Rng or not int_exact(<PyObject*>vocab_size):
        return None
    V = specdec_exact_index(<PyObject*>vocab_size)
    if V < 1:
        return None
    ready(<Rng>rng)
    saved = (<Rng>rng).c_state
    n = accept_all(<PyObject*>draft_probs, <PyObject*>target_probs, <PyObject*>draft_tokens, V,
                   &(<Rng>rng).c_state, out)
    for i in range(n):
        if out[i] > SMALL_INT:
            n = -1
    if n < 0:
        (<Rng>rng).c_state = saved
        return None
    tokens = PyList_New(n)
    for i in range(n):
        incref(tuple_item(<PyObject*>SMALL_INTS, out[i]))
        list_set(<PyObject*>tokens, i, tuple_item(<PyObject*>SMALL_INTS, out[i]))
    K = list_size(<PyObject*>draft_tokens)
    if RESULTS[K] is None:
        RESULTS[K] = tuple([result_for(K, j) for j in range(K + 2)])
    result = (<dict>tuple_item(<PyObject*>RESULTS[K], n)).copy()
    result["tokens"] = tokens
    return result
