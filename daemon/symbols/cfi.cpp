#include "symbols/cfi.h"

#include <dwarf.h>
#include <elfutils/libdw.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace leakwatch {

namespace {

constexpr int kRegBp = 6;  // DWARF register numbers, x86-64
constexpr int kRegSp = 7;
constexpr int kRegRa = 16;

// A register's saved place as "CFA + n" (DW_OP_call_frame_cfa; DW_OP_plus_uconst n, which
// libdw also uses for negative n), if the ops are that.
std::optional<int64_t> cfa_plus(const Dwarf_Op* ops, size_t n) {
    if (ops == nullptr || n == 0 || ops[0].atom != DW_OP_call_frame_cfa) return std::nullopt;
    if (n == 1) return 0;
    if (n == 2 && ops[1].atom == DW_OP_plus_uconst) return static_cast<int64_t>(ops[1].number);
    return std::nullopt;
}

std::optional<UnwindRule> rule_of(Dwarf_Frame* frame) {
    if (dwarf_frame_info(frame, nullptr, nullptr, nullptr) != kRegRa) return UnwindRule::end();
    UnwindRule rule;
    Dwarf_Op* ops = nullptr;
    size_t nops = 0;
    if (dwarf_frame_cfa(frame, &ops, &nops) != 0 || nops != 1) return UnwindRule::end();
    int reg = -1;
    int64_t offset = 0;
    if (ops[0].atom == DW_OP_bregx) {
        reg = static_cast<int>(ops[0].number);
        offset = static_cast<int64_t>(ops[0].number2);
    } else if (ops[0].atom >= DW_OP_breg0 && ops[0].atom <= DW_OP_breg31) {
        reg = ops[0].atom - DW_OP_breg0;
        offset = static_cast<int64_t>(ops[0].number);
    }
    if (reg == kRegSp) {
        rule.kind = UnwindRule::kCfaSp;
    } else if (reg == kRegBp) {
        rule.kind = UnwindRule::kCfaBp;
    } else {
        return UnwindRule::end();
    }
    if (offset < INT32_MIN || offset > INT32_MAX) return UnwindRule::end();
    rule.cfa_offset = static_cast<int32_t>(offset);

    Dwarf_Op mem[3];
    // The return address: undefined in the outermost frame (_start, clone's child).
    if (dwarf_frame_register(frame, kRegRa, mem, &ops, &nops) != 0) return UnwindRule::end();
    auto ra = cfa_plus(ops, nops);
    if (!ra || *ra != -8) return UnwindRule::end();
    if (dwarf_frame_register(frame, kRegBp, mem, &ops, &nops) != 0) return UnwindRule::end();
    if (nops == 0) {
        rule.bp_saved = false;  // same value, or undefined (then no frame after uses it)
    } else if (auto at = cfa_plus(ops, nops); at && *at >= INT32_MIN && *at <= INT32_MAX) {
        rule.bp_saved = true;
        rule.bp_offset = static_cast<int32_t>(*at);
    } else {
        return UnwindRule::end();
    }
    return rule;
}

}  // namespace

struct CfiFile::Impl {
    Elf* elf = nullptr;
    Dwarf_CFI* eh = nullptr;     // .eh_frame: owned by nobody (freed with dwarf_cfi_end)
    Dwarf* dwarf = nullptr;      // for .debug_frame, opened when .eh_frame lacks an address
    Dwarf_CFI* debug = nullptr;  // owned by `dwarf`
    bool debug_tried = false;
    struct Segment {
        uint64_t vaddr, offset, filesz;
    };
    std::vector<Segment> segments;
    std::vector<uint64_t> starts;  // functions with an FDE, from .eh_frame_hdr, sorted
    uint64_t last_end = 0;         // where the last of them ends
    bool starts_read = false;

    ~Impl() {
        if (eh != nullptr) dwarf_cfi_end(eh);
        if (dwarf != nullptr) dwarf_end(dwarf);
        if (elf != nullptr) elf_end(elf);
    }
    std::optional<UnwindRule> lookup(Dwarf_CFI* cfi, uint64_t vaddr) {
        if (cfi == nullptr) return std::nullopt;
        Dwarf_Frame* frame = nullptr;
        if (dwarf_cfi_addrframe(cfi, vaddr, &frame) != 0) return std::nullopt;
        auto rule = rule_of(frame);
        std::free(frame);
        return rule;
    }
};

