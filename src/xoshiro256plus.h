/*
 * xoshiro256+ and splitmix64, after the published definitions by
 * David Blackman and Sebastiano Vigna (prng.di.unimi.it).
 *
 * The state is a plain struct passed by pointer, so the generator can be
 * advanced from nogil code.  Seeding: the four state words are four
 * successive outputs of splitmix64 started at the seed.
 */
#ifndef SPECDEC_XOSHIRO256PLUS_H
#define SPECDEC_XOSHIRO256PLUS_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} xoshiro256plus_state;

static inline uint64_t splitmix64_next(uint64_t *x)
{
    uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static inline void xoshiro256plus_seed(xoshiro256plus_state *st, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) {
        st->s[i] = splitmix64_next(&x);
    }
}

static inline uint64_t xoshiro256plus_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static inline uint64_t xoshiro256plus_next(xoshiro256plus_state *st)
{
    uint64_t *s = st->s;
    const uint64_t result = s[0] + s[3];
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = xoshiro256plus_rotl(s[3], 45);
    return result;
}

/* A double in [0, 1): the top 53 bits of one output, times 2**-53. */
static inline double xoshiro256plus_next_double(xoshiro256plus_state *st)
{
    return (double)(xoshiro256plus_next(st) >> 11) * (1.0 / 9007199254740992.0);
}

/* Advance the state by 2**128 steps (the published jump polynomial). */
static inline void xoshiro256plus_jump(xoshiro256plus_state *st)
{
    static const uint64_t JUMP[4] = {
        UINT64_C(0x180ec6d33cfd0aba), UINT64_C(0xd5a61266f0c9392c),
        UINT64_C(0xa9582618e03fc9aa), UINT64_C(0x39abdc4529b1661c)};
    uint64_t t[4] = {0, 0, 0, 0};
    for (int i = 0; i < 4; i++) {
        for (int b = 0; b < 64; b++) {
            if (JUMP[i] & (UINT64_C(1) << b)) {
                for (int w = 0; w < 4; w++) {
                    t[w] ^= st->s[w];
                }
            }
            xoshiro256plus_next(st);
        }
    }
    for (int w = 0; w < 4; w++) {
        st->s[w] = t[w];
    }
}

#endif
