#include <re2/re2.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "proc/proc.h"

using namespace leakwatch;

namespace {

const std::string kProc = std::string(LEAKWATCH_FIXTURES) + "/proc";

MapEntry mapping(uint64_t start, uint64_t end, std::string path, std::string perms = "r-xp") {
    MapEntry m;
    m.start = start;
    m.end = end;
    m.perms = std::move(perms);
    m.path = std::move(path);
    return m;
}

ProcessInfo server() {
    ProcessInfo info;
    info.pid = 42;
    info.comm = "server";
    info.raw_comm = "server";
    info.exe = "/opt/app/server";
    info.argv = {"/opt/app/server", "--port", "8080", "--name", "my app"};
    return info;
}

Match cmdline_match(const std::string& pattern) {
    Match m;
    m.cmdline = pattern;
    m.cmdline_regex = *compile_cmdline(pattern);
    return m;
}

Allocator library(std::string name) {
    Allocator a;
    a.library = std::move(name);
    return a;
}

}  // namespace

TEST_CASE("parse_maps reads every field of a file-backed line", "[proc][maps]") {
    auto maps = parse_maps(
        "7f1a3d428000-7f1a3d5bd000 r-xp 00028000 08:01 1311235                    "
        "/usr/lib/x86_64-linux-gnu/libc.so.6\n");
    REQUIRE(maps);
    REQUIRE(maps->size() == 1);
    const MapEntry& m = maps->front();
    CHECK(m.start == 0x7f1a3d428000);
    CHECK(m.end == 0x7f1a3d5bd000);
    CHECK(m.perms == "r-xp");
    CHECK(m.offset == 0x28000);
    CHECK(m.dev_major == 8);
    CHECK(m.dev_minor == 1);
    CHECK(m.inode == 1311235);
    CHECK(m.path == "/usr/lib/x86_64-linux-gnu/libc.so.6");
    CHECK_FALSE(m.deleted);
    CHECK(m.executable());
}

TEST_CASE("parse_maps keeps spaces inside paths", "[proc][maps]") {
    auto maps = parse_maps(
        "7f1a30000000-7f1a30100000 r--p 00000000 08:01 2097250    /usr/share/my  data file.bin\n");
    REQUIRE(maps);
    CHECK(maps->at(0).path == "/usr/share/my  data file.bin");
    CHECK_FALSE(maps->at(0).executable());
}

TEST_CASE("parse_maps strips the deleted suffix and flags it", "[proc][maps]") {
    auto maps = parse_maps(
        "7f1a3d700000-7f1a3d701000 r-xp 00001000 fd:02 77 /tmp/plugin with spaces.so (deleted)\n"
        "7f1a31000000-7f1a31001000 rw-s 00000000 00:01 4096     /memfd:shm (deleted)\n");
    REQUIRE(maps);
    CHECK(maps->at(0).path == "/tmp/plugin with spaces.so");
    CHECK(maps->at(0).deleted);
    CHECK(maps->at(0).dev_major == 0xfd);
    CHECK(maps->at(0).dev_minor == 2);
    CHECK(maps->at(1).path == "/memfd:shm");
    CHECK(maps->at(1).deleted);
}

TEST_CASE("parse_maps gives anonymous mappings an empty path", "[proc][maps]") {
    // Kernels differ: some pad anonymous lines with trailing spaces, some end after the inode.
    auto maps = parse_maps(
        "7f1a2c000000-7f1a2c021000 rw-p 00000000 00:00 0                          \n"
        "7f1a2c021000-7f1a30000000 ---p 00000000 00:00 0\n");
    REQUIRE(maps);
    REQUIRE(maps->size() == 2);
    CHECK(maps->at(0).path.empty());
    CHECK(maps->at(1).path.empty());
    CHECK_FALSE(maps->at(1).deleted);
}

