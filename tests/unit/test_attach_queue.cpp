// AttachQueue: uprobe attaches on threads of their own, one per file at a time, a bounded
// number at once, with the main loop waiting only a moment. A fake Attacher whose attach blocks
// until the test lets it go stands for the kernel waiting for a memory map lock.
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "tracker/attach_queue.h"
#include "tracker/reaper.h"

using namespace leakwatch;
using namespace std::chrono_literals;

namespace {

struct CountedAttachment : Attachment {
    std::atomic<int>& released;
    explicit CountedAttachment(std::atomic<int>& r) : released(r) {}
    ~CountedAttachment() override { ++released; }
    size_t links() const override { return 1; }
};

// attach() of a blocked file waits until unblock(); every attach is recorded.
struct BlockingAttacher : Attacher {
    std::mutex mu;
    std::condition_variable cv;
    std::set<std::string> blocked;  // target paths whose attach waits
    std::vector<pid_t> started;     // pids whose attach began, in order
    std::atomic<int> released{0};

    Result<std::unique_ptr<Attachment>> attach(pid_t pid, const ProbeTarget& target) override {
        std::unique_lock lock(mu);
        started.push_back(pid);
        cv.notify_all();
        cv.wait(lock, [&] { return !blocked.contains(target.path); });
        if (pid < 0) return fail("refused");
        return std::make_unique<CountedAttachment>(released);
    }
    void unblock(const std::string& path) {
        std::lock_guard lock(mu);
        blocked.erase(path);
        cv.notify_all();
    }
    bool began(pid_t pid) {
        std::unique_lock lock(mu);
        return cv.wait_for(lock, 2s, [&] {
            return std::find(started.begin(), started.end(), pid) != started.end();
        });
    }
    size_t begun() {
        std::lock_guard lock(mu);
        return started.size();
    }
    Result<void> watch(uint32_t, const Recording&) override { return {}; }
    void unwatch(uint32_t) override {}
    bool watching(uint32_t) const override { return false; }
    Result<void> watch_memory(uint32_t, const Recording&, uint64_t) override { return {}; }
    void unwatch_memory(uint32_t) override {}
    void purge(const std::set<uint32_t>&) override {}
    void purge_probes(const std::set<uint32_t>&) override {}
};

AttachQueue::Request request(pid_t pid, const std::string& file, double attached_at = 1.0) {
    AttachQueue::Request r;
    r.pid = pid;
    r.target.path = file;
    r.file = file;
    r.what = "pid " + std::to_string(pid);
    r.key = file;
    r.attached_at = attached_at;
    return r;
}

// Asks until the attach is done (the main loop's retries), for at most 2 s.
std::optional<AttachQueue::Done> done_within(AttachQueue& q, const AttachQueue::Request& r) {
    const auto until = std::chrono::steady_clock::now() + 2s;
    while (std::chrono::steady_clock::now() < until) {
        if (auto d = q.attach(r, 0ms)) return d;
        std::this_thread::sleep_for(2ms);
    }
    return std::nullopt;
}

// An attach of pid 10 to "libc" that waits in the (fake) kernel; let go at the end whatever
// happened, so that the queue's threads can be joined.
struct StuckLibc {
    BlockingAttacher a;
    Reaper reaper;
    AttachQueue q{a, reaper};
    StuckLibc() {
        a.blocked = {"libc"};
        CHECK_FALSE(q.attach(request(10, "libc"), 0ms));
        REQUIRE(a.began(10));
    }
    ~StuckLibc() { a.unblock("libc"); }
};

}  // namespace

TEST_CASE("an attach that returns at once is handed back within the wait", "[attach_queue]") {
    BlockingAttacher a;
    Reaper reaper;
    AttachQueue q(a, reaper);
    auto d = q.attach(request(10, "libc", 5.5), 2s);
    REQUIRE(d);
    REQUIRE(d->result);
    CHECK(d->attached_at == 5.5);
    CHECK_FALSE(q.has(10));  // handed over once
    CHECK(q.stats().in_flight == 0);
}

TEST_CASE("a stuck attach: the caller waits only a moment, and attaches of its file queue",
          "[attach_queue]") {
    BlockingAttacher a;
    a.blocked = {"libc"};
    Reaper reaper;
    AttachQueue q(a, reaper, 4, 100ms);
    const auto t0 = std::chrono::steady_clock::now();
    CHECK_FALSE(q.attach(request(10, "libc", 1.0), 50ms));
    CHECK(std::chrono::steady_clock::now() - t0 < 1s);
    REQUIRE(a.began(10));
    // Another process of the same file: queued behind it, not started (it would wait too).
    CHECK_FALSE(q.attach(request(11, "libc"), 50ms));
    // Another file: runs beside it.
    auto other = q.attach(request(12, "jemalloc"), 2s);
    REQUIRE(other);
    CHECK(other->result);
    CHECK(a.begun() == 2);  // 10 and 12; 11 waits
    std::this_thread::sleep_for(150ms);
    auto s = q.stats();
    CHECK(s.in_flight == 2);
    CHECK(s.stuck == 1);  // 10, running for longer than 100 ms; 11 only queued
    // Asked again with other times: the first request's are kept.
    CHECK_FALSE(q.attach(request(10, "libc", 9.0), 0ms));
    a.unblock("libc");
    auto d10 = done_within(q, request(10, "libc", 9.0));
    REQUIRE(d10);
    CHECK(d10->result);
    CHECK(d10->attached_at == 1.0);
    auto d11 = done_within(q, request(11, "libc"));
    REQUIRE(d11);
    CHECK(d11->result);
    CHECK(q.stats().in_flight == 0);
}

