// The daemon's own cost in the names every Prometheus client library uses (process_*), read
// from /proc/self when /metrics is scraped: the dashboard's "what leakwatchd costs" panels.
#pragma once

#include <string>

namespace leakwatch {

// process_cpu_seconds_total, process_resident_memory_bytes, process_virtual_memory_bytes,
// process_open_fds, process_max_fds and process_start_time_seconds, in the text exposition
// format; those that cannot be read are left out. `proc` is the /proc to read (tests).
std::string render_process_metrics(const std::string& proc = "/proc");

}  // namespace leakwatch
