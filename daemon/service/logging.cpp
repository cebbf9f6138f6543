#include "service/logging.h"

#include <spdlog/details/null_mutex.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/systemd_sink.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>

#include "util/text.h"

namespace leakwatch {
namespace {

// No lock of its own: the sinks it wraps are the thread-safe (_mt) ones.
class ShownTextSink : public spdlog::sinks::base_sink<spdlog::details::null_mutex> {
  public:
    explicit ShownTextSink(std::shared_ptr<spdlog::sinks::sink> inner) : inner_(std::move(inner)) {}

  protected:
    void sink_it_(const spdlog::details::log_msg& msg) override {
        const std::string_view payload(msg.payload.data(), msg.payload.size());
        if (is_shown_text(payload, kMaxShownLog)) {
            inner_->log(msg);
            return;
        }
        const std::string shown = shown_text(payload, kMaxShownLog);
        spdlog::details::log_msg copy(msg);
        copy.payload = shown;
        inner_->log(copy);
    }
    void flush_() override { inner_->flush(); }
    void set_pattern_(const std::string& pattern) override { inner_->set_pattern(pattern); }
    void set_formatter_(std::unique_ptr<spdlog::formatter> formatter) override {
        inner_->set_formatter(std::move(formatter));
    }

  private:
    std::shared_ptr<spdlog::sinks::sink> inner_;
};

}  // namespace

std::shared_ptr<spdlog::sinks::sink> shown_text_sink(std::shared_ptr<spdlog::sinks::sink> inner) {
    return std::make_shared<ShownTextSink>(std::move(inner));
}

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
        logger = std::make_shared<spdlog::logger>("leakwatchd", shown_text_sink(sink));
    } else {
        auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
        logger = std::make_shared<spdlog::logger>("leakwatchd", shown_text_sink(sink));
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
