/*
 * SIMD block sums for the kernel's certified scans (_kernel.pyx).
 *
 * These sums are NOT the reference's: they add in lanes and blocks, in
 * whatever order is fastest.  The kernel only uses them to locate a crossing
 * and then certifies it against a rounding bound that holds for any summation
 * order, so the order here never changes a token.  The exact, serial sums live
 * in _kernel.pyx.
 *
 * Validity is tracked cheaply: NaN and infinity make a sum non-finite, and a
 * negative value (or -0.0) sets the sign bit of an OR of all bit patterns.
 * Either sends the kernel to its serial path, which validates value by value.
 * So a "valid" answer of 0 may be a false alarm, never a 1 a missed value.
 *
 * GCC and Clang get vector-extension code (several independent accumulators
 * in SIMD lanes; plain SSE2/NEON by default).  On x86-64 Linux with GCC each
 * exported function is also cloned for AVX2 and AVX-512 and picked at load
 * time, so a wheel needs no -march flag.  Other compilers get scalar loops.
 */
#ifndef SPECDEC_BLOCK_SUMS_H
#define SPECDEC_BLOCK_SUMS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define SPECDEC_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SPECDEC_CLONES
#endif

static inline int64_t specdec_bits(double x)
{
    int64_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

#if defined(__GNUC__) || defined(__clang__)
#if defined(__GNUC__) && !defined(__clang__)
/* The vector helpers are always inlined: no vector ABI crosses a call. */
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
/* Inlined into each clone, so they are compiled for its instruction set. */
#define SPECDEC_INLINE static inline __attribute__((always_inline))
#define SPECDEC_LANES 8
typedef double specdec_vd __attribute__((vector_size(64)));
typedef int64_t specdec_vi __attribute__((vector_size(64)));
typedef double specdec_vd4 __attribute__((vector_size(32)));
typedef double specdec_vd2 __attribute__((vector_size(16)));
/* Unaligned views for loads.  The loads are volatile so that each vector is
 * read once: otherwise GCC reads it twice, once per use, and the scans run
 * at half the speed. */
typedef double specdec_vd_u __attribute__((vector_size(64), aligned(8), may_alias));
typedef float specdec_vf_u __attribute__((vector_size(32), aligned(4), may_alias));
typedef float specdec_vf __attribute__((vector_size(32)));

SPECDEC_INLINE specdec_vd specdec_load_f64(const double *p)
{
    return *(const volatile specdec_vd_u *)p;
}

SPECDEC_INLINE specdec_vd specdec_load_f32(const float *p)
{
    specdec_vf x = *(const volatile specdec_vf_u *)p;
    return __builtin_convertvector(x, specdec_vd);
}

/* Elements before p reaches a 64-byte boundary (at most n): vector loads from
 * there on never straddle two cache lines, which halves the scans' time. */
SPECDEC_INLINE ptrdiff_t specdec_to_line(const void *p, size_t item, ptrdiff_t n)
{
    ptrdiff_t head = (ptrdiff_t)(((64 - ((uintptr_t)p & 63)) & 63) / item);
    return head < n ? head : n;
}

/* Sum of the lanes, by halves (a fixed order, like every sum here). */
SPECDEC_INLINE double specdec_hsum(specdec_vd x)
{
    specdec_vd4 lo4, hi4, s4;
    specdec_vd2 lo2, hi2, s2;
    memcpy(&lo4, &x, sizeof lo4);
    memcpy(&hi4, (const char *)&x + sizeof lo4, sizeof hi4);
    s4 = lo4 + hi4;
    memcpy(&lo2, &s4, sizeof lo2);
    memcpy(&hi2, (const char *)&s4 + sizeof lo2, sizeof hi2);
    s2 = lo2 + hi2;
    return s2[0] + s2[1];
}

/* Sign bits are OR-ed into a vector across blocks and reduced once. */
typedef specdec_vi specdec_signs;

SPECDEC_INLINE int specdec_any_negative(specdec_signs s)
{
    return ((s[0] | s[1] | s[2] | s[3]) | (s[4] | s[5] | s[6] | s[7])) < 0;
}

/*
 * Four primitives per element type: the sum of p[0..n) (OR-ing the bit
 * patterns into *signs); the sum of max(0, p - q) over [0..n) (adding q into
 * *qsum and OR-ing the bits of p and q into *signs); the sum of the
 * SPECDEC_LANES values at p (as the first); the largest of p[0..n) and 0 (NaN
 * is ignored here: the sum above catches it).
 */
#define SPECDEC_PRIMITIVES(T, SUFFIX)                                                    \
SPECDEC_INLINE double specdec_sum_##SUFFIX(const T *p, ptrdiff_t n, specdec_signs *signs) \
{                                                                                         \
    specdec_vd a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                                    \
    specdec_vi s = *signs;                                                                \
    double tail = 0.0;                                                                    \
    ptrdiff_t v = 0, head = specdec_to_line(p, sizeof(T), n);                             \
    for (; v < head; v++) {                                                               \
        tail += p[v];                                                                     \
        s[0] |= specdec_bits(p[v]);                                                       \
    }                                                                                     \
    for (; v + 4 * SPECDEC_LANES <= n; v += 4 * SPECDEC_LANES) {                          \
        specdec_vd x0 = specdec_load_##SUFFIX(p + v);                                     \
        specdec_vd x1 = specdec_load_##SUFFIX(p + v + SPECDEC_LANES);                     \
        specdec_vd x2 = specdec_load_##SUFFIX(p + v + 2 * SPECDEC_LANES);                 \
        specdec_vd x3 = specdec_load_##SUFFIX(p + v + 3 * SPECDEC_LANES);                 \
        a0 += x0; a1 += x1; a2 += x2; a3 += x3;                                           \
        s |= ((specdec_vi)x0 | (specdec_vi)x1) | ((specdec_vi)x2 | (specdec_vi)x3);       \
    }                                                                                     \
    for (; v + SPECDEC_LANES <= n; v += SPECDEC_LANES) {                                  \
        specdec_vd x0 = specdec_load_##SUFFIX(p + v);                                     \
        a1 += x0;                                                                         \
        s |= (specdec_vi)x0;                                                              \
    }                                                                                     \
    for (; v < n; v++) {                                                                  \
        tail += p[v];                                                                     \
        s[0] |= specdec_bits(p[v]);                                                       \
    }                                                                                     \
    *signs = s;                                                                           \
    return specdec_hsum((a0 + a1) + (a2 + a3)) + tail;                                    \
}                                                                                         \
                                                                                          \
SPECDEC_INLINE double specdec_residual_##SUFFIX(const T *p, const T *q, ptrdiff_t n,       \
                                               double *qsum, specdec_signs *signs)        \
{                                                                                         \
    specdec_vd a0 = {0}, a1 = {0}, s0 = {0};                                              \
    specdec_vi s = *signs;                                                                \
    double tail = 0.0;                                                                    \
    ptrdiff_t v = 0, head = specdec_to_line(p, sizeof(T), n);                             \
    for (; v < head; v++) {                                                               \
        double x = p[v], y = q[v], d = x - y;                                             \
        tail += d < 0.0 ? 0.0 : d;                                                        \
        *qsum += y;                                                                       \
        s[0] |= specdec_bits(x) | specdec_bits(y);                                        \
    }                                                                                     \
    for (; v + 2 * SPECDEC_LANES <= n; v += 2 * SPECDEC_LANES) {                          \
        specdec_vd x0 = specdec_load_##SUFFIX(p + v);                                     \
        specdec_vd y0 = specdec_load_##SUFFIX(q + v);                                     \
        specdec_vd x1 = specdec_load_##SUFFIX(p + v + SPECDEC_LANES);                     \
        specdec_vd y1 = specdec_load_##SUFFIX(q + v + SPECDEC_LANES);                     \
        specdec_vd d0 = x0 - y0, d1 = x1 - y1;                                            \
        a0 += (specdec_vd)(~(d0 < 0.0) & (specdec_vi)d0);  /* keeps NaN */                \
        a1 += (specdec_vd)(~(d1 < 0.0) & (specdec_vi)d1);                                 \
        s0 += y0 + y1;                                                                    \
        s |= ((specdec_vi)x0 | (specdec_vi)y0) | ((specdec_vi)x1 | (specdec_vi)y1);       \
    }                                                                                     \
    for (; v + SPECDEC_LANES <= n; v += SPECDEC_LANES) {                                  \
        specdec_vd x0 = specdec_load_##SUFFIX(p + v);                                     \
        specdec_vd y0 = specdec_load_##SUFFIX(q + v);                                     \
        specdec_vd d0 = x0 - y0;                                                          \
        a1 += (specdec_vd)(~(d0 < 0.0) & (specdec_vi)d0);                                 \
        s0 += y0;                                                                         \
        s |= (specdec_vi)x0 | (specdec_vi)y0;                                             \
    }                                                                                     \
    for (; v < n; v++) {                                                                  \
        double x = p[v], y = q[v], d = x - y;                                             \
        tail += d < 0.0 ? 0.0 : d;                                                        \
        *qsum += y;                                                                       \
        s[0] |= specdec_bits(x) | specdec_bits(y);                                        \
    }                                                                                     \
    *qsum += specdec_hsum(s0);                                                            \
    *signs = s;                                                                           \
    return specdec_hsum(a0 + a1) + tail;                                                  \
}                                                                                         \
                                                                                          \
