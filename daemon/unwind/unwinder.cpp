#include "unwind/unwinder.h"

#include <fcntl.h>
#include <unistd.h>

#if LEAKWATCH_DECODE_X86
#include <capstone/capstone.h>
#endif

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "proc/files.h"

namespace leakwatch {

std::vector<UnwindStep> unwind(const UnwindStart& start,
                               const std::function<UnwindRule(uint64_t pc)>& rule_for,
                               size_t max_frames) {
    std::vector<UnwindStep> steps;
    auto read = [&](uint64_t addr, uint64_t& value) {
        if (addr < start.sp || addr - start.sp > start.stack.size() ||
            start.stack.size() - (addr - start.sp) < sizeof(value))
            return false;
        std::memcpy(&value, start.stack.data() + (addr - start.sp), sizeof(value));
        return true;
    };
    uint64_t pc = start.ip, sp = start.sp, bp = start.bp;
    while (pc != 0 && steps.size() < max_frames) {
        UnwindRule rule = rule_for(pc);
        steps.push_back({pc, rule});
        if (rule.kind == UnwindRule::kJavaInterp) {
            // as the BPF side does: the method at rbp - 24, the caller's sp at rbp - 8
            uint64_t method = 0, sender_sp = 0, saved_bp = 0, ra = 0;
            if (bp < sp || (bp & 7) || !read(bp - 24, method) || !read(bp - 8, sender_sp) ||
                !read(bp, saved_bp) || !read(bp + 8, ra) || sender_sp <= sp)
                break;
            steps.back().java_method = method;
            sp = sender_sp;
            bp = saved_bp;
            pc = ra;
            continue;
        }
        if (rule.kind != UnwindRule::kCfaSp && rule.kind != UnwindRule::kCfaBp) break;
        uint64_t cfa = (rule.kind == UnwindRule::kCfaBp ? bp : sp) +
                       static_cast<uint64_t>(static_cast<int64_t>(rule.cfa_offset));
        uint64_t ra = 0;
        if (rule.bp_saved &&
            !read(cfa + static_cast<uint64_t>(static_cast<int64_t>(rule.bp_offset)), bp))
            break;
        // The stack grows down: a caller's frame is above its callee's.
        if (!read(cfa - 8, ra) || cfa <= sp) break;
        sp = cfa;
        pc = ra;
    }
    return steps;
}

#if LEAKWATCH_DECODE_X86

std::optional<UnwindRule> rule_from_code(std::span<const uint8_t> code, uint64_t ra) {
    if (ra == 0 || ra > code.size()) return std::nullopt;
    csh handle;
    if (cs_open(CS_ARCH_X86, CS_MODE_64, &handle) != CS_ERR_OK) return std::nullopt;
    cs_option(handle, CS_OPT_DETAIL, CS_OPT_ON);
    cs_insn* insn = cs_malloc(handle);
    const uint8_t* p = code.data();
    size_t left = static_cast<size_t>(ra);
    uint64_t at = 0;
    int64_t pushed = 0;            // bytes below the return address of the blob's entry
    std::optional<int64_t> bp_at;  // where %rbp was pushed, relative to the CFA
    std::optional<UnwindRule> out;
    while (at < ra && cs_disasm_iter(handle, &p, &left, &at, insn)) {
        const cs_x86& x86 = insn->detail->x86;
        auto reg_op = [&](int i, x86_reg reg) {
            return x86.op_count > i && x86.operands[i].type == X86_OP_REG &&
                   x86.operands[i].reg == reg;
        };
        auto imm_op = [&](int i) { return x86.op_count > i && x86.operands[i].type == X86_OP_IMM; };
        if (insn->id == X86_INS_PUSH && reg_op(0, X86_REG_RBP)) {
            pushed += 8;
            bp_at = -8 - pushed;
            continue;
        }
        if (insn->id == X86_INS_MOV && reg_op(0, X86_REG_RBP) && reg_op(1, X86_REG_RSP)) {
            // the frame pointer: CFA = rbp + what lies between them
            if (bp_at && *bp_at == -8 - pushed)
                out = UnwindRule{UnwindRule::kCfaBp, static_cast<int32_t>(8 + pushed),
                                 static_cast<int32_t>(*bp_at), true};
            break;
        }
        if (insn->id == X86_INS_PUSH && x86.op_count == 1) {
            pushed += 8;
            continue;
        }
        if ((insn->id == X86_INS_SUB || insn->id == X86_INS_ADD) && reg_op(0, X86_REG_RSP) &&
            imm_op(1)) {
            pushed += (insn->id == X86_INS_SUB ? 1 : -1) * x86.operands[1].imm;
            continue;
        }
        if (insn->id == X86_INS_CALL) {
            if (at == ra)
                out = UnwindRule{UnwindRule::kCfaSp, static_cast<int32_t>(8 + pushed),
                                 static_cast<int32_t>(bp_at.value_or(0)), bp_at.has_value()};
            continue;  // a call returns with rsp where it was
        }
        if (cs_insn_group(handle, insn, CS_GRP_JUMP) || cs_insn_group(handle, insn, CS_GRP_RET))
            break;  // the path to ra is not this straight line
        cs_regs read, written;
        uint8_t nread = 0, nwritten = 0;
        if (cs_regs_access(handle, insn, read, &nread, written, &nwritten) != CS_ERR_OK) break;
        bool moves = false;
        for (uint8_t i = 0; i < nwritten; i++)
            moves |= written[i] == X86_REG_RSP || written[i] == X86_REG_RBP ||
                     written[i] == X86_REG_ESP || written[i] == X86_REG_EBP;
        if (moves) break;
    }
    cs_free(insn, 1);
    cs_close(&handle);
    if (out && out->kind == UnwindRule::kCfaSp && at != ra) return std::nullopt;
    return out;
}

#else

std::optional<UnwindRule> rule_from_code(std::span<const uint8_t>, uint64_t) {
    return std::nullopt;
}

#endif

Unwinder::Unwinder(const ProcReader& proc, Symbolizer& symbolizer, size_t max_files)
    : proc_(proc), files_(max_files), symbolizer_(symbolizer) {}

std::optional<UnwindRule> rule_from_hotspot_prologue(std::span<const uint8_t> code, uint64_t ra) {
    // Matched as bytes, not decoded from the start: the JVM patches a jmp over the first five
    // bytes of a method it makes not entrant (frames of it still on stacks stay valid), which
    // leaves the stack bang's tail as garbage before the push.
    constexpr size_t kSearch = 96;
    for (size_t i = 0; i < code.size() && i < kSearch; i++) {
        if (code[i] != 0x55) continue;  // push %rbp
        size_t at = i + 1;
        auto has = [&](std::initializer_list<uint8_t> bytes) {
            if (at + bytes.size() > code.size()) return false;
            size_t k = at;
            for (uint8_t b : bytes)
                if (code[k++] != b) return false;
            return true;
        };
        // mov %rsp,%rbp (-XX:+PreserveFramePointer), in either encoding
        if (has({0x48, 0x8b, 0xec}) || has({0x48, 0x89, 0xe5})) at += 3;
        int64_t size = -1;
        if (has({0x48, 0x83, 0xec}) && at + 4 <= code.size()) {  // sub $imm8,%rsp
            size = static_cast<int8_t>(code[at + 3]);
            at += 4;
        } else if (has({0x48, 0x81, 0xec}) && at + 7 <= code.size()) {  // sub $imm32,%rsp
            int32_t v = 0;
            std::memcpy(&v, &code[at + 3], sizeof v);
            size = v;
            at += 7;
        }
        if (size <= 0 || size % 8 != 0 || size >= (1 << 20) || at > ra) continue;
        return UnwindRule{UnwindRule::kCfaSp, static_cast<int32_t>(16 + size), -16, true};
    }
    return std::nullopt;
}

bool is_hotspot_method(std::string_view name) {
    // "ReturnType pkg.Class.method(Args)": a space before the class, none right before '('
    size_t paren = name.find('(');
    return paren != std::string_view::npos && paren > 0 && name[paren - 1] != ' ' &&
           name.back() == ')' && name.substr(0, paren).find(' ') != std::string_view::npos &&
           !name.starts_with("py::");
}

UnwindRule Unwinder::jit_rule(int pid, uint64_t pc) {
    // The blob's start from the runtime's perf map, its code from the process's memory.
    constexpr uint64_t kMaxDecoded = 4096;
    // A HotSpot method's prologue is within its first bytes, wherever the return address is.
    constexpr uint64_t kMaxPrologue = 256;
    bool pending = false;
    // The JVM's interpreter, known from its own structures (JDK 11 has no perf map).
    if (auto interpreter = symbolizer_.java_interpreter(pid, &pending)) {
        if (pc - 1 >= interpreter->first && pc - 1 < interpreter->second)
            return UnwindRule::java_interpreter();
    }
    if (pending) return UnwindRule::pending();
    // A compiled frame is its code blob's size (in words) below the caller's sp, the caller's
    // rbp saved right under the return address; a stub of size 0 keeps a frame pointer.
    if (auto compiled = symbolizer_.java_blob(pid, pc - 1, &pending);
        compiled && compiled->frame_size > 0)
        return UnwindRule{UnwindRule::kCfaSp, compiled->frame_size * 8, -16, true};
    if (pending) return UnwindRule::pending();
    auto blob = symbolizer_.jit_blob(pid, pc - 1, &pending);
    if (pending) return UnwindRule::pending();
    const bool hotspot = blob && is_hotspot_method(blob->name);
    if (blob && (hotspot || pc - blob->start <= kMaxDecoded)) {
        // The code is read from the process's memory on the loader (a process in trouble may
        // block its reader), once per blob and return address while the perf map is the same
        // (its generation is unique across processes: a reused pid's map is another).
        char where[64];
        std::snprintf(where, sizeof where, "%d:%llx:%llx:", pid,
                      static_cast<unsigned long long>(blob->start),
                      static_cast<unsigned long long>(pc));
        const std::string key = where + std::to_string(symbolizer_.perf_map_generation(pid));
        if (auto* known = jit_rules_.get(key)) {
            if (*known) return **known;
            return UnwindRule::frame_pointer();
        }
        const std::string job = "jitcode:" + key;
        auto wait = symbolizer_.wait_for(job);
        if (!wait) {
            jit_rules_.put(key, std::nullopt);  // stuck: walked by the frame pointer
            return UnwindRule::frame_pointer();
        }
        const uint64_t ra = pc - blob->start;
        auto load = [proc = proc_, loaded = loaded_, pid, key, start = blob->start, ra,
                     size = hotspot ? std::min(ra, kMaxPrologue) : ra, hotspot] {
            std::optional<UnwindRule> rule;
            std::vector<uint8_t> code(size);
            std::string mem = proc.root() + "/" + std::to_string(pid) + "/mem";
            int fd = ::open(mem.c_str(), O_RDONLY | O_CLOEXEC);
            if (fd >= 0) {
                ssize_t n = ::pread(fd, code.data(), code.size(), static_cast<off_t>(start));
                ::close(fd);
                if (n == static_cast<ssize_t>(code.size()))
                    rule = hotspot ? rule_from_hotspot_prologue(code, ra)
                                   : rule_from_code(code, code.size());
            }
            std::lock_guard lock(loaded->mu);
            loaded->jit_rules[key] = rule;
        };
        if (symbolizer_.loader().run(job, std::move(load), *wait) ==
            BoundedLoader::Outcome::kWaiting)
            return UnwindRule::pending();
        std::optional<UnwindRule> rule;
        {
            std::lock_guard lock(loaded_->mu);
            auto it = loaded_->jit_rules.find(key);
            if (it != loaded_->jit_rules.end()) {
                rule = it->second;
                loaded_->jit_rules.erase(it);
            }
        }
        jit_rules_.put(key, rule);
        if (rule) return *rule;
    }
    // JVMs keep frame pointers in JIT-compiled code (HotSpot's interpreter and stubs, and its
    // compiled frames with -XX:+PreserveFramePointer).
    return UnwindRule::frame_pointer();
}

CfiFile* Unwinder::file_for(int pid, const MapEntry& mapping, bool& pending) {
    std::string key = mapping.path + '|' + std::to_string(mapping.dev_major) + ':' +
                      std::to_string(mapping.dev_minor) + ':' + std::to_string(mapping.inode);
    if (auto* cached = files_.get(key)) return cached->get();
    const std::string job = "cfi:" + key;
    auto wait = symbolizer_.wait_for(job);
    if (!wait) {
        refuse_file(Refusal::kSlow, mapping.path + " (unwind tables)",
                    "reading it takes too long; stacks end at its frames");
        files_.put(key, nullptr);
        return nullptr;
    }
    // The mapped file itself (checked by inode), never a replacement at the same path. A
    // failure is not remembered: it may be this process's alone (it exited meanwhile).
    auto load = [proc = proc_, loaded = loaded_, pid, mapping, key,
                 max_bytes = symbolizer_.max_file_bytes(), gate = symbolizer_.proc_gate()] {
        std::shared_ptr<CfiFile> cfi;
        if (auto file = open_mapped(proc, pid, mapping, max_bytes, gate))
            if (auto opened = CfiFile::open(*file)) cfi = std::move(*opened);
        std::lock_guard lock(loaded->mu);
        loaded->files[key] = std::move(cfi);
    };
    if (symbolizer_.loader().run(job, std::move(load), *wait) == BoundedLoader::Outcome::kWaiting) {
        pending = true;
        return nullptr;
    }
    std::shared_ptr<CfiFile> cfi;
    {
        std::lock_guard lock(loaded_->mu);
        auto it = loaded_->files.find(key);
        if (it == loaded_->files.end()) return nullptr;
        cfi = std::move(it->second);
        loaded_->files.erase(it);
    }
    if (!cfi) return nullptr;
    return files_.put(key, std::move(cfi)).get();
}

UnwindRule Unwinder::rule_for(int pid, const std::vector<MapEntry>& maps, uint64_t pc, bool exact) {
    if (pc == 0) return UnwindRule::end();
    // A return address's rule is the one inside the call; an exact address's its own.
    const uint64_t at = exact ? pc : pc - 1;
    const MapEntry* m = find_mapping(maps, at);
    if (m == nullptr || !m->executable()) return UnwindRule::end();
    if (m->path.empty() || m->path.front() != '/') {
        // Anonymous executable memory is JIT-compiled code, which has no CFI in a file.
        return m->path.empty() ? jit_rule(pid, at + 1) : UnwindRule::end();
    }
    bool pending = false;
    CfiFile* file = file_for(pid, *m, pending);
    if (pending) return UnwindRule::pending();
    if (file == nullptr) return UnwindRule::end();
    auto vaddr = file->vaddr_of_file_offset(at - m->start + m->offset);
    if (!vaddr) return UnwindRule::end();
    rules_++;
    return file->rule_at(*vaddr).value_or(UnwindRule::end());
}

std::vector<UnwindStep> Unwinder::unwind_snapshot(int pid, const UnwindStart& start,
                                                  size_t max_frames) {
    auto begin = std::chrono::steady_clock::now();
    std::vector<UnwindStep> steps;
    // Its maps as they are now, read on the loader (a process can hold their read up:
    // symbols/process_maps.h); while a read goes on, the maps read last.
    if (auto maps = symbolizer_.process_maps().read(pid).maps) {
        bool first = start.exact_ip;
        steps = unwind(
            start,
            [&](uint64_t pc) { return rule_for(pid, *maps, pc, std::exchange(first, false)); },
            max_frames);
    }
    snapshots_++;
    nanoseconds_ += static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                              std::chrono::steady_clock::now() - begin)
                                              .count());
    return steps;
}

}  // namespace leakwatch
