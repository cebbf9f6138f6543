#include "detect/detector.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <type_traits>

namespace leakwatch {

namespace {

constexpr size_t kRingCapacity = Detector::kWindowPoints * Detector::kLookbackWindows;

double seconds(Duration d) {
    return std::chrono::duration<double>(d).count();
}

// Reorders b[0..n).
double median(double* b, size_t n) {
    if (n == 0) return 0;
    size_t mid = n / 2;
    std::nth_element(b, b + mid, b + n);
    double hi = b[mid];
    if (n % 2) return hi;
    return (*std::max_element(b, b + mid) + hi) / 2;
}

// z such that P(Z <= z) = p for a standard normal Z.
double normal_quantile(double p) {
    double lo = -10, hi = 10;
    for (int i = 0; i < 100; i++) {
        double mid = (lo + hi) / 2;
        (0.5 * std::erfc(-mid / std::sqrt(2.0)) < p ? lo : hi) = mid;
    }
    return (lo + hi) / 2;
}

// Median of the slopes between points half the window apart: Theil-Sen restricted to one lag.
// It keeps Theil-Sen's robustness (half the pairs may be outliers) and, for a line plus noise,
// its efficiency, at O(n) instead of O(n^2): a round must judge 10,000 series.
double paired_slope(const double* t, const double* y, size_t n, std::vector<double>& tmp) {
    size_t h = n / 2;
    tmp.clear();
    for (size_t i = 0; i + h < n; i++) {
        double dt = t[i + h] - t[i];
        if (dt > 0) tmp.push_back((y[i + h] - y[i]) / dt);
    }
    return median(tmp.data(), tmp.size());
}

// Noise of one point as a Gaussian sigma, from the median absolute second difference: second
// differences cancel a trend, and the median ignores the few large ones that releases and
// steps make. For independent noise they have a sigma of sqrt(6) times the points'.
double noise_sigma(const double* v, size_t n, std::vector<double>& tmp) {
    if (n < 3) return 0;
    tmp.resize(n - 2);
    for (size_t i = 0; i + 2 < n; i++) tmp[i] = std::abs(v[i + 2] - 2 * v[i + 1] + v[i]);
    return median(tmp.data(), tmp.size()) / (0.6745 * std::sqrt(6.0));
}

double median3(double a, double b, double c) {
    return std::max(std::min(a, b), std::min(std::max(a, b), c));
}

// Running median of 5, the window kept inside the series at its ends: a spike of one or two
// points (a large temporary allocation) is not a release, a drop that lasts is.
void median5(const double* v, size_t n, std::vector<double>& out) {
    out.resize(n);
    if (n < 5) {
        std::copy(v, v + n, out.begin());
        return;
    }
    // Of the two pairs (w0,w1) and (w2,w3), the larger minimum and the smaller maximum are
    // the middle two of the four; the median of five is the median of those and w4.
    auto median_at = [](const double* w) {
        double lo = std::max(std::min(w[0], w[1]), std::min(w[2], w[3]));
        double hi = std::min(std::max(w[0], w[1]), std::max(w[2], w[3]));
        return median3(lo, hi, w[4]);
    };
    out[0] = out[1] = median_at(v);
    for (size_t i = 2; i + 2 < n; i++) out[i] = median_at(v + i - 2);
    out[n - 2] = out[n - 1] = median_at(v + n - 5);
}

// Largest fall of the series from an earlier point.
double max_drawdown(const double* v, size_t n) {
    double peak = v[0], fall = 0;
    for (size_t i = 1; i < n; i++) {
        peak = std::max(peak, v[i]);
        fall = std::max(fall, peak - v[i]);
    }
    return fall;
}

// Releases in a smoothed series: falls of at least `size` from its running peak. After one,
// the next counts only once the series has risen by as much again, so that a fall spread over
// several points is one release.
int count_releases(const std::vector<double>& f, double size) {
    int count = 0;
    double peak = f[0], trough = 0;
    bool armed = true;
    for (size_t i = 1; i < f.size(); i++) {
        if (armed && f[i] <= peak - size) {
            count++;
            armed = false;
            trough = f[i];
        } else if (armed) {
            peak = std::max(peak, f[i]);
        } else if (f[i] >= trough + size) {
            armed = true;
            peak = f[i];
        } else {
            trough = std::min(trough, f[i]);
        }
    }
    return count;
}

// Whether the growth is spread over the window and still going: each of its four quarters grows
// at kQuarterShare of `rate` or more, and the second half at kHalfRatio of the first's rate or
// more. A one-time step grows in one or two quarters; a cache that has filled no longer grows
// in the last one; a cache filling with ever fewer misses slows down steadily.
//
// The level at each quarter boundary is the median of the points within an eighth of the
// window of it (the two ends use the first and last eighth), so each quarter's rate rests on a
// quarter of the window's points rather than on a noisier fit of the quarter alone. A running
// maximum (`monotone`) has no noise left to average out and grows in steps, once per cycle: its
// value at each boundary is what counts, not the median around it.
bool growth_spread(const double* t, const double* y, size_t n, double start, double window,
                   double rate, bool monotone, std::vector<double>& tmp) {
    double level[5], at[5];
    if (monotone) {
        size_t j = 0;
        for (int k = 0; k < 5; k++) {
            at[k] = start + k * window / 4;
            while (j + 1 < n && t[j + 1] <= at[k]) j++;
            level[k] = y[j];
        }
    } else {
        constexpr double kEnds[5] = {1 / 8., 3 / 8., 5 / 8., 7 / 8., 2};
        size_t i = 0;
        for (int k = 0; k < 5; k++) {
            double sum_t = 0;
            tmp.clear();
            for (; i < n && t[i] < start + kEnds[k] * window; i++) {
                tmp.push_back(y[i]);
                sum_t += t[i];
            }
            if (tmp.empty()) return false;
            at[k] = sum_t / tmp.size();
            level[k] = median(tmp.data(), tmp.size());
        }
    }
    double first_half = (level[2] - level[0]) / (at[2] - at[0]);
    double second_half = (level[4] - level[2]) / (at[4] - at[2]);
    if (!(second_half >= Detector::kHalfRatio * first_half)) return false;
    for (int q = 0; q < 4; q++) {
        double dt = at[q + 1] - at[q];
        if (!(dt > 0 && (level[q + 1] - level[q]) / dt >= Detector::kQuarterShare * rate))
            return false;
    }
    return true;
}

// Whether the troughs (running minimum back from the newest point) rose over the first half
// and over the middle half of the window. Halves, not quarters: a trough comes once per cycle,
// so a quarter may hold none. The last quarter is left out: its troughs are not known yet.
bool troughs_grow(const double* t, const double* low, size_t n, double start, double window,
                  double rate) {
    double level[4];
    size_t j = 0;
    for (int k = 0; k < 4; k++) {
        while (j + 1 < n && t[j] < start + k * window / 4) j++;
        level[k] = low[j];
    }
    double need = Detector::kQuarterShare * rate * window / 2;
    return level[2] - level[0] >= need && level[3] - level[1] >= need;
}

// Whether one step (two levels) fits the window better than a line, by residual sum of
// squares: a start-up allocation seen from afar, not a steady growth.
bool step_fits_better(const double* t, const double* y, size_t n) {
    double tm = 0, ym = 0;
    for (size_t i = 0; i < n; i++) tm += t[i], ym += y[i];
    tm /= n, ym /= n;
    double stt = 0, sty = 0;
    for (size_t i = 0; i < n; i++) {
        stt += (t[i] - tm) * (t[i] - tm);
        sty += (t[i] - tm) * (y[i] - ym);
    }
    if (stt <= 0) return true;
    // With y centred, the best two-level fit splitting at k explains a_k^2 * n / (k (n-k)),
    // a_k the sum of the first k; the line explains sty^2 / stt.
    double line = sty * sty / stt, step = 0, a = 0;
    for (size_t k = 1; k + 2 <= n; k++) {
        a += y[k - 1] - ym;
        if (k >= 2) step = std::max(step, a * a * double(n) / (double(k) * double(n - k)));
    }
    return step > line;
}

// Mann-Kendall trend statistic as a standard normal score, ties accounted for. A window of
// more than 32 points is first averaged in pairs: the test keeps its power on a trend in noise
// and costs a quarter of the comparisons.
double mann_kendall_z(const double* y, size_t n, std::vector<double>& tmp) {
    if (n > 32) {
        tmp.resize(n / 2);
        for (size_t i = 0; i < n / 2; i++) tmp[i] = (y[2 * i] + y[2 * i + 1]) / 2;
        n /= 2;
    } else {
        tmp.assign(y, y + n);
    }
    const double* x = tmp.data();
    long s = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++) s += (x[j] > x[i]) - (x[j] < x[i]);
    std::sort(tmp.begin(), tmp.end());
    double ties = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && tmp[j] == tmp[i]) j++;
        double g = double(j - i);
        ties += g * (g - 1) * (2 * g + 5);
        i = j;
    }
    double nn = double(n);
    double var = (nn * (nn - 1) * (2 * nn + 5) - ties) / 18;
    if (var <= 0 || s == 0) return 0;
    return double(s > 0 ? s - 1 : s + 1) / std::sqrt(var);
}

