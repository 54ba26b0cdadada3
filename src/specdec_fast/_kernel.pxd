from libc.float cimport DBL_MAX

from specdec_fast._rng cimport xoshiro256plus_next_double, xoshiro256plus_state

ctypedef fused real:
    float
    double

cdef enum:
    BAD_TARGET = -1      # a value of the target row failed validation
    BAD_DRAFT = -2       # a value of the draft row failed validation

cdef extern from "Python.h":
    int PY_VERSION_HEX

cdef inline bint sum_is_compensated() noexcept nogil:
    """Whether the running interpreter's ``sum()`` compensates float additions
    (Neumaier's algorithm, CPython 3.12 and later)."""
    return PY_VERSION_HEX >= 0x030C0000

cdef enum SumKind:
    # How the reference's ``sum()`` adds a residual ``max(0.0, p - q)``, by its Python type.
    SUM_FLOAT = 0        # a float: compensated from CPython 3.12 on
    SUM_INT = 1          # an int: exactly while the ints lead, then as it is
    SUM_OTHER = 2        # anything else (a NumPy float64): from here on, plain additions

cdef enum Semantics:
    EXACT = 0            # the papers' algorithm
    REFERENCE = 1        # the reference's rules R1-R8

cdef enum VerifyError:
    OK = 0
    BAD_TOKEN = 1        # draft token ``index`` at position ``row`` is outside [0, n)
    BAD_TARGET_VALUE = 2 # target[row][index] is negative, NaN or infinite
    BAD_DRAFT_VALUE = 3  # draft[row][index] is negative, NaN or infinite
    OUT_OF_UNIFORMS = 4  # a replay ran out at position ``row``
    BAD_COUNT = 5        # a batch row's number of drafts is outside [0, K] (``_batch``)

cdef struct UniformStream:
    xoshiro256plus_state* state     # draw from this generator when not NULL,
    const double* values            # else replay values[0 .. count) in turn
    Py_ssize_t count
    Py_ssize_t used

cdef struct VerifyOutcome:
    Py_ssize_t emitted              # tokens written (corrections and bonus included)
    Py_ssize_t accepted             # draft tokens accepted
    int error                       # a VerifyError
    Py_ssize_t row
    Py_ssize_t index

cdef Py_ssize_t residual_sample(const real* p, const real* q, Py_ssize_t onehot, Py_ssize_t n,
                                double u, const unsigned char* kinds,
                                Py_ssize_t* bad) noexcept nogil
cdef double any_order_sum(const double* p, Py_ssize_t n) noexcept nogil
cdef Py_ssize_t cumulative_sample(const real* p, Py_ssize_t n, double u,
                                  Py_ssize_t* bad) noexcept nogil
cdef VerifyOutcome verify_row(const real* target, Py_ssize_t target_stride,
                              Py_ssize_t target_rows, const real* draft,
                              Py_ssize_t draft_stride, const Py_ssize_t* tokens,
                              Py_ssize_t k, Py_ssize_t n, int semantics, bint greedy,
                              UniformStream* stream, Py_ssize_t* out) noexcept nogil


cdef inline bint is_probability(double x) noexcept nogil:
    """False for negative, NaN and infinite values (-0.0 passes, as 0.0 >= -0.0)."""
    return x >= 0.0 and x <= DBL_MAX


cdef inline bint next_uniform(UniformStream* stream, double* u) noexcept nogil:
    """Draw the next uniform; False when a replay has run out."""
    if stream.state != NULL:
        u[0] = xoshiro256plus_next_double(stream.state)
        return True
    if stream.used >= stream.count:
        return False
    u[0] = stream.values[stream.used]
    stream.used += 1
    return True


cdef inline bint bonus_follows(int semantics, Py_ssize_t accepted, Py_ssize_t emitted,
                               Py_ssize_t k, Py_ssize_t target_rows) noexcept nogil:
    """Whether the bonus row k is sampled: after all k drafts were accepted, and
    under the reference's rule R6 also after a rejection at the last position."""
    if target_rows <= k:
        return False
    return accepted == k or (semantics == REFERENCE and emitted == k)
