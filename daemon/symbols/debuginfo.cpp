// DWARF lookups with libdw: which compile unit holds an address (an index built once per file),
// the line table row at it, and the chain of DIEs (subprogram, inlined subroutines) containing
// it, walked down from the compile unit.
#include "symbols/debuginfo.h"

#include <cxxabi.h>
#include <dwarf.h>
#include <elfutils/libdw.h>
#include <elfutils/libdwelf.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <utility>

#include "util/text.h"

namespace leakwatch {

namespace {

// Names and paths in DWARF are the file's to say: shown text (util/text.h).
std::string demangle(const char* raw) {
    std::string name(raw);
    if (name.starts_with("_Z")) {
        int status = 0;
        char* out = abi::__cxa_demangle(raw, nullptr, nullptr, &status);
        if (status == 0 && out != nullptr) name = out;
        std::free(out);
    }
    return shown_text(name, kMaxShownName);
}

// Paths as compilers write them may hold "./" and "dir/../"; a frame shows the plain path.
std::string normal_path(const char* p) {
    if (p == nullptr) return {};
    return shown_text(std::filesystem::path(p).lexically_normal().string(), kMaxShownPath);
}

// The name of a subprogram or inlined subroutine: its linkage name demangled (qualified, with
// parameters, as the ELF symbols show C++ functions), else its DW_AT_name. Both may sit on the
// abstract origin or the declaration, which dwarf_attr_integrate follows.
std::string function_of(Dwarf_Die* die) {
    Dwarf_Attribute attr;
    for (int name : {DW_AT_linkage_name, DW_AT_MIPS_linkage_name}) {
        if (dwarf_attr_integrate(die, name, &attr) != nullptr) {
            if (const char* s = dwarf_formstring(&attr)) return demangle(s);
        }
    }
    if (dwarf_attr_integrate(die, DW_AT_name, &attr) != nullptr) {
        if (const char* s = dwarf_formstring(&attr)) return shown_text(s, kMaxShownName);
    }
    return {};
}

// Where an inlined subroutine was called: a file of the compile unit's table and a line.
SourceLine call_site_of(Dwarf_Die* inlined, Dwarf_Die* cudie) {
    SourceLine out;
    Dwarf_Attribute attr;
    Dwarf_Word value = 0;
    if (dwarf_formudata(dwarf_attr(inlined, DW_AT_call_file, &attr), &value) == 0) {
        Dwarf_Files* files = nullptr;
        size_t nfiles = 0;
        if (dwarf_getsrcfiles(cudie, &files, &nfiles) == 0 && value < nfiles) {
            out.file = normal_path(dwarf_filesrc(files, value, nullptr, nullptr));
        }
    }
    if (dwarf_formudata(dwarf_attr(inlined, DW_AT_call_line, &attr), &value) == 0) {
        out.line = static_cast<uint32_t>(value);
    }
    return out;
}

// The subprograms and inlined subroutines containing pc, outermost first, below `parent`.
// Lexical blocks are passed through; namespaces (which have no address range but hold
// function definitions in C++) are searched.
void functions_at(Dwarf_Die* parent, uint64_t pc, std::vector<Dwarf_Die>& chain, int depth = 0) {
    if (depth > 64) return;  // malformed nesting
    Dwarf_Die child;
    if (dwarf_child(parent, &child) != 0) return;
    do {
        switch (dwarf_tag(&child)) {
            case DW_TAG_subprogram:
            case DW_TAG_inlined_subroutine:
            case DW_TAG_entry_point:
                if (dwarf_haspc(&child, pc) == 1) {
                    chain.push_back(child);
                    functions_at(&child, pc, chain, depth + 1);
                    return;
                }
                break;
            case DW_TAG_lexical_block:
            case DW_TAG_try_block:
            case DW_TAG_catch_block:
                if (dwarf_haspc(&child, pc) == 1) {
                    functions_at(&child, pc, chain, depth + 1);
                    return;
                }
                break;
            case DW_TAG_namespace:
            case DW_TAG_module: {
                size_t before = chain.size();
                functions_at(&child, pc, chain, depth + 1);
                if (chain.size() > before) return;
                break;
            }
            default:
                break;
        }
        Dwarf_Die next;
        if (dwarf_siblingof(&child, &next) != 0) break;
        child = next;
    } while (true);
}

// A libelf handle on a file read with pread (never mapped: a file truncated under a mapping
// would be a SIGBUS).
struct ElfFd {
    OpenFile file;
    Elf* elf = nullptr;
    ~ElfFd() {
        if (elf != nullptr) elf_end(elf);
    }
};

std::string build_id_of(Elf* elf) {
    const void* id = nullptr;
    ssize_t n = dwelf_elf_gnu_build_id(elf, &id);
    return n > 0 ? hex_bytes(id, static_cast<size_t>(n)) : std::string();
}

}  // namespace

std::string hex_bytes(const void* data, size_t n) {
    static constexpr char kDigits[] = "0123456789abcdef";
    const auto* p = static_cast<const unsigned char*>(data);
    std::string out;
    out.reserve(n * 2);
    for (size_t i = 0; i < n; ++i) {
        out += kDigits[p[i] >> 4];
        out += kDigits[p[i] & 0xf];
    }
    return out;
}

struct DebugInfo::Impl {
    ElfFd file;
    Dwarf* dwarf = nullptr;
    std::unique_ptr<DebugInfo> alt;
    struct CuRange {
        uint64_t low, high;  // [low, high)
        Dwarf_Die cu;
    };
    std::vector<CuRange> ranges;  // by low
    bool indexed = false;

