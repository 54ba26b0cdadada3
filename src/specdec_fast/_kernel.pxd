from specdec_fast._rng cimport xoshiro256plus_state

ctypedef fused real:
    float
    double

cdef enum:
    BAD_TARGET = -1      # a value of the target row failed validation
    BAD_DRAFT = -2       # a value of the draft row failed validation

cdef enum Semantics:
    EXACT = 0            # the papers' algorithm
    REFERENCE = 1        # the reference's rules R1-R8

cdef enum VerifyError:
    OK = 0
    BAD_TOKEN = 1        # draft token ``index`` at position ``row`` is outside [0, n)
    BAD_TARGET_VALUE = 2 # target[row][index] is negative, NaN or infinite
    BAD_DRAFT_VALUE = 3  # draft[row][index] is negative, NaN or infinite
    OUT_OF_UNIFORMS = 4  # a replay ran out at position ``row``

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
                                double u, bint compensated, Py_ssize_t* bad) noexcept nogil
cdef Py_ssize_t cumulative_sample(const real* p, Py_ssize_t n, double u,
                                  Py_ssize_t* bad) noexcept nogil
cdef VerifyOutcome verify_row(const real* target, Py_ssize_t target_stride,
                              Py_ssize_t target_rows, const real* draft,
                              Py_ssize_t draft_stride, const Py_ssize_t* tokens,
                              Py_ssize_t k, Py_ssize_t n, int semantics, bint greedy,
                              bint compensated, UniformStream* stream,
                              Py_ssize_t* out) noexcept nogil
