// The log rate limiter and the notify protocol's no-op behaviour outside systemd.
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <thread>

#include "service/logging.h"
#include "service/notify.h"

using namespace leakwatch;

TEST_CASE("RateLimiter lets one message per key through per period, counting the rest",
          "[service]") {
    RateLimiter limiter(std::chrono::seconds(1));
    CHECK(limiter.allow("poll") == 1);
    CHECK(limiter.allow("poll") == 0);
    CHECK(limiter.allow("poll") == 0);
    CHECK(limiter.allow("other") == 1);  // keys are independent
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    CHECK(limiter.allow("poll") == 3);  // this one and the two held back
    CHECK(limiter.allow("poll") == 0);
}

TEST_CASE("stderr_is_journal needs JOURNAL_STREAM to name our stderr", "[service]") {
    unsetenv("JOURNAL_STREAM");
    CHECK_FALSE(stderr_is_journal());
    setenv("JOURNAL_STREAM", "1:2", 1);
    CHECK_FALSE(stderr_is_journal());
    unsetenv("JOURNAL_STREAM");
}

TEST_CASE("without a watchdog the loop may wait a second", "[service]") {
    unsetenv("WATCHDOG_USEC");
    unsetenv("NOTIFY_SOCKET");
    ServiceNotifier n;
    CHECK(n.max_wait() == std::chrono::milliseconds(1000));
    n.keepalive();  // nothing to talk to: must not fail
    n.ready("ok");
    setenv("WATCHDOG_USEC", "2000000", 1);
    ServiceNotifier w;
    CHECK(w.max_wait() == std::chrono::milliseconds(500));
    unsetenv("WATCHDOG_USEC");
}
