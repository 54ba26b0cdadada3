"""The nogil kernel: one sequence's verify step, exactly as the reference does it.

Everything here works on contiguous rows of float or double and knows nothing
of Python objects.  Two samplers and the step built on them:

``residual_sample(p, q, onehot, n, u, kinds)``
    R4 of the reference semantics: the residual ``a_v = max(0, p_v - q_v)``
    (``q`` NULL: a draft one-hot at ``onehot``), ``z = sum(a)``, then the first
    ``v`` with ``u <= a_0/z + ... + a_v/z`` (uniform ``1/n`` buckets when
    ``z == 0``; token 0 when no ``v`` qualifies).  ``kinds``: the Python type
    of each ``a_v`` in the reference's list (``SumKind``), on which CPython's
    ``sum()`` depends (ints are summed exactly); NULL when all are floats.
``cumulative_sample(p, n, u)``
    R6: the first ``v`` with ``u <= p_0 + ... + p_v``; token 0 when none does.
``verify_row(...)``
    R1-R8 (or the papers' algorithm) over ``k`` drafts, greedy decoding included.

The reference sums left to right, a chain of dependent additions.  The fast
path sums in blocks with independent accumulators, locates the crossing from
the block sums, and certifies it: every summation order of ``n`` non-negative
terms is within ``gamma(n) = n*eps/(1 - n*eps)`` of the exact sum (Higham,
ch. 4), so the reference's running sum at ``v`` lies in a bracket around ours.
When ``u`` falls outside the brackets on both sides of the crossing, the
crossing is the reference's; otherwise (a draw within rounding of a bucket
boundary, about ``2e-15 * n`` of draws) the row is redone serially, the
reference's way.  Invalid values (negative, NaN, infinite) send the fast path
to the serial one, which reports the first such value the reference reads.

Samplers return the token (>= 0), or ``BAD_TARGET`` / ``BAD_DRAFT`` with the
offending index in ``bad[0]``.
"""
from libc.float cimport DBL_MAX
from libc.limits cimport LONG_MAX
from libc.math cimport fabs



cdef extern from "prefetch.h" nogil:
    void specdec_prefetch(const void* p)

cdef extern from "block_sums.h" nogil:
    int residual_block_sums_f64(const double* p, const double* q, Py_ssize_t n,
                                Py_ssize_t block, double* sums)
    int residual_block_sums_f32(const float* p, const float* q, Py_ssize_t n,
                                Py_ssize_t block, double* sums)
    Py_ssize_t row_crossing_block_f64(const double* p, Py_ssize_t n, Py_ssize_t block,
                                      double u, double* before, int* valid)
    Py_ssize_t row_crossing_block_f32(const float* p, Py_ssize_t n, Py_ssize_t block,
                                      double u, double* before, int* valid)
    Py_ssize_t row_crossing_chunk_f64(const double* p, Py_ssize_t n, double u,
                                      double* before, int* valid)
    Py_ssize_t row_crossing_chunk_f32(const float* p, Py_ssize_t n, double u,
                                      double* before, int* valid)
    Py_ssize_t residual_crossing_chunk_f64(const double* p, const double* q, Py_ssize_t n,
                                           double u, double* before)
    Py_ssize_t residual_crossing_chunk_f32(const float* p, const float* q, Py_ssize_t n,
                                           double u, double* before)
    int row_block_sums_f64(const double* p, Py_ssize_t n, Py_ssize_t block, double* sums)
    int row_block_sums_f32(const float* p, Py_ssize_t n, Py_ssize_t block, double* sums)
    double row_max_f64(const double* p, Py_ssize_t n, int* valid)
    double row_max_f32(const float* p, Py_ssize_t n, int* valid)

cdef enum:
    BLOCK = 1024         # elements per block sum, at the least
    SUB_BLOCK = 32       # elements per sub-block sum inside the crossing block
    MAX_BLOCKS = 1024    # block sums kept on the stack; longer rows use longer blocks
    SCAN_BLOCK = 256     # elements per block of the bonus scan (blocks are not kept)

cdef double EPS = 1.1102230246251565e-16      # 2**-53, the unit roundoff
cdef double TINY = 4.9406564584124654e-324    # 2**-1074, the smallest subnormal


cdef inline double positive_part(double d) noexcept nogil:
    """``max(0.0, d)`` as Python computes it: ``d`` when ``d > 0``, else ``0.0``."""
    return d if d > 0.0 else 0.0


