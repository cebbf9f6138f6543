#include "symbols/python.h"

#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <unistd.h>

#include <array>
#include <cstring>

#include "proc/files.h"
#include "util/text.h"

namespace leakwatch {

namespace {

using Instr = PythonLayout::Instr;
using Group = PythonLayout::Group;

// Offsets from each version's headers (offsetof, equal to the DWARF of the pyenv builds
// 3.9.18, 3.10.13, 3.11.7, 3.12.1, 3.13.0 and of Debian 12's 3.11.2), x86-64. 3.13's equal its
// own _Py_DebugOffsets.
constexpr std::array<PythonLayout, 5> kLayouts = {{
    {9,  656, 588, 176, 24,  0xffff, 32, 24, 104, 0, 0, Instr::kLastiBytes, Group::kEach,
     40, 104, 112, 0,   120, 48,     72},
    {10,           672, 588, 176, 24, 0xffff, 32, 24, 96, 0, 0, Instr::kLastiUnits,
     Group::kEach, 40,  104, 112, 0,  120,    48, 72},
    {11, 166688, 596, 152, 56,  8,  32, 48, 56, 184, 68, Instr::kPointer, Group::kIsEntry,
     72, 112,    120, 128, 136, 48, 72},
    {12, 459944,          1548,         136, 56,  0,   0,   8,   56, 192,
     70, Instr::kPointer, Group::kShim, 68,  112, 120, 128, 136, 40, 56},
    {13, 283320,          2164,         152, 72,  0xffff, 0,   8,   56, 200,
     70, Instr::kPointer, Group::kShim, 68,  112, 120,    128, 136, 40, 56},
}};

constexpr size_t kMaxName = 1024;            // code points of a name or file name read
constexpr size_t kMaxLineTable = 64 * 1024;  // bytes of a line table read
constexpr size_t kCodeHeader = 144;          // bytes of a code object compared for reuse

// The 3.X of a file name such as python3.11, python3.9d, libpython3.12.so.1.0; 0 when none.
int minor_from_name(const std::string& path) {
    std::string base = path.substr(path.rfind('/') == std::string::npos ? 0 : path.rfind('/') + 1);
    size_t at = base.find("python3.");
    if (at == std::string::npos) return 0;
    int minor = 0;
    size_t i = at + 8;
    for (; i < base.size() && i < at + 10 && base[i] >= '0' && base[i] <= '9'; i++)
        minor = minor * 10 + (base[i] - '0');
    return i > at + 8 ? minor : 0;
}

struct ElfRuntime {
    uint64_t runtime_vaddr = 0;
    uint64_t runtime_size = 0;
    std::optional<uint32_t> version;  // Py_Version (PY_VERSION_HEX), 3.11+
    std::vector<GElf_Phdr> loads;
};

std::optional<uint64_t> file_offset(const std::vector<GElf_Phdr>& loads, uint64_t vaddr) {
    for (const auto& ph : loads)
        if (vaddr >= ph.p_vaddr && vaddr < ph.p_vaddr + ph.p_filesz)
            return ph.p_offset + (vaddr - ph.p_vaddr);
    return std::nullopt;
}

// The _PyRuntime and Py_Version a file's dynamic symbols define; nullopt when it has no
// _PyRuntime (not CPython).
Result<std::optional<ElfRuntime>> read_runtime(const OpenFile& file) {
    static const bool initialized = elf_version(EV_CURRENT) != EV_NONE;
    if (!initialized) return fail("libelf: " + std::string(elf_errmsg(-1)));
    Elf* elf = elf_begin(file.fd(), ELF_C_READ, nullptr);
    if (elf == nullptr) return fail(file.path() + ": " + elf_errmsg(-1));
    ElfRuntime out;
    bool found = false;
    uint64_t version_vaddr = 0;
    size_t phnum = 0;
    if (elf_getphdrnum(elf, &phnum) == 0) {
        for (size_t i = 0; i < phnum; i++) {
            GElf_Phdr ph;
            if (gelf_getphdr(elf, static_cast<int>(i), &ph) != nullptr && ph.p_type == PT_LOAD)
                out.loads.push_back(ph);
        }
    }
    Elf_Scn* scn = nullptr;
    while ((scn = elf_nextscn(elf, scn)) != nullptr) {
        GElf_Shdr sh;
        if (gelf_getshdr(scn, &sh) == nullptr || sh.sh_type != SHT_DYNSYM || sh.sh_entsize == 0)
            continue;
        Elf_Data* data = elf_getdata(scn, nullptr);
        if (data == nullptr) continue;
        const size_t count = sh.sh_size / sh.sh_entsize;
        for (size_t i = 1; i < count; i++) {
            GElf_Sym sym;
            if (gelf_getsym(data, static_cast<int>(i), &sym) == nullptr) continue;
            if (sym.st_shndx == SHN_UNDEF || GELF_ST_TYPE(sym.st_info) != STT_OBJECT) continue;
            const char* name = elf_strptr(elf, sh.sh_link, sym.st_name);
            if (name == nullptr) continue;
            if (std::strcmp(name, "_PyRuntime") == 0) {
                out.runtime_vaddr = sym.st_value;
                out.runtime_size = sym.st_size;
                found = true;
            } else if (std::strcmp(name, "Py_Version") == 0 &&
                       (sym.st_size == 4 || sym.st_size == 8)) {  // unsigned long: 8
                version_vaddr = sym.st_value;
            }
        }
    }
    elf_end(elf);
    if (!found) return std::optional<ElfRuntime>();
    if (version_vaddr != 0) {
        if (auto off = file_offset(out.loads, version_vaddr)) {
            auto bytes = read_at(file, *off, 4);
            if (bytes && bytes->size() == 4) {
                uint32_t v = 0;
                std::memcpy(&v, bytes->data(), 4);
                out.version = v;
            }
        }
    }
    return std::optional<ElfRuntime>(std::move(out));
}

// Reads process memory: /proc/PID/mem, `length` bytes at `address`, all or an error.
class Memory {
  public:
    Memory(const ProcReader& proc, int pid) {
        std::string path = proc.root() + "/" + std::to_string(pid) + "/mem";
        fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    }
    ~Memory() {
        if (fd_ >= 0) ::close(fd_);
    }
    Memory(const Memory&) = delete;
    Memory& operator=(const Memory&) = delete;

