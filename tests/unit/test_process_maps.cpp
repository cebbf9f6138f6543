// The maps of watched processes read on the loader (symbols/process_maps.h), from a fixture /proc
// tree whose maps file is a FIFO nobody writes: opening it blocks its reader, as a read of a
// process's maps blocks while the process holds up its memory map's lock.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "proc/files.h"
#include "proc/proc.h"
#include "symbols/symbolizer.h"

namespace fs = std::filesystem;
using leakwatch::ProcReader;
using leakwatch::Refusal;
using leakwatch::refused_files;
using leakwatch::Symbolizer;
using leakwatch::SymbolizerOptions;

namespace {

struct Root {
    fs::path dir;
    Root() {
        char tmpl[] = "/tmp/lw-process-maps-XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        dir = tmpl;
    }
    ~Root() {
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
    fs::path maps(int pid) const {
        fs::create_directories(dir / std::to_string(pid));
        return dir / std::to_string(pid) / "maps";
    }
    void write(int pid, const std::string& text) const {
        fs::remove(maps(pid));
        std::ofstream(maps(pid)) << text;
    }
    void block(int pid) const {
        fs::remove(maps(pid));
        REQUIRE(::mkfifo(maps(pid).c_str(), 0600) == 0);
    }
    // Lets the reader blocked on the FIFO go, with `text` as the maps it reads.
    void answer(int pid, const std::string& text) const {
        int fd = ::open(maps(pid).c_str(), O_WRONLY | O_CLOEXEC);
        REQUIRE(fd >= 0);
        REQUIRE(::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
        ::close(fd);
    }
};

const std::string kOne = "00400000-00401000 r-xp 00000000 08:01 42 /bin/one\n";
const std::string kTwo = kOne + "7f0000000000-7f0000001000 r-xp 00000000 08:01 43 /lib/two.so\n";

uint64_t slow_refusals() {
    return refused_files()[static_cast<size_t>(Refusal::kSlow)];
}

}  // namespace

TEST_CASE(
    "process maps: a blocked read leaves the maps read before in use, and is picked up "
    "when it ends",
    "[process_maps]") {
    Root root;
    root.write(100, kOne);
    Symbolizer symbolizer(ProcReader(root.dir.string()),
                          SymbolizerOptions{.wait = std::chrono::milliseconds(50)});
    auto& maps = symbolizer.process_maps();

    auto first = maps.read(100);
    REQUIRE(first.fresh);
    CHECK_FALSE(first.pending);
    REQUIRE(first.maps);
    REQUIRE(first.maps->size() == 1);

    root.block(100);
    auto blocked = maps.read(100);
    CHECK(blocked.pending);
    CHECK_FALSE(blocked.fresh);
    CHECK_FALSE(blocked.refused);
    REQUIRE(blocked.maps);
    CHECK(blocked.maps->at(0).path == "/bin/one");
    // Asked again while it blocks: no second read starts (it would block as well), the same
    // maps are answered.
    auto again = maps.read(100);
    CHECK(again.pending);
    REQUIRE(again.maps);
    CHECK(again.maps->size() == 1);

    root.answer(100, kTwo);
    // A later pass picks the read up once it has ended.
    leakwatch::ProcessMaps::Maps now;
    for (int i = 0; i < 500 && !(now && now->size() == 2); i++) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        now = maps.last(100);
    }
    REQUIRE(now);
    REQUIRE(now->size() == 2);
    CHECK(now->at(1).path == "/lib/two.so");

    // A process gone: no maps, said so.
    fs::remove_all(root.dir / "100");
    auto gone = maps.read(100);
    CHECK(gone.fresh);
    CHECK(gone.gone);
    CHECK_FALSE(gone.maps);

    // Forgotten: nothing kept of it.
    root.write(101, kOne);
    REQUIRE(maps.read(101).maps);
    maps.forget(101);
    CHECK_FALSE(maps.last(101));
}

TEST_CASE("process maps: a read longer than `slow` is refused, counted and logged once",
          "[process_maps]") {
    Root root;
    root.block(200);
    Symbolizer symbolizer(ProcReader(root.dir.string()),
                          SymbolizerOptions{.wait = std::chrono::milliseconds(20),
                                            .slow = std::chrono::milliseconds(100)});
    auto& maps = symbolizer.process_maps();
    auto blocked = maps.read(200);
    CHECK(blocked.pending);
    CHECK_FALSE(blocked.refused);
    CHECK_FALSE(blocked.maps);
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    const uint64_t before = slow_refusals();
    auto refused = maps.read(200);
    CHECK(refused.refused);
    CHECK(refused.pending);
    CHECK_FALSE(refused.maps);
    CHECK(slow_refusals() == before + 1);
    CHECK(maps.read(200).refused);
    CHECK(slow_refusals() == before + 1);
    root.answer(200, kOne);
}
