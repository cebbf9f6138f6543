#include "symbols/hotspot.h"

#include <elf.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <unordered_map>

namespace leakwatch {

namespace {

// Bounds on what a JVM's tables may make leakwatchd read.
constexpr uint64_t kMaxEntries = 1 << 14;  // JDK 11-25 have under 1,000 of each
constexpr uint64_t kMaxStride = 256;
constexpr size_t kMaxName = 128;     // a type or field name in the tables
constexpr size_t kMaxSymbol = 1024;  // a class, method or signature Symbol
constexpr uint64_t kMaxDynsym = 16 << 20;
constexpr uint64_t kMaxClassSize = 4096;  // a sane sizeof of the classes read

template <class T>
bool read_value(const JvmMemory& mem, uint64_t addr, T& out) {
    return mem(addr, &out, sizeof out);
}

// A NUL-terminated string of at most kMaxName bytes.
std::optional<std::string> read_cstring(const JvmMemory& mem, uint64_t addr) {
    if (addr == 0) return std::nullopt;
    std::string out;
    char buf[32];
    while (out.size() < kMaxName) {
        // Reads stop at a page end: a string near the end of a mapping is read whole.
        size_t len = std::min<uint64_t>(sizeof buf, 4096 - (addr + out.size()) % 4096);
        // What follows a string may not be readable (memory that is not a process's): the
        // last bytes are read one at a time.
        if (!mem(addr + out.size(), buf, len)) {
            len = 1;
            if (!mem(addr + out.size(), buf, len)) return std::nullopt;
        }
        const void* nul = std::memchr(buf, 0, len);
        if (nul) {
            out.append(buf, static_cast<const char*>(nul) - buf);
            return out;
        }
        out.append(buf, len);
    }
    return std::nullopt;
}

struct Tables {
    // "Type::field" -> offset (or, for a static field, its address)
    std::unordered_map<std::string, uint64_t> fields;
    std::unordered_map<std::string, uint64_t> statics;
    std::unordered_map<std::string, uint64_t> sizes;  // type -> size
};

Result<uint64_t> symbol_value(const JvmMemory& mem, const std::map<std::string, uint64_t>& syms,
                              uint64_t bias, const std::string& name) {
    auto it = syms.find(name);
    if (it == syms.end()) return fail("libjvm.so does not export " + name);
    uint64_t v = 0;
    if (!read_value(mem, bias + it->second, v)) return fail("cannot read " + name);
    return v;
}

Result<Tables> read_tables(const JvmMemory& mem, const std::map<std::string, uint64_t>& syms,
                           uint64_t bias) {
    Tables t;
    auto get = [&](const std::string& name) { return symbol_value(mem, syms, bias, name); };
    auto structs = get("gHotSpotVMStructs");
    auto s_stride = get("gHotSpotVMStructEntryArrayStride");
    auto s_type = get("gHotSpotVMStructEntryTypeNameOffset");
    auto s_field = get("gHotSpotVMStructEntryFieldNameOffset");
    auto s_static = get("gHotSpotVMStructEntryIsStaticOffset");
    auto s_offset = get("gHotSpotVMStructEntryOffsetOffset");
    auto s_address = get("gHotSpotVMStructEntryAddressOffset");
    auto types = get("gHotSpotVMTypes");
    auto t_stride = get("gHotSpotVMTypeEntryArrayStride");
    auto t_name = get("gHotSpotVMTypeEntryTypeNameOffset");
    auto t_size = get("gHotSpotVMTypeEntrySizeOffset");
    for (auto* r : {&structs, &s_stride, &s_type, &s_field, &s_static, &s_offset, &s_address,
                    &types, &t_stride, &t_name, &t_size})
        if (!*r) return std::unexpected(r->error());
    for (uint64_t v : {*s_stride, *t_stride})
        if (v == 0 || v > kMaxStride) return fail("VMStructs: a stride of " + std::to_string(v));
    for (uint64_t v : {*s_type, *s_field, *s_static, *s_offset, *s_address})
        if (v + 8 > *s_stride) return fail("VMStructs: a field outside its entry");
    for (uint64_t v : {*t_name, *t_size})
        if (v + 8 > *t_stride) return fail("VMStructs: a field outside its type entry");

    std::unordered_map<uint64_t, std::string> names;  // string pointers repeat
    auto name_at = [&](uint64_t p) -> std::optional<std::string> {
        if (auto it = names.find(p); it != names.end()) return it->second;
        auto s = read_cstring(mem, p);
        if (s) names.emplace(p, *s);
        return s;
    };
    std::vector<uint8_t> entry(kMaxStride);
    auto word = [&](uint64_t off) {
        uint64_t v = 0;
        std::memcpy(&v, entry.data() + off, sizeof v);
        return v;
    };
    uint64_t n = 0;
    for (; n < kMaxEntries; n++) {
        if (!mem(*structs + n * *s_stride, entry.data(), *s_stride))
            return fail("VMStructs: entry " + std::to_string(n) + " cannot be read");
        uint64_t type = word(*s_type);
        if (type == 0) break;
        auto tn = name_at(type);
        auto fn = name_at(word(*s_field));
        if (!tn || !fn) continue;
        int32_t is_static = 0;
        std::memcpy(&is_static, entry.data() + *s_static, sizeof is_static);
        const std::string key = *tn + "::" + *fn;
        if (is_static)
            t.statics[key] = word(*s_address);
        else
            t.fields[key] = word(*s_offset);
    }
    if (n == kMaxEntries) return fail("VMStructs: no end within " + std::to_string(n) + " entries");
    for (n = 0; n < kMaxEntries; n++) {
        if (!mem(*types + n * *t_stride, entry.data(), *t_stride))
            return fail("VMTypes: entry " + std::to_string(n) + " cannot be read");
        uint64_t type = word(*t_name);
        if (type == 0) break;
        if (auto tn = name_at(type)) t.sizes[*tn] = word(*t_size);
    }
    if (n == kMaxEntries) return fail("VMTypes: no end within " + std::to_string(n) + " entries");
    return t;
}

// A Symbol's text: a u2 length, then the bytes.
std::optional<std::string> read_symbol(const JvmMemory& mem, const HotSpotLayout& l,
                                       uint64_t symbol) {
    if (symbol == 0 || (symbol & 7)) return std::nullopt;
    uint16_t len = 0;
    if (!read_value(mem, symbol + l.symbol_length, len) || len == 0 || len > kMaxSymbol)
        return std::nullopt;
    std::string s(len, '\0');
    if (!mem(symbol + l.symbol_body, s.data(), len)) return std::nullopt;
    return s;
}

std::optional<std::string> java_type(std::string_view& d) {
    int dims = 0;
    while (!d.empty() && d.front() == '[') {
        dims++;
        d.remove_prefix(1);
    }
    if (d.empty() || dims > 255) return std::nullopt;
    std::string out;
    char c = d.front();
    d.remove_prefix(1);
    switch (c) {
        case 'B':
            out = "byte";
            break;
        case 'C':
            out = "char";
            break;
        case 'D':
            out = "double";
            break;
        case 'F':
            out = "float";
            break;
        case 'I':
            out = "int";
            break;
        case 'J':
            out = "long";
            break;
        case 'S':
            out = "short";
            break;
        case 'Z':
            out = "boolean";
            break;
        case 'V':
            out = "void";
            break;
        case 'L': {
            size_t end = d.find(';');
            if (end == std::string_view::npos || end == 0) return std::nullopt;
            out = std::string(d.substr(0, end));
            for (char& ch : out)
                if (ch == '/') ch = '.';
            d.remove_prefix(end + 1);
            break;
        }
        default:
            return std::nullopt;
    }
    for (int i = 0; i < dims; i++) out += "[]";
    return out;
}

bool printable(std::string_view s) {
    for (unsigned char c : s)
        if (c < 0x20 || c == 0x7f) return false;
    return true;
}

uint64_t field_or(const Tables& t, std::initializer_list<const char*> names, uint64_t none) {
    for (const char* n : names)
        if (auto it = t.fields.find(n); it != t.fields.end()) return it->second;
    return none;
}

// The code heaps (CodeCache::_heaps, a GrowableArray<CodeHeap*>*), when the tables describe
// them; none otherwise (compiled frames are then walked as the perf map allows).
void read_code_heaps(const JvmMemory& mem, const Tables& t, HotSpotLayout& l) {
    constexpr uint64_t kNone = UINT64_MAX;
    auto heaps = t.statics.find("CodeCache::_heaps");
    const uint64_t len_at =
        field_or(t, {"GrowableArrayBase::_len", "GenericGrowableArray::_len"}, kNone);
    const uint64_t data_at = field_or(t, {"GrowableArray<int>::_data"}, kNone);
    const uint64_t memory = field_or(t, {"CodeHeap::_memory"}, kNone);
    const uint64_t segmap = field_or(t, {"CodeHeap::_segmap"}, kNone);
    const uint64_t log2 = field_or(t, {"CodeHeap::_log2_segment_size"}, kNone);
    const uint64_t low = field_or(t, {"VirtualSpace::_low_boundary"}, kNone);
    const uint64_t high = field_or(t, {"VirtualSpace::_high_boundary"}, kNone);
    const uint64_t frame_size = field_or(t, {"CodeBlob::_frame_size"}, kNone);
    const uint64_t name = field_or(t, {"CodeBlob::_name"}, kNone);
    const uint64_t method = field_or(t, {"CompiledMethod::_method", "nmethod::_method"}, kNone);
    auto block = t.sizes.find("HeapBlock");
    for (uint64_t v : {len_at, data_at, memory, segmap, log2, low, high, frame_size, name, method})
        if (v == kNone || v > kMaxClassSize) return;
    if (heaps == t.statics.end() || block == t.sizes.end() || block->second > kMaxClassSize) return;
    uint64_t array = 0, data = 0;
    int32_t n = 0;
    if (!read_value(mem, heaps->second, array) || array == 0 ||
        !read_value(mem, array + len_at, n) || n <= 0 || n > 8 ||
        !read_value(mem, array + data_at, data) || data == 0)
        return;
    std::vector<HotSpotLayout::CodeHeap> out;
    for (int32_t i = 0; i < n; i++) {
        uint64_t heap = 0;
        HotSpotLayout::CodeHeap h;
        int32_t shift = 0;
        if (!read_value(mem, data + 8ull * static_cast<uint64_t>(i), heap) || heap == 0 ||
            !read_value(mem, heap + memory + low, h.lo) ||
            !read_value(mem, heap + memory + high, h.hi) ||
            !read_value(mem, heap + segmap + low, h.segmap) ||
            !read_value(mem, heap + log2, shift) || shift < 3 || shift > 16 || h.lo >= h.hi ||
            h.segmap == 0)
            return;
        h.log2_segment = static_cast<uint32_t>(shift);
        out.push_back(h);
    }
    l.heaps = std::move(out);
    l.heap_block = static_cast<uint32_t>(block->second);
    l.blob_frame_size = static_cast<uint32_t>(frame_size);
    l.blob_name = static_cast<uint32_t>(name);
    l.blob_method = static_cast<uint32_t>(method);
}

}  // namespace

std::optional<HotSpotBlob> hotspot_blob(const JvmMemory& mem, const HotSpotLayout& l, uint64_t pc) {
    for (const auto& h : l.heaps) {
        if (pc < h.lo || pc >= h.hi) continue;
        uint64_t i = (pc - h.lo) >> h.log2_segment;
        for (int step = 0;; step++) {
            uint8_t back = 0;
            if (step == 32 || !read_value(mem, h.segmap + i, back) || back == 0xff) return {};
            if (back == 0) break;
            if (back > i) return {};
            i -= back;
        }
        HotSpotBlob b;
        b.address = h.lo + (i << h.log2_segment) + l.heap_block;
        uint64_t name = 0;
        if (!read_value(mem, b.address + l.blob_frame_size, b.frame_size) ||
            !read_value(mem, b.address + l.blob_name, name) || b.frame_size < 0 ||
            b.frame_size > (1 << 17))
            return {};
        if (auto text = read_cstring(mem, name); text && printable(*text)) {
            b.name = std::move(*text);
            b.nmethod = b.name == "nmethod" || b.name == "native nmethod";
        }
        if (b.nmethod && !read_value(mem, b.address + l.blob_method, b.method)) return {};
        return b;
    }
    return {};
}

std::optional<std::string> java_parameters(std::string_view d) {
    if (d.empty() || d.front() != '(') return std::nullopt;
    d.remove_prefix(1);
    std::string out = "(";
    bool first = true;
    while (!d.empty() && d.front() != ')') {
        auto t = java_type(d);
        if (!t || *t == "void") return std::nullopt;
        if (!first) out += ", ";
        out += *t;
        first = false;
    }
    if (d.empty()) return std::nullopt;
    return out + ")";
}

Result<std::map<std::string, uint64_t>> hotspot_symbols(const OpenFile& f) {
    auto hdr = read_at(f, 0, sizeof(Elf64_Ehdr));
    if (!hdr || hdr->size() < sizeof(Elf64_Ehdr)) return fail(f.path() + ": no ELF header");
    Elf64_Ehdr eh;
    std::memcpy(&eh, hdr->data(), sizeof eh);
    if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
        eh.e_shentsize != sizeof(Elf64_Shdr) || eh.e_shnum == 0 || eh.e_shnum > 4096)
        return fail(f.path() + ": not a 64-bit ELF file with sections");
    auto sh = read_at(f, eh.e_shoff, size_t{eh.e_shnum} * sizeof(Elf64_Shdr));
    if (!sh || sh->size() < size_t{eh.e_shnum} * sizeof(Elf64_Shdr))
        return fail(f.path() + ": section headers cannot be read");
    std::vector<Elf64_Shdr> sections(eh.e_shnum);
    std::memcpy(sections.data(), sh->data(), sh->size());
    for (const auto& s : sections) {
        if (s.sh_type != SHT_DYNSYM || s.sh_link >= sections.size()) continue;
        const auto& strs = sections[s.sh_link];
        if (s.sh_size > kMaxDynsym || strs.sh_size > kMaxDynsym ||
            s.sh_entsize != sizeof(Elf64_Sym))
            return fail(f.path() + ": a malformed or huge .dynsym");
        auto syms = read_at(f, s.sh_offset, s.sh_size);
        auto names = read_at(f, strs.sh_offset, strs.sh_size);
        if (!syms || !names || syms->size() < s.sh_size || names->size() < strs.sh_size)
            return fail(f.path() + ": .dynsym cannot be read");
        std::map<std::string, uint64_t> out;
        for (size_t i = 0; i + sizeof(Elf64_Sym) <= syms->size(); i += sizeof(Elf64_Sym)) {
            Elf64_Sym sym;
            std::memcpy(&sym, syms->data() + i, sizeof sym);
            if (sym.st_name >= names->size() || sym.st_shndx == SHN_UNDEF) continue;
            const char* name = names->data() + sym.st_name;
            size_t len = strnlen(name, names->size() - sym.st_name);
            std::string_view n(name, len);
            if (n.starts_with("gHotSpot")) out.emplace(std::string(n), sym.st_value);
        }
        if (out.empty()) return fail(f.path() + ": exports no gHotSpot tables");
        return out;
    }
    return fail(f.path() + ": no .dynsym");
}