cdef inline Py_ssize_t block_length(Py_ssize_t n, Py_ssize_t least) noexcept nogil:
    """A block length of at least ``least`` that cuts ``n`` into at most MAX_BLOCKS."""
    cdef Py_ssize_t length = least
    while length * MAX_BLOCKS < n:
        length *= 2
    return length


cdef inline Py_ssize_t crossing(const double* sums, Py_ssize_t count, double target,
                                double* below) noexcept nogil:
    """The first block at which ``below`` plus the running sum reaches ``target``
    (the last block when none does); adds the blocks before it to ``below``."""
    cdef Py_ssize_t b = 0
    while b < count - 1 and below[0] + sums[b] < target:
        below[0] += sums[b]
        b += 1
    return b


cdef inline bint certified(double below, double at, double u, double tol, double tiny,
                           bint first) noexcept nogil:
    """True when the reference's running sums bracket ``u`` as ours do.

    ``below``/``at`` are our running sums before and at the candidate; the
    reference's lie within ``(1 +- tol)`` of them, give or take ``tiny``.
    """
    cdef double lo = at * (1.0 - tol) - tiny
    if lo < 0.0:
        lo = 0.0           # the reference's running sum is never negative
    if not u <= lo:
        return False
    return first or below * (1.0 + tol) + tiny < u


cdef inline double residual_at(const real* p, const real* q, Py_ssize_t onehot,
                               Py_ssize_t v) noexcept nogil:
    """``max(0, p_v - q_v)``; with ``q`` NULL the draft is one-hot at ``onehot``."""
    if q != NULL:
        return positive_part(<double>p[v] - <double>q[v])
    return positive_part(<double>p[v] - (1.0 if v == onehot else 0.0))


cdef struct InterpreterSum:
    # sum() of the running CPython: while the items are ints it adds them exactly
    # (here ``total + compensation``, renormalised, holds their exact sum); the first
    # other item is added to that sum rounded to a double.  From there on CPython
    # 3.12 and later compensate the floats (Neumaier; ints added as they are) until
    # an item of a third type, after which, as always before 3.12 and once the ints
    # outgrew a C long, additions are plain.
    double total
    double compensation
    unsigned char phase          # a SumKind: SUM_INT, SUM_FLOAT, then SUM_OTHER
    bint beyond_long             # the ints' sum passed LONG_MAX (CPython left its C fast path)


cdef double LONG_LIMIT = <double>LONG_MAX + 1.0      # 2**63 (2**31 where a long has 32 bits)


cdef inline void exact_int_add(InterpreterSum* s, double a) noexcept nogil:
    """Adds the integer ``a`` to the exact sum ``total + compensation`` (Knuth's
    two-sum, then renormalised): exact while the sum is below 2**105."""
    cdef double hi = s.total + a
    cdef double b = hi - s.total
    cdef double lo = s.compensation + ((s.total - (hi - b)) + (a - b))
    s.total = hi + lo
    s.compensation = lo - (s.total - hi)
    if s.total > LONG_LIMIT or (s.total == LONG_LIMIT and s.compensation >= 0.0):
        s.beyond_long = True


cdef inline void interpreter_sum_add(InterpreterSum* s, double a,
                                     unsigned char kind) noexcept nogil:
    """Adds ``a``, an item of the given kind, as the running interpreter's sum() does."""
    cdef double t
    if s.phase == SUM_INT:
        if kind == SUM_INT:
            exact_int_add(s, a)
            return
        s.total = (s.total + s.compensation) + a
        s.compensation = 0.0
        s.phase = kind if sum_is_compensated() and not s.beyond_long else SUM_OTHER
    elif s.phase == SUM_OTHER:
        s.total += a
    elif kind == SUM_FLOAT:
        t = s.total + a
        if fabs(s.total) >= fabs(a):
            s.compensation += (s.total - t) + a
        else:
            s.compensation += (a - t) + s.total
        s.total = t
    elif kind == SUM_INT:
        s.total += a
    else:
        s.total = interpreter_sum_result(s) + a
        s.phase = SUM_OTHER


cdef inline double interpreter_sum_result(const InterpreterSum* s) noexcept nogil:
    if s.phase == SUM_INT:
        return s.total + s.compensation     # the ints' sum, rounded (not a case R4 meets)
    if s.phase == SUM_FLOAT and s.compensation != 0.0 and fabs(s.compensation) <= DBL_MAX:
        return s.total + s.compensation
    return s.total


