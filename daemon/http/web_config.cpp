#include "http/web_config.h"

#include <crypt.h>
#include <openssl/ssl.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <set>
#include <sstream>

namespace leakwatch {

namespace {

constexpr size_t kMaxWebConfigBytes = 1 << 20;

std::string where(const std::string& source, const YAML::Node& node) {
    return source + ":" + std::to_string(node.Mark().line + 1) + ": ";
}

// The toolkit parses strictly: a key it does not know is an error, not a silent no-op.
Result<void> only_keys(const std::string& source, const YAML::Node& map, const char* section,
                       std::initializer_list<std::string_view> known) {
    if (!map.IsMap()) return fail(where(source, map) + section + " must be a mapping");
    for (const auto& kv : map) {
        const auto key = kv.first.as<std::string>();
        bool ok = false;
        for (auto k : known) ok = ok || key == k;
        if (!ok) {
            std::string list;
            for (auto k : known) list += (list.empty() ? "" : ", ") + std::string(k);
            return fail(where(source, kv.first) + "unknown key " + section + (*section ? "." : "") +
                        key + " (known: " + list + ")");
        }
    }
    return {};
}

Result<std::string> scalar(const std::string& source, const YAML::Node& n, const std::string& key) {
    if (!n.IsScalar()) return fail(where(source, n) + key + " must be a string");
    return n.as<std::string>();
}

Result<std::vector<std::string>> list(const std::string& source, const YAML::Node& n,
                                      const std::string& key) {
    if (n.IsNull()) return std::vector<std::string>{};
    if (!n.IsSequence()) return fail(where(source, n) + key + " must be a list");
    std::vector<std::string> out;
    for (const auto& item : n) {
        auto s = scalar(source, item, key);
        if (!s) return std::unexpected(s.error());
        out.push_back(*s);
    }
    return out;
}

Result<bool> boolean(const std::string& source, const YAML::Node& n, const std::string& key) {
    bool v = false;
    if (!n.IsScalar() || !YAML::convert<bool>::decode(n, v))
        return fail(where(source, n) + key + " must be true or false");
    return v;
}

std::string join_dir(const std::string& dir, const std::string& path) {
    if (path.empty() || path[0] == '/' || dir.empty()) return path;
    return dir + "/" + path;
}

Result<int> tls_version(const std::string& source, const YAML::Node& n, const std::string& key) {
    auto s = scalar(source, n, key);
    if (!s) return std::unexpected(s.error());
    static const std::map<std::string, int> kVersions = {{"TLS10", TLS1_VERSION},
                                                         {"TLS11", TLS1_1_VERSION},
                                                         {"TLS12", TLS1_2_VERSION},
                                                         {"TLS13", TLS1_3_VERSION}};
    auto it = kVersions.find(*s);
    if (it == kVersions.end())
        return fail(where(source, n) + "unknown TLS version: " + *s +
                    " (TLS10, TLS11, TLS12 or TLS13)");
    return it->second;
}

const std::set<std::string> kClientAuthTypes = {
    "NoClientCert",      "RequestClientCert",       "RequireAnyClientCert",
    "RequireClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"};

// nullopt when the section sets none of the certificate, key, client CA or client
// authentication: plain HTTP, as with the toolkit.
Result<std::optional<TlsServerConfig>> parse_tls(const std::string& source, const YAML::Node& n,
                                                 const std::string& dir) {
    if (auto ok = only_keys(
            source, n, "tls_server_config",
            {"cert_file", "key_file", "client_auth_type", "client_ca_file", "cipher_suites",
             "curve_preferences", "min_version", "max_version", "prefer_server_cipher_suites"});
        !ok)
        return std::unexpected(ok.error());
    TlsServerConfig tls;
    bool auth_set = false;
    for (const auto& kv : n) {
        const auto key = kv.first.as<std::string>();
        const YAML::Node& v = kv.second;
        const std::string name = "tls_server_config." + key;
        Result<void> ok;
        auto text = [&](std::string& out) -> Result<void> {
            auto s = scalar(source, v, name);
            if (!s) return std::unexpected(s.error());
            out = *s;
            return {};
        };
        if (key == "cert_file") {
            ok = text(tls.cert_file);
        } else if (key == "key_file") {
            ok = text(tls.key_file);
        } else if (key == "client_ca_file") {
            ok = text(tls.client_ca_file);
        } else if (key == "client_auth_type") {
            ok = text(tls.client_auth_type);
            auth_set = ok && !tls.client_auth_type.empty();
            if (ok && tls.client_auth_type.empty()) tls.client_auth_type = "NoClientCert";
            if (ok && !kClientAuthTypes.count(tls.client_auth_type))
                return fail(where(source, v) + "invalid client_auth_type: " + tls.client_auth_type +
                            " (NoClientCert, RequestClientCert, RequireAnyClientCert, "
                            "VerifyClientCertIfGiven or RequireAndVerifyClientCert)");
        } else if (key == "min_version" || key == "max_version") {
            auto ver = tls_version(source, v, name);
            if (!ver) return std::unexpected(ver.error());
            (key == "min_version" ? tls.min_version : tls.max_version) = *ver;
        } else if (key == "cipher_suites") {
            auto l = list(source, v, name);
            if (!l) return std::unexpected(l.error());
            for (const auto& c : *l)
                if (!openssl_cipher_name(c)) return fail(where(source, v) + "unknown cipher: " + c);
            tls.cipher_suites = *l;
        } else if (key == "curve_preferences") {
            auto l = list(source, v, name);
            if (!l) return std::unexpected(l.error());
            for (const auto& c : *l)
                if (!openssl_group_name(c))
                    return fail(where(source, v) + "unknown curve: " + c +
                                " (CurveP256, CurveP384, CurveP521 or X25519)");
            tls.curve_preferences = *l;
        } else if (key == "prefer_server_cipher_suites") {
            auto b = boolean(source, v, name);
            if (!b) return std::unexpected(b.error());
            tls.prefer_server_cipher_suites = *b;
        }
        if (!ok) return std::unexpected(ok.error());
    }
    if (tls.cert_file.empty() && tls.key_file.empty() && tls.client_ca_file.empty() && !auth_set)
        return std::optional<TlsServerConfig>();
    if (tls.cert_file.empty())
        return fail(where(source, n) + "tls_server_config: missing cert_file");
    if (tls.key_file.empty()) return fail(where(source, n) + "tls_server_config: missing key_file");
    if (!tls.client_ca_file.empty() && tls.client_auth_type == "NoClientCert")
        return fail(where(source, n) +
                    "tls_server_config: client_ca_file is set without a client_auth_type that "
                    "asks for client certificates");
    if (tls.min_version > tls.max_version)
        return fail(where(source, n) + "tls_server_config: min_version is above max_version");
    tls.cert_file = join_dir(dir, tls.cert_file);
    tls.key_file = join_dir(dir, tls.key_file);
    tls.client_ca_file = join_dir(dir, tls.client_ca_file);
    return std::optional<TlsServerConfig>(std::move(tls));
}

// The toolkit's only settable headers, and the values it allows where it limits them.
const std::map<std::string, std::vector<std::string>> kSettableHeaders = {
    {"Strict-Transport-Security", {}},
    {"X-Content-Type-Options", {"nosniff"}},
    {"X-Frame-Options", {"deny", "sameorigin"}},
    {"X-XSS-Protection", {}},
    {"Content-Security-Policy", {}},
};

Result<void> parse_http(const std::string& source, const YAML::Node& n, WebConfig& out) {
    if (auto ok = only_keys(source, n, "http_server_config", {"http2", "headers"}); !ok) return ok;
    if (n["http2"]) {
        auto b = boolean(source, n["http2"], "http_server_config.http2");
        if (!b) return std::unexpected(b.error());
        out.http2 = *b;
    }
    if (const YAML::Node& h = n["headers"]; h && !h.IsNull()) {
        if (!h.IsMap())
            return fail(where(source, h) + "http_server_config.headers must be a mapping");
        for (const auto& kv : h) {
            const auto name = kv.first.as<std::string>();
            auto allowed = kSettableHeaders.find(name);
            if (allowed == kSettableHeaders.end())
                return fail(where(source, kv.first) + "HTTP header " + name +
                            " can not be configured");
            auto value = scalar(source, kv.second, "http_server_config.headers." + name);
            if (!value) return std::unexpected(value.error());
            const auto& values = allowed->second;
            if (!values.empty() && std::find(values.begin(), values.end(), *value) == values.end())
                return fail(where(source, kv.second) + "invalid value for " + name + ": " + *value);
            if (value->find_first_of("\r\n") != std::string::npos)
                return fail(where(source, kv.second) + "header " + name + " spans lines");
            out.headers[name] = *value;
        }
    }
    return {};
}

// A bcrypt hash libcrypt can check: $2a$, $2b$ or $2y$, cost and 53 characters of salt and
// hash. Anything else (a plain password by mistake, an MD5 crypt) is refused at load.
bool is_bcrypt(const std::string& hash) {
    if (hash.size() != 60) return false;
    if (hash.compare(0, 4, "$2a$") != 0 && hash.compare(0, 4, "$2b$") != 0 &&
        hash.compare(0, 4, "$2y$") != 0)
        return false;
    return crypt_checksalt(hash.c_str()) == CRYPT_SALT_OK;
}

Result<void> parse_users(const std::string& source, const YAML::Node& n, WebConfig& out) {
    if (n.IsNull()) return {};
    if (!n.IsMap()) return fail(where(source, n) + "basic_auth_users must be a mapping");
    for (const auto& kv : n) {
        const auto user = kv.first.as<std::string>();
        auto hash = scalar(source, kv.second, "basic_auth_users." + user);
        if (!hash) return std::unexpected(hash.error());
        if (user.empty() || user.find(':') != std::string::npos)
            return fail(where(source, kv.first) +
                        "basic_auth_users: a user name may not be empty "
                        "or contain ':'");
        if (!is_bcrypt(*hash))
            return fail(where(source, kv.second) + "basic_auth_users." + user +
                        ": not a bcrypt hash ($2a$, $2b$ or $2y$, 60 characters; make one "
                        "with `htpasswd -nBC 10 USER`)");
        out.users[user] = *hash;
    }
    return {};
}

Result<void> readable(const std::string& path, const std::string& what) {
    std::ifstream f(path);
    if (!f) return fail_errno("cannot read the " + what + " " + path, errno);
    return {};
}

}  // namespace

std::vector<std::string> WebConfig::files() const {
    std::vector<std::string> out;
    if (tls) {
        out = {tls->cert_file, tls->key_file};
        if (!tls->client_ca_file.empty()) out.push_back(tls->client_ca_file);
    }
    return out;
}

std::optional<std::string> openssl_cipher_name(const std::string& iana) {
    const char* name = OPENSSL_cipher_name(iana.c_str());
    if (!name || std::string_view(name) == "(NONE)") return std::nullopt;
    return std::string(name);
}

std::optional<std::string> openssl_group_name(const std::string& go_name) {
    static const std::map<std::string, std::string> kGroups = {{"CurveP256", "P-256"},
                                                               {"CurveP384", "P-384"},
                                                               {"CurveP521", "P-521"},
                                                               {"X25519", "X25519"}};
    auto it = kGroups.find(go_name);
    if (it == kGroups.end()) return std::nullopt;
    return it->second;
}

Result<WebConfig> parse_web_config(const std::string& text, const std::string& source,
                                   const std::string& dir) {
    YAML::Node root;
    try {
        root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
        return fail(source + ":" + std::to_string(e.mark.line + 1) + ": " + e.msg);
    }
    WebConfig out;
    out.path = source;
    if (root.IsNull()) return out;
    try {
        if (auto ok = only_keys(source, root, "",
                                {"tls_server_config", "http_server_config", "basic_auth_users"});
            !ok)
            return std::unexpected(ok.error());
        if (const YAML::Node& t = root["tls_server_config"]; t && !t.IsNull()) {
            auto tls = parse_tls(source, t, dir);
            if (!tls) return std::unexpected(tls.error());
            out.tls = std::move(*tls);
        }
        if (const YAML::Node& h = root["http_server_config"]; h && !h.IsNull())
            if (auto ok = parse_http(source, h, out); !ok) return std::unexpected(ok.error());
        if (const YAML::Node& u = root["basic_auth_users"])
            if (auto ok = parse_users(source, u, out); !ok) return std::unexpected(ok.error());
    } catch (const YAML::Exception& e) {
        return fail(source + ":" + std::to_string(e.mark.line + 1) + ": " + e.msg);
    }
    return out;
}

Result<WebConfig> load_web_config(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) return fail_errno("cannot read the web config " + path, errno);
    std::string text(kMaxWebConfigBytes + 1, '\0');
    f.read(text.data(), static_cast<std::streamsize>(text.size()));
    text.resize(static_cast<size_t>(f.gcount()));
    if (text.size() > kMaxWebConfigBytes)
        return fail(path + ": larger than " + std::to_string(kMaxWebConfigBytes) + " bytes");
    const size_t slash = path.rfind('/');
    auto config =
        parse_web_config(text, path, slash == std::string::npos ? "." : path.substr(0, slash));
    if (!config) return config;
    if (config->tls) {
        if (auto ok = readable(config->tls->cert_file, "certificate file"); !ok)
            return std::unexpected(ok.error());
        if (auto ok = readable(config->tls->key_file, "key file"); !ok)
            return std::unexpected(ok.error());
        if (!config->tls->client_ca_file.empty())
            if (auto ok = readable(config->tls->client_ca_file, "client CA file"); !ok)
                return std::unexpected(ok.error());
    }
    return config;
}

}  // namespace leakwatch
