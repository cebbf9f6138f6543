// http/web_config.cpp: the exporter-toolkit web config, parsed as strictly as the toolkit does.
#include <catch2/catch.hpp>
#include <string>

#include "http/web_config.h"

using namespace leakwatch;
using Catch::Matchers::Contains;

namespace {

// htpasswd -nbBC 10 prom s3cret
const std::string kHash = "$2y$10$Eyi6gAnpCyf0IAV.rkEXy.IYgTcisTbPMJus6LNAUunUl4jCVdBhK";

Result<WebConfig> parse(const std::string& text) {
    return parse_web_config(text, "web.yml", "/etc/leakwatch");
}

std::string error_of(const std::string& text) {
    auto c = parse(text);
    REQUIRE(!c);
    return c.error().message;
}

}  // namespace

TEST_CASE("web config: an empty file is plain HTTP without authentication", "[http][web]") {
    auto c = parse("");
    REQUIRE(c);
    CHECK(!c->tls);
    CHECK(c->users.empty());
    auto empty_tls = parse("tls_server_config: {}\n");
    REQUIRE(empty_tls);
    CHECK(!empty_tls->tls);
}

TEST_CASE("web config: every toolkit key, with relative paths from the file's directory",
          "[http][web]") {
    auto c = parse(
        "tls_server_config:\n"
        "  cert_file: tls/server.crt\n"
        "  key_file: /secrets/server.key\n"
        "  client_auth_type: RequireAndVerifyClientCert\n"
        "  client_ca_file: ca.crt\n"
        "  min_version: TLS13\n"
        "  max_version: TLS13\n"
        "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n"
        "  curve_preferences: [X25519, CurveP256]\n"
        "  prefer_server_cipher_suites: false\n"
        "http_server_config:\n"
        "  http2: false\n"
        "  headers:\n"
        "    X-Frame-Options: deny\n"
        "    Strict-Transport-Security: max-age=31536000\n"
        "basic_auth_users:\n"
        "  prom: " +
        kHash + "\n");
    if (!c) FAIL(c.error().message);
    REQUIRE(c->tls);
    CHECK(c->tls->cert_file == "/etc/leakwatch/tls/server.crt");
    CHECK(c->tls->key_file == "/secrets/server.key");
    CHECK(c->tls->client_ca_file == "/etc/leakwatch/ca.crt");
    CHECK(c->tls->client_auth_type == "RequireAndVerifyClientCert");
    CHECK(c->tls->min_version == 0x0304);
    CHECK(c->tls->max_version == 0x0304);
    CHECK(c->tls->cipher_suites ==
          std::vector<std::string>{"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"});
    CHECK(c->tls->curve_preferences == std::vector<std::string>{"X25519", "CurveP256"});
    CHECK(!c->tls->prefer_server_cipher_suites);
    CHECK(!c->http2);
    CHECK(c->headers.at("X-Frame-Options") == "deny");
    CHECK(c->users.at("prom") == kHash);
    CHECK(c->files() == std::vector<std::string>{"/etc/leakwatch/tls/server.crt",
                                                 "/secrets/server.key", "/etc/leakwatch/ca.crt"});
}

TEST_CASE("web config: the toolkit's defaults", "[http][web]") {
    auto c = parse("tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n");
    REQUIRE(c);
    CHECK(c->tls->min_version == 0x0303);  // TLS 1.2
    CHECK(c->tls->max_version == 0x0304);
    CHECK(c->tls->client_auth_type == "NoClientCert");
    CHECK(c->tls->prefer_server_cipher_suites);
    CHECK(c->http2);
}

