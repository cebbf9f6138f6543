// Detector tests: synthetic series of outstanding bytes, sampled every 1 s or 5 s with seeded
// noise, fed through the real Detector round by round. Leaks must be flagged about one window
// after they start; caches, churn, steps and sawtooths never.
#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "detect/detector.h"

using namespace leakwatch;
using namespace std::chrono_literals;

namespace {

constexpr double KiB = 1024, MiB = 1024 * 1024;
constexpr double kEpoch = 1.7e9;  // unix seconds of the first sample
constexpr double kWindow = 600;   // the default window, in seconds

// Time between two judgements of a series: one per history point (kWindowPoints a window),
// or one per sample when samples are sparser.
double judgement(double interval, double window = kWindow) {
    return std::max(interval, window / Detector::kWindowPoints);
}

// Latest time a leak may be flagged after it starts: the window, a bucket for the window's
// start to fall on, kConfirm judgements and one more for rounding.
double latest_flag(double interval, double window = kWindow) {
    return window + (Detector::kConfirm + 2) * judgement(interval, window);
}

// Bytes at `t` seconds after the first sample, without noise. Called in time order, so a
// pattern may keep state (slow churn).
using Pattern = std::function<double(double)>;

struct Run {
    std::vector<double> times;  // seconds since the first sample
    std::vector<Verdict> verdicts;

    // Seconds since the first sample when first suspected, or -1.
    double first_flag(double from = 0) const {
        for (size_t i = 0; i < times.size(); i++)
            if (times[i] >= from && verdicts[i].suspected) return times[i];
        return -1;
    }
    bool flagged_between(double from, double to) const {
        for (size_t i = 0; i < times.size(); i++)
            if (times[i] >= from && times[i] < to && verdicts[i].suspected) return true;
        return false;
    }
    const Verdict& last() const { return verdicts.back(); }
};

struct Sim {
    LeakDetection config;
    double interval = 1;
    double duration = 4 * kWindow;
    double noise = 0;  // Gaussian sigma of each sample, bytes
    uint64_t seed = 1;
};

Run simulate(const Sim& sim, const Pattern& pattern) {
    Detector d(sim.config);
    std::mt19937_64 rng(sim.seed);
    std::normal_distribution<double> gauss(0, 1);
    Run run;
    for (double t = 0; t <= sim.duration; t += sim.interval) {
        double bytes = std::max(0.0, std::round(pattern(t) + sim.noise * gauss(rng)));
        d.observe("1/1/7", kEpoch + t, bytes);
        d.evaluate(kEpoch + t);
        run.times.push_back(t);
        run.verdicts.push_back(*d.verdict("1/1/7"));
    }
    return run;
}

Pattern leak(double rate, double start = 0, double base = 64 * MiB) {
    return [=](double t) { return base + rate * std::max(0.0, t - start); };
}

Pattern sawtooth(double period, double amplitude, double base = 64 * MiB) {
    return [=](double t) { return base + amplitude * std::fmod(t, period) / period; };
}

// A level that wanders: an AR(1) process with correlation time `tau` and stationary `sigma`,
// such as a cache whose occupancy follows the load.
Pattern slow_churn(double level, double sigma, double tau, double interval, uint64_t seed) {
    auto rng = std::make_shared<std::mt19937_64>(seed);
    auto x = std::make_shared<double>(0);
    double a = std::exp(-interval / tau), kick = sigma * std::sqrt(1 - a * a);
    return [=](double) {
        *x = a * *x + kick * std::normal_distribution<double>(0, 1)(*rng);
        return level + *x;
    };
}

}  // namespace

TEST_CASE("steady leaks are flagged about one window after they start, with their rate") {
    Sim sim;
    sim.interval = GENERATE(1.0, 5.0);
    sim.noise = 32 * KiB;
    sim.seed = GENERATE(1, 2, 3);
    double rate = GENERATE(4 * KiB, 64 * KiB, 1 * MiB);
    CAPTURE(sim.interval, sim.seed, rate);

    Run run = simulate(sim, leak(rate));
    double flagged = run.first_flag();
    REQUIRE(flagged > 0);
    CHECK(flagged >= kWindow);
    CHECK(flagged <= latest_flag(sim.interval));
    CHECK(run.last().suspected);
    CHECK(run.last().enough_history);
    CHECK(run.last().flagged_since == kEpoch + flagged);
    CHECK(run.last().rate == Approx(rate).epsilon(0.10));
    // Once flagged it stays flagged: no flapping on noise.
    for (size_t i = 0; i < run.times.size(); i++)
        if (run.times[i] >= flagged) REQUIRE(run.verdicts[i].suspected);
}