TEST_CASE("parse_maps keeps pseudo paths as they are", "[proc][maps]") {
    auto maps = parse_maps(
        "55d0c1b3e000-55d0c1b5f000 rw-p 00000000 00:00 0          [heap]\n"
        "7ffc8a1e4000-7ffc8a205000 rw-p 00000000 00:00 0          [stack]\n"
        "7ffc8a3f5000-7ffc8a3f7000 r-xp 00000000 00:00 0          [vdso]\n"
        "7f0000000000-7f0000001000 rw-p 00000000 00:00 0          [anon:arena]\n"
        "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0  [vsyscall]\n");
    REQUIRE(maps);
    REQUIRE(maps->size() == 5);
    CHECK(maps->at(0).path == "[heap]");
    CHECK(maps->at(1).path == "[stack]");
    CHECK(maps->at(2).path == "[vdso]");
    CHECK(maps->at(3).path == "[anon:arena]");
    CHECK(maps->at(4).path == "[vsyscall]");
    CHECK(maps->at(4).start == 0xffffffffff600000);
}

TEST_CASE("parse_maps accepts empty text and a missing final newline", "[proc][maps]") {
    auto empty = parse_maps("");
    REQUIRE(empty);
    CHECK(empty->empty());
    auto unterminated = parse_maps("1000-2000 r--p 00000000 08:01 5 /bin/x");
    REQUIRE(unterminated);
    CHECK(unterminated->at(0).path == "/bin/x");
}

TEST_CASE("parse_maps names the line of a malformed entry", "[proc][maps]") {
    const std::string good = "1000-2000 r--p 00000000 08:01 5 /bin/x\n";
    auto error_for = [&](const std::string& bad) {
        auto maps = parse_maps(good + good + bad + "\n" + good);
        REQUIRE_FALSE(maps);
        return maps.error().message;
    };
    CHECK_THAT(error_for("1000-zz00 r--p 00000000 08:01 5 /bin/x"),
               Catch::StartsWith("line 3: bad address range"));
    CHECK_THAT(error_for("1000 r--p 00000000 08:01 5 /bin/x"), Catch::StartsWith("line 3: "));
    CHECK_THAT(error_for("1000-2000 r--p 00000000 08:01"), Catch::StartsWith("line 3: bad device"));
    CHECK_THAT(error_for("1000-2000 rw 00000000 08:01 5 /bin/x"),
               Catch::StartsWith("line 3: bad permissions"));
    CHECK_THAT(error_for("1000-2000 r--p 00000000 08:01 5x /bin/x"),
               Catch::StartsWith("line 3: bad inode"));
    CHECK_THAT(error_for("2000-1000 r--p 00000000 08:01 5 /bin/x"), Catch::StartsWith("line 3: "));
    CHECK_THAT(error_for("garbage"), Catch::Contains("'garbage'"));
}

TEST_CASE("parse_maps handles thousands of lines", "[proc][maps]") {
    std::string text;
    for (uint64_t i = 0; i < 20000; ++i) {
        char line[128];
        snprintf(line, sizeof line,
                 "%" PRIx64 "-%" PRIx64 " r-xp %08" PRIx64 " 08:01 %" PRIu64
                 "     /usr/lib/lib%" PRIu64 ".so\n",
                 0x10000 + i * 0x2000, 0x10000 + i * 0x2000 + 0x1000, i * 0x1000, i, i % 50);
        text += line;
    }
    auto maps = parse_maps(text);
    REQUIRE(maps);
    REQUIRE(maps->size() == 20000);
    CHECK(maps->back().path == "/usr/lib/lib49.so");
    CHECK(find_mapping(*maps, 0x10000 + 12345 * 0x2000 + 0x10)->inode == 12345);
}