TEST_CASE("web config: mistakes are errors that name the line and the key", "[http][web]") {
    CHECK_THAT(error_of("tls_server_config:\n  cert_file: a\n  key_file: b\n  cert: x\n"),
               Contains("web.yml:4:") && Contains("unknown key tls_server_config.cert"));
    CHECK_THAT(error_of("basic_auth_user:\n  a: b\n"),
               Contains("web.yml:1:") && Contains("unknown key basic_auth_user"));
    CHECK_THAT(error_of("tls_server_config:\n  key_file: b\n"), Contains("missing cert_file"));
    CHECK_THAT(error_of("tls_server_config:\n  cert_file: a\n"), Contains("missing key_file"));
    CHECK_THAT(error_of("tls_server_config:\n  cert_file: a\n  key_file: b\n"
                        "  client_ca_file: ca\n"),
               Contains("client_ca_file is set without a client_auth_type"));
    CHECK_THAT(error_of("tls_server_config:\n  cert_file: a\n  key_file: b\n"
                        "  client_auth_type: Sometimes\n"),
               Contains("invalid client_auth_type: Sometimes"));
    CHECK_THAT(error_of("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: SSL3\n"),
               Contains("unknown TLS version: SSL3"));
    CHECK_THAT(error_of("tls_server_config:\n  cert_file: a\n  key_file: b\n"
                        "  min_version: TLS13\n  max_version: TLS12\n"),
               Contains("min_version is above max_version"));
    CHECK_THAT(error_of("tls_server_config:\n  cert_file: a\n  key_file: b\n"
                        "  cipher_suites: [TLS_NOT_A_CIPHER]\n"),
               Contains("unknown cipher: TLS_NOT_A_CIPHER"));
    CHECK_THAT(error_of("tls_server_config:\n  cert_file: a\n  key_file: b\n"
                        "  curve_preferences: [P256]\n"),
               Contains("unknown curve: P256"));
    CHECK_THAT(error_of("http_server_config:\n  headers:\n    Server: leakwatch\n"),
               Contains("HTTP header Server can not be configured"));
    CHECK_THAT(error_of("http_server_config:\n  headers:\n    X-Frame-Options: allow\n"),
               Contains("invalid value for X-Frame-Options: allow"));
    CHECK_THAT(error_of("basic_auth_users:\n  prom: s3cret\n"),
               Contains("web.yml:2:") && Contains("not a bcrypt hash"));
    CHECK_THAT(error_of("basic_auth_users:\n  prom: $1$abc$def\n"), Contains("not a bcrypt hash"));
    CHECK_THAT(error_of("basic_auth_users:\n  'a:b': " + kHash + "\n"), Contains("':'"));
    CHECK_THAT(error_of("tls_server_config: [\n"), Contains("web.yml:"));
}

TEST_CASE("web config: bcrypt hashes of every prefix libcrypt checks", "[http][web]") {
    for (const char* prefix : {"$2a$", "$2b$", "$2y$"}) {
        std::string hash = prefix + kHash.substr(4);
        auto c = parse("basic_auth_users:\n  prom: '" + hash + "'\n");
        INFO(hash);
        CHECK(c);
    }
}

TEST_CASE("web config: the IANA names of cipher suites and Go's curve names", "[http][web]") {
    CHECK(openssl_cipher_name("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256") ==
          "ECDHE-RSA-AES128-GCM-SHA256");
    CHECK(openssl_cipher_name("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256") ==
          "ECDHE-ECDSA-CHACHA20-POLY1305");
    CHECK(!openssl_cipher_name("ECDHE-RSA-AES128-GCM-SHA256"));
    CHECK(openssl_group_name("CurveP384") == "P-384");
    CHECK(!openssl_group_name("secp384r1"));
}

TEST_CASE("web config: load_web_config reads the file and needs the files it names",
          "[http][web]") {
    auto missing = load_web_config("/nonexistent/web.yml");
    REQUIRE(!missing);
    CHECK_THAT(missing.error().message, Contains("/nonexistent/web.yml"));
    char dir[] = "/tmp/leakwatch-web-XXXXXX";
    REQUIRE(mkdtemp(dir));
    const std::string path = std::string(dir) + "/web.yml";
    {
        FILE* f = fopen(path.c_str(), "w");
        REQUIRE(f);
        fputs("tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n", f);
        fclose(f);
    }
    auto c = load_web_config(path);
    std::remove(path.c_str());
    rmdir(dir);
    REQUIRE(!c);
    CHECK_THAT(c.error().message, Contains(std::string(dir) + "/nope.crt"));
}
