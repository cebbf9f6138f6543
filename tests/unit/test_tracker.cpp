// Tracker tests: a fixture /proc tree in a temporary directory stands for the processes, and a
// fake Attacher records what the tracker asks of the BPF side. Each fixture process maps this
// test's own libc (its /proc/self/maps lines, reached through a `root` link to /), so the
// allocator's functions are found in a real ELF file, as in the daemon.
#include <dlfcn.h>
#include <fcntl.h>
#include <gnu/libc-version.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "elf_support.h"
#include "leakwatch.h"
#include "proc/files.h"
#include "proc/proc.h"
#include "symbols/symbolizer.h"
#include "tracker/attacher.h"
#include "tracker/tracker.h"

using namespace leakwatch;
namespace fs = std::filesystem;

namespace {

// How long the tracker waits for an attach it starts: the fake attacher's take microseconds,
// but a loaded machine (the sanitized run) may not schedule the attach thread within the
// daemon's 250 ms. The tracker goes on as soon as the attach ends.
constexpr std::chrono::milliseconds kAttachWait{10000};

// Far above the pids this machine hands out, below the kernel's limit (4194304).
constexpr int kApp = 4190001;
constexpr int kOther = 4190002;
constexpr int kChild = 4190003;

// This process's libc, and its mappings as /proc/self/maps shows them.
std::string libc_path() {
    // A function only glibc has: under AddressSanitizer, malloc is the sanitizer's.
    Dl_info info{};
    REQUIRE(::dladdr(reinterpret_cast<void*>(&::gnu_get_libc_version), &info) != 0);
    return info.dli_fname;
}

std::string libc_maps() {
    std::ifstream in("/proc/self/maps");
    std::string line, out;
    while (std::getline(in, line))
        if (line.ends_with("/libc.so.6")) out += line + "\n";
    REQUIRE_FALSE(out.empty());
    return out;
}

class FixtureProc {
  public:
    FixtureProc() {
        std::string tmpl = (fs::temp_directory_path() / "leakwatch-tracker-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        root_ = tmpl;
    }
    ~FixtureProc() {
        std::error_code ec;
        fs::remove_all(root_, ec);
    }
    // A process named `comm`, started at `start` (clock ticks since boot), with libc mapped or
    // not yet (as at its exec event, before the dynamic loader has run).
    void add(int pid, const std::string& comm, uint64_t start = 1000, bool libc = true) {
        fs::path dir = root_ / std::to_string(pid);
        fs::create_directories(dir);
        std::ofstream(dir / "comm") << comm << "\n";
        std::ofstream(dir / "cmdline") << "/usr/bin/" << comm << '\0';
        std::ofstream(dir / "stat") << pid << " (" << comm << ") S 1 " << pid << " " << pid
                                    << " 0 -1 4194560 1200 0 3 0 17 9 0 0 20 0 1 0 " << start
                                    << " 10485760 512 18446744073709551615 1 1 0 0 0 0 0 4096 0 0"
                                    << " 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        std::ofstream(dir / "maps") << (libc ? libc_maps() : "");
        std::ofstream(dir / "status") << "Name:\t" << comm << "\nUid:\t1000\t1000\t1000\t1000\n";
        move_to(pid, "/system.slice/" + comm + ".service");
        if (!fs::is_symlink(dir / "root")) fs::create_directory_symlink("/", dir / "root");
        if (!fs::is_symlink(dir / "exe")) fs::create_symlink("/usr/bin/" + comm, dir / "exe");
    }
    void map_libc(int pid) { std::ofstream(root_ / std::to_string(pid) / "maps") << libc_maps(); }
    // Maps `path` (a copy of libc) where the real libc is: the same lines, its path and inode.
    void map_libc_copy(int pid, const std::string& path) {
        struct stat st {};
        REQUIRE(::stat(path.c_str(), &st) == 0);
        std::istringstream in(libc_maps());
        std::ofstream out(root_ / std::to_string(pid) / "maps");
        std::string line;
        while (std::getline(in, line)) {
            std::istringstream fields(line);
            std::string range, perms, offset, dev, inode;
            fields >> range >> perms >> offset >> dev >> inode;
            out << range << ' ' << perms << ' ' << offset << ' ' << dev << ' ' << st.st_ino
                << "    " << path << "\n";
        }
    }
    // Moves a process to another cgroup (its /proc/PID/cgroup).
    void move_to(int pid, const std::string& cgroup) {
        std::ofstream(root_ / std::to_string(pid) / "cgroup") << "0::" << cgroup << "\n";
    }
    void remove(int pid) { fs::remove_all(root_ / std::to_string(pid)); }
    std::string root() const { return root_.string(); }

  private:
    fs::path root_;
};

struct FakeAttachment : Attachment {
    std::atomic<int>& detached;
    explicit FakeAttachment(std::atomic<int>& d) : detached(d) {}
    ~FakeAttachment() override { ++detached; }
    size_t links() const override { return 1; }
};

// What the tracker asked of the BPF side.
struct FakeAttacher : Attacher {
    std::vector<std::pair<pid_t, ProbeTarget>> attaches;
    std::vector<uint64_t> attached_inodes;  // of the file target.path named at attach time
    std::map<uint32_t, Recording> watched;
    std::vector<std::set<uint32_t>> purges;
    std::set<pid_t> refuse;  // attach fails for these
    std::atomic<int> detached{0};

    // attach() runs on the tracker's attach threads (tracker/attach_queue.h).
    mutable std::mutex mu;
    std::condition_variable held_cv;
    bool held = false;  // attaches wait until let_go(), as the kernel for a memory map lock
    void hold() {
        std::lock_guard lock(mu);
        held = true;
    }
    void let_go() {
        std::lock_guard lock(mu);
        held = false;
        held_cv.notify_all();
    }
    Result<std::unique_ptr<Attachment>> attach(pid_t pid, const ProbeTarget& target) override {
        std::unique_lock lock(mu);
        held_cv.wait(lock, [&] { return !held; });
        attaches.emplace_back(pid, target);
        struct stat st {};
        attached_inodes.push_back(::stat(target.path.c_str(), &st) == 0 ? st.st_ino : 0);
        if (refuse.contains(pid)) return fail("uprobe refused for pid " + std::to_string(pid));
        return std::make_unique<FakeAttachment>(detached);
    }
    Result<void> watch(uint32_t tgid, const Recording& recording) override {
        watched[tgid] = recording;
        return {};
    }
    void unwatch(uint32_t tgid) override { watched.erase(tgid); }
    bool watching(uint32_t tgid) const override { return watched.contains(tgid); }
    std::map<uint32_t, uint64_t> tier;  // watch tier: pid -> fault sampling
    Result<void> watch_memory(uint32_t tgid, const Recording&, uint64_t sample_bytes) override {
        tier[tgid] = sample_bytes;
        return {};
    }
    void unwatch_memory(uint32_t tgid) override { tier.erase(tgid); }
    void purge(const std::set<uint32_t>& tgids) override { purges.push_back(tgids); }
    std::vector<std::set<uint32_t>> probe_purges;
    void purge_probes(const std::set<uint32_t>& tgids) override { probe_purges.push_back(tgids); }

