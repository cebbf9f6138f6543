/* Stack ids shared by the user and kernel programs: a 64-bit hash of the frames, never 0
 * (0 means "no stack"). Own hashing rather than a STACK_TRACE map, where two stacks whose ids
 * collide lose one of them. */
#ifndef LEAKWATCH_STACKHASH_H
#define LEAKWATCH_STACKHASH_H

#ifndef __always_inline /* user space: the daemon computes the same ids */
#define __always_inline inline __attribute__((always_inline))
#endif

static __always_inline __u64 mix64(__u64 x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static __always_inline __u64 stack_hash(__u64 seed, const __u64 *ips, __u32 nr)
{
    __u64 h = seed;
    for (int i = 0; i < LW_MAX_STACK_DEPTH; i++) {
        if ((__u32)i >= nr)
            break;
        h = mix64(h ^ ips[i]) + i;
    }
    return h ? h : 1;
}

/* The id of a stack with Python frames: its native frames' id, then the Python frames'. The
 * same as the native id when there are none. */
static __always_inline __u64 python_hash(__u64 h, const __u64 *py, __u32 nr)
{
    if (!nr)
        return h;
    h = mix64(h ^ 0x707974686f6eULL);
    for (int i = 0; i < LW_PY_MAX_FRAMES; i++) {
        if ((__u32)i >= nr)
            break;
        h = mix64(h ^ py[i]) + i;
    }
    return h ? h : 1;
}

#endif
