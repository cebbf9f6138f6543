// ELF symbol tables (via elfutils) and the per-file cache that turns process addresses into
// frames. All parsing happens once per file; the parsed ElfFile is immutable afterwards.
#include "symbols/symbolizer.h"

#include <cxxabi.h>
#include <elfutils/libdwelf.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <openssl/evp.h>
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

#include "util/text.h"

namespace leakwatch {

namespace {

// Bounds on what is not an LRU cache of its own (design: bounded everything). The identity
// index holds one small entry per distinct file; starting it over costs a parse's hash per
// file. Mappings remember their file per (process, mapping).
constexpr size_t kMinIdentities = 4096;
constexpr size_t kMaxFailures = 4096;
constexpr size_t kMaxMappings = 65536;
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

// The name a frame shows: demangled, and shown text (a file's symbol names are its own to say).
std::string demangle(const std::string& raw) {
    if (!raw.starts_with("_Z")) return shown_text(raw, kMaxShownName);
    int status = 0;
    char* out = abi::__cxa_demangle(raw.c_str(), nullptr, nullptr, &status);
    std::string result = (status == 0 && out != nullptr) ? std::string(out) : raw;
    std::free(out);
    return shown_text(result, kMaxShownName);
}

std::string elf_error(const std::string& path) {
    return path + ": " + elf_errmsg(-1);
}

// A libelf handle on an open file, read with pread (ELF_C_READ: what libelf needs is read
// into memory when first needed; never mapped, as a file truncated under a mapping would be a
// SIGBUS). The file stays the caller's, and must outlive the handle.
class ElfHandle {
  public:
    ElfHandle() = default;
    ElfHandle(const ElfHandle&) = delete;
    ElfHandle& operator=(const ElfHandle&) = delete;
    ElfHandle(ElfHandle&& o) noexcept : elf_(std::exchange(o.elf_, nullptr)) {}
    ~ElfHandle() {
        if (elf_ != nullptr) elf_end(elf_);
    }