// The state file's header, and its version: a change of what save() writes bumps it.
constexpr char kMagic[8] = {'L', 'W', 'D', 'E', 'T', 'E', 'C', 'T'};
constexpr uint32_t kStateVersion = 1;
constexpr size_t kMaxKey = 4096;

// Fixed-size values in the machine's byte order: the file stays on the machine.
class Writer {
  public:
    template <class T>
    requires std::is_trivially_copyable_v<T>
    void put(const T& v) { out_.append(reinterpret_cast<const char*>(&v), sizeof(v)); }
    void put_string(std::string_view s) {
        put(static_cast<uint32_t>(s.size()));
        out_ += s;
    }
    std::string take() { return std::move(out_); }

  private:
    std::string out_;
};

class Reader {
  public:
    explicit Reader(std::string_view in) : in_(in) {}
    template <class T>
    requires std::is_trivially_copyable_v<T>
    bool get(T& v) {
        if (in_.size() < sizeof(v)) return false;
        std::memcpy(&v, in_.data(), sizeof(v));
        in_.remove_prefix(sizeof(v));
        return true;
    }
    bool get_string(std::string& s, size_t max) {
        uint32_t n = 0;
        if (!get(n) || n > max || in_.size() < n) return false;
        s.assign(in_.data(), n);
        in_.remove_prefix(n);
        return true;
    }
    bool done() const { return in_.empty(); }

