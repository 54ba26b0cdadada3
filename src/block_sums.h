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
 *
 * GCC and Clang get vector-extension code (several independent accumulators
 * in SIMD lanes; plain SSE2/NEON by default).  On x86-64 Linux with GCC each
 * function is also cloned for AVX2 and AVX-512 and picked at load time, so a
 * wheel needs no -march flag.  Other compilers get a portable scalar loop.
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

#if defined(__GNUC__) || defined(__clang__)
#define SPECDEC_VECTOR 1
#if defined(__GNUC__) && !defined(__clang__)
/* The vector helpers are static inline: no ABI crosses a call boundary. */
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
#define SPECDEC_LANES 8
typedef double specdec_vd __attribute__((vector_size(64)));
typedef float specdec_vf __attribute__((vector_size(32)));
typedef int64_t specdec_vi __attribute__((vector_size(64)));

static inline specdec_vd specdec_load_d(const double *p)
{
    specdec_vd x;
    memcpy(&x, p, sizeof x);
    return x;
}

static inline specdec_vd specdec_load_f(const float *p)
{
    specdec_vf x;
    memcpy(&x, p, sizeof x);
    return __builtin_convertvector(x, specdec_vd);
}

typedef double specdec_vd4 __attribute__((vector_size(32)));
typedef double specdec_vd2 __attribute__((vector_size(16)));

/* Sum of the lanes, by halves (a fixed order, like every sum here). */
static inline double specdec_hsum(specdec_vd x)
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

static inline int64_t specdec_hor(specdec_vi x)
{
    return (x[0] | x[1] | x[2] | x[3]) | (x[4] | x[5] | x[6] | x[7]);
}
#endif

