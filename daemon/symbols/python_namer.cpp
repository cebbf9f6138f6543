#include "symbols/python_namer.h"

#include <spdlog/spdlog.h>

#include <map>
#include <mutex>
#include <set>
#include <unordered_map>
#include <utility>

#include "proc/files.h"

namespace leakwatch {

namespace {

// Code objects remembered per process; past it the process's are read anew.
constexpr size_t kMaxCodes = 4096;
// Code objects waiting to be read per process; more are named in a later snapshot.
constexpr size_t kMaxWanted = 1024;

std::string_view base_name(std::string_view path) {
    const size_t slash = path.rfind('/');
    return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

}  // namespace

CLibrary c_library(const std::vector<MapEntry>& maps) {
    bool musl = false;
    for (const MapEntry& m : maps) {
        const std::string_view name = base_name(m.path);
        // glibc's libc (libc.so.6, or libc-2.X.so before 2.34 named it so)
        if (name == "libc.so.6" || (name.starts_with("libc-2.") && name.ends_with(".so")))
            return CLibrary::kGlibc;
        if (name.starts_with("ld-musl-") || name.starts_with("libc.musl-")) musl = true;
    }
    return musl ? CLibrary::kMusl : CLibrary::kOther;
}

struct PythonNamer::State {
    struct Process {
        uint64_t start_time = 0;
        uint64_t id = 0;     // this entry's own: a load of a forgotten entry writes nothing
        bool found = false;  // the runtime has been looked for
        std::shared_ptr<const PythonRuntime> runtime;  // nullptr: none leakwatch can read
        bool refused = false;  // reading its memory took too long: its frames stay unnamed
        std::unordered_map<uint64_t, std::shared_ptr<const PythonCode>> codes;
        std::set<uint64_t> wanted;  // code objects to read (or check) in the next load
    };
    mutable std::mutex mu;
    std::map<pid_t, Process> processes;
    uint64_t next_id = 1;
    uint64_t unsupported = 0;

