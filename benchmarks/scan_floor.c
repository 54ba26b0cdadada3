/* How fast can one core read a float64 row that sits in its L2 cache?
 *
 * The matched regime of the drop-in benchmark ends every call with the bonus scan,
 * which must read the target row up to the sampled token.  This program times a
 * loop that does nothing but sum such a prefix (four vector accumulators, as wide
 * as the registers -march=native allows), repeated over the same memory so that
 * it stays in L2: a floor under the scan, whatever the code around it.  In
 * alternation with it, it times the kernel's own block scan (row_crossing_block
 * from src/block_sums.h, with a u that is never reached, so it reads the whole
 * prefix and checks every value), to show how close the kernel comes to it.
 *
 *   cc -O2 -march=native -I src benchmarks/scan_floor.c -o /tmp/scan_floor && /tmp/scan_floor
 *
 * The default lengths are the mean crossing positions of the benchmark's K = 8
 * matched rows (about 0.51 V at V = 32000 and 0.54 V at V = 128256).  Prints the
 * median and the fastest of 2001 timed scans per length, for each of the two.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "block_sums.h"

/* As wide as the registers -march=native gives: a wider GCC vector would be split. */
#if defined(__AVX512F__)
typedef double vec __attribute__((vector_size(64)));
#elif defined(__AVX__)
typedef double vec __attribute__((vector_size(32)));
#else
typedef double vec __attribute__((vector_size(16)));
#endif
#define LANES (sizeof(vec) / sizeof(double))
#define REPEATS 2001

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

__attribute__((noinline)) static double prefix_sum(const double *x, long n)
{
    vec a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, s;
    long i;
    double total = 0.0;
    for (i = 0; i + 4 * (long)LANES <= n; i += 4 * LANES) {
        a0 += *(const vec *)(x + i);
        a1 += *(const vec *)(x + i + LANES);
        a2 += *(const vec *)(x + i + 2 * LANES);
        a3 += *(const vec *)(x + i + 3 * LANES);
    }
    for (; i < n; i++)
        total += x[i];
    s = (a0 + a1) + (a2 + a3);
    for (i = 0; i < (long)LANES; i++)
        total += s[i];
    return total;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The kernel's bonus scan over the whole prefix: u = infinity is never reached. */
__attribute__((noinline)) static double kernel_scan(const double *x, long n)
{
    double before;
    int valid;
    row_crossing_block_f64(x, n, 256, 1.0 / 0.0, &before, &valid);
    return before + valid;
}

static void report(const char *what, long n, double *times)
{
    qsort(times, REPEATS, sizeof(double), by_value);
    printf("n = %6ld, %-11s median %.3f us (%.4f ns per element), fastest %.3f us\n", n, what,
           times[REPEATS / 2] * 1e6, times[REPEATS / 2] * 1e9 / n, times[0] * 1e6);
}

int main(int argc, char **argv)
{
    long lengths[8] = {16400, 69800};
    int count = argc > 1 ? argc - 1 : 2, k, r;
    static double bare[REPEATS], kernel[REPEATS];
    for (k = 0; k < count && k < 8; k++) {
        long n = argc > 1 ? atol(argv[k + 1]) : lengths[k], i;
        double *x = aligned_alloc(64, ((n * sizeof(double) + 63) / 64) * 64 + 64);
        volatile double sink;
        if (x == NULL || n < 1)
            return 1;
        for (i = 0; i < n; i++)
            x[i] = 1.0 / (double)(i + 1);
        for (r = 0; r < REPEATS; r++) {
            double start = now();
            sink = prefix_sum(x, n);
            bare[r] = now() - start;
            start = now();
            sink = kernel_scan(x, n);
            kernel[r] = now() - start;
        }
        (void)sink;
        report("bare sum:", n, bare);
        report("kernel:", n, kernel);
        free(x);
    }
    return 0;
}