TEST_CASE("a leak that starts in a long-followed series is flagged within a window") {
    Sim sim;
    sim.interval = GENERATE(1.0, 5.0);
    sim.noise = 32 * KiB;
    sim.duration = 5 * kWindow;
    double start = 2 * kWindow;
    Run run = simulate(sim, leak(16 * KiB, start));
    CHECK_FALSE(run.flagged_between(0, start));
    double flagged = run.first_flag();
    REQUIRE(flagged > start);
    CHECK(flagged - start <= latest_flag(sim.interval));
}

TEST_CASE("history is reported only once the window is covered") {
    Sim sim;
    sim.interval = GENERATE(1.0, 5.0);
    sim.duration = 2 * kWindow;
    Run run = simulate(sim, leak(64 * KiB));
    for (size_t i = 0; i < run.times.size(); i++) {
        if (run.times[i] < kWindow) {
            REQUIRE_FALSE(run.verdicts[i].enough_history);
            REQUIRE(run.verdicts[i].rate == 0);
            REQUIRE_FALSE(run.verdicts[i].suspected);
        }
    }
    CHECK(run.last().enough_history);
}

TEST_CASE("sparse samples: verdicts need kMinPoints samples in a window") {
    Sim sim;
    sim.noise = 32 * KiB;
    sim.duration = 4 * kWindow;
    SECTION("every 30 s: 20 samples a window") {
        sim.interval = 30;
        Run run = simulate(sim, leak(16 * KiB));
        double flagged = run.first_flag();
        REQUIRE(flagged > 0);
        CHECK(flagged <= latest_flag(sim.interval));
        CHECK(run.last().rate == Approx(16 * KiB).epsilon(0.10));
    }
    SECTION("every 60 s: 10 samples a window, never enough") {
        sim.interval = 60;
        Run run = simulate(sim, leak(16 * KiB));
        CHECK(run.first_flag() < 0);
        CHECK_FALSE(run.last().enough_history);
    }
}

TEST_CASE("a slow leak over a long window and a fast one over a short window are flagged") {
    Sim sim;
    sim.interval = GENERATE(1.0, 5.0);
    sim.noise = 2 * KiB;
    SECTION("128 B/s over an hour") {
        sim.config.window = 1h;
        sim.config.min_rate = 64;
        sim.config.min_growth = 256 * 1024;
        sim.duration = 2.5 * 3600;
        Run run = simulate(sim, leak(128));
        double flagged = run.first_flag();
        REQUIRE(flagged > 0);
        CHECK(flagged <= latest_flag(sim.interval, 3600));
        CHECK(run.last().rate == Approx(128).epsilon(0.10));
    }
    SECTION("4 MiB/s over two minutes") {
        sim.config.window = 2min;
        sim.duration = 600;
        Run run = simulate(sim, leak(4 * MiB));
        double flagged = run.first_flag();
        REQUIRE(flagged > 0);
        CHECK(flagged <= latest_flag(sim.interval, 120));
        CHECK(run.last().rate == Approx(4 * MiB).epsilon(0.10));
    }
}

TEST_CASE("a cache that fills and plateaus is never flagged, not even while warming up") {
    Sim sim;
    sim.interval = GENERATE(1.0, 5.0);
    sim.noise = 64 * KiB;
    sim.duration = 5 * kWindow;
    sim.seed = GENERATE(1, 2, 3);
    double capacity = 256 * MiB;
    SECTION("linear fill over half the window") {
        Run run = simulate(
            sim, [=](double t) { return 32 * MiB + capacity * std::min(1.0, t / (kWindow / 2)); });
        CHECK(run.first_flag() < 0);
    }
    SECTION("linear fill over three quarters of the window") {
        Run run = simulate(sim, [=](double t) {
            return 32 * MiB + capacity * std::min(1.0, t / (kWindow * 0.75));
        });
        CHECK(run.first_flag() < 0);
    }
    SECTION("fill with diminishing misses (time constant a third of the window)") {
        Run run = simulate(sim, [=](double t) {
            return 32 * MiB + capacity * (1 - std::exp(-t / (kWindow / 3)));
        });
        CHECK(run.first_flag() < 0);
    }
    SECTION("fill after 20 minutes of idle, in an established series") {
        Run run = simulate(sim, [=](double t) {
            double x = std::clamp((t - 2 * kWindow) / (kWindow / 2), 0.0, 1.0);
            return 32 * MiB + capacity * x;
        });
        CHECK(run.first_flag() < 0);
    }
}

