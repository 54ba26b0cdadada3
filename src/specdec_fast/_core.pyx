"""The layer between Python objects and the nogil kernel.

It reads the reference's inputs (lists of lists, NumPy arrays, other
sequences and buffers) without converting whole rows until the algorithm needs
them, validates them with errors that name the argument and the position,
draws uniforms from an ``Rng`` or a replay sequence in the reference's order,
and builds the reference's result dict.  The sampling itself is in
``_kernel``; this module only chooses what to feed it.
"""
import sys

import numpy as np

cimport numpy as cnp
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_AsDouble, PyFloat_CheckExact
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE, PyList_New, PyList_SET_ITEM
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_CheckExact, PyLong_FromSsize_t
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_GET_ITEM
from libc.float cimport DBL_MAX
from libc.stdlib cimport free, malloc

from specdec_fast._kernel cimport BAD_DRAFT, BAD_TARGET, cumulative_sample, residual_sample
from specdec_fast._rng cimport Rng, xoshiro256plus_next_double, xoshiro256plus_state

cnp.import_array()

cdef extern from "Python.h":
    # Borrowed-pointer forms of the item macros, so hot loops do no refcounting.
    PyObject** PySequence_Fast_ITEMS(object seq)
    bint PyFloat_CheckExact_ptr "PyFloat_CheckExact"(PyObject* op)
    double PyFloat_AS_DOUBLE_ptr "PyFloat_AS_DOUBLE"(PyObject* op)

# The reference's sum() is compensated (Neumaier) from CPython 3.12 on.
COMPENSATED_SUM = sys.version_info >= (3, 12)
cdef bint compensated_sum = COMPENSATED_SUM

# Rows at least this long are sampled with the GIL released.
cdef Py_ssize_t NOGIL_MIN_LENGTH = 4096

cdef Rng default_rng = Rng()


def seed(value=None):
    """Reseed the module's default generator (``None``: from OS entropy)."""
    default_rng.state = Rng(value).state


def get_default_rng():
    """The generator used when a call passes neither ``rng`` nor ``uniforms``."""
    return default_rng


# --------------------------------------------------------------------------
# Probability matrices: a 2-D array read in place, or a list of rows.

cdef struct Matrix:
    char* data              # a 2-D array: row i at data + i * row_stride; else NULL
    Py_ssize_t row_stride
    bint single             # elements are float32 (else float64)
    PyObject* rows          # when data is NULL: a list of rows (borrowed)
    Py_ssize_t nrows


cdef inline bint in_place_dtype(cnp.ndarray arr):
    """float32 or float64, native order, aligned, last axis contiguous."""
    cdef int t = cnp.PyArray_TYPE(arr)
    if t != cnp.NPY_DOUBLE and t != cnp.NPY_FLOAT:
        return False
    if not cnp.PyArray_ISNOTSWAPPED(arr) or not cnp.PyArray_ISALIGNED(arr):
        return False
    return cnp.PyArray_NDIM(arr) == 0 or cnp.PyArray_STRIDE(arr, cnp.PyArray_NDIM(arr) - 1) == cnp.PyArray_ITEMSIZE(arr)


cdef cnp.ndarray as_real_array(object obj, str name):
    """``obj`` as an array of real numbers: in place if possible, else float64."""
    cdef cnp.ndarray arr = obj if cnp.PyArray_Check(obj) else np.asarray(obj)
    if in_place_dtype(arr):
        return arr
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float64)


