// Prometheus text exposition of a snapshot, built at scrape time.
#pragma once

#include <string>

#include "aggregate/aggregator.h"
#include "http/state.h"

namespace leakwatch {

std::string render_metrics(const Snapshot& snapshot, const DaemonStatus& status);

}  // namespace leakwatch