SPECDEC_INLINE double specdec_sum_lanes_##SUFFIX(const T *p, specdec_signs *signs)        \
{                                                                                         \
    specdec_vd x = specdec_load_##SUFFIX(p);                                              \
    *signs |= (specdec_vi)x;                                                              \
    return specdec_hsum(x);                                                               \
}                                                                                         \
                                                                                          \
SPECDEC_INLINE double specdec_max_##SUFFIX(const T *p, ptrdiff_t n)                        \
{                                                                                         \
    specdec_vd m0 = {0}, m1 = {0};                                                        \
    double best = 0.0;                                                                    \
    ptrdiff_t v = 0;                                                                      \
    int j;                                                                                \
    for (; v + 2 * SPECDEC_LANES <= n; v += 2 * SPECDEC_LANES) {                          \
        specdec_vd x0 = specdec_load_##SUFFIX(p + v);                                     \
        specdec_vd x1 = specdec_load_##SUFFIX(p + v + SPECDEC_LANES);                     \
        specdec_vi k0 = m0 < x0, k1 = m1 < x1;                                            \
        m0 = (specdec_vd)((k0 & (specdec_vi)x0) | (~k0 & (specdec_vi)m0));                \
        m1 = (specdec_vd)((k1 & (specdec_vi)x1) | (~k1 & (specdec_vi)m1));                \
    }                                                                                     \
    for (j = 0; j < SPECDEC_LANES; j++) {                                                 \
        best = m0[j] > best ? m0[j] : best;                                               \
        best = m1[j] > best ? m1[j] : best;                                               \
    }                                                                                     \
    for (; v < n; v++)                                                                    \
        best = p[v] > best ? p[v] : best;                                                 \
    return best;                                                                          \
}

