// The kmem BPF programs (bpf/kmem.bpf.c), run by the kernel on made-up tracepoint arguments
// (BPF_PROG_TEST_RUN): a tracepoint's backup program records what its first program did not,
// and nothing twice. Root: the programs are loaded into the running kernel.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <thread>

#include "kmem.skel.h"
#include "leakwatch.h"
#include "loader/map_walk.h"

namespace leakwatch {
namespace {

struct Kmem {
    kmem_bpf* skel = nullptr;
    int ncpus = libbpf_num_possible_cpus();

    Kmem() {
        skel = kmem_bpf__open();
        REQUIRE(skel);
        skel->rodata->nr_cpus = static_cast<uint32_t>(ncpus);
        // Only the slab programs this test runs: loading is what takes the time.
        bpf_program* prog;
        bpf_object__for_each_program(prog, skel->obj) {
            std::string name = bpf_program__name(prog);
            bool slab = (name.starts_with("kmalloc") && !name.contains("node")) ||
                        name.starts_with("kfree");
            bpf_program__set_autoload(prog, slab);
        }
        REQUIRE(kmem_bpf__load(skel) == 0);
        lw_kfilter filter{};
        filter.kinds = 1u << LW_K_KMALLOC;
        uint32_t zero = 0;
        REQUIRE(bpf_map_update_elem(bpf_map__fd(skel->maps.kfilter), &zero, &filter, BPF_ANY) == 0);
    }
    ~Kmem() { kmem_bpf__destroy(skel); }

    void run(bpf_program* prog, std::vector<uint64_t> args) {
        LIBBPF_OPTS(bpf_test_run_opts, opts, .ctx_in = args.data(),
                    .ctx_size_in = static_cast<uint32_t>(args.size() * sizeof(uint64_t)));
        REQUIRE(bpf_prog_test_run_opts(bpf_program__fd(prog), &opts) == 0);
    }
    // kmalloc(call_site, ptr, bytes_req, bytes_alloc, gfp, node)
    void kmalloc(bpf_program* prog, uint64_t addr, uint64_t size) {
        run(prog, {0, addr, size, size, 0, 0});
    }
    // kfree(call_site, ptr)
    void kfree(bpf_program* prog, uint64_t addr) { run(prog, {0, addr}); }

    size_t live() { return count_entries(skel->maps.klive); }
    // The kernel totals summed: "bytes/allocations".
    std::string totals() {
        int64_t bytes = 0, count = 0;
        for_each_entry<lw_ktotals_key, lw_totals>(bpf_map__fd(skel->maps.ktotals),
                                                  [&](const lw_ktotals_key&, const lw_totals& t) {
                                                      bytes += t.bytes;
                                                      count += t.count;
                                                  });
        return std::to_string(bytes) + "/" + std::to_string(count);
    }
    uint64_t lost(uint32_t reason) { return read_lost(skel->maps.klost, ncpus)[reason]; }
};

constexpr uint64_t kA = 0xffff888012340000, kB = 0xffff888012350000, kC = 0xffff888012360000;

}  // namespace

TEST_CASE("kmem backup programs: what the first missed is recorded once, the rest left alone",
          "[root][kernel]") {
    REQUIRE(geteuid() == 0);  // it loads BPF programs
    Kmem k;
    auto* p = k.skel->progs.kmalloc;
    auto* pb = k.skel->progs.kmalloc_backup;
    auto* f = k.skel->progs.kfree;
    auto* fb = k.skel->progs.kfree_backup;

    // The first ran: the backup sees its record of this event and does nothing.
    k.kmalloc(p, kA, 512);
    k.kmalloc(pb, kA, 512);
    CHECK(k.live() == 1);
    CHECK(k.totals() == "512/1");
    CHECK(k.lost(LW_LOST_K_MISSED_FREE) == 0);

    // The first was skipped: the backup records the allocation.
    k.kmalloc(pb, kB, 1024);
    CHECK(k.live() == 2);
    CHECK(k.totals() == "1536/2");

    // A free the first saw: the backup finds nothing and counts nothing.
    k.kfree(f, kA);
    k.kfree(fb, kA);
    CHECK(k.live() == 1);
    CHECK(k.totals() == "1024/1");
    CHECK(k.lost(LW_LOST_K_UNKNOWN_FREE) == 0);

    // A free the first was skipped for: the backup deletes and accounts it.
    k.kfree(fb, kB);
    CHECK(k.live() == 0);
    CHECK(k.totals() == "0/0");

    // An unknown address: counted once, by the first.
    k.kfree(f, kC);
    k.kfree(fb, kC);
    CHECK(k.lost(LW_LOST_K_UNKNOWN_FREE) == 1);
    CHECK(k.lost(LW_LOST_K_MISSED_FREE) == 0);

    // A record older than the bound is not this event's: a stale one whose free was not seen,
    // replaced (and counted) as the first program does.
    k.kmalloc(p, kC, 256);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    k.kmalloc(pb, kC, 256);
    CHECK(k.live() == 1);
    CHECK(k.totals() == "256/1");
    CHECK(k.lost(LW_LOST_K_MISSED_FREE) == 1);
}

}  // namespace leakwatch
