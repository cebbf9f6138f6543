// Loads that may block for ever, waited for at most as long as the caller chooses
// (util/bounded_loader.cpp). A load "blocks" on a condition the test releases, as a read of a
// file on a hung FUSE server would.
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "util/bounded_loader.h"

using leakwatch::BoundedLoader;
using namespace std::chrono_literals;

namespace {

struct Gate {
    std::mutex mu;
    std::condition_variable cv;
    bool open = false;
    void wait() {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return open; });
    }
    void release() {
        {
            std::lock_guard lock(mu);
            open = true;
        }
        cv.notify_all();
    }
};

}  // namespace

TEST_CASE("a load that finishes in time is done, one that does not is waited for no longer",
          "[util][loader]") {
    BoundedLoader loader(4, 200ms);
    int value = 0;
    CHECK(loader.run(
              "quick", [&] { value = 1; }, 1000ms) == BoundedLoader::Outcome::kDone);
    CHECK(value == 1);

    auto gate = std::make_shared<Gate>();
    auto t0 = std::chrono::steady_clock::now();
    CHECK(loader.run(
              "stuck", [gate] { gate->wait(); }, 100ms) == BoundedLoader::Outcome::kWaiting);
    auto waited = std::chrono::steady_clock::now() - t0;
    CHECK(waited >= 100ms);
    CHECK(waited < 1000ms);
    REQUIRE(loader.running_for("stuck").has_value());
    // The same key again: not started twice, and not waited for with 0.
    int second = 0;
    CHECK(loader.run(
              "stuck", [&] { second = 1; }, 0ms) == BoundedLoader::Outcome::kWaiting);

    // The stuck load holds one thread; others go on.
    std::this_thread::sleep_for(250ms);  // it counts as stuck now
    int other = 0;
    CHECK(loader.run(
              "other", [&] { other = 1; }, 1000ms) == BoundedLoader::Outcome::kDone);
    CHECK(other == 1);
    CHECK(loader.stats().stuck == 1);

    gate->release();
    for (int i = 0; i < 100 && loader.running_for("stuck"); i++) std::this_thread::sleep_for(10ms);
    CHECK_FALSE(loader.running_for("stuck").has_value());
    CHECK(second == 0);  // dropped: a load of that key was running
    CHECK(loader.stats().stuck == 0);
}

TEST_CASE("stuck loads never take more threads than the bound", "[util][loader]") {
    auto gate = std::make_shared<Gate>();
    {
        BoundedLoader loader(3, 50ms);
        for (int i = 0; i < 6; i++) {
            loader.run(
                "stuck" + std::to_string(i), [gate] { gate->wait(); }, 60ms);
        }
        CHECK(loader.stats().threads == 3);
        // Every thread is stuck: a new load waits in the queue, and the caller is not held up.
        auto t0 = std::chrono::steady_clock::now();
        CHECK(loader.run(
                  "queued", [] {}, 50ms) == BoundedLoader::Outcome::kWaiting);
        CHECK(std::chrono::steady_clock::now() - t0 < 1000ms);
        // Destroyed with its threads stuck: they are left to end by themselves.
    }
    gate->release();
}