    static Result<ElfHandle> open(const OpenFile& file) {
        // libelf refuses to work until the version handshake has happened once per process.
        static const bool initialized = elf_version(EV_CURRENT) != EV_NONE;
        if (!initialized) return fail("libelf: version mismatch");
        const std::string& path = file.path();
        ElfHandle h;
        h.elf_ = elf_begin(file.fd(), ELF_C_READ, nullptr);
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

  private:
    Elf* elf_ = nullptr;
};

// SHA-256 of what a parse holds, so that two files share a parse only when every byte it is
// made of is the same: the load segments, the section headers, the symbol tables, their
// strings and version tables, the build-id and the debuglink. Another file claiming the same
// build-id with other symbols (to move where probes go) gets a parse of its own.
Result<std::string> content_hash(const ElfHandle& h, const std::string& path) {
    Elf* elf = h.elf();
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
    if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1)
        return fail("SHA-256 unavailable");
    auto add = [&](const void* data, size_t size) {
        if (size > 0) EVP_DigestUpdate(ctx.get(), data, size);
    };
    auto add_data = [&](Elf_Scn* scn) {
        if (scn == nullptr) return;
        Elf_Data* d = elf_getdata(scn, nullptr);
        if (d != nullptr && d->d_buf != nullptr) add(d->d_buf, d->d_size);
    };
    const std::string id = h.build_id();
    add(id.data(), id.size());
    GElf_Word crc = 0;
    if (const char* link = dwelf_elf_gnu_debuglink(elf, &crc)) {
        add(link, std::strlen(link));
        add(&crc, sizeof(crc));
    }
    size_t phnum = 0, shnum = 0;
    if (elf_getphdrnum(elf, &phnum) != 0) return fail(elf_error(path));
    // The symbols are found through the section headers: a file without them readable (cut
    // short) has none to give.
    // (libelf counts no section at all when the headers lie past the end of the file.)
    GElf_Ehdr ehdr;
    GElf_Shdr last;
    if (gelf_getehdr(elf, &ehdr) == nullptr || elf_getshdrnum(elf, &shnum) != 0 ||
        (ehdr.e_shoff != 0 && shnum == 0) ||
        (shnum > 0 && gelf_getshdr(elf_getscn(elf, shnum - 1), &last) == nullptr))
        return fail(path + ": its section headers cannot be read (cut short?)");
    for (size_t i = 0; i < phnum; ++i) {
        GElf_Phdr ph;
        if (gelf_getphdr(elf, static_cast<int>(i), &ph) != nullptr) add(&ph, sizeof(ph));
    }
    for (Elf_Scn* scn = elf_nextscn(elf, nullptr); scn != nullptr; scn = elf_nextscn(elf, scn)) {
        GElf_Shdr sh;
        if (gelf_getshdr(scn, &sh) == nullptr) continue;
        add(&sh, sizeof(sh));
        if (sh.sh_type == SHT_SYMTAB || sh.sh_type == SHT_DYNSYM || sh.sh_type == SHT_GNU_versym) {
            add_data(scn);
            if (sh.sh_type != SHT_GNU_versym) add_data(elf_getscn(elf, sh.sh_link));
        }
    }
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    if (EVP_DigestFinal_ex(ctx.get(), digest, &size) != 1) return fail("SHA-256 failed");
    return hex_bytes(digest, size);
}

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
    static Result<std::shared_ptr<const ElfFile>> build(const ElfHandle& h, const std::string& path,
                                                        std::string key) {
        Elf* elf = h.elf();
        auto file = std::make_shared<ElfFile>();
        file->content_key_ = std::move(key);
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

Result<std::shared_ptr<const ElfFile>> ElfFile::open(const OpenFile& file) {
    auto handle = ElfHandle::open(file);
    if (!handle) return std::unexpected(handle.error());
    auto key = content_hash(*handle, file.path());
    if (!key) return std::unexpected(key.error());
    return ElfFileBuilder::build(*handle, file.path(), std::move(*key));
}

Result<std::shared_ptr<const ElfFile>> ElfFile::open(const std::string& path, uint64_t max_bytes) {
    auto file = open_file(path, max_bytes);
    if (!file) return std::unexpected(file.error());
    return open(*file);
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

// What loads share with the symbolizer: they may outlive it (a load stuck on a file ends with
// the process, not with the symbolizer).
struct Symbolizer::Shared {
    explicit Shared(const SymbolizerOptions& o)
        : max_file_bytes(o.max_file_bytes),
          files(o.max_files),
          debug(o.max_files),
          lines(o.max_source_entries) {}

    struct PairHash {
        size_t operator()(const std::pair<uint64_t, uint64_t>& p) const {
            return std::hash<uint64_t>()(p.first * 0x9e3779b97f4a7c15ull ^ p.second);
        }
    };
    // A mapping of a process: pid, start, file offset, device, inode, path.
    using MappingKey = std::tuple<int, uint64_t, uint64_t, uint64_t, uint64_t, std::string>;
    struct Mapped {
        std::string key;    // of its parse in `files`, when it has one
        std::string error;  // why not, otherwise
    };

    mutable std::mutex mu;
    uint64_t max_file_bytes;
    // identity (device, inode, mtime, size of the file opened) -> key in `files`. Bounded
    // apart (it is only an index).
    std::unordered_map<std::string, std::string> identities;
    LruCache<std::string, std::shared_ptr<const ElfFile>> files;  // by ElfFile::content_key()
    LruCache<uint64_t, std::shared_ptr<DebugInfo>> debug;         // by ElfFile::id()
    LruCache<std::pair<uint64_t, uint64_t>, std::shared_ptr<const SourceInfo>, PairHash> lines;
    std::map<MappingKey, Mapped> mappings;
    // Files that could not be opened or parsed (pid, path, mapped device and inode), so a
    // missing or non-ELF file costs one attempt, not one per frame.
    std::map<std::string, std::string> failed;
    bool warned_evicting = false;

    // Caller holds mu.
    void remember_failure(const std::string& key, const std::string& message) {
        if (failed.size() >= kMaxFailures) failed.clear();
        failed.emplace(key, message);
    }
    void remember_mapping(const MappingKey& key, Mapped m) {
        if (mappings.size() >= kMaxMappings) mappings.clear();
        mappings[key] = std::move(m);
    }
    void insert_file(const std::string& identity, std::shared_ptr<const ElfFile> file) {
        if (identities.size() >= std::max(kMinIdentities, 8 * files.capacity())) identities.clear();
        const std::string key = file->content_key();
        identities[identity] = key;
        uint64_t evicted = files.evictions();
        files.put(key, std::move(file));
        if (files.evictions() != evicted && !warned_evicting) {
            spdlog::info(
                "symbolizer: {} ELF files cached (limits.symbol_files): the least recently "
                "used are dropped and parsed again when needed",
                files.capacity());
            warned_evicting = true;
        }
    }
    // The parse of a mapping, if it is known and still cached. Caller holds mu.
    const Mapped* mapped(const MappingKey& key) {
        auto it = mappings.find(key);
        if (it == mappings.end()) return nullptr;
        if (!it->second.error.empty() || files.peek(it->second.key) != nullptr) return &it->second;
        return nullptr;  // its parse was evicted: read again
    }

    // Parses an open file, or returns the parse of the same content (`parsed` false). Takes
    // mu itself.
    Result<std::shared_ptr<const ElfFile>> parse(const OpenFile& f, bool& parsed_now) {
        parsed_now = false;
        const std::string identity = f.identity();
        {
            std::lock_guard lock(mu);
            if (auto it = identities.find(identity); it != identities.end()) {
                if (auto* file = files.peek(it->second)) return *file;
            }
        }
        auto handle = ElfHandle::open(f);
        auto key = handle ? content_hash(*handle, f.path())
                          : Result<std::string>(std::unexpected(handle.error()));
        if (!key) {
            refuse_file(Refusal::kMalformed, f.path() + " (" + identity + ")", key.error().message);
            return std::unexpected(key.error());
        }
        {
            std::lock_guard lock(mu);
            if (auto* file = files.peek(*key)) {
                auto shared = *file;  // another copy of the same content: shared
                insert_file(identity, shared);
                return shared;
            }
        }
        // Parse without the lock: libc takes milliseconds and other threads need the cache.
        auto parsed = ElfFileBuilder::build(*handle, f.path(), *key);
        if (!parsed) return parsed;
        parsed_now = true;
        std::lock_guard lock(mu);
        std::shared_ptr<const ElfFile> file = *parsed;
        if (auto* slot = files.peek(*key)) file = *slot;  // another thread parsed it meanwhile
        insert_file(identity, file);
        return file;
    }
};

Symbolizer::Symbolizer(const ProcReader& proc, SymbolizerOptions options)
    : proc_(proc),
      options_(std::move(options)),
      shared_(std::make_shared<Shared>(options_)),
      perf_maps_(
          proc_, loader_,
          PerfMaps::Options{.max_bytes = options_.max_file_bytes,
                            .wait = [this](const std::string& key) { return wait_for(key); }}),
      process_maps_(proc_, proc_reads_, [this](const std::string& key) { return wait_for(key); }),
      java_(std::make_shared<Java>()),
      gate_(proc_reads_.gate(proc_, options_.wait)) {}

Symbolizer::~Symbolizer() = default;

void Symbolizer::set_limits(size_t max_files, size_t max_source_entries, uint64_t max_file_bytes) {
    std::lock_guard lock(shared_->mu);
    options_.max_files = max_files;
    options_.max_source_entries = max_source_entries;
    options_.max_file_bytes = max_file_bytes;
    shared_->max_file_bytes = max_file_bytes;
    shared_->files.set_capacity(max_files);
    shared_->debug.set_capacity(max_files);
    shared_->lines.set_capacity(max_source_entries);
    perf_maps_.set_max_bytes(max_file_bytes);
}

uint64_t Symbolizer::max_file_bytes() const {
    std::lock_guard lock(shared_->mu);
    return shared_->max_file_bytes;
}

namespace {
// The end of the calling thread's budget for waits (begin_sample), or none.
thread_local std::chrono::steady_clock::time_point t_budget_end{};
}  // namespace

void Symbolizer::begin_sample(std::chrono::milliseconds budget) {
    t_budget_end = std::chrono::steady_clock::now() + budget;
}

void Symbolizer::end_sample() {
    t_budget_end = {};
}

std::optional<std::chrono::milliseconds> Symbolizer::wait_for(const std::string& key) {
    using std::chrono::milliseconds;
    auto running = loader_.running_for(key);
    if (!running) running = proc_reads_.loader().running_for(key);
    if (running && *running > options_.slow) return std::nullopt;
    milliseconds wait = options_.wait;
    if (running && *running >= options_.wait) wait = milliseconds(0);  // waited for once
    if (t_budget_end != std::chrono::steady_clock::time_point{}) {
        auto left = std::chrono::duration_cast<milliseconds>(t_budget_end -
                                                             std::chrono::steady_clock::now());
        wait = std::clamp(left, milliseconds(0), wait);
    }
    return wait;
}

bool Symbolizer::release_debug_info() {
    std::lock_guard lock(shared_->mu);
    bool any = shared_->debug.size() > 0;
    shared_->debug.clear();
    return any;
}

std::vector<SymbolCacheStats> Symbolizer::cache_stats() const {
    std::lock_guard lock(shared_->mu);
    auto stats = [](const char* name, const auto& c) {
        return SymbolCacheStats{name, c.hits(), c.misses(), c.size(), c.capacity(), c.evictions()};
    };
    return {stats("elf_files", shared_->files), stats("debug_files", shared_->debug),
            stats("source_lines", shared_->lines)};
}

Symbolizer::Parser Symbolizer::parser() const {
    return [shared = shared_](const OpenFile& f) {
        bool parsed_now = false;
        return shared->parse(f, parsed_now);
    };
}

Result<std::shared_ptr<const ElfFile>> Symbolizer::file_for(int pid, const MapEntry& mapping,
                                                            bool* pending) {
    const Shared::MappingKey key{pid,
                                 mapping.start,
                                 mapping.offset,
                                 uint64_t{mapping.dev_major} << 32 | mapping.dev_minor,
                                 mapping.inode,
                                 mapping.path};
    const std::string failure_key =
        std::to_string(pid) + '|' + mapping.path + '|' + std::to_string(mapping.dev_major) + ':' +
        std::to_string(mapping.dev_minor) + ':' + std::to_string(mapping.inode);
    // What is known of the mapping (caller holds the lock); `cached`: found without a load.
    auto answer = [&](bool cached) -> std::optional<Result<std::shared_ptr<const ElfFile>>> {
        if (const Shared::Mapped* m = shared_->mapped(key)) {
            if (!m->error.empty()) return fail(m->error);
            if (cached) shared_->files.count_hit();
            return *shared_->files.peek(m->key);
        }
        if (auto it = shared_->failed.find(failure_key); it != shared_->failed.end())
            return fail(it->second);
        return std::nullopt;
    };
    {
        std::lock_guard lock(shared_->mu);
        if (auto known = answer(true)) return *known;
    }
    char range[64];
    std::snprintf(range, sizeof range, "%d:%llx:%llx:%llu", pid,
                  static_cast<unsigned long long>(mapping.start),
                  static_cast<unsigned long long>(mapping.offset),
                  static_cast<unsigned long long>(mapping.inode));
    const std::string job = std::string("elf:") + range + ':' + mapping.path;
    auto wait = wait_for(job);
    if (!wait) {
        refuse_file(Refusal::kSlow, mapping.path + " (pid " + std::to_string(pid) + ")",
                    "reading it has taken more than " + std::to_string(options_.slow.count()) +
                        " ms; its frames stay unnamed");
        std::lock_guard lock(shared_->mu);
        shared_->remember_failure(failure_key, mapping.path + ": too slow to read");
        return fail(mapping.path + ": too slow to read");
    }
    auto load = [shared = shared_, proc = proc_, pid, mapping, key, failure_key, gate = gate_] {
        uint64_t max_bytes = 0;
        {
            std::lock_guard lock(shared->mu);
            max_bytes = shared->max_file_bytes;
        }
        auto file = open_mapped(proc, pid, mapping, max_bytes, gate);
        bool parsed_now = false;
        auto parsed = file ? shared->parse(*file, parsed_now)
                           : Result<std::shared_ptr<const ElfFile>>(std::unexpected(file.error()));
        std::lock_guard lock(shared->mu);
        if (parsed) {
            if (parsed_now)
                shared->files.count_miss();
            else
                shared->files.count_hit();
            shared->remember_mapping(key, {(*parsed)->content_key(), ""});
        } else {
            shared->remember_failure(failure_key, parsed.error().message);
            shared->remember_mapping(key, {"", parsed.error().message});
        }
    };
    if (loader_.run(job, std::move(load), *wait) == BoundedLoader::Outcome::kWaiting) {
        if (pending != nullptr) *pending = true;
        return fail(mapping.path + ": still being read");
    }
    std::lock_guard lock(shared_->mu);
    if (auto known = answer(false)) return *known;
    return fail(mapping.path + ": dropped from the cache as soon as it was read");
}

Frame Symbolizer::symbolize(int pid, const std::vector<MapEntry>& maps, uint64_t address) {
    Frame frame;
    frame.address = address;
    if (address & kJavaMethodTag) {
        name_java_method(pid, address, frame);
        return frame;
    }
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
            if (auto s = perf_maps_.find(pid, address, false, &frame.pending)) {
                frame.symbol = perf_map_symbol(s->name);
                frame.offset = address - s->start;
            } else {
                // HotSpot: the compiled method from the JVM's own code cache
                name_java_blob(pid, address, frame);
            }
        }
        return frame;
    }
    frame.module = shown_text(m->path, kMaxShownPath);
    frame.module_offset = address - m->start + m->offset;
    // Pseudo-files ([heap], [stack], [vdso]) have nothing to open.
    if (m->path.front() != '/') return frame;

    auto file = file_for(pid, *m, &frame.pending);
    if (!file) return frame;
    frame.build_id = (*file)->build_id();
    auto vaddr = (*file)->vaddr_of_file_offset(frame.module_offset);
    if (!vaddr) return frame;
    if (const ElfFile::Symbol* sym = (*file)->symbol_at(*vaddr)) {
        frame.symbol = sym->name;
        frame.offset = *vaddr - sym->start;
    }
    if (options_.source_lines) add_source(pid, *m, **file, *vaddr, frame);
    return frame;
}

std::shared_ptr<DebugInfo> Symbolizer::debug_info_for(int pid, const MapEntry& mapping,
                                                      const ElfFile& file, bool& pending) {
    {
        std::lock_guard lock(shared_->mu);
        if (auto* cached = shared_->debug.get(file.id())) return *cached;
    }
    const std::string job = "debug:" + std::to_string(file.id());
    auto wait = wait_for(job);
    if (!wait) {
        refuse_file(Refusal::kSlow, mapping.path + " (debug info, pid " + std::to_string(pid) + ")",
                    "looking for its debug info has taken more than " +
                        std::to_string(options_.slow.count()) + " ms; no source lines");
        std::lock_guard lock(shared_->mu);
        if (!shared_->debug.peek(file.id())) shared_->debug.put(file.id(), nullptr);
        return nullptr;
    }
    DebugSearch search;
    const uint64_t max_bytes = max_file_bytes();
    search.open_self = [proc = proc_, pid, mapping, max_bytes, gate = gate_] {
        return open_mapped(proc, pid, mapping, max_bytes, gate);
    };
    search.self_has_dwarf = file.has_dwarf();
    search.build_id = file.build_id();
    search.debuglink = file.debuglink();
    search.debuglink_crc = file.debuglink_crc();
    search.mapped_path = mapping.path;
    search.debug_dirs = options_.debug_dirs;
    search.open_in_root = [proc = proc_, pid, max_bytes](const std::string& p) {
        return open_in_root(proc, pid, p, OpenRules{.max_bytes = max_bytes});
    };
    search.max_bytes = max_bytes;
    auto load = [shared = shared_, search = std::move(search), id = file.id()] {
        std::shared_ptr<DebugInfo> info;
        if (auto found = find_debug_info(search)) {
            info = std::move(*found);
            spdlog::debug("symbolizer: source lines for {} from {}", search.mapped_path,
                          info->path());
        } else {
            spdlog::debug("symbolizer: {}", found.error().message);
        }
        // Found or not, once per parsed file: a file without debug info costs one search.
        std::lock_guard lock(shared->mu);
        if (!shared->debug.peek(id)) shared->debug.put(id, std::move(info));
    };
    if (loader_.run(job, std::move(load), *wait) == BoundedLoader::Outcome::kWaiting) {
        pending = true;
        return nullptr;
    }
    std::lock_guard lock(shared_->mu);
    if (auto* cached = shared_->debug.peek(file.id())) return *cached;
    return nullptr;
}

void Symbolizer::add_source(int pid, const MapEntry& mapping, const ElfFile& file, uint64_t vaddr,
                            Frame& frame) {
    auto debug = debug_info_for(pid, mapping, file, frame.pending);
    if (!debug) return;  // no DWARF: nothing per address is worth remembering
    std::shared_ptr<const SourceInfo> source;
    const auto key = std::make_pair(file.id(), vaddr);
    {
        std::lock_guard lock(shared_->mu);
        if (auto* cached = shared_->lines.get(key)) source = *cached;
    }
    if (!source) {
        // In memory: the debug file's sections were read when it was opened.
        source = std::make_shared<const SourceInfo>(debug->lookup(vaddr));
        std::lock_guard lock(shared_->mu);
        shared_->lines.put(key, source);
    }
    frame.file = source->file;
    frame.line = source->line;
    frame.inlined = source->inlined;
}

// What is known of the JVMs watched: their layouts (loaded once per process; retried a few
// times while the JVM is still starting) and their interpreted methods' names.
struct Symbolizer::Java {
    struct Jvm {
        // This process's own: a load for a JVM that exited (its pid reused by another JVM
        // meanwhile) writes nothing.
        uint64_t id = 0;
        std::shared_ptr<const HotSpotLayout> layout;
        std::string error;  // of the last failed read
        int failures = 0;
        std::chrono::steady_clock::time_point failed{};
        // A read of its /proc files refused by the gate (others of the process or its user
        // are held up): no read of it is started before then, so that a process holding up
        // its memory map's lock costs the loader one gate's wait per kRetry at most.
        std::chrono::steady_clock::time_point busy_until{};
    };
    struct NameHash {
        size_t operator()(const std::pair<int, uint64_t>& k) const {
            return std::hash<uint64_t>()(k.second * 31 + static_cast<uint64_t>(k.first));
        }
    };
    std::mutex mu;
    std::map<int, Jvm> jvms;
    uint64_t next_id = 1;
    // (pid, Method*) -> "pkg.Class.method(args)", "" when it could not be read
    LruCache<std::pair<int, uint64_t>, std::string, NameHash> names{1 << 16};
    // (pid, pc) -> the code blob holding pc (unwinding), and when it was read
    struct Blob {
        std::optional<HotSpotBlob> blob;
        std::chrono::steady_clock::time_point read;
    };
    LruCache<std::pair<int, uint64_t>, Blob, NameHash> blobs{1 << 14};