cdef object open_matrix(object obj, str name, Py_ssize_t need, Py_ssize_t readable,
                        Py_ssize_t vocab_size, Matrix* m):
    """Check ``obj`` has ``need`` rows of at least ``vocab_size`` entries and fill ``m``.

    Of a list, the first ``readable`` rows (those the call may read) are checked.

    Returns the object that keeps ``m``'s memory alive.
    """
    cdef cnp.ndarray arr
    cdef Py_ssize_t i
    m.data = NULL
    m.rows = NULL
    if type(obj) is not list and not cnp.PyArray_Check(obj):
        if isinstance(obj, (str, bytes)) or not hasattr(obj, "__len__") and not hasattr(obj, "__array__"):
            raise TypeError(f"{name} must be a sequence of rows or a 2-D array, not {type(obj).__name__}")
        obj = as_real_array(obj, name) if (hasattr(obj, "__array__") or _is_buffer(obj)) else list(obj)
    if type(obj) is list:
        m.rows = <PyObject*>obj
        m.nrows = len(obj)
        if m.nrows < need:
            raise ValueError(f"{name} has {m.nrows} rows, fewer than the {need} it needs")
        for i in range(min(m.nrows, readable)):
            check_row(<object>PyList_GET_ITEM(obj, i), name, i, vocab_size)
        return obj
    arr = as_real_array(obj, name)
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


cdef bint _is_buffer(object obj):
    try:
        memoryview(obj)
    except TypeError:
        return False
    return True


cdef int check_row(object row, str name, Py_ssize_t i, Py_ssize_t vocab_size) except -1:
    """A row must be a 1-D sequence with at least ``vocab_size`` entries."""
    cdef Py_ssize_t length = 0
    if type(row) is list:
        length = PyList_GET_SIZE(row)
    elif cnp.PyArray_Check(row):
        if cnp.PyArray_NDIM(row) != 1:
            raise ValueError(f"{name}[{i}] must be 1-D, got {cnp.PyArray_NDIM(row)}-D")
        if (<cnp.ndarray>row).dtype.kind not in "fiub":
            raise TypeError(f"{name}[{i}] must hold real numbers, got dtype {row.dtype}")
    elif isinstance(row, (str, bytes)) or not hasattr(row, "__len__"):
        raise TypeError(f"{name}[{i}] must be a sequence of probabilities, not {type(row).__name__}")
    if type(row) is not list:
        length = len(row)
    if length < vocab_size:
        raise ValueError(f"{name}[{i}] has {length} entries, fewer than vocab_size={vocab_size}")
    return 0


cdef double as_real(object item, str name, Py_ssize_t i, Py_ssize_t v) except? -1.0:
    """A probability as the reference reads it: any real number, as a double."""
    if PyFloat_CheckExact(item):
        return PyFloat_AS_DOUBLE(item)
    if isinstance(item, (str, bytes, complex)) or item is None:
        raise TypeError(f"{name}[{i}][{v}] must be a real number, not {type(item).__name__}")
    try:
        return PyFloat_AsDouble(item)
    except (TypeError, ValueError):
        raise TypeError(f"{name}[{i}][{v}] must be a real number, not {type(item).__name__}") from None


cdef double read_entry(Matrix* m, Py_ssize_t i, Py_ssize_t v, str name) except? -1.0:
    """Entry ``[i][v]`` of the matrix (bounds already checked)."""
    cdef char* row
    cdef object obj
    cdef PyObject* item
    if m.data != NULL:
        row = m.data + i * m.row_stride
        return (<float*>row)[v] if m.single else (<double*>row)[v]
    obj = <object>PyList_GET_ITEM(<object>m.rows, i)
    if type(obj) is list or type(obj) is tuple:
        item = PySequence_Fast_ITEMS(obj)[v]
        if PyFloat_CheckExact_ptr(item):
            return PyFloat_AS_DOUBLE_ptr(item)
        return as_real(<object>item, name, i, v)
    if cnp.PyArray_Check(obj) and in_place_dtype(obj):
        if cnp.PyArray_TYPE(obj) == cnp.NPY_FLOAT:
            return (<float*>cnp.PyArray_GETPTR1(obj, v))[0]
        return (<double*>cnp.PyArray_GETPTR1(obj, v))[0]
    return as_real(obj[v], name, i, v)


cdef struct Row:
    const void* data        # contiguous elements
    bint single             # float32 (else float64)
    double* owned           # a buffer to free, or NULL


