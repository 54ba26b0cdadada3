"""The nogil batch loop behind ``specdec_fast.verify_batch``.

``verify_rows`` runs ``_kernel.verify_row`` over rows ``start .. stop`` of a
batch whose arrays the Python layer (``specdec_fast/batch.py``) has already
validated: probabilities (B, R, V) float32 or float64 with a contiguous last
axis, tokens (B, K) intp, and either per-row generator states (B, 4) uint64,
a sequence of B ``Rng`` or replay uniforms (B, M) float64.  With states or
uniforms it holds the GIL only to start and to report, so threads can run
disjoint row ranges at once.  A sequence of ``Rng`` comes as the (B, 4) copies
of their states (``_rng.hold_states``), or, while one of them is being drawn
from by a ``speculative_decode_sim`` call, as the tuple of generators, advanced
in place with the GIL held (and restored if a row fails).
"""
cimport numpy as cnp
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

from specdec_fast._kernel cimport (BAD_COUNT, BAD_DRAFT_VALUE, BAD_TARGET_VALUE, BAD_TOKEN,
                                   EXACT, OK, OUT_OF_UNIFORMS, REFERENCE, UniformStream,
                                   VerifyOutcome, real, verify_row)
from specdec_fast._rng cimport Rng, xoshiro256plus_state

cnp.import_array()


cdef struct Batch:
    # The validated arrays of one call: where rows are and where their results go.
    const void* target               # (B, R, V), float if ``single`` else double
    const void* draft                # (B, K, V) of the same type, or NULL (one-hot drafts)
    bint single
    Py_ssize_t b_stride_t, k_stride_t, target_rows
    Py_ssize_t b_stride_d, k_stride_d
    const Py_ssize_t* tokens         # (B, K)
    const Py_ssize_t* counts         # (B,) drafts used per row
    Py_ssize_t K, V
    xoshiro256plus_state* states     # (B,) generator states, or NULL
    xoshiro256plus_state** generators  # (B,) pointers into Rng objects, or NULL
    const double* uniforms           # (B, m) replay values, or NULL
    Py_ssize_t m
    int semantics
    bint greedy
    int64_t* out_tokens              # OUT (B, width)
    Py_ssize_t width
    int64_t* emitted                 # OUT (B,)
    int64_t* accepted                # OUT (B,)


cdef VerifyOutcome verify_range(const Batch* a, const real* target, const real* draft,
                                Py_ssize_t start, Py_ssize_t stop, Py_ssize_t* scratch,
                                Py_ssize_t* failed_row) noexcept nogil:
    """Verify rows start .. stop; on an error, stop and name the row in ``failed_row``.

    Row b draws from ``generators[b]`` when given, else from ``states[b]`` when
    given, else replays ``uniforms[b]``."""
    # Fields in locals: the stores to the outputs could alias ``a``'s fields.
    cdef int64_t* out_tokens = a.out_tokens
    cdef Py_ssize_t width = a.width
    cdef Py_ssize_t b, j
    cdef VerifyOutcome outcome
    cdef UniformStream stream
    cdef const real* draft_rows
    outcome.error = OK
    outcome.emitted = outcome.accepted = outcome.row = outcome.index = 0
    for b in range(start, stop):
        if <size_t>a.counts[b] > <size_t>a.K:       # also negative: never past the scratch
            outcome.error = BAD_COUNT
            failed_row[0] = b
            return outcome
        if a.generators != NULL:
            stream.state = a.generators[b]
        else:
            stream.state = NULL if a.states == NULL else a.states + b
        stream.values = a.uniforms + b * a.m if a.uniforms != NULL else NULL
        stream.count = a.m
        stream.used = 0
        draft_rows = NULL
        if draft != NULL:
            draft_rows = draft + b * a.b_stride_d
        outcome = verify_row(target + b * a.b_stride_t, a.k_stride_t, a.target_rows,
                             draft_rows, a.k_stride_d, a.tokens + b * a.K, a.counts[b], a.V,
                             a.semantics, a.greedy, &stream, scratch)
        for j in range(width):
            out_tokens[b * width + j] = scratch[j] if j < outcome.emitted else -1
        a.emitted[b] = outcome.emitted
        a.accepted[b] = outcome.accepted
        if outcome.error != OK:
            failed_row[0] = b
            return outcome
    return outcome


