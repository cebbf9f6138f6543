// Perf maps of JIT-compiled code (symbols/perf_map.cpp): parsing, and reading through the
// process's root.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "proc/proc.h"
#include "symbols/perf_map.h"
#include "util/bounded_loader.h"

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
    leakwatch::BoundedLoader loader;
    leakwatch::PerfMaps maps(proc, loader);
    REQUIRE(maps.find(getpid(), 0x1010).has_value());
    CHECK(maps.find(getpid(), 0x1010)->name == "first");
    uint64_t g = maps.generation(getpid());
    {
        std::ofstream out(path, std::ios::app);
        out << "2000 100 second\n";
    }
    // checked again at most once a second, and read in the background
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    maps.find(getpid(), 0x2010);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    REQUIRE(maps.find(getpid(), 0x2010).has_value());
    CHECK(maps.find(getpid(), 0x2010)->name == "second");
    CHECK(maps.generation(getpid()) != g);
    std::remove(path.c_str());
}

TEST_CASE("a perf map as a FIFO is refused without blocking", "[perf_map]") {
    std::string path = "/tmp/perf-" + std::to_string(getpid()) + ".map";
    std::remove(path.c_str());
    REQUIRE(::mkfifo(path.c_str(), 0600) == 0);
    ProcReader proc;
    leakwatch::BoundedLoader loader;
    leakwatch::PerfMaps maps(proc, loader);
    auto t0 = std::chrono::steady_clock::now();
    bool pending = true;
    CHECK_FALSE(maps.find(getpid(), 0x1010, false, &pending).has_value());
    CHECK_FALSE(pending);
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(300));
    std::remove(path.c_str());
}

TEST_CASE("a perf map is read no further than its line bound", "[perf_map]") {
    std::string text;
    char line[64];
    for (int i = 0; i < 20; i++) {
        std::snprintf(line, sizeof line, "%x 10 f%d\n", 0x1000 + i * 0x100, i);
        text += line;
    }
    auto map = leakwatch::PerfMap::parse(text, 5);
    CHECK(map.size() == 5);
    CHECK(map.find(0x1000 + 4 * 0x100) != nullptr);
    CHECK(map.find(0x1000 + 5 * 0x100) == nullptr);
}

TEST_CASE("perf map names are shown text", "[perf_map]") {
    auto map = leakwatch::PerfMap::parse(
        "1000 10 \xff\xfe"
        "evil\x1b[2J\n");
    REQUIRE(map.find(0x1000) != nullptr);
    CHECK(map.find(0x1000)->name ==
          "\xef\xbf\xbd\xef\xbf\xbd"
          "evil\xef\xbf\xbd[2J");
}

TEST_CASE("JVMs that do not answer hold no more than their own attach threads", "[perf_map]") {
    // Eight JVMs whose attach never ends until released, beside a process whose perf map is
    // read: its read must not wait behind them.
    std::string path = "/tmp/perf-" + std::to_string(getpid()) + ".map";
    {
        std::ofstream out(path);
        out << "1000 100 jitted\n";
    }
    struct Jvms {
        std::mutex mu;
        std::condition_variable cv;
        bool released = false;
        int in_flight = 0, most = 0, asked = 0;
    };
    auto jvms = std::make_shared<Jvms>();
    struct Release {
        std::shared_ptr<Jvms> jvms;
        ~Release() {
            std::lock_guard lock(jvms->mu);
            jvms->released = true;
            jvms->cv.notify_all();
        }
    } release{jvms};
    leakwatch::PerfMaps::Options options;
    options.command = [jvms](const ProcReader&, int, std::string_view,
                             const leakwatch::AttachLimits&,
                             bool*) -> leakwatch::Result<leakwatch::AttachReply> {
        std::unique_lock lock(jvms->mu);
        jvms->asked++;
        jvms->most = std::max(jvms->most, ++jvms->in_flight);
        jvms->cv.wait(lock, [&] { return jvms->released; });
        jvms->in_flight--;
        return leakwatch::fail("no answer");
    };
    ProcReader proc;
    leakwatch::BoundedLoader loader;
    leakwatch::PerfMaps maps(proc, loader, options);
    constexpr int kFirstJvm = 4190101, kJvms = 8;
    for (int pid = kFirstJvm; pid < kFirstJvm + kJvms; pid++) {
        maps.watch_jvm(pid);
        // JVMs found one after another (a loader thread takes a load when it wakes).
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    {
        std::lock_guard lock(jvms->mu);
        CHECK(jvms->asked == 2);
        CHECK(jvms->most == 2);
    }
    CHECK(maps.attaches_queued() == kJvms - 2);
    // Within the first read's wait (250 ms), though every JVM is still attached to or queued.
    const auto t0 = std::chrono::steady_clock::now();
    auto found = maps.find(getpid(), 0x1010);
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(300));
    REQUIRE(found.has_value());
    CHECK(found->name == "jitted");
    // Released, the queued JVMs are asked in turn, two at a time.
    {
        std::lock_guard lock(jvms->mu);
        jvms->released = true;
        jvms->cv.notify_all();
    }
    for (int i = 0; i < 200; i++) {
        {
            std::lock_guard lock(jvms->mu);
            if (jvms->asked == kJvms) break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::lock_guard lock(jvms->mu);
    CHECK(jvms->asked == kJvms);
    CHECK(jvms->most == 2);
    std::remove(path.c_str());
}
