#include "api_client.h"

#include <curl/curl.h>

#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>

namespace leakwatch::client {

namespace {

size_t append(char* data, size_t size, size_t n, void* out) {
    static_cast<std::string*>(out)->append(data, size * n);
    return size * n;
}

struct CurlDeleter {
    void operator()(CURL* c) const { curl_easy_cleanup(c); }
};

}  // namespace

Result<Response> get(const Connection& c, const std::string& path) {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
    std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
    if (!curl) return fail("cannot initialize libcurl");
    std::string url = c.url;
    while (!url.empty() && url.back() == '/') url.pop_back();
    url += path;
    Response r;
    char error[CURL_ERROR_SIZE] = {};
    CURL* h = curl.get();
    curl_easy_setopt(h, CURLOPT_URL, url.c_str());
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, append);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &r.body);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, error);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, c.timeout_seconds);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    if (!c.ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, c.ca_file.c_str());
    if (!c.cert_file.empty()) curl_easy_setopt(h, CURLOPT_SSLCERT, c.cert_file.c_str());
    if (!c.key_file.empty()) curl_easy_setopt(h, CURLOPT_SSLKEY, c.key_file.c_str());
    if (c.insecure) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (!c.user.empty()) {
        curl_easy_setopt(h, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
        curl_easy_setopt(h, CURLOPT_USERNAME, c.user.c_str());
        curl_easy_setopt(h, CURLOPT_PASSWORD, c.password.c_str());
    }
    CURLcode rc = curl_easy_perform(h);
    if (rc != CURLE_OK)
        return fail("cannot reach the daemon at " + c.url + ": " +
                    (error[0] ? error : curl_easy_strerror(rc)) +
                    " (is leakwatchd running there? --url names another address)");
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.status);
    return r;
}

std::string url_encode(const std::string& text) {
    char* e = curl_easy_escape(nullptr, text.c_str(), static_cast<int>(text.size()));
    std::string out = e ? e : "";
    curl_free(e);
    return out;
}

std::string http_error(const Connection& c, const std::string& path, const Response& r) {
    std::string detail;
    auto j = nlohmann::json::parse(r.body, nullptr, false);
    if (j.is_object() && j.contains("error") && j["error"].is_string())
        detail = j["error"].get<std::string>();
    if (r.status == 401)
        return "the daemon at " + c.url +
               " refused the credentials (HTTP 401): give --user and "
               "--password-file (or LEAKWATCH_PASSWORD)";
    if (detail.empty()) detail = "HTTP " + std::to_string(r.status);
    return c.url + path + ": " + detail;
}

}  // namespace leakwatch::client
