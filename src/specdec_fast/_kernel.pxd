ctypedef fused real:
    float
    double

cdef Py_ssize_t residual_sample(const real* p, const real* q, Py_ssize_t n, double u,
                                bint compensated, Py_ssize_t* bad) noexcept nogil
cdef Py_ssize_t cumulative_sample(const real* p, Py_ssize_t n, double u,
                                  Py_ssize_t* bad) noexcept nogil

cdef enum:
    BAD_TARGET = -1      # a value of the target row failed validation
    BAD_DRAFT = -2       # a value of the draft row failed validation
