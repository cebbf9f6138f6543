// One HTTP port for /metrics, /api/v1/* and the landing page (civetweb, run directly).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "http/state.h"
#include "util/result.h"

struct mg_context;
struct mg_connection;

namespace leakwatch {

// A query parameter of a query string ("pid=4&top=10", URL-encoded): absent (nullopt), or its
// value parsed as a number no larger than `max` (an inner nullopt when it is not one: too
// long, not digits, out of range).
std::optional<std::optional<uint64_t>> parse_query_number(std::string_view query, const char* name,
                                                          uint64_t max);

class HttpServer {
  public:
    // listen_address is HOST:PORT, :PORT (all addresses) or [v6]:PORT.
    static Result<std::unique_ptr<HttpServer>> start(const std::string& listen_address,
                                                     const PublishedState& state);
    ~HttpServer();
    int port() const { return port_; }

    // Worker threads (each serves one connection at a time) and how long a request may take
    // to arrive before its connection is closed.
    static constexpr int kWorkerThreads = 64;
    static constexpr int kRequestTimeoutMs = 5000;

    // Serves requests whose URI matches civetweb's `pattern` with `handler`, behind the guard
    // every handler has: anything it throws is a 500 (if nothing was sent yet) and counts in
    // leakwatch_http_handler_failures_total{path}.
    using Handler = std::function<int(mg_connection*, const PublishedState&)>;
    void handle(const std::string& pattern, const std::string& path, Handler handler);

  private:
    struct Route;
    explicit HttpServer(const PublishedState& state);
    const PublishedState& state_;
    mg_context* ctx_ = nullptr;
    int port_ = 0;
    std::vector<std::unique_ptr<Route>> routes_;
};

// civetweb's form of a listen address: ":10071" -> "10071".
std::string civetweb_ports(const std::string& listen_address);

}  // namespace leakwatch
