// Running a diagnostic command in a HotSpot JVM through its attach mechanism, the protocol
// `jcmd` speaks, without a jcmd process: leakwatchd uses it to have a watched JVM write its perf
// map (`Compiler.perfmap`, JDK 17 and later).
//
// The JVM listens on a Unix socket `.java_pid<NSPID>` in its own /tmp once a file
// `.attach_pid<NSPID>` is there and it gets SIGQUIT (NSPID: its pid in its own pid namespace).
// Everything is reached through /proc/PID/root/tmp, so a JVM in a container (other mount and
// pid namespaces) is reached the same way, with no setns. The trigger file is created and the
// socket connected to with the JVM's effective uid and gid, switched on a thread of its own
// (the JVM accepts root or its own user; host root is neither inside a user namespace that does
// not map it).
//
// The JVM is hostile input like its files (proc/files.h): the socket must be a socket its
// user owns, and its listener must be the JVM itself (SO_PEERCRED's pid); every wait is
// bounded (the socket appearing, connecting, the reply) and the reply's size too. SIGQUIT is
// sent only to a process that catches it (a JVM with -Xrs would otherwise dump core) and only
// after the trigger file exists (else the JVM prints a thread dump). Refusals are counted as
// files refused (`leakwatch_files_refused_total`) and logged once.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "proc/proc.h"
#include "util/result.h"

namespace leakwatch {

struct AttachLimits {
    // How long the JVM may take to start its listener after SIGQUIT.
    std::chrono::milliseconds listener = std::chrono::seconds(10);
    // How long connecting, sending and reading the whole reply may take.
    std::chrono::milliseconds reply = std::chrono::seconds(10);
    size_t max_reply = 64 << 10;  // bytes
};

struct AttachReply {
    int code = -1;       // the JVM's result code (0: done)
    std::string output;  // what the command printed, as received (hostile: shown with care)
};

// What /proc/PID/status says about a process, as the attach needs it.
struct AttachTarget {
    int nspid = 0;  // its pid in its own pid namespace
    uint32_t euid = 0, egid = 0;
    bool catches_sigquit = false;  // SigCgt has SIGQUIT and SigIgn does not
};
Result<AttachTarget> parse_attach_target(std::string_view status, const std::string& path);

// Splits a reply "<code>\n<output>"; an error when it has no such first line.
Result<AttachReply> parse_attach_reply(std::string_view reply);

// The request for a jcmd command line: protocol 1, "jcmd", the line, two empty arguments.
std::string attach_request(std::string_view command);

// Runs `command` (e.g. "Compiler.perfmap") in JVM `pid`. Blocks up to the limits: callers run
// it on a thread of their own (util/bounded_loader.h). `give_up` (when given) is set when a failure
// would come again, so the JVM is not to be asked again: it was sent SIGQUIT to start its
// listener, whatever came of it (a JVM whose listener did not come prints a thread dump for each
// such signal), or it runs with its attach mechanism off, or the daemon can neither become its
// user nor is root (a unit without CAP_SETUID/CAP_SETGID), so that the JVM refuses it.
Result<AttachReply> jvm_command(const ProcReader& proc, int pid, std::string_view command,
                                const AttachLimits& limits = {}, bool* give_up = nullptr);

// Removes the trigger files (`.attach_pid<NSPID>`) of attaches still waiting for their JVM's
// listener, which the process would otherwise leave when it exits; with `refuse_new`, no
// attach creates one after (the daemon's stop). Waits at most `wait` for the removals; returns
// how many files were removed.
size_t remove_attach_triggers(bool refuse_new,
                              std::chrono::milliseconds wait = std::chrono::seconds(1));

}  // namespace leakwatch