    ~Impl() {
        if (dwarf != nullptr) dwarf_end(dwarf);
    }

    void index() {
        indexed = true;
        Dwarf_CU* cu = nullptr;
        Dwarf_CU* next = nullptr;
        Dwarf_Half version = 0;
        uint8_t unit_type = 0;
        Dwarf_Die cudie;
        // No sub-DIE: for a skeleton unit, libdw would open its split (.dwo) file by a path
        // the file names, outside the process's root.
        while (dwarf_get_units(dwarf, cu, &next, &version, &unit_type, &cudie, nullptr) == 0) {
            cu = next;
            if (unit_type != DW_UT_compile && unit_type != DW_UT_partial) continue;
            Dwarf_Addr base = 0, start = 0, end = 0;
            ptrdiff_t off = 0;
            while ((off = dwarf_ranges(&cudie, off, &base, &start, &end)) > 0) {
                if (end > start) ranges.push_back({start, end, cudie});
            }
        }
        std::sort(ranges.begin(), ranges.end(),
                  [](const CuRange& a, const CuRange& b) { return a.low < b.low; });
    }

    Dwarf_Die* cu_at(uint64_t pc) {
        if (!indexed) index();
        auto it = std::upper_bound(ranges.begin(), ranges.end(), pc,
                                   [](uint64_t v, const CuRange& r) { return v < r.low; });
        // Ranges of different units do not overlap in practice; look back a little in case.
        for (int i = 0; i < 4 && it != ranges.begin(); ++i) {
            --it;
            if (pc >= it->low && pc < it->high) return &it->cu;
        }
        return nullptr;
    }
};

DebugInfo::~DebugInfo() = default;

Result<std::unique_ptr<DebugInfo>> DebugInfo::open(OpenFile file, const std::string& build_id,
                                                   const uint32_t* crc) {
    static const bool initialized = elf_version(EV_CURRENT) != EV_NONE;
    if (!initialized) return fail("libelf: version mismatch");
    const std::string path = file.path();
    std::unique_ptr<DebugInfo> info(new DebugInfo());
    info->path_ = path;
    info->impl_ = std::make_unique<Impl>();
    ElfFd& f = info->impl_->file;
    f.file = std::move(file);
    f.elf = elf_begin(f.file.fd(), ELF_C_READ, nullptr);
    if (f.elf == nullptr || elf_kind(f.elf) != ELF_K_ELF) return fail(path + ": not an ELF file");
    if (!build_id.empty()) {
        std::string id = build_id_of(f.elf);
        if (id != build_id) {
            return fail(path + ": build-id " + (id.empty() ? "none" : id) + ", not " + build_id);
        }
    }
    if (crc != nullptr) {
        auto sum = file_crc32(f.file);
        if (!sum) return std::unexpected(sum.error());
        if (*sum != *crc) return fail(path + ": CRC does not match the .gnu_debuglink");
    }
    // dwarf_begin_elf reads every DWARF section it knows into memory; the unit index and the
    // dwz link are read now too. After that, libelf is told the file is done with, and the
    // file is closed: a lookup never waits for it.
    info->impl_->dwarf = dwarf_begin_elf(f.elf, DWARF_C_READ, nullptr);
    if (info->impl_->dwarf == nullptr) {
        return fail(path + ": no DWARF (" + dwarf_errmsg(-1) + ")");
    }
    info->impl_->index();
    info->altlink_ = info->read_altlink();
    elf_cntl(f.elf, ELF_C_FDDONE);
    f.file = OpenFile();
    return info;
}

std::pair<std::string, std::string> DebugInfo::altlink() const {
    return altlink_;
}

std::pair<std::string, std::string> DebugInfo::read_altlink() const {
    const char* name = nullptr;
    const void* id = nullptr;
    ssize_t n = dwelf_dwarf_gnu_debugaltlink(impl_->dwarf, &name, &id);
    if (n <= 0 || name == nullptr) return {};
    return {name, hex_bytes(id, static_cast<size_t>(n))};
}

void DebugInfo::set_alt(std::unique_ptr<DebugInfo> alt) {
    std::lock_guard lock(mu_);
    dwarf_setalt(impl_->dwarf, alt->impl_->dwarf);
    impl_->alt = std::move(alt);
}

SourceInfo DebugInfo::lookup(uint64_t vaddr) {
    std::lock_guard lock(mu_);
    SourceInfo out;
    Dwarf_Die* cudie = impl_->cu_at(vaddr);
    if (cudie == nullptr) return out;

    SourceLine here;  // where the address is, in the innermost function
    if (Dwarf_Line* row = dwarf_getsrc_die(cudie, vaddr)) {
        int line = 0;
        if (dwarf_lineno(row, &line) == 0 && line > 0) {
            here.file = normal_path(dwarf_linesrc(row, nullptr, nullptr));
            here.line = static_cast<uint32_t>(line);
        }
    }

    std::vector<Dwarf_Die> chain;
    functions_at(cudie, vaddr, chain);
    // Only the inlined subroutines below the innermost real function count (a nested
    // function is a frame of its own).
    size_t outer = 0;
    for (size_t i = 0; i < chain.size(); ++i) {
        if (dwarf_tag(&chain[i]) != DW_TAG_inlined_subroutine) outer = i;
    }
    for (size_t i = chain.size(); i-- > outer + 1;) {
        if (dwarf_tag(&chain[i]) != DW_TAG_inlined_subroutine) break;
        here.function = function_of(&chain[i]);
        out.inlined.push_back(std::move(here));
        here = call_site_of(&chain[i], cudie);  // the line in the caller
    }
    out.file = std::move(here.file);
    out.line = here.line;
    return out;
}

Result<uint32_t> file_crc32(const OpenFile& file) {
    static const std::array<uint32_t, 256> table = [] {
        std::array<uint32_t, 256> t{};
        for (uint32_t i = 0; i < 256; ++i) {
            uint32_t c = i;
            for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
            t[i] = c;
        }
        return t;
    }();
    uint32_t crc = 0xffffffffu;
    std::vector<unsigned char> buf(1 << 16);
    // No further than the size it had when it was opened (and checked against the bound).
    for (uint64_t at = 0; at < file.size();) {
        size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), file.size() - at));
        ssize_t n = ::pread(file.fd(), buf.data(), want, static_cast<off_t>(at));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail_errno("read " + file.path(), errno);
        if (n == 0) break;
        for (ssize_t i = 0; i < n; ++i) crc = table[(crc ^ buf[i]) & 0xff] ^ (crc >> 8);
        at += static_cast<uint64_t>(n);
    }
    return crc ^ 0xffffffffu;
}

