#include "tracker/placement.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <array>
#include <cstring>

#if LEAKWATCH_DECODE_X86
#include <capstone/capstone.h>
#endif

namespace leakwatch {

#if LEAKWATCH_DECODE_X86
namespace {

constexpr int kMaxInstructions = 16;

// The 64-bit register a (sub-)register belongs to: 0..15 for rax..r15, -1 for others (rip,
// flags, segment and vector registers, which the probe does not read).
int gpr_of(csh handle, unsigned reg) {
    static constexpr std::array<std::array<const char*, 5>, 16> kNames{{
        {"rax", "eax", "ax", "al", "ah"},
        {"rcx", "ecx", "cx", "cl", "ch"},
        {"rdx", "edx", "dx", "dl", "dh"},
        {"rbx", "ebx", "bx", "bl", "bh"},
        {"rsp", "esp", "sp", "spl", ""},
        {"rbp", "ebp", "bp", "bpl", ""},
        {"rsi", "esi", "si", "sil", ""},
        {"rdi", "edi", "di", "dil", ""},
        {"r8", "r8d", "r8w", "r8b", ""},
        {"r9", "r9d", "r9w", "r9b", ""},
        {"r10", "r10d", "r10w", "r10b", ""},
        {"r11", "r11d", "r11w", "r11b", ""},
        {"r12", "r12d", "r12w", "r12b", ""},
        {"r13", "r13d", "r13w", "r13b", ""},
        {"r14", "r14d", "r14w", "r14b", ""},
        {"r15", "r15d", "r15w", "r15b", ""},
    }};
    const char* name = cs_reg_name(handle, reg);
    if (!name) return -1;
    for (size_t i = 0; i < kNames.size(); ++i)
        for (const char* n : kNames[i])
            if (*n && std::strcmp(n, name) == 0) return static_cast<int>(i);
    return -1;
}

// The System V integer argument registers in order: rdi, rsi, rdx, rcx, r8, r9.
constexpr std::array<int, 6> kArgumentOrder{7, 6, 2, 1, 8, 9};
constexpr int kRsp = 4, kRdi = 7;

enum class Class {
    kEmulated,   // the kernel emulates it under a uprobe: probe here
    kSkippable,  // single-stepped, but changes nothing the probe reads, and does not branch
    kStop,       // the probe cannot go past it
};

struct Decoded {
    Class cls = Class::kStop;
    std::string why;
};

Decoded classify(csh handle, const cs_insn* insn, uint32_t argument_mask) {
    const cs_x86& x86 = insn->detail->x86;
    const bool branch =
        cs_insn_group(handle, insn, CS_GRP_JUMP) || cs_insn_group(handle, insn, CS_GRP_CALL) ||
        cs_insn_group(handle, insn, CS_GRP_RET) || cs_insn_group(handle, insn, CS_GRP_INT) ||
        cs_insn_group(handle, insn, CS_GRP_IRET);
    // What the kernel emulates (arch/x86/kernel/uprobes.c): relative jumps, conditional jumps
    // and calls, and the push of a 64-bit general register.
    if (branch && cs_insn_group(handle, insn, CS_GRP_BRANCH_RELATIVE) && x86.op_count == 1 &&
        x86.operands[0].type == X86_OP_IMM && insn->id != X86_INS_JRCXZ &&
        insn->id != X86_INS_LOOP && insn->id != X86_INS_LOOPE && insn->id != X86_INS_LOOPNE)
        return {Class::kEmulated, ""};
    if (insn->id == X86_INS_PUSH && x86.op_count == 1 && x86.operands[0].type == X86_OP_REG &&
        x86.operands[0].size == 8 && gpr_of(handle, x86.operands[0].reg) >= 0)
        return {Class::kEmulated, ""};
    if (branch) return {Class::kStop, "branches"};
    if (insn->id == X86_INS_SYSCALL || insn->id == X86_INS_SYSENTER)
        return {Class::kStop, "is a system call"};
    if (x86.prefix[0] != 0 && x86.prefix[0] != X86_PREFIX_REP && x86.prefix[0] != X86_PREFIX_REPNE)
        return {Class::kStop, "has a lock prefix"};
    for (uint8_t i = 0; i < x86.op_count; ++i) {
        if (x86.operands[i].type == X86_OP_MEM && (x86.operands[i].access & CS_AC_WRITE))
            return {Class::kStop, "writes memory"};
    }
    cs_regs read{}, written{};
    uint8_t nread = 0, nwritten = 0;
    if (cs_regs_access(handle, insn, read, &nread, written, &nwritten) != CS_ERR_OK)
        return {Class::kStop, "has register effects capstone cannot tell"};
    for (uint8_t i = 0; i < nwritten; ++i) {
        int gpr = gpr_of(handle, written[i]);
        if (gpr == kRsp) return {Class::kStop, "moves the stack pointer"};
        if (gpr >= 0 && (argument_mask & (1u << gpr))) return {Class::kStop, "writes an argument"};
        if (gpr < 0) {
            const char* name = cs_reg_name(handle, written[i]);
            // flags and rip (every instruction) are fine; anything else is not understood here
            if (!name || (std::strcmp(name, "rflags") != 0 && std::strcmp(name, "rip") != 0 &&
                          std::strcmp(name, "eflags") != 0))
                return {Class::kStop, fmt::format("writes {}", name ? name : "?")};
        }
    }
    return {Class::kSkippable, ""};
}

bool is_null_test(csh handle, const cs_insn* insn) {
    const cs_x86& x86 = insn->detail->x86;
    return insn->id == X86_INS_TEST && x86.op_count == 2 && x86.operands[0].type == X86_OP_REG &&
           x86.operands[1].type == X86_OP_REG && x86.operands[0].reg == x86.operands[1].reg &&
           gpr_of(handle, x86.operands[0].reg) == kRdi && x86.operands[0].size == 8;
}

}  // namespace

Placement place_probe(std::span<const uint8_t> code, int arguments, bool null_is_noop) {
    Placement out;
    csh handle;
    if (cs_open(CS_ARCH_X86, CS_MODE_64, &handle) != CS_ERR_OK) {
        out.how = "disassembler unavailable";
        return out;
    }
    cs_option(handle, CS_OPT_DETAIL, CS_OPT_ON);
    cs_insn* insn = cs_malloc(handle);
    uint32_t mask = 0;
    for (int i = 0; i < arguments && i < static_cast<int>(kArgumentOrder.size()); ++i)
        mask |= 1u << kArgumentOrder[static_cast<size_t>(i)];

    const uint8_t* p = code.data();
    size_t left = code.size();
    uint64_t at = 0;
    std::string skipped;
    bool after_null_test = false;
    for (int n = 0; n < kMaxInstructions; ++n) {
        uint64_t here = at;
        if (!cs_disasm_iter(handle, &p, &left, &at, insn)) {
            out.how = here == 0
                          ? "first instruction not decoded"
                          : fmt::format("instruction at +{} not decoded, after {}", here, skipped);
            break;
        }
        if (null_is_noop && here == 0 && is_null_test(handle, insn)) {
            after_null_test = true;  // may be followed by the je that returns
            skipped = "test %rdi,%rdi";
            continue;
        }
        if (after_null_test) {
            after_null_test = false;
            if (insn->id == X86_INS_JE) {
                skipped = "NULL check";
                continue;
            }
        }
        Decoded d = classify(handle, insn, mask);
        if (d.cls == Class::kEmulated) {
            out.skip = here;
            out.emulated = true;
            out.how = here == 0 ? fmt::format("{} at entry", insn->mnemonic)
                                : fmt::format("{} at +{}, past {}", insn->mnemonic, here, skipped);
            break;
        }
        if (d.cls == Class::kStop) {
            out.how = fmt::format("{}{}{} at +{} {}", insn->mnemonic, *insn->op_str ? " " : "",
                                  insn->op_str, here, d.why);
            break;
        }
        if (!skipped.empty()) skipped += ", ";
        skipped += insn->mnemonic;
    }
    if (!out.emulated) {
        if (out.how.empty())
            out.how =
                fmt::format("no emulated instruction within {} instructions", kMaxInstructions);
        out.skip = 0;
    }
    cs_free(insn, 1);
    cs_close(&handle);
    return out;
}

bool instruction_boundary(std::span<const uint8_t> code, uint64_t offset) {
    if (offset == 0) return true;
    if (offset >= code.size()) return false;
    csh handle;
    if (cs_open(CS_ARCH_X86, CS_MODE_64, &handle) != CS_ERR_OK) return false;
    cs_insn* insn = cs_malloc(handle);
    const uint8_t* p = code.data();
    size_t left = code.size();
    uint64_t at = 0;
    while (at < offset && cs_disasm_iter(handle, &p, &left, &at, insn)) {
    }
    cs_free(insn, 1);
    cs_close(&handle);
    return at == offset;
}

#else

Placement place_probe(std::span<const uint8_t>, int, bool) {
    return Placement{0, false, "instructions not decoded on this architecture"};
}

bool instruction_boundary(std::span<const uint8_t>, uint64_t offset) {
#if defined(__aarch64__)
    return offset % 4 == 0;
#else
    (void)offset;
    return true;
#endif
}

#endif

Placement place_probe_in_file(const OpenFile& file, uint64_t offset, int arguments,
                              bool null_is_noop) {
    auto code = read_at(file, offset, 128);
    if (!code || code->empty()) return Placement{0, false, "code not readable"};
    return place_probe(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(code->data()), code->size()),
        arguments, null_is_noop);
}

}  // namespace leakwatch