Result<HotSpotLayout> read_hotspot_layout(const JvmMemory& mem,
                                          const std::map<std::string, uint64_t>& symbols,
                                          uint64_t bias) {
    auto tables = read_tables(mem, symbols, bias);
    if (!tables) return std::unexpected(tables.error());
    const Tables& t = *tables;
    HotSpotLayout l;
    std::string missing;
    // A field's offset, checked to lie within its class.
    auto field = [&](const std::string& type, const std::vector<std::string>& names, uint32_t& out,
                     uint64_t width) {
        for (const auto& n : names) {
            auto it = t.fields.find(type + "::" + n);
            if (it == t.fields.end()) continue;
            auto size = t.sizes.find(type);
            uint64_t limit = size != t.sizes.end() ? size->second : kMaxClassSize;
            if (limit > kMaxClassSize || it->second + width > limit) break;
            out = static_cast<uint32_t>(it->second);
            return;
        }
        missing += (missing.empty() ? "" : ", ") + type + "::" + names.front();
    };
    field("Method", {"_constMethod"}, l.method_const, 8);
    field("ConstMethod", {"_constants"}, l.const_constants, 8);
    field("ConstMethod", {"_name_index"}, l.const_name, 2);
    field("ConstMethod", {"_signature_index"}, l.const_signature, 2);
    field("ConstantPool", {"_pool_holder"}, l.pool_holder, 8);
    field("Klass", {"_name"}, l.klass_name, 8);
    field("Symbol", {"_length"}, l.symbol_length, 2);
    // Symbol's body is a one-byte array declared last: its offset may equal the class size
    // minus padding; checked against a byte.
    field("Symbol", {"_body"}, l.symbol_body, 1);
    if (auto it = t.sizes.find("ConstantPool"); it != t.sizes.end() && it->second <= kMaxClassSize)
        l.pool_size = static_cast<uint32_t>(it->second);
    else
        missing += (missing.empty() ? "" : ", ") + std::string("sizeof(ConstantPool)");
    if (!missing.empty()) return fail("VMStructs: no " + missing);

    read_code_heaps(mem, t, l);

    // The interpreter's code: AbstractInterpreter::_code (a StubQueue*), its buffer and limit.
    auto code = t.statics.find("AbstractInterpreter::_code");
    auto buffer = t.fields.find("StubQueue::_stub_buffer");
    auto limit = t.fields.find("StubQueue::_buffer_limit");
    if (code == t.statics.end() || buffer == t.fields.end() || limit == t.fields.end())
        return fail("VMStructs: no AbstractInterpreter::_code or StubQueue fields");
    uint64_t queue = 0, lo = 0;
    int32_t size = 0;
    if (!read_value(mem, code->second, queue) || queue == 0 ||
        !read_value(mem, queue + buffer->second, lo) ||
        !read_value(mem, queue + limit->second, size) || lo == 0 || size <= 0)
        return fail("the interpreter's code is not set up yet");
    l.interpreter_lo = lo;
    l.interpreter_hi = lo + static_cast<uint64_t>(size);
    return l;
}