TEST_CASE("find_mapping finds the mapping containing an address", "[proc][maps]") {
    std::vector<MapEntry> maps = {mapping(0x1000, 0x2000, "/a"), mapping(0x2000, 0x3000, "/b"),
                                  mapping(0x5000, 0x6000, "/c")};
    CHECK(find_mapping(maps, 0x1000)->path == "/a");
    CHECK(find_mapping(maps, 0x1fff)->path == "/a");
    CHECK(find_mapping(maps, 0x2000)->path == "/b");  // end is exclusive
    CHECK(find_mapping(maps, 0x5800)->path == "/c");
    CHECK(find_mapping(maps, 0xfff) == nullptr);   // before the first
    CHECK(find_mapping(maps, 0x3000) == nullptr);  // in a gap
    CHECK(find_mapping(maps, 0x4fff) == nullptr);
    CHECK(find_mapping(maps, 0x6000) == nullptr);  // past the last
    CHECK(find_mapping(maps, 0) == nullptr);
    CHECK(find_mapping(maps, UINT64_MAX) == nullptr);
    CHECK(find_mapping({}, 0x1000) == nullptr);
}

// A file name with a newline forges lines of /proc/PID/maps: a duplicate start with an empty
// range after the real mapping (found by fuzz_proc) must not hide the real one.
TEST_CASE("find_mapping looks past forged empty lines with the same start", "[proc][maps]") {
    std::vector<MapEntry> maps = {mapping(0x1000, 0x2000, "/a"), mapping(0x3000, 0x4000, "/b"),
                                  mapping(0x3000, 0x3000, "/forged")};
    REQUIRE(find_mapping(maps, 0x3000) != nullptr);
    CHECK(find_mapping(maps, 0x3000)->path == "/b");
    CHECK(find_mapping(maps, 0x3800)->path == "/b");
    CHECK(find_mapping(maps, 0x2800) == nullptr);
}

TEST_CASE("ProcReader lists numeric entries in ascending order", "[proc][reader]") {
    ProcReader reader(kProc);
    // "self", "12abc", "uptime" and "container" are not processes.
    CHECK(reader.pids() == std::vector<int>{1, 2, 42, 1337});
    CHECK(ProcReader(kProc + "/does-not-exist").pids().empty());
}

TEST_CASE("ProcReader reads a process from the fixture tree", "[proc][reader]") {
    ProcReader reader(kProc);
    auto info = reader.process(42);
    REQUIRE(info);
    CHECK(info->pid == 42);
    CHECK(info->comm == "server");
    CHECK(info->exe == "/opt/app/server");
    CHECK(info->argv ==
          std::vector<std::string>{"/opt/app/server", "--port", "8080", "--name", "my app"});
    CHECK(info->start_time == 123456);
    CHECK(reader.start_time(42).value() == 123456);
}

TEST_CASE("ProcReader parses stat when comm holds spaces and parentheses", "[proc][reader]") {
    ProcReader reader(kProc);
    auto info = reader.process(1337);
    REQUIRE(info);
    CHECK(info->comm == "(a b) c)");
    CHECK(info->start_time == 987654);
    CHECK(info->exe == "/tmp/odd binary");                         // " (deleted)" stripped
    CHECK(info->argv == std::vector<std::string>{"odd: worker"});  // NUL padding dropped
}

// One process in a /proc tree of its own (removed with it): its comm, command line (NULs
// between the arguments) and Uid line, with a stat the reader accepts.
struct OneProcess {
    std::filesystem::path root;
    OneProcess(int pid, const std::string& comm, const std::string& cmdline,
               const std::string& uid_line) {
        root = std::filesystem::temp_directory_path() /
               ("leakwatch-proc-" + std::to_string(getpid()) + "-" + std::to_string(pid));
        const auto dir = root / std::to_string(pid);
        std::filesystem::create_directories(dir);
        std::ofstream(dir / "comm") << comm << '\n';
        std::ofstream(dir / "cmdline", std::ios::binary) << cmdline;
        std::ofstream(dir / "stat") << pid << " (x) S 1 " << pid << ' ' << pid
                                    << " 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 55 1 1 1\n";
        std::ofstream(dir / "status") << uid_line << '\n';
    }
    ~OneProcess() { std::filesystem::remove_all(root); }
};

