// http/process_metrics.cpp: the daemon's own CPU, memory and file descriptors, read from
// /proc/self of this test process.
#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <vector>

#include "http/process_metrics.h"
#include "http_support.h"

using namespace leakwatch;
using namespace http_support;

TEST_CASE("process metrics: this process's own figures, valid exposition", "[http][self]") {
    // Some CPU time to see, and a known number of extra descriptors.
    volatile double x = 0;
    for (int i = 0; i < 20000000; i++) x = x + i * 0.5;
    std::string before = render_process_metrics();
    auto exp0 = parse_exposition(before);
    std::vector<int> fds;
    for (int i = 0; i < 10; i++) fds.push_back(open("/dev/null", O_RDONLY));
    auto exp = parse_exposition(render_process_metrics());
    for (int fd : fds) close(fd);

    CHECK(exp.types["process_cpu_seconds_total"] == "counter");
    CHECK(exp.one("process_cpu_seconds_total", {}).value > 0.005);
    CHECK(exp.one("process_resident_memory_bytes", {}).value > 1 << 20);
    CHECK(exp.one("process_virtual_memory_bytes", {}).value >=
          exp.one("process_resident_memory_bytes", {}).value);
    CHECK(exp.one("process_open_fds", {}).value == exp0.one("process_open_fds", {}).value + 10);
    CHECK(exp.one("process_max_fds", {}).value >= 1024);
    const double now =
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    const double started = exp.one("process_start_time_seconds", {}).value;
    CHECK(started <= now + 1);
    CHECK(started > now - 3600);  // this test binary started less than an hour ago
    auto promtool = promtool_check_metrics(before);
    INFO(before);
    CHECK(promtool.exit_code == 0);
}

TEST_CASE("process metrics: what cannot be read is left out", "[http][self]") {
    std::string out = render_process_metrics("/nonexistent");
    CHECK(out.find("process_cpu_seconds_total") == std::string::npos);
    CHECK(out.find("process_open_fds") == std::string::npos);
    CHECK(out.find("process_max_fds") != std::string::npos);  // from getrlimit, not /proc
}
