#include "proc/jvm_attach.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <charconv>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "proc/files.h"

namespace leakwatch {

namespace {

using Clock = std::chrono::steady_clock;

class Fd {
  public:
    explicit Fd(int fd = -1) : fd_(fd) {}
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() {
        if (fd_ >= 0) ::close(fd_);
    }
    int get() const { return fd_; }

  private:
    int fd_;
};

// The fields after "Name:" of a status line, as numbers (decimal, or hex for the signal masks).
std::vector<uint64_t> numbers_after(std::string_view line, int base) {
    std::vector<uint64_t> out;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) return out;
    std::string_view rest = line.substr(colon + 1);
    while (!rest.empty()) {
        size_t start = rest.find_first_not_of(" \t");
        if (start == std::string_view::npos) break;
        rest.remove_prefix(start);
        size_t end = rest.find_first_of(" \t");
        std::string_view field = rest.substr(0, end);
        uint64_t v = 0;
        auto [p, ec] = std::from_chars(field.data(), field.data() + field.size(), v, base);
        if (ec != std::errc() || p != field.data() + field.size()) return {};
        out.push_back(v);
        rest.remove_prefix(field.size());
    }
    return out;
}

// Switches the calling thread's effective ids (the raw system calls: glibc's wrappers would
// switch every thread of the daemon) and back when it goes. Only the effective ids change: the
// real and saved ones stay the daemon's, so that the way back needs no privilege and cannot
// fail. Capabilities (capabilities(7), "Effect of user ID changes on capabilities"): between
// two non-zero uids (the shipped unit's dynamic user and a JVM's user) the thread keeps its
// sets. To uid 0 (a root JVM, under the unit) its effective set becomes its permitted one; back
// from uid 0 to a non-zero uid (the unit's user) the kernel clears the thread's permitted,
// effective and ambient sets (no SECBIT_KEEP_CAPS here): that thread then has no capability
// left, which is why it is a thread of its own that ends once the attach is done, and makes no
// thread of its own (a new thread would inherit its credentials). The other threads are not
// touched: credentials are per thread.
class ThreadCreds {
  public:
    ThreadCreds(uint32_t euid, uint32_t egid)
        : uid_(::geteuid()), gid_(::getegid()), dumpable_(process_dumpable()) {
        if (gid_ != egid && ::syscall(SYS_setresgid, -1, egid, -1) != 0) return;
        if (uid_ != euid && ::syscall(SYS_setresuid, -1, euid, -1) != 0) {
            ::syscall(SYS_setresgid, -1, gid_, -1);
            return;
        }
        ok_ = true;
    }
    ThreadCreds(const ThreadCreds&) = delete;
    ThreadCreds& operator=(const ThreadCreds&) = delete;
    ~ThreadCreds() {
        ::syscall(SYS_setresuid, -1, uid_, -1);
        ::syscall(SYS_setresgid, -1, gid_, -1);
        // A change of effective ids makes the kernel mark the process not dumpable (no core
        // dump, /proc/self owned by root): back as it was, now that the ids are.
        if (ok_ && (dumpable_ == 0 || dumpable_ == 1)) ::prctl(PR_SET_DUMPABLE, dumpable_);
    }
    bool ok() const { return ok_; }

  private:
    // As the process was before any thread switched: read once, by the first switch, before
    // it switches (another attach's switch clears the flag while it lasts).
    static int process_dumpable() {
        static const int dumpable = ::prctl(PR_GET_DUMPABLE);
        return dumpable;
    }

    uint32_t uid_, gid_;
    int dumpable_;
    bool ok_ = false;
};

// The attach trigger files this process created and has not removed yet. The thread that
// created one removes it whatever came of the attach; but one still waiting for the JVM's
// listener when the daemon stops ends with the process, and its file would stay in the JVM's
// /tmp: a JVM that finds `.attach_pid<pid>` at its next SIGQUIT (an operator's `kill -3` for a
// thread dump) starts its attach listener instead of dumping its threads. The stop removes
// what is left (remove_attach_triggers) and no file is created after it.
class Triggers {
  public:
    struct Trigger {
        int dir = -1;  // the JVM's /tmp (a descriptor of its own)
        std::string name;
        uint32_t euid = 0, egid = 0;
    };

