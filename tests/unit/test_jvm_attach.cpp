// The attach protocol jcmd speaks (proc/jvm_attach.cpp): the request's bytes, the reply's code,
// what /proc/PID/status tells, and a listener of our own in a fixture process root standing for
// a JVM that answers, one that never does, one that answers too much, and a socket that is not
// the JVM's. (A real JVM, in its own namespaces too: tests/integration/test_runtimes.py.)
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>

#include "proc/files.h"
#include "proc/jvm_attach.h"

using namespace leakwatch;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

TEST_CASE("the request is five NUL-terminated strings, protocol 1", "[proc][jvm_attach]") {
    using namespace std::string_literals;
    CHECK(attach_request("Compiler.perfmap") == "1\0jcmd\0Compiler.perfmap\0\0\0"s);
}

TEST_CASE("a reply is a result code line and the command's output", "[proc][jvm_attach]") {
    auto ok = parse_attach_reply("0\n");
    REQUIRE(ok);
    CHECK(ok->code == 0);
    CHECK(ok->output.empty());
    auto unknown =
        parse_attach_reply("-1\njava.lang.IllegalArgumentException: Unknown diagnostic command\n");
    REQUIRE(unknown);
    CHECK(unknown->code == -1);
    CHECK(unknown->output.starts_with("java.lang.IllegalArgumentException"));
    CHECK_FALSE(parse_attach_reply(""));
    CHECK_FALSE(parse_attach_reply("HTTP/1.1 200 OK\r\n"));
    CHECK_FALSE(parse_attach_reply("0x\n"));
}

TEST_CASE("status gives the pid in the process's namespace, its ids, its SIGQUIT handling",
          "[proc][jvm_attach]") {
    const std::string status =
        "Name:\tjava\nPid:\t798\nPPid:\t1\nUid:\t1000\t100000\t100000\t100000\n"
        "Gid:\t1001\t100001\t100001\t100001\nNSpid:\t798\t1\n"
        "SigIgn:\t0000000000000000\nSigCgt:\t2000000181005ccf\n";
    auto t = parse_attach_target(status, "status");
    REQUIRE(t);
    CHECK(t->nspid == 1);
    CHECK(t->euid == 100000);
    CHECK(t->egid == 100001);
    CHECK(t->catches_sigquit);  // bit 2 of 0x...cf
    // -Xrs: SIGQUIT left to its default action (a core dump), or ignored
    auto xrs = parse_attach_target("Pid:\t5\nUid:\t0 0 0 0\nGid:\t0 0 0 0\nSigCgt:\t0\n", "s");
    REQUIRE(xrs);
    CHECK(xrs->nspid == 5);  // no NSpid line (an old kernel): the pid itself
    CHECK_FALSE(xrs->catches_sigquit);
    auto ignored =
        parse_attach_target("Pid:\t5\nUid:\t0 0 0 0\nGid:\t0 0 0 0\nSigIgn:\t4\nSigCgt:\t4\n", "s");
    REQUIRE(ignored);
    CHECK_FALSE(ignored->catches_sigquit);
    CHECK_FALSE(parse_attach_target("Pid:\t5\nUid:\tx\nGid:\t0 0 0 0\n", "s"));
    CHECK_FALSE(parse_attach_target("Pid:\t5\n", "s"));
}

namespace {

// A /proc tree with one process, FAKE_PID, whose root is a directory of ours; its
// /tmp/.java_pid<NSPID> is a socket this test serves.
struct FakeJvm {
    static constexpr int kFakePid = 999999;  // above pid_max's default: no real process
    static constexpr int kNsPid = 7;
    fs::path dir;
    int listener = -1;
    std::thread server;

