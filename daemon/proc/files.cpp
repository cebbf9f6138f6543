#include "proc/files.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <spdlog/spdlog.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <set>
#include <utility>

namespace leakwatch {
namespace {

constexpr int kReadFlags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
// Files already logged as refused: one line per file, and bounded memory.
constexpr size_t kMaxLogged = 4096;

std::array<std::atomic<uint64_t>, static_cast<size_t>(Refusal::kCount)> g_refused{};
std::mutex g_logged_mu;
std::set<std::string> g_logged;

std::string identity_of(const struct stat& st) {
    return std::to_string(st.st_dev) + ':' + std::to_string(st.st_ino) + ':' +
           std::to_string(st.st_mtim.tv_sec) + '.' + std::to_string(st.st_mtim.tv_nsec) + ':' +
           std::to_string(st.st_size);
}

const char* kind_of(mode_t mode) {
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISLNK(mode)) return "a symlink";
    return "not a regular file";
}

long openat2_path(int dir, const std::string& path, uint64_t resolve) {
    open_how how{};
    how.flags = O_PATH | O_CLOEXEC;
    how.resolve = resolve;
    return ::syscall(SYS_openat2, dir, path.c_str(), &how, sizeof(how));
}

// Without openat2: one component at a time below `root_fd`, refusing symlinks and "..", so
// that nothing can lead outside the root.
Result<int> walk_beneath(int root_fd, const std::string& path) {
    int dir = ::fcntl(root_fd, F_DUPFD_CLOEXEC, 0);
    if (dir < 0) return fail_errno("dup", errno);
    std::string_view rest = path;
    while (true) {
        size_t begin = rest.find_first_not_of('/');
        if (begin == std::string_view::npos) break;
        rest.remove_prefix(begin);
        std::string name(rest.substr(0, rest.find('/')));
        rest.remove_prefix(name.size());
        if (name == ".") continue;
        if (name == "..") {
            ::close(dir);
            refuse_file(Refusal::kSymlink, path, "\"..\" on the path");
            return fail(path + ": \"..\" is refused without openat2");
        }
        int next = ::openat(dir, name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
        int err = errno;
        ::close(dir);
        if (next < 0) return fail_errno("open " + path, err);
        struct stat st {};
        if (::fstat(next, &st) == 0 && S_ISLNK(st.st_mode)) {
            ::close(next);
            refuse_file(Refusal::kSymlink, path, "a symlink on the path (no openat2 here)");
            return fail(path + ": a symlink on the path (refused without openat2)");
        }
        dir = next;
    }
    return dir;
}

}  // namespace

RefusalCounts refused_files() {
    RefusalCounts out{};
    for (size_t i = 0; i < out.size(); i++) out[i] = g_refused[i].load();
    return out;
}

void refuse_file(Refusal why, const std::string& file, const std::string& detail) {
    const auto reason = static_cast<size_t>(why);
    {
        std::lock_guard lock(g_logged_mu);
        if (g_logged.size() >= kMaxLogged) g_logged.clear();
        if (!g_logged.insert(std::string(kRefusalNames[reason]) + '|' + file).second) return;
    }
    g_refused[reason]++;
    spdlog::warn(
        "not reading {}: {} (logged once per file; counted in "
        "leakwatch_files_refused_total{{reason=\"{}\"}})",
        file, detail, kRefusalNames[reason]);
}

OpenFile::OpenFile(OpenFile&& o) noexcept
    : fd_(std::exchange(o.fd_, -1)), st_(o.st_), path_(std::move(o.path_)) {}

OpenFile& OpenFile::operator=(OpenFile&& o) noexcept {
    if (this != &o) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = std::exchange(o.fd_, -1);
        st_ = o.st_;
        path_ = std::move(o.path_);
    }
    return *this;
}

OpenFile::~OpenFile() {
    if (fd_ >= 0) ::close(fd_);
}

std::string OpenFile::fd_path() const {
    return "/proc/self/fd/" + std::to_string(fd_);
}

std::string OpenFile::identity() const {
    return identity_of(st_);
}

// Checks what an O_PATH descriptor names, and opens it for reading if it may be read: through
// the descriptor itself, so the file read is the file checked.
Result<OpenFile> finish_open(int path_fd, std::string path, uint64_t max_bytes) {
    struct stat st {};
    if (::fstat(path_fd, &st) != 0) {
        int err = errno;
        ::close(path_fd);
        return fail_errno("stat " + path, err);
    }
    const std::string file = path + " (" + identity_of(st) + ")";
    if (S_ISLNK(st.st_mode)) {
        ::close(path_fd);
        refuse_file(Refusal::kSymlink, file, "it is a symlink");
        return fail(path + ": a symlink (refused)");
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(path_fd);
        refuse_file(Refusal::kNotRegular, file, std::string("it is ") + kind_of(st.st_mode));
        return fail(path + ": " + kind_of(st.st_mode) + " (refused)");
    }
    if (static_cast<uint64_t>(st.st_size) > max_bytes) {
        ::close(path_fd);
        refuse_file(Refusal::kTooLarge, file,
                    std::to_string(st.st_size) + " bytes, above limits.file_size (" +
                        std::to_string(max_bytes) + ")");
        return fail(path + ": " + std::to_string(st.st_size) + " bytes, above limits.file_size");
    }
    const std::string self = "/proc/self/fd/" + std::to_string(path_fd);
    int fd = ::open(self.c_str(), kReadFlags);
    int err = errno;
    ::close(path_fd);
    if (fd < 0) return fail_errno("open " + path, err);
    OpenFile out;
    out.fd_ = fd;
    out.path_ = std::move(path);
    if (::fstat(fd, &out.st_) != 0) return fail_errno("stat " + out.path_, errno);
    return out;
}

