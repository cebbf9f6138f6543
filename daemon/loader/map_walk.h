// Reading whole BPF maps from user space.
#pragma once

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "aggregate/loss.h"

namespace leakwatch {

// Visits every entry of a hash map with batched lookups (one syscall per chunk), falling
// back to key-by-key iteration where the kernel lacks batch operations.
template <class K, class V, class Fn>
inline void for_each_entry(int fd, Fn&& fn) {
    constexpr uint32_t kChunk = 1024;
    std::vector<K> keys(kChunk);
    std::vector<V> values(kChunk);
    alignas(8) unsigned char token_in[64] = {}, token_out[64] = {};
    void* in = nullptr;
    LIBBPF_OPTS(bpf_map_batch_opts, opts);
    for (;;) {
        uint32_t count = kChunk;
        int err =
            bpf_map_lookup_batch(fd, in, token_out, keys.data(), values.data(), &count, &opts);
        if (err && errno != ENOENT) {
            if (in == nullptr &&
                (errno == EINVAL || errno == ENOTSUP || errno == 524 /* ENOTSUPP */))
                break;  // fall back below
            spdlog::warn("reading BPF map fd {}: {}", fd, std::strerror(errno));
            return;
        }
        for (uint32_t i = 0; i < count; i++) fn(keys[i], values[i]);
        if (err) return;  // ENOENT: the last chunk
        std::memcpy(token_in, token_out, sizeof(token_in));
        in = token_in;
    }
    K key{}, next{};
    V value{};
    const void* prev = nullptr;
    while (bpf_map_get_next_key(fd, prev, &next) == 0) {
        if (bpf_map_lookup_elem(fd, &next, &value) == 0) fn(next, value);
        key = next;
        prev = &key;
    }
}

// Entries in a hash map, read in batches like for_each_entry: a syscall per 1024 entries
// rather than one per key as count_entries makes. The values are copied too (1 KiB each for
// stacks), which costs less than a syscall per entry.
template <class K, class V>
inline uint64_t count_batched(bpf_map* map) {
    uint64_t n = 0;
    for_each_entry<K, V>(bpf_map__fd(map), [&n](const K&, const V&) { n++; });
    return n;
}

// Entries in a map, by walking its keys (for maps of at most a few tens of thousands).
inline uint64_t count_entries(bpf_map* map) {
    uint64_t n = 0;
    int fd = bpf_map__fd(map);
    std::vector<unsigned char> key(bpf_map__key_size(map)), next(key.size());
    const void* prev = nullptr;
    while (bpf_map_get_next_key(fd, prev, next.data()) == 0) {
        n++;
        key.swap(next);
        prev = key.data();
    }
    return n;
}

// The loss counters of a per-CPU array indexed by enum lw_lost_reason, summed over the CPUs.
inline LostCounters read_lost(bpf_map* map, int ncpus) {
    LostCounters out{};
    std::vector<uint64_t> percpu(static_cast<size_t>(ncpus));
    int fd = bpf_map__fd(map);
    for (uint32_t i = 0; i < out.size(); i++) {
        if (bpf_map_lookup_elem(fd, &i, percpu.data())) continue;
        for (uint64_t v : percpu) out[i] += v;
    }
    return out;
}

}  // namespace leakwatch
