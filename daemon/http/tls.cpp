#include "http/tls.h"

#include <civetweb.h>
#include <dlfcn.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <unistd.h>

#include <mutex>

namespace leakwatch {

namespace {

// Where the shims are, relative to the directory of the running binary: build/bin ->
// build/lib/leakwatch, /usr/sbin -> /usr/lib/leakwatch.
constexpr const char* kCompatDir = "/../lib/leakwatch";

std::string own_directory() {
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
    if (n <= 0) return ".";
    std::string path(buf, static_cast<size_t>(n));
    size_t slash = path.rfind('/');
    return slash == std::string::npos ? "." : path.substr(0, slash);
}

// The last OpenSSL error of this thread, for a message.
std::string ssl_error() {
    unsigned long e = ERR_get_error();
    ERR_clear_error();
    if (e == 0) return "unknown error";
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    return buf;
}

// The OpenSSL spelling of configured names, ':'-separated (the parser let only known ones in).
std::string openssl_list(const std::vector<std::string>& names,
                         std::optional<std::string> (*openssl_name)(const std::string&)) {
    std::string list;
    for (const auto& n : names)
        if (auto name = openssl_name(n)) list += (list.empty() ? "" : ":") + *name;
    return list;
}

// RequestClientCert and RequireAnyClientCert ask for a certificate but accept any.
int accept_any_certificate(int, X509_STORE_CTX*) {
    return 1;
}

Result<void> load_compat() {
    const std::string dir = own_directory() + kCompatDir;
    // libcrypto first: the libssl shim depends on the real libssl.so.3, which needs it.
    for (const char* name : {"libcrypto.so", "libssl.so"}) {
        const std::string path = dir + "/" + name;
        if (!dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL)) {
            const char* why = dlerror();
            return fail("TLS needs " + path +
                        " (installed with leakwatchd): " + (why ? why : "cannot load it"));
        }
    }
    if (!(mg_init_library(MG_FEATURES_TLS) & MG_FEATURES_TLS))
        return fail("civetweb could not initialize OpenSSL for TLS");
    return {};
}

}  // namespace

Result<void> init_tls_library() {
    static std::once_flag once;
    static Result<void> result;
    std::call_once(once, [] { result = load_compat(); });
    return result;
}

Result<void> configure_tls(void* ssl_ctx, const TlsServerConfig& tls) {
    auto* ctx = static_cast<SSL_CTX*>(ssl_ctx);
    if (SSL_CTX_use_certificate_chain_file(ctx, tls.cert_file.c_str()) != 1)
        return fail("cert_file " + tls.cert_file + ": " + ssl_error());
    if (SSL_CTX_use_PrivateKey_file(ctx, tls.key_file.c_str(), SSL_FILETYPE_PEM) != 1)
        return fail("key_file " + tls.key_file + ": " + ssl_error());
    if (SSL_CTX_check_private_key(ctx) != 1)
        return fail("key_file " + tls.key_file + " is not the key of cert_file " + tls.cert_file);
    // civetweb switched protocol versions off by options of its own; the versions are ours.
    SSL_CTX_clear_options(
        ctx, SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1 | SSL_OP_NO_TLSv1_2 | SSL_OP_NO_TLSv1_3);
    if (SSL_CTX_set_min_proto_version(ctx, tls.min_version) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, tls.max_version) != 1)
        return fail("min_version/max_version: " + ssl_error());
    if (!tls.cipher_suites.empty() &&
        SSL_CTX_set_cipher_list(ctx,
                                openssl_list(tls.cipher_suites, openssl_cipher_name).c_str()) != 1)
        return fail("cipher_suites: " + ssl_error());
    if (!tls.curve_preferences.empty() &&
        SSL_CTX_set1_groups_list(
            ctx, openssl_list(tls.curve_preferences, openssl_group_name).c_str()) != 1)
        return fail("curve_preferences: " + ssl_error());
    if (!tls.prefer_server_cipher_suites)
        SSL_CTX_clear_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);

    if (!tls.client_ca_file.empty()) {
        if (SSL_CTX_load_verify_locations(ctx, tls.client_ca_file.c_str(), nullptr) != 1)
            return fail("client_ca_file " + tls.client_ca_file + ": " + ssl_error());
        STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(tls.client_ca_file.c_str());
        if (!names) return fail("client_ca_file " + tls.client_ca_file + ": " + ssl_error());
        SSL_CTX_set_client_CA_list(ctx, names);
    }
    const std::string& auth = tls.client_auth_type;
    if (auth == "RequestClientCert")
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, accept_any_certificate);
    else if (auth == "RequireAnyClientCert" || auth == "RequireClientCert")
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                           accept_any_certificate);
    else if (auth == "VerifyClientCertIfGiven")
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    else if (auth == "RequireAndVerifyClientCert")
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    else
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
    // Sessions resumed with a verified client need a context id, or OpenSSL refuses them.
    static const unsigned char kSessionContext[] = "leakwatchd";
    SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof(kSessionContext) - 1);
    return {};
}

}  // namespace leakwatch