    int attaches_of(pid_t pid) const {
        std::lock_guard lock(mu);
        int n = 0;
        for (const auto& [p, t] : attaches) n += p == pid;
        return n;
    }
    bool purged(uint32_t pid) const {
        for (const auto& p : purges)
            if (p.contains(pid)) return true;
        return false;
    }
};

// A rule whose processes get their allocator probes at once (tracking: full); the watch tier
// has tests of its own below.
WatchRule rule(const std::string& name, const std::string& comm,
               WatchRule::Tracking tracking = WatchRule::Tracking::kFull) {
    WatchRule r;
    r.name = name;
    r.match.comm = comm;
    r.tracking = tracking;
    return r;
}

lw_event event(uint32_t type, int pid) {
    lw_event e{};
    e.type = type;
    e.pid = static_cast<uint32_t>(pid);
    return e;
}

// An exec event, with the new image's comm.
lw_event exec_of(int pid, const char* comm) {
    lw_event e = event(LW_EVENT_EXEC, pid);
    std::strncpy(e.comm, comm, sizeof(e.comm) - 1);
    return e;
}

// The tracker with what it works on.
struct Fixture {
    FixtureProc proc_tree;
    ProcReader proc{proc_tree.root()};
    Symbolizer symbolizer{proc};
    FakeAttacher attacher;
    std::unique_ptr<Tracker> tracker;

    void start(std::vector<WatchRule> rules) {
        tracker = std::make_unique<Tracker>(attacher, proc, symbolizer, std::move(rules));
        tracker->set_attach_wait(kAttachWait);
    }
    // One process, `app`, watched by rule `web`.
    void watch_app() {
        proc_tree.add(kApp, "app");
        start({rule("web", "app")});
        tracker->scan();
    }
    std::vector<uint32_t> pids() const {
        std::vector<uint32_t> out;
        for (const auto& p : tracker->processes()) out.push_back(p.pid);
        return out;
    }
};

// Ticks the tracker until `done` holds, for at most 5 s: probes are detached on the reaper's
// thread, and new probes for the same pid wait for that (tried again at ticks).
template <class Done>
bool settle(Fixture& f, Done done) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!done()) {
        if (std::chrono::steady_clock::now() > until) return false;
        f.tracker->tick();
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
}

}  // namespace

TEST_CASE("scan attaches the running processes a rule matches", "[tracker]") {
    Fixture f;
    f.proc_tree.add(kApp, "app");
    f.proc_tree.add(kOther, "other");
    f.proc_tree.add(getpid(), "app");  // itself: never watched
    WatchRule r = rule("web", "app");
    r.min_size = 16;
    r.sample_bytes = 4096;
    r.unwind = WatchRule::Unwind::kDwarf;
    f.start({r});
    f.tracker->scan();

    REQUIRE(f.attacher.attaches.size() == 1);
    const auto& [pid, target] = f.attacher.attaches[0];
    CHECK(pid == kApp);
    // The very libc file the process maps (read through its own root), named to the kernel by
    // the descriptor it was read through, with its allocator's functions at file offsets.
    CHECK(target.path.starts_with("/proc/self/fd/"));
    struct stat libc_st {};
    REQUIRE(::stat(libc_path().c_str(), &libc_st) == 0);
    CHECK(f.attacher.attached_inodes[0] == libc_st.st_ino);
    std::set<std::string> functions;
    for (const auto& [name, offset] : target.offsets) functions.insert(name);
    CHECK(functions.contains("malloc"));
    CHECK(functions.contains("free"));
    CHECK(target.load_bias != 0);

    REQUIRE(f.attacher.watched.contains(kApp));
    const Recording& rec = f.attacher.watched[kApp];
    CHECK(rec.min_size == 16);
    CHECK(rec.sample_bytes == 4096);
    CHECK(rec.dwarf_unwind);
    CHECK(rec.lib_lo < rec.lib_hi);  // the allocator's own mmap calls are told apart by caller

    auto processes = f.tracker->processes();
    REQUIRE(processes.size() == 1);
    const ProcessMeta& meta = processes[0];
    CHECK(meta.pid == kApp);
    CHECK(meta.watch == "web");
    CHECK(meta.comm == "app");
    CHECK(meta.attached_at > 0);

    f.tracker->scan();  // nothing new
    CHECK(f.attacher.attaches.size() == 1);
}

TEST_CASE("exec: a process that becomes a match is attached, a watched one attached anew",
          "[tracker]") {
    Fixture f;
    f.proc_tree.add(kApp, "shell");
    f.start({rule("web", "app")});
    f.tracker->scan();
    CHECK(f.attacher.attaches.empty());

    f.proc_tree.add(kApp, "app");  // the same pid and start time, a new image
    f.tracker->on_event(event(LW_EVENT_EXEC, kApp));
    CHECK(f.pids() == std::vector<uint32_t>{kApp});
    CHECK(f.attacher.attaches_of(kApp) == 1);

    // Exec again: the old probes go first (in the background: the new ones wait for them),
    // then new ones.
    f.tracker->on_event(event(LW_EVENT_EXEC, kApp));
    CHECK(settle(f, [&] { return f.attacher.attaches_of(kApp) == 2; }));
    CHECK(f.attacher.detached == 1);
    CHECK(f.attacher.purged(kApp));  // the old image's data, before the new probes count
    CHECK(f.pids() == std::vector<uint32_t>{kApp});
}

TEST_CASE("fork: a child that matches is attached", "[tracker]") {
    Fixture f;
    f.watch_app();
    f.proc_tree.add(kChild, "app", 2000);
    f.tracker->on_event(event(LW_EVENT_FORK, kChild));
    CHECK(f.pids() == std::vector<uint32_t>{kApp, kChild});
}

