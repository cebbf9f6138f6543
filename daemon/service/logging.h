// Logging: to the journal with structured fields when stderr is connected to it (as under
// systemd), otherwise to stderr; and warnings that would repeat, rate-limited.
#pragma once

#include <spdlog/sinks/sink.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>

namespace leakwatch {

// True when $JOURNAL_STREAM names the device and inode of our stderr.
bool stderr_is_journal();
void setup_logging(const std::string& level);

// A sink that passes every message on to `inner` as shown text (util/text.h): the names of
// watched processes and of their files reach log lines, and may hold any bytes (a newline
// would forge a line, an escape sequence would drive a terminal).
std::shared_ptr<spdlog::sinks::sink> shown_text_sink(std::shared_ptr<spdlog::sinks::sink> inner);

// Lets a message with the same key through at most once per period, and says how many were
// held back in between.
class RateLimiter {
  public:
    explicit RateLimiter(std::chrono::seconds period = std::chrono::seconds(60))
        : period_(period) {}
    // Returns the number of suppressed messages + 1 when this one may be logged, 0 otherwise.
    uint64_t allow(const std::string& key);

  private:
    struct Slot {
        std::chrono::steady_clock::time_point last;
        uint64_t suppressed = 0;
    };
    std::chrono::seconds period_;
    std::map<std::string, Slot> slots_;
};

// Logs at `level` through the limiter, appending "(N similar messages suppressed)".
template <class... Args>
void log_limited(RateLimiter& limiter, const std::string& key, spdlog::level::level_enum level,
                 spdlog::format_string_t<Args...> fmt, Args&&... args) {
    uint64_t n = limiter.allow(key);
    if (n == 0) return;
    std::string message = fmt::format(fmt, std::forward<Args>(args)...);
    if (n > 1) message += fmt::format(" ({} similar messages suppressed)", n - 1);
    spdlog::log(level, "{}", message);
}

}  // namespace leakwatch
