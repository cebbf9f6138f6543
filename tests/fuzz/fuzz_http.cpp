// HTTP query parsing and label escaping on arbitrary bytes: query strings come from any
// client that reaches the port, label values from watched processes.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "http/metrics.h"
#include "http/server.h"
#include "util/text.h"

using namespace leakwatch;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    for (const char* name : {"pid", "top", "offset", "limit"}) {
        auto v = parse_query_number(text, name, 1000);
        if (v && *v && **v > 1000) __builtin_trap();
    }
    const std::string escaped = escape_label_value(text);
    // One label value on one line: valid UTF-8 without control characters (what is not is
    // shown as U+FFFD first; escaping adds only backslashes), every backslash and quote escaped.
    if (!is_shown_text(escaped, 2 * kMaxShownPath)) __builtin_trap();
    for (size_t i = 0; i < escaped.size(); i++) {
        if (escaped[i] == '\n') __builtin_trap();
        if (escaped[i] == '\\') {
            if (i + 1 == escaped.size()) __builtin_trap();
            const char next = escaped[i + 1];
            if (next != '\\' && next != '"' && next != 'n') __builtin_trap();
            i++;
        } else if (escaped[i] == '"') {
            __builtin_trap();
        }
    }
    const std::string shown = shown_text(text, 64);
    if (shown.size() > 64 || !is_shown_text(shown, 64)) __builtin_trap();
    return 0;
}
