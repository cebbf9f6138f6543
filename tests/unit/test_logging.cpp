// The log rate limiter, and telling the journal from a plain stderr (service/logging.cpp).
#include <spdlog/sinks/ostream_sink.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <sstream>
#include <thread>

#include "service/logging.h"

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

TEST_CASE("log lines carry names as shown text, whatever their bytes", "[service]") {
    std::ostringstream out;
    auto inner = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
    spdlog::logger logger("test", shown_text_sink(inner));
    logger.set_pattern("%l %v");
    logger.info("watching pid {} ({})", 42, "\xff\xfeleak\nforged line");
    logger.info("plain {}", "leak_steady");
    CHECK(out.str() ==
          "info watching pid 42 (\xef\xbf\xbd\xef\xbf\xbdleak\xef\xbf\xbd"
          "forged line)\ninfo plain leak_steady\n");
}