static inline int64_t specdec_bits(double x)
{
    int64_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

/*
 * residual_block_sums_T(p, q, n, block, sums): for each block of `block`
 * elements (the last may be shorter), sums[b] = sum of max(0, p - q) over it.
 * Returns 1 when every p and q is finite and non-negative (as far as the cheap
 * checks tell: a 0 may be a false alarm, never a 1), else 0.
 */
#ifdef SPECDEC_VECTOR
#define SPECDEC_RESIDUAL_BLOCK_SUMS(NAME, T, LOAD)                                    \
SPECDEC_CLONES                                                                         \
static int NAME(const T *p, const T *q, ptrdiff_t n, ptrdiff_t block, double *sums)   \
{                                                                                      \
    specdec_vi signs = {0};                                                            \
    specdec_vd qsum = {0};                                                             \
    double total = 0.0;                                                                \
    int64_t tail_signs = 0;                                                            \
    ptrdiff_t start, b = 0;                                                            \
    for (start = 0; start < n; start += block, b++) {                                  \
        ptrdiff_t end = start + block < n ? start + block : n, v = start;              \
        specdec_vd a0 = {0}, a1 = {0};                                                 \
        double tail = 0.0;                                                             \
        for (; v + 2 * SPECDEC_LANES <= end; v += 2 * SPECDEC_LANES) {                 \
            specdec_vd x0 = LOAD(p + v), y0 = LOAD(q + v);                             \
            specdec_vd x1 = LOAD(p + v + SPECDEC_LANES), y1 = LOAD(q + v + SPECDEC_LANES); \
            specdec_vd d0 = x0 - y0, d1 = x1 - y1;                                     \
            a0 += (specdec_vd)(~(d0 < 0.0) & (specdec_vi)d0);                          \
            a1 += (specdec_vd)(~(d1 < 0.0) & (specdec_vi)d1);                          \
            qsum += y0 + y1;                                                           \
            signs |= ((specdec_vi)x0 | (specdec_vi)y0) | ((specdec_vi)x1 | (specdec_vi)y1); \
        }                                                                              \
        for (; v < end; v++) {                                                         \
            double x = p[v], y = q[v], d = x - y;                                      \
            tail += d < 0.0 ? 0.0 : d;                                                 \
            total += y;                                                                \
            tail_signs |= specdec_bits(x) | specdec_bits(y);                           \
        }                                                                              \
        sums[b] = specdec_hsum(a0 + a1) + tail;                                        \
    }                                                                                  \
    total += specdec_hsum(qsum);                                                       \
    return (specdec_hor(signs) | tail_signs) >= 0 && total - total == 0.0;             \
}
#else
#define SPECDEC_RESIDUAL_BLOCK_SUMS(NAME, T, LOAD)                                    \
static int NAME(const T *p, const T *q, ptrdiff_t n, ptrdiff_t block, double *sums)   \
{                                                                                      \
    double total = 0.0;                                                                \
    int64_t signs = 0;                                                                 \
    ptrdiff_t start, b = 0, v;                                                         \
    for (start = 0; start < n; start += block, b++) {                                  \
        ptrdiff_t end = start + block < n ? start + block : n;                         \
        double a0 = 0.0, a1 = 0.0;                                                     \
        for (v = start; v + 2 <= end; v += 2) {                                        \
            double d0 = (double)p[v] - (double)q[v];                                   \
            double d1 = (double)p[v + 1] - (double)q[v + 1];                           \
            a0 += d0 < 0.0 ? 0.0 : d0;                                                 \
            a1 += d1 < 0.0 ? 0.0 : d1;                                                 \
            total += (double)q[v] + (double)q[v + 1];                                  \
            signs |= specdec_bits(p[v]) | specdec_bits(q[v]) |                         \
                     specdec_bits(p[v + 1]) | specdec_bits(q[v + 1]);                  \
        }                                                                              \
        for (; v < end; v++) {                                                         \
            double d = (double)p[v] - (double)q[v];                                    \
            a0 += d < 0.0 ? 0.0 : d;                                                   \
            total += q[v];                                                             \
            signs |= specdec_bits(p[v]) | specdec_bits(q[v]);                          \
        }                                                                              \
        sums[b] = a0 + a1;                                                             \
    }                                                                                  \
    return signs >= 0 && total - total == 0.0;                                         \
}
#endif

/*
 * row_crossing_block_T(p, n, block, u, before, valid): the first block b at
 * which the running sum of block sums reaches u (the last block when none
 * does); *before is the sum of the blocks before it.  Blocks after b are not
 * read.  *valid is 0 when a block up to b holds a value that is negative, NaN
 * or infinite (or may: a 0 can be a false alarm, never a 1).
 */
#ifdef SPECDEC_VECTOR
#define SPECDEC_ROW_CROSSING_BLOCK(NAME, T, LOAD)                                     \
SPECDEC_CLONES                                                                         \
static ptrdiff_t NAME(const T *p, ptrdiff_t n, ptrdiff_t block, double u,             \
                      double *before, int *valid)                                      \
{                                                                                      \
    specdec_vi signs = {0};                                                            \
    int64_t tail_signs = 0;                                                            \
    double total = 0.0, sum = 0.0;                                                     \
    ptrdiff_t start, b = 0;                                                            \
    for (start = 0; ; start += block, b++) {                                           \
        ptrdiff_t end = start + block < n ? start + block : n, v = start;              \
        specdec_vd a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                             \
        double tail = 0.0;                                                             \
        for (; v + 4 * SPECDEC_LANES <= end; v += 4 * SPECDEC_LANES) {                 \
            specdec_vd x0 = LOAD(p + v), x1 = LOAD(p + v + SPECDEC_LANES);             \
            specdec_vd x2 = LOAD(p + v + 2 * SPECDEC_LANES);                           \
            specdec_vd x3 = LOAD(p + v + 3 * SPECDEC_LANES);                           \
            a0 += x0; a1 += x1; a2 += x2; a3 += x3;                                    \
            signs |= ((specdec_vi)x0 | (specdec_vi)x1) | ((specdec_vi)x2 | (specdec_vi)x3); \
        }                                                                              \
        for (; v < end; v++) {                                                         \
            tail += p[v];                                                              \
            tail_signs |= specdec_bits(p[v]);                                          \
        }                                                                              \
        sum = specdec_hsum((a0 + a1) + (a2 + a3)) + tail;                              \
        /* NaN never crosses: it runs to the end and fails the check below. */         \
        if (end == n || total + sum >= u)                                              \
            break;                                                                     \
        total += sum;                                                                  \
    }                                                                                  \
    *before = total;                                                                   \
    *valid = (specdec_hor(signs) | tail_signs) >= 0 && total - total == 0.0           \
             && sum - sum == 0.0;                                                      \
    return b;                                                                          \
}
#else
#define SPECDEC_ROW_CROSSING_BLOCK(NAME, T, LOAD)                                     \
static ptrdiff_t NAME(const T *p, ptrdiff_t n, ptrdiff_t block, double u,             \
                      double *before, int *valid)                                      \
{                                                                                      \
    double total = 0.0;                                                                \
    ptrdiff_t start, b = 0, v;                                                         \
    for (start = 0; ; start += block, b++) {                                           \
        ptrdiff_t end = start + block < n ? start + block : n;                         \
        double a0 = 0.0, a1 = 0.0, sum;                                                \
        int64_t signs = 0;                                                             \
        for (v = start; v + 2 <= end; v += 2) {                                        \
            a0 += p[v];                                                                \
            a1 += p[v + 1];                                                            \
            signs |= specdec_bits(p[v]) | specdec_bits(p[v + 1]);                      \
        }                                                                              \
        for (; v < end; v++) {                                                         \
            a0 += p[v];                                                                \
            signs |= specdec_bits(p[v]);                                               \
        }                                                                              \
        sum = a0 + a1;                                                                 \
        if (signs < 0 || sum - sum != 0.0) {                                           \
            *valid = 0;                                                                \
            *before = total;                                                           \
            return b;                                                                  \
        }                                                                              \
        if (end == n || total + sum >= u) {                                            \
            *valid = 1;                                                                \
            *before = total;                                                           \
            return b;                                                                  \
        }                                                                              \
        total += sum;                                                                  \
    }                                                                                  \
}
#endif

/*
 * row_block_sums_T(p, n, block, sums): sums[b] = sum of block b of p, for
 * every block.  Returns 1 when every value is finite and non-negative (a 0 may
 * be a false alarm, never a 1), else 0.
 */
#ifdef SPECDEC_VECTOR
#define SPECDEC_ROW_BLOCK_SUMS(NAME, T, LOAD)                                         \
SPECDEC_CLONES                                                                         \
static int NAME(const T *p, ptrdiff_t n, ptrdiff_t block, double *sums)               \
{                                                                                      \
    specdec_vi signs = {0};                                                            \
    int64_t tail_signs = 0;                                                            \
    double total = 0.0;                                                                \
    ptrdiff_t start, b = 0;                                                            \
    for (start = 0; start < n; start += block, b++) {                                  \
        ptrdiff_t end = start + block < n ? start + block : n, v = start;              \
        specdec_vd a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                             \
        double tail = 0.0;                                                             \
        for (; v + 4 * SPECDEC_LANES <= end; v += 4 * SPECDEC_LANES) {                 \
            specdec_vd x0 = LOAD(p + v), x1 = LOAD(p + v + SPECDEC_LANES);             \
            specdec_vd x2 = LOAD(p + v + 2 * SPECDEC_LANES);                           \
            specdec_vd x3 = LOAD(p + v + 3 * SPECDEC_LANES);                           \
            a0 += x0; a1 += x1; a2 += x2; a3 += x3;                                    \
            signs |= ((specdec_vi)x0 | (specdec_vi)x1) | ((specdec_vi)x2 | (specdec_vi)x3); \
        }                                                                              \
        for (; v < end; v++) {                                                         \
            tail += p[v];                                                              \
            tail_signs |= specdec_bits(p[v]);                                          \
        }                                                                              \
        sums[b] = specdec_hsum((a0 + a1) + (a2 + a3)) + tail;                          \
        total += sums[b];                                                              \
    }                                                                                  \
    return (specdec_hor(signs) | tail_signs) >= 0 && total - total == 0.0;             \
}
#else
#define SPECDEC_ROW_BLOCK_SUMS(NAME, T, LOAD)                                         \
static int NAME(const T *p, ptrdiff_t n, ptrdiff_t block, double *sums)               \
{                                                                                      \
    int64_t signs = 0;                                                                 \
    double total = 0.0;                                                                \
    ptrdiff_t start, b = 0, v;                                                         \
    for (start = 0; start < n; start += block, b++) {                                  \
        ptrdiff_t end = start + block < n ? start + block : n;                         \
        double a0 = 0.0, a1 = 0.0;                                                     \
        for (v = start; v + 2 <= end; v += 2) {                                        \
            a0 += p[v];                                                                \
            a1 += p[v + 1];                                                            \
            signs |= specdec_bits(p[v]) | specdec_bits(p[v + 1]);                      \
        }                                                                              \
        for (; v < end; v++) {                                                         \
            a0 += p[v];                                                                \
            signs |= specdec_bits(p[v]);                                               \
        }                                                                              \
        sums[b] = a0 + a1;                                                             \
        total += sums[b];                                                              \
    }                                                                                  \
    return signs >= 0 && total - total == 0.0;                                         \
}
#endif

/*
 * row_max_T(p, n, valid): the largest value of p (exact: max does not round).
 * *valid as for the sums above.
 */
#ifdef SPECDEC_VECTOR
#define SPECDEC_ROW_MAX(NAME, T, LOAD)                                                \
SPECDEC_CLONES                                                                         \
static double NAME(const T *p, ptrdiff_t n, int *valid)                               \
{                                                                                      \
    specdec_vd m0 = {0}, m1 = {0}, s0 = {0}, s1 = {0};                                 \
    specdec_vi signs = {0};                                                            \
    int64_t tail_signs = 0;                                                            \
    double best = 0.0, total = 0.0;                                                    \
    ptrdiff_t v = 0;                                                                   \
    for (; v + 2 * SPECDEC_LANES <= n; v += 2 * SPECDEC_LANES) {                       \
        specdec_vd x0 = LOAD(p + v), x1 = LOAD(p + v + SPECDEC_LANES);                 \
        specdec_vi k0 = m0 < x0, k1 = m1 < x1;                                         \
        m0 = (specdec_vd)((k0 & (specdec_vi)x0) | (~k0 & (specdec_vi)m0));             \
        m1 = (specdec_vd)((k1 & (specdec_vi)x1) | (~k1 & (specdec_vi)m1));             \
        s0 += x0; s1 += x1;                                                            \
        signs |= (specdec_vi)x0 | (specdec_vi)x1;                                      \
    }                                                                                  \
    for (int j = 0; j < SPECDEC_LANES; j++) {                                          \
        best = m0[j] > best ? m0[j] : best;                                            \
        best = m1[j] > best ? m1[j] : best;                                            \
    }                                                                                  \
    for (; v < n; v++) {                                                               \
        double x = p[v];                                                               \
        best = x > best ? x : best;                                                    \
        total += x;                                                                    \
        tail_signs |= specdec_bits(x);                                                 \
    }                                                                                  \
    total += specdec_hsum(s0 + s1);                                                    \
    *valid = (specdec_hor(signs) | tail_signs) >= 0 && total - total == 0.0;           \
    return best;                                                                       \
}
#else
#define SPECDEC_ROW_MAX(NAME, T, LOAD)                                                \
static double NAME(const T *p, ptrdiff_t n, int *valid)                               \
{                                                                                      \
    double best = 0.0, total = 0.0;                                                    \
    int64_t signs = 0;                                                                 \
    ptrdiff_t v;                                                                       \
    for (v = 0; v < n; v++) {                                                          \
        double x = p[v];                                                               \
        best = x > best ? x : best;                                                    \
        total += x;                                                                    \
        signs |= specdec_bits(x);                                                      \
    }                                                                                  \
    *valid = signs >= 0 && total - total == 0.0;                                       \
    return best;                                                                       \
}
#endif

#ifdef SPECDEC_VECTOR
#define SPECDEC_LOAD_D specdec_load_d
#define SPECDEC_LOAD_F specdec_load_f
#else
#define SPECDEC_LOAD_D
#define SPECDEC_LOAD_F
#endif

SPECDEC_RESIDUAL_BLOCK_SUMS(residual_block_sums_f64, double, SPECDEC_LOAD_D)
SPECDEC_RESIDUAL_BLOCK_SUMS(residual_block_sums_f32, float, SPECDEC_LOAD_F)
SPECDEC_ROW_CROSSING_BLOCK(row_crossing_block_f64, double, SPECDEC_LOAD_D)
SPECDEC_ROW_CROSSING_BLOCK(row_crossing_block_f32, float, SPECDEC_LOAD_F)
SPECDEC_ROW_BLOCK_SUMS(row_block_sums_f64, double, SPECDEC_LOAD_D)
SPECDEC_ROW_BLOCK_SUMS(row_block_sums_f32, float, SPECDEC_LOAD_F)
SPECDEC_ROW_MAX(row_max_f64, double, SPECDEC_LOAD_D)
SPECDEC_ROW_MAX(row_max_f32, float, SPECDEC_LOAD_F)

#endif