TEST_CASE("comm is shown as valid text, and matched as the kernel has it", "[proc][reader]") {
    OneProcess p(77, "\xff\xfeleak\x1b[31m", std::string("/tmp/\xff\xfeleak") + '\0',
                 "Uid:\t5\t6\t6\t6");
    auto info = ProcReader(p.root.string()).process(77);
    REQUIRE(info);
    CHECK(info->raw_comm == "\xff\xfeleak\x1b[31m");
    CHECK(info->comm == "\xef\xbf\xbd\xef\xbf\xbdleak\xef\xbf\xbd[31m");
    CHECK(info->uid == 5);
    CHECK(info->euid == 6);
    Match m;
    m.comm = "\xff\xfeleak\x1b[31m";
    CHECK(matches(m, *info));
}

TEST_CASE("a command line is read no further than kMaxCommandLine", "[proc][reader]") {
    std::string cmdline;
    const std::string arg(128 << 10, 'a');
    for (int i = 0; i < 24; i++) cmdline += arg + '\0';  // 3 MiB
    OneProcess p(78, "big", cmdline, "Uid:\t0\t0\t0\t0");
    auto info = ProcReader(p.root.string()).process(78);
    REQUIRE(info);
    size_t bytes = 0;
    for (const auto& a : info->argv) bytes += a.size() + 1;
    CHECK(bytes >= kMaxCommandLine);
    CHECK(bytes <= kMaxCommandLine + 1);
}

TEST_CASE("ProcReader gives a kernel thread an empty exe and argv", "[proc][reader]") {
    auto info = ProcReader(kProc).process(2);
    REQUIRE(info);
    CHECK(info->comm == "kthreadd");
    CHECK(info->exe.empty());
    CHECK(info->argv.empty());
    CHECK(info->start_time == 4);
}

TEST_CASE("ProcReader reports a vanished process as an error", "[proc][reader]") {
    ProcReader reader(kProc);
    auto info = reader.process(31337);
    REQUIRE_FALSE(info);
    CHECK_THAT(info.error().message, Catch::Contains(kProc + "/31337/"));
    CHECK_THAT(info.error().message, Catch::Contains("No such file or directory"));
    CHECK_FALSE(reader.maps(31337));
    CHECK_FALSE(reader.start_time(31337));
}

TEST_CASE("ProcReader reads maps and names the file of a malformed one", "[proc][reader]") {
    ProcReader reader(kProc);
    auto maps = reader.maps(42);
    REQUIRE(maps);
    CHECK(maps->size() == 22);
    CHECK(find_mapping(*maps, 0x7f1a3d500000)->path == "/usr/lib/x86_64-linux-gnu/libc.so.6");
    CHECK(find_mapping(*maps, 0x7f1a3d800000)->dev_major == 0x103);

    auto bad = reader.maps(1337);
    REQUIRE_FALSE(bad);
    CHECK_THAT(bad.error().message, Catch::StartsWith(kProc + "/1337/maps: line 3: "));
}

TEST_CASE("ProcReader reads uids and the cgroup of a process", "[proc][reader]") {
    ProcReader reader(kProc);
    auto server = reader.process(42);
    REQUIRE(server);
    CHECK(server->uid == 1000);
    CHECK(server->euid == 1000);
    CHECK(server->cgroup == "/system.slice/app-server.service");
    auto pod = reader.process(1337);
    REQUIRE(pod);
    CHECK(pod->uid == 1001);
    CHECK(pod->cgroup.starts_with("/kubepods.slice/kubepods-besteffort.slice/"));
    // No cgroup file (a fixture, or a kernel without cgroups): nothing to match.
    auto init = reader.process(1);
    REQUIRE(init);
    CHECK(init->cgroup.empty());
    CHECK(init->uid == 0);
}