cdef Py_ssize_t residual_sample_serial(const real* p, const real* q, Py_ssize_t onehot,
                                       Py_ssize_t n, double u, const unsigned char* kinds,
                                       Py_ssize_t* bad) noexcept nogil:
    """R4 exactly as the reference runs it, validating every value it reads.

    ``z`` is summed as the running interpreter's ``sum()`` adds the residuals'
    Python objects: ``kinds[v]`` is the kind of ``p[v] - q[v]`` where positive
    (``max`` gives the float ``0.0`` elsewhere); NULL when every one is a float.
    """
    cdef InterpreterSum z_sum = InterpreterSum(0.0, 0.0, SUM_INT, False)
    cdef double z, t, a, cum = 0.0
    cdef Py_ssize_t v
    for v in range(n):
        if not is_probability(p[v]):
            bad[0] = v
            return BAD_TARGET
        if q != NULL and not is_probability(q[v]):
            bad[0] = v
            return BAD_DRAFT
        a = residual_at(p, q, onehot, v)
        interpreter_sum_add(&z_sum, a, kinds[v] if kinds != NULL and a > 0.0 else SUM_FLOAT)
    z = interpreter_sum_result(&z_sum)
    if z > 0.0:
        for v in range(n):
            cum += residual_at(p, q, onehot, v) / z
            if u <= cum:
                return v
    else:
        t = 1.0 / <double>n
        for v in range(n):
            cum += t
            if u <= cum:
                return v
    return 0


cdef inline bint row_sums(const real* p, Py_ssize_t n, Py_ssize_t length,
                          double* sums) noexcept nogil:
    if real is float:
        return row_block_sums_f32(p, n, length, sums)
    else:
        return row_block_sums_f64(p, n, length, sums)


cdef bint residual_sums(const real* p, const real* q, Py_ssize_t onehot, Py_ssize_t n,
                        Py_ssize_t length, double* sums) noexcept nogil:
    """Block sums of the residual; validity as for the C block sums."""
    cdef double left = 0.0, right = 0.0     # row_sums writes nothing for an empty range
    cdef Py_ssize_t b, start, j
    cdef bint valid
    if q != NULL:
        if real is float:
            return residual_block_sums_f32(p, q, n, length, sums)
        else:
            return residual_block_sums_f64(p, q, n, length, sums)
    valid = row_sums(p, n, length, sums)
    if 0 <= onehot < n:
        # Re-add the block that holds the draft token, with its residual in place of p.
        b = onehot // length
        start = b * length
        j = onehot - start
        row_sums(p + start, j, max(j, 1), &left)
        row_sums(p + onehot + 1, min(length, n - start) - j - 1, length, &right)
        sums[b] = (left + residual_at(p, q, onehot, onehot)) + right
    return valid


cdef inline Py_ssize_t residual_chunk_crossing(const real* p, const real* q, Py_ssize_t n,
                                               double u, double* below) noexcept nogil:
    if real is float:
        return residual_crossing_chunk_f32(p, q, n, u, below)
    else:
        return residual_crossing_chunk_f64(p, q, n, u, below)