  private:
    std::string_view in_;
};

}  // namespace

Detector::Detector(LeakDetection config) {
    reconfigure(config);
}

double Detector::bucket_width() const {
    return seconds(config_.window) / kWindowPoints;
}

int64_t Detector::bucket_of(const Series& s, double t) const {
    return static_cast<int64_t>(std::floor(t / bucket_width() - s.phase));
}

const Verdict* Detector::observe(const std::string& key, double t, double bytes) {
    if (!config_.enabled) return nullptr;
    auto it = series_.find(key);
    if (it == series_.end()) {
        if (series_.size() >= config_.max_series) {
            dropped_++;
            return nullptr;
        }
        it = series_.emplace(key, Series{}).first;
        Series& s = it->second;
        s.ring.reserve(kRingCapacity);
        s.t_base = s.first_t = t;
        s.v_base = bytes;
        s.phase = double(std::hash<std::string>{}(key) % 1024) / 1024;
        s.bucket = bucket_of(s, t);
    }
    Series& s = it->second;
    int64_t b = bucket_of(s, t);
    if (b > s.bucket) {
        if (s.count) close_bucket(s);
        s.bucket = b;
    }
    s.sum_t += t - s.t_base;
    s.sum_v += bytes - s.v_base;
    s.count++;
    s.last_round = round_;
    return &s.verdict;
}