TEST_CASE("ProcReader reads the real /proc/self", "[proc][reader][self]") {
    ProcReader reader;
    const int self = static_cast<int>(::getpid());
    auto info = reader.process(self);
    REQUIRE(info);
    // The kernel truncates comm to 15 characters.
    CHECK(info->comm == std::string(program_invocation_short_name).substr(0, 15));
    CHECK(info->exe == std::filesystem::canonical(program_invocation_name).string());
    REQUIRE_FALSE(info->argv.empty());
    CHECK(info->argv[0] == program_invocation_name);
    CHECK(info->start_time > 0);

    auto maps = reader.maps(self);
    REQUIRE(maps);
    auto libc = find_allocator_mapping(*maps, library("libc"), info->exe);
    REQUIRE(libc);
    CHECK(libc->path.starts_with("/"));
    auto exe = find_allocator_mapping(*maps, library("exe"), info->exe);
    REQUIRE(exe);
    CHECK(exe->path == info->exe);
    // The code of this very function lives in a mapping of our own executable.
    const auto* here = find_mapping(*maps, reinterpret_cast<uint64_t>(&::getpid));
    REQUIRE(here != nullptr);
    CHECK(here->executable());

    const auto pids = reader.pids();
    CHECK(std::binary_search(pids.begin(), pids.end(), self));
}

TEST_CASE("matches checks each criterion", "[proc][match]") {
    const ProcessInfo info = server();
    Match m;
    CHECK_FALSE(matches(m, info));  // nothing set matches nothing

    SECTION("comm is exact") {
        m.comm = "server";
        CHECK(matches(m, info));
        m.comm = "serve";
        CHECK_FALSE(matches(m, info));
        m.comm = "server2";
        CHECK_FALSE(matches(m, info));
    }
    SECTION("exe is exact") {
        m.exe = "/opt/app/server";
        CHECK(matches(m, info));
        m.exe = "/opt/app/server2";
        CHECK_FALSE(matches(m, info));
        m.exe = "server";
        CHECK_FALSE(matches(m, info));
    }
    SECTION("pid is equal") {
        m.pid = 42;
        CHECK(matches(m, info));
        m.pid = 43;
        CHECK_FALSE(matches(m, info));
    }
    SECTION("cmdline is searched in argv joined by spaces") {
        CHECK(matches(cmdline_match("--port 8080"), info));
        CHECK(matches(cmdline_match("my app$"), info));
        CHECK(matches(cmdline_match("^/opt/app/server --port"), info));
        CHECK(matches(cmdline_match("port"), info));
        CHECK_FALSE(matches(cmdline_match("--port=8080"), info));
        CHECK_FALSE(matches(cmdline_match("^--port"), info));
    }
    SECTION("a cmdline without its compiled form is compiled on the spot") {
        m.cmdline = "--name my";
        CHECK(matches(m, info));
        m.cmdline = "([";  // invalid: no match rather than an exception
        CHECK_FALSE(matches(m, info));
    }
}

TEST_CASE("matches requires every criterion that is set", "[proc][match]") {
    const ProcessInfo info = server();
    Match m = cmdline_match("--port 8080");
    m.comm = "server";
    m.exe = "/opt/app/server";
    m.pid = 42;
    CHECK(matches(m, info));

    Match wrong_pid = m;
    wrong_pid.pid = 1;
    CHECK_FALSE(matches(wrong_pid, info));
    Match wrong_comm = m;
    wrong_comm.comm = "client";
    CHECK_FALSE(matches(wrong_comm, info));
    Match wrong_exe = m;
    wrong_exe.exe = "/usr/bin/server";
    CHECK_FALSE(matches(wrong_exe, info));
    Match wrong_cmdline = m;
    wrong_cmdline.cmdline_regex = *compile_cmdline("--port 9090");
    CHECK_FALSE(matches(wrong_cmdline, info));
}