    Result<std::string> read(uint64_t address, size_t length) const {
        if (fd_ < 0) return fail("cannot open the process's memory");
        if (address == 0 || address >= (1ull << 47) || length > (1ull << 47) - address)
            return fail("address out of the user range");
        std::string out(length, '\0');
        size_t done = 0;
        while (done < length) {
            ssize_t n =
                ::pread(fd_, out.data() + done, length - done, static_cast<off_t>(address + done));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return fail_errno("reading process memory", n < 0 ? errno : EIO);
            done += static_cast<size_t>(n);
        }
        return out;
    }
    Result<uint64_t> u64(uint64_t address) const {
        auto b = read(address, 8);
        if (!b) return std::unexpected(b.error());
        uint64_t v = 0;
        std::memcpy(&v, b->data(), 8);
        return v;
    }

  private:
    int fd_ = -1;
};

template <class T>
T field(const std::string& bytes, size_t off) {
    T v{};
    if (off + sizeof(T) <= bytes.size()) std::memcpy(&v, bytes.data() + off, sizeof(T));
    return v;
}

void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xc0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        if (cp >= 0xd800 && cp < 0xe000) cp = 0xfffd;  // a lone surrogate
        out += static_cast<char>(0xe0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x110000) {
        out += static_cast<char>(0xf0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
        append_utf8(out, 0xfffd);
    }
}

// A compact str object (code object names and file names are) as UTF-8, shown safely.
Result<std::string> read_str(const Memory& mem, const PythonLayout& layout, uint64_t address,
                             size_t max_bytes) {
    auto head = mem.read(address, 40);
    if (!head) return std::unexpected(head.error());
    const int64_t length = field<int64_t>(*head, 16);
    const uint32_t state = field<uint32_t>(*head, 32);
    const uint32_t kind = (state >> 2) & 7, compact = (state >> 5) & 1, ascii = (state >> 6) & 1;
    if (!compact || (kind != 1 && kind != 2 && kind != 4) || length < 0)
        return fail("not a compact str");
    const size_t n = std::min<size_t>(static_cast<size_t>(length), kMaxName);
    auto data = mem.read(address + (ascii ? layout.ascii_data : layout.compact_data), n * kind);
    if (!data) return std::unexpected(data.error());
    std::string out;
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = 0;
        std::memcpy(&cp, data->data() + i * kind, kind);  // little-endian
        append_utf8(out, cp);
    }
    return shown_text(out, max_bytes);
}

// Reads a varint of the 3.11+ location table: 6-bit groups, 0x40 for more.
uint32_t varint(const std::string& t, size_t& i) {
    uint32_t v = 0;
    for (int shift = 0; i < t.size() && shift < 32; shift += 6) {
        uint8_t b = static_cast<uint8_t>(t[i++]);
        v |= static_cast<uint32_t>(b & 0x3f) << shift;
        if (!(b & 0x40)) break;
    }
    return v;
}

int32_t svarint(const std::string& t, size_t& i) {
    uint32_t v = varint(t, i);
    return (v & 1) ? -static_cast<int32_t>(v >> 1) : static_cast<int32_t>(v >> 1);
}

// 3.9 co_lnotab: (byte offset increment, line increment) pairs.
int line_lnotab(const std::string& t, int first, int64_t byte_offset) {
    int line = first;
    int64_t addr = 0;
    for (size_t i = 0; i + 1 < t.size(); i += 2) {
        addr += static_cast<uint8_t>(t[i]);
        if (addr > byte_offset) break;
        line += static_cast<int8_t>(t[i + 1]);
    }
    return line;
}

// 3.10 co_linetable (PEP 626): (byte length, line delta; -128: no line) pairs.
int line_pep626(const std::string& t, int first, int64_t byte_offset) {
    int line = first;
    int64_t start = 0;
    for (size_t i = 0; i + 1 < t.size(); i += 2) {
        int64_t end = start + static_cast<uint8_t>(t[i]);
        int8_t delta = static_cast<int8_t>(t[i + 1]);
        int cur = 0;
        if (delta != -128) {
            line += delta;
            cur = line;
        }
        if (byte_offset >= start && byte_offset < end) return cur;
        start = end;
    }
    return 0;
}

// 3.11+ location table: entries of a head byte 1cccclll (code, length - 1 in code units).
int line_locations(const std::string& t, int first, int64_t index) {
    int line = first;
    int64_t addr = 0;
    size_t i = 0;
    while (i < t.size()) {
        uint8_t head = static_cast<uint8_t>(t[i++]);
        if (!(head & 0x80)) return 0;  // not an entry's start: a table we do not understand
        const int code = (head >> 3) & 15;
        const int64_t len = (head & 7) + 1;
        int delta = 0;
        if (code == 15) {
        } else if (code == 14) {
            delta = svarint(t, i);
            varint(t, i), varint(t, i), varint(t, i);
        } else if (code == 13) {
            delta = svarint(t, i);
        } else if (code >= 10) {
            delta = code - 10;
            i += 2;
        } else {
            i += 1;
        }
        line += delta;
        if (index >= addr && index < addr + len) return code == 15 ? 0 : line;
        addr += len;
    }
    return 0;
}

// 3.13's _Py_DebugOffsets (at _PyRuntime + 0): where each field this layout needs is, as
// byte offsets into that struct. Its layout changes between minor versions (3.14 inserted
// fields): only 3.13's is known.
struct DebugField {
    size_t at;
    uint16_t PythonLayout::*field;
};
constexpr size_t kDebugOffsetsSize = 584;
constexpr std::array<DebugField, 13> kDebugFields313 = {{
    {184, &PythonLayout::frame_off},       // thread_state.current_frame
    {192, &PythonLayout::thread_id_off},   // thread_state.thread_id
    {232, &PythonLayout::back_off},        // interpreter_frame.previous
    {240, &PythonLayout::code_off},        // interpreter_frame.executable
    {248, &PythonLayout::instr_off},       // interpreter_frame.instr_ptr
    {264, &PythonLayout::entry_off},       // interpreter_frame.owner
    {280, &PythonLayout::co_filename},     // code_object.filename
    {288, &PythonLayout::co_name},         // code_object.name
    {296, &PythonLayout::co_qualname},     // code_object.qualname
    {304, &PythonLayout::co_linetable},    // code_object.linetable
    {312, &PythonLayout::co_firstlineno},  // code_object.firstlineno
    {344, &PythonLayout::code_units_off},  // code_object.co_code_adaptive
    {560, &PythonLayout::ascii_data},      // unicode_object.asciiobject_size
}};

// The layout a 3.13 runtime describes in its _Py_DebugOffsets, over the table's (which has
// what the struct does not: the thread-state key, the shim's owner value). An error when the
// struct is not there or describes a build the table's other fields do not fit.
Result<PythonLayout> debug_offsets_layout(const OpenFile& file, const ElfRuntime& r,
                                          PythonLayout layout) {
    auto off = file_offset(r.loads, r.runtime_vaddr);
    if (!off) return fail("its _PyRuntime is not in the file");
    auto bytes = read_at(file, *off, kDebugOffsetsSize);
    if (!bytes || bytes->size() != kDebugOffsetsSize || bytes->compare(0, 8, "xdebugpy") != 0)
        return fail("its _PyRuntime has no _Py_DebugOffsets");
    const std::string& d = *bytes;
    if (((field<uint64_t>(d, 8) >> 16) & 0xff) != static_cast<uint64_t>(layout.minor))
        return fail("its _Py_DebugOffsets are of another version");
    if (field<uint64_t>(d, 16) != 0)
        return fail("it is a free-threaded build (its objects are laid out differently)");
    if (field<uint64_t>(d, 24) != r.runtime_size)
        return fail("its _Py_DebugOffsets give another size of _PyRuntime");
    for (const auto& f : kDebugFields313) {
        const uint64_t v = field<uint64_t>(d, f.at);
        if (v > 0xfff0) return fail("its _Py_DebugOffsets hold an offset out of range");
        layout.*f.field = static_cast<uint16_t>(v);
    }
    return layout;
}

}  // namespace

