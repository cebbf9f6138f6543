// CPython frames (symbols/python.cpp): line tables of every known version, code objects read
// from a process's memory, and the offsets table against the interpreters at hand.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "proc/proc.h"
#include "symbols/python.h"

using leakwatch::ProcReader;
using leakwatch::PythonCode;

namespace {

std::string from_hex(const std::string& hex) {
    std::string out;
    for (size_t i = 0; i + 1 < hex.size(); i += 2)
        out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
    return out;
}

struct LineCase {
    int minor;
    int firstlineno;
    const char* table;
    std::vector<std::pair<int, int>> lines;  // (instruction index in code units, line)
};

}  // namespace

TEST_CASE("python: line tables of 3.9 to 3.13 give the interpreter's own lines", "[python]") {
    // Each interpreter's own table and lines (co_lines(), or dis.findlinestarts on 3.9) of the
    // same function, at every third instruction: printed by pyenv's 3.9.18, 3.10.13, 3.11.7,
    // 3.12.1 and 3.13.0.
    const std::vector<LineCase> cases = {
        {9,
         1,
         "0001080108011202040104010a0204ff",
         {{0, 2}, {3, 2}, {6, 3}, {9, 4}, {12, 4}, {15, 4}, {18, 6}, {21, 8}, {24, 8}, {27, 10}}},
        {10,
         1,
         "08010801120104020401080104ff040304ff",
         {{0, 2},
          {3, 2},
          {6, 3},
          {9, 4},
          {12, 4},
          {15, 4},
          {18, 6},
          {21, 8},
          {24, 8},
          {27, 10},
          {30, 9}}},
        {11,
         1,
         "8000d80809884189058041d80708883182758075d80c21d00c219d05986199089c08d00c21d10c21d40c21880"
         "1e00f108808d80a0bf00001050fd80809885189068801f003000b0cf00001050ff00600090c8851f003020c06"
         "f000020506",
         {{0, 1},
          {3, 2},
          {6, 3},
          {9, 3},
          {12, 4},
          {15, 4},
          {18, 4},
          {21, 4},
          {24, 4},
          {27, 4},
          {30, 4},
          {33, 4},
          {36, 4},
          {39, 7},
          {42, 8},
          {45, 8},
          {48, 10},
          {51, 9}}},
        {12,
         1,
         "8000d80809884189058041d8070888318275dc181d98619b08d60c2190318a51d00c218801d00c21e00f10880"
         "8d90a0bd80809885189068801f203000b0cf00600090c8851f003020c06f000020506f9f20b000d22",
         {{0, 1},
          {3, 2},
          {6, 3},
          {9, 3},
          {12, 4},
          {15, 4},
          {18, 4},
          {21, 4},
          {24, 4},
          {27, 4},
          {30, 4},
          {33, 4},
          {36, 6},
          {39, 8},
          {42, 8},
          {45, 7},
          {48, 10},
          {51, 0},
          {54, 4}}},
        {13,
         1,
         "8000d8080989058041d8070888318375dc181d98619c08d30c21990890318a5199088801d00c21e00f108808d"
         "e0a0bd80809885189068801f703000b0c8821f00600090c8851f003020c06f000020506f9f20b000d22",
         {{0, 1},  {3, 2},  {6, 3},  {9, 3},  {12, 4},  {15, 4}, {18, 4}, {21, 4},
          {24, 4}, {27, 4}, {30, 4}, {33, 4}, {36, 6},  {39, 7}, {42, 7}, {45, 8},
          {48, 8}, {51, 7}, {54, 7}, {57, 7}, {60, 10}, {63, 0}, {66, 4}}},
    };
    for (const auto& c : cases) {
        PythonCode code;
        code.firstlineno = c.firstlineno;
        code.linetable = from_hex(c.table);
        for (const auto& [index, line] : c.lines) {
            INFO("3." << c.minor << " instruction " << index);
            CHECK(leakwatch::python_line(code, c.minor, index) == line);
        }
        // Not started yet: the function's first line.
        CHECK(leakwatch::python_line(code, c.minor, -1) == c.firstlineno);
    }
}

TEST_CASE("python: a code object and its strings read from process memory", "[python]") {
    const leakwatch::PythonLayout* layout = leakwatch::python_layout(12);
    REQUIRE(layout != nullptr);
    // Compact str objects as 3.12 lays them out: length at 16, state at 32 (kind 1 << 2,
    // compact 1 << 5, ascii 1 << 6), the characters after the header.
    alignas(8) static unsigned char name[64] = {};
    alignas(8) static unsigned char file[96] = {};
    auto make_str = [&](unsigned char* obj, const std::string& text, bool ascii) {
        int64_t length = static_cast<int64_t>(text.size());
        uint32_t state = (1u << 2) | (1u << 5) | (ascii ? 1u << 6 : 0);
        std::memcpy(obj + 16, &length, 8);
        std::memcpy(obj + 32, &state, 4);
        std::memcpy(obj + (ascii ? layout->ascii_data : layout->compact_data), text.data(),
                    text.size());
    };
    make_str(name, "Klass.meth", true);
    make_str(file, "/srv/caf\xe9.py", false);  // latin-1, not ASCII
    alignas(8) static unsigned char table[64] = {};
    const std::string lines = from_hex("8000d80809");
    int64_t table_size = static_cast<int64_t>(lines.size());
    std::memcpy(table + 16, &table_size, 8);
    std::memcpy(table + 32, lines.data(), lines.size());
    alignas(8) static unsigned char code[256] = {};
    auto put = [&](uint16_t off, const void* p) {
        uint64_t v = reinterpret_cast<uint64_t>(p);
        std::memcpy(code + off, &v, 8);
    };
    int32_t first = 41;
    std::memcpy(code + layout->co_firstlineno, &first, 4);
    put(layout->co_qualname, name);
    put(layout->co_name, name);
    put(layout->co_filename, file);
    put(layout->co_linetable, table);

    ProcReader proc;
    auto read = leakwatch::read_python_code(proc, static_cast<int>(getpid()), *layout,
                                            reinterpret_cast<uint64_t>(code));
    REQUIRE(read);
    CHECK(read->qualname == "Klass.meth");
    CHECK(read->filename == "/srv/caf\xc3\xa9.py");
    CHECK(read->firstlineno == 41);
    CHECK(read->linetable == lines);
    CHECK(leakwatch::python_line(*read, 12, 1) == 42);
    // A code object whose name is not a str: an error, not a garbled name.
    std::memset(name + 32, 0, 4);
    CHECK_FALSE(leakwatch::read_python_code(proc, static_cast<int>(getpid()), *layout,
                                            reinterpret_cast<uint64_t>(code)));
}

