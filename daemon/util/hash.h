// A stable 64-bit hash of bytes (FNV-1a): the same value in every build and run, for names that
// outlive the daemon (the layout of its kept BPF state, the digest of a watch rule).
#pragma once

#include <cstdint>
#include <string_view>

namespace leakwatch {

inline uint64_t stable_hash(std::string_view bytes, uint64_t seed = 0xcbf29ce484222325ull) {
    uint64_t h = seed;
    for (unsigned char c : bytes) {
        h ^= c;
        h *= 0x100000001b3ull;
    }
    return h;
}

}  // namespace leakwatch
