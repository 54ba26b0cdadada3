"""The nogil batch loop behind ``specdec_fast.verify_batch``.

``verify_rows`` runs ``_kernel.verify_row`` over rows ``start .. stop`` of a
batch whose arrays the Python layer (``specdec_fast/batch.py``) has already
validated: probabilities (B, R, V) float32 or float64 with a contiguous last
axis, tokens (B, K) intp, and either per-row generator states (B, 4) uint64
or replay uniforms (B, M) float64.  It holds the GIL only to start and to
report, so threads can run disjoint row ranges at once.
"""
cimport numpy as cnp
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

from specdec_fast._kernel cimport (BAD_DRAFT_VALUE, BAD_TARGET_VALUE, BAD_TOKEN, EXACT, OK,
                                   OUT_OF_UNIFORMS, REFERENCE, UniformStream, VerifyOutcome,
                                   real, verify_row)
from specdec_fast._rng cimport xoshiro256plus_state

cnp.import_array()


cdef VerifyOutcome verify_range(const real* target, const real* draft, Py_ssize_t b_stride_t,
                                Py_ssize_t k_stride_t, Py_ssize_t target_rows,
                                Py_ssize_t b_stride_d, Py_ssize_t k_stride_d,
                                const Py_ssize_t* tokens, const Py_ssize_t* counts, Py_ssize_t K,
                                Py_ssize_t V, xoshiro256plus_state* states,
                                const double* uniforms, Py_ssize_t m, int semantics,
                                bint greedy, int64_t* out_tokens,
                                Py_ssize_t width, int64_t* emitted, int64_t* accepted,
                                Py_ssize_t* scratch, Py_ssize_t start, Py_ssize_t stop,
                                Py_ssize_t* failed_row) noexcept nogil:
    """Verify rows start .. stop; on an error, stop and name the row in ``failed_row``."""
    cdef VerifyOutcome outcome
    cdef UniformStream stream
    cdef Py_ssize_t b, j
    cdef const real* draft_rows
    outcome.error = OK
    for b in range(start, stop):
        stream.state = NULL if states == NULL else states + b
        stream.values = uniforms + b * m if uniforms != NULL else NULL
        stream.count = m
        stream.used = 0
        draft_rows = NULL
        if draft != NULL:
            draft_rows = draft + b * b_stride_d
        outcome = verify_row(target + b * b_stride_t, k_stride_t, target_rows,
                             draft_rows, k_stride_d,
                             tokens + b * K, counts[b], V, semantics, greedy, &stream, scratch)
        for j in range(width):
            out_tokens[b * width + j] = scratch[j] if j < outcome.emitted else -1
        emitted[b] = outcome.emitted
        accepted[b] = outcome.accepted
        if outcome.error != OK:
            failed_row[0] = b
            return outcome
    return outcome


def verify_rows(cnp.ndarray target, object draft, cnp.ndarray tokens, cnp.ndarray counts,
                object states, object uniforms, bint reference, bint greedy,
                cnp.ndarray out_tokens, cnp.ndarray out_emitted, cnp.ndarray out_accepted,
                Py_ssize_t start, Py_ssize_t stop):
    """Verify rows ``start .. stop``; returns None, or (error, b, row, index)."""
    cdef Py_ssize_t K = cnp.PyArray_DIM(tokens, 1), V = cnp.PyArray_DIM(target, 2)
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(target)
    cdef Py_ssize_t width = cnp.PyArray_DIM(out_tokens, 1)
    cdef Py_ssize_t target_rows = cnp.PyArray_DIM(target, 1)
    cdef Py_ssize_t bt = cnp.PyArray_STRIDE(target, 0) // item
    cdef Py_ssize_t kt = cnp.PyArray_STRIDE(target, 1) // item
    cdef Py_ssize_t bd = 0, kd = 0, m = 0, failed_row = -1
    cdef const void* draft_data = NULL
    cdef xoshiro256plus_state* state_data = NULL
    cdef const double* uniform_data = NULL
    cdef int semantics = REFERENCE if reference else EXACT
    cdef bint single = cnp.PyArray_TYPE(target) == cnp.NPY_FLOAT
    cdef VerifyOutcome outcome
    cdef Py_ssize_t* scratch = <Py_ssize_t*>malloc((K + 2) * sizeof(Py_ssize_t))
    if scratch == NULL:
        raise MemoryError()
    if draft is not None:
        draft_data = cnp.PyArray_DATA(draft)
        bd = cnp.PyArray_STRIDE(draft, 0) // item
        kd = cnp.PyArray_STRIDE(draft, 1) // item
    if states is not None:
        state_data = <xoshiro256plus_state*>cnp.PyArray_DATA(states)
    else:
        uniform_data = <const double*>cnp.PyArray_DATA(uniforms)
        m = cnp.PyArray_DIM(uniforms, 1)
    cdef const Py_ssize_t* token_data = <const Py_ssize_t*>cnp.PyArray_DATA(tokens)
    cdef const Py_ssize_t* count_data = <const Py_ssize_t*>cnp.PyArray_DATA(counts)
    cdef void* target_data = cnp.PyArray_DATA(target)
    cdef int64_t* out_data = <int64_t*>cnp.PyArray_DATA(out_tokens)
    cdef int64_t* emitted_data = <int64_t*>cnp.PyArray_DATA(out_emitted)
    cdef int64_t* accepted_data = <int64_t*>cnp.PyArray_DATA(out_accepted)
    try:
        with nogil:
            if single:
                outcome = verify_range(<const float*>target_data, <const float*>draft_data,
                                       bt, kt, target_rows, bd, kd, token_data, count_data, K, V,
                                       state_data, uniform_data, m, semantics, greedy,
                                       out_data, width, emitted_data,
                                       accepted_data, scratch, start, stop, &failed_row)
            else:
                outcome = verify_range(<const double*>target_data, <const double*>draft_data,
                                       bt, kt, target_rows, bd, kd, token_data, count_data, K, V,
                                       state_data, uniform_data, m, semantics, greedy,
                                       out_data, width, emitted_data,
                                       accepted_data, scratch, start, stop, &failed_row)
    finally:
        free(scratch)
    if outcome.error == OK:
        return None
    return (outcome.error, failed_row, outcome.row, outcome.index)


def failure_error(failure, target, draft, tokens):
    """The ValueError for a failure tuple returned by ``verify_rows``."""
    error, b, row, index = failure
    if error == BAD_TOKEN:
        return ValueError(f"draft_tokens[{b}][{row}] = {tokens[b, row]} is outside [0, V)")
    if error == OUT_OF_UNIFORMS:
        return ValueError(f"uniforms[{b}]: the row needs more uniforms than given "
                          f"(ran out at position {row})")
    name, arr = ("target_probs", target) if error == BAD_TARGET_VALUE else ("draft_probs", draft)
    return ValueError(f"{name}[{b}][{row}][{index}] = {arr[b, row, index]!r}: "
                      "probabilities must be finite and non-negative")