TEST_CASE("uid, cgroup and unit restrict a rule to the intended service", "[proc][match]") {
    ProcessInfo info = server();
    info.uid = info.euid = 33;
    info.cgroup = "/system.slice/nginx.service/workers";
    Match m;
    m.comm = "server";
    m.uid = 33;
    CHECK(matches(m, info));
    // Both the real and the effective uid: a user's setuid program is not the service's.
    info.euid = 0;
    CHECK_FALSE(matches(m, info));
    info.euid = 33;
    m.unit = "nginx.service";
    CHECK(matches(m, info));
    m.unit = "nginx*";
    CHECK(matches(m, info));
    m.unit = "apache2.service";
    CHECK_FALSE(matches(m, info));
    m.unit.reset();
    m.cgroup = "/system.slice/*";
    CHECK(matches(m, info));
    m.cgroup = "/user.slice/*";
    CHECK_FALSE(matches(m, info));
    // A process with no cgroup (or on a kernel without cgroup v2) never matches them.
    info.cgroup.clear();
    m.cgroup = "*";
    CHECK_FALSE(matches(m, info));
    m.cgroup.reset();
    m.unit = "*";
    CHECK_FALSE(matches(m, info));
    // uid alone is a rule of its own.
    Match by_uid;
    by_uid.uid = 33;
    CHECK(matches(by_uid, info));
}

TEST_CASE("the unit of a cgroup path, as systemd tells it", "[proc][cgroup]") {
    CHECK(cgroup_unit("/system.slice/nginx.service") == "nginx.service");
    CHECK(cgroup_unit("/system.slice/nginx.service/workers") == "nginx.service");
    CHECK(cgroup_unit("/user.slice/user-1000.slice/session-3.scope") == "session-3.scope");
    CHECK(cgroup_unit("/user.slice/user-1000.slice/user@1000.service/app.slice/x.service") ==
          "user@1000.service");
    CHECK(cgroup_unit("/init.scope") == "init.scope");
    CHECK(cgroup_unit("/") == "");
    CHECK(cgroup_unit("/system.slice") == "");
    CHECK(cgroup_unit("/lwtest-1234/inner") == "");  // not a unit name
    CHECK(cgroup_unit("") == "");
    const std::string id = "5f0c3b9d2e8a7f6e1d0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e";
    CHECK(cgroup_container_id("/system.slice/docker-" + id + ".scope") == id);
    CHECK(cgroup_container_id("/kubepods.slice/kubepods-burstable.slice/"
                              "kubepods-burstable-pod1.slice/cri-containerd-" +
                              id + ".scope") == id);
    CHECK(cgroup_container_id("/kubepods/besteffort/pod4c7d/" + id) == id);
    CHECK(cgroup_container_id("/system.slice/nginx.service") == "");
    CHECK(cgroup_container_id("/x/" + id + "0") == "");  // 65 hex digits: not an id
    CHECK(unit_label("/system.slice/docker-" + id + ".scope") == id.substr(0, 12));
    CHECK(unit_label("/system.slice/nginx.service") == "nginx.service");
    CHECK(unit_label("/lwtest") == "");
}

