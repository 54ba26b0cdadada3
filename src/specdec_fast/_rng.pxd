from libc.stdint cimport uint64_t

cdef extern from "xoshiro256plus.h" nogil:
    ctypedef struct xoshiro256plus_state:
        uint64_t s[4]
    uint64_t splitmix64_next(uint64_t *x)
    void xoshiro256plus_seed(xoshiro256plus_state *st, uint64_t seed)
    uint64_t xoshiro256plus_next(xoshiro256plus_state *st)
    double xoshiro256plus_next_double(xoshiro256plus_state *st)
    void xoshiro256plus_jump(xoshiro256plus_state *st)


cdef class Rng:
    cdef xoshiro256plus_state c_state
    cdef object held_by             # None, or (lock, thread) of the verify_batch call holding it
    cdef Py_ssize_t drawing_calls   # speculative_decode_sim calls drawing from c_state now


cdef int wait_until_free(Rng rng) except -1


cdef inline int ready(Rng rng) except -1:
    """Return once no ``verify_batch`` call holds the generator (at once, mostly)."""
    if rng.held_by is not None:
        wait_until_free(rng)
    return 0