TEST_CASE("python: the runtime of Debian's python3.11 is found, with its version's offsets",
          "[python]") {
    // Debian 12's python3 (scripts/deps.sh): libpython linked into a non-PIE executable.
    const char* exe = "/usr/bin/python3.11";
    REQUIRE(access(exe, X_OK) == 0);
    int out[2];
    REQUIRE(pipe(out) == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        dup2(out[1], 1);
        execl(exe, exe, "-c", "import time; print(1, flush=True); time.sleep(30)", nullptr);
        _exit(127);
    }
    close(out[1]);
    char c = 0;
    REQUIRE(read(out[0], &c, 1) == 1);  // the interpreter runs
    ProcReader proc;
    auto info = proc.process(pid);
    auto maps = proc.maps(pid);
    REQUIRE(info);
    REQUIRE(maps);
    auto runtime = leakwatch::find_python(proc, pid, *maps, info->exe, 512ull << 20);
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    close(out[0]);
    REQUIRE(runtime);
    INFO(runtime->why_unsupported);
    CHECK(runtime->minor == 11);
    CHECK(runtime->module == exe);
    REQUIRE(runtime->layout.has_value());
    CHECK(runtime->layout->minor == 11);
    CHECK(runtime->key_address != 0);
}

TEST_CASE("python: versions without offsets have no layout", "[python]") {
    CHECK(leakwatch::python_layout(8) == nullptr);
    CHECK(leakwatch::python_layout(14) == nullptr);
    for (int minor = 9; minor <= 13; minor++) CHECK(leakwatch::python_layout(minor) != nullptr);
}

namespace {

// Runs tests/fixtures/python/check_layout.py under `interpreter` with the offsets of its
// version: what it prints ("ok", or the first field that differs).
std::string check_layout(const std::string& interpreter, const leakwatch::PythonLayout& l) {
    std::string cmd = interpreter + " " + LEAKWATCH_FIXTURES + "/python/check_layout.py";
    for (unsigned v : {unsigned(l.key_off), unsigned(l.thread_id_off), unsigned(l.frame_off),
                       unsigned(l.cframe_off), unsigned(l.code_off), unsigned(l.back_off),
                       unsigned(l.co_firstlineno), unsigned(l.co_filename), unsigned(l.co_name),
                       unsigned(l.co_qualname), unsigned(l.co_linetable)})
        cmd += " " + std::to_string(v);
    cmd += " 2>&1";
    std::string out;
    if (FILE* p = popen(cmd.c_str(), "r")) {
        char buf[512];
        while (fgets(buf, sizeof(buf), p)) out += buf;
        if (pclose(p) != 0 && out.empty()) out = "exited with an error";
    }
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
}

}  // namespace

TEST_CASE("python: the offsets of each version match that interpreter build", "[python]") {
    // Debian 12's own python3.11 (scripts/deps.sh) always; pyenv's builds where they are (this
    // machine has 3.9.18, 3.10.13, 3.11.7, 3.12.1 and 3.13.0): each checked in its own process.
    std::vector<std::pair<int, std::string>> interpreters = {{11, "/usr/bin/python3.11"}};
    const char* home = std::getenv("HOME");
    const std::string pyenv = std::getenv("PYENV_ROOT") ? std::getenv("PYENV_ROOT")
                                                        : std::string(home ? home : "") + "/.pyenv";
    for (int minor = 9; minor <= 13; minor++) {
        const std::string glob_dir = pyenv + "/versions";
        if (FILE* p = popen(("ls -d " + glob_dir + "/3." + std::to_string(minor) +
                             ".*/bin/python3." + std::to_string(minor) + " 2>/dev/null")
                                .c_str(),
                            "r")) {
            char buf[512];
            while (fgets(buf, sizeof(buf), p)) {
                std::string path(buf);
                path.erase(path.find_last_not_of('\n') + 1);
                interpreters.emplace_back(minor, path);
            }
            pclose(p);
        }
    }
    for (const auto& [minor, interpreter] : interpreters) {
        const leakwatch::PythonLayout* layout = leakwatch::python_layout(minor);
        REQUIRE(layout != nullptr);
        INFO(interpreter);
        CHECK(check_layout(interpreter, *layout) == "ok");
    }
    // Which builds were checked, in the test's output.
    std::string checked;
    for (const auto& [minor, interpreter] : interpreters) checked += " " + interpreter;
    WARN("checked:" << checked);
}