TEST_CASE("churn around a level is never flagged") {
    Sim sim;
    sim.interval = GENERATE(1.0, 5.0);
    sim.duration = 6 * kWindow;
    sim.seed = GENERATE(1, 2, 3, 4);
    SECTION("independent noise") {
        sim.noise = 4 * MiB;
        Run run = simulate(sim, [](double) { return 512 * MiB; });
        CHECK(run.first_flag() < 0);
    }
    SECTION("a level that wanders over minutes") {
        sim.noise = 256 * KiB;
        Run run = simulate(
            sim, slow_churn(512 * MiB, 8 * MiB, kWindow / 4, sim.interval, sim.seed + 100));
        CHECK(run.first_flag() < 0);
    }
}

TEST_CASE("a one-time step is never flagged") {
    Sim sim;
    sim.interval = GENERATE(1.0, 5.0);
    sim.noise = 256 * KiB;
    sim.duration = 5 * kWindow;
    sim.seed = GENERATE(1, 2, 3);
    double at = GENERATE(30.0, 2 * kWindow);
    double height = GENERATE(4 * MiB, 200 * MiB);
    CAPTURE(at, height);
    Run run = simulate(sim, [=](double t) { return 16 * MiB + (t >= at ? height : 0); });
    CHECK(run.first_flag() < 0);
}

TEST_CASE("a sawtooth is never flagged") {
    Sim sim;
    sim.interval = GENERATE(1.0, 5.0);
    sim.noise = 128 * KiB;
    sim.seed = GENERATE(1, 2);
    double amplitude = 64 * MiB;
    SECTION("periods shorter than the window") {
        double period = GENERATE(kWindow / 6, kWindow / 2, kWindow * 0.9);
        CAPTURE(period);
        sim.duration = 6 * kWindow;
        Run run = simulate(sim, sawtooth(period, amplitude));
        CHECK(run.first_flag() < 0);
    }
    SECTION("periods longer than the window, once it has released") {
        // Until its first release, a ramp longer than the window is a leak as far as any
        // detector can tell (docs/detection.md); every later cycle is recognised.
        double period = GENERATE(kWindow * 1.5, kWindow * 3);
        CAPTURE(period);
        sim.duration = 4 * period;
        Run run = simulate(sim, sawtooth(period, amplitude));
        double released = period + 4 * judgement(sim.interval);
        for (size_t i = 0; i < run.times.size(); i++)
            if (run.times[i] >= released && run.verdicts[i].suspected) FAIL(run.times[i]);
    }
}

TEST_CASE("a leak that stops is cleared with hysteresis") {
    Sim sim;
    sim.interval = GENERATE(1.0, 5.0);
    sim.noise = 32 * KiB;
    sim.duration = 5 * kWindow;
    double stop = 2 * kWindow;
    SECTION("and keeps what it leaked") {
        Run run = simulate(sim, [=](double t) { return 64 * MiB + 64 * KiB * std::min(t, stop); });
        REQUIRE(run.first_flag() > 0);
        REQUIRE(run.first_flag() < stop);
        // Still flagged just after: one flat sample must not clear it.
        CHECK(run.flagged_between(stop, stop + 30));
        double cleared = -1;
        for (size_t i = 0; i < run.times.size(); i++)
            if (run.times[i] > stop && !run.verdicts[i].suspected && cleared < 0)
                cleared = run.times[i];
        REQUIRE(cleared > 0);
        CHECK(cleared - stop <= kWindow / 2);
        CHECK_FALSE(run.flagged_between(cleared, sim.duration + 1));
        CHECK(run.last().flagged_since == 0);
    }
    SECTION("and frees it: cleared at once") {
        Run run =
            simulate(sim, [=](double t) { return t < stop ? 64 * MiB + 64 * KiB * t : 64 * MiB; });
        REQUIRE(run.first_flag() > 0);
        CHECK_FALSE(run.flagged_between(stop + 4 * judgement(sim.interval), sim.duration + 1));
    }
}

TEST_CASE("growth slower than min_rate or smaller than min_growth is never flagged") {
    Sim sim;
    sim.interval = GENERATE(1.0, 5.0);
    sim.noise = 2 * KiB;
    sim.duration = 4 * kWindow;
    SECTION("below min_rate") {
        sim.config.min_growth = 64 * 1024;
        Run run = simulate(sim, leak(800));
        CHECK(run.first_flag() < 0);
        CHECK(run.last().rate == Approx(800).epsilon(0.10));
    }
    SECTION("below min_growth over the window") {
        Run run = simulate(sim, leak(1.5 * KiB));  // 0.9 MiB per 10 min
        CHECK(run.first_flag() < 0);
    }
}

