// An immutable string whose copies share one allocation, and equal strings one copy: module
// paths and build-ids repeat in every frame of every stack of a file (about 90,000 frames for
// 10,000 stacks), and a std::string per frame cost about 130 bytes each there.
#pragma once

#include <memory>
#include <ostream>
#include <string>
#include <string_view>

namespace leakwatch {

class SharedString {
  public:
    SharedString() = default;
    SharedString(std::string_view s);  // NOLINT: implicit, it stands for a string
    SharedString(const std::string& s) : SharedString(std::string_view(s)) {}  // NOLINT
    SharedString(const char* s) : SharedString(std::string_view(s)) {}         // NOLINT

    const std::string& str() const { return p_ ? *p_ : empty_string(); }
    operator const std::string&() const { return str(); }  // NOLINT
    operator std::string_view() const { return str(); }    // NOLINT
    bool empty() const { return str().empty(); }
    bool ends_with(std::string_view s) const { return str().ends_with(s); }

    friend bool operator==(const SharedString& a, const SharedString& b) {
        return a.p_ == b.p_ || a.str() == b.str();
    }
    friend bool operator==(const SharedString& a, std::string_view b) { return a.str() == b; }
    friend bool operator==(const SharedString& a, const char* b) { return a.str() == b; }
    friend bool operator==(const SharedString& a, const std::string& b) { return a.str() == b; }
    friend std::ostream& operator<<(std::ostream& os, const SharedString& s) {
        return os << s.str();
    }

  private:
    static const std::string& empty_string();
    std::shared_ptr<const std::string> p_;
};

}  // namespace leakwatch