Result<std::unique_ptr<CfiFile>> CfiFile::open(const OpenFile& opened) {
    elf_version(EV_CURRENT);
    const std::string& path = opened.path();
    auto file = std::unique_ptr<CfiFile>(new CfiFile());
    file->impl_ = std::make_unique<Impl>();
    Impl& impl = *file->impl_;
    // Read with pread (a file truncated under a mapping would be a SIGBUS), and only the
    // sections the unwind rules come from: then libelf is told the file is done with, so a
    // lookup never reads it again (it may be on a file system that blocks).
    impl.elf = elf_begin(opened.fd(), ELF_C_READ, nullptr);
    if (impl.elf == nullptr || elf_kind(impl.elf) != ELF_K_ELF)
        return fail("reading " + path + ": not an ELF file");
    size_t n = 0;
    if (elf_getphdrnum(impl.elf, &n) != 0) return fail("reading " + path + ": no program headers");
    for (size_t i = 0; i < n; i++) {
        GElf_Phdr ph;
        if (gelf_getphdr(impl.elf, static_cast<int>(i), &ph) != nullptr && ph.p_type == PT_LOAD)
            impl.segments.push_back({ph.p_vaddr, ph.p_offset, ph.p_filesz});
    }
    bool debug_frame = false;
    size_t shstrndx = 0;
    if (elf_getshdrstrndx(impl.elf, &shstrndx) == 0) {
        for (Elf_Scn* scn = elf_nextscn(impl.elf, nullptr); scn != nullptr;
             scn = elf_nextscn(impl.elf, scn)) {
            GElf_Shdr sh;
            if (gelf_getshdr(scn, &sh) == nullptr) continue;
            const char* name = elf_strptr(impl.elf, shstrndx, sh.sh_name);
            if (name == nullptr) continue;
            if (std::strcmp(name, ".eh_frame_hdr") == 0) elf_getdata(scn, nullptr);
            if (std::strcmp(name, ".debug_frame") == 0) debug_frame = true;
        }
    }
    impl.eh = dwarf_getcfi_elf(impl.elf);  // nullptr: no .eh_frame
    if (debug_frame) {
        impl.dwarf = dwarf_begin_elf(impl.elf, DWARF_C_READ, nullptr);
        if (impl.dwarf != nullptr) impl.debug = dwarf_getcfi(impl.dwarf);
    }
    impl.debug_tried = true;
    elf_cntl(impl.elf, ELF_C_FDDONE);
    return file;
}

Result<std::unique_ptr<CfiFile>> CfiFile::open(const std::string& path, uint64_t max_bytes) {
    auto file = open_file(path, max_bytes);
    if (!file) return std::unexpected(file.error());
    return open(*file);
}

CfiFile::~CfiFile() = default;

std::optional<uint64_t> CfiFile::vaddr_of_file_offset(uint64_t off) const {
    for (const auto& s : impl_->segments)
        if (off >= s.offset && off < s.offset + s.filesz) return s.vaddr + (off - s.offset);
    return std::nullopt;
}

std::optional<UnwindRule> CfiFile::rule_at(uint64_t vaddr) {
    if (auto rule = impl_->lookup(impl_->eh, vaddr)) return rule;
    if (!impl_->debug_tried) {
        impl_->debug_tried = true;
        impl_->dwarf = dwarf_begin_elf(impl_->elf, DWARF_C_READ, nullptr);
        if (impl_->dwarf != nullptr) impl_->debug = dwarf_getcfi(impl_->dwarf);
    }
    return impl_->lookup(impl_->debug, vaddr);
}

