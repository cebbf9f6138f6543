#include "http/basic_auth.h"

#include <crypt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <cstring>
#include <memory>
#include <string_view>

namespace leakwatch {

namespace {

// Checked for a user that is not configured, so that such a request takes as long as one
// with a wrong password (its password is not one anybody is given).
constexpr const char* kDummyHash = "$2y$10$ucZZknD3UjEBFp5ixbYgS.ANeQBYNA6BLXG0Zbpy.aSxKZznDw3VK";

// Longer credentials are refused before any decoding or bcrypt.
constexpr size_t kMaxCredentials = 1024;

bool same(const std::string& a, const std::string& b) {
    return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string sha256(const std::string& data) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
    return std::string(reinterpret_cast<char*>(md), len);
}

}  // namespace

std::optional<std::pair<std::string, std::string>> basic_credentials(const char* authorization) {
    if (!authorization) return std::nullopt;
    std::string_view h(authorization);
    constexpr std::string_view kScheme = "Basic ";
    if (h.size() <= kScheme.size() || h.size() > kMaxCredentials ||
        strncasecmp(h.data(), kScheme.data(), kScheme.size()) != 0)
        return std::nullopt;
    h.remove_prefix(kScheme.size());
    while (!h.empty() && h.front() == ' ') h.remove_prefix(1);
    while (!h.empty() && h.back() == ' ') h.remove_suffix(1);
    if (h.empty() || h.size() % 4 != 0) return std::nullopt;
    std::string decoded(h.size() / 4 * 3, '\0');
    int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(decoded.data()),
                            reinterpret_cast<const unsigned char*>(h.data()),
                            static_cast<int>(h.size()));
    if (n < 0) return std::nullopt;
    // EVP_DecodeBlock counts the padding as zero bytes.
    size_t len = static_cast<size_t>(n);
    for (size_t i = h.size(); i > 0 && h[i - 1] == '=' && len > 0; i--) len--;
    decoded.resize(len);
    size_t colon = decoded.find(':');
    if (colon == std::string::npos) return std::nullopt;
    return std::make_pair(decoded.substr(0, colon), decoded.substr(colon + 1));
}

bool bcrypt_matches(const std::string& password, const std::string& hash) {
    // struct crypt_data is 32 KiB: not for a worker thread's stack.
    auto data = std::make_unique<crypt_data>();
    const char* out = crypt_rn(password.c_str(), hash.c_str(), data.get(), sizeof(crypt_data));
    bool ok = out && same(out, hash);
    OPENSSL_cleanse(data.get(), sizeof(crypt_data));
    return ok;
}

bool BasicAuth::allows(const std::map<std::string, std::string>& users, const char* authorization) {
    auto creds = basic_credentials(authorization);
    if (!creds) return false;
    const auto& [user, password] = *creds;
    auto it = users.find(user);
    const bool known = it != users.end();
    const std::string hash = known ? it->second : kDummyHash;
    const std::string key = sha256(user + '\0' + hash + '\0' + password);
    {
        std::lock_guard lock(cache_mu_);
        if (auto c = cache_.find(key); c != cache_.end()) return c->second && known;
    }
    bool ok;
    {
        std::lock_guard lock(bcrypt_mu_);
        ok = bcrypt_matches(password, hash);
    }
    std::lock_guard lock(cache_mu_);
    if (cache_.size() >= kCacheEntries) cache_.clear();
    cache_[key] = ok;
    return ok && known;
}

}  // namespace leakwatch