cdef VerifyOutcome verify_typed_range(const Batch* a, Py_ssize_t start, Py_ssize_t stop,
                                      Py_ssize_t* scratch, Py_ssize_t* failed_row) noexcept nogil:
    """``verify_range`` for the batch's element type."""
    if a.single:
        return verify_range(a, <const float*>a.target, <const float*>a.draft,
                            start, stop, scratch, failed_row)
    return verify_range(a, <const double*>a.target, <const double*>a.draft,
                        start, stop, scratch, failed_row)


def verify_rows(cnp.ndarray target, object draft, cnp.ndarray tokens, cnp.ndarray counts,
                object states, object uniforms, bint reference, bint greedy,
                cnp.ndarray out_tokens, cnp.ndarray out_emitted, cnp.ndarray out_accepted,
                Py_ssize_t start, Py_ssize_t stop):
    """Verify rows ``start .. stop``; returns None, or (error, b, row, index).

    ``states``: a (B, 4) uint64 array of generator states, or a tuple of B ``Rng``
    (advanced in place with the GIL held, and left as they were if a row fails;
    the tuple keeps them alive), or None with ``uniforms``."""
    cdef Batch a
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(target)
    cdef Py_ssize_t b, failed_row = -1
    cdef bint in_place = type(states) is tuple
    cdef VerifyOutcome outcome
    cdef Py_ssize_t* scratch
    cdef xoshiro256plus_state* saved = NULL     # the generators' states before the rows
    require_rows(target, "target_probs", target)
    if draft is not None:
        require_rows(draft, "draft_probs", target)
    require_shapes(target, draft, tokens, counts, states, uniforms, out_tokens, out_emitted,
                   out_accepted, start, stop)
    a.target = cnp.PyArray_DATA(target)
    a.single = cnp.PyArray_TYPE(target) == cnp.NPY_FLOAT
    a.b_stride_t = cnp.PyArray_STRIDE(target, 0) // item
    a.k_stride_t = cnp.PyArray_STRIDE(target, 1) // item
    a.target_rows = cnp.PyArray_DIM(target, 1)
    a.draft = NULL
    a.b_stride_d = a.k_stride_d = 0
    if draft is not None:
        a.draft = cnp.PyArray_DATA(draft)
        a.b_stride_d = cnp.PyArray_STRIDE(draft, 0) // item
        a.k_stride_d = cnp.PyArray_STRIDE(draft, 1) // item
    a.tokens = <const Py_ssize_t*>cnp.PyArray_DATA(tokens)
    a.counts = <const Py_ssize_t*>cnp.PyArray_DATA(counts)
    a.K = cnp.PyArray_DIM(tokens, 1)
    a.V = cnp.PyArray_DIM(target, 2)
    a.states = NULL
    a.generators = NULL
    a.uniforms = NULL
    a.m = 0
    if states is None:
        a.uniforms = <const double*>cnp.PyArray_DATA(uniforms)
        a.m = cnp.PyArray_DIM(uniforms, 1)
    elif not in_place:
        a.states = <xoshiro256plus_state*>cnp.PyArray_DATA(<cnp.ndarray?>states)
    a.semantics = REFERENCE if reference else EXACT
    a.greedy = greedy
    a.out_tokens = <int64_t*>cnp.PyArray_DATA(out_tokens)
    a.width = cnp.PyArray_DIM(out_tokens, 1)
    a.emitted = <int64_t*>cnp.PyArray_DATA(out_emitted)
    a.accepted = <int64_t*>cnp.PyArray_DATA(out_accepted)
    scratch = <Py_ssize_t*>malloc((a.K + 2) * sizeof(Py_ssize_t))
    if scratch == NULL:
        raise MemoryError()
    try:
        if in_place:
            # Pointers into the Rng objects, which the tuple ``states`` keeps
            # alive; no other thread can draw from them while this one holds the GIL.
            a.generators = <xoshiro256plus_state**>malloc(
                max(stop, 1) * sizeof(xoshiro256plus_state*))
            saved = <xoshiro256plus_state*>malloc(max(stop, 1) * sizeof(xoshiro256plus_state))
            if a.generators == NULL or saved == NULL:
                raise MemoryError()
            for b in range(start, stop):
                a.generators[b] = &(<Rng?>(<tuple>states)[b]).c_state
                saved[b] = a.generators[b][0]
            outcome = verify_typed_range(&a, start, stop, scratch, &failed_row)
            if outcome.error != OK:
                for b in range(start, stop):
                    a.generators[b][0] = saved[b]
        else:
            with nogil:
                outcome = verify_typed_range(&a, start, stop, scratch, &failed_row)
    finally:
        free(scratch)
        free(a.generators)
        free(saved)
    if outcome.error == OK:
        return None
    return (outcome.error, failed_row, outcome.row, outcome.index)


