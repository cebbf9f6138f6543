#include "service/notify.h"

#include <systemd/sd-daemon.h>

#include "util/clock.h"

namespace leakwatch {

ServiceNotifier::ServiceNotifier() {
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) > 0) watchdog_ = std::chrono::microseconds(usec);
}

void ServiceNotifier::ready(const std::string& status) {
    sd_notifyf(0, "READY=1\nSTATUS=%s", status.c_str());
}

void ServiceNotifier::reloading() {
    auto usec = static_cast<unsigned long long>(monotonic_ns() / 1000ull);
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading the configuration", usec);
}

void ServiceNotifier::stopping() {
    sd_notify(0, "STOPPING=1\nSTATUS=stopping: detaching probes");
}

void ServiceNotifier::status(const std::string& status) {
    sd_notifyf(0, "STATUS=%s", status.c_str());
}

void ServiceNotifier::keepalive() {
    if (watchdog_.count() == 0) return;
    auto now = std::chrono::steady_clock::now();
    if (now - last_ping_ < watchdog_ / 2) return;
    sd_notify(0, "WATCHDOG=1");
    last_ping_ = now;
}

std::chrono::milliseconds ServiceNotifier::max_wait() const {
    if (watchdog_.count() == 0) return std::chrono::milliseconds(1000);
    return std::chrono::duration_cast<std::chrono::milliseconds>(watchdog_ / 4);
}

}  // namespace leakwatch