const PythonLayout* python_layout(int minor) {
    for (const auto& l : kLayouts)
        if (l.minor == minor) return &l;
    return nullptr;
}

std::optional<PythonRuntime> find_python(const ProcReader& proc, int pid,
                                         const std::vector<MapEntry>& maps, const std::string& exe,
                                         uint64_t max_file_bytes, const ProcGate& gate) {
    // The executable (Debian's python3.X has libpython linked in), then a libpython3.X.
    std::vector<const MapEntry*> candidates;
    for (const auto& m : maps) {
        if (m.path.empty() || m.path.front() != '/') continue;
        const bool lib = m.path.find("/libpython3.") != std::string::npos;
        if (m.path != exe && !lib) continue;
        bool seen = false;
        for (const MapEntry* c : candidates) seen |= c->inode == m.inode && c->path == m.path;
        if (!seen) candidates.insert(m.path == exe ? candidates.begin() : candidates.end(), &m);
    }
    for (const MapEntry* m : candidates) {
        auto file = open_mapped(proc, pid, *m, max_file_bytes, gate);
        if (!file) continue;
        auto runtime = read_runtime(*file);
        if (!runtime || !*runtime) continue;
        const ElfRuntime& r = **runtime;
        PythonRuntime out;
        out.module = m->path;
        out.minor =
            r.version ? static_cast<int>((*r.version >> 16) & 0xff) : minor_from_name(m->path);
        if (r.version && (*r.version >> 24) != 3) {
            out.why_unsupported =
                "Python " + std::to_string(*r.version >> 24) + " is not CPython 3";
            return out;
        }
        // Where the file's address 0 is in the process: from the mapping of file offset 0's
        // segment, whichever mapping of the file is found.
        uint64_t bias = 0;
        bool placed = false;
        for (const auto& mm : maps) {
            if (mm.inode != m->inode || mm.path != m->path) continue;
            for (const auto& ph : r.loads) {
                if (mm.offset >= ph.p_offset && mm.offset < ph.p_offset + ph.p_filesz) {
                    bias = mm.start - (ph.p_vaddr + (mm.offset - ph.p_offset));
                    placed = true;
                    break;
                }
            }
            if (placed) break;
        }
        const PythonLayout* layout = python_layout(out.minor);
        if (out.minor == 0) {
            out.why_unsupported = "its version is not known (no Py_Version, no python3.X name)";
        } else if (!layout) {
            out.why_unsupported = "leakwatch has no frame offsets for CPython 3." +
                                  std::to_string(out.minor) + " (3.9 to 3.13 are known)";
        } else if (out.minor < 13 && r.runtime_size != layout->runtime_size) {
            // (3.13+: the runtime's own _Py_DebugOffsets give its size and offsets; Debian
            // 13's 3.13.5 has a _PyRuntime 56 bytes larger than 3.13.0's, the offsets used
            // unchanged)
            out.why_unsupported = "its _PyRuntime has " + std::to_string(r.runtime_size) +
                                  " bytes where CPython 3." + std::to_string(out.minor) + " has " +
                                  std::to_string(layout->runtime_size) +
                                  ": a build whose offsets leakwatch does not know";
        } else if (!placed) {
            out.why_unsupported = "its runtime's mapping was not found";
        } else if (out.minor >= 13) {
            auto described = debug_offsets_layout(*file, r, *layout);
            if (!described) {
                out.why_unsupported = described.error().message;
            } else {
                out.layout = *described;
                out.key_address = bias + r.runtime_vaddr + layout->key_off;
            }
        } else {
            out.layout = *layout;
            out.key_address = bias + r.runtime_vaddr + layout->key_off;
        }
        return out;
    }
    return std::nullopt;
}

