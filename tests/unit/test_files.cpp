// Opening files on a watched process's behalf (proc/files.cpp): inside its root, never a FIFO
// or a device, within a size bound, with and without openat2.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#include "proc/files.h"

using namespace leakwatch;
namespace fs = std::filesystem;

namespace {

// A process root of our own: a directory standing for "/" of a container.
struct Root {
    fs::path dir;
    int fd = -1;
    Root() {
        std::string tmpl = (fs::temp_directory_path() / "leakwatch-files-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        dir = tmpl;
        fs::create_directories(dir / "tmp");
        fs::create_directories(dir / "etc");
        std::ofstream(dir / "etc" / "passwd") << "root:x:0:0::/root:/bin/sh\n";
        fd = ::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
        REQUIRE(fd >= 0);
    }
    ~Root() {
        ::close(fd);
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
};

uint64_t refused(Refusal why) {
    return refused_files()[static_cast<size_t>(why)];
}

std::string text_of(const OpenFile& f) {
    auto text = read_at(f, 0, f.size());
    REQUIRE(text);
    return *text;
}

}  // namespace

TEST_CASE("a regular file inside the root is opened and read", "[proc][files]") {
    for (bool openat2 : {true, false}) {
        INFO("openat2 " << openat2);
        Root root;
        std::ofstream(root.dir / "tmp" / "perf-1.map") << "1000 10 a\n";
        auto f = open_beneath(root.fd, "/tmp/perf-1.map", OpenRules{.max_bytes = 1 << 20}, openat2);
        REQUIRE(f);
        CHECK(text_of(*f) == "1000 10 a\n");
        CHECK(f->path() == "/tmp/perf-1.map");
        // The path that names it to the kernel while it is open.
        struct stat st {};
        REQUIRE(::stat(f->fd_path().c_str(), &st) == 0);
        CHECK(st.st_ino == f->stat().st_ino);
        CHECK_FALSE(
            open_beneath(root.fd, "/tmp/missing", OpenRules{.max_bytes = 1 << 20}, openat2));
    }
}

TEST_CASE("a FIFO is refused at once, never opened for reading", "[proc][files]") {
    for (bool openat2 : {true, false}) {
        INFO("openat2 " << openat2);
        Root root;
        REQUIRE(::mkfifo((root.dir / "tmp" / "perf-2.map").c_str(), 0600) == 0);
        const uint64_t before = refused(Refusal::kNotRegular);
        auto t0 = std::chrono::steady_clock::now();
        auto f = open_beneath(root.fd, "/tmp/perf-2.map", OpenRules{.max_bytes = 1 << 20}, openat2);
        auto took = std::chrono::steady_clock::now() - t0;
        REQUIRE_FALSE(f);
        CHECK_THAT(f.error().message, Catch::Contains("a FIFO"));
        CHECK(took < std::chrono::milliseconds(500));
        CHECK(refused(Refusal::kNotRegular) == before + 1);
        // Refused again: counted (and logged) once per file.
        CHECK_FALSE(
            open_beneath(root.fd, "/tmp/perf-2.map", OpenRules{.max_bytes = 1 << 20}, openat2));
        CHECK(refused(Refusal::kNotRegular) == before + 1);
    }
}

TEST_CASE("symlinks: absolute ones stay in the root, devices are refused", "[proc][files]") {
    Root root;
    // An absolute symlink resolves inside the root: the container's /etc/passwd, not ours.
    fs::create_symlink("/etc/passwd", root.dir / "tmp" / "perf-3.map");
    auto f = open_beneath(root.fd, "/tmp/perf-3.map", OpenRules{.max_bytes = 1 << 20});
    REQUIRE(f);
    CHECK(text_of(*f) == "root:x:0:0::/root:/bin/sh\n");
    // As do ".." past the root.
    fs::create_symlink("../../../../../../etc/passwd", root.dir / "tmp" / "up.map");
    auto up = open_beneath(root.fd, "/tmp/up.map", OpenRules{.max_bytes = 1 << 20});
    REQUIRE(up);
    CHECK(text_of(*up) == "root:x:0:0::/root:/bin/sh\n");
    // Where no symlink is allowed (a perf map), none is followed.
    const uint64_t before = refused(Refusal::kSymlink);
    auto strict = open_beneath(root.fd, "/tmp/perf-3.map",
                               OpenRules{.max_bytes = 1 << 20, .symlinks = false});
    REQUIRE_FALSE(strict);
    CHECK(refused(Refusal::kSymlink) == before + 1);
    // A magic link (/proc/PID/root, /proc/PID/fd/N: they jump anywhere) is never followed.
    int slash = ::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    REQUIRE(slash >= 0);
    auto magic =
        open_beneath(slash, "/proc/self/root/etc/hostname", OpenRules{.max_bytes = 1 << 20});
    ::close(slash);
    REQUIRE_FALSE(magic);
    CHECK_THAT(magic.error().message, Catch::Contains("refused"));
}

// Root: mknod.
TEST_CASE("a symlink to /dev/zero is a device: refused", "[proc][files][root]") {
    Root root;
    fs::create_directories(root.dir / "dev");
    REQUIRE(::mknod((root.dir / "dev" / "zero").c_str(), S_IFCHR | 0666, makedev(1, 5)) == 0);
    fs::create_symlink("/dev/zero", root.dir / "tmp" / "perf-4.map");
    const uint64_t before = refused(Refusal::kNotRegular);
    auto zero = open_beneath(root.fd, "/tmp/perf-4.map", OpenRules{.max_bytes = 1 << 20});
    REQUIRE_FALSE(zero);
    CHECK_THAT(zero.error().message, Catch::Contains("character device"));
    CHECK(refused(Refusal::kNotRegular) == before + 1);
}

TEST_CASE("without openat2, every symlink and .. on the path is refused", "[proc][files]") {
    Root root;
    fs::create_symlink("/etc/passwd", root.dir / "tmp" / "perf-5.map");
    auto f = open_beneath(root.fd, "/tmp/perf-5.map", OpenRules{.max_bytes = 1 << 20}, false);
    REQUIRE_FALSE(f);
    CHECK_THAT(f.error().message, Catch::Contains("symlink"));
    CHECK_FALSE(
        open_beneath(root.fd, "/tmp/../etc/passwd", OpenRules{.max_bytes = 1 << 20}, false));
}

TEST_CASE("a file larger than the bound is refused, a sparse one too", "[proc][files]") {
    Root root;
    const fs::path big = root.dir / "tmp" / "perf-6.map";
    { std::ofstream out(big); }
    fs::resize_file(big, 100ull << 30);  // 100 GiB, sparse
    const uint64_t before = refused(Refusal::kTooLarge);
    auto f = open_beneath(root.fd, "/tmp/perf-6.map", OpenRules{.max_bytes = 512 << 20});
    REQUIRE_FALSE(f);
    CHECK_THAT(f.error().message, Catch::Contains("above limits.file_size"));
    CHECK(refused(Refusal::kTooLarge) == before + 1);
}

// Root: chown.
TEST_CASE("a perf map must be its process's user's", "[proc][files][root]") {
    Root root;
    const fs::path map = root.dir / "tmp" / "perf-7.map";
    std::ofstream(map) << "1000 10 a\n";
    REQUIRE(::chown(map.c_str(), 4242, 4242) == 0);
    CHECK(open_beneath(root.fd, "/tmp/perf-7.map",
                       OpenRules{.max_bytes = 1 << 20, .symlinks = false, .owners = {4242}}));
    const uint64_t before = refused(Refusal::kOwner);
    auto other = open_beneath(root.fd, "/tmp/perf-7.map",
                              OpenRules{.max_bytes = 1 << 20, .symlinks = false, .owners = {0}});
    REQUIRE_FALSE(other);
    CHECK_THAT(other.error().message, Catch::Contains("owned by uid 4242"));
    CHECK(refused(Refusal::kOwner) == before + 1);
}

// A file of `size` bytes of `fill` mapped into this process, and its line of /proc/self/maps.
struct MappedFile {
    void* p = nullptr;
    size_t size = 0;
    MapEntry entry;
    MappedFile(const fs::path& path, size_t bytes, char fill) : size(bytes) {
        std::ofstream(path) << std::string(bytes, fill);
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        REQUIRE(fd >= 0);
        p = ::mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
        ::close(fd);
        REQUIRE(p != MAP_FAILED);
        auto maps = ProcReader{}.maps(::getpid());
        REQUIRE(maps);
        const MapEntry* m = find_mapping(*maps, reinterpret_cast<uint64_t>(p));
        REQUIRE(m != nullptr);
        entry = *m;
    }
    ~MappedFile() {
        if (p && p != MAP_FAILED) ::munmap(p, size);
    }
};

TEST_CASE("open_mapped opens the very file of a mapping", "[proc][files]") {
    Root root;
    const fs::path lib = root.dir / "tmp" / "mapped.bin";
    MappedFile mapped(lib, 8192, 'x');
    const MapEntry* m = &mapped.entry;
    ProcReader proc;
    // Replaced on disk after it was mapped: what is opened is still the mapped file.
    std::ofstream(root.dir / "tmp" / "new.bin") << "another file";
    fs::rename(root.dir / "tmp" / "new.bin", lib);
    auto f = open_mapped(proc, ::getpid(), *m, 1 << 20);
    if (::geteuid() == 0) {  // map_files needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE
        REQUIRE(f);
        CHECK(f->stat().st_ino == m->inode);
        CHECK(text_of(*f) == std::string(8192, 'x'));
    } else {
        CHECK_FALSE(f);
    }
}

TEST_CASE("open_mapped opens by path first, and through map_files only when the gate admits it",
          "[proc][files]") {
    Root root;
    const fs::path lib = root.dir / "tmp" / "gated.bin";
    MappedFile mapped(lib, 4096, 'g');
    const MapEntry* m = &mapped.entry;
    ProcReader proc;
    int asked = 0;
    bool admit = false;
    ProcGate gate = [&](int pid) -> std::optional<std::shared_ptr<void>> {
        CHECK(pid == ::getpid());
        asked++;
        if (!admit) return std::nullopt;
        return std::shared_ptr<void>();
    };
    // Its path is the mapped file (device and inode): opened without asking the gate, which
    // guards the open that takes the process's memory map lock.
    auto f = open_mapped(proc, ::getpid(), *m, 1 << 20, gate);
    REQUIRE(f);
    CHECK(text_of(*f) == std::string(4096, 'g'));
    CHECK(asked == 0);
    // Replaced on disk: only map_files reaches it, and the gate refuses (counted once).
    std::ofstream(root.dir / "tmp" / "new.bin") << "another file";
    fs::rename(root.dir / "tmp" / "new.bin", lib);
    const uint64_t busy = refused(Refusal::kBusy);
    auto refused_open = open_mapped(proc, ::getpid(), *m, 1 << 20, gate);
    REQUIRE_FALSE(refused_open);
    CHECK_THAT(refused_open.error().message, Catch::Contains("held up"));
    CHECK(asked == 1);
    CHECK(refused(Refusal::kBusy) == busy + 1);
    CHECK_FALSE(open_mapped(proc, ::getpid(), *m, 1 << 20, gate));
    CHECK(refused(Refusal::kBusy) == busy + 1);
    // Admitted: the mapping itself (map_files needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE).
    admit = true;
    auto through = open_mapped(proc, ::getpid(), *m, 1 << 20, gate);
    CHECK(asked == 3);
    if (::geteuid() == 0) {
        REQUIRE(through);
        CHECK(text_of(*through) == std::string(4096, 'g'));
    }
}