TEST_CASE("glob_matches: *, ?, sets and escapes, in bounded time", "[proc][match]") {
    CHECK(glob_matches("/system.slice/*", "/system.slice/nginx.service"));
    CHECK(glob_matches("/system.slice/*", "/system.slice/a.service/b"));  // * takes /
    CHECK_FALSE(glob_matches("/system.slice/*", "/user.slice/a"));
    CHECK(glob_matches("app-?.service", "app-1.service"));
    CHECK_FALSE(glob_matches("app-?.service", "app-12.service"));
    CHECK(glob_matches("app-[0-9].service", "app-7.service"));
    CHECK_FALSE(glob_matches("app-[!0-9].service", "app-7.service"));
    CHECK(glob_matches("app-[^0-9].service", "app-x.service"));
    CHECK(glob_matches("a\\*b", "a*b"));
    CHECK_FALSE(glob_matches("a\\*b", "axb"));
    CHECK(glob_matches("[", "["));  // an unclosed set is a character
    CHECK(glob_matches("**", ""));
    CHECK(glob_matches("*a*b*c", "xxaxxbxxc"));
    CHECK_FALSE(glob_matches("*a*b*c", "xxaxxbxx"));
    CHECK(glob_matches("", ""));
    CHECK_FALSE(glob_matches("", "a"));
    // What makes a backtracking matcher exponential: many stars and a text that nearly fits.
    const std::string text(64 << 10, 'a');
    auto t0 = std::chrono::steady_clock::now();
    CHECK_FALSE(glob_matches("*a*a*a*a*a*a*a*a*a*a*b", text));
    auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0);
    std::printf("glob *a*a*a*a*a*a*a*a*a*a*b over 64 KiB: %.1f ms\n", ms.count());
    CHECK(ms.count() < 2000);
}

TEST_CASE("cmdline matching is linear in a 2 MiB command line, whatever the pattern",
          "[proc][match]") {
    // Four arguments of 120,000 'a' took std::regex's recursive matcher past its stack; a
    // command line of the largest length execve allows (2 MiB with the default 8 MiB stack).
    ProcessInfo info = server();
    info.argv.assign(16, std::string((128 << 10) - 1, 'a'));
    for (const char* pattern : {"(a|b)*c", "(a+)+$", "(x+x+)+y", "^(a|aa)+$", "(.*a){20}"}) {
        Match m = cmdline_match(pattern);
        auto t0 = std::chrono::steady_clock::now();
        bool matched = matches(m, info);
        auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0);
        std::printf("cmdline %-12s over 2 MiB: %s in %.1f ms\n", pattern,
                    matched ? "match" : "no match", ms.count());
        CHECK(ms.count() < 5000);
        if (std::string(pattern) == "(a|b)*c") CHECK_FALSE(matched);
        if (std::string(pattern) == "(a+)+$") CHECK(matched);
    }
}

TEST_CASE("matching_rule returns the first matching rule in order", "[proc][match]") {
    std::vector<WatchRule> rules(4);
    rules[0].name = "by-pid";
    rules[0].match.pid = 7;
    rules[1].name = "by-comm";
    rules[1].match.comm = "server";
    rules[2].name = "by-exe";
    rules[2].match.exe = "/opt/app/server";
    rules[3].name = "empty";  // matches nothing

    const ProcessInfo info = server();
    const WatchRule* rule = matching_rule(rules, info);
    REQUIRE(rule != nullptr);
    CHECK(rule->name == "by-comm");

    std::swap(rules[1], rules[2]);
    CHECK(matching_rule(rules, info)->name == "by-exe");

    ProcessInfo other = info;
    other.pid = 7;
    other.comm = other.raw_comm = "other";
    CHECK(matching_rule(rules, other)->name == "by-pid");

    other.pid = 8;
    other.exe = "/bin/other";
    CHECK(matching_rule(rules, other) == nullptr);
    CHECK(matching_rule({}, info) == nullptr);
}