void Detector::close_bucket(Series& s) {
    Point p{float(s.sum_t / s.count), float(s.sum_v / s.count)};
    if (s.ring.size() < kRingCapacity) {
        s.ring.push_back(p);
    } else {
        s.ring[s.head] = p;
        s.head = (s.head + 1) % kRingCapacity;
    }
    s.sum_t = s.sum_v = 0;
    s.count = 0;
    s.closed_new = true;
    // Points are floats relative to the bases; moving the bases to the newest point once per
    // ring turn keeps the offsets within the span of the history, hence their precision.
    if (++s.pushes_since_rebase < int(kRingCapacity)) return;
    s.pushes_since_rebase = 0;
    double dt = p.t, dv = p.v;
    s.t_base += dt;
    s.v_base += dv;
    for (auto& q : s.ring) q = Point{float(q.t - dt), float(q.v - dv)};
}

void Detector::evaluate(double t) {
    if (!config_.enabled) return;
    for (auto it = series_.begin(); it != series_.end();) {
        Series& s = it->second;
        if (round_ - s.last_round >= 2) {
            it = series_.erase(it);
            continue;
        }
        if (s.last_round == round_ && s.closed_new) {
            judge(s, t);
            s.closed_new = false;
        }
        ++it;
    }
    round_++;
}

void Detector::judge(Series& s, double now) {
    const double window = seconds(config_.window);
    const double w = bucket_width();
    // The window ends where the open bucket starts: only closed buckets are judged.
    const double end = (double(s.bucket) + s.phase) * w - s.t_base;
    const double start = end - window;
    const double lookback = end - kLookbackWindows * window;

    t_.resize(s.ring.size());
    v_.resize(s.ring.size());
    size_t total = 0;
    for (size_t k = 0; k < s.ring.size(); k++) {
        size_t i = s.head + k < s.ring.size() ? s.head + k : s.head + k - s.ring.size();
        t_[total] = s.ring[i].t;
        v_[total] = s.ring[i].v;
        total += s.ring[i].t >= lookback;
    }
    t_.resize(total);
    v_.resize(total);
    const size_t first = std::lower_bound(t_.begin(), t_.end(), start) - t_.begin();
    const size_t n = total - first;
    Verdict& verdict = s.verdict;
    // Covered: the series was observed from the window's start (1 ms of float slack).
    verdict.enough_history = s.first_t <= start + s.t_base + 1e-3 && n >= size_t(kMinPoints);

    if (!verdict.enough_history) {
        verdict.rate = 0;
        update_verdict(s, false, false, now);
        return;
    }
    const double* t = t_.data() + first;
    double sigma = noise_sigma(v_.data() + first, n, tmp_);
    // Releases: falls of the smoothed series, anywhere in the look-back, larger than the noise
    // and than half of min_growth. No fall of a running median of 5 exceeds the largest fall
    // of the raw series, so a series without one that large (a steady leak, a flat series) is
    // spared the smoothing of its whole look-back.
    double release_size =
        std::max(kReleaseSigmas * sigma, kReleaseGrowth * double(config_.min_growth));
    bool may_release = max_drawdown(v_.data(), total) >= release_size;
    int releases = 0;
    const double* smooth = nullptr;  // the smoothed window, for least squares
    if (may_release) {
        median5(v_.data(), total, f_);
        releases = count_releases(f_, release_size);
        smooth = f_.data() + first;
    }
    auto smoothed = [&] {
        if (!smooth) {
            median5(v_.data() + first, n, f_);
            smooth = f_.data();
        }
        return smooth;
    };

    // A series that releases is judged on its envelopes: its peaks (running maximum from
    // the look-back's start) and its troughs (running minimum back from the newest point,
    // what it has kept since). A sawtooth's peaks stay level; a wandering level that has
    // just made new highs had a trough late in the window; a leak that also frees in
    // cycles raises both.
    const double* y = v_.data() + first;
    if (releases > 0) {
        peaks_.resize(total);
        peaks_[0] = f_[0];
        for (size_t i = 1; i < total; i++) peaks_[i] = std::max(peaks_[i - 1], f_[i]);
        troughs_.resize(n);
        troughs_[n - 1] = smooth[n - 1];
        for (size_t i = n - 1; i-- > 0;) troughs_[i] = std::min(troughs_[i + 1], smooth[i]);
        y = smooth = peaks_.data() + first;
    }
    double rate = paired_slope(t, y, n, tmp_);
    verdict.rate = rate;
    // Cheapest tests first: most series stop at the rate.
    bool leak_like =
        rate > 0 && rate >= config_.min_rate && rate * window >= double(config_.min_growth) &&
        (releases == 0 || rate * window >= release_size) &&
        growth_spread(t, y, n, start, window, rate, releases > 0, tmp_) &&
        (releases == 0 || troughs_grow(t, troughs_.data(), n, start, window, rate)) &&
        !step_fits_better(t, smoothed(), n) && mann_kendall_z(y, n, tmp_) >= z_threshold_;

    // Gave back all it grew over the window, down to below where the window started:
    // cleared at once, not after kClear judgements. The newest points are left out of the
    // comparison so that the release stays visible for a few judgements, until it shows in
    // the smoothed series and its envelopes.
    bool released = false;
    if (may_release) {
        const double* fw = f_.data() + first;
        size_t recent = std::min<size_t>(n - 1, kWindowPoints / 8);
        double low = *std::min_element(fw, fw + n - recent);
        double high = *std::max_element(fw, fw + n);
        double level = std::max(v_[total - 1], v_[total - 2]);
        released = level < low && high - level >= release_size;
    }
    update_verdict(s, leak_like && !released, released, now);
}