cdef int open_row(Matrix* m, Py_ssize_t i, Py_ssize_t n, str name, Row* r) except -1:
    """Row ``i`` of the matrix as contiguous memory, copied only when it must be."""
    cdef object obj
    cdef Py_ssize_t v
    r.owned = NULL
    if m.data != NULL:
        r.data = m.data + i * m.row_stride
        r.single = m.single
        return 0
    obj = <object>PyList_GET_ITEM(<object>m.rows, i)
    if cnp.PyArray_Check(obj) and in_place_dtype(obj):
        r.data = cnp.PyArray_DATA(obj)
        r.single = cnp.PyArray_TYPE(obj) == cnp.NPY_FLOAT
        return 0
    r.owned = <double*>malloc(max(n, 1) * sizeof(double))
    if r.owned == NULL:
        raise MemoryError()
    r.data = r.owned
    r.single = False
    if type(obj) is list or type(obj) is tuple:
        read_items(PySequence_Fast_ITEMS(obj), n, r.owned, name, i)
    else:
        for v in range(n):
            r.owned[v] = read_entry(m, i, v, name)
    return 0


cdef int read_items(PyObject** items, Py_ssize_t n, double* out, str name, Py_ssize_t i) except -1:
    """The first ``n`` items of a list or tuple row as doubles."""
    cdef Py_ssize_t v
    for v in range(n):
        if PyFloat_CheckExact_ptr(items[v]):
            out[v] = PyFloat_AS_DOUBLE_ptr(items[v])
        else:
            out[v] = as_real(<object>items[v], name, i, v)
    return 0


cdef int widen_row(Row* r, Py_ssize_t n) except -1:
    """Make a float32 row float64 (for a residual of rows of mixed precision)."""
    cdef double* wide
    cdef Py_ssize_t v
    if not r.single:
        return 0
    wide = <double*>malloc(max(n, 1) * sizeof(double))
    if wide == NULL:
        raise MemoryError()
    for v in range(n):
        wide[v] = (<const float*>r.data)[v]
    r.data = wide
    r.owned = wide
    r.single = False
    return 0


# --------------------------------------------------------------------------
# Uniforms: drawn from an Rng, or replayed from a sequence, in the reference's order.

cdef struct Uniforms:
    xoshiro256plus_state* state     # draw from this generator when not NULL
    const double* values            # else replay these in turn
    Py_ssize_t count
    Py_ssize_t used


cdef inline int next_uniform(Uniforms* src, double* out) except -1:
    if src.state != NULL:
        out[0] = xoshiro256plus_next_double(src.state)
        return 0
    if src.used >= src.count:
        raise ValueError(f"uniforms: the call needs more than the {src.count} values given")
    out[0] = src.values[src.used]
    src.used += 1
    return 0


cdef object open_uniforms(object rng, object uniforms, Uniforms* src):
    """Fill ``src`` from ``rng`` or ``uniforms``; returns what keeps its memory alive."""
    cdef cnp.ndarray arr
    cdef Py_ssize_t i
    cdef double x
    src.state = NULL
    src.values = NULL
    src.count = 0
    src.used = 0
    if uniforms is None:
        if rng is None:
            src.state = &default_rng.c_state
            return default_rng
        if type(rng) is not Rng and not isinstance(rng, Rng):
            try:
                rng = Rng(rng)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"rng: {exc}") from None
        src.state = &(<Rng>rng).c_state
        return rng
    if rng is not None:
        raise ValueError("pass rng or uniforms, not both")
    if isinstance(uniforms, (str, bytes)):
        raise TypeError("uniforms must be a 1-D sequence of floats in [0, 1), not str")
    if cnp.PyArray_Check(uniforms):
        if uniforms.dtype.kind not in "fiu":
            raise TypeError(f"uniforms must hold real numbers, got dtype {uniforms.dtype}")
        arr = np.ascontiguousarray(uniforms, dtype=np.float64)
    else:
        try:
            items = list(uniforms)
        except TypeError:
            raise TypeError(f"uniforms must be a 1-D sequence of floats in [0, 1), "
                            f"not {type(uniforms).__name__}") from None
        arr = np.empty(len(items), dtype=np.float64)
        for i in range(len(items)):
            item = items[i]
            if isinstance(item, (str, bytes, complex)) or item is None or hasattr(item, "__len__"):
                raise TypeError(f"uniforms[{i}] must be a real number, not {type(item).__name__}")
            try:
                (<double*>cnp.PyArray_DATA(arr))[i] = PyFloat_AsDouble(item)
            except (TypeError, ValueError):
                raise TypeError(f"uniforms[{i}] must be a real number, "
                                f"not {type(item).__name__}") from None
    if cnp.PyArray_NDIM(arr) != 1:
        raise ValueError(f"uniforms must be 1-D, got {cnp.PyArray_NDIM(arr)}-D")
    src.values = <const double*>cnp.PyArray_DATA(arr)
    src.count = cnp.PyArray_DIM(arr, 0)
    for i in range(src.count):
        x = src.values[i]
        if not (0.0 <= x < 1.0):
            raise ValueError(f"uniforms[{i}] = {x!r} is outside [0, 1)")
    return arr