TEST_CASE("find_allocator_mapping finds the C library", "[proc][allocator]") {
    SECTION("glibc on the fixture process") {
        auto maps = ProcReader(kProc).maps(42);
        REQUIRE(maps);
        auto libc = find_allocator_mapping(*maps, library("libc"), "/opt/app/server");
        REQUIRE(libc);
        CHECK(libc->path == "/usr/lib/x86_64-linux-gnu/libc.so.6");
        CHECK(libc->start == 0x7f1a3d400000);  // the first mapping of the file
        CHECK(libc->offset == 0);
    }
    SECTION("old glibc, plain libc.so and musl") {
        for (const char* path : {"/lib64/libc-2.17.so", "/usr/lib/libc.so",
                                 "/lib/ld-musl-x86_64.so.1", "/lib/ld-musl-aarch64.so.1"}) {
            std::vector<MapEntry> maps = {mapping(0x1000, 0x2000, "/usr/bin/app"),
                                          mapping(0x3000, 0x4000, path)};
            auto libc = find_allocator_mapping(maps, library("libc"), "/usr/bin/app");
            REQUIRE(libc);
            CHECK(libc->path == path);
        }
    }
    SECTION("look-alikes are not libc") {
        std::vector<MapEntry> maps = {mapping(0x1000, 0x2000, "/usr/lib/libcrypt.so.1"),
                                      mapping(0x3000, 0x4000, "/usr/lib/libc-3.0.so"),
                                      mapping(0x5000, 0x6000, "/usr/lib/libc.so.6.bak"),
                                      mapping(0x7000, 0x8000, "[anon:libc.so.6]")};
        auto libc = find_allocator_mapping(maps, library("libc"), "");
        REQUIRE_FALSE(libc);
        CHECK_THAT(libc.error().message,
                   Catch::StartsWith("library libc is not mapped by the process"));
        CHECK_THAT(libc.error().message, Catch::Contains("libc.so.6"));
        CHECK_THAT(libc.error().message, Catch::Contains("ld-musl-*.so.1"));
    }
}

TEST_CASE("find_allocator_mapping finds the executable", "[proc][allocator]") {
    std::vector<MapEntry> maps = {mapping(0x1000, 0x2000, "/usr/lib/libc.so.6"),
                                  mapping(0x3000, 0x4000, "/opt/app/server"),
                                  mapping(0x4000, 0x5000, "/opt/app/server")};
    auto exe = find_allocator_mapping(maps, library("exe"), "/opt/app/server");
    REQUIRE(exe);
    CHECK(exe->start == 0x3000);

    auto missing = find_allocator_mapping(maps, library("exe"), "/opt/app/other");
    REQUIRE_FALSE(missing);
    CHECK_THAT(missing.error().message, Catch::Contains("/opt/app/other"));
    CHECK_FALSE(find_allocator_mapping(maps, library("exe"), ""));
}

TEST_CASE("find_allocator_mapping finds a library by basename or path", "[proc][allocator]") {
    auto maps = ProcReader(kProc).maps(42);
    REQUIRE(maps);
    const std::string jemalloc = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";

    for (const char* name : {"libjemalloc.so.2", "libjemalloc.so", "libjemalloc"}) {
        auto lib = find_allocator_mapping(*maps, library(name), "/opt/app/server");
        REQUIRE(lib);
        CHECK(lib->path == jemalloc);
        CHECK(lib->start == 0x7f1a3c200000);
    }
    auto by_path = find_allocator_mapping(*maps, library(jemalloc), "/opt/app/server");
    REQUIRE(by_path);
    CHECK(by_path->start == 0x7f1a3c200000);

    // A deleted library is still the file the process runs.
    auto deleted = find_allocator_mapping(*maps, library("plugin with spaces.so"), "");
    REQUIRE(deleted);
    CHECK(deleted->deleted);

    // A prefix must end at a '.', and a path must match whole.
    CHECK_FALSE(find_allocator_mapping(*maps, library("libjemal"), ""));
    CHECK_FALSE(find_allocator_mapping(*maps, library("/usr/lib/libjemalloc.so.2"), ""));
    // Pseudo paths are not files.
    CHECK_FALSE(find_allocator_mapping(*maps, library("[heap]"), ""));

    auto missing = find_allocator_mapping(*maps, library("libtcmalloc.so"), "");
    REQUIRE_FALSE(missing);
    CHECK_THAT(missing.error().message,
               Catch::StartsWith("library libtcmalloc.so is not mapped by the process"));
    CHECK_THAT(missing.error().message, Catch::Contains("libtcmalloc.so.*"));
}
