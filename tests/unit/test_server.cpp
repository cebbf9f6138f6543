// One real HttpServer (http/server.cpp) on an ephemeral port, fetched over TCP by a tiny
// HTTP/1.0 client.
#include <civetweb.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "http/api.h"
#include "http/metrics.h"
#include "http/server.h"
#include "http/state.h"
#include "http_support.h"

using namespace leakwatch;
using namespace http_support;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

// --- civetweb_ports ------------------------------------------------------------------------

TEST_CASE("civetweb_ports turns listen addresses into civetweb's form", "[http][server]") {
    CHECK(civetweb_ports(":10071") == "10071");
    CHECK(civetweb_ports("127.0.0.1:10071") == "127.0.0.1:10071");
    CHECK(civetweb_ports("0.0.0.0:80") == "0.0.0.0:80");
    CHECK(civetweb_ports("[::1]:10071") == "[::1]:10071");
}

// --- a real server -------------------------------------------------------------------------

TEST_CASE("HttpServer serves metrics, the API and the landing page on one port", "[http][server]") {
    auto snap = std::make_shared<const Snapshot>(make_snapshot());
    auto status = make_status();
    PublishedState state;
    state.publish(snap, status);

    auto server = HttpServer::start("127.0.0.1:0", state);
    if (!server) FAIL(server.error().message);
    int port = (*server)->port();
    INFO("port() " << port);
    REQUIRE(port > 0);
    REQUIRE(port < 65536);
    // One server for every check below: civetweb's mg_stop takes about 2 s.

    {
        INFO("/metrics");
        auto r = http_get(port, "/metrics");
        CHECK(r.status == 200);
        CHECK_THAT(r.headers["content-type"], StartsWith("text/plain; version=0.0.4"));
        // The snapshot's exposition, then the daemon's own process_* figures.
        const std::string rendered = render_metrics(*snap, state.read().second);
        CHECK(r.body.substr(0, rendered.size()) == rendered);
        CHECK_THAT(r.body.substr(rendered.size()), StartsWith("# HELP process_cpu_seconds_total"));
        auto exp = parse_exposition(r.body);
        CHECK(exp.one("leakwatch_outstanding_bytes", process_labels("app", 100, "appd")).value ==
              1073741824.0);
    }
    {
        INFO("/api/v1/processes");
        auto r = http_get(port, "/api/v1/processes");
        CHECK(r.status == 200);
        CHECK(json_body(r) == processes_json(*snap));
    }
    {
        INFO("/api/v1/stacks?pid=N&top=1");
        auto r = http_get(port, "/api/v1/stacks?pid=100&top=1");
        CHECK(r.status == 200);
        auto j = json_body(r);
        CHECK(j == *stacks_json(*snap, 100, 1));
        REQUIRE(j["stacks"].size() == 1);
        CHECK(j["stacks"][0]["site"] == "record_entry");
        CHECK(j["stacks"][0]["frames"].size() == 3);

        auto all = json_body(http_get(port, "/api/v1/stacks?pid=100"));
        CHECK(all["stacks"].size() == 3);
    }
    {
        INFO("/api/v1/stacks without pid is a bad request");
        auto r = http_get(port, "/api/v1/stacks");
        CHECK(r.status == 400);
        CHECK(json_body(r).contains("error"));
        CHECK(http_get(port, "/api/v1/stacks?pid=abc").status == 400);
    }
    {
        INFO("/api/v1/stacks of a pid that is not watched");
        auto r = http_get(port, "/api/v1/stacks?pid=999");
        CHECK(r.status == 404);
        CHECK(json_body(r).contains("error"));
    }
    {
        INFO("/api/v1/stacks with a bad top");
        for (const char* top : {"abc", "0", "", "-1", "1001", "10001"}) {
            INFO("top=" << top);
            auto r = http_get(port, std::string("/api/v1/stacks?pid=100&top=") + top);
            CHECK(r.status == 400);
            CHECK(json_body(r).contains("error"));
        }
    }
    {
        INFO("/api/v1/leaks is paged");
        auto r = json_body(http_get(port, "/api/v1/leaks?offset=0&limit=5"));
        CHECK(r["limit"] == 5);
        CHECK(r["offset"] == 0);
        CHECK(r.contains("total"));
        CHECK(http_get(port, "/api/v1/leaks?limit=1001").status == 400);
        CHECK(http_get(port, "/api/v1/leaks?limit=0").status == 400);
        CHECK(http_get(port, "/api/v1/leaks?offset=x").status == 400);
        CHECK(json_body(http_get(port, "/api/v1/leaks"))["limit"] == 100);
    }
    {
        INFO("/ is the landing page");
        auto r = http_get(port, "/");
        CHECK(r.status == 200);
        CHECK_THAT(r.headers["content-type"], StartsWith("text/html"));
        CHECK_THAT(r.body, Contains("leakwatch 0.1.0-test"));
        CHECK_THAT(r.body, Contains("href=\"/metrics\""));
    }
    {
        INFO("unknown paths are 404");
        CHECK(http_get(port, "/nope").status == 404);
        CHECK(http_get(port, "/api/v1/nope").status == 404);
        CHECK(http_get(port, "/metricsx").status == 404);
    }
    {
        INFO("a newly published snapshot is what the next request sees");
        auto next = make_snapshot();
        next.processes.pop_back();
        state.publish(std::make_shared<const Snapshot>(next), status);
        auto after = parse_exposition(http_get(port, "/metrics").body);
        CHECK(after.named("leakwatch_outstanding_bytes").size() == 1);
        CHECK(json_body(http_get(port, "/api/v1/processes")) == processes_json(next));
    }
}