# --------------------------------------------------------------------------
# Tokens and sizes.

cdef Py_ssize_t as_size(object value, str name) except -1:
    """A positive size given as an int (or NumPy integer)."""
    if not PyLong_CheckExact(value):
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


cdef int read_tokens(object tokens, Py_ssize_t K, Py_ssize_t vocab_size, Py_ssize_t* out) except -1:
    """Each draft token must be an integer in [0, vocab_size)."""
    cdef Py_ssize_t i, t
    cdef cnp.ndarray arr
    cdef PyObject** items
    if cnp.PyArray_Check(tokens):
        if tokens.dtype.kind not in "iu" and not (tokens.size == 0 and tokens.dtype.kind == "f"):
            raise TypeError(f"draft_tokens must hold integers, got dtype {tokens.dtype}")
        if cnp.PyArray_NDIM(tokens) != 1:
            raise ValueError(f"draft_tokens must be 1-D, got {cnp.PyArray_NDIM(tokens)}-D")
        arr = tokens
        if cnp.PyArray_TYPE(arr) != cnp.NPY_INTP or not cnp.PyArray_ISCARRAY_RO(arr):
            arr = np.ascontiguousarray(tokens, dtype=np.intp)
        for i in range(K):
            out[i] = (<Py_ssize_t*>cnp.PyArray_DATA(arr))[i]
            if not 0 <= out[i] < vocab_size:
                raise ValueError(f"draft_tokens[{i}] = {tokens[i]} is outside [0, vocab_size={vocab_size})")
        return 0
    if type(tokens) is not list and type(tokens) is not tuple:
        tokens = list(tokens)
    items = PySequence_Fast_ITEMS(tokens)
    for i in range(K):
        t = as_token(<object>items[i], i)
        if not 0 <= t < vocab_size:
            raise ValueError(f"draft_tokens[{i}] = {<object>items[i]!r} is outside [0, vocab_size={vocab_size})")
        out[i] = t
    return 0


# --------------------------------------------------------------------------
# Sampling from rows, with errors that name the position.

cdef bad_probability(str name, Py_ssize_t i, Py_ssize_t v, double x):
    return ValueError(f"{name}[{i}][{v}] = {x!r}: probabilities must be finite and non-negative")


cdef inline int check_probability(double x, str name, Py_ssize_t i, Py_ssize_t v) except -1:
    if not (x >= 0.0 and x <= DBL_MAX):
        raise bad_probability(name, i, v, x)
    return 0


cdef Py_ssize_t residual_rows(Row* p, Row* q, Py_ssize_t n, double u, Py_ssize_t* bad) noexcept nogil:
    if p.single:
        return residual_sample(<const float*>p.data, <const float*>q.data, -1, n, u, compensated_sum, bad)
    return residual_sample(<const double*>p.data, <const double*>q.data, -1, n, u, compensated_sum, bad)


cdef Py_ssize_t cumulative_row(Row* p, Py_ssize_t n, double u, Py_ssize_t* bad) noexcept nogil:
    if p.single:
        return cumulative_sample(<const float*>p.data, n, u, bad)
    return cumulative_sample(<const double*>p.data, n, u, bad)


