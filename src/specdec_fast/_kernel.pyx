"""The nogil kernel: sampling from one row, exactly as the reference does.

Everything here works on contiguous rows of float or double and knows nothing
of Python objects.  Two samplers:

``residual_sample(p, q, n, u)``
    R4 of the reference semantics: the residual ``a_v = max(0, p_v - q_v)``,
    ``z = sum(a)``, then the first ``v`` with ``u <= a_0/z + ... + a_v/z``
    (uniform ``1/n`` buckets when ``z == 0``; token 0 when no ``v`` qualifies).
``cumulative_sample(p, n, u)``
    R6: the first ``v`` with ``u <= p_0 + ... + p_v``; token 0 when none does.

The reference sums left to right, a chain of dependent additions.  The fast
path sums in blocks with independent accumulators, locates the crossing from
the block sums, and certifies it: every summation order of ``n`` non-negative
terms is within ``gamma(n) = n*eps/(1 - n*eps)`` of the exact sum (Higham,
ch. 4), so the reference's running sum at ``v`` lies in a bracket around ours.
When ``u`` falls outside the brackets on both sides of the crossing, the
crossing is the reference's; otherwise (a draw within rounding of a bucket
boundary, about ``n * 1e-15`` of draws) the row is redone serially, the
reference's way.  Invalid values (negative, NaN, infinite) send the fast path
to the serial one, which reports the first such value the reference reads.

Return value: the token (>= 0), or ``BAD_TARGET`` / ``BAD_DRAFT`` with the
offending index in ``bad[0]``.
"""
from libc.float cimport DBL_MAX
from libc.math cimport fabs

cdef extern from "block_sums.h" nogil:
    int residual_block_sums_f64(const double* p, const double* q, Py_ssize_t n,
                                Py_ssize_t block, double* sums)
    int residual_block_sums_f32(const float* p, const float* q, Py_ssize_t n,
                                Py_ssize_t block, double* sums)
    Py_ssize_t row_crossing_block_f64(const double* p, Py_ssize_t n, Py_ssize_t block,
                                      double u, double* before, int* valid)
    Py_ssize_t row_crossing_block_f32(const float* p, Py_ssize_t n, Py_ssize_t block,
                                      double u, double* before, int* valid)

cdef enum:
    BLOCK = 1024         # elements per block sum, at the least
    SUB_BLOCK = 32       # elements per sub-block sum inside the crossing block
    MAX_BLOCKS = 1024    # block sums kept on the stack; longer rows use longer blocks

cdef double EPS = 1.1102230246251565e-16      # 2**-53, the unit roundoff
cdef double TINY = 4.9406564584124654e-324    # 2**-1074, the smallest subnormal


cdef inline bint is_probability(double x) noexcept nogil:
    """False for negative, NaN and infinite values (-0.0 passes, as 0.0 >= -0.0)."""
    return x >= 0.0 and x <= DBL_MAX


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


cdef Py_ssize_t residual_sample_serial(const real* p, const real* q, Py_ssize_t n, double u,
                                       bint compensated, Py_ssize_t* bad) noexcept nogil:
    """R4 exactly as the reference runs it, validating every value it reads.

    ``compensated`` selects the ``sum()`` of the running interpreter: a plain
    left-to-right sum (CPython <= 3.11) or Neumaier's compensated sum (3.12+).
    """
    cdef double z = 0.0, c = 0.0, t, a, x, y, cum = 0.0
    cdef Py_ssize_t v
    for v in range(n):
        x = p[v]
        if not is_probability(x):
            bad[0] = v
            return BAD_TARGET
        y = q[v]
        if not is_probability(y):
            bad[0] = v
            return BAD_DRAFT
        a = positive_part(x - y)
        if compensated:
            t = z + a
            if fabs(z) >= fabs(a):
                c += (z - t) + a
            else:
                c += (a - t) + z
            z = t
        else:
            z += a
    if compensated and c != 0.0 and fabs(c) <= DBL_MAX:
        z += c
    if z > 0.0:
        for v in range(n):
            cum += positive_part(<double>p[v] - <double>q[v]) / z
            if u <= cum:
                return v
    else:
        t = 1.0 / <double>n
        for v in range(n):
            cum += t
            if u <= cum:
                return v
    return 0


cdef inline bint residual_sums(const real* p, const real* q, Py_ssize_t n, Py_ssize_t length,
                               double* sums) noexcept nogil:
    if real is float:
        return residual_block_sums_f32(p, q, n, length, sums)
    else:
        return residual_block_sums_f64(p, q, n, length, sums)


cdef Py_ssize_t residual_sample(const real* p, const real* q, Py_ssize_t n, double u,
                                bint compensated, Py_ssize_t* bad) noexcept nogil:
    cdef double sums[MAX_BLOCKS]
    cdef Py_ssize_t length = block_length(n, BLOCK), sub
    cdef Py_ssize_t nblocks = (n + length - 1) // length
    cdef Py_ssize_t b, v, start, count
    cdef double z = 0.0, target, below = 0.0, at, tol
    cdef bint valid = residual_sums(p, q, n, length, sums)
    for b in range(nblocks):
        z += sums[b]
    # Leave anything unusual to the serial path: invalid values, a zero or
    # overflowing residual, sums so small or large that scaling by z underflows.
    if not (valid and 1e-290 < z <= 1e290):
        return residual_sample_serial(p, q, n, u, compensated, bad)
    # Locate the crossing: the block, then the sub-block within it, then the
    # element, keeping ``below`` a sum of the residual before the candidate.
    target = u * z
    start = crossing(sums, nblocks, target, &below) * length
    count = min(length, n - start)
    sub = block_length(count, SUB_BLOCK)
    residual_sums(p + start, q + start, count, sub, sums)
    v = start + crossing(sums, (count + sub - 1) // sub, target, &below) * sub
    at = below
    while v < n:
        at = below + positive_part(<double>p[v] - <double>q[v])
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
    return residual_sample_serial(p, q, n, u, compensated, bad)


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


cdef Py_ssize_t cumulative_sample(const real* p, Py_ssize_t n, double u,
                                  Py_ssize_t* bad) noexcept nogil:
    cdef Py_ssize_t length = block_length(n, BLOCK), sub, start, count, v
    cdef double below = 0.0, inner = 0.0, at, x, tol
    cdef int valid
    # The block where the running sum reaches u, then the sub-block within it;
    # the reference reads up to the crossing, so later blocks are not read.
    start = row_crossing(p, n, length, u, &below, &valid) * length
    if not valid:
        return cumulative_sample_serial(p, n, u, bad)
    count = min(length, n - start)
    sub = block_length(count, SUB_BLOCK)
    v = start + row_crossing(p + start, count, sub, u - below, &inner, &valid) * sub
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