TEST_CASE("exit: detached in the background, its data purged at the next tick", "[tracker]") {
    Fixture f;
    f.watch_app();
    REQUIRE(f.attacher.watched.contains(kApp));

    f.proc_tree.remove(kApp);
    f.tracker->on_event(event(LW_EVENT_EXIT, kApp));
    CHECK_FALSE(f.attacher.watched.contains(kApp));  // recording stops at once
    CHECK(f.tracker->attached() == 0);
    CHECK_FALSE(f.attacher.purged(kApp));
    CHECK(f.tracker->tick() >= 1);
    CHECK(f.attacher.purged(kApp));
    f.tracker.reset();  // the reaper finishes what it was given
    CHECK(f.attacher.detached == 1);
}

TEST_CASE("a scan drops processes that are gone and attaches a reused pid anew", "[tracker]") {
    Fixture f;
    f.proc_tree.add(kApp, "app", 1000);
    f.proc_tree.add(kOther, "app", 1000);
    f.start({rule("web", "app")});
    f.tracker->scan();
    CHECK(f.pids() == std::vector<uint32_t>{kApp, kOther});

    f.proc_tree.add(kApp, "app", 5000);  // another process under the same pid
    f.proc_tree.remove(kOther);          // its exit event was lost
    f.tracker->scan();
    CHECK(settle(f, [&] { return f.attacher.attaches_of(kApp) == 2; }));
    CHECK(f.pids() == std::vector<uint32_t>{kApp});
    CHECK(f.attacher.purged(kApp));
    CHECK(f.attacher.purged(kOther));
    CHECK(f.attacher.detached >= 1);  // the reused pid's old probes, before the new ones
    f.tracker.reset();
    CHECK(f.attacher.detached == 3);  // and the gone process's, and the new ones
}

TEST_CASE("set_rules keeps processes whose rule is the same and attaches the others anew",
          "[tracker]") {
    Fixture f;
    f.proc_tree.add(kApp, "app");
    f.proc_tree.add(kOther, "other");
    WatchRule a = rule("a", "app"), b = rule("b", "other");
    f.start({a, b});
    f.tracker->scan();
    CHECK(f.pids() == std::vector<uint32_t>{kApp, kOther});

    a.line = 40;  // moved in the file: the same rule
    b.min_size = 64;
    f.tracker->set_rules({a, b});
    CHECK(settle(f, [&] { return f.attacher.attaches_of(kOther) == 2; }));
    CHECK(f.attacher.attaches_of(kApp) == 1);
    CHECK(f.attacher.watched[kOther].min_size == 64);

    f.tracker->set_rules({a});  // `other` no longer matches anything
    CHECK(f.pids() == std::vector<uint32_t>{kApp});
    CHECK_FALSE(f.attacher.watched.contains(kOther));
}

TEST_CASE("a process that cannot be attached is left alone until it execs", "[tracker]") {
    Fixture f;
    f.proc_tree.add(kApp, "app");
    f.attacher.refuse = {kApp};
    f.start({rule("web", "app")});
    f.tracker->scan();
    CHECK(f.attacher.attaches_of(kApp) == 1);
    CHECK(f.tracker->attached() == 0);
    f.tracker->scan();
    CHECK(f.attacher.attaches_of(kApp) == 1);  // remembered, not retried

    f.attacher.refuse.clear();
    f.tracker->on_event(event(LW_EVENT_EXEC, kApp));
    CHECK(f.attacher.attaches_of(kApp) == 2);
    CHECK(f.pids() == std::vector<uint32_t>{kApp});
}

TEST_CASE("a process caught at exec is retried until its allocator is mapped", "[tracker]") {
    Fixture f;
    f.proc_tree.add(kApp, "app", 1000, false);
    f.start({rule("web", "app")});
    f.tracker->on_event(event(LW_EVENT_EXEC, kApp));
    CHECK(f.attacher.attaches.empty());
    CHECK(f.tracker->tick() <= 5);  // it wants to retry soon

    f.proc_tree.map_libc(kApp);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    f.tracker->tick();
    CHECK(f.pids() == std::vector<uint32_t>{kApp});
}

TEST_CASE("short-lived processes are counted: gone before attached, gone before read",
          "[tracker][storm]") {
    Fixture f;
    f.start({rule("web", "app")});
    // Matched at its exec, waiting for its allocator, then gone: an attach dropped.
    f.proc_tree.add(kApp, "app", 1000, false);
    f.tracker->on_event(exec_of(kApp, "app"));
    f.proc_tree.remove(kApp);
    f.tracker->on_event(event(LW_EVENT_EXIT, kApp));
    CHECK(f.tracker->attaches_dropped() == 1);
    // Gone before its /proc entry was read: its comm says a rule might have matched it.
    // Counted at once: the kernel sends no exit event for a process never watched (its fork
    // event, which carries no comm, counts nothing).
    f.tracker->on_event(event(LW_EVENT_FORK, kOther));
    CHECK(f.tracker->execs_unread() == 0);
    f.tracker->on_event(exec_of(kOther, "app"));
    CHECK(f.tracker->execs_unread() == 1);
    // ...or that none would have.
    f.tracker->on_event(exec_of(kChild, "sh"));
    CHECK(f.tracker->execs_unread() == 1);
    // A scan finds nothing more to count.
    f.tracker->scan();
    CHECK(f.tracker->execs_unread() == 1);
    // Matched, its attach tried and failed as it exited (no exit event follows): dropped.
    f.proc_tree.add(kChild, "app", 1000, false);
    f.tracker->on_event(exec_of(kChild, "app"));
    f.proc_tree.remove(kChild);
    for (int i = 0; i < 200 && f.tracker->attaches_dropped() < 2; i++) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        f.tracker->tick();
    }
    CHECK(f.tracker->attaches_dropped() == 2);
    CHECK(f.tracker->execs_unread() == 1);
    CHECK(f.attacher.attaches.empty());
}

TEST_CASE("resolve names an address with the process's own maps", "[tracker]") {
    Fixture f;
    f.watch_app();
    void* libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    REQUIRE(libc != nullptr);
    auto malloc_at = reinterpret_cast<uint64_t>(dlsym(libc, "malloc"));
    dlclose(libc);
    // The fixture process maps libc where this one does.
    CHECK(f.tracker->resolve(kApp, malloc_at + 2).symbol == "malloc");
    CHECK(f.tracker->resolve(kApp, malloc_at + 2).offset == 2);
    Frame unknown = f.tracker->resolve(kOther, malloc_at);
    CHECK(unknown.module == "[unknown]");
    CHECK(unknown.symbol.empty());
}

