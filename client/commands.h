// What the leakwatch commands print, made from the API's JSON documents (docs/metrics.md):
// plain text for a terminal, figures exact (bytes, not rounded) so they can be compared.
#pragma once

#include <cstdint>
#include <ctime>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace leakwatch::client {

// "0x7f3a2c1b6930 malloc+0x0 [libc.so.6] malloc.c:3287": address, symbol (or module+offset),
// the module's file name, source line where known; inlined functions follow on lines of
// their own, marked "(inlined)".
std::string format_frame(const nlohmann::json& frame, const std::string& indent);

// `leakwatch top`, one refresh: per process (a /api/v1/stacks document each), its totals and
// its `top` largest stacks with their frames, in the manner of BCC's memleak.
std::string format_top(const std::vector<nlohmann::json>& processes, size_t top, std::time_t now);

// `leakwatch stacks PID`: the process's totals and every stack the document holds.
std::string format_stacks(const nlohmann::json& stacks_doc);

// `leakwatch leaks`: one line per suspect (/api/v1/leaks), with its frames when `frames`.
std::string format_leaks(const nlohmann::json& leaks_doc, bool frames);

}  // namespace leakwatch::client
