// One HTTP port for /metrics, /api/v1/* and the landing page (civetweb, run directly).
#pragma once

#include <memory>
#include <string>

#include "http/state.h"
#include "util/result.h"

struct mg_context;

namespace leakwatch {

class HttpServer {
  public:
    // listen_address is HOST:PORT, :PORT (all addresses) or [v6]:PORT.
    static Result<std::unique_ptr<HttpServer>> start(const std::string& listen_address,
                                                     const PublishedState& state);
    ~HttpServer();
    int port() const { return port_; }

  private:
    HttpServer(const PublishedState& state) : state_(state) {}
    const PublishedState& state_;
    mg_context* ctx_ = nullptr;
    int port_ = 0;
};

// civetweb's form of a listen address: ":10071" -> "10071".
std::string civetweb_ports(const std::string& listen_address);

}  // namespace leakwatch