cdef Py_ssize_t sample_residual(Matrix* target, Matrix* draft, Py_ssize_t i, Py_ssize_t n,
                                double u) except -1:
    """R4: a token from max(0, p_i - q_i) normalised; reads both rows whole."""
    cdef Row p, q
    cdef Py_ssize_t token, bad = 0
    p.owned = NULL
    q.owned = NULL
    try:
        open_row(target, i, n, "target_probs", &p)
        open_row(draft, i, n, "draft_probs", &q)
        if p.single != q.single:
            widen_row(&p, n)
            widen_row(&q, n)
        if n >= NOGIL_MIN_LENGTH:
            with nogil:
                token = residual_rows(&p, &q, n, u, &bad)
        else:
            token = residual_rows(&p, &q, n, u, &bad)
        if token == BAD_TARGET:
            raise bad_probability("target_probs", i, bad, read_entry(target, i, bad, "target_probs"))
        if token == BAD_DRAFT:
            raise bad_probability("draft_probs", i, bad, read_entry(draft, i, bad, "draft_probs"))
        return token
    finally:
        free(p.owned)
        free(q.owned)


cdef Py_ssize_t sample_cumulative(Matrix* target, Py_ssize_t i, Py_ssize_t n, double u) except -1:
    """R6: the first v with u <= p_0 + ... + p_v; reads the row up to there."""
    cdef Py_ssize_t token, bad = 0, v
    cdef double cum = 0.0, x
    cdef object row
    cdef PyObject** items
    cdef Row p
    if m_is_array_row(target, i):
        open_row(target, i, n, "target_probs", &p)
        if n >= NOGIL_MIN_LENGTH:
            with nogil:
                token = cumulative_row(&p, n, u, &bad)
        else:
            token = cumulative_row(&p, n, u, &bad)
        if token == BAD_TARGET:
            raise bad_probability("target_probs", i, bad, read_entry(target, i, bad, "target_probs"))
        return token
    row = <object>PyList_GET_ITEM(<object>target.rows, i)
    if type(row) is list or type(row) is tuple:
        items = PySequence_Fast_ITEMS(row)
        for v in range(n):
            if PyFloat_CheckExact_ptr(items[v]):
                x = PyFloat_AS_DOUBLE_ptr(items[v])
            else:
                x = as_real(<object>items[v], "target_probs", i, v)
            if not (x >= 0.0 and x <= DBL_MAX):
                raise bad_probability("target_probs", i, v, x)
            cum += x
            if u <= cum:
                return v
        return 0
    for v in range(n):
        x = read_entry(target, i, v, "target_probs")
        check_probability(x, "target_probs", i, v)
        cum += x
        if u <= cum:
            return v
    return 0


cdef inline bint m_is_array_row(Matrix* m, Py_ssize_t i):
    if m.data != NULL:
        return True
    row = <object>PyList_GET_ITEM(<object>m.rows, i)
    return cnp.PyArray_Check(row) and in_place_dtype(row)


cdef extern from "prefetch.h" nogil:
    void specdec_prefetch(const void* p)


cdef inline void prefetch_entries(Matrix* target, Matrix* draft, const Py_ssize_t* tokens,
                                  Py_ssize_t K) noexcept:
    """Start loading every p_i[t_i] and q_i[t_i] of array inputs at once."""
    cdef Py_ssize_t i
    for i in range(K):
        if target.data != NULL:
            specdec_prefetch(target.data + i * target.row_stride
                             + tokens[i] * (4 if target.single else 8))
        if draft.data != NULL:
            specdec_prefetch(draft.data + i * draft.row_stride
                             + tokens[i] * (4 if draft.single else 8))


# --------------------------------------------------------------------------
# The drop-in.

cdef list RATES = []     # RATES[K][n] = round(n / (K + 1), 4), filled on first use