TEST_CASE("HttpServer::start fails with a message when the port is taken", "[http][server]") {
    PublishedState state;
    auto first = HttpServer::start("127.0.0.1:0", state);
    if (!first) FAIL(first.error().message);
    std::string address = "127.0.0.1:" + std::to_string((*first)->port());
    auto second = HttpServer::start(address, state);
    REQUIRE_FALSE(second.has_value());
    CHECK_THAT(second.error().message, Contains("cannot listen on " + address));
}

// Query values past uint32 (pids) or longer than any number (top) are errors, not wrapped or
// ignored. One server for both: mg_stop takes about 2 s.
TEST_CASE("HttpServer rejects pids above 2^32-1 and long top values", "[http][server]") {
    PublishedState state;
    state.publish(std::make_shared<const Snapshot>(make_snapshot()), make_status());
    auto server = HttpServer::start("127.0.0.1:0", state);
    if (!server) FAIL(server.error().message);
    int port = (*server)->port();
    auto wrapped = http_get(port, "/api/v1/stacks?pid=4294967396");
    INFO("pid=4294967396: status " << wrapped.status);
    CHECK((wrapped.status == 400 || wrapped.status == 404));
    auto long_top = http_get(port, "/api/v1/stacks?pid=100&top=" + std::string(40, 'a'));
    CHECK(long_top.status == 400);
}

// Debian's libcivetweb 1.15 is built without IPv6 (mg_check_feature(8) == 0): either
// listening works, or the error says that IPv6 is not supported.
TEST_CASE("HttpServer listens on [::1] or says IPv6 is unsupported", "[http][server]") {
    PublishedState state;
    auto server = HttpServer::start("[::1]:0", state);
    if (server) {
        CHECK((*server)->port() > 0);
    } else {
        CHECK_THAT(server.error().message, Contains("IPv6"));
    }
}

// civetweb is C: an exception out of a handler would end the daemon. Every handler is behind
// one guard, tried here with handlers that fail before and after answering.
TEST_CASE("a handler that throws is a 500 and a counted failure, never a crash", "[http][server]") {
    PublishedState state;
    state.publish(std::make_shared<const Snapshot>(make_snapshot()), make_status());
    auto server = HttpServer::start("127.0.0.1:0", state);
    if (!server) FAIL(server.error().message);
    (*server)->handle(
        "/test/throws", "/test/throws",
        [](mg_connection*, const PublishedState&) -> int { throw std::runtime_error("boom"); });
    (*server)->handle("/test/unknown", "/test/unknown",
                      [](mg_connection*, const PublishedState&) -> int { throw 42; });
    // The JSON the daemon once threw on: invalid UTF-8 from a process's name.
    (*server)->handle("/test/json", "/test/json", [](mg_connection* c, const PublishedState&) {
        nlohmann::json j = {{"comm", "\xff\xfeleak"}};
        mg_printf(c, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n%s",
                  j.dump(-1, ' ', false, nlohmann::json::error_handler_t::strict).c_str());
        return 1;
    });
    int port = (*server)->port();
    auto r = http_get(port, "/test/throws");
    CHECK(r.status == 500);
    CHECK_THAT(json_body(r)["error"].get<std::string>(), Contains("boom"));
    CHECK(http_get(port, "/test/unknown").status == 500);
    CHECK(http_get(port, "/test/unknown").status == 500);
    CHECK(http_get(port, "/test/json").status == 500);
    auto exp = parse_exposition(http_get(port, "/metrics").body);
    CHECK(exp.one("leakwatch_http_handler_failures_total", {{"path", "/test/throws"}}).value == 1);
    CHECK(exp.one("leakwatch_http_handler_failures_total", {{"path", "/test/unknown"}}).value == 2);
    CHECK(exp.one("leakwatch_http_handler_failures_total", {{"path", "/test/json"}}).value == 1);
    CHECK(exp.one("leakwatch_http_handler_failures_total", {{"path", "/metrics"}}).value == 0);
    // And the server goes on serving.
    CHECK(http_get(port, "/api/v1/processes").status == 200);
}

