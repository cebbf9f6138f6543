#include <catch2/catch.hpp>
#include <string>

#include "util/text.h"

using leakwatch::is_shown_text;
using leakwatch::shown_text;

namespace {
const std::string kFffd = "\xef\xbf\xbd";
const std::string kEllipsis = "\xe2\x80\xa6";
}  // namespace

TEST_CASE("plain text is shown as it is") {
    CHECK(shown_text("leak_steady", 64) == "leak_steady");
    CHECK(shown_text("Session::open(int) const", 64) == "Session::open(int) const");
    CHECK(shown_text("", 64).empty());
    CHECK(is_shown_text("/usr/lib/x86_64-linux-gnu/libc.so.6", 4096));
    // Valid UTF-8 of every length stays: é, €, 𝄞
    const std::string utf8 = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9d\x84\x9e";
    CHECK(shown_text(utf8, 64) == utf8);
    CHECK(is_shown_text(utf8, 64));
}

TEST_CASE("each invalid byte becomes one U+FFFD") {
    CHECK(shown_text("\xff\xfeleak", 64) == kFffd + kFffd + "leak");
    CHECK_FALSE(is_shown_text("\xff\xfeleak", 64));
    // A truncated sequence at the end, a lone continuation byte
    CHECK(shown_text("a\xe2\x82", 64) == "a" + kFffd + kFffd);
    CHECK(shown_text("\x80x", 64) == kFffd + "x");
    // Overlong forms, surrogates and code points above U+10FFFF are not valid UTF-8
    CHECK(shown_text("\xc0\xaf", 64) == kFffd + kFffd);
    CHECK(shown_text("\xe0\x80\xaf", 64) == kFffd + kFffd + kFffd);
    CHECK(shown_text("\xed\xa0\x80", 64) == kFffd + kFffd + kFffd);
    CHECK(shown_text("\xf4\x90\x80\x80", 64) == kFffd + kFffd + kFffd + kFffd);
}

TEST_CASE("control characters are replaced, so a name cannot forge a log line") {
    CHECK(shown_text("a\nb", 64) == "a" + kFffd + "b");
    CHECK(shown_text(std::string("a\0b", 3), 64) == "a" + kFffd + "b");
    CHECK(shown_text("\x1b[31mred", 64) == kFffd + "[31mred");
    CHECK(shown_text("\x7f", 64) == kFffd);
    CHECK(shown_text("\xc2\x9b", 64) == kFffd + kFffd);  // C1 CSI, encoded
}

TEST_CASE("long text is cut at a character boundary and marked") {
    CHECK(shown_text("abcdefghij", 10) == "abcdefghij");
    CHECK(shown_text("abcdefghijk", 10) == "abcdefg" + kEllipsis);
    CHECK(shown_text("abcdefghijk", 10).size() == 10);
    // A 3-byte character that would straddle the cut is left out whole.
    std::string s = "abcde\xe2\x82\xac\xe2\x82\xac";
    CHECK(shown_text(s, 9) == "abcde" + kEllipsis);
    // Replacements count for their 3 bytes.
    CHECK(shown_text("\xff\xff\xff\xff", 9) == kFffd + kFffd + kEllipsis);
    CHECK(shown_text("\xff\xff\xff\xff", 8) == kFffd + kEllipsis);
    std::string huge(2 << 20, 'a');
    auto shown = shown_text(huge, 1024);
    CHECK(shown.size() == 1024);
    CHECK(shown.ends_with(kEllipsis));
    CHECK(is_shown_text(shown, 1024));
    CHECK_FALSE(is_shown_text(huge, 1024));
}

TEST_CASE("whatever the bytes, the result is shown text within the bound") {
    std::string all;
    for (int i = 0; i < 256; i++) all += static_cast<char>(i);
    for (size_t max : {3, 4, 7, 64, 300, 1000}) {
        auto shown = shown_text(all + all, max);
        CHECK(shown.size() <= max);
        CHECK(is_shown_text(shown, max));
    }
}
