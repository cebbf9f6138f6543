// The service manager protocol (sd_notify): READY, RELOADING, STOPPING, STATUS and watchdog
// pings. Without $NOTIFY_SOCKET every call does nothing.
#pragma once

#include <chrono>
#include <string>

namespace leakwatch {

class ServiceNotifier {
  public:
    ServiceNotifier();
    void ready(const std::string& status);
    // RELOADING=1 with MONOTONIC_USEC, as systemd's Type=notify-reload expects; ready() ends it.
    void reloading();
    void stopping();
    void status(const std::string& status);
    // Sends WATCHDOG=1 when half the watchdog period has passed since the last ping. The main
    // loop calls it once per iteration, so a stuck loop stops the pings and systemd acts.
    void keepalive();
    // How long the main loop may block at most, for the pings to go out in time.
    std::chrono::milliseconds max_wait() const;

  private:
    std::chrono::microseconds watchdog_{0};  // 0: no watchdog
    std::chrono::steady_clock::time_point last_ping_{};
};

}  // namespace leakwatch