cdef int require_rows(cnp.ndarray a, str name, cnp.ndarray target) except -1:
    """The layout the loop reads, which the wrapper provides: 3-D float32/float64 of
    the target's type, native and aligned, each row a contiguous run.  Anything
    else here is a wrapper's bug, refused rather than read wrongly."""
    cdef int kind = cnp.PyArray_TYPE(a)
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(a), d
    cdef bint ok = (cnp.PyArray_NDIM(a) == 3 and kind == cnp.PyArray_TYPE(target)
                    and (kind == cnp.NPY_FLOAT or kind == cnp.NPY_DOUBLE)
                    and cnp.PyArray_ISNOTSWAPPED(a) and cnp.PyArray_ISALIGNED(a))
    if ok and cnp.PyArray_SIZE(a) > 0:      # an empty array's strides are never used
        ok = cnp.PyArray_DIM(a, 2) == 1 or cnp.PyArray_STRIDE(a, 2) == item
        for d in range(2):
            ok = ok and (cnp.PyArray_DIM(a, d) == 1 or cnp.PyArray_STRIDE(a, d) % item == 0)
    if not ok:
        raise ValueError(f"{name}: verify_rows needs rows of contiguous, aligned, native "
                         f"float32/float64 of one type; got dtype {(<object>a).dtype}, "
                         f"strides {(<object>a).strides}")
    return 0


cdef int require_c_array(object a, str name, int kind, int ndim, Py_ssize_t rows) except -1:
    """``a`` is a C-contiguous, aligned ``ndim``-D array of type ``kind`` with ``rows`` rows."""
    if not (cnp.PyArray_Check(a) and cnp.PyArray_EquivTypenums(cnp.PyArray_TYPE(a), kind)
            and cnp.PyArray_NDIM(a) == ndim and cnp.PyArray_DIM(a, 0) == rows
            and cnp.PyArray_ISCARRAY_RO(a)):
        raise ValueError(f"{name}: verify_rows needs a C-contiguous, aligned {ndim}-D array "
                         f"of {rows} rows of its type")
    return 0


