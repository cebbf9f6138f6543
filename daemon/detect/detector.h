// Leak-growth detection: decides from periodic samples of outstanding bytes which series
// (stacks, processes) keep growing. Pure logic: no I/O, no clock, no BPF. docs/detection.md
// explains the method and its parameters.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "config/config.h"

namespace leakwatch {

// LeakDetection (its parameters) is part of the config: config/config.h.

struct Verdict {
    double rate = 0;  // bytes/s, robust slope over the window; 0 until enough history
    bool suspected = false;
    double flagged_since = 0;  // unix seconds when it became suspected (0 when not)
    bool enough_history = false;  // the window is covered by samples
};

// Not thread-safe: the caller serializes observe/evaluate/queries.
class Detector {
public:
    explicit Detector(LeakDetection config);

    // One sample of one series (key: any string, e.g. "pid/start/stack"). Samples come every
    // `interval` for all series, in time order; t is unix seconds.
    void observe(const std::string& key, double t, double bytes);
    // Judges every series observed in this round (call once per round, after its observes)
    // and forgets series not observed for 2 rounds (their process exited / stack is gone).
    void evaluate(double t);

    std::optional<Verdict> verdict(const std::string& key) const;
    void forget_prefix(const std::string& prefix);
    size_t series() const { return series_.size(); }
    uint64_t dropped_series() const { return dropped_; }
    // Keeps the samples already taken; a disabled detector forgets everything.
    void reconfigure(LeakDetection config);

    // Internal constants, public so that tests and docs/detection.md can refer to them.
    static constexpr int kWindowPoints = 64;     // history points per window
    static constexpr int kLookbackWindows = 4;   // history kept, in windows, for releases
    static constexpr int kMinPoints = 16;        // fewer points in a window: no verdict
    static constexpr int kConfirm = 8;           // leak-like judgements in a row to flag
    static constexpr int kClear = 8;             // other judgements in a row to clear
    static constexpr double kQuarterShare = 0.5;  // of the window's rate, for a quarter
    static constexpr double kHalfRatio = 0.5;     // of the first half's rate, for the second
    static constexpr double kDropSigmas = 6;      // a release is this many noise sigmas...
    static constexpr double kDropGrowth = 0.5;    // ...and this share of min_growth

    // One point of history per bucket of window/kWindowPoints: its mean time and value,
    // relative to the series' bases so that floats keep their precision.
    struct Point {
        float t;
        float v;
    };

private:
    struct Series {
        std::vector<Point> ring;  // closed buckets, oldest at `head` once full
        size_t head = 0;
        double t_base = 0, v_base = 0;
        int pushes_since_rebase = 0;
        double phase = 0;  // in buckets: spreads the bucket ends of series over rounds
        int64_t bucket = 0;
        double sum_t = 0, sum_v = 0;  // open bucket, relative to the bases
        uint32_t count = 0;
        double first_t = 0;
        uint64_t last_round = 0;
        bool closed_new = false;  // a bucket closed since the last judgement
        int streak_on = 0, streak_off = 0;
        Verdict verdict;
    };

    void close_bucket(Series& s);
    void judge(Series& s, double now);
    void update(Series& s, bool leak_like, bool released, double now);
    int64_t bucket_of(const Series& s, double t) const;
    double bucket_width() const;

    LeakDetection config_;
    double z_threshold_ = 0;
    uint64_t round_ = 0;
    uint64_t dropped_ = 0;
    std::unordered_map<std::string, Series> series_;
    // Scratch buffers reused by judge() so that a round does not allocate.
    std::vector<double> t_, v_, f_, peaks_, troughs_, tmp_;
};

}  // namespace leakwatch