cdef Py_ssize_t residual_sample(const real* p, const real* q, Py_ssize_t onehot, Py_ssize_t n,
                                double u, const unsigned char* kinds,
                                Py_ssize_t* bad) noexcept nogil:
    cdef double sums[MAX_BLOCKS]
    cdef Py_ssize_t length = block_length(n, BLOCK), sub
    cdef Py_ssize_t nblocks = (n + length - 1) // length
    cdef Py_ssize_t b, v, start, count
    cdef double z = 0.0, target, below = 0.0, inner = 0.0, at, tol
    cdef bint valid = residual_sums(p, q, onehot, n, length, sums)
    for b in range(nblocks):
        z += sums[b]
    # Leave anything unusual to the serial path: invalid values, a zero or
    # overflowing residual, sums so small or large that scaling by z underflows.
    if not (valid and 1e-290 < z <= 1e290):
        return residual_sample_serial(p, q, onehot, n, u, kinds, bad)
    # Locate the crossing: the block, then the vector-sized chunk (one-hot
    # drafts: the sub-block) within it, then the element, keeping ``below`` a
    # sum of the residual before the candidate.
    target = u * z
    start = crossing(sums, nblocks, target, &below) * length
    if q != NULL:
        v = start + residual_chunk_crossing(p + start, q + start, n - start, target - below,
                                            &inner)
        below += inner
    else:
        count = min(length, n - start)
        sub = block_length(count, SUB_BLOCK)
        residual_sums(p + start, NULL, onehot - start, count, sub, sums)
        v = start + crossing(sums, (count + sub - 1) // sub, target, &below) * sub
    at = below
    while v < n:
        at = below + residual_at(p, q, onehot, v)
        if at >= target:
            break
        below = at
        v += 1
    tol = 8.0 * <double>(n + 2) * EPS
    if v < n:
        if certified(below / z, at / z, u, tol, <double>(n + 2) * TINY, v == 0):
            return v
    elif below / z * (1.0 + tol) + <double>(n + 2) * TINY < u:
        return 0
    return residual_sample_serial(p, q, onehot, n, u, kinds, bad)


cdef double any_order_sum(const double* p, Py_ssize_t n) noexcept nogil:
    """The sum of ``p[0 .. n)`` in the block sums' order (not the reference's)."""
    cdef double total = 0.0
    row_block_sums_f64(p, n, max(n, 1), &total)
    return total


cdef Py_ssize_t cumulative_sample_serial(const real* p, Py_ssize_t n, double u,
                                         Py_ssize_t* bad) noexcept nogil:
    """R6 exactly as the reference runs it, validating every value it reads."""
    cdef double cum = 0.0, x
    cdef Py_ssize_t v
    for v in range(n):
        x = p[v]
        if not is_probability(x):
            bad[0] = v
            return BAD_TARGET
        cum += x
        if u <= cum:
            return v
    return 0


cdef inline Py_ssize_t row_crossing(const real* p, Py_ssize_t n, Py_ssize_t length, double u,
                                    double* below, int* valid) noexcept nogil:
    if real is float:
        return row_crossing_block_f32(p, n, length, u, below, valid)
    else:
        return row_crossing_block_f64(p, n, length, u, below, valid)


cdef inline Py_ssize_t chunk_crossing(const real* p, Py_ssize_t n, double u, double* below,
                                      int* valid) noexcept nogil:
    if real is float:
        return row_crossing_chunk_f32(p, n, u, below, valid)
    else:
        return row_crossing_chunk_f64(p, n, u, below, valid)


cdef Py_ssize_t cumulative_sample(const real* p, Py_ssize_t n, double u,
                                  Py_ssize_t* bad) noexcept nogil:
    cdef Py_ssize_t start = 0, v
    cdef double below = 0.0, inner = 0.0, at, x, tol
    cdef int valid = 1
    # The block where the running sum reaches u, then the vector-sized chunk
    # within it, then the element.  The reference reads up to the crossing;
    # beyond it only the rest of the crossing's block is read, and a bad value
    # there sends the call to the serial path, which does not read it.
    if n > SCAN_BLOCK:
        start = row_crossing(p, n, SCAN_BLOCK, u, &below, &valid)
        if not valid:
            return cumulative_sample_serial(p, n, u, bad)
    v = start + chunk_crossing(p + start, n - start, u - below, &inner, &valid)
    if not valid:
        return cumulative_sample_serial(p, n, u, bad)
    below += inner
    at = below
    while v < n:
        x = p[v]
        if not is_probability(x):
            return cumulative_sample_serial(p, n, u, bad)
        at = below + x
        if at >= u:
            break
        below = at
        v += 1
    if not at <= DBL_MAX:
        return cumulative_sample_serial(p, n, u, bad)
    tol = 8.0 * <double>(n + 2) * EPS
    if v < n:
        if certified(below, at, u, tol, 0.0, v == 0):
            return v
    elif below * (1.0 + tol) < u:
        return 0
    return cumulative_sample_serial(p, n, u, bad)


cdef Py_ssize_t row_argmax(const real* p, Py_ssize_t n, Py_ssize_t* bad) noexcept nogil:
    """The index of the largest value, the lowest on ties (greedy decoding)."""
    cdef int valid
    cdef double best
    cdef Py_ssize_t v
    if real is float:
        best = row_max_f32(p, n, &valid)
    else:
        best = row_max_f64(p, n, &valid)
    if not valid:
        for v in range(n):
            if not is_probability(p[v]):
                bad[0] = v
                return BAD_TARGET
    for v in range(n):
        if p[v] == best:
            return v
    return 0


cdef inline VerifyOutcome outcome(Py_ssize_t emitted, Py_ssize_t accepted, int error,
                                  Py_ssize_t row, Py_ssize_t index) noexcept nogil:
    cdef VerifyOutcome r
    r.emitted = emitted
    r.accepted = accepted
    r.error = error
    r.row = row
    r.index = index
    return r


cdef VerifyOutcome greedy_row(const real* target, Py_ssize_t target_stride,
                              Py_ssize_t target_rows, const Py_ssize_t* tokens, Py_ssize_t k,
                              Py_ssize_t n, int semantics, Py_ssize_t* out) noexcept nogil:
    """Greedy decoding: each draft stands while it is its target row's argmax."""
    cdef Py_ssize_t i, t, token, bad = 0
    for i in range(k):
        t = tokens[i]
        if <size_t>t >= <size_t>n:
            return outcome(i, i, BAD_TOKEN, i, t)
        token = row_argmax(target + i * target_stride, n, &bad)
        if token < 0:
            return outcome(i, i, BAD_TARGET_VALUE, i, bad)
        out[i] = token
        if token != t:
            return outcome(i + 1, i, OK, 0, 0)
    if not bonus_follows(semantics, k, k, k, target_rows):
        return outcome(k, k, OK, 0, 0)
    token = row_argmax(target + k * target_stride, n, &bad)
    if token < 0:
        return outcome(k, k, BAD_TARGET_VALUE, k, bad)
    out[k] = token
    return outcome(k + 1, k, OK, 0, 0)


cdef inline VerifyOutcome bonus_step(const real* target, Py_ssize_t target_stride,
                                     Py_ssize_t target_rows, Py_ssize_t k, Py_ssize_t n,
                                     int semantics, UniformStream* stream, Py_ssize_t* out,
                                     Py_ssize_t emitted, Py_ssize_t accepted) noexcept nogil:
    """R6, R7: the bonus token from target row ``k``, if one follows."""
    cdef Py_ssize_t token, bad = 0
    cdef double u
    if not bonus_follows(semantics, accepted, emitted, k, target_rows):
        return outcome(emitted, accepted, OK, 0, 0)
    if not next_uniform(stream, &u):
        return outcome(emitted, accepted, OUT_OF_UNIFORMS, k, 0)
    token = cumulative_sample(target + k * target_stride, n, u, &bad)
    if token < 0:
        return outcome(emitted, accepted, BAD_TARGET_VALUE, k, bad)
    out[emitted] = token
    return outcome(emitted + 1, accepted, OK, 0, 0)


cdef VerifyOutcome verify_row(const real* target, Py_ssize_t target_stride,
                              Py_ssize_t target_rows, const real* draft,
                              Py_ssize_t draft_stride, const Py_ssize_t* tokens,
                              Py_ssize_t k, Py_ssize_t n, int semantics, bint greedy,
                              UniformStream* stream, Py_ssize_t* out) noexcept nogil:
    """One sequence's verify step: ``k`` drafts against rows of ``target``.

    Row ``i`` of the target starts at ``target + i * target_stride``; the same for
    ``draft``, which may be NULL for a deterministic proposer (one-hot drafts).
    Writes the emitted tokens to ``out`` (room for ``k + 2``).  Until a draft is
    rejected, the tokens emitted are the drafts accepted.
    """
    cdef const real* p
    cdef const real* q = NULL
    cdef Py_ssize_t i, t, token, bad = 0
    cdef double pt, qt, u
    if greedy:
        return greedy_row(target, target_stride, target_rows, tokens, k, n, semantics, out)
    for i in range(k):
        t = tokens[i]
        if <size_t>t < <size_t>n:
            specdec_prefetch(target + i * target_stride + t)
            if draft != NULL:
                specdec_prefetch(draft + i * draft_stride + t)
    for i in range(k):                                           # R1
        t = tokens[i]
        if <size_t>t >= <size_t>n:
            return outcome(i, i, BAD_TOKEN, i, t)
        p = target + i * target_stride
        pt = p[t]                                                # R2
        if not is_probability(pt):
            return outcome(i, i, BAD_TARGET_VALUE, i, t)
        qt = 1.0
        if draft != NULL:
            q = draft + i * draft_stride
            qt = q[t]
            if not is_probability(qt):
                return outcome(i, i, BAD_DRAFT_VALUE, i, t)
        if qt == 0.0 and semantics == REFERENCE:
            return outcome(i, i, OK, 0, 0)                       # R2: no token, no bonus
        if qt != 0.0:                                            # R3
            if not next_uniform(stream, &u):
                return outcome(i, i, OUT_OF_UNIFORMS, i, 0)
            if u < pt / qt:
                out[i] = t
                continue
        if not next_uniform(stream, &u):                         # R4
            return outcome(i, i, OUT_OF_UNIFORMS, i, 0)
        token = residual_sample(p, q, t, n, u, NULL, &bad)
        if token == BAD_TARGET:
            return outcome(i, i, BAD_TARGET_VALUE, i, bad)
        if token == BAD_DRAFT:
            return outcome(i, i, BAD_DRAFT_VALUE, i, bad)
        out[i] = token
        return bonus_step(target, target_stride, target_rows, k, n, semantics, stream,
                          out, i + 1, i)
    return bonus_step(target, target_stride, target_rows, k, n, semantics, stream, out, k, k)