TEST_CASE("a process moved to another cgroup is matched again at the next scan", "[tracker]") {
    Fixture f;
    f.proc_tree.add(kApp, "app");
    f.proc_tree.move_to(kApp, "/lwtest/outside");
    WatchRule r;
    r.name = "sliced";
    r.tracking = WatchRule::Tracking::kFull;  // probes, so that attaches and detaches count
    r.match.cgroup = "/lwtest/inside*";
    f.start({r});
    f.tracker->scan();
    CHECK(f.pids().empty());
    // Moved in: attached at the next scan, with its cgroup's unit as its label.
    f.proc_tree.move_to(kApp, "/lwtest/inside/app.service");
    f.tracker->scan();
    REQUIRE(f.pids() == std::vector<uint32_t>{kApp});
    CHECK(f.tracker->processes()[0].unit == "");  // not below a slice: no systemd unit
    f.proc_tree.move_to(kApp, "/lwtest/inside-too");
    f.tracker->scan();
    CHECK(f.pids() == std::vector<uint32_t>{kApp});  // still its rule: kept
    CHECK(f.attacher.attaches_of(kApp) == 1);
    // Moved out: detached.
    f.proc_tree.move_to(kApp, "/lwtest/outside");
    f.tracker->scan();
    CHECK(f.pids().empty());
    CHECK(settle(f, [&] { return f.attacher.detached == 1; }));  // in the background
}

TEST_CASE("processes carry their unit, or their container, as a label", "[tracker]") {
    Fixture f;
    f.proc_tree.add(kApp, "app");
    f.proc_tree.add(kOther, "other");
    f.proc_tree.move_to(kOther, "/system.slice/docker-" + std::string(64, 'a') + ".scope");
    f.start({rule("web", "app"), rule("db", "other")});
    f.tracker->scan();
    auto processes = f.tracker->processes();
    REQUIRE(processes.size() == 2);
    CHECK(processes[0].unit == "app.service");
    CHECK(processes[1].unit == std::string(12, 'a'));
}

// A fake libc (the real build-id, malloc's symbol moved into the middle of its first
// instruction) mapped by one process must not move the probes of another.
TEST_CASE("probes go where the process's own file says, and never mid-instruction", "[tracker]") {
    Fixture f;
    const fs::path fake = fs::path(f.proc_tree.root()) / "fake" / "libc.so.6";
    fs::create_directories(fake.parent_path());
    fs::copy_file(libc_path(), fake);
    // Edit .dynsym in place: the fake's malloc is one byte into the real malloc.
    auto real = ElfFile::open(libc_path());
    REQUIRE(real);
    const uint64_t malloc_vaddr = *(*real)->function_address("malloc");
    REQUIRE(elf_support::move_dynamic_symbol(fake.string(), "malloc", 1));
    auto faked = ElfFile::open(fake.string());
    REQUIRE(faked);
    REQUIRE((*faked)->build_id() == (*real)->build_id());
    REQUIRE((*faked)->function_address("malloc") == malloc_vaddr + 1);

    f.proc_tree.add(kApp, "faker");
    f.proc_tree.map_libc_copy(kApp, fake.string());
    f.proc_tree.add(kOther, "victim");
    f.start({rule("faker", "faker"), rule("victim", "victim")});
    f.tracker->scan();
    // The faker is not probed at all: its malloc symbol is not where an instruction starts in
    // the code its unwind tables give (the real malloc's start).
    CHECK(f.attacher.attaches_of(kApp) == 0);
    // The victim, attached after it, gets the real libc's offsets.
    REQUIRE(f.attacher.attaches_of(kOther) == 1);
    const ProbeTarget& target = f.attacher.attaches.back().second;
    auto real_off = (*real)->file_offset_of_vaddr(malloc_vaddr);
    REQUIRE(real_off);
    bool found = false;
    for (const auto& [name, offset] : target.offsets) {
        if (name != std::string("malloc")) continue;
        found = true;
        CHECK(offset >= *real_off);
        CHECK(offset < *real_off + 16);  // on or a few instructions past its start, never +1
        CHECK(offset != *real_off + 1);
    }
    CHECK(found);
}

// What a previous run kept of app's probes, tagged as the tracker tags them.
std::vector<std::pair<std::string, std::unique_ptr<Attachment>>> kept_app(Fixture& f,
                                                                          const WatchRule& r,
                                                                          uint64_t start,
                                                                          double attached_at) {
    std::vector<std::pair<std::string, std::unique_ptr<Attachment>>> kept;
    kept.emplace_back(Tracker::kept_tag(kApp, start, attached_at, r),
                      std::make_unique<FakeAttachment>(f.attacher.detached));
    return kept;
}

TEST_CASE("adopt: the kept probes of the same process, still recorded, for the same rule",
          "[tracker][restart]") {
    Fixture f;
    f.proc_tree.add(kApp, "app", 1000);
    const WatchRule r = rule("web", "app");
    f.start({r});
    f.attacher.watched[kApp] = Recording{};  // the BPF side still records it
    const double attached_at = 1733000000.123456;
    auto adopted = f.tracker->adopt(kept_app(f, r, 1000, attached_at));
    CHECK(adopted == std::set<uint32_t>{kApp});
    auto processes = f.tracker->processes();
    REQUIRE(processes.size() == 1);
    // The same attached_at: the detector's series of the process go on under the same keys.
    CHECK(processes[0].attached_at == attached_at);
    CHECK(processes[0].watch == "web");
    f.tracker->scan();
    CHECK(f.attacher.attaches.empty());  // adopted, not attached again
    CHECK(f.attacher.detached == 0);
}

