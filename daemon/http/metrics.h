// Prometheus text exposition of a snapshot, built at scrape time.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "aggregate/aggregator.h"
#include "http/state.h"

namespace leakwatch {

// A label value as the exposition writes it, without its quotes: valid UTF-8 (util/text.h)
// within 4096 bytes, with backslash, double quote and newline escaped.
std::string escape_label_value(std::string_view value);

// Hands the exposition to `sink` in pieces of about `piece` bytes (the last one shorter), so
// that a scrape of tens of thousands of series holds one piece at a time.
using MetricsSink = std::function<void(std::string_view)>;
void render_metrics(const Snapshot& snapshot, const DaemonStatus& status, const MetricsSink& sink,
                    size_t piece = 64 * 1024);
// The whole exposition in one string; without `live`, the families the HTTP server counts
// as requests come (render_live_metrics) are left out. The main loop renders a snapshot's
// exposition once, when it publishes it, so that a scrape only sends bytes: a scrape then
// needs no time of the busy main loop's, no render and no large allocation (measured with
// bench/exec_storm.sh, docs/operations.md).
std::string render_metrics(const Snapshot& snapshot, const DaemonStatus& status, bool live = true);
std::string render_live_metrics(const DaemonStatus& status);

}  // namespace leakwatch