TEST_CASE("the API answers with valid UTF-8 whatever a process's name holds", "[http][server]") {
    auto snap = make_snapshot();
    snap.processes[0].comm = "\xff\xfeleak";  // not shown text: the second line of defence
    PublishedState state;
    state.publish(std::make_shared<const Snapshot>(snap), make_status());
    auto server = HttpServer::start("127.0.0.1:0", state);
    if (!server) FAIL(server.error().message);
    int port = (*server)->port();
    auto r = http_get(port, "/api/v1/processes");
    REQUIRE(r.status == 200);
    CHECK(json_body(r)["processes"][0]["comm"] == "\xef\xbf\xbd\xef\xbf\xbdleak");
    CHECK(http_get(port, "/api/v1/stacks?pid=100").status == 200);
}

// --- profiles, history and the landing page's files ------------------------------------------

TEST_CASE("HttpServer serves pprof, folded stacks, history and the page's script",
          "[http][server]") {
    PublishedState state;
    auto status = make_status();
    state.publish(std::make_shared<const Snapshot>(make_snapshot()), status);
    state.publish(std::make_shared<const Snapshot>(make_snapshot()), status);
    auto server = HttpServer::start("127.0.0.1:0", state);
    if (!server) FAIL(server.error().message);
    int port = (*server)->port();
    for (const char* path :
         {"/api/v1/pprof?pid=100", "/api/v1/pprof?watch=svc", "/api/v1/pprof", "/debug/pprof/heap",
          "/debug/pprof/allocs?gc=1&debug=0", "/debug/pprof/heap?pid=4242"}) {
        INFO(path);
        auto r = http_get(port, path);
        CHECK(r.status == 200);
        CHECK(r.headers["content-type"] == "application/octet-stream");
        CHECK_THAT(r.headers["content-disposition"], Contains("heap.pb.gz"));
        REQUIRE(r.body.size() > 2);
        CHECK(static_cast<unsigned char>(r.body[0]) == 0x1f);
        CHECK(static_cast<unsigned char>(r.body[1]) == 0x8b);
    }
    CHECK(http_get(port, "/api/v1/pprof?pid=999").status == 404);
    CHECK(http_get(port, "/api/v1/pprof?kernel=1").status == 404);  // kernel tracking off
    CHECK(http_get(port, "/api/v1/pprof?pid=x").status == 400);
    CHECK(http_get(port, "/api/v1/pprof?kernel=1&pid=100").status == 400);
    CHECK(http_get(port, "/api/v1/pprof?watch=" + std::string(300, 'a')).status == 400);

    auto folded = http_get(port, "/api/v1/folded?pid=4242");
    CHECK(folded.status == 200);
    CHECK(folded.body == "main;record_entry;malloc 65536\n");

    auto history = http_get(port, "/api/v1/history?pid=100");
    CHECK(history.status == 200);
    CHECK(json_body(history)["outstanding_bytes"] ==
          nlohmann::json::parse("[[1700000000.0, 1073741824], [1700000000.0, 1073741824]]"));
    CHECK(http_get(port, "/api/v1/history?pid=5").status == 404);
    CHECK(http_get(port, "/api/v1/history").status == 400);

    auto js = http_get(port, "/ui/app.js");
    CHECK(js.status == 200);
    CHECK_THAT(js.headers["content-type"], StartsWith("text/javascript"));
    CHECK_THAT(js.body, Contains("function drawFlame"));
    CHECK_THAT(http_get(port, "/ui/style.css").headers["content-type"], StartsWith("text/css"));
    CHECK(http_get(port, "/ui/nope.js").status == 404);
}

