#include "service/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/systemd_sink.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>

namespace leakwatch {

bool stderr_is_journal() {
    const char* stream = std::getenv("JOURNAL_STREAM");
    if (!stream) return false;
    unsigned long long dev = 0, ino = 0;
    if (std::sscanf(stream, "%llu:%llu", &dev, &ino) != 2) return false;
    struct stat st {};
    if (fstat(2, &st) != 0) return false;
    return st.st_dev == dev && st.st_ino == ino;
}

void setup_logging(const std::string& level) {
    std::shared_ptr<spdlog::logger> logger;
    if (stderr_is_journal()) {
        // PRIORITY, SYSLOG_IDENTIFIER, CODE_FILE/LINE/FUNC as journal fields; the journal keeps
        // its own timestamps, so the message is the text alone.
        auto sink = std::make_shared<spdlog::sinks::systemd_sink_mt>("leakwatchd");
        logger = std::make_shared<spdlog::logger>("leakwatchd", sink);
    } else {
        logger = spdlog::stderr_color_mt("leakwatchd");
        logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
    }
    spdlog::set_default_logger(logger);
    spdlog::set_level(spdlog::level::from_str(level));
}

uint64_t RateLimiter::allow(const std::string& key) {
    auto now = std::chrono::steady_clock::now();
    auto [it, fresh] = slots_.try_emplace(key);
    Slot& slot = it->second;
    if (!fresh && now - slot.last < period_) {
        slot.suppressed++;
        return 0;
    }
    uint64_t n = slot.suppressed + 1;
    slot.last = now;
    slot.suppressed = 0;
    return n;
}

}  // namespace leakwatch
