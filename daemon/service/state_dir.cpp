#include "service/state_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace leakwatch {

Result<void> StateDir::write(const std::string& name, std::string_view bytes) const {
    const std::string path = dir_ + "/" + name, tmp = path + ".tmp";
    int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return fail_errno("writing " + tmp, errno);
    size_t done = 0;
    while (done < bytes.size()) {
        ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int err = n < 0 ? errno : EIO;
            close(fd);
            unlink(tmp.c_str());
            return fail_errno("writing " + tmp, err);
        }
        done += static_cast<size_t>(n);
    }
    if (fsync(fd) != 0) {
        int err = errno;
        close(fd);
        unlink(tmp.c_str());
        return fail_errno("writing " + tmp, err);
    }
    close(fd);
    if (rename(tmp.c_str(), path.c_str()) != 0) {
        int err = errno;
        unlink(tmp.c_str());
        return fail_errno("renaming " + tmp + " to " + path, err);
    }
    return {};
}

Result<std::optional<std::string>> StateDir::read(const std::string& name, size_t max) const {
    const std::string path = dir_ + "/" + name;
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT) return std::optional<std::string>();
        return fail_errno("reading " + path, errno);
    }
    struct stat st {};
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || static_cast<size_t>(st.st_size) > max) {
        close(fd);
        return fail(path + " is not a regular file of at most " + std::to_string(max) + " bytes");
    }
    std::string out(static_cast<size_t>(st.st_size), '\0');
    size_t done = 0;
    while (done < out.size()) {
        ssize_t n = ::read(fd, out.data() + done, out.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        done += static_cast<size_t>(n);
    }
    close(fd);
    out.resize(done);
    return std::optional<std::string>(std::move(out));
}

}  // namespace leakwatch
