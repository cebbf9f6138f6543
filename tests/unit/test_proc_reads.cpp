// Reads of /proc files on a pool of their own (proc/proc_reads.h), from a fixture /proc tree whose
// files are FIFOs nobody writes until the test says: opening one blocks its reader, as a read of
// a process's cmdline or pagemap blocks while the process holds up its memory map's lock.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <thread>

#include "proc/files.h"
#include "proc/proc.h"
#include "proc/proc_reads.h"

using namespace leakwatch;
namespace fs = std::filesystem;
using std::chrono::milliseconds;

namespace {

struct Tree {
    fs::path dir;
    Tree() {
        std::string tmpl = (fs::temp_directory_path() / "leakwatch-proc-reads-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        dir = tmpl;
    }
    ~Tree() {
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
    // A process of user uid whose `file` reads `text`, or (nullopt) blocks its reader.
    fs::path add(int pid, uint32_t uid, const std::string& file,
                 const std::optional<std::string>& text) const {
        const fs::path d = dir / std::to_string(pid);
        fs::create_directories(d);
        std::ofstream(d / "status")
            << "Name:\tapp\nUid:\t" << uid << '\t' << uid << '\t' << uid << '\t' << uid << '\n';
        const fs::path path = d / file;
        fs::remove(path);
        if (text)
            std::ofstream(path) << *text;
        else
            REQUIRE(::mkfifo(path.c_str(), 0600) == 0);
        return path;
    }
};

// Lets a reader blocked on the FIFO go with `text`; false when none is there (yet).
bool answer(const fs::path& path, const std::string& text) {
    int fd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return false;
    const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    ::close(fd);
    return ok;
}

void answer_until_read(const fs::path& path, const std::string& text) {
    for (int i = 0; i < 500 && !answer(path, text); i++)
        std::this_thread::sleep_for(milliseconds(10));
}

uint64_t refusals(Refusal why) {
    return refused_files()[static_cast<size_t>(why)];
}

// Reads of one file: the symbolizer's waits, made short.
struct Reads {
    ProcReader proc;
    ProcReadPool& pool;
    std::string file;
    ProcFileReads<std::string> reads;
    Reads(const Tree& tree, ProcReadPool& p, const std::string& f,
          milliseconds wait = milliseconds(50), milliseconds slow = milliseconds(10000))
        : proc(tree.dir.string()),
          pool(p),
          file(f),
          reads(proc, pool,
                [&p, wait, slow](const std::string& key) -> std::optional<milliseconds> {
                    auto running = p.loader().running_for(key);
                    if (running && *running > slow) return std::nullopt;
                    return running && *running >= wait ? milliseconds(0) : wait;
                },
                {.file = f, .refused = "test", .stuck_after = milliseconds(20)}) {}
    ProcFileReads<std::string>::Read read(int pid) {
        const std::string path = proc.root() + "/" + std::to_string(pid) + "/" + file;
        return reads.read(pid, 0, [path]() -> Result<std::string> {
            std::ifstream in(path);
            if (!in) return fail(path + ": cannot be read");
            return std::string(std::istreambuf_iterator<char>(in), {});
        });
    }
    // Asks until a read's result is picked up.
    ProcFileReads<std::string>::Read read_fresh(int pid) {
        ProcFileReads<std::string>::Read r;
        for (int i = 0; i < 500; i++) {
            r = read(pid);
            if (r.fresh) break;
            std::this_thread::sleep_for(milliseconds(10));
        }
        return r;
    }
};

}  // namespace

TEST_CASE("proc reads: a read that ends in time is handed out; a blocked one leaves the last",
          "[proc_reads]") {
    Tree tree;
    tree.add(300, 1000, "cmdline", "one");
    ProcReadPool pool;
    Reads reads(tree, pool, "cmdline");
    auto first = reads.read(300);
    REQUIRE(first.fresh);
    REQUIRE(first.value);
    CHECK(*first.value == "one");
    CHECK_FALSE(first.pending);

    const fs::path blocked = tree.add(300, 1000, "cmdline", std::nullopt);
    auto second = reads.read(300);
    CHECK(second.pending);
    CHECK_FALSE(second.fresh);
    REQUIRE(second.value);
    CHECK(*second.value == "one");  // kept while the new read goes on
    CHECK(pool.in_flight() == 1);
    // Asked again: the same read is waited for, none started beside it.
    CHECK(reads.read(300).pending);
    CHECK(pool.in_flight() == 1);

    answer_until_read(blocked, "two");
    for (int i = 0; i < 500 && pool.in_flight() > 0; i++)
        std::this_thread::sleep_for(milliseconds(10));
    auto last = reads.reads.last(300);
    REQUIRE(last);
    CHECK(*last == "two");
    CHECK(pool.in_flight() == 0);

    // A read that fails: the process is gone.
    fs::remove_all(tree.dir / "300");
    auto gone = reads.read_fresh(300);
    CHECK(gone.gone);
    CHECK_FALSE(gone.value);
    reads.reads.forget(300);
    CHECK(reads.reads.size() == 0);
}

TEST_CASE("proc reads: one read in flight per process, of any file", "[proc_reads]") {
    Tree tree;
    const fs::path blocked = tree.add(310, 1000, "cmdline", std::nullopt);
    tree.add(310, 1000, "pagemap", "pages");
    ProcReadPool pool;
    Reads cmdline(tree, pool, "cmdline");
    Reads pagemap(tree, pool, "pagemap");
    CHECK(cmdline.read(310).pending);
    // The pagemap of a process whose cmdline read is held up would be held up too: not started.
    auto page = pagemap.read(310);
    CHECK(page.pending);
    CHECK_FALSE(page.refused);
    CHECK_FALSE(page.value);
    CHECK(pagemap.reads.in_flight() == 0);
    CHECK(pagemap.reads.size() == 0);  // nothing held of a read that did not start
    // Forgotten, the process still gets no new read while its read is stuck.
    cmdline.reads.forget(310);
    CHECK(cmdline.read(310).pending);
    CHECK(pool.in_flight() == 1);
    answer_until_read(blocked, "app");
    for (int i = 0; i < 500 && pool.in_flight() > 0; i++)
        std::this_thread::sleep_for(milliseconds(10));
    auto read = pagemap.read_fresh(310);
    REQUIRE(read.value);
    CHECK(*read.value == "pages");
}

TEST_CASE("proc reads: a user's stuck reads are bounded; other users' processes still read",
          "[proc_reads]") {
    Tree tree;
    std::vector<fs::path> fifos;
    for (int pid = 400; pid < 403; pid++)
        fifos.push_back(tree.add(pid, 1000, "cmdline", std::nullopt));
    tree.add(500, 2000, "cmdline", "other");
    ProcReadPool pool(ProcReadLimits{.per_uid = 2, .total = 3});
    Reads reads(tree, pool, "cmdline");
    const uint64_t busy = refusals(Refusal::kBusy);
    CHECK(reads.read(400).pending);
    CHECK(reads.read(401).pending);
    CHECK(pool.in_flight() == 2);
    // Its third process gets no read: refused as busy, counted once.
    auto third = reads.read(402);
    CHECK(third.pending);
    CHECK(third.refused);
    CHECK(third.busy);
    CHECK(pool.in_flight() == 2);
    CHECK(refusals(Refusal::kBusy) == busy + 1);
    CHECK(reads.read(402).busy);
    CHECK(refusals(Refusal::kBusy) == busy + 1);
    // Another user's process reads.
    auto other = reads.read_fresh(500);
    REQUIRE(other.value);
    CHECK(*other.value == "other");
    // The reads of that user have run past stuck_after: its next read is not waited for.
    std::this_thread::sleep_for(milliseconds(30));
    CHECK(pool.stuck(1000, milliseconds(20)));
    CHECK_FALSE(pool.stuck(2000, milliseconds(20)));
    // One of them ends: its third process gets its read.
    answer_until_read(fifos[0], "a");
    for (int i = 0; i < 500 && pool.in_flight() > 1; i++)
        std::this_thread::sleep_for(milliseconds(10));
    CHECK(reads.read(402).pending);
    CHECK_FALSE(reads.read(402).busy);
    CHECK(pool.in_flight() == 2);
    // The pool's total: a user's bound within it leaves room for others, but not past it.
    tree.add(600, 3000, "cmdline", std::nullopt);
    CHECK(reads.read(600).pending);
    CHECK(pool.in_flight() == 3);
    tree.add(700, 4000, "cmdline", "late");
    CHECK(reads.read(700).busy);
    for (const auto& f : fifos) answer(f, "x");
    answer_until_read(tree.dir / "600" / "cmdline", "y");
    for (const auto& f : fifos) answer(f, "x");
    for (int i = 0; i < 500 && pool.in_flight() > 0; i++) {
        for (const auto& f : fifos) answer(f, "x");
        std::this_thread::sleep_for(milliseconds(10));
    }
    CHECK(pool.in_flight() == 0);
    auto late = reads.read_fresh(700);
    REQUIRE(late.value);
    CHECK(*late.value == "late");
}

TEST_CASE("proc reads: a read longer than slow is refused, the value read before kept",
          "[proc_reads]") {
    Tree tree;
    tree.add(800, 1000, "pagemap", "before");
    ProcReadPool pool;
    Reads reads(tree, pool, "pagemap", milliseconds(5), milliseconds(50));
    REQUIRE(reads.read_fresh(800).value);
    const fs::path blocked = tree.add(800, 1000, "pagemap", std::nullopt);
    const uint64_t slow = refusals(Refusal::kSlow);
    CHECK(reads.read(800).pending);
    std::this_thread::sleep_for(milliseconds(80));
    auto refused = reads.read(800);
    CHECK(refused.refused);
    CHECK_FALSE(refused.busy);
    REQUIRE(refused.value);
    CHECK(*refused.value == "before");
    CHECK(refusals(Refusal::kSlow) == slow + 1);
    answer_until_read(blocked, "after");
    for (int i = 0; i < 500 && pool.in_flight() > 0; i++)
        std::this_thread::sleep_for(milliseconds(10));
    auto after = reads.reads.last(800);
    REQUIRE(after);
    CHECK(*after == "after");
}

TEST_CASE("proc reads: the gate admits reads on the caller's thread within the pool's bounds",
          "[proc_reads]") {
    Tree tree;
    const fs::path blocked = tree.add(800, 1000, "pagemap", std::nullopt);
    tree.add(801, 1000, "pagemap", "");
    tree.add(802, 1000, "pagemap", "");
    tree.add(900, 2000, "pagemap", "");
    ProcReadPool pool(ProcReadLimits{.per_uid = 2, .total = 4, .on_caller = 2});
    Reads pagemap(tree, pool, "pagemap");
    auto gate = pool.gate(ProcReader(tree.dir.string()), milliseconds(30));
    // A process whose read is stuck gets nothing on the caller's thread either, after the wait.
    CHECK(pagemap.read(800).pending);
    CHECK_FALSE(gate(800));
    // Its user has one more read: admitted; then the user's bound is reached.
    auto first = gate(801);
    REQUIRE(first);
    CHECK(pool.in_flight() == 2);
    CHECK_FALSE(gate(802));
    // Another user's process: admitted, then the caller's-thread bound (2) is reached although
    // the pool's total (3) is not.
    auto other = gate(900);
    REQUIRE(other);
    tree.add(901, 3000, "pagemap", "");
    CHECK_FALSE(gate(901));
    // A read on the pool's own threads is not bounded by it.
    auto pooled = pool.admit(901, 3000);
    CHECK(pooled.first == ProcReadPool::Admission::kStarted);
    pooled.second.reset();
    // Let go, the flight makes room: the user's next process is admitted.
    first->reset();
    CHECK(gate(802));
    other->reset();
    answer_until_read(blocked, "x");
    for (int i = 0; i < 500 && pool.in_flight() > 0; i++)
        std::this_thread::sleep_for(milliseconds(10));
    CHECK(pool.in_flight() == 0);
}
