// Leak-growth detection: decides from periodic samples of outstanding bytes which series
// (stacks, processes) keep growing. Pure logic: no I/O, no clock, no BPF. docs/detection.md
// explains the method, its parameters and the figures measured.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config/config.h"  // LeakDetection
#include "util/result.h"

namespace leakwatch {

struct Verdict {
    double rate = 0;              // bytes/s, robust slope over the window; 0 until enough history
    bool suspected = false;       // with hysteresis
    double flagged_since = 0;     // unix seconds when it became suspected (0 when not)
    bool enough_history = false;  // the window is covered by samples
};

// Follows many series of outstanding bytes and flags those that leak. Not thread-safe: the
// caller serializes all calls.
class Detector {
  public:
    explicit Detector(LeakDetection config);

    // One sample of one series (key: any string, e.g. "pid/start/stack"). Samples come every
    // `interval` for all series, in time order; t is unix seconds. Returns the series'
    // verdict, which evaluate() updates and which stays valid until the series is forgotten
    // (not observed for 2 rounds, forget_prefix, reconfigure); nullptr when the series is not
    // followed (detection off, or the max_series bound reached).
    const Verdict* observe(const std::string& key, double t, double bytes);
    // Judges the series observed in this round (call once per round, after its observes) and
    // forgets those not observed for 2 rounds (their process exited, their stack is gone).
    void evaluate(double t);

    std::optional<Verdict> verdict(const std::string& key) const;
    void forget_prefix(const std::string& prefix);  // e.g. all series of one pid
    size_t series() const { return series_.size(); }
    uint64_t dropped_series() const { return dropped_; }  // observes refused: max_series
    // Keeps the samples already taken; a disabled detector forgets everything.
    void reconfigure(LeakDetection config);

    // Every series' history and verdict, as bytes for the state directory (versioned), and
    // back: restored series count as observed in the current round and go on from where they
    // were, their buckets on this detector's window. Returns how many series were restored;
    // bytes of another version or damaged are an error, and nothing is restored.
    std::string save() const;
    Result<size_t> restore(std::string_view bytes);

    // The method's fixed constants (docs/detection.md), public for tests.
    static constexpr int kWindowPoints = 64;       // history points per window
    static constexpr int kLookbackWindows = 4;     // history kept, in windows, for releases
    static constexpr int kMinPoints = 16;          // fewer points in a window: no verdict
    static constexpr int kConfirm = 8;             // leak-like judgements in a row to flag
    static constexpr int kClear = 8;               // other judgements in a row to clear
    static constexpr double kQuarterShare = 0.5;   // of the window's rate, for each quarter
    static constexpr double kHalfRatio = 0.5;      // of the first half's rate, for the second
    static constexpr double kReleaseSigmas = 6;    // a release falls by this much noise...
    static constexpr double kReleaseGrowth = 0.5;  // ...and by this share of min_growth

  private:
    // One point of history per bucket of window/kWindowPoints: the mean time and value of its
    // samples, as floats relative to the series' bases (2 KiB for a full history).
    struct Point {
        float t;
        float v;
    };

    struct Series {
        // Closed buckets; the oldest at `head` once full. Reserved whole when the series is
        // created, so that a series costs from its first sample what it will cost.
        std::vector<Point> ring;
        size_t head = 0;
        double t_base = 0, v_base = 0;
        int pushes_since_rebase = 0;
        double phase = 0;  // in buckets: spreads the series' judgements over rounds
        int64_t bucket = 0;
        double sum_t = 0, sum_v = 0;  // of the open bucket, relative to the bases
        uint32_t count = 0;
        double first_t = 0;
        uint64_t last_round = 0;
        bool closed_new = false;  // a bucket closed since the last judgement
        int streak_on = 0, streak_off = 0;
        Verdict verdict;
    };

    void close_bucket(Series& s);
    void judge(Series& s, double now);
    void update_verdict(Series& s, bool leak_like, bool released, double now);
    int64_t bucket_of(const Series& s, double t) const;
    double bucket_width() const;

    LeakDetection config_;
    double z_threshold_ = 0;
    uint64_t round_ = 0;
    uint64_t dropped_ = 0;
    std::unordered_map<std::string, Series> series_;
    // Scratch buffers reused by judge(), so that a round does not allocate.
    std::vector<double> t_, v_, f_, peaks_, troughs_, tmp_;
};

}  // namespace leakwatch
