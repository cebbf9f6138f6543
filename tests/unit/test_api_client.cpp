// client/api_client.cpp: what the client says when it cannot reach the daemon or is refused.
#include <catch2/catch.hpp>

#include "api_client.h"

using namespace leakwatch::client;
using Catch::Matchers::Contains;

TEST_CASE("get: an unreachable daemon is an error that names where and why", "[client]") {
    Connection c;
    c.url = "http://127.0.0.1:1";  // nothing listens on port 1
    auto r = get(c, "/api/v1/processes");
    REQUIRE(!r);
    CHECK_THAT(r.error().message, Contains("cannot reach the daemon at http://127.0.0.1:1"));
    CHECK_THAT(r.error().message, Contains("--url"));
}

TEST_CASE("http_error: the daemon's own message, or what to do about a 401", "[client]") {
    Connection c;
    c.url = "https://node1:10071";
    CHECK(http_error(c, "/api/v1/stacks?pid=5", {404, R"({"error": "pid 5 is not watched"})"}) ==
          "https://node1:10071/api/v1/stacks?pid=5: pid 5 is not watched");
    CHECK(http_error(c, "/x", {500, "oops"}) == "https://node1:10071/x: HTTP 500");
    CHECK_THAT(http_error(c, "/metrics", {401, "Unauthorized\n"}),
               Contains("refused the credentials") && Contains("--user"));
}

TEST_CASE("url_encode escapes what a query value cannot hold", "[client]") {
    CHECK(url_encode("my app&x=1") == "my%20app%26x%3D1");
    CHECK(url_encode("plain-name_1.2") == "plain-name_1.2");
}