std::vector<DebugCandidate> debug_file_candidates(const DebugSearch& s) {
    std::vector<DebugCandidate> out;
    auto add = [&](const std::string& p, bool in_root) {
        DebugCandidate c{p, in_root};
        if (std::find(out.begin(), out.end(), c) == out.end()) out.push_back(std::move(c));
    };
    const bool has_root = static_cast<bool>(s.open_in_root);
    if (s.build_id.size() > 2) {
        for (const std::string& dir : s.debug_dirs) {
            std::string p = dir + "/.build-id/" + s.build_id.substr(0, 2) + "/" +
                            s.build_id.substr(2) + ".debug";
            if (has_root) add(p, true);
            add(p, false);  // the daemon's own (the host's) debug files, checked by build-id too
        }
    }
    if (!s.debuglink.empty() && s.debuglink.find('/') == std::string::npos) {
        std::string dir = std::filesystem::path(s.mapped_path).parent_path().string();
        add(dir + "/" + s.debuglink, has_root);
        add(dir + "/.debug/" + s.debuglink, has_root);
        for (const std::string& d : s.debug_dirs) add(d + dir + "/" + s.debuglink, has_root);
    }
    return out;
}

namespace {

Result<OpenFile> open_candidate(const DebugSearch& s, const DebugCandidate& c) {
    if (c.in_root && s.open_in_root) return s.open_in_root(c.path);
    return open_file(c.path, s.max_bytes);
}

}  // namespace

