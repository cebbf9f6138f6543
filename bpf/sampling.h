/* Byte-based sampling, shared by the BPF program and the daemon's unit tests: the probability
 * that an allocation of `size` bytes holds one of the sample points of a Poisson process of
 * rate 1 / mean over the bytes allocated, 1 - exp(-size / mean), in 32-bit fixed point
 * (1 << 32: always). `table` holds exp(-k / LW_EXP_STEPS) << 32 for k < LW_EXP_TABLE; the
 * daemon fills it (lw_fill_exp_table in user space). Sizes must stay below 2^31 when
 * size < LW_EXP_MAX_X * mean, which the config's cap on the mean guarantees. */
#ifndef LEAKWATCH_SAMPLING_H
#define LEAKWATCH_SAMPLING_H

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

static __always_inline __u64 lw_sample_probability(__u64 size, __u64 mean,
                                                   const volatile __u64 *table)
{
    if (size >= mean * LW_EXP_MAX_X)
        return 1ULL << 32;
    __u64 x = (size << 32) / mean;
    if (x < (1ULL << 28)) { /* x < 1/16: x - x^2/2 + x^3/6, error below x^4/24 */
        __u64 x2 = (x * x) >> 32;
        __u64 x3 = (x2 * x) >> 32;
        return x - x2 / 2 + x3 / 6;
    }
    __u32 k = x >> 26; /* x * LW_EXP_STEPS */
    if (k >= LW_EXP_ENTRIES - 1)
        return 1ULL << 32;
    __u64 frac = x & ((1ULL << 26) - 1);
    __u64 e0 = table[k & (LW_EXP_TABLE - 1)], e1 = table[(k + 1) & (LW_EXP_TABLE - 1)];
    return (1ULL << 32) - (e0 - (((e0 - e1) * frac) >> 26));
}

/* What a sampled allocation of `size` bytes, sampled with probability p (fixed point), counts
 * for: size / p bytes and 1 / p allocations (rounded). */
static __always_inline __u64 lw_sample_bytes(__u64 size, __u64 p)
{
    return p >= (1ULL << 32) ? size : (size << 32) / p;
}

static __always_inline __u32 lw_sample_weight(__u64 p)
{
    return p >= (1ULL << 32) ? 1 : (__u32)(((1ULL << 32) + p / 2) / p);
}

#ifndef __bpf__
#include <math.h>
/* The daemon's side: exp(-k / LW_EXP_STEPS) << 32 for every k of the table. */
static inline void lw_fill_exp_table(volatile __u64 *table)
{
    for (int k = 0; k < LW_EXP_TABLE; k++)
        table[k] = (__u64)llround(exp(-(double)k / LW_EXP_STEPS) * 4294967296.0);
}
#endif

#endif
