// ELF symbol tables (via elfutils) and the per-file cache that turns process addresses into
// frames. All parsing happens once per file; the parsed ElfFile is immutable afterwards.
#include "symbols/symbolizer.h"

#include <cxxabi.h>
#include <elfutils/libdwelf.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <tuple>
#include <utility>

namespace leakwatch {

namespace {

// Bounds on the caches (design: bounded everything). Distinct ELF files on a host number in the
// hundreds; reaching these means churn (e.g. many short-lived containers), and starting over
// costs only re-parsing.
constexpr size_t kMaxIdentities = 4096;
constexpr size_t kMaxFailures = 4096;
// How far symbol_at looks back for an enclosing symbol when the nearest one ends before vaddr
// (a small symbol nested inside a larger function, e.g. a local label with a size).
constexpr int kMaxEnclosingLookback = 8;
// Set in a .gnu.version entry for a non-default ("foo@VER", not "foo@@VER") version.
constexpr GElf_Versym kVersymHidden = 0x8000;

std::string hex(uint64_t v) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(v));
    return buf;
}

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

std::string demangle(const std::string& raw) {
    if (!raw.starts_with("_Z")) return raw;
    int status = 0;
    char* out = abi::__cxa_demangle(raw.c_str(), nullptr, nullptr, &status);
    std::string result = (status == 0 && out != nullptr) ? std::string(out) : raw;
    std::free(out);
    return result;
}

std::string elf_error(const std::string& path) {
    return path + ": " + elf_errmsg(-1);
}

// An open file descriptor and its libelf handle, released together.
class ElfHandle {
  public:
    ElfHandle() = default;
    ElfHandle(const ElfHandle&) = delete;
    ElfHandle& operator=(const ElfHandle&) = delete;
    ElfHandle(ElfHandle&& o) noexcept
        : fd_(std::exchange(o.fd_, -1)), elf_(std::exchange(o.elf_, nullptr)) {}
    ~ElfHandle() {
        if (elf_ != nullptr) elf_end(elf_);
        if (fd_ >= 0) ::close(fd_);
    }

    static Result<ElfHandle> open(const std::string& path) {
        // libelf refuses to work until the version handshake has happened once per process.
        static const bool initialized = elf_version(EV_CURRENT) != EV_NONE;
        if (!initialized) return fail("libelf: version mismatch");
        ElfHandle h;
        h.fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (h.fd_ < 0) return fail_errno("open " + path, errno);
        h.elf_ = elf_begin(h.fd_, ELF_C_READ_MMAP, nullptr);
        if (h.elf_ == nullptr) return fail(elf_error(path));
        if (elf_kind(h.elf_) != ELF_K_ELF) return fail(path + ": not an ELF file");
        GElf_Ehdr ehdr;
        if (gelf_getehdr(h.elf_, &ehdr) == nullptr) return fail(elf_error(path));
        return h;
    }

    Elf* elf() const { return elf_; }

    std::string build_id() const {
        const void* id = nullptr;
        ssize_t n = dwelf_elf_gnu_build_id(elf_, &id);
        return n > 0 ? hex_bytes(id, static_cast<size_t>(n)) : std::string();
    }

    bool has_symtab() const {
        Elf_Scn* scn = nullptr;
        while ((scn = elf_nextscn(elf_, scn)) != nullptr) {
            GElf_Shdr sh;
            if (gelf_getshdr(scn, &sh) != nullptr && sh.sh_type == SHT_SYMTAB) return true;
        }
        return false;
    }

  private:
    int fd_ = -1;
    Elf* elf_ = nullptr;
};

// A function symbol as read from a table, before aliases at one address are merged.
struct RawSymbol {
    std::string name;  // unversioned, mangled
    uint64_t start = 0;
    uint64_t size = 0;
    bool global = false;           // GLOBAL, WEAK or GNU_UNIQUE binding
    bool default_version = false;  // unversioned, "@@VER", or a non-hidden .gnu.version entry

    // Which symbol stands for an address: public names beat local ones, the default version
    // beats old compatibility versions, and among equals (glibc's malloc/__libc_malloc) the
    // name with fewer leading underscores, then the shorter, then the smaller one wins, so the
    // choice never depends on table order.
    bool better_display_than(const RawSymbol& o) const {
        auto key = [](const RawSymbol& s) {
            size_t underscores = s.name.find_first_not_of('_');
            if (underscores == std::string::npos) underscores = s.name.size();
            return std::make_tuple(!s.global, !s.default_version, s.size == 0, underscores,
                                   s.name.size());
        };
        auto a = key(*this), b = key(o);
        if (a != b) return a < b;
        return name < o.name;
    }
};