TEST_CASE("at most `threads` attaches run at once", "[attach_queue]") {
    BlockingAttacher a;
    a.blocked = {"f1", "f2", "f3"};
    Reaper reaper;
    AttachQueue q(a, reaper, 2);
    CHECK_FALSE(q.attach(request(1, "f1"), 0ms));
    CHECK_FALSE(q.attach(request(2, "f2"), 0ms));
    CHECK_FALSE(q.attach(request(3, "f3"), 0ms));
    REQUIRE(a.began(1));
    REQUIRE(a.began(2));
    std::this_thread::sleep_for(50ms);
    CHECK(a.begun() == 2);
    a.unblock("f1");
    REQUIRE(a.began(3));  // a thread freed
    a.unblock("f2");
    a.unblock("f3");
    for (pid_t pid : {1, 2, 3}) CHECK(done_within(q, request(pid, "f")));
}

TEST_CASE("forgotten attaches: dropped when queued, their probes released when they end",
          "[attach_queue]") {
    StuckLibc f;
    auto& [a, reaper, q] = f;
    CHECK_FALSE(q.attach(request(11, "libc"), 0ms));
    q.forget(11);
    CHECK_FALSE(q.has(11));
    q.forget(10);
    CHECK(q.has(10));                                 // running: kept under its pid until it ends
    CHECK_FALSE(q.attach(request(10, "libc"), 0ms));  // never handed over
    a.unblock("libc");
    const auto until = std::chrono::steady_clock::now() + 2s;
    while ((q.has(10) || reaper.queued()) && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(2ms);
    CHECK_FALSE(q.has(10));
    CHECK(a.released == 1);  // its probes went, through the reaper
    CHECK(a.begun() == 1);   // 11 never started
    CHECK_FALSE(reaper.releasing(10));
}

TEST_CASE("drain tells an attach stuck in the kernel from one that ends", "[attach_queue]") {
    StuckLibc f;
    auto& [a, reaper, q] = f;
    CHECK_FALSE(q.drain(200ms));
    std::thread later([&] {
        std::this_thread::sleep_for(100ms);
        a.unblock("libc");
    });
    CHECK(q.drain(5s));
    later.join();
}

TEST_CASE("the reaper tells which processes' probes are still being released", "[attach_queue]") {
    std::atomic<int> released{0};
    Reaper reaper;
    reaper.dispose(std::make_unique<CountedAttachment>(released), 42);
    CHECK(reaper.drain(5s));
    CHECK_FALSE(reaper.releasing(42));
    CHECK(released == 1);
    CHECK(reaper.queued() == 0);
    CHECK(reaper.busy_for() == Reaper::Clock::duration::zero());
}

TEST_CASE("an attach that cannot start now is not waited for", "[attach_queue]") {
    StuckLibc f;
    auto& [a, reaper, q] = f;
    // Behind the stuck attach of its file: the whole wait would be lost.
    const auto t0 = std::chrono::steady_clock::now();
    CHECK_FALSE(q.attach(request(11, "libc"), 5s));
    CHECK(std::chrono::steady_clock::now() - t0 < 1s);
}

TEST_CASE("what the target's path names is held until the attach ends", "[attach_queue]") {
    StuckLibc f;
    auto& [a, reaper, q] = f;
    auto file = std::make_shared<int>(3);
    std::weak_ptr<int> seen = file;
    auto r = request(11, "libc");
    r.hold = std::move(file);
    CHECK_FALSE(q.attach(std::move(r), 0ms));
    CHECK_FALSE(seen.expired());  // queued: still held
    a.unblock("libc");
    REQUIRE(done_within(q, request(11, "libc")));
    CHECK(seen.expired());  // handed over: let go
}

TEST_CASE("a request of another owner replaces the attach of its pid", "[attach_queue]") {
    StuckLibc f;
    auto& [a, reaper, q] = f;
    auto other = request(10, "libc");
    other.owner = "another process at that pid";
    CHECK_FALSE(q.waiting(10, other.owner));
    CHECK_FALSE(q.attach(other, 0ms));  // the first one is forgotten, not handed over
    CHECK_FALSE(q.waiting(10, ""));
    a.unblock("libc");
    // The forgotten attach's probes go through the reaper; then the other owner's attach runs.
    auto d = done_within(q, other);
    REQUIRE(d);
    CHECK(d->result);
    CHECK(a.begun() == 2);
    CHECK(reaper.drain(5s));
    CHECK(a.released == 1);
}

TEST_CASE("no attach of a pid starts while the reaper releases its probes", "[attach_queue]") {
    BlockingAttacher a;
    Reaper reaper;
    AttachQueue q(a, reaper);
    struct Slow : Attachment {
        std::atomic<bool>& go;
        explicit Slow(std::atomic<bool>& g) : go(g) {}
        ~Slow() override {
            while (!go) std::this_thread::sleep_for(1ms);
        }
        size_t links() const override { return 1; }
    };
    std::atomic<bool> go{false};
    reaper.dispose(std::make_unique<Slow>(go), 10);
    CHECK_FALSE(q.attach(request(10, "libc"), 100ms));
    CHECK(a.begun() == 0);
    go = true;
    CHECK(reaper.drain(5s));
    CHECK(done_within(q, request(10, "libc")));
}