Result<std::unique_ptr<DebugInfo>> find_debug_info(const DebugSearch& s) {
    std::unique_ptr<DebugInfo> found;
    bool found_in_root = false;
    std::string tried;
    auto note = [&](const std::string& message) { tried += (tried.empty() ? "" : "; ") + message; };
    if (s.self_has_dwarf && s.open_self) {
        auto self = s.open_self();
        auto info = self ? DebugInfo::open(std::move(*self), {})
                         : Result<std::unique_ptr<DebugInfo>>(std::unexpected(self.error()));
        if (info)
            found = std::move(*info);
        else
            note(info.error().message);
    }
    if (!found) {
        for (const DebugCandidate& candidate : debug_file_candidates(s)) {
            auto file = open_candidate(s, candidate);
            if (!file) continue;  // most candidates do not exist
            // A file without build-id is matched by the CRC its debuglink records.
            auto info = s.build_id.empty() ? DebugInfo::open(std::move(*file), {}, &s.debuglink_crc)
                                           : DebugInfo::open(std::move(*file), s.build_id);
            if (info) {
                found = std::move(*info);
                found_in_root = candidate.in_root;
                break;
            }
            note(info.error().message);
        }
    }
    if (!found) {
        return fail("no debug info for " + s.mapped_path + (tried.empty() ? "" : ": " + tried));
    }
    // dwz moves what several files share into one common file; its DIEs are needed for the
    // names of inlined functions. Found here inside the process's root; otherwise libdw looks
    // for it by itself in the daemon's /usr/lib/debug.
    auto [alt_name, alt_id] = found->altlink();
    if (!alt_name.empty()) {
        std::vector<DebugCandidate> alts;
        std::string debug_dir = std::filesystem::path(found->path()).parent_path().string();
        if (alt_name.front() == '/') alts.push_back({alt_name, static_cast<bool>(s.open_in_root)});
        DebugSearch by_id;
        by_id.build_id = alt_id;
        by_id.debug_dirs = s.debug_dirs;
        by_id.open_in_root = s.open_in_root;
        for (auto& c : debug_file_candidates(by_id)) alts.push_back(c);
        if (alt_name.front() != '/') alts.push_back({debug_dir + "/" + alt_name, found_in_root});
        bool linked = false;
        for (const DebugCandidate& c : alts) {
            auto file = open_candidate(s, c);
            if (!file) continue;
            if (auto alt = DebugInfo::open(std::move(*file), alt_id)) {
                found->set_alt(std::move(*alt));
                linked = true;
                break;
            }
        }
        // Without it, libdw would look for the file itself at the first DIE that needs it, by
        // a path the file names (outside the process's root), on the thread of that lookup.
        if (!linked) {
            return fail("no debug info for " + s.mapped_path + ": its dwz common file " + alt_name +
                        " was not found");
        }
    }
    return found;
}

}  // namespace leakwatch