TEST_CASE("a leak on top of churn is flagged") {
    Sim sim;
    sim.interval = GENERATE(1.0, 5.0);
    sim.seed = GENERATE(1, 2, 3);
    sim.duration = 3 * kWindow;
    SECTION("independent noise") {
        sim.noise = 4 * MiB;
        Run run = simulate(sim, leak(32 * KiB, 0, 512 * MiB));
        double flagged = run.first_flag();
        REQUIRE(flagged > 0);
        CHECK(flagged <= kWindow * 1.3);
        CHECK(run.last().suspected);
        CHECK(run.last().rate == Approx(32 * KiB).epsilon(0.25));
    }
    SECTION("a sawtooth whose peaks keep growing") {
        sim.noise = 128 * KiB;
        // Each cycle's peak is 6 MiB above the last: more than the bucket sampling blurs it.
        auto saw = sawtooth(kWindow / 6, 32 * MiB);
        Run run = simulate(sim, [=](double t) { return saw(t) + 64 * KiB * t; });
        double flagged = run.first_flag();
        REQUIRE(flagged > 0);
        CHECK(flagged <= kWindow * 1.3);
        CHECK(run.last().suspected);
        CHECK(run.last().rate == Approx(64 * KiB).epsilon(0.25));
    }
    SECTION("spikes of temporary allocations") {
        sim.noise = 32 * KiB;
        Run run = simulate(sim, [](double t) {
            return 64 * MiB + 16 * KiB * t + (std::fmod(t, 97) < 5 ? 100 * MiB : 0);
        });
        double flagged = run.first_flag();
        REQUIRE(flagged > 0);
        CHECK(flagged <= latest_flag(sim.interval));
        CHECK(run.last().suspected);
    }
}

TEST_CASE("max_series bounds the series followed and counts the refused") {
    LeakDetection config;
    config.max_series = 3;
    Detector d(config);
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 5; i++) d.observe("1/1/" + std::to_string(i), kEpoch + round, 100);
        d.evaluate(kEpoch + round);
    }
    CHECK(d.series() == 3);
    CHECK(d.dropped_series() == 4);
    CHECK(d.verdict("1/1/0"));
    CHECK_FALSE(d.verdict("1/1/4"));

    // Room made by a series going away is taken by the next newcomer.
    d.forget_prefix("1/1/0");
    d.observe("1/1/4", kEpoch + 2, 100);
    CHECK(d.series() == 3);
    CHECK(d.verdict("1/1/4"));
}

TEST_CASE("forget_prefix drops the series of one process") {
    Detector d(LeakDetection{});
    for (auto key : {"12/1/a", "12/1/b", "123/1/a", "7/1/a"}) d.observe(key, kEpoch, 1);
    d.evaluate(kEpoch);
    d.forget_prefix("12/");
    CHECK(d.series() == 2);
    CHECK_FALSE(d.verdict("12/1/a"));
    CHECK(d.verdict("123/1/a"));
    CHECK(d.verdict("7/1/a"));
}

TEST_CASE("a series not observed for two rounds is forgotten") {
    Detector d(LeakDetection{});
    d.observe("a", kEpoch, 1);
    d.observe("b", kEpoch, 1);
    d.evaluate(kEpoch);
    d.observe("a", kEpoch + 5, 1);
    d.evaluate(kEpoch + 5);
    CHECK(d.verdict("b"));  // one missed round: a late read, not an exit
    d.observe("a", kEpoch + 10, 1);
    d.evaluate(kEpoch + 10);
    CHECK_FALSE(d.verdict("b"));
    CHECK(d.verdict("a"));
    CHECK(d.series() == 1);
}