void read_symbol_table(Elf* elf, Elf_Scn* scn, const GElf_Shdr& sh, Elf_Data* versym,
                       std::vector<RawSymbol>& out) {
    Elf_Data* data = elf_getdata(scn, nullptr);
    if (data == nullptr || sh.sh_entsize == 0) return;
    size_t count = sh.sh_size / sh.sh_entsize;
    // Entry 0 is the reserved null symbol.
    for (size_t i = 1; i < count; ++i) {
        GElf_Sym sym;
        if (gelf_getsym(data, static_cast<int>(i), &sym) == nullptr) continue;
        int type = GELF_ST_TYPE(sym.st_info);
        if (type != STT_FUNC && type != STT_GNU_IFUNC) continue;
        if (sym.st_shndx == SHN_UNDEF || sym.st_value == 0) continue;
        // SHN_ABS/SHN_COMMON are not code; SHN_XINDEX is a real section (index elsewhere).
        if (sym.st_shndx >= SHN_LORESERVE && sym.st_shndx != SHN_XINDEX) continue;
        const char* name = elf_strptr(elf, sh.sh_link, sym.st_name);
        if (name == nullptr || *name == '\0') continue;

        RawSymbol s;
        std::string_view full(name);
        size_t at = full.find('@');
        s.name = std::string(full.substr(0, at));
        if (s.name.empty()) continue;
        // .symtab spells versions into the name ("foo@@V" default, "foo@V" compatibility);
        // .dynsym keeps them in .gnu.version, where the hidden bit marks the non-default ones.
        s.default_version = at == std::string_view::npos || full.substr(at).starts_with("@@");
        if (versym != nullptr && at == std::string_view::npos) {
            GElf_Versym v;
            if (gelf_getversym(versym, static_cast<int>(i), &v) != nullptr &&
                (v & kVersymHidden) != 0) {
                s.default_version = false;
            }
        }
        int bind = GELF_ST_BIND(sym.st_info);
        s.global = bind == STB_GLOBAL || bind == STB_WEAK || bind == STB_GNU_UNIQUE;
        s.start = sym.st_value;
        s.size = sym.st_size;
        out.push_back(std::move(s));
    }
}

}  // namespace

// Fills an ElfFile's private members; the only writer, so ElfFile stays read-only to users.
class ElfFileBuilder {
  public:
    static Result<std::shared_ptr<const ElfFile>> build(const ElfHandle& h,
                                                        const std::string& path) {
        Elf* elf = h.elf();
        auto file = std::make_shared<ElfFile>();
        file->build_id_ = h.build_id();

        size_t phnum = 0;
        if (elf_getphdrnum(elf, &phnum) != 0) return fail(elf_error(path));
        for (size_t i = 0; i < phnum; ++i) {
            GElf_Phdr ph;
            if (gelf_getphdr(elf, static_cast<int>(i), &ph) == nullptr) continue;
            if (ph.p_type != PT_LOAD || ph.p_filesz == 0) continue;
            file->segments_.push_back({ph.p_vaddr, ph.p_offset, ph.p_filesz});
        }

        // Version tables are linked to the symbol table they annotate.
        std::unordered_map<size_t, Elf_Data*> versym_of;
        std::vector<std::pair<Elf_Scn*, GElf_Shdr>> tables;
        Elf_Scn* scn = nullptr;
        while ((scn = elf_nextscn(elf, scn)) != nullptr) {
            GElf_Shdr sh;
            if (gelf_getshdr(scn, &sh) == nullptr) continue;
            if (sh.sh_type == SHT_GNU_versym) versym_of[sh.sh_link] = elf_getdata(scn, nullptr);
            if (sh.sh_type == SHT_SYMTAB || sh.sh_type == SHT_DYNSYM) tables.emplace_back(scn, sh);
            if (sh.sh_type == SHT_SYMTAB) file->has_symtab_ = true;
        }
        std::vector<RawSymbol> raw;
        for (auto& [table, sh] : tables) {
            auto v = versym_of.find(elf_ndxscn(table));
            read_symbol_table(elf, table, sh, v == versym_of.end() ? nullptr : v->second, raw);
        }

        // Every name is attachable; a public default-version definition wins over a local
        // function of the same name or an old compatibility version (memcpy@GLIBC_2.2.5).
        std::unordered_map<std::string, const RawSymbol*> best_by_name;
        for (const RawSymbol& s : raw) {
            auto [it, inserted] = best_by_name.try_emplace(s.name, &s);
            if (!inserted && std::tie(s.global, s.default_version) >
                                 std::tie(it->second->global, it->second->default_version)) {
                it->second = &s;
            }
        }
        file->by_name_.reserve(best_by_name.size());
        for (auto& [name, s] : best_by_name) file->by_name_.emplace(name, s->start);

        // One display symbol per address: the best-named alias, sized by its own size or, if
        // that is 0, the largest alias size.
        std::sort(raw.begin(), raw.end(), [](const RawSymbol& a, const RawSymbol& b) {
            if (a.start != b.start) return a.start < b.start;
            return a.better_display_than(b);
        });
        for (size_t i = 0; i < raw.size();) {
            size_t j = i;
            uint64_t max_size = 0;
            for (; j < raw.size() && raw[j].start == raw[i].start; ++j) {
                max_size = std::max(max_size, raw[j].size);
            }
            file->symbols_.push_back(
                {demangle(raw[i].name), raw[i].start, raw[i].size != 0 ? raw[i].size : max_size});
            i = j;
        }
        return std::shared_ptr<const ElfFile>(std::move(file));
    }

