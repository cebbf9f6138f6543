#include "commands.h"

#include <cinttypes>
#include <cstdio>

namespace leakwatch::client {

namespace {

std::string str(const nlohmann::json& j, const char* key) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return "";
    return it->is_string() ? it->get<std::string>() : it->dump();
}

int64_t num(const nlohmann::json& j, const char* key) {
    auto it = j.find(key);
    return it != j.end() && it->is_number() ? it->get<int64_t>() : 0;
}

double real(const nlohmann::json& j, const char* key) {
    auto it = j.find(key);
    return it != j.end() && it->is_number() ? it->get<double>() : 0.0;
}

std::string base_name(const std::string& path) {
    size_t slash = path.rfind('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string printf_string(const char* fmt, auto... args) {
    int n = std::snprintf(nullptr, 0, fmt, args...);
    std::string out(static_cast<size_t>(n), '\0');
    std::snprintf(out.data(), out.size() + 1, fmt, args...);
    return out;
}

std::string process_line(const nlohmann::json& p) {
    std::string line =
        printf_string("%s (pid %" PRId64 ", watch %s): %" PRId64 " bytes outstanding in %" PRId64
                      " allocations; %" PRId64 " bytes allocated, %" PRId64 " freed",
                      str(p, "comm").c_str(), num(p, "pid"), str(p, "watch").c_str(),
                      num(p, "outstanding_bytes"), num(p, "outstanding_allocations"),
                      num(p, "allocated_bytes_total"), num(p, "freed_bytes_total"));
    if (p.value("leak_suspected", false))
        line +=
            printf_string("; LEAK SUSPECTED, growing %.0f B/s", real(p, "growth_bytes_per_second"));
    return line + "\n";
}

std::string stack_block(const nlohmann::json& s, const std::string& indent) {
    std::string out = printf_string(
        "%s%" PRId64 " bytes in %" PRId64 " allocations from stack %s (site %s)", indent.c_str(),
        num(s, "outstanding_bytes"), num(s, "outstanding_allocations"), str(s, "stack_id").c_str(),
        str(s, "site").c_str());
    if (s.value("leak_suspected", false))
        out +=
            printf_string(", leak suspected, growing %.0f B/s", real(s, "growth_bytes_per_second"));
    if (!s.value("complete", true)) out += ", callers missing";
    out += "\n";
    for (const auto& f : s.value("frames", nlohmann::json::array()))
        out += format_frame(f, indent + "\t");
    return out;
}

// " FILE:LINE" of a frame or an inlined function, when it has them. Appended piece by piece:
// GCC 12's -Wrestrict misfires on `":" + std::string` in Release builds (a false positive
// inside libstdc++).
void append_place(std::string& out, const nlohmann::json& j) {
    if (!j.contains("file")) return;
    out += ' ';
    out += str(j, "file");
    if (!j.contains("line")) return;
    out += ':';
    out += str(j, "line");
}

}  // namespace

std::string format_frame(const nlohmann::json& f, const std::string& indent) {
    std::string name = str(f, "symbol");
    if (name.empty())
        name = base_name(str(f, "module")) + "+" + str(f, "module_offset");
    else
        name += printf_string("+0x%" PRIx64, num(f, "offset"));
    std::string line =
        indent + str(f, "address") + " " + name + " [" + base_name(str(f, "module")) + "]";
    append_place(line, f);
    line += '\n';
    for (const auto& in : f.value("inlined", nlohmann::json::array())) {
        line += indent + "  (inlined) " + str(in, "function");
        append_place(line, in);
        line += '\n';
    }
    return line;
}

std::string format_top(const std::vector<nlohmann::json>& processes, size_t top, std::time_t now) {
    char clock[16];
    std::tm tm{};
    localtime_r(&now, &tm);
    std::strftime(clock, sizeof(clock), "%H:%M:%S", &tm);
    std::string out = printf_string(
        "[%s] Top %zu stacks with outstanding allocations, %zu "
        "processes watched:\n",
        clock, top, processes.size());
    for (const auto& p : processes) {
        // Appended piece by piece: GCC 12's -Wrestrict misfires on `"\n" + std::string` in
        // Release builds (a false positive inside libstdc++).
        out += '\n';
        out += process_line(p);
        size_t shown = 0;
        for (const auto& s : p.value("stacks", nlohmann::json::array())) {
            if (shown++ == top) break;
            out += stack_block(s, "\t");
        }
        if (shown == 0) out += "\tno stack holds memory\n";
    }
    return out;
}

std::string format_stacks(const nlohmann::json& doc) {
    std::string out = process_line(doc);
    for (const auto& s : doc.value("stacks", nlohmann::json::array())) out += stack_block(s, "");
    return out;
}

std::string format_leaks(const nlohmann::json& doc, bool frames) {
    const auto& leaks = doc.value("leaks", nlohmann::json::array());
    if (leaks.empty()) return "no leak suspected\n";
    std::string out =
        printf_string("%-8s %-16s %-8s %-16s %-28s %14s %14s %10s\n", "SCOPE", "WATCH", "PID",
                      "COMM", "SITE", "GROWTH_B/S", "OUTSTANDING_B", "FOR_S");
    for (const auto& l : leaks) {
        std::string site = str(l, "site");
        out += printf_string("%-8s %-16s %-8s %-16s %-28s %14.0f %14" PRId64 " %10.0f\n",
                             str(l, "scope").c_str(), str(l, "watch").c_str(),
                             str(l, "pid").c_str(), str(l, "comm").c_str(),
                             site.empty() ? "-" : site.c_str(), real(l, "growth_bytes_per_second"),
                             num(l, "outstanding_bytes"), real(l, "flagged_for_seconds"));
        if (frames)
            for (const auto& f : l.value("frames", nlohmann::json::array()))
                out += format_frame(f, "\t");
    }
    return out;
}

}  // namespace leakwatch::client