TEST_CASE("reconfigure keeps the history") {
    LeakDetection config;
    Detector d(config);
    double t = 0;
    auto feed = [&](double seconds) {
        for (double end = t + seconds; t < end; t += 1) {
            d.observe("k", kEpoch + t, 64 * MiB + 32 * KiB * t);
            d.observe("flat", kEpoch + t, 64 * MiB);
            d.evaluate(kEpoch + t);
        }
    };
    feed(1.2 * kWindow);
    REQUIRE(d.verdict("k")->suspected);

    config.min_rate = 64 * KiB;  // above the leak's rate: cleared after kClear judgements
    d.reconfigure(config);
    feed((Detector::kClear + 1) * judgement(1));
    CHECK_FALSE(d.verdict("k")->suspected);
    CHECK(d.verdict("k")->enough_history);

    // Back to the defaults: flagged again after kConfirm judgements, not a new window.
    d.reconfigure(LeakDetection{});
    feed((Detector::kConfirm + 1) * judgement(1));
    CHECK(d.verdict("k")->suspected);

    // A shorter window regrids the buckets but keeps the points.
    config = LeakDetection{};
    config.window = 5min;
    d.reconfigure(config);
    feed(30);
    CHECK(d.verdict("k")->enough_history);
    CHECK(d.verdict("k")->suspected);
    CHECK(d.verdict("k")->rate == Approx(32 * KiB).epsilon(0.05));

    // A lower bound applies at once, and keeps the suspects.
    config.max_series = 1;
    d.reconfigure(config);
    CHECK(d.series() == 1);
    CHECK(d.verdict("k"));
    config.max_series = 0;
    d.reconfigure(config);
    CHECK(d.series() == 0);

    config.max_series = 10;
    config.enabled = false;
    d.reconfigure(config);
    d.observe("k", kEpoch + t, 1);
    d.evaluate(kEpoch + t);
    CHECK(d.series() == 0);
}

TEST_CASE("saved history restores into a new detector, which flags as the old one would",
          "[restart]") {
    // Two detectors see the same leak; one is replaced half-way by a detector restored from its
    // saved state, after a gap of 20 s without samples (the daemon down). It flags the leak no
    // later than the one that ran on, within a judgement.
    LeakDetection config;
    Detector steady(config);
    auto restarted = std::make_unique<Detector>(config);
    auto bytes = [](double t) { return 64 * MiB + 32 * KiB * t; };
    double flagged_steady = -1, flagged_restarted = -1;
    for (double t = 0; t <= 1.5 * kWindow; t += 1) {
        if (t == 300) {
            std::string saved = restarted->save();
            restarted = std::make_unique<Detector>(config);
            auto n = restarted->restore(saved);
            REQUIRE(n);
            CHECK(*n == 2);
        }
        for (Detector* d : {&steady, restarted.get()}) {
            if (d == restarted.get() && t > 300 && t < 320) continue;  // down for 20 s
            d->observe("leak", kEpoch + t, bytes(t));
            d->observe("flat", kEpoch + t, 64 * MiB);
            d->evaluate(kEpoch + t);
        }
        if (flagged_steady < 0 && steady.verdict("leak")->suspected) flagged_steady = t;
        if (flagged_restarted < 0 && restarted->verdict("leak") &&
            restarted->verdict("leak")->suspected)
            flagged_restarted = t;
    }
    REQUIRE(flagged_steady > 0);
    REQUIRE(flagged_restarted > 0);
    CHECK(flagged_restarted <= flagged_steady + judgement(1));
    CHECK_FALSE(restarted->verdict("flat")->suspected);
    CHECK(restarted->verdict("leak")->rate == Approx(32 * KiB).epsilon(0.05));
}

TEST_CASE("a state of another version or damaged is refused whole", "[restart]") {
    Detector d(LeakDetection{});
    for (double t = 0; t < 100; t += 1) {
        d.observe("a", kEpoch + t, t);
        d.evaluate(kEpoch + t);
    }
    std::string saved = d.save();
    Detector fresh(LeakDetection{});
    CHECK_FALSE(fresh.restore(saved.substr(0, saved.size() - 3)));
    CHECK_FALSE(fresh.restore(saved + "x"));
    std::string other = saved;
    other[8] ^= 0x7f;  // the version
    CHECK_FALSE(fresh.restore(other));
    CHECK_FALSE(fresh.restore("garbage"));
    CHECK(fresh.series() == 0);
    REQUIRE(fresh.restore(saved));
    CHECK(fresh.series() == 1);
}