void Detector::update_verdict(Series& s, bool leak_like, bool released, double now) {
    Verdict& verdict = s.verdict;
    if (leak_like) {
        s.streak_off = 0;
        if (++s.streak_on >= kConfirm && !verdict.suspected) {
            verdict.suspected = true;
            verdict.flagged_since = now;
        }
    } else {
        s.streak_on = 0;
        if (++s.streak_off >= kClear || released) {
            verdict.suspected = false;
            verdict.flagged_since = 0;
        }
    }
}

std::string Detector::save() const {
    Writer w;
    w.put(kMagic);
    w.put(kStateVersion);
    w.put(static_cast<uint64_t>(series_.size()));
    for (const auto& [key, s] : series_) {
        w.put_string(key);
        w.put(s.t_base);
        w.put(s.v_base);
        w.put(static_cast<int32_t>(s.pushes_since_rebase));
        w.put(s.phase);
        w.put(s.bucket);
        w.put(s.sum_t);
        w.put(s.sum_v);
        w.put(s.count);
        w.put(s.first_t);
        w.put(static_cast<uint8_t>(s.closed_new));
        w.put(static_cast<int32_t>(s.streak_on));
        w.put(static_cast<int32_t>(s.streak_off));
        w.put(s.verdict.rate);
        w.put(static_cast<uint8_t>(s.verdict.suspected));
        w.put(s.verdict.flagged_since);
        w.put(static_cast<uint8_t>(s.verdict.enough_history));
        w.put(static_cast<uint32_t>(s.ring.size()));
        w.put(static_cast<uint32_t>(s.head));
        for (const Point& p : s.ring) w.put(p);
    }
    return w.take();
}