const std::vector<uint64_t>& CfiFile::function_starts() {
    Impl& impl = *impl_;
    if (impl.starts_read) return impl.starts;
    impl.starts_read = true;
    // .eh_frame_hdr: version 1, three pointer encodings, the .eh_frame pointer, the FDE count
    // and a table of (function start, FDE) sorted by start, both relative to the header
    // (DW_EH_PE_datarel | DW_EH_PE_sdata4), as every linker writes it.
    size_t shstrndx = 0;
    if (elf_getshdrstrndx(impl.elf, &shstrndx) != 0) return impl.starts;
    Elf_Scn* scn = nullptr;
    GElf_Shdr hdr{};
    Elf_Data* data = nullptr;
    while ((scn = elf_nextscn(impl.elf, scn)) != nullptr) {
        GElf_Shdr sh;
        if (gelf_getshdr(scn, &sh) == nullptr) continue;
        const char* name = elf_strptr(impl.elf, shstrndx, sh.sh_name);
        if (name != nullptr && std::strcmp(name, ".eh_frame_hdr") == 0 &&
            sh.sh_type == SHT_PROGBITS) {
            hdr = sh;
            data = elf_getdata(scn, nullptr);
            break;
        }
    }
    if (data == nullptr || data->d_buf == nullptr || data->d_size < 12) return impl.starts;
    const auto* p = static_cast<const uint8_t*>(data->d_buf);
    const size_t size = data->d_size;
    constexpr uint8_t kUdata4 = 0x03, kDatarelSdata4 = 0x3b;
    size_t eh_frame_ptr_size = (p[1] & 0x0f) == 0x0b || (p[1] & 0x0f) == 0x03 ? 4 : 0;
    if (p[0] != 1 || eh_frame_ptr_size == 0 || p[2] != kUdata4 || p[3] != kDatarelSdata4)
        return impl.starts;
    uint32_t count = 0;
    std::memcpy(&count, p + 4 + eh_frame_ptr_size, sizeof(count));
    const size_t table = 8 + eh_frame_ptr_size;
    if (count == 0 || (size - table) / 8 < count) return impl.starts;
    impl.starts.reserve(count);
    for (size_t i = 0; i < count; i++) {
        int32_t rel = 0;
        std::memcpy(&rel, p + table + 8 * i, sizeof(rel));
        impl.starts.push_back(hdr.sh_addr + static_cast<uint64_t>(static_cast<int64_t>(rel)));
    }
    // Sorted as linkers write it; a crafted table is made so (lookups bisect it).
    if (!std::is_sorted(impl.starts.begin(), impl.starts.end()))
        std::sort(impl.starts.begin(), impl.starts.end());
    // The last function ends where its section does.
    const uint64_t last = impl.starts.back();
    for (Elf_Scn* sc = elf_nextscn(impl.elf, nullptr); sc != nullptr;
         sc = elf_nextscn(impl.elf, sc)) {
        GElf_Shdr sh;
        if (gelf_getshdr(sc, &sh) != nullptr && (sh.sh_flags & SHF_EXECINSTR) &&
            last >= sh.sh_addr && last - sh.sh_addr < sh.sh_size)
            impl.last_end = sh.sh_addr + sh.sh_size;
    }
    return impl.starts;
}

std::optional<uint64_t> CfiFile::function_start(uint64_t vaddr) {
    const auto& starts = function_starts();
    auto it = std::upper_bound(starts.begin(), starts.end(), vaddr);
    if (it == starts.begin()) return std::nullopt;
    return *std::prev(it);
}

FramePointerUse CfiFile::frame_pointer_use() {
    FramePointerUse use;
    const auto& starts = function_starts();
    const size_t count = starts.size();
    constexpr UnwindRule kRecord{UnwindRule::kCfaBp, 16, -16, true};
    for (size_t i = 0; i < count; i++) {
        // A function ends where the next one starts.
        uint64_t start = starts[i], end = i + 1 < count ? starts[i + 1] : impl_->last_end;
        if (end <= start) continue;
        use.functions++;
        auto rule = rule_at(start + (end - start) / 2);
        if (rule && *rule == kRecord) {
            use.with_frame_pointer++;
        } else if (!use.without.empty() && use.without.back().second == start) {
            use.without.back().second = end;
        } else {
            use.without.emplace_back(start, end);
        }
    }
    return use;
}

}  // namespace leakwatch
