/*
 * Checks every ISA copy of src/block_sums.h that this CPU can run (the
 * _avx512f, _avx2 and _sse2 functions: the ifunc picks only one of them, so
 * the test suite never reaches the others) against a serial model in this
 * file, on pseudo-random rows from a fixed seed.
 *
 *     cc -O2 -std=gnu11 -I src tests/block_sums_check.c -o check && ./check
 *
 * Prints one line per variant; exits 1 at the first failure, naming the
 * function, ISA, n, offset and case.  The header's contracts, as asserted:
 *  - crossings: the start returned is that of a block whose exact running sum
 *    crosses u.  Any summation order of m <= MAXN non-negative values lies
 *    within (m - 1) 2^-53 < REL of the exact sum, so a block is accepted when
 *    the running sums, moved by REL, could make it the crossing: either
 *    neighbour of a boundary that close, only one block elsewhere.  *before is
 *    the exact sum before the start, within REL; the variants agree wherever
 *    the model accepts only one block;
 *  - block sums within REL of the exact sums; row_max exactly max(0, p);
 *  - valid: 0 whenever an invalid value (negative, NaN, infinite) was read;
 *    1 whenever all that may be read is clean, except for the false alarms
 *    the header allows: -0.0 (its sign bit) and sums that may overflow.
 * Rows lie between -NaNs, so a read outside p[0..n) shows up as well.
 */
#include "block_sums.h"
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#if !(defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
      && defined(__GLIBC__))
#error "block_sums.h has its three ISA copies only with GCC on x86-64 Linux (glibc)"
#endif

#define MAXN 4200                    /* (MAXN - 1) * 2^-53 < REL */
#define REL 1e-12L
#define BIG (DBL_MAX * 0.999999)     /* a sum this large may overflow */
#define CASES 6000

#define FN(NAME) __typeof__(NAME##_sse2) *  /* the copies of NAME share its type */
typedef struct {                     /* one ISA's copies of the 12 functions */
    const char *name;
    int on;
    long checks;
    FN(residual_block_sums_f64) rbs64; FN(residual_block_sums_f32) rbs32;
    FN(row_block_sums_f64) bs64;       FN(row_block_sums_f32) bs32;
    FN(row_crossing_block_f64) cb64;   FN(row_crossing_block_f32) cb32;
    FN(row_crossing_chunk_f64) cc64;   FN(row_crossing_chunk_f32) cc32;
    FN(residual_crossing_chunk_f64) rc64; FN(residual_crossing_chunk_f32) rc32;
    FN(row_max_f64) max64;             FN(row_max_f32) max32;
} Isa;

#define ISA(S) {#S, 0, 0, residual_block_sums_f64_##S, residual_block_sums_f32_##S,       \
    row_block_sums_f64_##S, row_block_sums_f32_##S, row_crossing_block_f64_##S,         \
    row_crossing_block_f32_##S, row_crossing_chunk_f64_##S, row_crossing_chunk_f32_##S, \
    residual_crossing_chunk_f64_##S, residual_crossing_chunk_f32_##S, row_max_f64_##S,  \
    row_max_f32_##S}
static Isa isas[3] = {ISA(avx512f), ISA(avx2), ISA(sse2)};
static Isa *cur;                     /* the variant under test */
static const char *fn;               /* the function under test */

static double dbufs[2][MAXN + 64] __attribute__((aligned(64)));
static float fbufs[2][MAXN + 64] __attribute__((aligned(64)));
static struct {                      /* the current case */
    long id;
    int f32;
    ptrdiff_t n, off, head, cb_block, bs_block;
    double *pd, *qd, u_cb, u_cc, u_rc, max;
    float *pf, *qf;
    /* exact sums of the first i values of the clean rows: p, max(0, p - q), q */
    long double pre[MAXN + 1], rpre[MAXN + 1], qpre[MAXN + 1];
    ptrdiff_t pbad, rbad, pnegz, rnegz;  /* first invalid / -0.0 in p, in p or q; else n */
    ptrdiff_t agreed[3];                 /* crossings pinned by the first variant, or -1 */
    const char *agreed_by[3];
} C;