    // Creates `name` in `dir` (with the caller's ids, the JVM's) and keeps it under `key`: 0,
    // or an errno: EEXIST (there already: not this process's), ESHUTDOWN (the daemon stops),
    // or why it could not be created.
    int create(int dir, const std::string& name, uint32_t euid, uint32_t egid, uint64_t& key) {
        {
            std::lock_guard lock(mu_);
            if (closed_) return ESHUTDOWN;
        }
        Trigger t{::fcntl(dir, F_DUPFD_CLOEXEC, 0), name, euid, egid};
        if (t.dir < 0) return errno;
        int fd = ::openat(dir, name.c_str(),
                          O_CREAT | O_EXCL | O_NOFOLLOW | O_WRONLY | O_CLOEXEC | O_NONBLOCK, 0600);
        if (fd < 0) {
            int err = errno;
            ::close(t.dir);
            return err;
        }
        ::close(fd);
        std::unique_lock lock(mu_);
        if (closed_) {
            // The stop came while it was created and did not see it: it goes now.
            lock.unlock();
            remove(t);
            return ESHUTDOWN;
        }
        key = next_++;
        live_.emplace(key, std::move(t));
        return 0;
    }

    // Removes the file of `key` (with the caller's ids), unless the stop took it.
    void release(uint64_t key) {
        std::unique_lock lock(mu_);
        auto it = live_.find(key);
        if (it == live_.end()) return;
        Trigger t = std::move(it->second);
        live_.erase(it);
        lock.unlock();
        remove(t);
    }

    // Every file still kept, taken (and, with `refuse_new`, no file created after).
    std::vector<Trigger> take_all(bool refuse_new) {
        std::lock_guard lock(mu_);
        if (refuse_new) closed_ = true;
        std::vector<Trigger> out;
        for (auto& [key, t] : live_) out.push_back(std::move(t));
        live_.clear();
        return out;
    }

    static bool remove(const Trigger& t) {
        bool removed = ::unlinkat(t.dir, t.name.c_str(), 0) == 0;
        ::close(t.dir);
        return removed;
    }

