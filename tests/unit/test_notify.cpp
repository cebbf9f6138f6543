// The service manager protocol's behaviour outside systemd (service/notify.cpp).
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>

#include "service/notify.h"

using namespace leakwatch;

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