Result<std::string> read_python_code_header(const ProcReader& proc, int pid,
                                            const PythonLayout& layout, uint64_t address) {
    (void)layout;
    return Memory(proc, pid).read(address, kCodeHeader);
}

Result<PythonCode> read_python_code(const ProcReader& proc, int pid, const PythonLayout& layout,
                                    uint64_t address) {
    Memory mem(proc, pid);
    auto header = mem.read(address, kCodeHeader);
    if (!header) return std::unexpected(header.error());
    PythonCode code;
    code.header = *header;
    code.firstlineno = field<int32_t>(*header, layout.co_firstlineno);
    uint64_t name =
        field<uint64_t>(*header, layout.co_qualname ? layout.co_qualname : layout.co_name);
    auto qualname = read_str(mem, layout, name, kMaxShownName);
    if (!qualname) return fail("its name: " + qualname.error().message);
    code.qualname = std::move(*qualname);
    if (auto filename =
            read_str(mem, layout, field<uint64_t>(*header, layout.co_filename), kMaxShownPath))
        code.filename = std::move(*filename);
    // bytes: ob_size at 16, the bytes at 32
    const uint64_t table = field<uint64_t>(*header, layout.co_linetable);
    if (auto size = mem.u64(table + 16); size && *size <= kMaxLineTable) {
        if (auto bytes = mem.read(table + 32, static_cast<size_t>(*size)))
            code.linetable = std::move(*bytes);
    }
    return code;
}

int64_t python_instruction_index(const PythonLayout& layout, uint32_t recorded) {
    if (recorded >= 0xffff) return -2;
    if (layout.instr == Instr::kPointer)
        return recorded < layout.code_units_off ? -1 : (recorded - layout.code_units_off) / 2;
    const int64_t lasti = static_cast<int64_t>(recorded) - 1;
    if (lasti < 0) return -1;
    return layout.instr == Instr::kLastiBytes ? lasti / 2 : lasti;
}

int python_line(const PythonCode& code, int minor, int64_t index) {
    if (index == -2) return 0;
    if (index < 0) return code.firstlineno;
    if (minor <= 9) return line_lnotab(code.linetable, code.firstlineno, index * 2);
    if (minor == 10) return line_pep626(code.linetable, code.firstlineno, index * 2);
    return line_locations(code.linetable, code.firstlineno, index);
}

}  // namespace leakwatch
