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
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <tuple>
#include <utility>

namespace leakwatch {

namespace {

// Bounds on what is not an LRU cache of its own (design: bounded everything). The identity
// index holds one small entry per (process root, file); starting it over costs a stat and a
// build-id read per file.
constexpr size_t kMinIdentities = 4096;
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
        static std::atomic<uint64_t> next_id{1};
        file->id_ = next_id++;
        file->build_id_ = h.build_id();
        GElf_Word crc = 0;
        if (const char* link = dwelf_elf_gnu_debuglink(elf, &crc)) {
            file->debuglink_ = link;
            file->debuglink_crc_ = crc;
        }
        size_t shstrndx = 0;
        const bool have_names = elf_getshdrstrndx(elf, &shstrndx) == 0;

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
            // A debug file split off with objcopy --only-keep-debug is the one holding DWARF;
            // the stripped file keeps no .debug_info at all.
            if (have_names && sh.sh_type == SHT_PROGBITS && sh.sh_size > 0) {
                const char* name = elf_strptr(elf, shstrndx, sh.sh_name);
                if (name != nullptr && std::strcmp(name, ".debug_info") == 0) {
                    file->has_dwarf_ = true;
                }
            }
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
    std::string base = module.empty() ? std::string("[unknown]") : module.str();
    if (size_t slash = base.rfind('/'); slash != std::string::npos && slash + 1 < base.size()) {
        base = base.substr(slash + 1);
    }
    return base + "+0x" + hex(module_offset);
}

std::string Frame::source() const {
    if (file.empty() || line == 0) return {};
    return file.str() + ":" + std::to_string(line);
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

Symbolizer::Symbolizer(const ProcReader& proc, SymbolizerOptions options)
    : proc_(proc),
      options_(std::move(options)),
      files_(options_.max_files),
      debug_(options_.max_files),
      lines_(options_.max_source_entries),
      perf_maps_(proc) {}

void Symbolizer::set_limits(size_t max_files, size_t max_source_entries) {
    std::lock_guard lock(mu_);
    options_.max_files = max_files;
    options_.max_source_entries = max_source_entries;
    files_.set_capacity(max_files);
    debug_.set_capacity(max_files);
    lines_.set_capacity(max_source_entries);
}

bool Symbolizer::release_debug_info() {
    std::lock_guard lock(mu_);
    bool any = debug_.size() > 0;
    debug_.clear();
    return any;
}

std::vector<SymbolCacheStats> Symbolizer::cache_stats() const {
    std::lock_guard lock(mu_);
    auto stats = [](const char* name, const auto& c) {
        return SymbolCacheStats{name, c.hits(), c.misses(), c.size(), c.capacity(), c.evictions()};
    };
    return {stats("elf_files", files_), stats("debug_files", debug_),
            stats("source_lines", lines_)};
}

void Symbolizer::remember_failure(const std::string& key, const std::string& message) {
    std::lock_guard lock(mu_);
    if (failed_.size() >= kMaxFailures) failed_.clear();
    failed_.emplace(key, message);
}

void Symbolizer::insert_file(const std::string& identity, const std::string& key,
                             std::shared_ptr<const ElfFile> file) {
    // Caller holds mu_.
    if (identities_.size() >= std::max(kMinIdentities, 8 * files_.capacity())) {
        identities_.clear();
    }
    identities_[identity] = key;
    uint64_t evicted = files_.evictions();
    files_.put(key, std::move(file));
    if (files_.evictions() != evicted && !warned_evicting_) {
        spdlog::info(
            "symbolizer: {} ELF files cached (limits.symbol_files): the least recently "
            "used are dropped and parsed again when needed",
            files_.capacity());
        warned_evicting_ = true;
    }
}

Result<std::shared_ptr<const ElfFile>> Symbolizer::file_for(int pid, const MapEntry& mapping) {
    return file_for(pid, mapping, nullptr);
}

Result<std::shared_ptr<const ElfFile>> Symbolizer::file_for(int pid, const MapEntry& mapping,
                                                            std::string* opened_path) {
    // Only a path that reaches the mapped file itself (same inode) is read: a file replaced
    // on disk after the process mapped it is read through /proc/PID/map_files, never the new
    // file at the old path.
    auto reachable = proc_.mapped_file(pid, mapping);
    std::string path = reachable ? *reachable : proc_.path_in(pid, mapping.path);
    std::string failure_key = path + '|' + std::to_string(mapping.dev_major) + ':' +
                              std::to_string(mapping.dev_minor) + ':' +
                              std::to_string(mapping.inode);
    {
        std::lock_guard lock(mu_);
        if (auto it = failed_.find(failure_key); it != failed_.end()) return fail(it->second);
    }
    if (!reachable) {
        remember_failure(failure_key, reachable.error().message);
        return std::unexpected(reachable.error());
    }
    if (opened_path != nullptr) *opened_path = path;
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
        if (auto it = identities_.find(identity); it != identities_.end()) {
            if (auto* file = files_.peek(it->second)) {
                files_.count_hit();
                return *file;
            }
        }
    }

    auto handle = ElfHandle::open(path);
    if (!handle) {
        remember_failure(failure_key, handle.error().message);
        return std::unexpected(handle.error());
    }
    // The same build (another container's copy of libc) is shared without parsing it again,
    // unless this copy has a .symtab the cached one lacks (stripped image, unstripped host).
    std::string build_id = handle->build_id();
    const std::string key = build_id.empty() ? "i:" + identity : "b:" + build_id;
    if (!build_id.empty()) {
        std::lock_guard lock(mu_);
        auto* cached = files_.peek(key);
        if (cached != nullptr && (ElfFileBuilder::has_symtab(**cached) || !handle->has_symtab())) {
            auto file = *cached;
            files_.count_hit();
            insert_file(identity, key, file);
            return file;
        }
    }

    // Parse without the lock: libc takes milliseconds and other threads need the cache.
    auto parsed = ElfFileBuilder::build(*handle, path);
    {
        std::lock_guard lock(mu_);
        files_.count_miss();
    }
    if (!parsed) {
        remember_failure(failure_key, parsed.error().message);
        return parsed;
    }
    std::lock_guard lock(mu_);
    std::shared_ptr<const ElfFile> file = *parsed;
    if (auto* slot = files_.peek(key)) {
        // Another thread parsed this build meanwhile: keep the better copy (with .symtab).
        // Every identity of the build points at the key, so all get the better one.
        if (ElfFileBuilder::has_symtab(**slot) || !ElfFileBuilder::has_symtab(*file)) file = *slot;
    }
    insert_file(identity, key, file);
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
        // JIT-compiled code: named by the runtime's perf map, if it writes one.
        if (m->executable()) {
            std::lock_guard lock(mu_);
            if (const PerfMap::Symbol* s = perf_maps_.find(pid, address)) {
                frame.symbol = perf_map_symbol(s->name);
                frame.offset = address - s->start;
            }
        }
        return frame;
    }
    frame.module = m->path;
    frame.module_offset = address - m->start + m->offset;
    // Pseudo-files ([heap], [stack], [vdso]) have nothing to open.
    if (m->path.front() != '/') return frame;