#else  /* scalar primitives, two accumulators */
#define SPECDEC_INLINE static inline
#define SPECDEC_LANES 8
typedef int64_t specdec_signs;

SPECDEC_INLINE int specdec_any_negative(specdec_signs s)
{
    return s < 0;
}

#define SPECDEC_PRIMITIVES(T, SUFFIX)                                                    \
SPECDEC_INLINE double specdec_sum_##SUFFIX(const T *p, ptrdiff_t n, specdec_signs *signs) \
{                                                                                         \
    double a0 = 0.0, a1 = 0.0;                                                            \
    ptrdiff_t v = 0;                                                                      \
    for (; v + 2 <= n; v += 2) {                                                          \
        a0 += p[v];                                                                       \
        a1 += p[v + 1];                                                                   \
        *signs |= specdec_bits(p[v]) | specdec_bits(p[v + 1]);                            \
    }                                                                                     \
    for (; v < n; v++) {                                                                  \
        a0 += p[v];                                                                       \
        *signs |= specdec_bits(p[v]);                                                     \
    }                                                                                     \
    return a0 + a1;                                                                       \
}                                                                                         \
                                                                                          \
SPECDEC_INLINE double specdec_residual_##SUFFIX(const T *p, const T *q, ptrdiff_t n,       \
                                               double *qsum, specdec_signs *signs)        \
{                                                                                         \
    double a = 0.0;                                                                       \
    ptrdiff_t v;                                                                          \
    for (v = 0; v < n; v++) {                                                             \
        double x = p[v], y = q[v], d = x - y;                                             \
        a += d < 0.0 ? 0.0 : d;                                                           \
        *qsum += y;                                                                       \
        *signs |= specdec_bits(x) | specdec_bits(y);                                      \
    }                                                                                     \
    return a;                                                                             \
}                                                                                         \
                                                                                          \
SPECDEC_INLINE double specdec_sum_lanes_##SUFFIX(const T *p, specdec_signs *signs)        \
{                                                                                         \
    return specdec_sum_##SUFFIX(p, SPECDEC_LANES, signs);                                 \
}                                                                                         \
                                                                                          \
SPECDEC_INLINE double specdec_max_##SUFFIX(const T *p, ptrdiff_t n)                        \
{                                                                                         \
    double best = 0.0;                                                                    \
    ptrdiff_t v;                                                                          \
    for (v = 0; v < n; v++)                                                               \
        best = p[v] > best ? p[v] : best;                                                 \
    return best;                                                                          \
}
#endif

/*
 * The exported functions, for T = double (_f64) and float (_f32):
 *
 * residual_block_sums(p, q, n, block, sums): sums[b] = the sum of
 *     max(0, p - q) over block b (blocks of `block` elements, the last may be
 *     shorter).  Returns 1 when every p and q is finite and non-negative.
 * row_block_sums(p, n, block, sums): sums[b] = the sum of block b of p.
 *     Returns 1 when every value is finite and non-negative.
 * row_crossing_block(p, n, block, u, before, valid): the start of the first
 *     block at which the running sum of block sums reaches u (the last block
 *     when none does); *before = the sum of the blocks before it.  Blocks after
 *     it are not read.  The first block also takes the elements before p's
 *     first 64-byte boundary, so that the others start on one.  *valid as
 *     above, for the blocks read.
 * row_crossing_chunk(p, n, u, before, valid): the same with blocks of one
 *     vector (SPECDEC_LANES elements), the last of which may be shorter: a
 *     fine search of the few elements that row_crossing_block narrows to.
 * row_max(p, n, valid): the largest value (exact: max does not round).
 */
