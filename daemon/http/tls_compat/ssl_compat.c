/* libssl.so for civetweb 1.15 as Debian 12 builds it (OpenSSL 1.1 API, loaded by dlopen of
 * "libssl.so"): OpenSSL 3 renamed SSL_get_peer_certificate to SSL_get1_peer_certificate and
 * keeps the old name only as a macro. Everything else civetweb asks for is found through this
 * library's dependency, the real libssl.so.3. leakwatchd loads it by its full path before it
 * initializes civetweb (daemon/http/tls.cpp); it is never on the linker's search path. */
#include <openssl/ssl.h>

#undef SSL_get_peer_certificate

X509* SSL_get_peer_certificate(const SSL* s);

/* Same reference semantics as the 1.1 function: the caller frees the certificate (civetweb
 * does, when the connection closes). */
X509* SSL_get_peer_certificate(const SSL* s) {
    return SSL_get1_peer_certificate(s);
}