    static bool has_symtab(const ElfFile& f) { return f.has_symtab_; }
};

std::string Frame::display() const {
    if (!symbol.empty()) return symbol + "+0x" + hex(offset);
    std::string base = module.empty() ? std::string("[unknown]") : module;
    if (size_t slash = base.rfind('/'); slash != std::string::npos && slash + 1 < base.size()) {
        base = base.substr(slash + 1);
    }
    return base + "+0x" + hex(module_offset);
}

Result<std::shared_ptr<const ElfFile>> ElfFile::open(const std::string& path) {
    auto handle = ElfHandle::open(path);
    if (!handle) return std::unexpected(handle.error());
    return ElfFileBuilder::build(*handle, path);
}

std::optional<uint64_t> ElfFile::vaddr_of_file_offset(uint64_t off) const {
    for (const Segment& s : segments_) {
        if (off >= s.offset && off - s.offset < s.filesz) return off - s.offset + s.vaddr;
    }
    return std::nullopt;
}

std::optional<uint64_t> ElfFile::file_offset_of_vaddr(uint64_t vaddr) const {
    for (const Segment& s : segments_) {
        if (vaddr >= s.vaddr && vaddr - s.vaddr < s.filesz) return vaddr - s.vaddr + s.offset;
    }
    return std::nullopt;
}

const ElfFile::Symbol* ElfFile::symbol_at(uint64_t vaddr) const {
    auto it = std::upper_bound(symbols_.begin(), symbols_.end(), vaddr,
                               [](uint64_t v, const Symbol& s) { return v < s.start; });
    if (it == symbols_.begin()) return nullptr;
    --it;
    // Symbols without a size (hand-written assembly) extend to the next symbol.
    if (it->size == 0 || vaddr - it->start < it->size) return &*it;
    for (int i = 0; i < kMaxEnclosingLookback && it != symbols_.begin(); ++i) {
        --it;
        if (it->size != 0 && vaddr - it->start < it->size) return &*it;
    }
    return nullptr;
}

std::optional<uint64_t> ElfFile::function_address(const std::string& raw_name) const {
    auto it = by_name_.find(raw_name);
    if (it == by_name_.end()) return std::nullopt;
    return it->second;
}

void Symbolizer::remember_failure(const std::string& key, const std::string& message) {
    std::lock_guard lock(mu_);
    if (failed_.size() >= kMaxFailures) failed_.clear();
    failed_.emplace(key, message);
}

void Symbolizer::insert_identity(const std::string& identity, std::shared_ptr<const ElfFile> file) {
    // Caller holds mu_.
    if (by_identity_.size() >= kMaxIdentities) {
        if (!warned_full_) {
            spdlog::warn("symbolizer: {} cached ELF files reached; starting the cache over",
                         kMaxIdentities);
            warned_full_ = true;
        }
        by_identity_.clear();
        by_build_id_.clear();
    }
    by_identity_[identity] = std::move(file);
}

