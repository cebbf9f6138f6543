// leakwatch: the command-line client of leakwatchd's HTTP API (top, stacks, leaks, pprof) and
// an offline check of a configuration file. Exit codes: 0 done, 1 failed (the daemon cannot be
// reached, refused, or answered an error; the config is invalid), 2 bad usage.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "api_client.h"
#include "commands.h"
#include "config/config.h"

namespace {

using leakwatch::client::Connection;

int error(const std::string& message) {
    std::fprintf(stderr, "leakwatch: %s\n", message.c_str());
    return 1;
}

// GET path as JSON; on failure prints why and returns nullopt.
std::optional<nlohmann::json> get_json(const Connection& c, const std::string& path) {
    auto r = leakwatch::client::get(c, path);
    if (!r) {
        error(r.error().message);
        return std::nullopt;
    }
    if (r->status != 200) {
        error(leakwatch::client::http_error(c, path, *r));
        return std::nullopt;
    }
    auto j = nlohmann::json::parse(r->body, nullptr, false);
    if (j.is_discarded()) {
        error(c.url + path + " did not answer JSON: is that a leakwatchd?");
        return std::nullopt;
    }
    return j;
}

int top(const Connection& c, double interval, int count, size_t n, std::vector<uint32_t> pids) {
    const bool tty = isatty(STDOUT_FILENO);
    for (int i = 0; count <= 0 || i < count; i++) {
        if (i > 0) std::this_thread::sleep_for(std::chrono::duration<double>(interval));
        std::vector<uint32_t> wanted = pids;
        if (wanted.empty()) {
            auto list = get_json(c, "/api/v1/processes");
            if (!list) return 1;
            for (const auto& p : (*list)["processes"]) wanted.push_back(p["pid"].get<uint32_t>());
        }
        std::vector<nlohmann::json> docs;
        for (uint32_t pid : wanted) {
            auto r = leakwatch::client::get(
                c, "/api/v1/stacks?pid=" + std::to_string(pid) + "&top=" + std::to_string(n));
            if (!r) return error(r.error().message);
            if (r->status == 404 && pids.empty()) continue;  // exited since it was listed
            if (r->status != 200)
                return error(leakwatch::client::http_error(c, "/api/v1/stacks", *r));
            docs.push_back(nlohmann::json::parse(r->body, nullptr, false));
        }
        std::sort(docs.begin(), docs.end(), [](const nlohmann::json& a, const nlohmann::json& b) {
            return a.value("outstanding_bytes", 0ll) > b.value("outstanding_bytes", 0ll);
        });
        // Refreshing in place on a terminal; one report after another otherwise, as memleak.
        if (tty) std::fputs("\033[H\033[2J", stdout);
        std::fputs(leakwatch::client::format_top(docs, n, std::time(nullptr)).c_str(), stdout);
        std::fflush(stdout);
    }
    return 0;
}

int pprof(const Connection& c, const std::string& query, const std::string& out) {
    const std::string path = "/api/v1/pprof?" + query;
    auto r = leakwatch::client::get(c, path);
    if (!r) return error(r.error().message);
    if (r->status != 200) return error(leakwatch::client::http_error(c, path, *r));
    std::ofstream f(out, std::ios::binary | std::ios::trunc);
    f.write(r->body.data(), static_cast<std::streamsize>(r->body.size()));
    f.close();
    if (!f) return error("cannot write " + out);
    std::printf("wrote %s (%zu bytes): go tool pprof -top %s\n", out.c_str(), r->body.size(),
                out.c_str());
    return 0;
}

int check_config(const std::string& file) {
    auto config = leakwatch::load_config(file);
    if (!config) {
        std::printf("%s is invalid: %s\n", file.c_str(), config.error().message.c_str());
        return 1;
    }
    std::printf("%s is valid: %zu watch rules, interval %lld ms, listen_address %s%s\n",
                file.c_str(), config->watch.size(),
                static_cast<long long>(config->interval.count()), config->listen_address.c_str(),
                config->kernel.enabled ? ", kernel allocations on" : "");
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{
        "leakwatch: reads leakwatchd's outstanding allocations, stacks and suspected leaks "
        "over its HTTP API (see leakwatch(1))"};
    app.require_subcommand(1);
    Connection c;
    if (const char* url = std::getenv("LEAKWATCH_URL")) c.url = url;
    std::string password_file;
    app.add_option("--url", c.url, "the daemon's address (env LEAKWATCH_URL)")
        ->capture_default_str();
    app.add_option("--ca-file", c.ca_file, "CA certificate that signed the daemon's (TLS)");
    app.add_option("--cert-file", c.cert_file, "client certificate, when the daemon asks (TLS)");
    app.add_option("--key-file", c.key_file, "the client certificate's key");
    app.add_flag("--insecure", c.insecure, "do not verify the daemon's certificate");
    app.add_option("--user", c.user, "basic authentication user");
    app.add_option("--password-file", password_file,
                   "file holding the user's password (or env LEAKWATCH_PASSWORD)");
    app.add_option("--timeout", c.timeout_seconds, "seconds to wait for an answer")
        ->capture_default_str();

    auto* top_cmd = app.add_subcommand(
        "top", "the largest stacks by outstanding bytes, refreshed (like BCC's memleak)");
    double interval = 5;
    int count = 0;
    size_t top_n = 10;
    std::vector<uint32_t> top_pids;
    top_cmd->add_option("-i,--interval", interval, "seconds between refreshes")
        ->capture_default_str()
        ->check(CLI::Range(0.1, 86400.0));
    top_cmd->add_option("-n,--count", count, "stop after this many refreshes (0: never)")
        ->capture_default_str();
    top_cmd->add_option("-k,--top", top_n, "stacks per process")
        ->capture_default_str()
        ->check(CLI::Range(1, 1000));
    top_cmd->add_option("-p,--pid", top_pids, "only these processes (repeatable)");

    auto* stacks_cmd = app.add_subcommand("stacks", "a process's stacks, each with its frames");
    uint32_t stacks_pid = 0;
    size_t stacks_top = 10;
    stacks_cmd->add_option("PID", stacks_pid, "a watched process")->required();
    stacks_cmd->add_option("-k,--top", stacks_top, "how many stacks")
        ->capture_default_str()
        ->check(CLI::Range(1, 1000));

    auto* leaks_cmd = app.add_subcommand("leaks", "what the leak detector suspects now");
    bool leak_frames = false;
    leaks_cmd->add_flag("-v,--frames", leak_frames, "each suspected stack's frames too");

    auto* pprof_cmd = app.add_subcommand(
        "pprof", "a pprof heap profile (profile.proto, gzipped) for go tool pprof, Parca, ...");
    uint32_t pprof_pid = 0;
    std::string pprof_watch, pprof_out;
    bool pprof_kernel = false;
    auto* pid_opt = pprof_cmd->add_option("PID", pprof_pid, "a watched process");
    auto* watch_opt =
        pprof_cmd->add_option("-w,--watch", pprof_watch, "every process of this rule instead");
    auto* kernel_opt = pprof_cmd->add_flag("--kernel", pprof_kernel, "kernel stacks instead");
    pid_opt->excludes(watch_opt)->excludes(kernel_opt);
    watch_opt->excludes(kernel_opt);
    pprof_cmd->add_option("-o,--output", pprof_out, "file to write, e.g. heap.pb.gz")->required();

    auto* check_cmd =
        app.add_subcommand("check-config", "validate a leakwatch.yaml (offline; no daemon)");
    std::string check_file;
    check_cmd->add_option("FILE", check_file, "the configuration file")->required();

    CLI11_PARSE(app, argc, argv);

    if (check_cmd->parsed()) return check_config(check_file);

    if (!password_file.empty()) {
        std::ifstream f(password_file);
        if (!f) return error("cannot read the password file " + password_file);
        std::getline(f, c.password);
    } else if (const char* pw = std::getenv("LEAKWATCH_PASSWORD")) {
        c.password = pw;
    }

    if (top_cmd->parsed()) return top(c, interval, count, top_n, top_pids);
    if (stacks_cmd->parsed()) {
        auto doc = get_json(c, "/api/v1/stacks?pid=" + std::to_string(stacks_pid) +
                                   "&top=" + std::to_string(stacks_top));
        if (!doc) return 1;
        std::fputs(leakwatch::client::format_stacks(*doc).c_str(), stdout);
        return 0;
    }
    if (leaks_cmd->parsed()) {
        auto doc = get_json(c, "/api/v1/leaks");
        if (!doc) return 1;
        std::fputs(leakwatch::client::format_leaks(*doc, leak_frames).c_str(), stdout);
        return 0;
    }
    if (pprof_cmd->parsed()) {
        std::string query;
        if (pid_opt->count())
            query = "pid=" + std::to_string(pprof_pid);
        else if (watch_opt->count())
            query = "watch=" + leakwatch::client::url_encode(pprof_watch);
        else if (pprof_kernel)
            query = "kernel=1";
        else
            return error("pprof needs a PID, --watch NAME or --kernel");
        return pprof(c, query, pprof_out);
    }
    return 2;
}