    std::string path;
    auto file = file_for(pid, *m, &path);
    if (!file) return frame;
    frame.build_id = (*file)->build_id();
    auto vaddr = (*file)->vaddr_of_file_offset(frame.module_offset);
    if (!vaddr) return frame;
    if (const ElfFile::Symbol* sym = (*file)->symbol_at(*vaddr)) {
        frame.symbol = sym->name;
        frame.offset = *vaddr - sym->start;
    }
    if (options_.source_lines) add_source(pid, *m, **file, path, *vaddr, frame);
    return frame;
}

std::shared_ptr<DebugInfo> Symbolizer::debug_info_for(int pid, const MapEntry& mapping,
                                                      const ElfFile& file,
                                                      const std::string& path) {
    {
        std::lock_guard lock(mu_);
        if (auto* cached = debug_.get(file.id())) return *cached;
    }
    DebugSearch search;
    search.self_path = path;
    search.self_has_dwarf = file.has_dwarf();
    search.build_id = file.build_id();
    search.debuglink = file.debuglink();
    search.debuglink_crc = file.debuglink_crc();
    search.mapped_path = mapping.path;
    search.debug_dirs = options_.debug_dirs;
    search.in_root = [this, pid](const std::string& p) { return proc_.path_in(pid, p); };
    std::shared_ptr<DebugInfo> info;
    if (auto found = find_debug_info(search)) {
        info = std::move(*found);
        spdlog::debug("symbolizer: source lines for {} from {}", mapping.path, info->path());
    } else {
        spdlog::debug("symbolizer: {}", found.error().message);
    }
    // Found or not, once per parsed file: a file without debug info costs one search.
    std::lock_guard lock(mu_);
    if (auto* cached = debug_.peek(file.id())) return *cached;
    return debug_.put(file.id(), std::move(info));
}

void Symbolizer::add_source(int pid, const MapEntry& mapping, const ElfFile& file,
                            const std::string& path, uint64_t vaddr, Frame& frame) {
    auto debug = debug_info_for(pid, mapping, file, path);
    if (!debug) return;  // no DWARF: nothing per address is worth remembering
    std::shared_ptr<const SourceInfo> source;
    const auto key = std::make_pair(file.id(), vaddr);
    {
        std::lock_guard lock(mu_);
        if (auto* cached = lines_.get(key)) source = *cached;
    }
    if (!source) {
        source = std::make_shared<const SourceInfo>(debug->lookup(vaddr));
        std::lock_guard lock(mu_);
        lines_.put(key, source);
    }
    frame.file = source->file;
    frame.line = source->line;
    frame.inlined = source->inlined;
}

uint64_t Symbolizer::perf_map_generation(int pid) {
    std::lock_guard lock(mu_);
    return perf_maps_.generation(pid);
}

std::optional<PerfMap::Symbol> Symbolizer::jit_blob(int pid, uint64_t addr) {
    std::lock_guard lock(mu_);
    const PerfMap::Symbol* blob = perf_maps_.find(pid, addr, true);
    if (blob == nullptr) return std::nullopt;
    return *blob;
}

void Symbolizer::forget_process(int pid) {
    std::lock_guard lock(mu_);
    perf_maps_.forget(pid);
}

size_t Symbolizer::cached_files() const {
    std::lock_guard lock(mu_);
    // Distinct parsed files, not identities: copies sharing a build-id count once.
    return files_.size();
}

}  // namespace leakwatch
