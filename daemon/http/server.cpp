#include "http/server.h"

#include <civetweb.h>
#include <malloc.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <atomic>
#include <charconv>
#include <cstring>

#include "http/api.h"
#include "http/metrics.h"
#include "http/pprof.h"
#include "http/process_metrics.h"
#include "http/tls.h"
#include "http/ui_assets.h"
#include "util/clock.h"

namespace leakwatch {

namespace {

// Set by a handler of this worker thread whose answer was large (see end_request).
thread_local bool t_large_answer = false;
// Set once a handler of this worker thread has sent its status line: a failure after that
// cannot be answered with a 500 any more.
thread_local bool t_answered = false;
constexpr size_t kTrimAfter = 16 * 1024;
// The web config's http_server_config.headers, as header lines, for this worker thread's
// request (set by HttpServer::authorize, which civetweb calls first).
thread_local std::string t_extra_headers;

// Every answer is bounded: at most this many stacks (of at most 127 frames each) or leaks.
constexpr uint64_t kMaxTop = 1000;
constexpr uint64_t kDefaultLeaks = 100;

void send(mg_connection* conn, int code, const char* type, const std::string& body,
          const char* more_headers = "") {
    if (body.size() >= kTrimAfter) t_large_answer = true;
    t_answered = true;
    mg_printf(conn,
              "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
              "%s%sConnection: close\r\n\r\n",
              code, mg_get_response_code_text(conn, code), type, body.size(),
              t_extra_headers.c_str(), more_headers);
    mg_write(conn, body.data(), body.size());
}

void send_json(mg_connection* conn, int code, const nlohmann::json& j) {
    // Strings from watched processes are shown text already (util/text.h); should one not be,
    // its bad bytes become U+FFFD here rather than an exception.
    send(conn, code, "application/json",
         j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

std::optional<std::optional<uint64_t>> query_number(const mg_request_info* ri, const char* name,
                                                    uint64_t max) {
    if (!ri->query_string) return std::nullopt;
    return parse_query_number(ri->query_string, name, max);
}

// A bounded count parameter (top, limit): its value, `fallback` when absent, nullopt (and a 400
// sent) when it is not a number from 1 to kMaxTop.
std::optional<uint64_t> count_param(mg_connection* conn, const char* name, uint64_t fallback) {
    auto v = query_number(mg_get_request_info(conn), name, kMaxTop);
    if (!v) return fallback;
    if (!*v || **v == 0) {
        send_json(conn, 400,
                  {{"error",
                    std::string(name) + " must be a number from 1 to " + std::to_string(kMaxTop)}});
        return std::nullopt;
    }
    return **v;
}

// The exposition is sent as it is rendered, a piece at a time: chunked to HTTP/1.1 clients
// (Prometheus), delimited by the connection's close to HTTP/1.0 ones.
int handle_metrics(mg_connection* conn, const PublishedState& state) {
    if (auto [text, live] = state.read_exposition(); text) {
        // Published with its snapshot: nothing to render but the live families.
        std::string tail = render_live_metrics(live) + render_process_metrics();
        t_answered = true;
        mg_printf(conn,
                  "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                  "Content-Length: %zu\r\n%sConnection: close\r\n\r\n",
                  text->size() + tail.size(), t_extra_headers.c_str());
        if (mg_write(conn, text->data(), text->size()) > 0)
            mg_write(conn, tail.data(), tail.size());
        return 1;
    }
    auto [snap, status] = state.read();
    t_large_answer = true;
    const mg_request_info* ri = mg_get_request_info(conn);
    const bool chunked = ri->http_version && std::strcmp(ri->http_version, "1.0") != 0;
    t_answered = true;
    mg_printf(conn,
              "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
              "%s%sConnection: close\r\n\r\n",
              chunked ? "Transfer-Encoding: chunked\r\n" : "", t_extra_headers.c_str());
    bool failed = false;  // the client went away: render on, send nothing more
    auto write = [&](std::string_view piece) {
        if (failed) return;
        int n = chunked ? mg_send_chunk(conn, piece.data(), static_cast<unsigned>(piece.size()))
                        : mg_write(conn, piece.data(), piece.size());
        failed = n <= 0;
    };
    render_metrics(*snap, status, write);
    write(render_process_metrics());
    if (chunked && !failed) mg_send_chunk(conn, "", 0);
    return 1;
}

int handle_processes(mg_connection* conn, const PublishedState& state) {
    auto [snap, status] = state.read();
    send_json(conn, 200, processes_json(*snap));
    return 1;
}

int handle_stacks(mg_connection* conn, const PublishedState& state) {
    const mg_request_info* ri = mg_get_request_info(conn);
    auto pid = query_number(ri, "pid", UINT32_MAX);
    if (!pid || !*pid) {
        send_json(conn, 400, {{"error", "query parameter pid=N (a process id) is required"}});
        return 1;
    }
    auto top = count_param(conn, "top", 10);
    if (!top) return 1;
    auto [snap, status] = state.read();
    auto j = stacks_json(*snap, static_cast<uint32_t>(**pid), *top);
    if (!j) {
        send_json(conn, 404, {{"error", "pid " + std::to_string(**pid) + " is not watched"}});
        return 1;
    }
    send_json(conn, 200, *j);
    return 1;
}

// POST /api/v1/escalate?pid=N and /api/v1/release?pid=N: an operator gives a process of the
// watch tier its allocator probes, or takes them back. The main loop does it at its next turn
// (within a poll, 100 ms at most); /api/v1/processes shows the result.
int handle_operator(mg_connection* conn, const PublishedState& state, OperatorRequest::Kind kind) {
    const mg_request_info* ri = mg_get_request_info(conn);
    if (std::strcmp(ri->request_method, "POST") != 0) {
        send_json(conn, 405, {{"error", "use POST"}});
        return 1;
    }
    auto pid = query_number(ri, "pid", UINT32_MAX);
    if (!pid || !*pid) {
        send_json(conn, 400, {{"error", "query parameter pid=N (a process id) is required"}});
        return 1;
    }
    auto [snap, status] = state.read();
    const ProcessView* p = nullptr;
    for (const auto& v : snap->processes)
        if (v.pid == **pid) p = &v;
    if (!p) {
        send_json(conn, 404, {{"error", "pid " + std::to_string(**pid) + " is not watched"}});
        return 1;
    }
    const TrackingState need =
        kind == OperatorRequest::kEscalate ? TrackingState::kWatch : TrackingState::kEscalated;
    if (p->tracking != need) {
        send_json(conn, 409,
                  {{"error", "pid " + std::to_string(**pid) + " is tracked \"" +
                                 tracking_name(p->tracking) + "\"; this needs \"" +
                                 tracking_name(need) + "\""}});
        return 1;
    }
    state.request({kind, static_cast<uint32_t>(**pid)});
    send_json(
        conn, 202,
        {{"pid", **pid}, {"queued", kind == OperatorRequest::kEscalate ? "escalate" : "release"}});
    return 1;
}

int handle_escalate(mg_connection* conn, const PublishedState& state) {
    return handle_operator(conn, state, OperatorRequest::kEscalate);
}

int handle_release(mg_connection* conn, const PublishedState& state) {
    return handle_operator(conn, state, OperatorRequest::kRelease);
}

int handle_leaks(mg_connection* conn, const PublishedState& state) {
    auto limit = count_param(conn, "limit", kDefaultLeaks);
    if (!limit) return 1;
    auto offset = query_number(mg_get_request_info(conn), "offset", UINT32_MAX);
    if (offset && !*offset) {
        send_json(conn, 400, {{"error", "offset must be a number (0 or more)"}});
        return 1;
    }
    auto [snap, status] = state.read();
    LeaksPage page{offset ? **offset : 0, *limit, status.expose_kernel_addresses};
    send_json(conn, 200, leaks_json(*snap, unix_seconds(), page));
    return 1;
}

int handle_kernel(mg_connection* conn, const PublishedState& state) {
    auto top = count_param(conn, "top", 10);
    if (!top) return 1;
    auto [snap, status] = state.read();
    auto j = kernel_json(*snap, *top, status.expose_kernel_addresses);
    if (!j) {
        send_json(conn, 404, {{"error", "kernel allocation tracking is off (kernel.enabled)"}});
        return 1;
    }
    send_json(conn, 200, *j);
    return 1;
}

// The landing page and its script and style (http/ui/, built into the binary); the page
// shows the daemon's version.
int handle_root(mg_connection* conn, const PublishedState& state) {
    const mg_request_info* ri = mg_get_request_info(conn);
    for (const UiAsset& asset : kUiAssets) {
        if (std::strcmp(ri->local_uri, asset.path) != 0) continue;
        std::string body(asset.body);
        constexpr std::string_view kVersion = "@VERSION@";
        if (size_t at = body.find(kVersion); at != std::string::npos)
            body.replace(at, kVersion.size(), state.read().second.version);
        send(conn, 200, asset.content_type, body);
        return 1;
    }
    send(conn, 404, "text/plain", "not found\n");
    return 1;
}

// A query parameter as text of at most `max` bytes: absent (nullopt), or an inner nullopt when
// it is longer.
std::optional<std::optional<std::string>> query_text(const mg_request_info* ri, const char* name,
                                                     size_t max) {
    if (!ri->query_string) return std::nullopt;
    std::string buf(max + 1, '\0');
    int n =
        mg_get_var(ri->query_string, std::strlen(ri->query_string), name, buf.data(), buf.size());
    if (n == -1) return std::nullopt;
    if (n < 0) return std::optional<std::string>();
    buf.resize(static_cast<size_t>(n));
    return std::optional<std::string>(buf);
}

// ?pid=N, ?watch=NAME or ?kernel=1 (gc=1 and debug=0, which Go's clients send to
// /debug/pprof/heap, are ignored); sends 400 itself and returns nullopt when malformed.
std::optional<ProfileSelection> profile_selection(mg_connection* conn) {
    const mg_request_info* ri = mg_get_request_info(conn);
    ProfileSelection sel;
    auto pid = query_number(ri, "pid", UINT32_MAX);
    auto watch = query_text(ri, "watch", 256);
    auto kernel = query_number(ri, "kernel", 1);
    if ((pid && !*pid) || (watch && !*watch) || (kernel && !*kernel)) {
        send_json(conn, 400,
                  {{"error",
                    "pid must be a process id, watch a rule name (at most "
                    "256 bytes) and kernel 0 or 1"}});
        return std::nullopt;
    }
    if (pid) sel.pid = static_cast<uint32_t>(**pid);
    if (watch) sel.watch = **watch;
    sel.kernel = kernel && **kernel == 1;
    if (sel.kernel && (sel.pid || sel.watch)) {
        send_json(conn, 400, {{"error", "kernel=1 does not combine with pid or watch"}});
        return std::nullopt;
    }
    return sel;
}

// What a profile handler answers from: the snapshot and the selection; nullopt when the request
// was answered already (400 for a bad query, 404 for nothing to profile).
struct ProfileRequest {
    std::shared_ptr<const Snapshot> snapshot;
    DaemonStatus status;
    ProfileSelection selection;
};

std::optional<ProfileRequest> profile_request(mg_connection* conn, const PublishedState& state) {
    auto sel = profile_selection(conn);
    if (!sel) return std::nullopt;
    auto [snap, status] = state.read();
    if (auto why = missing_target(*snap, *sel)) {
        send_json(conn, 404, {{"error", *why}});
        return std::nullopt;
    }
    return ProfileRequest{std::move(snap), std::move(status), *sel};
}

int handle_pprof(mg_connection* conn, const PublishedState& state) {
    auto req = profile_request(conn, state);
    if (!req) return 1;
    auto profile = pprof_profile(*req->snapshot, req->selection, req->status.version);
    if (!profile) {
        send_json(conn, 500, {{"error", profile.error().message}});
        return 1;
    }
    // As Go's net/http/pprof serves it: gzip is the file format, not a transfer encoding.
    send(conn, 200, "application/octet-stream", *profile,
         "Content-Disposition: attachment; filename=\"heap.pb.gz\"\r\n");
    return 1;
}

int handle_folded(mg_connection* conn, const PublishedState& state) {
    auto req = profile_request(conn, state);
    if (!req) return 1;
    send(conn, 200, "text/plain; charset=utf-8", folded_stacks(*req->snapshot, req->selection));
    return 1;
}

int handle_history(mg_connection* conn, const PublishedState& state) {
    auto pid = query_number(mg_get_request_info(conn), "pid", UINT32_MAX);
    if (!pid || !*pid) {
        send_json(conn, 400, {{"error", "query parameter pid=N (a process id) is required"}});
        return 1;
    }
    auto points = state.history(static_cast<uint32_t>(**pid));
    if (!points) {
        send_json(conn, 404, {{"error", "pid " + std::to_string(**pid) + " is not watched"}});
        return 1;
    }
    auto list = nlohmann::json::array();
    for (const auto& [t, bytes] : *points) list.push_back({t, bytes});
    send_json(conn, 200, {{"pid", **pid}, {"outstanding_bytes", list}});
    return 1;
}

// After a large answer (a JSON document of thousands of frames is built of tens of thousands
// of small allocations; /metrics renders tens of thousands of samples), the freed memory stays
// in the worker thread's malloc arena, and each thread would keep its largest answer's worth.
// A request's locals are gone by the time civetweb calls this.
void end_request(const mg_connection*, int) {
    if (!t_large_answer) return;
    t_large_answer = false;
    malloc_trim(0);
}

// What tells that a file changed: its inode, size, modification and change times ("-" when
// it cannot be read).
std::string file_stamp(const std::string& path) {
    struct stat st {};
    if (stat(path.c_str(), &st) != 0) return "-;";
    return std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) + ":" +
           std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec) + ":" +
           std::to_string(st.st_ctim.tv_sec) + "." + std::to_string(st.st_ctim.tv_nsec) + ";";
}

std::string files_stamp(const std::vector<std::string>& files) {
    std::string out;
    for (const auto& f : files) out += file_stamp(f);
    return out;
}

int log_message(const mg_connection*, const char* message) {
    spdlog::warn("http: {}", message);
    return 1;
}

}  // namespace

std::optional<std::optional<uint64_t>> parse_query_number(std::string_view query, const char* name,
                                                          uint64_t max) {
    char buf[32];
    int n = mg_get_var(query.data(), query.size(), name, buf, sizeof(buf));
    if (n == -1) return std::nullopt;             // absent
    if (n < 0) return std::optional<uint64_t>();  // -2: longer than any valid number
    uint64_t v = 0;
    auto [end, ec] = std::from_chars(buf, buf + n, v);
    if (n == 0 || ec != std::errc() || end != buf + n || v > max) return std::optional<uint64_t>();
    return std::optional<uint64_t>(v);
}

// A handler behind the guard: nothing it throws leaves it (civetweb is C, and an exception
// through it ends the process). A failure is a 500 when nothing was sent yet, and is counted.
struct HttpServer::Route {
    std::string pattern;  // civetweb's URI pattern
    std::string path;
    Handler handler;
    PublishedState* state;
    std::atomic<uint64_t> failures{0};