TEST_CASE("adopt: a process of the watch tier kept escalated is adopted escalated",
          "[tracker][restart][watch]") {
    const WatchRule r = rule("web", "app", WatchRule::Tracking::kEscalate);
    Escalation e;
    e.watch_sample_bytes = 64 * 1024;
    Fixture f;
    f.proc_tree.add(kApp, "app", 1000);
    f.tracker =
        std::make_unique<Tracker>(f.attacher, f.proc, f.symbolizer, std::vector<WatchRule>{r}, e);
    f.tracker->set_attach_wait(kAttachWait);
    f.attacher.watched[kApp] = Recording{};  // its escalation's probes still record it
    const double attached_at = 1733000000.5, escalated_at = 1733000100.25;
    std::vector<std::pair<std::string, std::unique_ptr<Attachment>>> kept;
    kept.emplace_back(Tracker::kept_tag(kApp, 1000, attached_at, r, escalated_at),
                      std::make_unique<FakeAttachment>(f.attacher.detached));
    CHECK(f.tracker->adopt(std::move(kept)) == std::set<uint32_t>{kApp});
    auto meta = f.tracker->processes().at(0);
    CHECK(meta.tracking == TrackingState::kEscalated);
    CHECK(meta.escalated_at == escalated_at);
    CHECK(meta.attached_at == attached_at);
    CHECK(f.attacher.tier == std::map<uint32_t, uint64_t>{{kApp, 64 * 1024}});
    CHECK(f.tracker->escalated() == 1);
    // Released as any escalated process: its probes go, it stays in the watch tier.
    f.tracker->release(kApp, "a test");
    CHECK(f.tracker->processes().at(0).tracking == TrackingState::kWatch);
    CHECK(f.attacher.tier.count(kApp) == 1);

    // Kept without an escalation (a rule with probes all the time then) while its rule is
    // escalate now: another tracking, dropped.
    Fixture g;
    g.proc_tree.add(kApp, "app", 1000);
    g.tracker =
        std::make_unique<Tracker>(g.attacher, g.proc, g.symbolizer, std::vector<WatchRule>{r}, e);
    g.tracker->set_attach_wait(kAttachWait);
    g.attacher.watched[kApp] = Recording{};
    CHECK(g.tracker->adopt(kept_app(g, r, 1000, attached_at)).empty());
}

TEST_CASE("adopt: kept probes of another process, an exec'ed one or another rule are dropped",
          "[tracker][restart]") {
    const WatchRule r = rule("web", "app");
    SECTION("pid reused") {
        Fixture f;
        f.proc_tree.add(kApp, "app", 5000);
        f.start({r});
        f.attacher.watched[kApp] = Recording{};
        CHECK(f.tracker->adopt(kept_app(f, r, 1000, 1.0)).empty());
    }
    SECTION("exec'ed meanwhile: no longer recorded") {
        Fixture f;
        f.proc_tree.add(kApp, "app", 1000);
        f.start({r});
        CHECK(f.tracker->adopt(kept_app(f, r, 1000, 1.0)).empty());
    }
    SECTION("its rule changed") {
        Fixture f;
        f.proc_tree.add(kApp, "app", 1000);
        WatchRule changed = r;
        changed.min_size = 64;
        f.start({changed});
        f.attacher.watched[kApp] = Recording{};
        CHECK(f.tracker->adopt(kept_app(f, r, 1000, 1.0)).empty());
        f.tracker->scan();  // attached anew, for the rule as it is now
        CHECK(f.attacher.attaches_of(kApp) == 1);
    }
    SECTION("gone") {
        Fixture f;
        f.start({r});
        CHECK(f.tracker->adopt(kept_app(f, r, 1000, 1.0)).empty());
        f.tracker.reset();
        CHECK(f.attacher.detached == 1);  // its probes let go (in the background)
    }
}

TEST_CASE("tracking: escalate watches a process without probes until it is escalated",
          "[tracker][watch]") {
    Fixture f;
    f.proc_tree.add(kApp, "app");
    WatchRule r = rule("web", "app", WatchRule::Tracking::kEscalate);
    r.sample_bytes = 8192;
    Escalation e;
    e.watch_sample_bytes = 64 * 1024;
    f.tracker =
        std::make_unique<Tracker>(f.attacher, f.proc, f.symbolizer, std::vector<WatchRule>{r}, e);
    f.tracker->set_attach_wait(kAttachWait);
    f.tracker->scan();
    CHECK(f.attacher.attaches.empty());
    CHECK(f.attacher.tier == std::map<uint32_t, uint64_t>{{kApp, 64 * 1024}});
    auto meta = f.tracker->processes().at(0);
    CHECK(meta.tracking == TrackingState::kWatch);
    CHECK(meta.fault_sample_bytes == 64 * 1024);
    const double attached_at = meta.attached_at;

    // Escalated: its probes, with the rule's sampling; still the same watched process.
    REQUIRE(f.tracker->escalate(kApp, "a test").has_value());
    CHECK(f.attacher.attaches_of(kApp) == 1);
    CHECK(f.attacher.watched.at(kApp).sample_bytes == 8192);
    meta = f.tracker->processes().at(0);
    CHECK(meta.tracking == TrackingState::kEscalated);
    CHECK(meta.escalated_at > 0);
    CHECK(meta.attached_at == attached_at);
    CHECK(f.tracker->escalated() == 1);
    CHECK_FALSE(f.tracker->escalate(kApp, "twice").has_value());

    // Released: the probes and what they recorded go, the watch tier stays.
    f.tracker->release(kApp, "a test");
    CHECK_FALSE(f.attacher.watched.contains(kApp));
    REQUIRE(f.attacher.probe_purges.size() == 1);
    CHECK(f.attacher.probe_purges[0] == std::set<uint32_t>{kApp});
    CHECK(f.attacher.tier.contains(kApp));
    CHECK(f.tracker->processes().at(0).tracking == TrackingState::kWatch);
    CHECK(f.tracker->escalated() == 0);

    // Exit: out of the tier, and everything of it purged.
    f.tracker->on_event(event(LW_EVENT_EXIT, kApp));
    f.tracker->tick();
    CHECK(f.attacher.tier.empty());
    CHECK(f.attacher.purged(kApp));
    CHECK_FALSE(f.tracker->escalate(kApp, "gone").has_value());
}

TEST_CASE("an escalation whose probes wait in the kernel ends at a tick, or goes when released",
          "[tracker][watch]") {
    Fixture f;
    f.proc_tree.add(kApp, "app");
    f.proc_tree.add(kOther, "app");
    f.start({rule("web", "app", WatchRule::Tracking::kEscalate)});
    f.tracker->set_attach_wait(std::chrono::milliseconds(250));  // the daemon's
    f.tracker->scan();
    REQUIRE(f.tracker->processes().size() == 2);

    f.attacher.hold();
    const auto t0 = std::chrono::steady_clock::now();
    REQUIRE(f.tracker->escalate(kApp, "a test").has_value());
    // The main loop waited for the attach 250 ms (the wait), not until the kernel let it go.
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));
    CHECK(f.tracker->processes().at(0).tracking == TrackingState::kWatch);
    CHECK(f.tracker->escalated() == 1);  // counts against escalation.max_processes already
    CHECK(f.tracker->escalate(kApp, "asked again").has_value());
    CHECK(f.tracker->escalations_pending().contains(kApp));
    // Its plan read (on the loader), its attach started and held.
    CHECK(settle(f, [&] { return f.tracker->probe_operations().attaches_in_flight == 1; }));
    f.tracker->tick();
    CHECK(f.tracker->processes().at(0).tracking == TrackingState::kWatch);

    f.attacher.let_go();
    CHECK(settle(
        f, [&] { return f.tracker->processes().at(0).tracking == TrackingState::kEscalated; }));
    CHECK(f.attacher.attaches_of(kApp) == 1);
    CHECK(f.attacher.watching(kApp));
    CHECK(f.tracker->processes().at(0).escalated_at > 0);

    // Released while its probes wait: they go once they come, and it is not recorded.
    f.attacher.hold();
    REQUIRE(f.tracker->escalate(kOther, "a test").has_value());
    CHECK(settle(f, [&] { return f.tracker->probe_operations().attaches_in_flight == 1; }));
    f.tracker->release(kOther, "a test");
    CHECK(f.tracker->escalated() == 1);  // kApp only
    f.attacher.let_go();
    CHECK(settle(f, [&] {
        return f.attacher.attaches_of(kOther) == 1 &&
               f.tracker->probe_operations().attaches_in_flight == 0 &&
               f.tracker->probe_operations().detaches_queued == 0;
    }));
    CHECK(f.attacher.detached == 1);
    CHECK_FALSE(f.attacher.watching(kOther));
    CHECK(f.tracker->processes().at(1).tracking == TrackingState::kWatch);
}