  private:
    std::mutex mu_;
    std::map<uint64_t, Trigger> live_;
    uint64_t next_ = 0;
    bool closed_ = false;
};

Triggers& triggers() {
    static Triggers* t = new Triggers;  // never destroyed: attach threads may outlive main
    return *t;
}

int remaining_ms(Clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

struct Session {
    const ProcReader& proc;
    int pid;
    AttachTarget target;
    int tmp_fd;  // the JVM's /tmp, opened as the daemon
    int pidfd;   // the JVM itself (-1: the kernel has no pidfd_open), opened before it was read
    std::string socket_name, trigger_name, what;
    const AttachLimits& limits;
    mutable bool signalled = false;    // SIGQUIT sent
    mutable bool no_identity = false;  // the daemon cannot pass the JVM's owner checks

    // The listener's socket: a socket owned by the JVM's user; nullopt when there is none yet.
    Result<bool> socket_present() const {
        struct stat st {};
        if (::fstatat(tmp_fd, socket_name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno == ENOENT) return false;
            return fail_errno(what + ": " + socket_name, errno);
        }
        if (!S_ISSOCK(st.st_mode)) {
            refuse_file(Refusal::kNotRegular, what, socket_name + " is not a socket");
            return fail(what + ": " + socket_name + " is not a socket");
        }
        if (st.st_uid != target.euid) {
            refuse_file(Refusal::kOwner, what,
                        socket_name + " is owned by uid " + std::to_string(st.st_uid) +
                            ", not the JVM's " + std::to_string(target.euid));
            return fail(what + ": " + socket_name + " is not the JVM's user's");
        }
        return true;
    }

    // Has the JVM start its listener: the trigger file, then SIGQUIT; waits for the socket.
    Result<void> start_listener() const {
        if (!target.catches_sigquit) {
            // -Xrs, or the process is no JVM: SIGQUIT would kill it or be lost.
            return fail(what + ": the process does not catch SIGQUIT and has no attach socket");
        }
        uint64_t trigger = 0;
        const int err = triggers().create(tmp_fd, trigger_name, target.euid, target.egid, trigger);
        const bool created = err == 0;
        if (err == ESHUTDOWN) return fail(what + ": leakwatchd is stopping");
        if (!created && err != EEXIST) return fail_errno(what + ": " + trigger_name, err);
        Result<void> out = fail(what + ": no listener " + std::to_string(limits.listener.count()) +
                                " ms after SIGQUIT");
        // Through the pidfd when there is one: the process whose status and command line were
        // read, never one that got its pid since.
        if ((pidfd >= 0 ? ::syscall(SYS_pidfd_send_signal, pidfd, SIGQUIT, nullptr, 0)
                        : ::kill(pid, SIGQUIT)) != 0) {
            out = fail_errno(what + ": SIGQUIT", errno);
        } else {
            signalled = true;
            const auto deadline = Clock::now() + limits.listener;
            int delay = 20;
            while (Clock::now() < deadline) {
                auto present = socket_present();
                if (!present) {
                    out = std::unexpected(present.error());
                    break;
                }
                if (*present) {
                    out = {};
                    break;
                }
                std::this_thread::sleep_for(
                    std::chrono::milliseconds(std::min(delay, remaining_ms(deadline) + 1)));
                delay = std::min(delay * 2, 400);
            }
            if (!out && Clock::now() >= deadline)
                refuse_file(Refusal::kSlow, what, "no attach listener after SIGQUIT");
        }
        if (created) triggers().release(trigger);
        return out;
    }

    // Connects (-ECONNREFUSED: a stale socket), sends the request, reads the whole reply.
    Result<std::string> exchange(const std::string& request, bool& refused) const {
        refused = false;
        Fd sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (sock.get() < 0) return fail_errno("socket", errno);
        const auto deadline = Clock::now() + limits.reply;
        timeval tv{};
        tv.tv_sec = limits.reply.count() / 1000;
        tv.tv_usec = (limits.reply.count() % 1000) * 1000;
        ::setsockopt(sock.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        ::setsockopt(sock.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        // The socket itself, opened without following a symlink and checked again, then
        // connected to through that descriptor: by name, connect would follow a symlink
        // swapped in since socket_present() (one resolved in the daemon's root). Through the
        // directory opened as the daemon: the thread's own ids could not pass /proc/PID/root
        // of a process in another user namespace.
        Fd entry(::openat(tmp_fd, socket_name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
        if (entry.get() < 0) {
            if (errno == ENOENT) refused = true;
            return fail_errno(what + ": " + socket_name, errno);
        }
        struct stat st {};
        if (::fstat(entry.get(), &st) != 0 || !S_ISSOCK(st.st_mode) || st.st_uid != target.euid) {
            refuse_file(Refusal::kOwner, what,
                        socket_name + " is no longer a socket of the JVM's user");
            return fail(what + ": " + socket_name + " changed");
        }
        const std::string path = "/proc/self/fd/" + std::to_string(entry.get());
        if (path.size() >= sizeof addr.sun_path) return fail(what + ": socket path too long");
        path.copy(addr.sun_path, path.size());
        if (::connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
            if (errno == ECONNREFUSED || errno == ENOENT) refused = true;
            if (errno == EAGAIN || errno == EINPROGRESS)
                refuse_file(Refusal::kSlow, what, "connecting to the attach socket timed out");
            return fail_errno(what + ": connect", errno);
        }
        // The listener must be the JVM itself, not another process of its user.
        ucred peer{};
        socklen_t len = sizeof peer;
        if (::getsockopt(sock.get(), SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0 ||
            peer.pid != pid) {
            refuse_file(
                Refusal::kOwner, what,
                "the attach socket is served by pid " + std::to_string(peer.pid) + ", not the JVM");
            return fail(what + ": the attach socket is not the JVM's");
        }
        for (size_t sent = 0; sent < request.size();) {
            ssize_t n =
                ::send(sock.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
            if (n <= 0) return fail_errno(what + ": send", n < 0 ? errno : EPIPE);
            sent += static_cast<size_t>(n);
        }
        std::string reply;
        char buf[4096];
        for (;;) {
            pollfd p{sock.get(), POLLIN, 0};
            int left = remaining_ms(deadline);
            if (left == 0 || ::poll(&p, 1, left) <= 0) {
                refuse_file(
                    Refusal::kSlow, what,
                    "no complete reply within " + std::to_string(limits.reply.count()) + " ms");
                return fail(what + ": no complete reply in time");
            }
            ssize_t n = ::recv(sock.get(), buf, sizeof buf, MSG_DONTWAIT);
            if (n == 0) break;
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR) continue;
                return fail_errno(what + ": recv", errno);
            }
            if (reply.size() + static_cast<size_t>(n) > limits.max_reply) {
                refuse_file(Refusal::kTooLarge, what,
                            "a reply of more than " + std::to_string(limits.max_reply) + " bytes");
                return fail(what + ": reply too large");
            }
            reply.append(buf, static_cast<size_t>(n));
        }
        return reply;
    }

    Result<std::string> run(const std::string& request) const {
        ThreadCreds creds(target.euid, target.egid);
        // Without the switch (no CAP_SETUID/CAP_SETGID), root still passes the JVM's checks.
        // Anyone else (the shipped unit's dynamic user) fails every one of them: the trigger
        // file is not the JVM's user's, SIGQUIT is refused, a connection is closed. Nothing is
        // tried then, and the JVM is not asked again (the ids will not change).
        if (!creds.ok() && ::geteuid() != 0) {
            no_identity = true;
            return fail(what + ": the daemon can become neither the JVM's user (" +
                        std::to_string(target.euid) +
                        ") nor root (CAP_SETUID and CAP_SETGID not granted); Java frames are "
                        "named from the JVM's own structures only");
        }
        auto present = socket_present();
        if (!present) return std::unexpected(present.error());
        if (*present) {
            bool refused = false;
            auto reply = exchange(request, refused);
            if (reply || !refused) return reply;
            // a socket left by a JVM that died: the trigger has the listener make a new one
        }
        if (auto started = start_listener(); !started) return std::unexpected(started.error());
        bool refused = false;
        return exchange(request, refused);
    }
};

}  // namespace

Result<AttachTarget> parse_attach_target(std::string_view status, const std::string& path) {
    AttachTarget t;
    bool pid_seen = false, uid_seen = false, gid_seen = false;
    uint64_t caught = 0, ignored = 0;
    while (!status.empty()) {
        size_t nl = status.find('\n');
        std::string_view line = status.substr(0, nl);
        status.remove_prefix(nl == std::string_view::npos ? status.size() : nl + 1);
        auto field = [&](std::string_view name) { return line.starts_with(name); };
        if (field("NSpid:") || (field("Pid:") && !pid_seen)) {
            auto v = numbers_after(line, 10);
            if (v.empty() || v.back() == 0 || v.back() > INT32_MAX)
                return fail(path + ": malformed " + std::string(line.substr(0, line.find(':'))));
            t.nspid = static_cast<int>(v.back());
            pid_seen = true;
        } else if (field("Uid:") || field("Gid:")) {
            auto v = numbers_after(line, 10);
            if (v.size() < 2 || v[1] > UINT32_MAX) return fail(path + ": malformed Uid/Gid");
            (field("Uid:") ? t.euid : t.egid) = static_cast<uint32_t>(v[1]);
            (field("Uid:") ? uid_seen : gid_seen) = true;
        } else if (field("SigCgt:") || field("SigIgn:")) {
            auto v = numbers_after(line, 16);
            if (v.size() != 1) return fail(path + ": malformed signal mask");
            (field("SigCgt:") ? caught : ignored) = v[0];
        }
    }
    if (!pid_seen || !uid_seen || !gid_seen) return fail(path + ": no pid, Uid or Gid");
    constexpr uint64_t kQuit = uint64_t{1} << (SIGQUIT - 1);
    t.catches_sigquit = (caught & kQuit) && !(ignored & kQuit);
    return t;
}

Result<AttachReply> parse_attach_reply(std::string_view reply) {
    size_t nl = reply.find('\n');
    std::string_view first = reply.substr(0, nl);
    int code = 0;
    auto [p, ec] = std::from_chars(first.data(), first.data() + first.size(), code);
    if (first.empty() || ec != std::errc() || p != first.data() + first.size())
        return fail("a reply without a result code");
    AttachReply out;
    out.code = code;
    if (nl != std::string_view::npos) out.output = std::string(reply.substr(nl + 1));
    return out;
}

std::string attach_request(std::string_view command) {
    std::string r = "1";
    r += '\0';
    r += "jcmd";
    r += '\0';
    r += command;
    r += '\0';
    r += '\0';  // two empty arguments
    r += '\0';
    return r;
}

size_t remove_attach_triggers(bool refuse_new, std::chrono::milliseconds wait) {
    // Each as its JVM's user (the only one, with root, that may remove a file from a sticky
    // /tmp), on a thread of its own for the reasons ThreadCreds gives; the stop waits for them
    // a bounded time only (the JVM's file system is its own).
    std::vector<std::future<bool>> removed;
    for (auto& t : triggers().take_all(refuse_new)) {
        std::packaged_task<bool()> task([t = std::move(t)] {
            ThreadCreds creds(t.euid, t.egid);
            return Triggers::remove(t);
        });
        removed.push_back(task.get_future());
        std::thread(std::move(task)).detach();
    }
    const auto deadline = Clock::now() + wait;
    size_t n = 0;
    for (auto& r : removed)
        if (r.wait_until(deadline) == std::future_status::ready && r.get()) n++;
    return n;
}

Result<AttachReply> jvm_command(const ProcReader& proc, int pid, std::string_view command,
                                const AttachLimits& limits, bool* give_up) {
    const std::string base = proc.root() + "/" + std::to_string(pid);
    // Opened first: what is read of the process below is of the one the signal can reach.
    // Only for the host's /proc (the pid is the host's then).
    Fd pidfd(proc.root() == "/proc" ? static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)) : -1);
    std::string status;
    {
        std::ifstream in(base + "/status");
        if (!in) return fail(base + "/status: cannot be read (the process exited?)");
        std::ostringstream text;
        text << in.rdbuf();
        status = text.str();
    }
    auto target = parse_attach_target(status, base + "/status");
    if (!target) return std::unexpected(target.error());
    // A JVM started with the attach mechanism off answers SIGQUIT with a thread dump on its
    // output every time: never signal it (its command line as the rules read it, bounded).
    if (auto info = proc.process(pid))
        for (const auto& arg : info->argv)
            if (arg == "-XX:+DisableAttachMechanism") {
                if (give_up) *give_up = true;
                return fail("the JVM runs with -XX:+DisableAttachMechanism");
            }
    // The JVM's /tmp inside its own root: a symlink there is resolved within that root.
    Fd root(::open((base + "/root").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (root.get() < 0) return fail_errno(base + "/root", errno);
    open_how how{};
    how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    Fd tmp(static_cast<int>(::syscall(SYS_openat2, root.get(), "tmp", &how, sizeof how)));
    if (tmp.get() < 0) return fail_errno(base + "/root/tmp", errno);

    const std::string ns = std::to_string(target->nspid);
    Session session{
        proc,
        pid,
        *target,
        tmp.get(),
        pidfd.get(),
        ".java_pid" + ns,
        ".attach_pid" + ns,
        "the attach socket of pid " + std::to_string(pid) + " (/tmp/.java_pid" + ns + ")",
        limits};
    const std::string request = attach_request(command);
    // On a thread of its own: its ids are switched to the JVM's while it works.
    Result<std::string> reply = fail("not run");
    std::thread worker([&] { reply = session.run(request); });
    worker.join();
    if (give_up) *give_up = session.signalled || session.no_identity;
    if (!reply) return std::unexpected(reply.error());
    auto parsed = parse_attach_reply(*reply);
    if (!parsed) return fail(session.what + ": " + parsed.error().message);
    return parsed;
}

}  // namespace leakwatch