Result<OpenFile> open_beneath(int root_fd, const std::string& path, const OpenRules& rules,
                              bool use_openat2) {
    int fd = -1;
    if (use_openat2) {
        uint64_t resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
        if (!rules.symlinks) resolve |= RESOLVE_NO_SYMLINKS;
        long r = openat2_path(root_fd, path, resolve);
        if (r < 0 && (errno == ENOSYS || errno == EPERM)) {
            // No openat2 (before 5.6, or a seccomp filter that does not know it).
            return open_beneath(root_fd, path, rules, false);
        }
        if (r < 0 && errno == ELOOP) {
            refuse_file(Refusal::kSymlink, path,
                        rules.symlinks ? "a magic link on the path" : "a symlink on the path");
            return fail(path + ": a symlink on the path (refused)");
        }
        if (r < 0) return fail_errno("open " + path, errno);
        fd = static_cast<int>(r);
    } else {
        auto walked = walk_beneath(root_fd, path);
        if (!walked) return std::unexpected(walked.error());
        fd = *walked;
    }
    if (!rules.owners.empty()) {
        struct stat st {};
        if (::fstat(fd, &st) == 0 &&
            std::find(rules.owners.begin(), rules.owners.end(), st.st_uid) == rules.owners.end()) {
            ::close(fd);
            refuse_file(
                Refusal::kOwner, path + " (" + identity_of(st) + ")",
                "owned by uid " + std::to_string(st.st_uid) + ", not by the process's user");
            return fail(path + ": owned by uid " + std::to_string(st.st_uid) + " (refused)");
        }
    }
    return finish_open(fd, path, rules.max_bytes);
}

Result<OpenFile> open_in_root(const ProcReader& proc, int pid, const std::string& path,
                              const OpenRules& rules) {
    const std::string root = proc.root() + "/" + std::to_string(pid) + "/root";
    int root_fd = ::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0) return fail_errno("open " + root, errno);
    auto out = open_beneath(root_fd, path, rules);
    ::close(root_fd);
    return out;
}

Result<OpenFile> open_file(const std::string& path, uint64_t max_bytes) {
    int fd = ::open(path.c_str(), O_PATH | O_CLOEXEC);
    if (fd < 0) return fail_errno("open " + path, errno);
    return finish_open(fd, path, max_bytes);
}

Result<OpenFile> open_mapped(const ProcReader& proc, int pid, const MapEntry& m, uint64_t max_bytes,
                             const ProcGate& gate) {
    auto is_inode = [&](const OpenFile& f) {
        return m.inode == 0 || static_cast<uint64_t>(f.stat().st_ino) == m.inode;
    };
    // A path leads to the mapped file only if it is the same device too (an inode number is
    // only unique within its file system).
    auto is_mapped = [&](const OpenFile& f) {
        return is_inode(f) && (m.inode == 0 || (major(f.stat().st_dev) == m.dev_major &&
                                                minor(f.stat().st_dev) == m.dev_minor));
    };
    // The path first: opening it takes no lock of the process's, so a process holding up its
    // memory map's lock holds up nothing of ours here.
    std::string tried;
    if (!m.deleted && m.path.starts_with('/')) {
        OpenRules rules{.max_bytes = max_bytes};
        auto f = open_in_root(proc, pid, m.path, rules);
        if (f && is_mapped(*f)) return f;
        tried = "in its root: " + (f ? std::string("another file") : f.error().message);
        // A chroot in the daemon's own mount namespace shows host paths; the device and inode
        // check makes sure that what is read is still the mapped file.
        int host = ::open(m.path.c_str(), O_PATH | O_CLOEXEC);
        if (host >= 0) {
            auto h = finish_open(host, m.path, max_bytes);
            if (h && is_mapped(*h)) return h;
        }
        tried += "; ";
    }
    // The mapping itself: the kernel's link to the file it maps, whatever happened to its path.
    char range[64];
    std::snprintf(range, sizeof(range), "%llx-%llx", static_cast<unsigned long long>(m.start),
                  static_cast<unsigned long long>(m.end));
    const std::string link = proc.root() + "/" + std::to_string(pid) + "/map_files/" + range;
    std::optional<std::shared_ptr<void>> flight;
    if (gate) {
        flight = gate(pid);
        if (!flight) {
            refuse_file(Refusal::kBusy, link + " (" + m.path + ")",
                        "reads of /proc files of its process or user (or of all) are held up "
                        "already; its frames stay unnamed");
            return fail(link + ": reads of the process's /proc files are held up (refused)");
        }
    }
    int fd = ::open(link.c_str(), O_PATH | O_CLOEXEC);
    flight.reset();  // what follows reads the file, not the process
    if (fd >= 0) {
        auto f = finish_open(fd, m.path, max_bytes);
        // The link is the mapping's own file: its inode is what the maps line says.
        if (f && is_inode(*f)) return f;
        tried += f ? "map_files: another inode" : f.error().message;
    } else {
        tried += "map_files: " + std::string(std::strerror(errno));
    }
    return fail("no path reaches " + m.path + " (inode " + std::to_string(m.inode) +
                ") mapped by pid " + std::to_string(pid) + ": " + tried);
}

Result<std::string> read_at(const OpenFile& file, uint64_t offset, size_t length) {
    std::string out(length, '\0');
    size_t done = 0;
    while (done < length) {
        ssize_t n =
            ::pread(file.fd(), out.data() + done, length - done, static_cast<off_t>(offset + done));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail_errno("read " + file.path(), errno);
        if (n == 0) break;
        done += static_cast<size_t>(n);
    }
    out.resize(done);
    return out;
}

}  // namespace leakwatch
