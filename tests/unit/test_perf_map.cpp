// Perf maps of JIT-compiled code (symbols/perf_map.cpp): parsing, and reading through the
// process's root.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include "proc/proc.h"
#include "symbols/perf_map.h"

using leakwatch::ProcReader;

TEST_CASE("perf maps: hex start and size, the latest blob wins, partial lines skipped",
          "[perf_map]") {
    auto map = leakwatch::PerfMap::parse(
        "7f0000001000 100 Interpreter\n"
        "0x7f0000002000 0x80 void LeakDirect.leakBuffer(int)\n"
        "not a line\n"
        "7f0000003000 0 empty\n"
        "7f0000002040 40 java.nio.ByteBuffer java.nio.ByteBuffer.allocateDirect(int)\n"
        "7f0000004000 10 py::leak_bytes:/tmp/leak.py\n"
        "7f0000005000 10 cut off");
    REQUIRE(map.find(0x7f0000001000) != nullptr);
    CHECK(map.find(0x7f00000010ff)->name == "Interpreter");
    CHECK(map.find(0x7f0000001100) == nullptr);
    // the later blob at 0x...2040 replaced the one it overlaps
    CHECK(map.find(0x7f0000002000) == nullptr);
    CHECK(map.find(0x7f0000002050)->name ==
          "java.nio.ByteBuffer java.nio.ByteBuffer.allocateDirect(int)");
    CHECK(map.find(0x7f0000003000) == nullptr);
    CHECK(map.find(0x7f0000004008)->name == "py::leak_bytes:/tmp/leak.py");
    CHECK(map.find(0x7f0000005000) == nullptr);  // no newline yet: being written
    CHECK(map.size() == 3);

    using leakwatch::perf_map_symbol;
    CHECK(perf_map_symbol("void LeakDirect.leakBuffer(int)") == "LeakDirect.leakBuffer(int)");
    CHECK(perf_map_symbol("java.nio.ByteBuffer java.nio.ByteBuffer.allocateDirect(int)") ==
          "java.nio.ByteBuffer.allocateDirect(int)");
    CHECK(perf_map_symbol("void java.util.HashMap.put(java.lang.Object, java.lang.Object)") ==
          "java.util.HashMap.put(java.lang.Object, java.lang.Object)");
    CHECK(perf_map_symbol("Interpreter") == "Interpreter");
    CHECK(perf_map_symbol("StubRoutines (1)") == "StubRoutines (1)");
    CHECK(perf_map_symbol("py::leak_bytes:/tmp/leak.py") == "py::leak_bytes:/tmp/leak.py");
}

TEST_CASE("perf maps are read through /proc/PID/root, and reread when they change", "[perf_map]") {
    std::string path = "/tmp/perf-" + std::to_string(getpid()) + ".map";
    {
        std::ofstream out(path);
        out << "1000 100 first\n";
    }
    ProcReader proc;
    leakwatch::PerfMaps maps(proc);
    REQUIRE(maps.find(getpid(), 0x1010) != nullptr);
    CHECK(maps.find(getpid(), 0x1010)->name == "first");
    uint64_t g = maps.generation(getpid());
    {
        std::ofstream out(path, std::ios::app);
        out << "2000 100 second\n";
    }
    // checked again at most once a second
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    REQUIRE(maps.find(getpid(), 0x2010) != nullptr);
    CHECK(maps.find(getpid(), 0x2010)->name == "second");
    CHECK(maps.generation(getpid()) != g);
    std::remove(path.c_str());
}
