/*
 * specdec_prefetch(p): ask the CPU to start loading the cache line at p.
 *
 * The verify loop reads one entry of each target and draft row at scattered
 * positions; prefetching them all before the loop overlaps those cache
 * misses.  A hint only: it never changes a result, and compilers without the
 * builtin get a no-op.
 */
#ifndef SPECDEC_PREFETCH_H
#define SPECDEC_PREFETCH_H

#if defined(__GNUC__) || defined(__clang__)
#define specdec_prefetch(p) __builtin_prefetch((const void *)(p), 0, 3)
#else
#define specdec_prefetch(p) ((void)(p))
#endif

#endif