    // Caller holds mu.
    Process* find(pid_t pid, uint64_t id) {
        auto it = processes.find(pid);
        return it == processes.end() || it->second.id != id ? nullptr : &it->second;
    }
};

PythonNamer::PythonNamer(const ProcReader& proc, Symbolizer& symbolizer)
    : state_(std::make_shared<State>()), proc_(proc), symbolizer_(symbolizer) {}

PythonNamer::~PythonNamer() = default;

std::shared_ptr<const PythonRuntime> PythonNamer::runtime(pid_t pid, uint64_t start_time,
                                                          const std::vector<MapEntry>& maps,
                                                          const std::string& exe, bool* pending) {
    uint64_t id = 0;
    {
        std::lock_guard lock(state_->mu);
        auto it = state_->processes.find(pid);
        if (it != state_->processes.end() && it->second.start_time != start_time) {
            state_->processes.erase(it);  // the pid was reused
            it = state_->processes.end();
        }
        if (it == state_->processes.end()) {
            State::Process p;
            p.start_time = start_time;
            p.id = state_->next_id++;
            it = state_->processes.emplace(pid, std::move(p)).first;
        }
        if (it->second.found) return it->second.runtime;
        id = it->second.id;
    }
    const std::string job = "python-runtime:" + std::to_string(pid) + ':' + std::to_string(id);
    auto wait = symbolizer_.wait_for(job);
    if (!wait) {
        refuse_file(Refusal::kSlow, exe + " (pid " + std::to_string(pid) + ")",
                    "looking for its CPython runtime has taken too long; its stacks have "
                    "native frames only");
        std::lock_guard lock(state_->mu);
        if (State::Process* p = state_->find(pid, id)) p->found = true;
        return nullptr;
    }
    auto load = [state = state_, proc = proc_, pid, id, maps, exe,
                 max_bytes = symbolizer_.max_file_bytes(), gate = symbolizer_.proc_gate()] {
        auto found = find_python(proc, pid, maps, exe, max_bytes, gate);
        if (found && found->layout && c_library(maps) != CLibrary::kGlibc) {
            // The BPF side would read a thread's state at glibc's offset in another C
            // library's thread structure: wrong memory, so nothing is read.
            found->layout.reset();
            found->why_unsupported =
                std::string("it runs on ") +
                (c_library(maps) == CLibrary::kMusl ? "musl" : "a C library that is not glibc") +
                ", whose thread structure leakwatch does not know";
        }
        if (found && !found->layout) {
            spdlog::warn("pid {}: CPython in {}, but {}: its stacks have native frames only", pid,
                         found->module, found->why_unsupported);
        } else if (found) {
            spdlog::info("pid {}: CPython 3.{} in {}: Python frames are read", pid, found->minor,
                         found->module);
        }
        std::lock_guard lock(state->mu);
        State::Process* p = state->find(pid, id);
        if (!p) return;
        p->found = true;
        if (found && !found->layout) state->unsupported++;
        if (found && found->layout) p->runtime = std::make_shared<const PythonRuntime>(*found);
    };
    if (symbolizer_.loader().run(job, std::move(load), *wait) == BoundedLoader::Outcome::kWaiting) {
        if (pending) *pending = true;
        return nullptr;
    }
    std::lock_guard lock(state_->mu);
    State::Process* p = state_->find(pid, id);
    return p ? p->runtime : nullptr;
}

Frame PythonNamer::resolve(uint32_t pid32, uint64_t code, uint32_t instruction) {
    const auto pid = static_cast<pid_t>(pid32);
    Frame f;
    f.address = code;
    f.module = "[python]";
    f.module_offset = code;
    std::shared_ptr<const PythonRuntime> runtime;
    uint64_t id = 0;
    {
        std::lock_guard lock(state_->mu);
        auto it = state_->processes.find(pid);
        if (it == state_->processes.end()) return f;
        State::Process& p = it->second;
        if (!p.found) f.pending = true;  // its runtime is being looked for
        if (!p.runtime || p.refused) return f;
        runtime = p.runtime;
        id = p.id;
        if (p.wanted.size() < kMaxWanted) p.wanted.insert(code);
    }
    // One load per process at a time, reading every code object wanted: a process whose
    // memory blocks its reader holds up one loader thread.
    const std::string job = "python-code:" + std::to_string(pid) + ':' + std::to_string(id);
    auto wait = symbolizer_.wait_for(job);
    if (!wait) {
        refuse_file(Refusal::kSlow, "/proc/" + std::to_string(pid) + "/mem (Python code objects)",
                    "reading its code objects has taken too long; its Python frames stay "
                    "unnamed");
        std::lock_guard lock(state_->mu);
        if (State::Process* p = state_->find(pid, id)) {
            p->refused = true;
            p->wanted.clear();
        }
        return f;
    }
    auto load = [state = state_, proc = proc_, pid, id, layout = *runtime->layout,
                 gate = symbolizer_.proc_gate()] {
        // Reads of /proc/PID/mem take the memory map's lock, which the process can hold up
        // forever: only as many as the /proc read pool's bounds admit hold up loader threads,
        // and none of a process (or of a user) whose other reads are stuck already.
        auto flight = gate(pid);
        if (!flight) {
            refuse_file(Refusal::kBusy,
                        "/proc/" + std::to_string(pid) + "/mem (Python code objects)",
                        "reads of /proc files of its process or user (or of all) are held up "
                        "already; its Python frames stay unnamed until they are not");
            std::lock_guard lock(state->mu);
            if (State::Process* p = state->find(pid, id)) p->wanted.clear();
            return;
        }
        // What is known of the code objects wanted, taken under the lock, read without it.
        std::vector<std::pair<uint64_t, std::shared_ptr<const PythonCode>>> batch;
        {
            std::lock_guard lock(state->mu);
            State::Process* p = state->find(pid, id);
            if (!p) return;
            for (uint64_t c : p->wanted) {
                auto known = p->codes.find(c);
                batch.emplace_back(c, known == p->codes.end() ? nullptr : known->second);
            }
            p->wanted.clear();
        }
        for (auto& [address, known] : batch) {
            // A code object freed and another made at its address: its header differs.
            if (known) {
                auto header = read_python_code_header(proc, pid, layout, address);
                if (header && *header == known->header) continue;
            }
            auto read = read_python_code(proc, pid, layout, address);
            if (!read) {
                spdlog::debug("pid {}: code object at {:#x}: {}", pid, address,
                              read.error().message);
                known = nullptr;
            } else {
                known = std::make_shared<const PythonCode>(std::move(*read));
            }
        }
        std::lock_guard lock(state->mu);
        State::Process* p = state->find(pid, id);
        if (!p) return;
        for (auto& [address, read] : batch) {
            if (!read) {
                p->codes.erase(address);
                continue;
            }
            if (p->codes.size() >= kMaxCodes && !p->codes.count(address)) p->codes.clear();
            p->codes[address] = std::move(read);
        }
    };
    if (symbolizer_.loader().run(job, std::move(load), *wait) == BoundedLoader::Outcome::kWaiting) {
        f.pending = true;
        return f;
    }
    std::shared_ptr<const PythonCode> c;
    {
        std::lock_guard lock(state_->mu);
        State::Process* p = state_->find(pid, id);
        if (!p) return f;
        // Still wanted: a load that had started before this frame asked (it is read next).
        if (p->wanted.count(code)) {
            f.pending = true;
            return f;
        }
        auto it = p->codes.find(code);
        if (it == p->codes.end()) return f;
        c = it->second;
    }
    const PythonLayout& layout = *runtime->layout;
    f.symbol = c->qualname;
    f.file = c->filename;
    const int line = python_line(*c, runtime->minor, python_instruction_index(layout, instruction));
    f.line = line > 0 ? static_cast<uint32_t>(line) : 0;
    return f;
}

void PythonNamer::forget(pid_t pid) {
    std::lock_guard lock(state_->mu);
    state_->processes.erase(pid);
}

void PythonNamer::clear() {
    std::lock_guard lock(state_->mu);
    state_->processes.clear();
}

uint64_t PythonNamer::unsupported() const {
    std::lock_guard lock(state_->mu);
    return state_->unsupported;
}

size_t PythonNamer::processes() const {
    std::lock_guard lock(state_->mu);
    return state_->processes.size();
}

}  // namespace leakwatch
