#include "symbols/shared_string.h"

#include <mutex>
#include <unordered_map>

namespace leakwatch {

namespace {

// Every live distinct string once. Entries of strings no longer used are dropped when the
// pool has doubled since the last sweep, so it stays within twice the strings in use.
struct Pool {
    std::mutex mu;
    std::unordered_map<std::string, std::weak_ptr<const std::string>> strings;
    size_t swept_at = 64;
};

Pool& pool() {
    static Pool* p = new Pool();  // never destroyed: frames may outlive static destruction
    return *p;
}

}  // namespace

const std::string& SharedString::empty_string() {
    static const std::string empty;
    return empty;
}

SharedString::SharedString(std::string_view s) {
    if (s.empty()) return;
    Pool& p = pool();
    std::lock_guard lock(p.mu);
    auto [it, inserted] = p.strings.try_emplace(std::string(s));
    if (!inserted) {
        if (auto alive = it->second.lock()) {
            p_ = std::move(alive);
            return;
        }
    }
    p_ = std::make_shared<const std::string>(s);
    it->second = p_;
    if (p.strings.size() >= 2 * p.swept_at) {
        std::erase_if(p.strings, [](const auto& kv) { return kv.second.expired(); });
        p.swept_at = std::max<size_t>(64, p.strings.size());
    }
}

}  // namespace leakwatch
