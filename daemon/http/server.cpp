#include "http/server.h"

#include <civetweb.h>
#include <malloc.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <charconv>
#include <cstring>

#include "http/api.h"
#include "http/metrics.h"
#include "util/clock.h"

namespace leakwatch {

namespace {

// Set by a handler of this worker thread whose answer was large (see end_request).
thread_local bool t_large_answer = false;
// Set once a handler of this worker thread has sent its status line: a failure after that
// cannot be answered with a 500 any more.
thread_local bool t_answered = false;
constexpr size_t kTrimAfter = 16 * 1024;

// Every answer is bounded: at most this many stacks (of at most 127 frames each) or leaks.
constexpr uint64_t kMaxTop = 1000;
constexpr uint64_t kDefaultLeaks = 100;

void send(mg_connection* conn, int code, const char* type, const std::string& body) {
    if (body.size() >= kTrimAfter) t_large_answer = true;
    t_answered = true;
    mg_printf(conn,
              "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
              "Connection: close\r\n\r\n",
              code, mg_get_response_code_text(conn, code), type, body.size());
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
    auto [snap, status] = state.read();
    t_large_answer = true;
    const mg_request_info* ri = mg_get_request_info(conn);
    const bool chunked = ri->http_version && std::strcmp(ri->http_version, "1.0") != 0;
    t_answered = true;
    mg_printf(conn,
              "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
              "%sConnection: close\r\n\r\n",
              chunked ? "Transfer-Encoding: chunked\r\n" : "");
    bool failed = false;  // the client went away: render on, send nothing more
    render_metrics(*snap, status, [&](std::string_view piece) {
        if (failed) return;
        int n = chunked ? mg_send_chunk(conn, piece.data(), static_cast<unsigned>(piece.size()))
                        : mg_write(conn, piece.data(), piece.size());
        failed = n <= 0;
    });
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

int handle_root(mg_connection* conn, const PublishedState& state) {
    const mg_request_info* ri = mg_get_request_info(conn);
    if (std::strcmp(ri->local_uri, "/") != 0) {
        send(conn, 404, "text/plain", "not found\n");
        return 1;
    }
    auto [snap, status] = state.read();
    std::string body =
        "<!DOCTYPE html><html><head><title>leakwatch</title></head><body>"
        "<h1>leakwatch " +
        status.version + "</h1><p>Watching " + std::to_string(status.attached) +
        " processes.</p><ul>"
        "<li><a href=\"/metrics\">/metrics</a>: Prometheus metrics</li>"
        "<li><a href=\"/api/v1/processes\">/api/v1/processes</a>: watched processes</li>"
        "<li>/api/v1/stacks?pid=N&amp;top=K: top allocation stacks of a process, with frames"
        "</li><li><a href=\"/api/v1/leaks\">/api/v1/leaks</a>?offset=N&amp;limit=K: what the "
        "leak detector suspects, with growth rates and stacks"
        "</li><li><a href=\"/api/v1/kernel\">/api/v1/kernel</a>?top=K: kernel allocations by "
        "kind, stack and process</li></ul></body></html>\n";
    send(conn, 200, "text/html; charset=utf-8", body);
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
                                                      const PublishedState& state) {
    std::unique_ptr<HttpServer> server(new HttpServer(state));
    std::string ports = civetweb_ports(listen_address);
    if (!listen_address.empty() && listen_address[0] == '[' && !mg_check_feature(8))
        return fail("cannot listen on " + listen_address +
                    ": this build of civetweb has no IPv6 support; use an IPv4 address");
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
    mg_init_data init{};
    init.callbacks = &callbacks;
    init.user_data = server.get();
    init.configuration_options = options;
    char text[256] = {};
    unsigned code = 0;
    mg_error_data error{};
    error.code = &code;
    error.text = text;
    error.text_buffer_size = sizeof(text);
    mg_init_library(0);
    server->ctx_ = mg_start2(&init, &error);
    if (!server->ctx_)
        return fail("cannot listen on " + listen_address + ": " +
                    (text[0] ? std::string(text) : "unknown error"));
    server->handle("/metrics$", "/metrics", handle_metrics);
    server->handle("/api/v1/processes$", "/api/v1/processes", handle_processes);
    server->handle("/api/v1/stacks$", "/api/v1/stacks", handle_stacks);
    server->handle("/api/v1/kernel$", "/api/v1/kernel", handle_kernel);
    server->handle("/api/v1/leaks$", "/api/v1/leaks", handle_leaks);
    server->handle("/api/v1/escalate$", "/api/v1/escalate", handle_escalate);
    server->handle("/api/v1/release$", "/api/v1/release", handle_release);
    server->handle("/", "/", handle_root);

    mg_server_port port{};
    if (mg_get_server_ports(server->ctx_, 1, &port) == 1) server->port_ = port.port;
    return server;
}

void HttpServer::handle(const std::string& pattern, const std::string& path, Handler handler) {
    auto route = std::make_unique<Route>();
    route->path = path;
    route->handler = std::move(handler);
    route->state = const_cast<PublishedState*>(&state_);
    route->state->count_failure(path, 0);
    mg_set_request_handler(ctx_, pattern.c_str(), Route::dispatch, route.get());
    routes_.push_back(std::move(route));
}

HttpServer::~HttpServer() {
    if (ctx_) mg_stop(ctx_);
}

}  // namespace leakwatch
