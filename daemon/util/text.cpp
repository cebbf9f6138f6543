#include "util/text.h"

#include <algorithm>
#include <cstdint>

namespace leakwatch {
namespace {

constexpr std::string_view kReplacement = "\xef\xbf\xbd";  // U+FFFD
constexpr std::string_view kEllipsis = "\xe2\x80\xa6";     // U+2026

// The length of the valid, shown UTF-8 character at the front of `s`, or 0 when its first
// byte must be replaced (invalid, or a control character).
size_t shown_char(std::string_view s) {
    const auto b0 = static_cast<uint8_t>(s[0]);
    if (b0 < 0x80) return b0 >= 0x20 && b0 != 0x7f ? 1 : 0;
    size_t n = 0;
    uint32_t cp = 0;
    if (b0 >= 0xc2 && b0 <= 0xdf) {
        n = 2, cp = b0 & 0x1f;
    } else if (b0 >= 0xe0 && b0 <= 0xef) {
        n = 3, cp = b0 & 0x0f;
    } else if (b0 >= 0xf0 && b0 <= 0xf4) {
        n = 4, cp = b0 & 0x07;
    } else {
        return 0;  // a continuation byte, an overlong lead (c0, c1) or beyond U+10FFFF
    }
    if (s.size() < n) return 0;
    for (size_t i = 1; i < n; i++) {
        const auto b = static_cast<uint8_t>(s[i]);
        if ((b & 0xc0) != 0x80) return 0;
        cp = cp << 6 | (b & 0x3f);
    }
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    if (cp >= 0x80 && cp <= 0x9f) return 0;  // C1 controls (0x9b is a terminal's CSI)
    return n;
}

}  // namespace

bool is_shown_text(std::string_view text, size_t max_bytes) {
    if (text.size() > max_bytes) return false;
    for (size_t i = 0; i < text.size();) {
        size_t n = shown_char(text.substr(i));
        if (n == 0) return false;
        i += n;
    }
    return true;
}

std::string shown_text(std::string_view text, size_t max_bytes) {
    if (max_bytes < kEllipsis.size()) max_bytes = kEllipsis.size();
    // How long the whole would be, to know whether it must be cut (and the marker fit).
    size_t whole = 0;
    for (size_t i = 0; i < text.size() && whole <= max_bytes;) {
        size_t n = shown_char(text.substr(i));
        whole += n ? n : kReplacement.size();
        i += n ? n : 1;
    }
    const bool cut = whole > max_bytes;
    const size_t room = cut ? max_bytes - kEllipsis.size() : max_bytes;
    std::string out;
    out.reserve(std::min(whole, max_bytes));
    for (size_t i = 0; i < text.size();) {
        size_t n = shown_char(text.substr(i));
        std::string_view piece = n ? text.substr(i, n) : kReplacement;
        if (out.size() + piece.size() > room) break;
        out += piece;
        i += n ? n : 1;
    }
    if (cut) out += kEllipsis;
    return out;
}

}  // namespace leakwatch