namespace {

// A rule on the executable (no comm): a zombie, whose exe link is gone, is read and unmatched.
WatchRule by_exe() {
    WatchRule r = rule("web", "app");
    r.match.comm.reset();
    r.match.exe = "/usr/bin/app";
    return r;
}

}  // namespace

TEST_CASE("a short-lived process counts once, whatever the order of its events",
          "[tracker][storm]") {
    Fixture f;
    f.start({rule("web", "app")});
    auto retry_until_dropped = [&](uint64_t dropped) {
        for (int i = 0; i < 200 && f.tracker->attaches_dropped() < dropped; i++) {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
            f.tracker->tick();
        }
    };

    SECTION("exec'ed twice, both events read after it was gone") {
        f.tracker->on_event(exec_of(kApp, "app"));
        f.tracker->on_event(exec_of(kApp, "app"));
        CHECK(f.tracker->execs_unread() == 1);
        CHECK(f.tracker->attaches_dropped() == 0);
    }
    SECTION("exited before its second exec was read (a zombie), then gone") {
        f.start({by_exe()});
        f.proc_tree.add(kApp, "app", 1000, false);
        fs::remove(fs::path(f.proc_tree.root()) / std::to_string(kApp) / "exe");
        f.tracker->on_event(exec_of(kApp, "app"));
        CHECK(f.tracker->execs_unread() == 1);
        f.tracker->on_event(exec_of(kApp, "app"));
        f.proc_tree.remove(kApp);
        f.tracker->on_event(exec_of(kApp, "app"));
        CHECK(f.tracker->execs_unread() == 1);
    }
    SECTION("its attach dropped, then a late exec event finds it gone") {
        f.proc_tree.add(kApp, "app", 1000, false);
        f.tracker->on_event(exec_of(kApp, "app"));
        f.proc_tree.remove(kApp);
        retry_until_dropped(1);
        CHECK(f.tracker->attaches_dropped() == 1);
        f.tracker->on_event(exec_of(kApp, "app"));
        CHECK(f.tracker->execs_unread() == 0);
        CHECK(f.tracker->attaches_dropped() == 1);
    }
    SECTION("found gone at a late exec event, then found gone at its failed attach") {
        f.proc_tree.add(kApp, "app", 1000, false);
        f.tracker->on_event(exec_of(kApp, "app"));  // waiting for its allocator
        f.proc_tree.remove(kApp);
        f.tracker->on_event(exec_of(kApp, "app"));  // exec'ed again; gone when read
        retry_until_dropped(1);
        CHECK(f.tracker->execs_unread() + f.tracker->attaches_dropped() == 1);
    }
    SECTION("pending, gone, then its exit event after the failed attach") {
        f.proc_tree.add(kApp, "app", 1000, false);
        f.tracker->on_event(exec_of(kApp, "app"));
        f.proc_tree.remove(kApp);
        retry_until_dropped(1);
        f.tracker->on_event(event(LW_EVENT_EXIT, kApp));
        f.tracker->tick();
        CHECK(f.tracker->attaches_dropped() == 1);
        CHECK(f.tracker->execs_unread() == 0);
    }
    SECTION("after a while, a process of the same pid gone before it was read counts again") {
        f.tracker->on_event(exec_of(kApp, "app"));
        f.tracker->on_event(exec_of(kApp, "app"));
        CHECK(f.tracker->execs_unread() == 1);
        std::this_thread::sleep_for(std::chrono::milliseconds(5100));
        f.tracker->tick();
        f.tracker->on_event(exec_of(kApp, "app"));
        CHECK(f.tracker->execs_unread() == 2);
    }
    SECTION("the pid's next process counts again") {
        f.start({by_exe()});
        f.tracker->on_event(exec_of(kApp, "app"));
        CHECK(f.tracker->execs_unread() == 1);
        // Read alive (another start time), then gone before its attach.
        f.proc_tree.add(kApp, "app", 2000, false);
        f.tracker->on_event(exec_of(kApp, "app"));
        f.proc_tree.remove(kApp);
        retry_until_dropped(1);
        CHECK(f.tracker->attaches_dropped() == 1);
        // And a third, read as a zombie with yet another start time.
        f.proc_tree.add(kApp, "app", 3000, false);
        fs::remove(fs::path(f.proc_tree.root()) / std::to_string(kApp) / "exe");
        f.tracker->on_event(exec_of(kApp, "app"));
        CHECK(f.tracker->execs_unread() == 2);
        CHECK(f.tracker->attaches_dropped() == 1);
    }
}

