// --web.config.file: TLS and basic authentication in the format of the Prometheus
// exporter-toolkit (the version Debian 12's Prometheus uses): tls_server_config,
// http_server_config and basic_auth_users (bcrypt hashes). Unknown keys are errors, as there.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "util/result.h"

namespace leakwatch {

struct TlsServerConfig {
    std::string cert_file;  // PEM: the certificate, then its chain
    std::string key_file;   // PEM
    // NoClientCert, RequestClientCert, RequireAnyClientCert (or RequireClientCert),
    // VerifyClientCertIfGiven, RequireAndVerifyClientCert.
    std::string client_auth_type = "NoClientCert";
    std::string client_ca_file;
    int min_version = 0x0303;  // TLS 1.2 (wire numbers: 0x0301 TLS10 .. 0x0304 TLS13)
    int max_version = 0x0304;
    std::vector<std::string> cipher_suites;      // IANA names, as Go spells them
    std::vector<std::string> curve_preferences;  // CurveP256, CurveP384, CurveP521, X25519
    bool prefer_server_cipher_suites = true;
    friend bool operator==(const TlsServerConfig&, const TlsServerConfig&) = default;
};

struct WebConfig {
    std::string path;                    // the file it was read from
    std::optional<TlsServerConfig> tls;  // absent: plain HTTP
    bool http2 = true;                   // accepted for compatibility: civetweb speaks HTTP/1.1
    std::map<std::string, std::string> headers;  // added to every response
    std::map<std::string, std::string> users;    // user -> bcrypt hash; empty: no authentication

    // The files it names (the certificate, key and client CA), for noticing they changed.
    std::vector<std::string> files() const;
};

// Parses the YAML text of a web config; relative paths are taken from `dir`. Errors name the
// file and line, like the daemon's config.
Result<WebConfig> parse_web_config(const std::string& yaml_text, const std::string& source,
                                   const std::string& dir);
// Reads and parses the file; also checks that the certificate and key files can be read.
Result<WebConfig> load_web_config(const std::string& path);

// The OpenSSL spelling of an IANA cipher suite name (TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 ->
// ECDHE-RSA-AES128-GCM-SHA256), nullopt for a name OpenSSL does not know.
std::optional<std::string> openssl_cipher_name(const std::string& iana);
// The OpenSSL group name of a Go curve name (CurveP256 -> P-256).
std::optional<std::string> openssl_group_name(const std::string& go_name);

}  // namespace leakwatch
