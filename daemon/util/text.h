// Text that comes from outside the daemon (a watched process's comm and paths, the symbol
// names of its files, its perf map, its cgroup), made fit to show: in JSON, in a metric label
// and in a log line. Such text may hold any bytes and be megabytes long; what is shown is
// valid UTF-8 without control characters, and bounded.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace leakwatch {

// Bounds on what is shown of such text, in bytes.
inline constexpr size_t kMaxShownName = 1024;  // comm, symbol and function names, units
inline constexpr size_t kMaxShownPath = 4096;  // file and cgroup paths (PATH_MAX)
inline constexpr size_t kMaxShownLog = 16384;  // one log message

// `text` as it is shown: every byte that does not start a valid UTF-8 sequence (or is part of
// an overlong form, a surrogate or a code point above U+10FFFF) and every control character
// (C0, DEL, C1) becomes U+FFFD, one per byte, so nothing is dropped silently; longer than
// `max_bytes` (at least 3), it is cut at a character boundary and ends with "…" (U+2026),
// the whole within `max_bytes`.
std::string shown_text(std::string_view text, size_t max_bytes);

// Whether shown_text would return `text` unchanged.
bool is_shown_text(std::string_view text, size_t max_bytes);

}  // namespace leakwatch
