// proc/kernel_memory.cpp: the kernel's accounting of its slab caches and memory kinds.
#include <catch2/catch.hpp>

#include "proc/kernel_memory.h"

using namespace leakwatch;

TEST_CASE("slabinfo: each cache's objects in use and their size", "[proc][kernel]") {
    auto caches = parse_slabinfo(
        "slabinfo - version: 2.1\n"
        "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : "
        "tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> "
        "<sharedavail>\n"
        "kmalloc-1k          3072   3104   1024   32    8 : tunables    0    0    0 : slabdata "
        "   97     97      0\n"
        "dentry            120000 121800    192   42    2 : tunables    0    0    0 : slabdata "
        "2900   2900      0\n"
        "truncated 12\n");
    REQUIRE(caches.size() == 2);
    CHECK(caches[0].name == "kmalloc-1k");
    CHECK(caches[0].active_objects == 3072);
    CHECK(caches[0].object_size == 1024);
    CHECK(caches[0].bytes() == 3072u * 1024);
    CHECK(caches[1].bytes() == 120000u * 192);
}

TEST_CASE("meminfo: percpu, vmalloc and the pages held outside the accounted kinds",
          "[proc][kernel]") {
    KernelMemory m;
    parse_meminfo(
        "MemTotal:       1000000 kB\nMemFree:         400000 kB\nBuffers:          10000 kB\n"
        "Cached:          200000 kB\nAnonPages:       150000 kB\nSlab:             50000 kB\n"
        "KernelStack:      5000 kB\nPageTables:        4000 kB\nPercpu:            1000 kB\n"
        "VmallocUsed:      30000 kB\n",
        m);
    CHECK(m.percpu == 1000u * 1024);
    CHECK(m.vmalloc == 30000u * 1024);
    CHECK(m.pages == (1000000u - 400000 - 10000 - 200000 - 150000 - 50000 - 5000 - 4000 - 1000) *
                         1024);
    KernelMemory small;
    parse_meminfo("MemTotal: 100 kB\nMemFree: 90 kB\nCached: 50 kB\n", small);
    CHECK(small.pages == 0);  // floored
}

TEST_CASE("the running kernel's memory reads as root", "[proc][kernel][root]") {
    auto m = read_kernel_memory("/proc");
    REQUIRE(m.has_value());
    CHECK(m->caches.size() > 20);
    CHECK(m->percpu > 0);
}
