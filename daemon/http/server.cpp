#include "http/server.h"

#include <civetweb.h>
#include <malloc.h>
#include <spdlog/spdlog.h>

#include <charconv>
#include <cstring>

#include "http/api.h"
#include "http/metrics.h"
#include "util/clock.h"

namespace leakwatch {

namespace {

// Set by a handler of this worker thread whose answer was large (see end_request).
thread_local bool t_large_answer = false;
constexpr size_t kTrimAfter = 16 * 1024;

void send(mg_connection* conn, int code, const char* type, const std::string& body) {
    if (body.size() >= kTrimAfter) t_large_answer = true;
    mg_printf(conn,
              "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
              "Connection: close\r\n\r\n",
              code, mg_get_response_code_text(conn, code), type, body.size());
    mg_write(conn, body.data(), body.size());
}

void send_json(mg_connection* conn, int code, const nlohmann::json& j) {
    send(conn, code, "application/json", j.dump(2) + "\n");
}

// A query parameter: absent (nullopt), or its value parsed as a number no larger than
// `max` (an inner nullopt when it is not one: too long, not digits, out of range).
std::optional<std::optional<uint64_t>> query_number(const mg_request_info* ri, const char* name,
                                                    uint64_t max) {
    if (!ri->query_string) return std::nullopt;
    char buf[32];
    int n = mg_get_var(ri->query_string, std::strlen(ri->query_string), name, buf, sizeof(buf));
    if (n == -1) return std::nullopt;             // absent
    if (n < 0) return std::optional<uint64_t>();  // -2: longer than any valid number
    uint64_t v = 0;
    auto [end, ec] = std::from_chars(buf, buf + n, v);
    if (n == 0 || ec != std::errc() || end != buf + n || v > max) return std::optional<uint64_t>();
    return std::optional<uint64_t>(v);
}

// The exposition is sent as it is rendered, a piece at a time: chunked to HTTP/1.1 clients
// (Prometheus), delimited by the connection's close to HTTP/1.0 ones.
int handle_metrics(mg_connection* conn, void* cb) {
    auto [snap, status] = static_cast<const PublishedState*>(cb)->read();
    t_large_answer = true;
    const mg_request_info* ri = mg_get_request_info(conn);
    const bool chunked = ri->http_version && std::strcmp(ri->http_version, "1.0") != 0;
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

int handle_processes(mg_connection* conn, void* cb) {
    auto [snap, status] = static_cast<const PublishedState*>(cb)->read();
    send_json(conn, 200, processes_json(*snap));
    return 1;
}

int handle_stacks(mg_connection* conn, void* cb) {
    const mg_request_info* ri = mg_get_request_info(conn);
    auto pid = query_number(ri, "pid", UINT32_MAX);
    if (!pid || !*pid) {
        send_json(conn, 400, {{"error", "query parameter pid=N (a process id) is required"}});
        return 1;
    }
    auto top = query_number(ri, "top", 10000);
    if (top && (!*top || **top == 0)) {
        send_json(conn, 400, {{"error", "top must be a number from 1 to 10000"}});
        return 1;
    }
    auto [snap, status] = static_cast<const PublishedState*>(cb)->read();
    auto j = stacks_json(*snap, static_cast<uint32_t>(**pid), top ? **top : 10);
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
int handle_operator(mg_connection* conn, void* cb, OperatorRequest::Kind kind) {
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
    const auto* state = static_cast<const PublishedState*>(cb);
    auto [snap, status] = state->read();
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
    state->request({kind, static_cast<uint32_t>(**pid)});
    send_json(conn, 202, {{"pid", **pid},
                          {"queued", kind == OperatorRequest::kEscalate ? "escalate" : "release"}});
    return 1;
}

int handle_escalate(mg_connection* conn, void* cb) {
    return handle_operator(conn, cb, OperatorRequest::kEscalate);
}

int handle_release(mg_connection* conn, void* cb) {
    return handle_operator(conn, cb, OperatorRequest::kRelease);
}

int handle_leaks(mg_connection* conn, void* cb) {
    auto [snap, status] = static_cast<const PublishedState*>(cb)->read();
    send_json(conn, 200, leaks_json(*snap, unix_seconds()));
    return 1;
}

int handle_kernel(mg_connection* conn, void* cb) {
    auto top = query_number(mg_get_request_info(conn), "top", 10000);
    if (top && (!*top || **top == 0)) {
        send_json(conn, 400, {{"error", "top must be a number from 1 to 10000"}});
        return 1;
    }
    auto [snap, status] = static_cast<const PublishedState*>(cb)->read();
    auto j = kernel_json(*snap, top ? **top : 10);
    if (!j) {
        send_json(conn, 404, {{"error", "kernel allocation tracking is off (kernel.enabled)"}});
        return 1;
    }
    send_json(conn, 200, *j);
    return 1;
}

int handle_root(mg_connection* conn, void* cb) {
    const mg_request_info* ri = mg_get_request_info(conn);
    if (std::strcmp(ri->local_uri, "/") != 0) {
        send(conn, 404, "text/plain", "not found\n");
        return 1;
    }
    auto [snap, status] = static_cast<const PublishedState*>(cb)->read();
    std::string body =
        "<!DOCTYPE html><html><head><title>leakwatch</title></head><body>"
        "<h1>leakwatch " +
        status.version + "</h1><p>Watching " + std::to_string(status.attached) +
        " processes.</p><ul>"
        "<li><a href=\"/metrics\">/metrics</a>: Prometheus metrics</li>"
        "<li><a href=\"/api/v1/processes\">/api/v1/processes</a>: watched processes</li>"
        "<li>/api/v1/stacks?pid=N&amp;top=K: top allocation stacks of a process, with frames"
        "</li><li><a href=\"/api/v1/leaks\">/api/v1/leaks</a>: what the leak detector suspects, "
        "with growth rates and stacks"
        "</li><li><a href=\"/api/v1/kernel\">/api/v1/kernel</a>?top=K: kernel allocations by "
        "kind, stack and process</li></ul></body></html>\n";
    send(conn, 200, "text/html; charset=utf-8", body);
    return 1;
}

// After a large answer (a JSON document of thousands of frames is built of tens of thousands
// of small allocations; /metrics renders tens of thousands of samples), the freed memory stays
// in the worker thread's malloc arena, and each of the four threads would keep its largest
// answer's worth. A request's locals are gone by the time civetweb calls this.
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
    const char* options[] = {
        "listening_ports", ports.c_str(),       "num_threads", "4",    "request_timeout_ms",
        "10000",           "enable_keep_alive", "no",          nullptr};
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
    void* cb = const_cast<PublishedState*>(&state);
    mg_set_request_handler(server->ctx_, "/metrics$", handle_metrics, cb);
    mg_set_request_handler(server->ctx_, "/api/v1/processes$", handle_processes, cb);
    mg_set_request_handler(server->ctx_, "/api/v1/stacks$", handle_stacks, cb);
    mg_set_request_handler(server->ctx_, "/api/v1/kernel$", handle_kernel, cb);
    mg_set_request_handler(server->ctx_, "/api/v1/leaks$", handle_leaks, cb);
    mg_set_request_handler(server->ctx_, "/api/v1/escalate$", handle_escalate, cb);
    mg_set_request_handler(server->ctx_, "/api/v1/release$", handle_release, cb);
    mg_set_request_handler(server->ctx_, "/", handle_root, cb);

    mg_server_port port{};
    if (mg_get_server_ports(server->ctx_, 1, &port) == 1) server->port_ = port.port;
    return server;
}

HttpServer::~HttpServer() {
    if (ctx_) mg_stop(ctx_);
}

}  // namespace leakwatch