Result<std::shared_ptr<const ElfFile>> Symbolizer::file_for(int pid, const MapEntry& mapping) {
    auto reachable = proc_.mapped_file(pid, mapping);
    std::string path = reachable ? *reachable : proc_.path_in(pid, mapping.path);
    std::string failure_key = path + '|' + std::to_string(mapping.dev_major) + ':' +
                              std::to_string(mapping.dev_minor) + ':' +
                              std::to_string(mapping.inode);
    {
        std::lock_guard lock(mu_);
        if (auto it = failed_.find(failure_key); it != failed_.end()) return fail(it->second);
    }

    // A mapped file that was deleted (typically a library replaced by a package upgrade) may
    // have a new file at its path; only the process's own map_files link reaches the old one.
    if (mapping.deleted && !reachable) {
        path = proc_.root() + '/' + std::to_string(pid) + "/map_files/" + hex(mapping.start) + '-' +
               hex(mapping.end);
    }
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
        std::string message = "stat " + path + ": " + std::strerror(errno);
        remember_failure(failure_key, message);
        return fail(message);
    }
    std::string identity = path + '|' + std::to_string(st.st_dev) + ':' +
                           std::to_string(st.st_ino) + ':' + std::to_string(st.st_mtim.tv_sec) +
                           '.' + std::to_string(st.st_mtim.tv_nsec);
    {
        std::lock_guard lock(mu_);
        if (auto it = by_identity_.find(identity); it != by_identity_.end()) return it->second;
    }

    auto handle = ElfHandle::open(path);
    if (!handle) {
        remember_failure(failure_key, handle.error().message);
        return std::unexpected(handle.error());
    }
    // The same build (another container's copy of libc) is shared without parsing it again,
    // unless this copy has a .symtab the cached one lacks (stripped image, unstripped host).
    std::string build_id = handle->build_id();
    if (!build_id.empty()) {
        std::lock_guard lock(mu_);
        auto it = by_build_id_.find(build_id);
        if (it != by_build_id_.end() &&
            (ElfFileBuilder::has_symtab(*it->second) || !handle->has_symtab())) {
            auto file = it->second;
            insert_identity(identity, file);
            return file;
        }
    }

    // Parse without the lock: libc takes milliseconds and other threads need the cache.
    auto parsed = ElfFileBuilder::build(*handle, path);
    if (!parsed) {
        remember_failure(failure_key, parsed.error().message);
        return parsed;
    }
    std::lock_guard lock(mu_);
    if (auto it = by_identity_.find(identity); it != by_identity_.end()) return it->second;
    std::shared_ptr<const ElfFile> file = *parsed;
    if (!build_id.empty()) {
        auto& slot = by_build_id_[build_id];
        if (slot && (ElfFileBuilder::has_symtab(*slot) || !ElfFileBuilder::has_symtab(*file))) {
            file = slot;  // another thread parsed an equal or better copy meanwhile
        } else {
            // Upgrade every identity that shared the poorer copy.
            for (auto& [key, cached] : by_identity_) {
                if (slot && cached == slot) cached = file;
            }
            slot = file;
        }
    }
    insert_identity(identity, file);
    return file;
}

Frame Symbolizer::symbolize(int pid, const std::vector<MapEntry>& maps, uint64_t address) {
    Frame frame;
    frame.address = address;
    const MapEntry* m = find_mapping(maps, address);
    if (m == nullptr) {
        // No module: the offset is the address itself, so display() still shows it.
        frame.module = "[unknown]";
        frame.module_offset = address;
        return frame;
    }
    if (m->path.empty()) {
        frame.module = "[anon]";
        frame.module_offset = address - m->start;
        return frame;
    }
    frame.module = m->path;
    frame.module_offset = address - m->start + m->offset;
    // Pseudo-files ([heap], [stack], [vdso]) have nothing to open.
    if (m->path.front() != '/') return frame;

    auto file = file_for(pid, *m);
    if (!file) return frame;
    frame.build_id = (*file)->build_id();
    auto vaddr = (*file)->vaddr_of_file_offset(frame.module_offset);
    if (!vaddr) return frame;
    if (const ElfFile::Symbol* sym = (*file)->symbol_at(*vaddr)) {
        frame.symbol = sym->name;
        frame.offset = *vaddr - sym->start;
    }
    return frame;
}

size_t Symbolizer::cached_files() const {
    std::lock_guard lock(mu_);
    // Distinct parsed files, not identities: copies sharing a build-id count once.
    std::set<const ElfFile*> distinct;
    for (const auto& [key, file] : by_identity_) distinct.insert(file.get());
    return distinct.size();
}

}  // namespace leakwatch
