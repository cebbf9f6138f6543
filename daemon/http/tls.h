// TLS for civetweb: making Debian 12's civetweb able to use OpenSSL 3, and configuring its
// SSL_CTX from the web config's tls_server_config.
#pragma once

#include "http/web_config.h"
#include "util/result.h"

namespace leakwatch {

// Initializes civetweb's TLS support. Debian 12's civetweb 1.15 loads OpenSSL at run time by
// the names libssl.so and libcrypto.so (which only libssl-dev provides) and asks it for
// SSL_get_peer_certificate, which OpenSSL 3 no longer exports: without help its first HTTPS
// request crashes the server. Two shim libraries of ours with those names (the one defines
// the missing function through SSL_get1_peer_certificate), in `lib/leakwatch/` beside the
// daemon's directory (/usr/lib/leakwatch for /usr/sbin/leakwatchd), are loaded first, so that
// civetweb finds them by name. Fails, naming what is missing, rather than start a TLS
// listener that would crash. Idempotent.
Result<void> init_tls_library();

// Sets up civetweb's SSL_CTX (its init_ssl callback): certificate chain and key, protocol
// versions, cipher suites (for TLS 1.2 and older, as Go's crypto/tls), curves, and client
// certificate verification as client_auth_type asks.
Result<void> configure_tls(void* ssl_ctx, const TlsServerConfig& tls);

}  // namespace leakwatch
