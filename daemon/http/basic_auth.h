// HTTP basic authentication against bcrypt hashes (the web config's basic_auth_users).
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace leakwatch {

class BasicAuth {
  public:
    // Whether an Authorization header ("Basic base64(user:password)"; nullptr when absent)
    // names a user of `users` with its password. A user that is not there costs a bcrypt
    // check all the same, so the time taken does not tell which users exist.
    bool allows(const std::map<std::string, std::string>& users, const char* authorization);

  private:
    // One bcrypt at a time (about 80 ms at cost 10): a burst of wrong passwords takes one
    // core, not all of them. Results are remembered by a hash of (user, stored hash,
    // password), so a scraper with good credentials pays bcrypt once, and a changed hash
    // invalidates what was remembered of it; at most kCacheEntries, forgotten all at once
    // when full.
    static constexpr size_t kCacheEntries = 128;
    std::mutex bcrypt_mu_;
    std::mutex cache_mu_;
    std::unordered_map<std::string, bool> cache_;
};

// The user and password of a basic Authorization header, nullopt when it is not one.
std::optional<std::pair<std::string, std::string>> basic_credentials(const char* authorization);
// Whether `password` matches a bcrypt `hash` (libcrypt's crypt_rn).
bool bcrypt_matches(const std::string& password, const std::string& hash);

}  // namespace leakwatch
