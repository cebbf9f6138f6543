// One HTTP port for /metrics, /api/v1/*, the pprof paths and the landing page (civetweb, run
// directly); TLS and basic authentication from a web config file (http/web_config.h).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "http/basic_auth.h"
#include "http/state.h"
#include "http/web_config.h"
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
    // listen_address is HOST:PORT, :PORT (all addresses) or [v6]:PORT. web_config_file: the
    // exporter-toolkit web config ("" for plain HTTP without authentication), checked for
    // changes every second: users and headers apply at once, TLS settings and certificate
    // files by restarting the listener.
    static Result<std::unique_ptr<HttpServer>> start(const std::string& listen_address,
                                                     const PublishedState& state,
                                                     const std::string& web_config_file = "");
    ~HttpServer();
    int port() const { return port_; }
    bool tls() const;

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
    // Starts civetweb with this web config (nullptr: none).
    Result<void> start_context(std::shared_ptr<const WebConfig> web);
    void stop_context();
    // Every second: has the web config or a file it names changed? Then apply it.
    void watch_web_config(std::stop_token stop);
    void apply_web_config();
    static int authorize(mg_connection* conn, void* server);
    static int init_ssl(void* ssl_ctx, void* server);

    const PublishedState& state_;
    std::string listen_;
    std::string web_config_file_;
    mutable std::mutex mu_;  // guards web_ and web_error_
    std::shared_ptr<const WebConfig> web_;
    std::string web_error_;  // the web config's problem: until fixed, every request gets 500
    std::string stamp_;      // of the web config and its files, as last applied
    std::string tls_stamp_;  // of the files it names (certificate, key, client CA)
    // The listener: started and stopped by start(), the watcher thread and the destructor,
    // never at once.
    std::shared_ptr<const WebConfig> starting_;  // what init_ssl configures
    std::string tls_error_;                      // what init_ssl found wrong
    BasicAuth auth_;
    mg_context* ctx_ = nullptr;
    std::atomic<int> port_ = 0;
    std::condition_variable_any wake_;
    std::jthread watcher_;
    std::vector<std::unique_ptr<Route>> routes_;  // set again on each start of the listener
};

// civetweb's form of a listen address: ":10071" -> "10071".
std::string civetweb_ports(const std::string& listen_address);

}  // namespace leakwatch