    // The id of the JVM at pid (0: none). Caller holds mu.
    uint64_t id_of(int pid) const {
        auto it = jvms.find(pid);
        return it == jvms.end() ? 0 : it->second.id;
    }
    // Whether reads of pid's /proc files wait for the gate to have room. Caller holds mu.
    bool busy(int pid) const {
        auto it = jvms.find(pid);
        return it != jvms.end() && std::chrono::steady_clock::now() < it->second.busy_until;
    }
    // A read of the JVM `id` at pid was refused by the gate. Caller holds mu.
    void refused(int pid, uint64_t id) {
        auto it = jvms.find(pid);
        if (it != jvms.end() && it->second.id == id)
            it->second.busy_until = std::chrono::steady_clock::now() + kBusyRetry;
    }
    static constexpr auto kBusyRetry = std::chrono::seconds(5);
    // The names and blobs of pid. Caller holds mu.
    void forget_entries(int pid) {
        std::vector<std::pair<int, uint64_t>> keys;
        names.for_each([&](const auto& k, const auto&) {
            if (k.first == pid) keys.push_back(k);
        });
        for (const auto& k : keys) names.erase(k);
        keys.clear();
        blobs.for_each([&](const auto& k, const auto&) {
            if (k.first == pid) keys.push_back(k);
        });
        for (const auto& k : keys) blobs.erase(k);
    }
};

void Symbolizer::watch_jvm(int pid, bool attach) {
    {
        std::lock_guard lock(java_->mu);
        auto [it, fresh] = java_->jvms.try_emplace(pid);
        if (fresh) it->second.id = java_->next_id++;
    }
    java_layout(pid, nullptr);  // read in the background from now on
    if (attach) perf_maps_.watch_jvm(pid);
}

std::shared_ptr<const HotSpotLayout> Symbolizer::java_layout(int pid, bool* pending) {
    constexpr int kMaxFailures = 5;
    constexpr auto kRetry = std::chrono::seconds(5);
    uint64_t id = 0;
    {
        std::lock_guard lock(java_->mu);
        auto it = java_->jvms.find(pid);
        if (it == java_->jvms.end()) return nullptr;
        if (it->second.layout) return it->second.layout;
        id = it->second.id;
        if (it->second.failures >= kMaxFailures ||
            (it->second.failures > 0 &&
             std::chrono::steady_clock::now() - it->second.failed < kRetry) ||
            java_->busy(pid))
            return nullptr;
    }
    const std::string job = "hotspot:" + std::to_string(pid) + ':' + std::to_string(id);
    auto wait = wait_for(job);
    if (!wait) return nullptr;  // reading it is stuck: its frames stay unnamed
    auto load = [java = java_, proc = proc_, pid, id, max_bytes = max_file_bytes(), gate = gate_] {
        bool busy = false;
        auto layout = hotspot_layout_of(proc, pid, max_bytes, gate, &busy);
        std::lock_guard lock(java->mu);
        auto it = java->jvms.find(pid);
        if (it == java->jvms.end() || it->second.id != id) return;
        if (!layout && busy) {
            // Not the JVM's fault: read again when the gate has room, no failure counted.
            java->refused(pid, id);
            return;
        }
        if (layout) {
            it->second.layout = std::make_shared<const HotSpotLayout>(*layout);
            spdlog::debug("pid {}: the JVM's interpreter is at {:#x}-{:#x}", pid,
                          layout->interpreter_lo, layout->interpreter_hi);
            return;
        }
        if (++it->second.failures == kMaxFailures || it->second.error != layout.error().message) {
            spdlog::info(
                "pid {}: the JVM's structures cannot be read ({}); its interpreted "
                "frames stay unnamed",
                pid, layout.error().message);
        }
        it->second.error = layout.error().message;
        it->second.failed = std::chrono::steady_clock::now();
    };
    if (loader_.run(job, std::move(load), pending ? *wait : std::chrono::milliseconds(0)) ==
        BoundedLoader::Outcome::kWaiting) {
        if (pending) *pending = true;
        return nullptr;
    }
    std::lock_guard lock(java_->mu);
    auto it = java_->jvms.find(pid);
    return it == java_->jvms.end() ? nullptr : it->second.layout;
}

std::optional<std::pair<uint64_t, uint64_t>> Symbolizer::java_interpreter(int pid, bool* pending) {
    auto layout = java_layout(pid, pending);
    if (!layout) return std::nullopt;
    return std::make_pair(layout->interpreter_lo, layout->interpreter_hi);
}

static std::string hex_key(const char* kind, int pid, uint64_t address) {
    char hex[32];
    std::snprintf(hex, sizeof hex, "%llx", static_cast<unsigned long long>(address));
    return std::string(kind) + ":" + std::to_string(pid) + ":" + hex;
}

std::optional<HotSpotBlob> Symbolizer::java_blob(int pid, uint64_t pc, bool* pending) {
    // A blob freed and its code cache space reused: read anew after this long.
    constexpr auto kFresh = std::chrono::seconds(2);
    auto layout = java_layout(pid, pending);
    if (!layout || layout->heaps.empty()) return std::nullopt;
    const auto key = std::make_pair(pid, pc);
    auto known = [&]() -> std::optional<std::optional<HotSpotBlob>> {
        std::lock_guard lock(java_->mu);
        if (auto* b = java_->blobs.get(key);
            b && std::chrono::steady_clock::now() - b->read < kFresh)
            return b->blob;
        return std::nullopt;
    };
    if (auto blob = known()) return *blob;
    {
        std::lock_guard lock(java_->mu);
        if (java_->busy(pid)) return std::nullopt;  // as without the layout, until then
    }
    const std::string job = hex_key("javacode", pid, pc);
    auto wait = wait_for(job);
    if (!wait) return std::nullopt;  // reading its code cache is stuck: no blob
    // The code cache is read on the loader: a process in trouble may block its reader.
    uint64_t id = 0;
    {
        std::lock_guard lock(java_->mu);
        id = java_->id_of(pid);
    }
    auto load = [java = java_, proc = proc_, pid, id, pc, layout, key, gate = gate_] {
        // /proc/PID/mem takes the memory map's lock: read only when the gate admits it.
        auto flight = gate(pid);
        if (!flight) {
            refuse_file(Refusal::kBusy, proc.root() + "/" + std::to_string(pid) + "/mem (JVM code)",
                        "reads of /proc files of its process or user (or of all) are held up "
                        "already; its compiled Java frames are unwound and named when they are "
                        "not");
            std::lock_guard lock(java->mu);
            java->refused(pid, id);
            return;
        }
        Java::Blob b{hotspot_blob(process_memory(proc, pid), *layout, pc),
                     std::chrono::steady_clock::now()};
        flight.reset();
        std::lock_guard lock(java->mu);
        if (java->id_of(pid) == id) java->blobs.put(key, b);
    };
    if (loader_.run(job, std::move(load), *wait) == BoundedLoader::Outcome::kWaiting) {
        if (pending) *pending = true;
        return std::nullopt;
    }
    if (auto blob = known()) return *blob;
    return std::nullopt;
}

void Symbolizer::name_java_frame(int pid, uint64_t key_address, const std::string& job,
                                 const JavaNamer& read, Frame& frame) {
    const auto key = std::make_pair(pid, key_address);
    auto known = [&] {
        std::lock_guard lock(java_->mu);
        if (auto* name = java_->names.get(key)) {
            frame.symbol = *name;
            return true;
        }
        return false;
    };
    if (known()) return;
    bool pending = false;
    auto layout = java_layout(pid, &pending);
    frame.pending |= pending;
    if (!layout) return;
    {
        std::lock_guard lock(java_->mu);
        if (java_->busy(pid)) return;  // unnamed, as without the layout, until then
    }
    auto wait = wait_for(job);
    if (!wait) return;
    // The process's memory is read on the loader: a process in trouble may hold its mm lock.
    uint64_t id = 0;
    {
        std::lock_guard lock(java_->mu);
        id = java_->id_of(pid);
    }
    auto load = [java = java_, proc = proc_, pid, id, layout, key, read, gate = gate_] {
        // /proc/PID/mem takes the memory map's lock: read only when the gate admits it; a
        // refused name is not kept, so that a later symbolization asks for it again.
        auto flight = gate(pid);
        if (!flight) {
            refuse_file(Refusal::kBusy,
                        proc.root() + "/" + std::to_string(pid) + "/mem (Java methods)",
                        "reads of /proc files of its process or user (or of all) are held up "
                        "already; its Java frames stay unnamed until they are not");
            std::lock_guard lock(java->mu);
            java->refused(pid, id);
            return;
        }
        auto name = read(process_memory(proc, pid), *layout);
        flight.reset();
        std::lock_guard lock(java->mu);
        if (java->id_of(pid) == id)
            java->names.put(key, name ? shown_text(*name, kMaxShownName) : std::string());
    };
    if (loader_.run(job, std::move(load), *wait) == BoundedLoader::Outcome::kWaiting) {
        frame.pending = true;
        return;
    }
    known();
}

void Symbolizer::name_java_blob(int pid, uint64_t address, Frame& frame) {
    // Keyed apart from the Method* names: code addresses with bit 62 set.
    name_java_frame(
        pid, address | (uint64_t{1} << 62), hex_key("javablob", pid, address),
        [address](const JvmMemory& mem, const HotSpotLayout& layout) -> std::optional<std::string> {
            if (layout.heaps.empty()) return std::nullopt;
            auto blob = hotspot_blob(mem, layout, address);
            if (!blob) return std::nullopt;
            if (!blob->nmethod) {  // a stub: the call stub, an adapter, a runtime stub
                if (blob->name.empty()) return std::nullopt;
                return std::optional<std::string>(blob->name);
            }
            return hotspot_method_name(mem, layout, blob->method);
        },
        frame);
}

void Symbolizer::name_java_method(int pid, uint64_t address, Frame& frame) {
    // A return address's lookup is one below it: the Method* is 8-byte aligned.
    const uint64_t method = ((address & ~kJavaMethodTag) + 7) & ~uint64_t{7};
    frame.module = "[java]";
    frame.module_offset = 0;
    name_java_frame(
        pid, method, hex_key("java", pid, method),
        [method](const JvmMemory& mem, const HotSpotLayout& layout) {
            return hotspot_method_name(mem, layout, method);
        },
        frame);
}

uint64_t Symbolizer::perf_map_generation(int pid) {
    return perf_maps_.generation(pid);
}

std::optional<PerfMap::Symbol> Symbolizer::jit_blob(int pid, uint64_t addr, bool* pending) {
    return perf_maps_.find(pid, addr, true, pending);
}

void Symbolizer::forget_process(int pid) {
    perf_maps_.forget(pid);
    process_maps_.forget(pid);
    {
        // Its names and blobs too: another JVM at this pid (reused, or after an exec) has
        // other methods at the same addresses.
        std::lock_guard lock(java_->mu);
        java_->jvms.erase(pid);
        java_->forget_entries(pid);
    }
    std::lock_guard lock(shared_->mu);
    auto& m = shared_->mappings;
    m.erase(m.lower_bound({pid, 0, 0, 0, 0, ""}), m.lower_bound({pid + 1, 0, 0, 0, 0, ""}));
}

size_t Symbolizer::cached_files() const {
    std::lock_guard lock(shared_->mu);
    // Distinct parsed files, not identities: copies sharing content count once.
    return shared_->files.size();
}

}  // namespace leakwatch
