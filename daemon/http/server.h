// One HTTP port for /metrics, /api/v1/*, the pprof paths and the landing page (civetweb, run
// directly); TLS and basic authentication from a web config file (http/web_config.h).
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "http/basic_auth.h"
#include "http/state.h"
#include "http/web_config.h"
#include "util/result.h"

struct mg_context;
struct mg_connection;

namespace leakwatch {

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

  private:
    HttpServer(const PublishedState& state) : state_(state) {}
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
};

// civetweb's form of a listen address: ":10071" -> "10071".
std::string civetweb_ports(const std::string& listen_address);

}  // namespace leakwatch
