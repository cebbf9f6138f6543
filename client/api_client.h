// The daemon's HTTP API as the client reaches it (libcurl): plain HTTP or TLS, with a client
// certificate and basic authentication when the daemon's web config asks for them.
#pragma once

#include <string>

#include "util/result.h"

namespace leakwatch::client {

struct Connection {
    std::string url = "http://localhost:10071";  // the daemon's base URL
    std::string ca_file;    // verifies the daemon's certificate (else the system's CAs)
    std::string cert_file;  // a client certificate (client_auth_type), PEM
    std::string key_file;   // its key
    bool insecure = false;  // do not verify the daemon's certificate
    std::string user;       // basic authentication
    std::string password;
    long timeout_seconds = 30;
};

struct Response {
    long status = 0;
    std::string body;
};

// GET url + path. Fails, saying where and why, when the daemon cannot be reached; an HTTP
// error status is a response, not a failure.
Result<Response> get(const Connection& c, const std::string& path);

// `text` escaped for a URL's query string.
std::string url_encode(const std::string& text);

// The message for a response that is not 200: the daemon's own error text when it sent one.
std::string http_error(const Connection& c, const std::string& path, const Response& r);

}  // namespace leakwatch::client
