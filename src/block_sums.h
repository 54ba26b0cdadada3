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
 * in SIMD lanes).  Its vectors are W bytes wide, W being the width of the
 * registers of the instruction set it is compiled for: a GCC vector wider
 * than the registers is kept in memory, and every operation on it goes
 * through the stack.  On x86-64 Linux (glibc) with GCC each exported function is
 * compiled three times, for AVX-512 (W = 64), AVX2 (32) and SSE2 (16), and
 * the copy for the CPU is picked at load time, so a wheel needs no -march
 * flag.  Elsewhere W follows the compiler's flags (16 for plain SSE2 or
 * NEON).  Other compilers get scalar loops.
 */
#ifndef SPECDEC_BLOCK_SUMS_H
#define SPECDEC_BLOCK_SUMS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Elements in one chunk of row_crossing_chunk, whatever W is. */
#define SPECDEC_LANES 8

static inline int64_t specdec_bits(double x)
{
    int64_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

/* Elements before p reaches a 64-byte boundary (at most n): vector loads from
 * there on never straddle two cache lines, which halves the scans' time. */
static inline ptrdiff_t specdec_to_line(const void *p, size_t item, ptrdiff_t n)
{
    ptrdiff_t head = (ptrdiff_t)(((64 - ((uintptr_t)p & 63)) & 63) / item);
    return head < n ? head : n;
}

#if defined(__GNUC__) || defined(__clang__)
#if defined(__GNUC__) && !defined(__clang__)
/* The vector helpers are always inlined: no vector ABI crosses a call. */
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
/* Helpers are inlined into the exported functions.  On x86 the code for width
 * W is compiled for the instruction set that W needs (SSE2 is x86-64's
 * baseline), whatever the compiler's flags. */
#define SPECDEC_INLINE static inline __attribute__((always_inline))

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SPECDEC_TARGET_16
#define SPECDEC_TARGET_32 __attribute__((target("avx2")))
#define SPECDEC_TARGET_64 __attribute__((target("avx512f")))
#else
#define SPECDEC_TARGET_16
#define SPECDEC_TARGET_32
#define SPECDEC_TARGET_64
#endif
#define SPECDEC_INLINE_W(W) SPECDEC_TARGET_##W SPECDEC_INLINE

/*
 * For W bytes: specdec_vd_W holds W / 8 doubles and specdec_vi_W their bit
 * patterns; specdec_load_f64_W loads W / 8 doubles.  The loads are unaligned
 * and volatile so that each vector is read once: otherwise GCC reads it
 * twice, once per use, and the scans run at half the speed.
 */
#define SPECDEC_VECTORS(W)                                                                \
typedef double specdec_vd_##W __attribute__((vector_size(W)));                            \
typedef int64_t specdec_vi_##W __attribute__((vector_size(W)));                           \
typedef double specdec_vd_##W##_u __attribute__((vector_size(W), aligned(8), may_alias)); \
typedef float specdec_vf_##W##_u                                                          \
    __attribute__((vector_size(W / 2), aligned(4), may_alias));                           \
                                                                                          \
SPECDEC_INLINE_W(W) specdec_vd_##W specdec_load_f64_##W(const double *p)                  \
{                                                                                         \
    return *(const volatile specdec_vd_##W##_u *)p;                                       \
}                                                                                         \
                                                                                          \
/* m < x ? x : m, lane by lane: NaN in x leaves m. */                                     \
SPECDEC_INLINE_W(W) specdec_vd_##W specdec_vmax_##W(specdec_vd_##W m, specdec_vd_##W x)   \
{                                                                                         \
    specdec_vi_##W k = m < x;                                                             \
    return (specdec_vd_##W)((k & (specdec_vi_##W)x) | (~k & (specdec_vi_##W)m));          \
}                                                                                         \
                                                                                          \
/* Sign bits are OR-ed into a vector across blocks and reduced once: the values           \
 * were valid when no sign bit is set and the sums a and b are finite. */                 \
SPECDEC_INLINE_W(W) int specdec_valid_##W(specdec_vi_##W s, double a, double b)           \
{                                                                                         \
    int64_t all = 0;                                                                      \
    int j;                                                                                \
    for (j = 0; j < W / 8; j++)                                                           \
        all |= s[j];                                                                      \
    return all >= 0 && a - a == 0.0 && b - b == 0.0;                                      \
}

SPECDEC_VECTORS(16)
SPECDEC_VECTORS(32)
SPECDEC_VECTORS(64)

/* specdec_load_f32_W: W / 8 floats widened to doubles.  The floats have one
 * use, the conversion, so they need no volatile to be read once. */
#define SPECDEC_LOAD_F32(W)                                                               \
SPECDEC_INLINE_W(W) specdec_vd_##W specdec_load_f32_##W(const float *p)                   \
{                                                                                         \
    return __builtin_convertvector(*(const specdec_vf_##W##_u *)p, specdec_vd_##W);       \
}

SPECDEC_LOAD_F32(16)
#if defined(__x86_64__) || defined(__i386__)
/* GCC 12 widens four or eight floats as two halves joined by shuffles, much
 * slower than the single instruction that x86 has for it. */
SPECDEC_INLINE_W(32) specdec_vd_32 specdec_load_f32_32(const float *p)
{
    return (specdec_vd_32)_mm256_cvtps_pd(_mm_loadu_ps(p));
}

SPECDEC_INLINE_W(64) specdec_vd_64 specdec_load_f32_64(const float *p)
{
    return (specdec_vd_64)_mm512_cvtps_pd(_mm256_loadu_ps(p));
}
#else
SPECDEC_LOAD_F32(32)
SPECDEC_LOAD_F32(64)
#endif

/* a | b | c, for OR-ing bit patterns: with AVX-512 one vpternlogq, where
 * GCC's vector code spends three instructions on two such ORs in a row. */
#define SPECDEC_OR3(W)                                                                    \
SPECDEC_INLINE_W(W) specdec_vi_##W specdec_or3_##W(specdec_vi_##W a, specdec_vi_##W b,    \
                                                   specdec_vi_##W c)                      \
{                                                                                         \
    return a | b | c;                                                                     \
}

SPECDEC_OR3(16)
SPECDEC_OR3(32)
#if defined(__x86_64__) || defined(__i386__)
SPECDEC_INLINE_W(64) specdec_vi_64 specdec_or3_64(specdec_vi_64 a, specdec_vi_64 b,
                                                  specdec_vi_64 c)
{
    return (specdec_vi_64)_mm512_ternarylogic_epi64((__m512i)a, (__m512i)b, (__m512i)c, 0xfe);
}
#else
SPECDEC_OR3(64)
#endif

/* Sum of the lanes, by halves (a fixed order, like every sum here). */
SPECDEC_INLINE_W(16) double specdec_hsum_16(specdec_vd_16 x)
{
    return x[0] + x[1];
}

#define SPECDEC_HSUM(W, HALF)                                                             \
SPECDEC_INLINE_W(W) double specdec_hsum_##W(specdec_vd_##W x)                             \
{                                                                                         \
    union { specdec_vd_##W whole; specdec_vd_##HALF half[2]; } u = {x};                   \
    return specdec_hsum_##HALF(u.half[0] + u.half[1]);                                    \
}

SPECDEC_HSUM(32, 16)
SPECDEC_HSUM(64, 32)

/*
 * Six primitives per element type and width: the sum of whole vectors into
 * running accumulators (OR-ing the bit patterns into *signs); the sum of
 * p[0..n) (the same, plus a head and a tail); the sum of max(0, p - q) over
 * [0..n) (adding q into *qsum and OR-ing the bits of p and q into *signs); the
 * sum of the SPECDEC_LANES values at p (as the sum of p[0..n)); the sum of
 * max(0, p - q) over the SPECDEC_LANES values at p and q (no checks); the
 * largest of p[0..n) and 0 (NaN is ignored here: the sums above catch it).
 * Vectors hold W / 8 elements.
 */
#define SPECDEC_PRIMITIVES(T, SUFFIX, W)                                                  \
/* Adds p[0..n) into the running accumulators acc (n a multiple of W / 2, p on a       \
 * 64-byte boundary: no head or tail to handle) and returns the sum of acc.               \
 * Consecutive blocks go through here with no reset in between.                          \
 */                                                                                       \
SPECDEC_INLINE_W(W) double specdec_accumulate_##SUFFIX##_##W(const T *p, ptrdiff_t n,     \
                                                             specdec_vd_##W acc[4],       \
                                                             specdec_vi_##W *signs)       \
{                                                                                         \
    specdec_vd_##W a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];                    \
    specdec_vi_##W s = *signs;                                                            \
    ptrdiff_t v;                                                                          \
    for (v = 0; v < n; v += W / 2) {                                                      \
        specdec_vd_##W x0 = specdec_load_##SUFFIX##_##W(p + v);                           \
        specdec_vd_##W x1 = specdec_load_##SUFFIX##_##W(p + v + W / 8);                   \
        specdec_vd_##W x2 = specdec_load_##SUFFIX##_##W(p + v + 2 * (W / 8));             \
        specdec_vd_##W x3 = specdec_load_##SUFFIX##_##W(p + v + 3 * (W / 8));             \
        a0 += x0; a1 += x1; a2 += x2; a3 += x3;                                           \
        s = specdec_or3_##W(s, (specdec_vi_##W)x0, (specdec_vi_##W)x1);                   \
        s = specdec_or3_##W(s, (specdec_vi_##W)x2, (specdec_vi_##W)x3);                   \
    }                                                                                     \
    acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = a3;                                   \
    *signs = s;                                                                           \
    return specdec_hsum_##W((a0 + a1) + (a2 + a3));                                       \
}                                                                                         \
                                                                                          \
SPECDEC_INLINE_W(W) double specdec_sum_##SUFFIX##_##W(const T *p, ptrdiff_t n,            \
                                                      specdec_vi_##W *signs)              \
{                                                                                         \
    specdec_vd_##W acc[4] = {0};                                                          \
    double tail = 0.0;                                                                    \
    int64_t tail_bits = 0;                                                                \
    ptrdiff_t v = 0, head = specdec_to_line(p, sizeof(T), n);                             \
    for (; v < head; v++) {                                                               \
        tail += p[v];                                                                     \
        tail_bits |= specdec_bits(p[v]);                                                  \
    }                                                                                     \
    v += (n - head) / (W / 2) * (W / 2);                                                  \
    specdec_accumulate_##SUFFIX##_##W(p + head, v - head, acc, signs);                    \
    for (; v + W / 8 <= n; v += W / 8) {                                                  \
        specdec_vd_##W x0 = specdec_load_##SUFFIX##_##W(p + v);                           \
        acc[1] += x0;                                                                     \
        *signs |= (specdec_vi_##W)x0;                                                     \
    }                                                                                     \
    for (; v < n; v++) {                                                                  \
        tail += p[v];                                                                     \
        tail_bits |= specdec_bits(p[v]);                                                  \
    }                                                                                     \
    (*signs)[0] |= tail_bits;                                                             \
    return specdec_hsum_##W((acc[0] + acc[1]) + (acc[2] + acc[3])) + tail;                \
}                                                                                         \
                                                                                          \
SPECDEC_INLINE_W(W) double specdec_residual_##SUFFIX##_##W(const T *p, const T *q,        \
                                                           ptrdiff_t n, double *qsum,     \
                                                           specdec_vi_##W *signs)         \
{                                                                                         \
    specdec_vd_##W a0 = {0}, a1 = {0}, s0 = {0};                                          \
    specdec_vi_##W s = *signs;                                                            \
    double tail = 0.0;                                                                    \
    int64_t tail_bits = 0;                                                                \
    ptrdiff_t v = 0, head = specdec_to_line(p, sizeof(T), n);                             \
    for (; v < head; v++) {                                                               \
        double x = p[v], y = q[v], d = x - y;                                             \
        tail += d < 0.0 ? 0.0 : d;                                                        \
        *qsum += y;                                                                       \
        tail_bits |= specdec_bits(x) | specdec_bits(y);                                   \
    }                                                                                     \
    for (; v + W / 4 <= n; v += W / 4) {                                                  \
        specdec_vd_##W x0 = specdec_load_##SUFFIX##_##W(p + v);                           \
        specdec_vd_##W y0 = specdec_load_##SUFFIX##_##W(q + v);                           \
        specdec_vd_##W x1 = specdec_load_##SUFFIX##_##W(p + v + W / 8);                   \
        specdec_vd_##W y1 = specdec_load_##SUFFIX##_##W(q + v + W / 8);                   \
        specdec_vd_##W d0 = x0 - y0, d1 = x1 - y1;                                        \
        s = specdec_or3_##W(s, (specdec_vi_##W)x0, (specdec_vi_##W)y0);                   \
        s = specdec_or3_##W(s, (specdec_vi_##W)x1, (specdec_vi_##W)y1);                   \
        s0 += y0 + y1;                                                                    \
        a0 += (specdec_vd_##W)(~(d0 < 0.0) & (specdec_vi_##W)d0);  /* keeps NaN */        \
        a1 += (specdec_vd_##W)(~(d1 < 0.0) & (specdec_vi_##W)d1);                         \
    }                                                                                     \
    for (; v + W / 8 <= n; v += W / 8) {                                                  \
        specdec_vd_##W x0 = specdec_load_##SUFFIX##_##W(p + v);                           \
        specdec_vd_##W y0 = specdec_load_##SUFFIX##_##W(q + v);                           \
        specdec_vd_##W d0 = x0 - y0;                                                      \
        a1 += (specdec_vd_##W)(~(d0 < 0.0) & (specdec_vi_##W)d0);                         \
        s0 += y0;                                                                         \
        s |= (specdec_vi_##W)x0 | (specdec_vi_##W)y0;                                     \
    }                                                                                     \
    for (; v < n; v++) {                                                                  \
        double x = p[v], y = q[v], d = x - y;                                             \
        tail += d < 0.0 ? 0.0 : d;                                                        \
        *qsum += y;                                                                       \
        tail_bits |= specdec_bits(x) | specdec_bits(y);                                   \
    }                                                                                     \
    *qsum += specdec_hsum_##W(s0);                                                        \
    s[0] |= tail_bits;                                                                    \
    *signs = s;                                                                           \
    return specdec_hsum_##W(a0 + a1) + tail;                                              \
}                                                                                         \
                                                                                          \
SPECDEC_INLINE_W(W) double specdec_sum_lanes_##SUFFIX##_##W(const T *p,                   \
                                                            specdec_vi_##W *signs)        \
{                                                                                         \
    specdec_vd_##W x = specdec_load_##SUFFIX##_##W(p), y;                                 \
    int j;                                                                                \
    *signs |= (specdec_vi_##W)x;                                                          \
    for (j = W / 8; j < SPECDEC_LANES; j += W / 8) {                                      \
        y = specdec_load_##SUFFIX##_##W(p + j);                                           \
        x += y;                                                                           \
        *signs |= (specdec_vi_##W)y;                                                      \
    }                                                                                     \
    return specdec_hsum_##W(x);                                                           \
}                                                                                         \
                                                                                          \
SPECDEC_INLINE_W(W) double specdec_residual_lanes_##SUFFIX##_##W(const T *p, const T *q)  \
{                                                                                         \
    specdec_vd_##W a = {0}, d;                                                            \
    int j;                                                                                \
    for (j = 0; j < SPECDEC_LANES; j += W / 8) {                                          \
        d = specdec_load_##SUFFIX##_##W(p + j) - specdec_load_##SUFFIX##_##W(q + j);      \
        a += (specdec_vd_##W)(~(d < 0.0) & (specdec_vi_##W)d);                            \
    }                                                                                     \
    return specdec_hsum_##W(a);                                                           \
}                                                                                         \
                                                                                          \
SPECDEC_INLINE_W(W) double specdec_max_##SUFFIX##_##W(const T *p, ptrdiff_t n)            \
{                                                                                         \
    specdec_vd_##W m0 = {0}, m1 = {0}, m2 = {0}, m3 = {0};                                \
    double best = 0.0;                                                                    \
    ptrdiff_t v = 0;                                                                      \
    int j;                                                                                \
    for (; v + W / 2 <= n; v += W / 2) {                                                  \
        m0 = specdec_vmax_##W(m0, specdec_load_##SUFFIX##_##W(p + v));                    \
        m1 = specdec_vmax_##W(m1, specdec_load_##SUFFIX##_##W(p + v + W / 8));            \
        m2 = specdec_vmax_##W(m2, specdec_load_##SUFFIX##_##W(p + v + 2 * (W / 8)));      \
        m3 = specdec_vmax_##W(m3, specdec_load_##SUFFIX##_##W(p + v + 3 * (W / 8)));      \
    }                                                                                     \
    for (; v + W / 8 <= n; v += W / 8)                                                    \
        m1 = specdec_vmax_##W(m1, specdec_load_##SUFFIX##_##W(p + v));                    \
    m0 = specdec_vmax_##W(specdec_vmax_##W(m0, m1), specdec_vmax_##W(m2, m3));            \
    for (j = 0; j < W / 8; j++)                                                           \
        best = m0[j] > best ? m0[j] : best;                                               \
    for (; v < n; v++)                                                                    \
        best = p[v] > best ? p[v] : best;                                                 \
    return best;                                                                          \
}

#else  /* scalar primitives, two accumulators; "scalar" stands for W */
#define SPECDEC_INLINE static inline
#define SPECDEC_TARGET_scalar
typedef double specdec_vd_scalar;   /* an accumulator */
typedef int64_t specdec_vi_scalar;  /* the OR of the bit patterns */

SPECDEC_INLINE int specdec_valid_scalar(specdec_vi_scalar s, double a, double b)
{
    return s >= 0 && a - a == 0.0 && b - b == 0.0;
}

#define SPECDEC_PRIMITIVES(T, SUFFIX, W)                                                  \
SPECDEC_INLINE double specdec_sum_##SUFFIX##_scalar(const T *p, ptrdiff_t n,              \
                                                    specdec_vi_scalar *signs)             \
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
SPECDEC_INLINE double specdec_accumulate_##SUFFIX##_scalar(const T *p, ptrdiff_t n,       \
                                                           specdec_vd_scalar acc[4],      \
                                                           specdec_vi_scalar *signs)      \
{                                                                                         \
    acc[0] += specdec_sum_##SUFFIX##_scalar(p, n, signs);                                 \
    return acc[0];                                                                        \
}                                                                                         \
                                                                                          \
SPECDEC_INLINE double specdec_residual_##SUFFIX##_scalar(const T *p, const T *q,          \
                                                         ptrdiff_t n, double *qsum,       \
                                                         specdec_vi_scalar *signs)        \
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
SPECDEC_INLINE double specdec_sum_lanes_##SUFFIX##_scalar(const T *p,                     \
                                                          specdec_vi_scalar *signs)       \
{                                                                                         \
    return specdec_sum_##SUFFIX##_scalar(p, SPECDEC_LANES, signs);                        \
}                                                                                         \
                                                                                          \
SPECDEC_INLINE double specdec_residual_lanes_##SUFFIX##_scalar(const T *p, const T *q)    \
{                                                                                         \
    double a = 0.0, d;                                                                    \
    int j;                                                                                \
    for (j = 0; j < SPECDEC_LANES; j++) {                                                 \
        d = (double)p[j] - (double)q[j];                                                  \
        a += d < 0.0 ? 0.0 : d;                                                           \
    }                                                                                     \
    return a;                                                                             \
}                                                                                         \
                                                                                          \
SPECDEC_INLINE double specdec_max_##SUFFIX##_scalar(const T *p, ptrdiff_t n)              \
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
 *     first 64-byte boundary, so that the others start on one; block is a
 *     multiple of 32, so that each whole block after it is read by whole
 *     vectors into running accumulators, with no head or tail.  *valid as
 *     above, for the blocks read.
 * row_crossing_chunk(p, n, u, before, valid): the same with blocks of
 *     SPECDEC_LANES elements, the last of which may be shorter: a fine search
 *     of the few elements that row_crossing_block narrows to.
 * residual_crossing_chunk(p, q, n, u, before): row_crossing_chunk of the
 *     residual max(0, p - q), for rows already checked (no *valid).
 * row_max(p, n, valid): the largest value (exact: max does not round).
 *
 * SPECDEC_BLOCK_FUNCTIONS defines them with the primitives of width W, named
 * with ISA appended (e.g. row_max_f64_avx2).
 */
#define SPECDEC_BLOCK_FUNCTIONS(T, SUFFIX, W, ISA)                                        \
SPECDEC_PRIMITIVES(T, SUFFIX, W)                                                          \
                                                                                          \
SPECDEC_TARGET_##W                                                                        \
static int residual_block_sums_##SUFFIX##ISA(const T *p, const T *q, ptrdiff_t n,         \
                                             ptrdiff_t block, double *sums)               \
{                                                                                         \
    double qsum = 0.0, total = 0.0;                                                       \
    specdec_vi_##W signs = {0};                                                           \
    ptrdiff_t start, b = 0;                                                               \
    for (start = 0; start < n; start += block, b++) {                                     \
        ptrdiff_t len = start + block < n ? block : n - start;                            \
        sums[b] = specdec_residual_##SUFFIX##_##W(p + start, q + start, len, &qsum,       \
                                                  &signs);                                \
        total += sums[b];                                                                 \
    }                                                                                     \
    /* NaN or infinity in q shows in qsum, in p in the residual's total. */               \
    return specdec_valid_##W(signs, qsum, total);                                         \
}                                                                                         \
                                                                                          \
SPECDEC_TARGET_##W                                                                        \
static int row_block_sums_##SUFFIX##ISA(const T *p, ptrdiff_t n, ptrdiff_t block,         \
                                        double *sums)                                     \
{                                                                                         \
    double total = 0.0;                                                                   \
    specdec_vi_##W signs = {0};                                                           \
    ptrdiff_t start, b = 0;                                                               \
    for (start = 0; start < n; start += block, b++) {                                     \
        ptrdiff_t len = start + block < n ? block : n - start;                            \
        sums[b] = specdec_sum_##SUFFIX##_##W(p + start, len, &signs);                     \
        total += sums[b];                                                                 \
    }                                                                                     \
    return specdec_valid_##W(signs, total, 0.0);                                          \
}                                                                                         \
                                                                                          \
SPECDEC_TARGET_##W                                                                        \
static ptrdiff_t row_crossing_block_##SUFFIX##ISA(const T *p, ptrdiff_t n,                \
                                                  ptrdiff_t block, double u,              \
                                                  double *before, int *valid)             \
{                                                                                         \
    specdec_vd_##W acc[4] = {0};                                                          \
    specdec_vi_##W signs = {0};                                                           \
    ptrdiff_t start = 0, len = specdec_to_line(p, sizeof(T), n) + block;                  \
    double first, total = 0.0, at;                                                        \
    len = len < n ? len : n;                                                              \
    at = first = specdec_sum_##SUFFIX##_##W(p, len, &signs);                              \
    /* NaN never crosses: it runs to the end and fails the check below. */                \
    if (len < n && !(first >= u)) {                                                       \
        total = first;                                                                    \
        for (start = len; start + block < n; start += block) {                            \
            at = first + specdec_accumulate_##SUFFIX##_##W(p + start, block, acc, &signs); \
            if (at >= u)                                                                  \
                goto done;                                                                \
            total = at;                                                                   \
        }                                                                                 \
        at = total + specdec_sum_##SUFFIX##_##W(p + start, n - start, &signs);            \
    }                                                                                     \
done:                                                                                     \
    *before = total;                                                                      \
    *valid = specdec_valid_##W(signs, total, at);                                         \
    return start;                                                                         \
}                                                                                         \
                                                                                          \
SPECDEC_TARGET_##W                                                                        \
static ptrdiff_t row_crossing_chunk_##SUFFIX##ISA(const T *p, ptrdiff_t n, double u,      \
                                                  double *before, int *valid)             \
{                                                                                         \
    double total = 0.0, sum = 0.0;                                                        \
    specdec_vi_##W signs = {0};                                                           \
    ptrdiff_t start = 0;                                                                  \
    for (; start + SPECDEC_LANES < n; start += SPECDEC_LANES) {                           \
        sum = specdec_sum_lanes_##SUFFIX##_##W(p + start, &signs);                        \
        if (total + sum >= u)                                                             \
            break;                                                                        \
        total += sum;                                                                     \
    }                                                                                     \
    *before = total;                                                                      \
    *valid = specdec_valid_##W(signs, total, sum);                                        \
    return start;                                                                         \
}                                                                                         \
                                                                                          \
SPECDEC_TARGET_##W                                                                        \
static ptrdiff_t residual_crossing_chunk_##SUFFIX##ISA(const T *p, const T *q, ptrdiff_t n,\
                                                       double u, double *before)          \
{                                                                                         \
    double total = 0.0;                                                                   \
    ptrdiff_t start = 0;                                                                  \
    for (; start + SPECDEC_LANES < n; start += SPECDEC_LANES) {                           \
        double sum = specdec_residual_lanes_##SUFFIX##_##W(p + start, q + start);         \
        if (total + sum >= u)                                                             \
            break;                                                                        \
        total += sum;                                                                     \
    }                                                                                     \
    *before = total;                                                                      \
    return start;                                                                         \
}                                                                                         \
                                                                                          \
SPECDEC_TARGET_##W                                                                        \
static double row_max_##SUFFIX##ISA(const T *p, ptrdiff_t n, int *valid)                  \
{                                                                                         \
    specdec_vi_##W signs = {0};                                                           \
    double total = specdec_sum_##SUFFIX##_##W(p, n, &signs);                              \
    *valid = specdec_valid_##W(signs, total, 0.0);                                        \
    return specdec_max_##SUFFIX##_##W(p, n);                                              \
}

/* GNU ifunc needs glibc's loader (musl has none); <string.h> above defines __GLIBC__. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && defined(__GLIBC__)
SPECDEC_BLOCK_FUNCTIONS(double, f64, 64, _avx512f)
SPECDEC_BLOCK_FUNCTIONS(float, f32, 64, _avx512f)
SPECDEC_BLOCK_FUNCTIONS(double, f64, 32, _avx2)
SPECDEC_BLOCK_FUNCTIONS(float, f32, 32, _avx2)
SPECDEC_BLOCK_FUNCTIONS(double, f64, 16, _sse2)
SPECDEC_BLOCK_FUNCTIONS(float, f32, 16, _sse2)

/* NAME resolves at load time (GNU ifunc, as target_clones does, which cannot
 * be used here: it compiles one body, so one W, for every instruction set) to
 * the copy for the best instruction set that the CPU and the OS support.  The
 * resolver runs before AddressSanitizer is set up: it must not be instrumented. */
#define SPECDEC_PICK(NAME)                                                                \
__attribute__((no_sanitize_address))                                                      \
static __typeof__(NAME##_sse2) *NAME##_pick(void)                                         \
{                                                                                         \
    __builtin_cpu_init();                                                                 \
    if (__builtin_cpu_supports("avx512f"))                                                \
        return NAME##_avx512f;                                                            \
    if (__builtin_cpu_supports("avx2"))                                                   \
        return NAME##_avx2;                                                               \
    return NAME##_sse2;                                                                   \
}                                                                                         \
static __typeof__(NAME##_sse2) NAME __attribute__((ifunc(#NAME "_pick")));

#define SPECDEC_PICK_BOTH(NAME) SPECDEC_PICK(NAME##_f64) SPECDEC_PICK(NAME##_f32)
SPECDEC_PICK_BOTH(residual_block_sums)
SPECDEC_PICK_BOTH(row_block_sums)
SPECDEC_PICK_BOTH(row_crossing_block)
SPECDEC_PICK_BOTH(row_crossing_chunk)
SPECDEC_PICK_BOTH(residual_crossing_chunk)
SPECDEC_PICK_BOTH(row_max)
#elif !defined(__GNUC__) && !defined(__clang__)
SPECDEC_BLOCK_FUNCTIONS(double, f64, scalar, )
SPECDEC_BLOCK_FUNCTIONS(float, f32, scalar, )
#elif defined(__AVX512F__)
SPECDEC_BLOCK_FUNCTIONS(double, f64, 64, )
SPECDEC_BLOCK_FUNCTIONS(float, f32, 64, )
#elif defined(__AVX2__)
SPECDEC_BLOCK_FUNCTIONS(double, f64, 32, )
SPECDEC_BLOCK_FUNCTIONS(float, f32, 32, )
#else
SPECDEC_BLOCK_FUNCTIONS(double, f64, 16, )
SPECDEC_BLOCK_FUNCTIONS(float, f32, 16, )
#endif

#endif