Result<size_t> Detector::restore(std::string_view bytes) {
    Reader r(bytes);
    char magic[sizeof(kMagic)];
    uint32_t version = 0;
    uint64_t n = 0;
    if (!r.get(magic) || std::memcmp(magic, kMagic, sizeof(kMagic)) != 0)
        return fail("not a leak detector state");
    if (!r.get(version) || version != kStateVersion)
        return fail("leak detector state of version " + std::to_string(version) + ", not " +
                    std::to_string(kStateVersion));
    if (!r.get(n)) return fail("leak detector state truncated");
    std::unordered_map<std::string, Series> read;
    for (uint64_t i = 0; i < n; i++) {
        std::string key;
        Series s;
        int32_t pushes = 0, on = 0, off = 0;
        uint8_t closed = 0, suspected = 0, enough = 0;
        uint32_t ring = 0, head = 0;
        bool ok = r.get_string(key, kMaxKey) && r.get(s.t_base) && r.get(s.v_base) &&
                  r.get(pushes) && r.get(s.phase) && r.get(s.bucket) && r.get(s.sum_t) &&
                  r.get(s.sum_v) && r.get(s.count) && r.get(s.first_t) && r.get(closed) &&
                  r.get(on) && r.get(off) && r.get(s.verdict.rate) && r.get(suspected) &&
                  r.get(s.verdict.flagged_since) && r.get(enough) && r.get(ring) && r.get(head) &&
                  ring <= kRingCapacity && (head < ring || head == 0);
        if (!ok) return fail("leak detector state damaged at series " + std::to_string(i));
        s.ring.reserve(kRingCapacity);
        for (uint32_t k = 0; k < ring; k++) {
            Point p{};
            if (!r.get(p)) return fail("leak detector state truncated");
            s.ring.push_back(p);
        }
        s.pushes_since_rebase = pushes;
        s.closed_new = closed;
        s.streak_on = on;
        s.streak_off = off;
        s.verdict.suspected = suspected;
        s.verdict.enough_history = enough;
        s.head = head;
        read.insert_or_assign(std::move(key), std::move(s));
    }
    if (!r.done()) return fail("leak detector state has trailing bytes");
    if (!config_.enabled) return 0;
    size_t restored = 0;
    for (auto& [key, s] : read) {
        if (series_.size() >= config_.max_series && !series_.count(key)) break;
        s.last_round = round_;
        // The window may have changed since: the open bucket continues on this one's grid.
        if (s.count) s.bucket = bucket_of(s, s.t_base + s.sum_t / s.count);
        series_.insert_or_assign(key, std::move(s));
        restored++;
    }
    return restored;
}

std::optional<Verdict> Detector::verdict(const std::string& key) const {
    auto it = series_.find(key);
    if (it == series_.end()) return std::nullopt;
    return it->second.verdict;
}

void Detector::forget_prefix(const std::string& prefix) {
    std::erase_if(series_, [&](const auto& kv) { return kv.first.starts_with(prefix); });
}

void Detector::reconfigure(LeakDetection config) {
    config.confidence = std::clamp(config.confidence, 0.5, 0.9999);
    config.window = std::max(config.window, Duration(1));
    bool regrid = config.window != config_.window;
    config_ = config;
    z_threshold_ = normal_quantile(config_.confidence);
    if (!config_.enabled) {
        series_.clear();
        return;
    }
    // A new window means new buckets: the open one continues on the new grid.
    if (regrid)
        for (auto& [key, s] : series_)
            if (s.count) s.bucket = bucket_of(s, s.t_base + s.sum_t / s.count);
    // A lower bound takes effect now; suspects are kept longest.
    for (int pass = 0; pass < 2 && series_.size() > config_.max_series; pass++)
        for (auto it = series_.begin(); it != series_.end() && series_.size() > config_.max_series;)
            it = pass == 0 && it->second.verdict.suspected ? std::next(it) : series_.erase(it);
}

}  // namespace leakwatch
