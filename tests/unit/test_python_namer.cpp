// CPython processes as the daemon keeps them (symbols/python_namer.cpp): the C library a
// process runs on, its runtime found on the loader and kept per process (a pid reused is another
// process), its code objects named from its memory.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "proc/proc.h"
#include "symbols/python_namer.h"
#include "symbols/symbolizer.h"

using leakwatch::CLibrary;
using leakwatch::MapEntry;
using leakwatch::ProcReader;
using leakwatch::PythonNamer;
using leakwatch::Symbolizer;

namespace {

MapEntry mapping(const std::string& path) {
    MapEntry m;
    m.path = path;
    return m;
}

// Debian 12's python3.11 running a function `Outer.leaky` whose code object's address it
// prints, then sleeping.
struct Interpreter {
    pid_t pid = -1;
    uint64_t code = 0;
    leakwatch::ProcessInfo info;
    std::vector<MapEntry> maps;
    Interpreter() {
        REQUIRE(access("/usr/bin/python3.11", X_OK) == 0);
        int out[2];
        REQUIRE(pipe(out) == 0);
        pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            dup2(out[1], 1);
            const char* exe = "/usr/bin/python3.11";
            execl(exe, exe, "-c",
                  "import time\n"
                  "class Outer:\n"
                  "    def leaky(self):\n"
                  "        time.sleep(60)\n"
                  "print(id(Outer.leaky.__code__), flush=True)\n"
                  "Outer().leaky()\n",
                  nullptr);
            _exit(127);
        }
        close(out[1]);
        char buf[64] = {};
        size_t n = 0;
        while (n < sizeof buf - 1) {
            ssize_t r = read(out[0], buf + n, 1);
            if (r <= 0 || buf[n] == '\n') break;
            n += static_cast<size_t>(r);
        }
        close(out[0]);
        code = std::stoull(std::string(buf, n));
        ProcReader proc;
        auto read_info = proc.process(pid);
        auto read_maps = proc.maps(pid);
        REQUIRE(read_info);
        REQUIRE(read_maps);
        info = std::move(*read_info);
        maps = std::move(*read_maps);
    }
    ~Interpreter() {
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
    }
};

// Asks until the answer is not pending (loads run on the symbolizer's loader).
template <class F>
auto settled(F&& ask) {
    for (int i = 0;; i++) {
        bool pending = false;
        auto r = ask(pending);
        if (!pending || i == 100) return r;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

}  // namespace

TEST_CASE("python namer: the C library a process maps", "[python]") {
    CHECK(leakwatch::c_library(
              {mapping("/usr/bin/python3.11"), mapping("/usr/lib/x86_64-linux-gnu/libc.so.6")}) ==
          CLibrary::kGlibc);
    CHECK(leakwatch::c_library({mapping("/lib/libc-2.31.so")}) == CLibrary::kGlibc);
    CHECK(leakwatch::c_library({mapping("/usr/bin/python3.11"),
                                mapping("/lib/ld-musl-x86_64.so.1")}) == CLibrary::kMusl);
    CHECK(leakwatch::c_library({mapping("/usr/lib/libc.musl-x86_64.so.1")}) == CLibrary::kMusl);
    // A static binary, or a C library leakwatch does not know: not glibc
    CHECK(leakwatch::c_library({mapping("/opt/python/bin/python3"), mapping("[stack]")}) ==
          CLibrary::kOther);
    // A file merely named like it is not the C library
    CHECK(leakwatch::c_library({mapping("/srv/libc.so.6.bak")}) == CLibrary::kOther);
}

TEST_CASE("python namer: a code object is named from the process, per process start", "[python]") {
    Interpreter py;
    ProcReader proc;
    auto* info = &py.info;
    auto* maps = &py.maps;
    Symbolizer symbolizer(proc);
    PythonNamer frames(proc, symbolizer);

    auto runtime = settled([&](bool& pending) {
        return frames.runtime(py.pid, info->start_time, *maps, info->exe, &pending);
    });
    REQUIRE(runtime);
    CHECK(runtime->minor == 11);
    auto frame = settled([&](bool& pending) {
        auto f = frames.resolve(static_cast<uint32_t>(py.pid), py.code, 0xffff);
        pending = f.pending;
        return f;
    });
    CHECK(frame.symbol == "Outer.leaky");
    CHECK(frame.module == "[python]");
    CHECK_FALSE(frame.pending);

    // The same pid with another start time (reused): nothing of the old process is used
    // while the new one's runtime is looked for, and it is looked for anew.
    bool pending = false;
    auto other = frames.runtime(py.pid, info->start_time + 1, {}, info->exe, &pending);
    CHECK_FALSE(other);
    auto unnamed = settled([&](bool& p) {
        auto f = frames.resolve(static_cast<uint32_t>(py.pid), py.code, 0xffff);
        p = f.pending;
        return f;
    });
    CHECK(unnamed.symbol.empty());
    CHECK(frames.processes() == 1);

    // Forgotten (it exited, or exec'd): its frames are no longer named.
    frames.forget(py.pid);
    CHECK(frames.processes() == 0);
    auto gone = frames.resolve(static_cast<uint32_t>(py.pid), py.code, 0xffff);
    CHECK(gone.symbol.empty());
    CHECK_FALSE(gone.pending);
}

TEST_CASE("python namer: a CPython on another C library than glibc is not read", "[python]") {
    Interpreter py;
    ProcReader proc;
    auto* info = &py.info;
    auto* maps = &py.maps;
    // Its maps as musl's would read: the same interpreter, musl's C library.
    bool renamed = false;
    for (MapEntry& m : *maps) {
        if (m.path.ends_with("/libc.so.6")) {
            m.path = "/lib/ld-musl-x86_64.so.1";
            renamed = true;
        }
    }
    REQUIRE(renamed);
    Symbolizer symbolizer(proc);
    PythonNamer frames(proc, symbolizer);
    auto runtime = settled([&](bool& pending) {
        return frames.runtime(py.pid, info->start_time, *maps, info->exe, &pending);
    });
    CHECK_FALSE(runtime);
    CHECK(frames.unsupported() == 1);
    // Asked again (the attach retried, escalated): counted once per process.
    CHECK_FALSE(frames.runtime(py.pid, info->start_time, *maps, info->exe, nullptr));
    CHECK(frames.unsupported() == 1);
    auto frame = frames.resolve(static_cast<uint32_t>(py.pid), py.code, 0xffff);
    CHECK(frame.symbol.empty());
}