TEST_CASE("a process whose maps do not read holds up no scan: it is attached once they do",
          "[tracker]") {
    // Its maps file a FIFO nobody writes yet: opening it blocks, as reading a process's maps
    // does while the process holds up its memory map's lock.
    FixtureProc proc_tree;
    proc_tree.add(kApp, "app");
    const fs::path maps = fs::path(proc_tree.root()) / std::to_string(kApp) / "maps";
    fs::remove(maps);
    REQUIRE(::mkfifo(maps.c_str(), 0600) == 0);
    ProcReader proc{proc_tree.root()};
    SymbolizerOptions options;
    options.wait = std::chrono::milliseconds(20);
    Symbolizer symbolizer{proc, options};
    FakeAttacher attacher;
    Tracker tracker(attacher, proc, symbolizer, {rule("web", "app")});
    tracker.set_attach_wait(kAttachWait);
    tracker.scan();
    tracker.tick();
    CHECK(tracker.attached() == 0);
    // The maps answer (and read at once from now on): the read ends, and a later try attaches
    // the process with the maps it read.
    {
        int fd = ::open(maps.c_str(), O_WRONLY | O_CLOEXEC);
        REQUIRE(fd >= 0);
        const std::string text = libc_maps();
        REQUIRE(::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
        ::close(fd);
    }
    fs::remove(maps);
    proc_tree.map_libc(kApp);
    for (int i = 0; i < 300 && tracker.attached() == 0; i++) {
        tracker.tick();
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    CHECK(tracker.attached() == 1);
    CHECK(attacher.attaches_of(kApp) == 1);
    CHECK(tracker.attaches_dropped() == 0);
}

TEST_CASE("the maps read of processes never attached are not kept: bounded by those watched",
          "[tracker]") {
    // Processes a rule matches whose attach fails (refused) or waits for an allocator that is
    // never mapped, then exit: the kernel sends no exit event for a process never watched.
    Fixture f;
    constexpr int kFirst = 4190100;
    constexpr int kCount = 40;
    f.proc_tree.add(kApp, "app");
    for (int i = 0; i < kCount; i++) {
        f.proc_tree.add(kFirst + i, "app", 1000, i % 2 == 0);
        if (i % 2 == 0) f.attacher.refuse.insert(kFirst + i);
    }
    f.start({rule("web", "app")});
    f.tracker->scan();
    auto& maps = f.symbolizer.process_maps();
    // Given up at once (refused, or no allocator at a scan): nothing kept but the watched one.
    CHECK(f.tracker->attached() == 1);
    CHECK(maps.size() == 1);

    // Caught at exec, still without their allocator: they wait, their maps kept meanwhile;
    // they exit unseen (no exit event) and their next try lets their maps go.
    for (int i = 1; i < kCount; i += 2) f.tracker->on_event(exec_of(kFirst + i, "app"));
    CHECK(maps.size() == 1 + kCount / 2);
    for (int i = 0; i < kCount; i++) f.proc_tree.remove(kFirst + i);
    for (int i = 0; i < 100 && maps.size() > 1; i++) {
        f.tracker->tick();
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    CHECK(maps.size() == 1);

    // Retried until given up (alive, never mapping it): nothing of theirs stays either.
    for (int i = 0; i < kCount; i++) f.proc_tree.add(kFirst + i, "app", 2000, false);
    for (int i = 0; i < kCount; i++) f.tracker->on_event(exec_of(kFirst + i, "app"));
    CHECK(maps.size() == 1 + kCount);
    for (int i = 0; i < 1000 && maps.size() > 1; i++) {
        f.tracker->tick();
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    CHECK(maps.size() == 1);

    // Read for a process no longer watched (as the unwinder's snapshot of one just let go
    // may): the next scan lets them go.
    for (int i = 0; i < kCount; i++) maps.read(kFirst + i);
    CHECK(maps.size() == 1 + kCount);
    f.tracker->scan();
    CHECK(maps.size() == 1);
    CHECK(maps.last(kApp));
    CHECK(f.tracker->attached() == 1);
}

TEST_CASE("a process whose allocator's file is slow to read at first is tried again", "[tracker]") {
    FixtureProc proc_tree;
    proc_tree.add(kApp, "app");
    ProcReader proc{proc_tree.root()};
    SymbolizerOptions options;
    options.wait = std::chrono::milliseconds(20);
    options.slow = std::chrono::milliseconds(300);
    Symbolizer symbolizer{proc, options};
    FakeAttacher attacher;
    Tracker tracker(attacher, proc, symbolizer, {rule("web", "app")});
    tracker.set_attach_wait(kAttachWait);
    // A busy machine: the loader's working threads are all taken by reads that go on, so the
    // read of the allocator's file waits its turn longer than `slow`.
    auto busy = std::make_shared<std::atomic<bool>>(true);
    struct Release {
        std::shared_ptr<std::atomic<bool>> busy;
        ~Release() { *busy = false; }
    } release{busy};
    auto started = std::make_shared<std::atomic<int>>(0);
    for (const char* key : {"busy-1", "busy-2"}) {
        symbolizer.loader().run(
            key,
            [busy, started] {
                ++*started;
                while (*busy) std::this_thread::sleep_for(std::chrono::milliseconds(5));
            },
            std::chrono::milliseconds(0));
    }
    // Both are running before the read is asked for: a thread started but not yet inside its
    // job counts as idle, and the loader would start another for the read.
    for (int i = 0; i < 400 && *started < 2; i++)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    REQUIRE(*started == 2);
    tracker.scan();
    const auto began = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - began < std::chrono::milliseconds(600)) {
        tracker.tick();
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    CHECK(tracker.attached() == 0);
    CHECK(tracker.attaches_retried() == 1);
    // The machine is less busy: the read ends, and the next try (1 s after the first gave up)
    // attaches the process; a scan meanwhile does not give up on it either.
    *busy = false;
    tracker.scan();
    for (int i = 0; i < 300 && tracker.attached() == 0; i++) {
        tracker.tick();
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    CHECK(tracker.attached() == 1);
    CHECK(attacher.attaches_of(kApp) == 1);
    CHECK(tracker.attaches_retried() == 1);  // once per process, not per try
    CHECK(tracker.attaches_dropped() == 0);
}

namespace {

// A rule matching processes whose command line has `pattern`.
WatchRule cmdline_rule(const std::string& name, const std::string& pattern) {
    WatchRule r;
    r.name = name;
    auto compiled = compile_cmdline(pattern);
    REQUIRE(compiled);
    r.match.cmdline = pattern;
    r.match.cmdline_regex = *compiled;
    r.tracking = WatchRule::Tracking::kFull;
    return r;
}

// Replaces a process's cmdline with a FIFO nobody writes yet: opening it blocks its reader, as
// reading /proc/PID/cmdline blocks while the process holds up its memory map's lock.
fs::path block_cmdline(const FixtureProc& tree, int pid) {
    const fs::path path = fs::path(tree.root()) / std::to_string(pid) / "cmdline";
    fs::remove(path);
    REQUIRE(::mkfifo(path.c_str(), 0600) == 0);
    return path;
}

// Lets a reader blocked on the FIFO go with `text`; false when none is there (yet).
bool answer_fifo(const fs::path& path, const std::string& text) {
    int fd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return false;
    const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    ::close(fd);
    return ok;
}

uint64_t slow_refusals() {
    return refused_files()[static_cast<size_t>(Refusal::kSlow)];
}

}  // namespace

TEST_CASE("a rule set without `cmdline` never reads a command line", "[tracker][cmdline]") {
    FixtureProc proc_tree;
    proc_tree.add(kApp, "app");
    const fs::path cmdline = block_cmdline(proc_tree, kApp);
    ProcReader proc{proc_tree.root()};
    Symbolizer symbolizer{proc};
    FakeAttacher attacher;
    Tracker tracker(attacher, proc, symbolizer, {rule("web", "app")});
    tracker.set_attach_wait(kAttachWait);
    tracker.scan();
    CHECK(tracker.attached() == 1);
    CHECK(tracker.cmdlines_held() == 0);
}

TEST_CASE("a command line that does not read holds up no scan: matched once it reads",
          "[tracker][cmdline]") {
    FixtureProc proc_tree;
    proc_tree.add(kApp, "app");
    proc_tree.add(kOther, "other");
    const fs::path cmdline = block_cmdline(proc_tree, kApp);
    ProcReader proc{proc_tree.root()};
    SymbolizerOptions options;
    options.wait = std::chrono::milliseconds(20);
    Symbolizer symbolizer{proc, options};
    FakeAttacher attacher;
    // A comm rule first: it decides for `other` without its command line.
    Tracker tracker(attacher, proc, symbolizer,
                    {rule("other", "other"), cmdline_rule("web", "--serve")});
    tracker.set_attach_wait(kAttachWait);
    tracker.scan();
    tracker.tick();
    // Not guessed either way: neither attached nor given up while its command line is unread.
    CHECK(attacher.attaches_of(kApp) == 0);
    CHECK(attacher.attaches_of(kOther) == 1);
    CHECK(tracker.cmdlines_held() == 1);
    // Asked again at later passes, no second read is started (it would block as well).
    tracker.scan();
    CHECK(tracker.cmdlines_held() == 1);

    const std::string text = std::string("/usr/bin/app\0--serve\0", 21);
    bool answered = false;
    for (int i = 0; i < 500 && !answered; i++) {
        answered = answer_fifo(cmdline, text);
        if (!answered) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    REQUIRE(answered);
    for (int i = 0; i < 500 && tracker.attached() < 2; i++) {
        tracker.tick();
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    CHECK(attacher.attaches_of(kApp) == 1);
    CHECK(tracker.attached() == 2);
    CHECK(tracker.cmdlines_held() == 0);
}

TEST_CASE("a command line slower to read than `slow` is refused, counted, and not matched",
          "[tracker][cmdline]") {
    FixtureProc proc_tree;
    proc_tree.add(kApp, "app");
    const fs::path cmdline = block_cmdline(proc_tree, kApp);
    ProcReader proc{proc_tree.root()};
    SymbolizerOptions options;
    options.wait = std::chrono::milliseconds(20);
    options.slow = std::chrono::milliseconds(100);
    Symbolizer symbolizer{proc, options};
    FakeAttacher attacher;
    Tracker tracker(attacher, proc, symbolizer, {cmdline_rule("web", "app")});
    tracker.set_attach_wait(kAttachWait);
    const uint64_t before = slow_refusals();
    tracker.scan();
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    for (int i = 0; i < 10; i++) {
        tracker.tick();
        std::this_thread::sleep_for(std::chrono::milliseconds(60));
    }
    CHECK(slow_refusals() == before + 1);
    CHECK(tracker.attached() == 0);
    CHECK(tracker.cmdlines_held() == 0);
    // Remembered as refused: a scan does not read it again.
    tracker.scan();
    CHECK(tracker.cmdlines_held() == 0);
    CHECK(slow_refusals() == before + 1);
    for (int i = 0; i < 500 && !answer_fifo(cmdline, std::string("app\0", 4)); i++)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

TEST_CASE("command line reads: bounded in flight, let go when their processes are gone",
          "[tracker][cmdline]") {
    FixtureProc proc_tree;
    constexpr int kFirst = 4190200;
    constexpr int kCount = 12;
    std::vector<fs::path> fifos;
    for (int i = 0; i < kCount; i++) {
        proc_tree.add(kFirst + i, "app");
        fifos.push_back(block_cmdline(proc_tree, kFirst + i));
    }
    ProcReader proc{proc_tree.root()};
    SymbolizerOptions options;
    options.wait = std::chrono::milliseconds(5);
    Symbolizer symbolizer{proc, options};
    CmdlineReads reads(
        proc, symbolizer.proc_reads(),
        [&symbolizer](const std::string& key) { return symbolizer.wait_for(key); }, 4);
    for (int i = 0; i < kCount; i++)
        CHECK(reads.read(kFirst + i, 1000).state == CmdlineReads::State::kPending);
    // Four started; the others wait for a later pass, nothing held of them.
    CHECK(reads.in_flight() == 4);
    CHECK(reads.size() == 4);
    // Gone (no exit event): let go; the reads in flight still count until they end.
    reads.forget_unless([](pid_t) { return false; });
    CHECK(reads.size() == 0);
    CHECK(reads.in_flight() == 4);
    CHECK(reads.read(kFirst + 5, 1000).state == CmdlineReads::State::kPending);
    CHECK(reads.size() == 0);
    // Ended: what they read is dropped (nobody waits for it), and new reads start.
    int answered = 0;
    for (int i = 0; i < 500 && answered < 4; i++) {
        for (const auto& f : fifos) answered += answer_fifo(f, std::string("app\0", 4));
        if (answered < 4) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    for (int i = 0; i < 500 && reads.in_flight() > 0; i++)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    CHECK(reads.in_flight() == 0);
    CHECK(reads.size() == 0);
    // A process read in full: its command line, and nothing kept once handed out.
    proc_tree.add(kFirst + 100, "app");
    CmdlineReads::Read read;
    for (int i = 0; i < 500 && read.state == CmdlineReads::State::kPending; i++) {
        read = reads.read(kFirst + 100, 1000);
        if (read.state == CmdlineReads::State::kPending)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    REQUIRE(read.state == CmdlineReads::State::kRead);
    CHECK(read.argv == std::vector<std::string>{"/usr/bin/app"});
    CHECK(reads.size() == 0);
    // The others still blocked are let go at the end.
    for (int i = 0; i < 100; i++) {
        bool any = false;
        for (const auto& f : fifos) any |= answer_fifo(f, std::string("app\0", 4));
        if (!any && reads.in_flight() == 0) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}