// --- basic authentication from a web config file ---------------------------------------------

namespace {

// htpasswd -nbBC 10 prom s3cret, and other:pw2
const char* const kPromHash = "$2y$10$Eyi6gAnpCyf0IAV.rkEXy.IYgTcisTbPMJus6LNAUunUl4jCVdBhK";
const char* const kOtherHash = "$2y$10$Hn.Xte3cWFcN2IRafDY9Qe4cyx/CGebzvgOmrr.UbrJFA3ZEPc0nO";

void write_file(const std::string& path, const std::string& text) {
    // Replaced by a rename, as editors and configuration managers do: the watcher sees a new
    // inode even within one second.
    std::string tmp = path + ".tmp";
    FILE* f = std::fopen(tmp.c_str(), "w");
    REQUIRE(f);
    std::fputs(text.c_str(), f);
    std::fclose(f);
    REQUIRE(std::rename(tmp.c_str(), path.c_str()) == 0);
}

// Waits up to 5 s for `path` to answer `status` with these headers.
bool answers(int port, const std::string& path, int status, const std::string& headers) {
    for (int i = 0; i < 50; i++) {
        if (http_get(port, path, headers).status == status) return true;
        usleep(100000);
    }
    return false;
}

}  // namespace

TEST_CASE("HttpServer asks for basic authentication as the web config says, and rereads it",
          "[http][server][auth]") {
    char dir[] = "/tmp/leakwatch-auth-XXXXXX";
    REQUIRE(mkdtemp(dir));
    const std::string web = std::string(dir) + "/web.yml";
    write_file(web, std::string("http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
                                "basic_auth_users:\n  prom: '") +
                        kPromHash + "'\n");
    PublishedState state;
    state.publish(std::make_shared<const Snapshot>(make_snapshot()), make_status());
    auto server = HttpServer::start("127.0.0.1:0", state, web);
    if (!server) FAIL(server.error().message);
    int port = (*server)->port();
    CHECK(!(*server)->tls());
    const std::string prom = "Authorization: Basic cHJvbTpzM2NyZXQ=\r\n";   // prom:s3cret
    const std::string wrong = "Authorization: Basic cHJvbTp3cm9uZw==\r\n";  // prom:wrong
    const std::string other = "Authorization: Basic b3RoZXI6cHcy\r\n";      // other:pw2

    for (const char* path : {"/metrics", "/api/v1/processes", "/api/v1/pprof?pid=100", "/"}) {
        INFO(path);
        auto none = http_get(port, path);
        CHECK(none.status == 401);
        CHECK_THAT(none.headers["www-authenticate"], StartsWith("Basic"));
        CHECK(http_get(port, path, wrong).status == 401);
        auto ok = http_get(port, path, prom);
        CHECK(ok.status == 200);
        CHECK(ok.headers["x-frame-options"] == "deny");
    }

    INFO("users change at once, without a restart");
    write_file(web, std::string("basic_auth_users:\n  other: '") + kOtherHash + "'\n");
    CHECK(answers(port, "/metrics", 200, other));
    CHECK(http_get(port, "/metrics", prom).status == 401);
    CHECK(http_get(port, "/metrics", other).headers.count("x-frame-options") == 0);

    INFO("a broken web config refuses every request until it is fixed");
    write_file(web, "basic_auth_users: [\n");
    CHECK(answers(port, "/metrics", 500, other));
    write_file(web, std::string("basic_auth_users:\n  other: '") + kOtherHash + "'\n");
    CHECK(answers(port, "/metrics", 200, other));

    std::remove(web.c_str());
    rmdir(dir);
}

TEST_CASE("HttpServer::start refuses an invalid web config", "[http][server][auth]") {
    PublishedState state;
    auto missing = HttpServer::start("127.0.0.1:0", state, "/nonexistent/web.yml");
    REQUIRE(!missing);
    CHECK_THAT(missing.error().message, Contains("/nonexistent/web.yml"));
}