cdef int require_shapes(cnp.ndarray target, object draft, object tokens, object counts,
                        object states, object uniforms, object out_tokens, object out_emitted,
                        object out_accepted, Py_ssize_t start, Py_ssize_t stop) except -1:
    """The shapes the loop indexes by, which the wrapper provides: refused, not
    read or written out of bounds, when a caller passes others."""
    cdef Py_ssize_t B = cnp.PyArray_DIM(target, 0), K
    if cnp.PyArray_DIM(target, 2) < 1:
        raise ValueError("target_probs: verify_rows needs a vocabulary of at least 1")
    require_c_array(tokens, "draft_tokens", cnp.NPY_INTP, 2, B)
    K = cnp.PyArray_DIM(tokens, 1)
    if not K <= cnp.PyArray_DIM(target, 1) <= K + 1:
        raise ValueError(f"target_probs: verify_rows needs K={K} or K+1 rows per sequence")
    if draft is not None and (cnp.PyArray_DIM(draft, 0) != B or cnp.PyArray_DIM(draft, 1) != K
                              or cnp.PyArray_DIM(draft, 2) != cnp.PyArray_DIM(target, 2)):
        raise ValueError("draft_probs: verify_rows needs shape (B, K, V) of the target's B and V")
    require_c_array(counts, "num_draft_tokens", cnp.NPY_INTP, 1, B)
    if states is None:
        require_c_array(uniforms, "uniforms", cnp.NPY_DOUBLE, 2, B)
    elif type(states) is tuple:
        if len(<tuple>states) != B:
            raise ValueError(f"states: verify_rows needs {B} generators")
    else:
        require_c_array(states, "states", cnp.NPY_UINT64, 2, B)
        if cnp.PyArray_DIM(states, 1) != 4:
            raise ValueError("states: verify_rows needs 4 words per generator")
    require_c_array(out_tokens, "out.tokens", cnp.NPY_INT64, 2, B)
    if cnp.PyArray_DIM(out_tokens, 1) != K + 1:
        raise ValueError(f"out.tokens: verify_rows needs K+1={K + 1} columns")
    require_c_array(out_emitted, "out.num_emitted", cnp.NPY_INT64, 1, B)
    require_c_array(out_accepted, "out.num_accepted", cnp.NPY_INT64, 1, B)
    for name, arr in (("out.tokens", out_tokens), ("out.num_emitted", out_emitted),
                      ("out.num_accepted", out_accepted)):
        if not cnp.PyArray_ISWRITEABLE(arr):
            raise ValueError(f"{name}: verify_rows needs a writeable array")
    if not 0 <= start <= stop <= B:
        raise ValueError(f"verify_rows: rows {start} .. {stop} are not within the batch of {B}")
    return 0


def may_overlap(cnp.ndarray a, cnp.ndarray b):
    """Whether the memory spans of two arrays overlap (``np.may_share_memory``'s
    bounds test, without its call overhead: the check runs on every call given ``out``)."""
    cdef Py_ssize_t a_low, a_high, b_low, b_high
    if not (extent(a, &a_low, &a_high) and extent(b, &b_low, &b_high)):
        return False
    return a_low < b_high and b_low < a_high


cdef bint extent(cnp.ndarray a, Py_ssize_t* low, Py_ssize_t* high) noexcept:
    """The bytes ``[low, high)`` an array spans; False when it is empty."""
    cdef Py_ssize_t d, n, stride
    low[0] = high[0] = <Py_ssize_t>cnp.PyArray_DATA(a)
    for d in range(cnp.PyArray_NDIM(a)):
        n = cnp.PyArray_DIM(a, d)
        if n == 0:
            return False
        stride = cnp.PyArray_STRIDE(a, d)
        if stride < 0:
            low[0] += (n - 1) * stride
        else:
            high[0] += (n - 1) * stride
    high[0] += cnp.PyArray_ITEMSIZE(a)
    return True


def failure_error(failure, target, draft, tokens):
    """The ValueError for a failure tuple returned by ``verify_rows``."""
    error, b, row, index = failure
    if error == BAD_COUNT:
        return ValueError(f"num_draft_tokens[{b}] is outside [0, K]")
    if error == BAD_TOKEN:
        return ValueError(f"draft_tokens[{b}][{row}] = {tokens[b, row]} is outside [0, V)")
    if error == OUT_OF_UNIFORMS:
        return ValueError(f"uniforms[{b}]: the row needs more uniforms than given "
                          f"(ran out at position {row})")
    name, arr = ("target_probs", target) if error == BAD_TARGET_VALUE else ("draft_probs", draft)
    return ValueError(f"{name}[{b}][{row}][{index}] = {float(arr[b, row, index])!r}: "
                      "probabilities must be finite and non-negative")