    explicit FakeJvm(bool catches_sigquit = true) {
        std::string tmpl = (fs::temp_directory_path() / "leakwatch-attach-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        dir = tmpl;
        fs::create_directories(dir / "rootfs" / "tmp");
        fs::create_directories(proc_dir());
        fs::create_directory_symlink(dir / "rootfs", proc_dir() / "root");
        std::ofstream(proc_dir() / "status")
            << "Name:\tjava\nPid:\t" << kFakePid << "\nUid:\t" << ::getuid() << '\t' << ::geteuid()
            << "\t0\t0\nGid:\t" << ::getgid() << '\t' << ::getegid() << "\t0\t0\nNSpid:\t"
            << kFakePid << '\t' << kNsPid << "\nSigIgn:\t0000000000000000\nSigCgt:\t"
            << (catches_sigquit ? "4" : "0") << '\n';
    }
    ~FakeJvm() {
        if (server.joinable()) server.join();
        if (listener >= 0) ::close(listener);
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
    fs::path proc_dir() const { return dir / "proc" / std::to_string(kFakePid); }
    fs::path socket_path() const {
        return dir / "rootfs" / "tmp" / (".java_pid" + std::to_string(kNsPid));
    }
    ProcReader proc() const { return ProcReader((dir / "proc").string()); }

    // Listens at the socket; `serve` gets the accepted connection.
    void listen(std::function<void(int)> serve) {
        listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        REQUIRE(listener >= 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        const std::string path = socket_path().string();
        REQUIRE(path.size() < sizeof addr.sun_path);
        path.copy(addr.sun_path, path.size());
        REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
        REQUIRE(::listen(listener, 5) == 0);
        server = std::thread([this, serve] {
            int c = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
            if (c < 0) return;
            serve(c);
            ::close(c);
        });
    }
};

// Reads the request the way the JVM does (five strings), and returns it.
std::string read_request(int c) {
    std::string got;
    char ch = 0;
    int strings = 0;
    while (strings < 5 && ::read(c, &ch, 1) == 1) {
        got += ch;
        if (ch == '\0') strings++;
    }
    return got;
}

uint64_t refused(Refusal why) {
    return refused_files()[static_cast<size_t>(why)];
}

}  // namespace

TEST_CASE("a listener that is not the process itself is refused", "[proc][jvm_attach]") {
    // The socket is ours (the test's pid), not FAKE_PID's: another process of the JVM's user
    // could have put it there.
    FakeJvm jvm;
    jvm.listen([](int c) { read_request(c); });
    const uint64_t before = refused(Refusal::kOwner);
    auto reply = jvm_command(jvm.proc(), FakeJvm::kFakePid, "VM.version");
    REQUIRE_FALSE(reply);
    CHECK(reply.error().message.find("not the JVM's") != std::string::npos);
    CHECK(refused(Refusal::kOwner) == before + 1);
}

TEST_CASE("the JVM's own listener: the exchange, a silent JVM, a reply too large",
          "[proc][jvm_attach]") {
    // Our own pid stands for the JVM: its listener is then the process itself.
    const int self = ::getpid();
    auto fake = [&](FakeJvm& jvm) {
        // The same tree under our own pid.
        fs::path mine = jvm.dir / "proc" / std::to_string(self);
        fs::rename(jvm.proc_dir(), mine);
        std::ifstream in(mine / "status");
        std::string text((std::istreambuf_iterator<char>(in)), {});
        auto at = text.find(std::to_string(FakeJvm::kFakePid));
        while (at != std::string::npos) {
            text.replace(at, std::to_string(FakeJvm::kFakePid).size(), std::to_string(self));
            at = text.find(std::to_string(FakeJvm::kFakePid));
        }
        std::ofstream(mine / "status", std::ios::trunc) << text;
    };
    SECTION("answers") {
        FakeJvm jvm;
        fake(jvm);
        std::string request;
        jvm.listen([&](int c) {
            request = read_request(c);
            const std::string reply = "0\nOpenJDK 64-Bit Server VM\n";
            CHECK(::write(c, reply.data(), reply.size()) == static_cast<ssize_t>(reply.size()));
        });
        auto reply = jvm_command(jvm.proc(), self, "VM.version");
        jvm.server.join();
        REQUIRE(reply);
        CHECK(reply->code == 0);
        CHECK(reply->output == "OpenJDK 64-Bit Server VM\n");
        CHECK(request == attach_request("VM.version"));
    }
    SECTION("never answers") {
        FakeJvm jvm;
        fake(jvm);
        jvm.listen([](int c) {
            read_request(c);
            std::this_thread::sleep_for(600ms);
        });
        const uint64_t before = refused(Refusal::kSlow);
        const auto start = std::chrono::steady_clock::now();
        auto reply = jvm_command(jvm.proc(), self, "Compiler.perfmap",
                                 AttachLimits{.listener = 100ms, .reply = 200ms});
        const auto took = std::chrono::steady_clock::now() - start;
        REQUIRE_FALSE(reply);
        CHECK(took < 500ms);
        CHECK(refused(Refusal::kSlow) == before + 1);
    }
    SECTION("answers too much") {
        FakeJvm jvm;
        fake(jvm);
        jvm.listen([](int c) {
            read_request(c);
            const std::string flood(1 << 20, 'x');
            (void)::send(c, flood.data(), flood.size(), MSG_NOSIGNAL);
        });
        const uint64_t before = refused(Refusal::kTooLarge);
        auto reply =
            jvm_command(jvm.proc(), self, "Compiler.perfmap", AttachLimits{.max_reply = 64 << 10});
        REQUIRE_FALSE(reply);
        CHECK(reply.error().message.find("too large") != std::string::npos);
        CHECK(refused(Refusal::kTooLarge) == before + 1);
    }
    SECTION("a file that is not a socket") {
        FakeJvm jvm;
        fake(jvm);
        std::ofstream(jvm.socket_path()) << "0\n";
        const uint64_t before = refused(Refusal::kNotRegular);
        auto reply = jvm_command(jvm.proc(), self, "Compiler.perfmap");
        REQUIRE_FALSE(reply);
        CHECK(refused(Refusal::kNotRegular) == before + 1);
    }
}

TEST_CASE("no socket and SIGQUIT not caught: nothing is signalled", "[proc][jvm_attach]") {
    FakeJvm jvm(false);
    auto reply = jvm_command(jvm.proc(), FakeJvm::kFakePid, "Compiler.perfmap");
    REQUIRE_FALSE(reply);
    CHECK(reply.error().message.find("does not catch SIGQUIT") != std::string::npos);
    // and no trigger file was left
    CHECK_FALSE(fs::exists(jvm.dir / "rootfs" / "tmp" / ".attach_pid7"));
}

namespace {

// A process that catches SIGQUIT and never starts a listener: a JVM that is slow to.
struct SilentJvm {
    pid_t pid = -1;
    SilentJvm() {
        pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            struct sigaction sa {};
            sa.sa_handler = [](int) {};
            ::sigaction(SIGQUIT, &sa, nullptr);
            for (;;) ::pause();
        }
    }
    ~SilentJvm() {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
    }
};

// The fake /proc entry of `jvm` moved to `pid`, whose status names it.
void retarget(FakeJvm& jvm, int pid) {
    fs::path to = jvm.dir / "proc" / std::to_string(pid);
    fs::rename(jvm.proc_dir(), to);
    std::ifstream in(to / "status");
    std::string text((std::istreambuf_iterator<char>(in)), {});
    const std::string from = std::to_string(FakeJvm::kFakePid);
    for (auto at = text.find(from); at != std::string::npos; at = text.find(from))
        text.replace(at, from.size(), std::to_string(pid));
    std::ofstream(to / "status", std::ios::trunc) << text;
}

bool appears(const fs::path& path) {
    for (int i = 0; i < 500 && !fs::exists(path); i++) std::this_thread::sleep_for(10ms);
    return fs::exists(path);
}

}  // namespace

TEST_CASE("the trigger file of an attach in flight is removed at a stop, and only it",
          "[proc][jvm_attach]") {
    SilentJvm child;
    FakeJvm jvm;
    retarget(jvm, child.pid);
    const fs::path trigger = jvm.dir / "rootfs" / "tmp" / ".attach_pid7";
    SECTION("the daemon's own file") {
        bool give_up = false;
        Result<AttachReply> reply = fail("not run");
        std::thread attach([&] {
            reply = jvm_command(jvm.proc(), child.pid, "Compiler.perfmap",
                                AttachLimits{.listener = 1500ms}, &give_up);
        });
        REQUIRE(appears(trigger));
        // The stop, while the attach waits for a listener.
        CHECK(remove_attach_triggers(false) == 1);
        CHECK_FALSE(fs::exists(trigger));
        // Someone else's file of the same name since: the attach, when it ends, leaves it.
        std::ofstream(trigger) << "";
        attach.join();
        REQUIRE_FALSE(reply);
        CHECK(reply.error().message.find("no listener") != std::string::npos);
        CHECK(give_up);  // signalled
        CHECK(fs::exists(trigger));
        CHECK(remove_attach_triggers(false) == 0);
        CHECK(fs::exists(trigger));
    }
    SECTION("a file that was there before is not the daemon's") {
        std::ofstream(trigger) << "";
        auto reply =
            jvm_command(jvm.proc(), child.pid, "Compiler.perfmap", AttachLimits{.listener = 100ms});
        REQUIRE_FALSE(reply);
        CHECK(remove_attach_triggers(false) == 0);
        CHECK(fs::exists(trigger));
    }
    SECTION("an attach that ends removes its file itself") {
        auto reply =
            jvm_command(jvm.proc(), child.pid, "Compiler.perfmap", AttachLimits{.listener = 100ms});
        REQUIRE_FALSE(reply);
        CHECK_FALSE(fs::exists(trigger));
        CHECK(remove_attach_triggers(false) == 0);
    }
}

// Last in this file: after it, no attach of this process creates a trigger file.
TEST_CASE("after the stop, no attach creates a trigger file", "[proc][jvm_attach]") {
    SilentJvm child;
    FakeJvm jvm;
    retarget(jvm, child.pid);
    remove_attach_triggers(true);
    bool give_up = true;
    auto reply = jvm_command(jvm.proc(), child.pid, "Compiler.perfmap",
                             AttachLimits{.listener = 100ms}, &give_up);
    REQUIRE_FALSE(reply);
    CHECK(reply.error().message.find("stopping") != std::string::npos);
    CHECK_FALSE(give_up);  // not signalled
    CHECK_FALSE(fs::exists(jvm.dir / "rootfs" / "tmp" / ".attach_pid7"));
}
