/* libcrypto.so for civetweb 1.15 as Debian 12 builds it: it loads OpenSSL's crypto library by
 * dlopen of "libcrypto.so", a name only libssl-dev provides. This library has nothing of its
 * own: it depends on the real libcrypto.so.3 (linked with --no-as-needed), where civetweb's
 * lookups through it land. See ssl_compat.c. */
typedef int leakwatch_crypto_compat_is_empty;