    static int dispatch(mg_connection* conn, void* cb) {
        auto* route = static_cast<Route*>(cb);
        t_answered = false;
        std::string what;
        try {
            return route->handler(conn, *route->state);
        } catch (const std::exception& e) {
            what = e.what();
        } catch (...) {
            what = "an unknown exception";
        }
        route->state->count_failure(route->path);
        // Logged the 1st, 10th, 100th... time: a client that makes it fail at will cannot
        // flood the log.
        uint64_t n = ++route->failures;
        if (n == 1 || n == 10 || n == 100 || n % 1000 == 0)
            spdlog::error(
                "http: {} failed ({} so far, counted in "
                "leakwatch_http_handler_failures_total): {}",
                route->path, n, what);
        try {
            if (!t_answered) send_json(conn, 500, {{"error", "internal error: " + what}});
        } catch (...) {
            // Nothing more can be done for this request.
        }
        return 1;
    }
};

HttpServer::HttpServer(const PublishedState& state) : state_(state) {}

std::string civetweb_ports(const std::string& listen_address) {
    if (!listen_address.empty() && listen_address[0] == ':') return listen_address.substr(1);
    if (!listen_address.empty() && listen_address[0] == '[') {
        // civetweb writes IPv6 as "[addr]:port" with a '+' suffix for dual-stack; keep as is.
        return listen_address;
    }
    return listen_address;
}

Result<std::unique_ptr<HttpServer>> HttpServer::start(const std::string& listen_address,
                                                      const PublishedState& state,
                                                      const std::string& web_config_file) {
    std::unique_ptr<HttpServer> server(new HttpServer(state));
    server->listen_ = listen_address;
    server->web_config_file_ = web_config_file;
    if (!listen_address.empty() && listen_address[0] == '[' && !mg_check_feature(8))
        return fail("cannot listen on " + listen_address +
                    ": this build of civetweb has no IPv6 support; use an IPv4 address");
    mg_init_library(0);
    std::shared_ptr<const WebConfig> web;
    if (!web_config_file.empty()) {
        auto loaded = load_web_config(web_config_file);
        if (!loaded) return std::unexpected(loaded.error());
        web = std::make_shared<const WebConfig>(std::move(*loaded));
        server->tls_stamp_ = files_stamp(web->files());
        server->stamp_ = file_stamp(web_config_file) + server->tls_stamp_;
        if (web->tls)
            if (auto ok = init_tls_library(); !ok) return std::unexpected(ok.error());
    }
    server->web_ = web;
    server->handle("/metrics$", "/metrics", handle_metrics);
    server->handle("/api/v1/processes$", "/api/v1/processes", handle_processes);
    server->handle("/api/v1/stacks$", "/api/v1/stacks", handle_stacks);
    server->handle("/api/v1/kernel$", "/api/v1/kernel", handle_kernel);
    server->handle("/api/v1/leaks$", "/api/v1/leaks", handle_leaks);
    server->handle("/api/v1/escalate$", "/api/v1/escalate", handle_escalate);
    server->handle("/api/v1/release$", "/api/v1/release", handle_release);
    server->handle("/api/v1/history$", "/api/v1/history", handle_history);
    server->handle("/api/v1/pprof$", "/api/v1/pprof", handle_pprof);
    server->handle("/api/v1/folded$", "/api/v1/folded", handle_folded);
    // Where Parca's and Pyroscope's scrapers look by default (Go's net/http/pprof paths).
    server->handle("/debug/pprof/heap$", "/debug/pprof/heap", handle_pprof);
    server->handle("/debug/pprof/allocs$", "/debug/pprof/allocs", handle_pprof);
    server->handle("/", "/", handle_root);
    if (auto ok = server->start_context(web); !ok) return std::unexpected(ok.error());
    if (!web_config_file.empty())
        server->watcher_ =
            std::jthread([s = server.get()](std::stop_token stop) { s->watch_web_config(stop); });
    return server;
}

Result<void> HttpServer::start_context(std::shared_ptr<const WebConfig> web) {
    // After the first start, the port it got (listen_address may have asked for any).
    std::string address = listen_;
    if (port_ != 0) address = address.substr(0, address.rfind(':') + 1) + std::to_string(port_);
    std::string ports = civetweb_ports(address) + (web && web->tls ? "s" : "");
    // A worker serves one connection at a time, from its first byte to its last: a client
    // that sends its request slowly holds one for up to request_timeout_ms. With many workers
    // and that timeout short, slow clients do not keep a scrape from one (docs/operations.md
    // has the figures).
    const std::string threads = std::to_string(kWorkerThreads);
    const std::string timeout = std::to_string(kRequestTimeoutMs);
    const char* options[] = {"listening_ports",
                             ports.c_str(),
                             "num_threads",
                             threads.c_str(),
                             "request_timeout_ms",
                             timeout.c_str(),
                             "enable_keep_alive",
                             "no",
                             nullptr};
    mg_callbacks callbacks{};
    callbacks.log_message = log_message;
    callbacks.end_request = end_request;
    callbacks.init_ssl = init_ssl;
    mg_init_data init{};
    init.callbacks = &callbacks;
    init.user_data = this;
    init.configuration_options = options;
    char text[256] = {};
    unsigned code = 0;
    mg_error_data error{};
    error.code = &code;
    error.text = text;
    error.text_buffer_size = sizeof(text);
    starting_ = web;
    tls_error_.clear();
    mg_context* ctx = mg_start2(&init, &error);
    if (!ctx) {
        std::string why = !tls_error_.empty() ? tls_error_
                          : text[0]           ? std::string(text)
                                              : "unknown error";
        return fail("cannot listen on " + listen_ + (web && web->tls ? " with TLS" : "") + ": " +
                    why);
    }
    mg_set_auth_handler(ctx, "/", authorize, this);
    // Every route behind the handler guard (Route::dispatch), registered again on each start
    // of the listener (a TLS change restarts it).
    for (const auto& route : routes_)
        mg_set_request_handler(ctx, route->pattern.c_str(), Route::dispatch, route.get());

    mg_server_port port{};
    if (mg_get_server_ports(ctx, 1, &port) == 1) port_ = port.port;
    ctx_ = ctx;
    return {};
}

void HttpServer::stop_context() {
    if (ctx_) mg_stop(ctx_);
    ctx_ = nullptr;
}

bool HttpServer::tls() const {
    std::lock_guard lock(mu_);
    return web_ && web_->tls;
}

int HttpServer::init_ssl(void* ssl_ctx, void* self) {
    auto* server = static_cast<HttpServer*>(self);
    if (!server->starting_ || !server->starting_->tls) return -1;
    auto ok = configure_tls(ssl_ctx, *server->starting_->tls);
    if (!ok) {
        server->tls_error_ = ok.error().message;
        return -1;
    }
    return 1;  // everything is set up: civetweb loads no certificate of its own
}

int HttpServer::authorize(mg_connection* conn, void* self) {
    auto* server = static_cast<HttpServer*>(self);
    std::shared_ptr<const WebConfig> web;
    std::string error;
    {
        std::lock_guard lock(server->mu_);
        web = server->web_;
        error = server->web_error_;
    }
    t_extra_headers.clear();
    if (web)
        for (const auto& [name, value] : web->headers)
            t_extra_headers += name + ": " + value + "\r\n";
    // A broken web config fails closed, as the exporter-toolkit does: until it is fixed
    // nobody gets in, rather than everybody.
    if (!error.empty()) {
        send(conn, 500, "text/plain", "the web config is invalid; see the daemon's log\n");
        return 0;
    }
    if (!web || web->users.empty()) return 1;
    if (server->auth_.allows(web->users, mg_get_header(conn, "Authorization"))) return 1;
    send(conn, 401, "text/plain", "Unauthorized\n",
         "WWW-Authenticate: Basic realm=\"leakwatch\", charset=\"UTF-8\"\r\n");
    return 0;
}

void HttpServer::watch_web_config(std::stop_token stop) {
    std::mutex sleep_mu;
    std::unique_lock sleep_lock(sleep_mu);
    while (!stop.stop_requested()) {
        wake_.wait_for(sleep_lock, stop, std::chrono::seconds(1), [] { return false; });
        if (stop.stop_requested()) break;
        apply_web_config();
    }
}

void HttpServer::apply_web_config() {
    std::shared_ptr<const WebConfig> old;
    {
        std::lock_guard lock(mu_);
        old = web_;
    }
    const std::string stamp =
        file_stamp(web_config_file_) + (old ? files_stamp(old->files()) : std::string());
    if (stamp == stamp_) return;
    stamp_ = stamp;
    auto loaded = load_web_config(web_config_file_);
    if (!loaded) {
        spdlog::error("web config: {}; every request is refused with 500 until it is fixed",
                      loaded.error().message);
        std::lock_guard lock(mu_);
        web_error_ = loaded.error().message;
        return;
    }
    auto fresh = std::make_shared<const WebConfig>(std::move(*loaded));
    const std::string tls_files = files_stamp(fresh->files());
    stamp_ = file_stamp(web_config_file_) + tls_files;
    if (fresh->tls)
        if (auto ok = init_tls_library(); !ok) {
            spdlog::error("web config: {}; keeping the running listener", ok.error().message);
            return;
        }
    {
        std::lock_guard lock(mu_);
        web_ = fresh;
        web_error_.clear();
    }
    // Users and headers are read by each request. civetweb builds its SSL_CTX when it starts,
    // so a certificate or TLS setting takes a restart of the listener (about 2 s during which
    // connections are refused). Not under mu_: stopping waits for requests, which take it.
    const bool same_tls = (old ? old->tls : std::nullopt) == fresh->tls && tls_files == tls_stamp_;
    tls_stamp_ = tls_files;
    if (same_tls) {
        spdlog::info("web config {} reloaded: {} users", web_config_file_, fresh->users.size());
        return;
    }
    stop_context();
    auto ok = start_context(fresh);
    if (ok) {
        spdlog::info("web config {} reloaded: listening again with {}, {} users", web_config_file_,
                     fresh->tls ? "TLS" : "plain HTTP", fresh->users.size());
        return;
    }
    spdlog::error("web config: {}; going back to the previous one", ok.error().message);
    {
        std::lock_guard lock(mu_);
        web_ = old;
    }
    if (auto again = start_context(old); !again)
        spdlog::critical("web config: cannot listen again: {}", again.error().message);
}

void HttpServer::handle(const std::string& pattern, const std::string& path, Handler handler) {
    auto route = std::make_unique<Route>();
    route->pattern = pattern;
    route->path = path;
    route->handler = std::move(handler);
    route->state = const_cast<PublishedState*>(&state_);
    route->state->count_failure(path, 0);
    // civetweb matches the patterns in the order they were set: the routes set before the
    // listener started are set by start_context; one added to a running listener here.
    if (ctx_) mg_set_request_handler(ctx_, pattern.c_str(), Route::dispatch, route.get());
    routes_.push_back(std::move(route));
}

HttpServer::~HttpServer() {
    if (watcher_.joinable()) {
        watcher_.request_stop();
        watcher_.join();
    }
    stop_context();
}

}  // namespace leakwatch