// Detection latency against leak rate, and false positives on the distractors, over many
// seeds: the figures in docs/detection.md. Run with: unit_detect '[.latency]'
TEST_CASE("detection latency and false positives", "[.latency]") {
    constexpr int kSeeds = 10;
    // Latency from the leak's start to the flag, over kSeeds noise seeds.
    auto latency_row = [](Sim sim, double rate, double start, const char* note) {
        std::vector<double> lat;
        double err = 0;
        for (int seed = 1; seed <= kSeeds; seed++) {
            sim.seed = seed;
            Run run = simulate(sim, leak(rate, start, 512 * MiB));
            double f = run.first_flag();
            if (f < 0) continue;
            lat.push_back(f - start);
            err = std::max(err, std::abs(run.last().rate / rate - 1));
        }
        std::sort(lat.begin(), lat.end());
        double window = std::chrono::duration<double>(sim.config.window).count();
        auto bytes = [](double b) {
            char buf[32];
            if (b >= MiB)
                std::snprintf(buf, sizeof buf, "%g MiB", b / MiB);
            else if (b >= KiB)
                std::snprintf(buf, sizeof buf, "%g KiB", b / KiB);
            else
                std::snprintf(buf, sizeof buf, "%g B", b);
            return std::string(buf);
        };
        std::printf("| %s | %g min | %g s | %s | %s/s | %.1f MiB | ", note, window / 60,
                    sim.interval, bytes(sim.noise).c_str(), bytes(rate).c_str(),
                    rate * window / MiB);
        if (lat.empty())
            std::printf("never | | 0/%d | |\n", kSeeds);
        else
            std::printf("%.0f s (%.2f W) | %.0f s | %zu/%d | %.1f%% |\n", lat[lat.size() / 2],
                        lat[lat.size() / 2] / window, lat.back(), lat.size(), kSeeds, 100 * err);
    };
    std::printf(
        "\n| case | window | interval | noise (sigma/sample) | leak rate | growth/window |"
        " median latency | max latency | flagged | max rate error |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
    for (double interval : {5.0, 1.0}) {
        for (double rate : {4 * MiB, 1 * MiB, 256 * KiB, 64 * KiB, 16 * KiB, 4 * KiB, 2 * KiB,
                            1.8 * KiB, 1.5 * KiB}) {
            Sim sim;
            sim.interval = interval;
            sim.noise = 32 * KiB;
            sim.duration = 3 * kWindow;
            latency_row(sim, rate, 0,
                        rate < 1.7 * KiB ? "below min_growth per window" : "defaults");
        }
    }
    for (double rate : {256 * KiB, 64 * KiB, 32 * KiB, 16 * KiB, 8 * KiB, 4 * KiB}) {
        Sim sim;
        sim.interval = 5;
        sim.noise = 4 * MiB;
        sim.duration = 3 * kWindow;
        latency_row(sim, rate, 0, "on churn");
    }
    for (double rate : {4 * MiB, 64 * KiB, 4 * KiB}) {
        Sim sim;
        sim.interval = 1;
        sim.noise = 32 * KiB;
        sim.config.window = 2min;
        sim.duration = 10 * 60;
        latency_row(sim, rate, 0,
                    rate * 120 < MiB ? "below min_growth per window" : "short window");
    }
    for (double rate : {4 * KiB, 1 * KiB, 256.0, 128.0}) {
        Sim sim;
        sim.interval = 5;
        sim.noise = 2 * KiB;
        sim.config.window = 1h;
        sim.config.min_rate = 64;
        sim.config.min_growth = 256 * 1024;
        sim.duration = 3 * 3600;
        latency_row(sim, rate, 0, "long window, min_rate 64 B/s, min_growth 256 KiB");
    }
    for (double interval : {5.0, 1.0}) {
        for (double rate : {1 * MiB, 64 * KiB, 4 * KiB}) {
            Sim sim;
            sim.interval = interval;
            sim.noise = 32 * KiB;
            sim.duration = 4 * kWindow;
            latency_row(sim, rate, 2 * kWindow, "starts after 2 windows of history");
        }
    }

    // Time from a leak's end to the verdict's clearing.
    std::printf("\n| leak of 64 KiB/s ends after 2 W | interval | median clear delay | max |\n");
    std::printf("|---|---|---|---|\n");
    for (bool frees : {false, true}) {
        for (double interval : {5.0, 1.0}) {
            std::vector<double> delays;
            double stop = 2 * kWindow;
            for (int seed = 1; seed <= kSeeds; seed++) {
                Sim sim;
                sim.interval = interval;
                sim.noise = 32 * KiB;
                sim.duration = 4 * kWindow;
                sim.seed = seed;
                Run run = simulate(sim, [=](double t) {
                    if (frees && t >= stop) return 64 * MiB;
                    return 64 * MiB + 64 * KiB * std::min(t, stop);
                });
                for (size_t i = 0; i < run.times.size(); i++) {
                    if (run.times[i] > stop && !run.verdicts[i].suspected) {
                        delays.push_back(run.times[i] - stop);
                        break;
                    }
                }
            }
            std::sort(delays.begin(), delays.end());
            std::printf("| %s | %g s | %.0f s | %.0f s |\n",
                        frees ? "and frees what it leaked" : "and keeps what it leaked", interval,
                        delays[delays.size() / 2], delays.back());
        }
    }

    struct Distractor {
        const char* name;
        double noise;
        double duration;
        std::function<Pattern(double interval, uint64_t seed)> make;
    };
    const double cap = 256 * MiB;
    std::vector<Distractor> distractors = {
        {"cache, linear fill over W/2", 64 * KiB, 6 * kWindow,
         [=](double, uint64_t) {
             return [=](double t) { return 32 * MiB + cap * std::min(1.0, t / (kWindow / 2)); };
         }},
        {"cache, linear fill over 3W/4", 64 * KiB, 6 * kWindow,
         [=](double, uint64_t) {
             return [=](double t) { return 32 * MiB + cap * std::min(1.0, t / (kWindow * .75)); };
         }},
        {"cache, linear fill over 0.85 W", 64 * KiB, 6 * kWindow,
         [=](double, uint64_t) {
             return [=](double t) { return 32 * MiB + cap * std::min(1.0, t / (kWindow * .85)); };
         }},
        {"cache, linear fill over W (limit)", 64 * KiB, 6 * kWindow,
         [=](double, uint64_t) {
             return [=](double t) { return 32 * MiB + cap * std::min(1.0, t / kWindow); };
         }},
        {"cache, exponential fill, tau W/4", 64 * KiB, 6 * kWindow,
         [=](double, uint64_t) {
             return [=](double t) { return 32 * MiB + cap * (1 - std::exp(-t / (kWindow / 4))); };
         }},
        {"cache, exponential fill, tau W/3", 64 * KiB, 6 * kWindow,
         [=](double, uint64_t) {
             return [=](double t) { return 32 * MiB + cap * (1 - std::exp(-t / (kWindow / 3))); };
         }},
        {"cache, exponential fill, tau W/2", 64 * KiB, 6 * kWindow,
         [=](double, uint64_t) {
             return [=](double t) { return 32 * MiB + cap * (1 - std::exp(-t / (kWindow / 2))); };
         }},
        {"cache, exponential fill, tau W (limit)", 64 * KiB, 8 * kWindow,
         [=](double, uint64_t) {
             return [=](double t) { return 32 * MiB + cap * (1 - std::exp(-t / kWindow)); };
         }},
        {"churn, independent, sigma 4 MiB", 4 * MiB, 12 * kWindow,
         [](double, uint64_t) { return [](double) { return 512 * MiB; }; }},
        {"churn, wandering level, sigma 8 MiB, tau W/4", 256 * KiB, 12 * kWindow,
         [](double interval, uint64_t seed) {
             return slow_churn(512 * MiB, 8 * MiB, kWindow / 4, interval, seed + 100);
         }},
        {"churn, wandering level, sigma 8 MiB, tau W (limit)", 256 * KiB, 12 * kWindow,
         [](double interval, uint64_t seed) {
             return slow_churn(512 * MiB, 8 * MiB, kWindow, interval, seed + 100);
         }},
        {"step at start-up, 200 MiB", 256 * KiB, 6 * kWindow,
         [](double, uint64_t) {
             return [](double t) { return 16 * MiB + (t >= 30 ? 200 * MiB : 0); };
         }},
        {"step after 2 W, 4 MiB", 256 * KiB, 6 * kWindow,
         [](double, uint64_t) {
             return [](double t) { return 16 * MiB + (t >= 2 * kWindow ? 4 * MiB : 0); };
         }},
        {"two steps W/2 apart, 16 MiB each", 256 * KiB, 6 * kWindow,
         [](double, uint64_t) {
             return [](double t) {
                 return 16 * MiB + (t >= 2 * kWindow ? 16 * MiB : 0) +
                        (t >= 2.5 * kWindow ? 16 * MiB : 0);
             };
         }},
        {"sawtooth, period W/6", 128 * KiB, 8 * kWindow,
         [](double, uint64_t) { return sawtooth(kWindow / 6, 64 * MiB); }},
        {"sawtooth, period W/2", 128 * KiB, 8 * kWindow,
         [](double, uint64_t) { return sawtooth(kWindow / 2, 64 * MiB); }},
        {"sawtooth, period 0.9 W", 128 * KiB, 8 * kWindow,
         [](double, uint64_t) { return sawtooth(kWindow * .9, 64 * MiB); }},
        {"sawtooth, period 1.5 W, after its first release", 128 * KiB, 9 * kWindow,
         [](double, uint64_t) { return sawtooth(kWindow * 1.5, 64 * MiB); }},
        {"sawtooth, period 3 W, after its first release", 128 * KiB, 12 * kWindow,
         [](double, uint64_t) { return sawtooth(kWindow * 3, 64 * MiB); }},
    };
    std::printf(
        "\n| distractor (10 min window; 1 s and 5 s intervals) | runs | runs flagged |"
        " rounds flagged |\n|---|---|---|---|\n");
    for (const auto& dist : distractors) {
        int runs = 0, flagged = 0;
        long rounds = 0, rounds_flagged = 0;
        double ignore_until = 0;
        if (std::string(dist.name).find("1.5 W") != std::string::npos) ignore_until = 1.5 * kWindow;
        if (std::string(dist.name).find("3 W,") != std::string::npos) ignore_until = 3 * kWindow;
        for (double interval : {1.0, 5.0}) {
            for (int seed = 1; seed <= 2 * kSeeds; seed++) {
                Sim sim;
                sim.interval = interval;
                sim.noise = dist.noise;
                sim.duration = dist.duration;
                sim.seed = seed;
                Run run = simulate(sim, dist.make(interval, seed));
                runs++;
                bool any = false;
                for (size_t i = 0; i < run.times.size(); i++) {
                    if (ignore_until && run.times[i] < ignore_until + 4 * judgement(interval))
                        continue;
                    rounds++;
                    if (run.verdicts[i].suspected) rounds_flagged++, any = true;
                }
                flagged += any;
            }
        }
        std::printf("| %s | %d | %d | %ld of %ld |\n", dist.name, runs, flagged, rounds_flagged,
                    rounds);
    }
}

// Rounds of 10,000 series with full histories. With a window of 64 s sampled every second a
// bucket closes for every series in every round, so every series is judged: the worst case.
// With the defaults (10 min, 5 s) a round judges about half of them. Run with:
// unit_detect '[.perf]'
TEST_CASE("10,000 series in one round", "[.perf]") {
    struct Case {
        const char* name;
        Duration window;
        double interval;
        bool all_leak;
    };
    for (Case c : {Case{"window 64 s, every 1 s, 10% leaking, all judged", 64s, 1, false},
                   Case{"window 64 s, every 1 s, all leaking, all judged", 64s, 1, true},
                   Case{"window 10 min, every 5 s, 10% leaking (defaults)", 10min, 5, false}}) {
        LeakDetection config;
        config.window = c.window;
        if (c.window < 10min) config.min_growth = 1024;  // 4 KiB/s grows 256 KiB in 64 s
        Detector d(config);
        std::mt19937_64 rng(7);
        std::normal_distribution<double> gauss(0, 1);
        std::vector<std::string> keys;
        for (int i = 0; i < 10000; i++)
            keys.push_back(std::to_string(1000 + i / 20) + "/1/" + std::to_string(i % 20));
        auto value = [&](int i, double t) {
            double base = 1 * MiB * (1 + i % 50);
            bool leaking = c.all_leak || i % 10 == 0;
            return base + (leaking ? 4 * KiB * t : 0) + 16 * KiB * gauss(rng);
        };
        // A full look-back of history first.
        double window = std::chrono::duration<double>(c.window).count();
        double t = 0;
        for (; t < (Detector::kLookbackWindows + 1) * window; t += c.interval) {
            for (int i = 0; i < 10000; i++) d.observe(keys[i], kEpoch + t, value(i, t));
            d.evaluate(kEpoch + t);
        }
        using clock = std::chrono::steady_clock;
        // CPU time of this thread as well as wall time: the machine may be busy with others.
        auto cpu_ms = [] {
            timespec ts{};
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
            return double(ts.tv_sec) * 1e3 + double(ts.tv_nsec) / 1e6;
        };
        std::vector<double> ms, cpu;
        std::vector<double> values(keys.size());
        for (int r = 0; r < 20; r++, t += c.interval) {
            for (int i = 0; i < 10000; i++) values[i] = value(i, t);
            auto begin = clock::now();
            double cpu_begin = cpu_ms();
            for (int i = 0; i < 10000; i++) d.observe(keys[i], kEpoch + t, values[i]);
            d.evaluate(kEpoch + t);
            cpu.push_back(cpu_ms() - cpu_begin);
            ms.push_back(std::chrono::duration<double, std::milli>(clock::now() - begin).count());
        }
        size_t suspects = 0;
        for (const auto& k : keys) suspects += d.verdict(k)->suspected;
        std::sort(ms.begin(), ms.end());
        std::sort(cpu.begin(), cpu.end());
        std::printf(
            "10,000 series, %s: wall median %.1f ms, max %.1f ms; CPU median %.1f ms,"
            " max %.1f ms (%zu suspected)\n",
            c.name, ms[ms.size() / 2], ms.back(), cpu[cpu.size() / 2], cpu.back(), suspects);
        CHECK(d.series() == 10000);
        CHECK(suspects == (c.all_leak ? 10000u : 1000u));
    }
}
