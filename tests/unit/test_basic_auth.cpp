// http/basic_auth.cpp: basic credentials against bcrypt hashes.
#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <string>

#include "http/basic_auth.h"

using namespace leakwatch;

namespace {

// htpasswd -nbBC 10 prom s3cret
const std::string kHash = "$2y$10$Eyi6gAnpCyf0IAV.rkEXy.IYgTcisTbPMJus6LNAUunUl4jCVdBhK";
const std::map<std::string, std::string> kUsers = {{"prom", kHash}};

}  // namespace

TEST_CASE("basic_credentials decodes the header and refuses what is not one", "[http][auth]") {
    // "prom:s3cret", "prom:" and "a:b:c"
    CHECK(basic_credentials("Basic cHJvbTpzM2NyZXQ=") ==
          std::make_pair(std::string("prom"), std::string("s3cret")));
    CHECK(basic_credentials("basic cHJvbTo=") ==
          std::make_pair(std::string("prom"), std::string()));
    CHECK(basic_credentials("Basic YTpiOmM=") ==
          std::make_pair(std::string("a"), std::string("b:c")));
    CHECK(!basic_credentials(nullptr));
    CHECK(!basic_credentials("Bearer cHJvbTpzM2NyZXQ="));
    CHECK(!basic_credentials("Basic "));
    CHECK(!basic_credentials("Basic cHJvbQ=="));         // "prom": no colon
    CHECK(!basic_credentials("Basic cHJvbTpzM2NyZXQ"));  // not a multiple of 4
    CHECK(!basic_credentials(("Basic " + std::string(2000, 'A')).c_str()));
}

TEST_CASE("bcrypt_matches checks a password against its hash", "[http][auth]") {
    CHECK(bcrypt_matches("s3cret", kHash));
    CHECK(!bcrypt_matches("s3cre", kHash));
    CHECK(!bcrypt_matches("s3cret", "$2y$10$short"));
    // The same hash under the other prefixes libcrypt accepts.
    CHECK(bcrypt_matches("s3cret", "$2b$" + kHash.substr(4)));
}

TEST_CASE("BasicAuth allows the right user and password only", "[http][auth]") {
    BasicAuth auth;
    CHECK(auth.allows(kUsers, "Basic cHJvbTpzM2NyZXQ="));   // prom:s3cret
    CHECK(!auth.allows(kUsers, "Basic cHJvbTp3cm9uZw=="));  // prom:wrong
    CHECK(!auth.allows(kUsers, "Basic b3RoZXI6czNjcmV0"));  // other:s3cret
    CHECK(!auth.allows(kUsers, nullptr));
    // A user that changed its hash is checked against the new one, not a remembered answer.
    std::map<std::string, std::string> changed = {{"prom", "$2b$" + kHash.substr(4)}};
    CHECK(auth.allows(changed, "Basic cHJvbTpzM2NyZXQ="));
    std::map<std::string, std::string> other = {
        {"prom", "$2y$10$ucZZknD3UjEBFp5ixbYgS.ANeQBYNA6BLXG0Zbpy.aSxKZznDw3VK"}};
    CHECK(!auth.allows(other, "Basic cHJvbTpzM2NyZXQ="));
}

TEST_CASE("BasicAuth remembers answers: a scraper pays bcrypt once", "[http][auth]") {
    BasicAuth auth;
    using Clock = std::chrono::steady_clock;
    auto t0 = Clock::now();
    REQUIRE(auth.allows(kUsers, "Basic cHJvbTpzM2NyZXQ="));
    auto first = Clock::now() - t0;
    t0 = Clock::now();
    for (int i = 0; i < 100; i++) REQUIRE(auth.allows(kUsers, "Basic cHJvbTpzM2NyZXQ="));
    auto hundred = Clock::now() - t0;
    using Ms = std::chrono::duration<double, std::milli>;
    INFO("first " << Ms(first).count() << " ms, 100 more " << Ms(hundred).count() << " ms");
    // bcrypt at cost 10 takes tens of milliseconds; a remembered answer microseconds.
    CHECK(hundred < first);
}