static void fail(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "FAIL %s_%s_%s: case %ld, n=%td, offset=%td: ", fn, C.f32 ? "f32" : "f64",
            cur->name, C.id, C.n, C.off);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}
#define CHECK(cond, ...) do { cur->checks++; if (!(cond)) fail(__VA_ARGS__); } while (0)

static double P(ptrdiff_t i) { return C.f32 ? C.pf[i] : C.pd[i]; }
static double Q(ptrdiff_t i) { return C.f32 ? C.qf[i] : C.qd[i]; }
static double resid(ptrdiff_t i) { double d = P(i) - Q(i); return d > 0.0 ? d : 0.0; }
static int invalid(double x) { return !(x >= 0.0 && x <= DBL_MAX); }
static int negzero(double x) { return x == 0.0 && signbit(x); }

static uint64_t seed = 0x243F6A8885A308D3u;
static uint64_t next64(void)         /* splitmix64 */
{
    uint64_t z = (seed += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}
static double unif(void) { return (double)(next64() >> 11) * 0x1p-53; }
static ptrdiff_t pick(ptrdiff_t m) { return m > 0 ? (ptrdiff_t)(next64() % (uint64_t)m) : 0; }

/* A value of a row of the kind: probabilities, mostly zeros, subnormals, mixed
 * magnitudes, large, huge (f64 sums of these may overflow). */
static double value(int kind)
{
    double r = unif();
    switch (kind) {
    case 1: return pick(4) ? 0.0 : r;
    case 2: return r * (C.f32 ? 0x1p-130 : 0x1p-1030);
    case 3: return ldexp(r, -(int)pick(64));
    case 4: return r * (C.f32 ? 1e37 : 1e300);
    case 5: return r * (C.f32 ? FLT_MAX : 1e307);
    default: return r;
    }
}

static void store(int in_q, ptrdiff_t i, double x)
{
    if (C.f32)
        (in_q ? C.qf : C.pf)[i] = (float)x;
    else
        (in_q ? C.qd : C.pd)[i] = x;
}

/* Lengths: every short tail, around vector/block boundaries, anything. */
static ptrdiff_t pick_n(void)
{
    static const ptrdiff_t near[] = {8, 16, 32, 64, 256, 512, 768, 1024, 2048, 4096};
    ptrdiff_t n;
    switch (pick(4)) {
    case 0: return pick(48);
    case 1: n = near[pick(10)] + pick(33) - 16; return n < 0 ? 0 : n;
    default: return pick(MAXN + 1);
    }
}

/* A target for running sums S whose blocks end at first, first + len, ... */
static double pick_u(const long double *S, ptrdiff_t first, ptrdiff_t len)
{
    ptrdiff_t n = C.n, e = first + len * pick(n / len + 1);
    double at = (double)S[e < n ? e : n];
    switch (pick(10)) {
    case 0: return at;                                      /* exactly a block sum */
    case 1: return nextafter(at, pick(2) ? INFINITY : -INFINITY);
    case 2: return pick(2) ? 0.0 : -1.0;                    /* before everything */
    case 3: return (double)(S[n ? 1 : 0] * unif());         /* within the first value */
    case 4: return pick(2) ? INFINITY : (double)(S[n] * (1.0 + unif())) + 0x1p-1074;
    default: return (double)(S[n] * unif());                /* anywhere: rarely near one */
    }
}

static void make_case(long id)
{
    static const double bad[] = {-0.25, -0x1p-140, -0.0, NAN, -NAN, INFINITY, -INFINITY};
    static const ptrdiff_t cb_blocks[] = {256, 256, 256, 32, 64, 1024};
    int kind = (int)pick(6), qmode = (int)pick(6), k, nbad;
    ptrdiff_t i, n, pos[3];
    C.id = id;
    C.f32 = (int)(id & 1);
    C.n = n = pick_n();
    C.off = pick(16);
    for (i = 0; i < MAXN + 64; i++)  /* -NaN around the rows: any read outside is invalid */
        dbufs[0][i] = dbufs[1][i] = fbufs[0][i] = fbufs[1][i] = -NAN;
    C.pd = dbufs[0] + C.off, C.qd = dbufs[1] + C.off;
    C.pf = fbufs[0] + C.off, C.qf = fbufs[1] + C.off;
    for (i = 0; i < n; i++) {
        store(0, i, value(kind));
        store(1, i, qmode == 0 ? P(i) : qmode < 4 ? P(i) * 2.0 * unif() : value(kind));
    }
    /* Invalid values and -0.0 go where the clean rows hold 0, so that the sums
     * of the clean rows are those of the values read when nothing invalid is. */
    nbad = n && !pick(3) ? 1 + (int)pick(3) : 0;
    for (k = 0; k < nbad; k++) {
        pos[k] = pick(4) ? pick(n) : pick(2) ? 0 : n - 1;
        store(0, pos[k], 0.0);
        store(1, pos[k], 0.0);
    }
    C.pre[0] = C.rpre[0] = C.qpre[0] = 0.0L;
    C.max = 0.0;
    for (i = 0; i < n; i++) {
        C.pre[i + 1] = C.pre[i] + P(i);
        C.rpre[i + 1] = C.rpre[i] + resid(i);
        C.qpre[i + 1] = C.qpre[i] + Q(i);
    }
    for (k = 0; k < nbad; k++)
        store((int)pick(2), pos[k], bad[pick(7)]);
    C.pbad = C.rbad = C.pnegz = C.rnegz = n;
    for (i = n - 1; i >= 0; i--) {
        C.max = P(i) > C.max ? P(i) : C.max;  /* row_max: the largest of p and 0, NaN ignored */
        C.pbad = invalid(P(i)) ? i : C.pbad;
        C.rbad = invalid(P(i)) || invalid(Q(i)) ? i : C.rbad;
        C.pnegz = negzero(P(i)) ? i : C.pnegz;
        C.rnegz = negzero(P(i)) || negzero(Q(i)) ? i : C.rnegz;
    }
    C.head = (ptrdiff_t)(((64 - ((uintptr_t)(C.f32 ? (void *)C.pf : (void *)C.pd) & 63)) & 63)
                         / (C.f32 ? sizeof(float) : sizeof(double)));
    C.head = C.head < n ? C.head : n;
    C.cb_block = cb_blocks[pick(6)];
    C.bs_block = pick(5) ? 32 << pick(6) : (n > 1 ? n : 1);  /* the kernel's whole-row sum */
    C.u_cb = pick_u(C.pre, C.head + C.cb_block, C.cb_block);
    C.u_cc = pick_u(C.pre, SPECDEC_LANES, SPECDEC_LANES);
    C.u_rc = pick_u(C.rpre, SPECDEC_LANES, SPECDEC_LANES);
    C.agreed[0] = C.agreed[1] = C.agreed[2] = -1;
}

/* valid as the header promises: 0 when an invalid value lies in [0, must),
 * which is surely read; 1 when [0, may), all that may be read, holds no
 * invalid value, no -0.0 and no sum that may overflow. */
static void check_valid(int valid, ptrdiff_t must, ptrdiff_t may, ptrdiff_t bad, ptrdiff_t negz,
                        long double sum)
{
    CHECK(valid == 0 || valid == 1, "valid=%d", valid);
    if (bad < must)
        CHECK(!valid, "valid=1, but the invalid value at %td (p=%g q=%g) must be read",
              bad, P(bad), Q(bad));
    else if (bad >= may && negz >= may && sum < BIG)
        CHECK(valid, "false alarm: valid=0 but [0, %td) is clean", may);
}

/* The end of the block at s: blocks end at first, first + len, ..., the last at n. */
static ptrdiff_t end_of(ptrdiff_t s, ptrdiff_t first, ptrdiff_t len)
{
    ptrdiff_t e = s == 0 ? first : s + len;
    return e < C.n ? e : C.n;
}

/* The same for a start returned by a crossing function, which must be a block's. */
static ptrdiff_t block_end(ptrdiff_t s, ptrdiff_t first, ptrdiff_t len)
{
    CHECK(s == 0 || (s >= first && s < C.n && (s - first) % len == 0),
          "returned %td, not a block start (blocks end at %td + k * %td)", s, first, len);
    return end_of(s, first, len);
}

/* Checks crossing `got` and *before against the exact running sums S; returns
 * how many blocks the model accepts (1: far from any boundary).  A block is
 * accepted when its running sum, rounded up by REL, reaches u (or it is the
 * last, or that sum may overflow: the chunk scans then stop with valid=1, as
 * the values are valid, and the kernel catches the infinity), and the one
 * before it, rounded down by REL, stays below u. */
static int check_crossing(const long double *S, ptrdiff_t first, ptrdiff_t len, double u,
                          ptrdiff_t got, double before)
{
    ptrdiff_t s = 0, e;
    int count = 0, hit = 0;
    for (; s < C.n || s == 0; s = e) {
        e = end_of(s, first, len);
        if (s > 0 && S[s] * (1 - REL) >= u)
            break;                   /* no later block either: S only grows */
        if (e == C.n || S[e] * (1 + REL) >= u || S[e] >= BIG) {  /* BIG: may reach inf */
            count++;
            hit |= s == got;
        }
        if (e == C.n)
            break;
    }
    CHECK(hit, "returned block at %td, but u=%.17g; exact sums before it %.17Lg, "
          "through it %.17Lg", got, u, S[got], S[end_of(got, first, len)]);
    CHECK(fabsl(before - S[got]) <= REL * S[got], "*before=%.17g, exact %.17Lg", before, S[got]);
    return count;
}

/* Where the model pins a crossing to one block the variants agree on it
 * (implied by check_crossing; kept as a direct guard should it be loosened). */
static void agree(int which, int count, ptrdiff_t got)
{
    if (count != 1)
        return;
    if (C.agreed[which] < 0)
        C.agreed[which] = got, C.agreed_by[which] = cur->name;
    CHECK(got == C.agreed[which], "returned %td, the %s copy %td", got, C.agreed_by[which],
          C.agreed[which]);
}

static int near(double got, long double want)
{
    return fabsl(got - want) <= REL * want || (want >= BIG && got == INFINITY);
}

static void check_block_sums(int residual)
{
    double sums[MAXN / 32 + 3];
    ptrdiff_t b, i, n = C.n, block = C.bs_block, nb = (n + block - 1) / block;
    int valid;
    fn = residual ? "residual_block_sums" : "row_block_sums";
    for (b = 0; b <= nb; b++)
        sums[b] = -1.0;
    if (residual)
        valid = C.f32 ? cur->rbs32(C.pf, C.qf, n, block, sums)
                      : cur->rbs64(C.pd, C.qd, n, block, sums);
    else
        valid = C.f32 ? cur->bs32(C.pf, n, block, sums) : cur->bs64(C.pd, n, block, sums);
    CHECK(sums[nb] == -1.0, "wrote past its %td block sums", nb);
    if (!residual)
        check_valid(valid, n, n, C.pbad, C.pnegz, C.pre[n]);
    else if (!valid)
        CHECK(C.rbad < n || C.rnegz < n || C.qpre[n] >= BIG || C.rpre[n] >= BIG,
              "false alarm: valid=0, all clean");
    else
        CHECK(C.rbad == n, "valid=1, but p[%td]=%g, q[%td]=%g is invalid", C.rbad, P(C.rbad),
              C.rbad, Q(C.rbad));
    if (!valid || (residual ? C.rbad : C.pbad) < n)
        return;
    for (b = 0; b < nb; b++) {       /* summed afresh: S[end] - S[start] may cancel */
        long double want = 0.0L;
        for (i = b * block; i < n && i < b * block + block; i++)
            want += residual ? resid(i) : P(i);
        CHECK(near(sums[b], want), "block %td of %td: %.17g, exact %.17Lg", b, block, sums[b],
              want);
    }
}

static void check_row_crossings(void)
{
    double before = NAN;
    int valid = -1;
    ptrdiff_t got, end, n = C.n;
    fn = "row_crossing_block";       /* every block up to the one returned is read */
    got = C.f32 ? cur->cb32(C.pf, n, C.cb_block, C.u_cb, &before, &valid)
                : cur->cb64(C.pd, n, C.cb_block, C.u_cb, &before, &valid);
    end = block_end(got, C.head + C.cb_block, C.cb_block);
    check_valid(valid, end, end, C.pbad, C.pnegz, C.pre[end]);
    if (valid)
        agree(0, check_crossing(C.pre, C.head + C.cb_block, C.cb_block, C.u_cb, got, before), got);

    fn = "row_crossing_chunk";       /* the same, but the last chunk is not read */
    before = NAN, valid = -1;
    got = C.f32 ? cur->cc32(C.pf, n, C.u_cc, &before, &valid)
                : cur->cc64(C.pd, n, C.u_cc, &before, &valid);
    end = block_end(got, SPECDEC_LANES, SPECDEC_LANES);
    check_valid(valid, end == n ? got : end, end, C.pbad, C.pnegz, C.pre[end]);
    if (valid)
        agree(1, check_crossing(C.pre, SPECDEC_LANES, SPECDEC_LANES, C.u_cc, got, before), got);

    fn = "residual_crossing_chunk";  /* for checked rows: no valid, no overflow */
    if (C.rbad < n || C.rpre[n] > 1e300L)
        return;
    before = NAN;
    got = C.f32 ? cur->rc32(C.pf, C.qf, n, C.u_rc, &before)
                : cur->rc64(C.pd, C.qd, n, C.u_rc, &before);
    block_end(got, SPECDEC_LANES, SPECDEC_LANES);
    agree(2, check_crossing(C.rpre, SPECDEC_LANES, SPECDEC_LANES, C.u_rc, got, before), got);
}

static void check_max(void)
{
    int valid = -1;
    double got = C.f32 ? cur->max32(C.pf, C.n, &valid) : cur->max64(C.pd, C.n, &valid);
    fn = "row_max";                  /* exact whatever the row holds: max does not round */
    check_valid(valid, C.n, C.n, C.pbad, C.pnegz, C.pre[C.n]);
    CHECK(got == C.max, "returned %.17g, the largest of p and 0 is %.17g", got, C.max);
}

int main(void)
{
    long id;
    int i;
    __builtin_cpu_init();
    isas[0].on = __builtin_cpu_supports("avx512f");
    isas[1].on = __builtin_cpu_supports("avx2");
    isas[2].on = 1;                  /* SSE2 is x86-64's baseline */
    for (id = 0; id < CASES; id++) {
        make_case(id);
        for (cur = isas; cur < isas + 3; cur++) {
            if (cur->on) {
                check_block_sums(0);
                check_block_sums(1);
                check_row_crossings();
                check_max();
            }
        }
    }
    for (i = 0; i < 3; i++) {
        if (isas[i].on)
            printf("%s: ok, 12 functions, %d cases, %ld checks\n", isas[i].name, CASES,
                   isas[i].checks);
        else
            printf("%s: skipped, the CPU lacks it\n", isas[i].name);
    }
    return 0;
}