std::optional<std::string> hotspot_method_name(const JvmMemory& mem, const HotSpotLayout& l,
                                               uint64_t method) {
    if (method == 0 || (method & 7)) return std::nullopt;
    uint64_t cm = 0, cp = 0, holder = 0, klass_name = 0;
    if (!read_value(mem, method + l.method_const, cm) || cm == 0 || (cm & 7) ||
        !read_value(mem, cm + l.const_constants, cp) || cp == 0 || (cp & 7) ||
        !read_value(mem, cp + l.pool_holder, holder) || holder == 0 || (holder & 7) ||
        !read_value(mem, holder + l.klass_name, klass_name))
        return std::nullopt;
    uint16_t name_index = 0, sig_index = 0;
    if (!read_value(mem, cm + l.const_name, name_index) ||
        !read_value(mem, cm + l.const_signature, sig_index))
        return std::nullopt;
    // The pool's slots hold Symbol pointers, tagged in their low bit.
    uint64_t name_sym = 0, sig_sym = 0;
    if (!read_value(mem, cp + l.pool_size + 8ull * name_index, name_sym) ||
        !read_value(mem, cp + l.pool_size + 8ull * sig_index, sig_sym))
        return std::nullopt;
    auto klass = read_symbol(mem, l, klass_name);
    auto name = read_symbol(mem, l, name_sym & ~uint64_t{1});
    auto sig = read_symbol(mem, l, sig_sym & ~uint64_t{1});
    if (!klass || !name || !sig || !printable(*klass) || !printable(*name)) return std::nullopt;
    auto params = java_parameters(*sig);
    if (!params) return std::nullopt;
    std::string out = *klass;
    for (char& c : out)
        if (c == '/') c = '.';
    return out + "." + *name + *params;
}