cdef object acceptance_rate(Py_ssize_t n, Py_ssize_t K):
    """``round(n / (K + 1), 4)`` as the reference computes it (0 when K == 0)."""
    if K == 0:
        return 0
    if K < 1024:
        while len(RATES) <= K:
            k = len(RATES)
            RATES.append(tuple([round(j / (k + 1), 4) for j in range(k + 3)]))
        return (<tuple>RATES[K])[n]
    return round(<double>n / <double>(K + 1), 4)


cdef int check_all_probabilities(Matrix* m, str name, Py_ssize_t nrows, Py_ssize_t n) except -1:
    cdef Py_ssize_t i, v
    for i in range(nrows):
        for v in range(n):
            check_probability(read_entry(m, i, v, name), name, i, v)
    return 0


def speculative_decode_sim(draft_probs, target_probs, draft_tokens, vocab_size, *,
                           rng=None, uniforms=None, check_all=False, semantics="reference"):
    """Compiled twin of the reference; see ``specdec_fast.speculative_decode_sim``."""
    cdef Matrix target, draft
    cdef Uniforms src
    cdef Py_ssize_t small_tokens[64]
    cdef Py_ssize_t small_out[66]
    cdef Py_ssize_t* tokens = small_tokens
    cdef Py_ssize_t* out = small_out
    cdef Py_ssize_t K, V, i, n = 0, t
    cdef double p, q, u
    cdef bint bonus, exact
    if semantics == "reference":
        exact = False
    elif semantics == "exact":
        exact = True
    else:
        raise ValueError(f"semantics must be 'reference' or 'exact', got {semantics!r}")
    V = as_size(vocab_size, "vocab_size")
    if type(draft_tokens) is not list and (
            isinstance(draft_tokens, (str, bytes)) or not hasattr(draft_tokens, "__len__")):
        raise TypeError(f"draft_tokens must be a sequence of ints, not {type(draft_tokens).__name__}")
    K = len(draft_tokens)
    keep_target = open_matrix(target_probs, "target_probs", K, K + 1, V, &target)   # R5
    keep_draft = open_matrix(draft_probs, "draft_probs", K, K, V, &draft)
    keep_uniforms = open_uniforms(rng, uniforms, &src)
    if check_all:
        check_all_probabilities(&target, "target_probs", min(target.nrows, K + 1), V)
        check_all_probabilities(&draft, "draft_probs", K, V)
    if K > 64:
        tokens = <Py_ssize_t*>malloc(K * sizeof(Py_ssize_t))
        out = <Py_ssize_t*>malloc((K + 2) * sizeof(Py_ssize_t))
        if tokens == NULL or out == NULL:
            free(tokens)
            free(out)
            raise MemoryError()
    try:
        read_tokens(draft_tokens, K, V, tokens)
        prefetch_entries(&target, &draft, tokens, K)
        bonus = True
        for i in range(K):                                   # R1
            t = tokens[i]
            p = read_entry(&target, i, t, "target_probs")    # R2
            check_probability(p, "target_probs", i, t)
            q = read_entry(&draft, i, t, "draft_probs")
            check_probability(q, "draft_probs", i, t)
            if q == 0.0 and not exact:
                bonus = False                                # R2: stop, no token
                break
            if q != 0.0:
                next_uniform(&src, &u)                       # R3
                if u < p / q:
                    out[n] = t
                    n += 1
                    continue
            next_uniform(&src, &u)                           # R4
            out[n] = sample_residual(&target, &draft, i, V, u)
            n += 1
            bonus = not exact                                # R6: the reference's bonus
            break
        if bonus and n == K and target.nrows > K:           # R6, R7
            next_uniform(&src, &u)
            out[n] = sample_cumulative(&target, K, V, u)
            n += 1
        token_list = PyList_New(n)
        for i in range(n):
            item = PyLong_FromSsize_t(out[i])
            Py_INCREF(item)
            PyList_SET_ITEM(token_list, i, item)
        return {                                             # R9
            "num_draft_tokens": K,
            "num_accepted": n,
            "acceptance_rate": acceptance_rate(n, K),
            "tokens": token_list,
            "speedup_over_sequential": n / 2.0,
        }
    finally:
        if tokens != small_tokens:
            free(tokens)
            free(out)
