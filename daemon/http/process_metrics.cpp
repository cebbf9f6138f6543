#include "http/process_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

namespace leakwatch {

namespace {

void family(std::string& out, const char* name, const char* type, const char* help, double value) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.17g", value);
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" +
           name + " " + buf + "\n";
}

// The fields of /proc/PID/stat after the command name (which may hold spaces and parentheses):
// fields[0] is the state, field 3 of the file.
std::vector<std::string> stat_fields(const std::string& path) {
    std::ifstream f(path);
    std::string line;
    if (!std::getline(f, line)) return {};
    size_t close = line.rfind(')');
    if (close == std::string::npos) return {};
    std::istringstream rest(line.substr(close + 1));
    std::vector<std::string> fields;
    for (std::string field; rest >> field;) fields.push_back(field);
    return fields;
}

// /proc/stat's btime: the boot time in unix seconds.
double boot_time(const std::string& proc) {
    std::ifstream f(proc + "/stat");
    for (std::string key; f >> key;) {
        if (key == "btime") {
            double t = 0;
            f >> t;
            return t;
        }
        f.ignore(1 << 20, '\n');
    }
    return 0;
}

}  // namespace

std::string render_process_metrics(const std::string& proc) {
    std::string out;
    const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
    const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
    auto f = stat_fields(proc + "/self/stat");
    // Fields of stat(5), counted from 1: utime 14, stime 15, starttime 22, vsize 23, rss 24;
    // fields[i] here is field i + 3.
    if (f.size() > 21) {
        family(out, "process_cpu_seconds_total", "counter",
               "Total user and system CPU time spent in seconds.",
               (std::stod(f[11]) + std::stod(f[12])) / ticks);
        family(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
               std::stod(f[20]));
        family(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
               std::stod(f[21]) * page);
        if (double boot = boot_time(proc); boot > 0)
            family(out, "process_start_time_seconds", "gauge",
                   "Start time of the process since unix epoch in seconds.",
                   boot + std::stod(f[19]) / ticks);
    }
    if (DIR* d = opendir((proc + "/self/fd").c_str())) {
        double n = 0;
        while (const dirent* e = readdir(d))
            if (e->d_name[0] != '.') n++;
        closedir(d);
        family(out, "process_open_fds", "gauge", "Number of open file descriptors.", n - 1);
    }
    rlimit nofile{};
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0)
        family(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.",
               static_cast<double>(nofile.rlim_cur));
    return out;
}

}  // namespace leakwatch