JvmMemory process_memory(const ProcReader& proc, int pid) {
    const std::string path = proc.root() + "/" + std::to_string(pid) + "/mem";
    return [path](uint64_t addr, void* out, size_t len) {
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) return false;
        ssize_t n = ::pread(fd, out, len, static_cast<off_t>(addr));
        ::close(fd);
        return n == static_cast<ssize_t>(len);
    };
}

Result<HotSpotLayout> hotspot_layout_of(const ProcReader& proc, int pid, uint64_t max_file_bytes,
                                        const ProcGate& gate, bool* busy) {
    // Each read below that takes the process's memory map lock (its maps, a map_files link, its
    // memory) runs on a symbolizer loader thread, and a process can hold that lock up forever:
    // with a `gate`, a read is done only when the gate admits it, and a refusal leaves the
    // layout unread for now (`busy`), not failed.
    const std::string where = proc.root() + "/" + std::to_string(pid);
    auto admit = [&](const char* file) -> std::optional<std::optional<std::shared_ptr<void>>> {
        if (!gate) return std::optional<std::shared_ptr<void>>();
        auto flight = gate(pid);
        if (flight) return flight;
        if (busy) *busy = true;
        refuse_file(Refusal::kBusy, where + "/" + file + " (the JVM's structures)",
                    "reads of /proc files of its process or user (or of all) are held up "
                    "already; its Java frames stay unnamed until they are not");
        return std::nullopt;
    };
    auto refused = [&](const char* file) {
        return fail(where + "/" + file +
                    ": reads of the process's /proc files are held up (refused)");
    };
    Result<std::vector<MapEntry>> maps = fail("");
    {
        auto flight = admit("maps");
        if (!flight) return refused("maps");
        maps = proc.maps(pid);
    }
    if (!maps) return std::unexpected(maps.error());
    const MapEntry* jvm = nullptr;
    for (const auto& m : *maps)
        if (m.path.ends_with("/libjvm.so") && (jvm == nullptr || m.start < jvm->start)) jvm = &m;
    if (jvm == nullptr) return fail("pid " + std::to_string(pid) + " maps no libjvm.so");
    // The path first (no lock of the process's), map_files only when the gate admits it.
    bool open_refused = false;
    ProcGate noting;
    if (gate)
        noting = [&](int p) {
            auto flight = gate(p);
            open_refused = !flight;
            return flight;
        };
    auto file = open_mapped(proc, pid, *jvm, max_file_bytes, noting);
    if (!file) {
        if (open_refused && busy) *busy = true;
        return std::unexpected(file.error());
    }
    auto syms = hotspot_symbols(*file);
    if (!syms) return std::unexpected(syms.error());
    // A shared library's first mapping is its file offset 0, at virtual address 0.
    if (jvm->offset != 0) return fail(jvm->path + ": its first mapping is not at offset 0");
    // One open of /proc/PID/mem for the whole reading, admitted once.
    auto flight = admit("mem");
    if (!flight) return refused("mem");
    const std::string path = where + "/mem";
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail_errno(path, errno);
    JvmMemory mem = [fd](uint64_t addr, void* out, size_t len) {
        return ::pread(fd, out, len, static_cast<off_t>(addr)) == static_cast<ssize_t>(len);
    };
    auto layout = read_hotspot_layout(mem, *syms, jvm->start);
    ::close(fd);
    return layout;
}

}  // namespace leakwatch