#define SPECDEC_BLOCK_FUNCTIONS(T, SUFFIX)                                               \
SPECDEC_PRIMITIVES(T, SUFFIX)                                                            \
                                                                                          \
SPECDEC_CLONES                                                                            \
static int residual_block_sums_##SUFFIX(const T *p, const T *q, ptrdiff_t n,             \
                                        ptrdiff_t block, double *sums)                    \
{                                                                                         \
    double qsum = 0.0;                                                                    \
    specdec_signs signs = {0};                                                            \
    ptrdiff_t start, b = 0;                                                               \
    for (start = 0; start < n; start += block, b++) {                                     \
        ptrdiff_t len = start + block < n ? block : n - start;                            \
        sums[b] = specdec_residual_##SUFFIX(p + start, q + start, len, &qsum, &signs);    \
    }                                                                                     \
    return !specdec_any_negative(signs) && qsum - qsum == 0.0;                            \
}                                                                                         \
                                                                                          \
SPECDEC_CLONES                                                                            \
static int row_block_sums_##SUFFIX(const T *p, ptrdiff_t n, ptrdiff_t block, double *sums) \
{                                                                                         \
    double total = 0.0;                                                                   \
    specdec_signs signs = {0};                                                            \
    ptrdiff_t start, b = 0;                                                               \
    for (start = 0; start < n; start += block, b++) {                                     \
        ptrdiff_t len = start + block < n ? block : n - start;                            \
        sums[b] = specdec_sum_##SUFFIX(p + start, len, &signs);                           \
        total += sums[b];                                                                 \
    }                                                                                     \
    return !specdec_any_negative(signs) && total - total == 0.0;                          \
}                                                                                         \
                                                                                          \
SPECDEC_CLONES                                                                            \
static ptrdiff_t row_crossing_block_##SUFFIX(const T *p, ptrdiff_t n, ptrdiff_t block,    \
                                             double u, double *before, int *valid)        \
{                                                                                         \
    double total = 0.0, sum = 0.0;                                                        \
    specdec_signs signs = {0};                                                            \
    ptrdiff_t start = 0, len = specdec_to_line(p, sizeof(T), n) + block;                  \
    for (;; start += len, len = block) {                                                  \
        len = start + len < n ? len : n - start;                                          \
        sum = specdec_sum_##SUFFIX(p + start, len, &signs);                               \
        /* NaN never crosses: it runs to the end and fails the check below. */            \
        if (start + len >= n || total + sum >= u)                                         \
            break;                                                                        \
        total += sum;                                                                     \
    }                                                                                     \
    *before = total;                                                                      \
    *valid = !specdec_any_negative(signs) && total - total == 0.0 && sum - sum == 0.0;    \
    return start;                                                                         \
}                                                                                         \
                                                                                          \
SPECDEC_CLONES                                                                            \
static ptrdiff_t row_crossing_chunk_##SUFFIX(const T *p, ptrdiff_t n, double u,           \
                                             double *before, int *valid)                  \
{                                                                                         \
    double total = 0.0, sum = 0.0;                                                        \
    specdec_signs signs = {0};                                                            \
    ptrdiff_t start = 0;                                                                  \
    for (; start + SPECDEC_LANES < n; start += SPECDEC_LANES) {                           \
        sum = specdec_sum_lanes_##SUFFIX(p + start, &signs);                              \
        if (total + sum >= u)                                                             \
            break;                                                                        \
        total += sum;                                                                     \
    }                                                                                     \
    *before = total;                                                                      \
    *valid = !specdec_any_negative(signs) && total - total == 0.0 && sum - sum == 0.0;    \
    return start;                                                                         \
}                                                                                         \
                                                                                          \
SPECDEC_CLONES                                                                            \
static double row_max_##SUFFIX(const T *p, ptrdiff_t n, int *valid)                      \
{                                                                                         \
    specdec_signs signs = {0};                                                            \
    double total = specdec_sum_##SUFFIX(p, n, &signs);                                    \
    *valid = !specdec_any_negative(signs) && total - total == 0.0;                        \
    return specdec_max_##SUFFIX(p, n);                                                    \
}

SPECDEC_BLOCK_FUNCTIONS(double, f64)
SPECDEC_BLOCK_FUNCTIONS(float, f32)

#endif
