#include "symbols/kallsyms.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <unordered_map>

namespace leakwatch {

namespace {

// kallsyms has no sizes: a symbol ends where the next one of its module starts. The last
// symbol of a module (or of all) has no such bound, and the address space after it may hold a
// module or BPF program loaded after parsing; claim at most this much for it (the largest
// kernel functions are about 20 KiB).
constexpr uint64_t kMaxUnboundedSize = 64 * 1024;

// 6.2+ kernels put a "__pfx_NAME" padding symbol right before most functions: sharing NAME's
// bytes in the arena saves about a third of the names' memory.
constexpr std::string_view kPaddingPrefix = "__pfx_";
constexpr uint16_t kPaddingFlag = 0x8000;
constexpr size_t kMaxNameSize = 0x7fff;

constexpr std::string_view kKernelModule = "[kernel]";
constexpr std::string_view kUnknownModule = "[unknown]";

bool is_text_type(char t) {
    return t == 't' || t == 'T' || t == 'w' || t == 'W';
}

// Symbols in data sections: text before them has ended. Absolute ('A') and other types say
// nothing about where text lies.
bool is_data_type(char t) {
    return std::string_view("dDbBrRvVgGsS").find(t) != std::string_view::npos;
}

// Text-typed linker symbols that mark the end of a text section, not a function.
bool is_end_marker(std::string_view name) {
    return name == "_etext" || name == "_einittext" ||
           (name.starts_with("__") && name.ends_with("_text_end"));
}

// Appends rather than chaining operator+: GCC 12 at -O2 reports a false -Wrestrict on the latter.
std::string quoted(std::string_view line) {
    constexpr size_t kMax = 80;
    std::string out = "'";
    out.append(line.substr(0, kMax));
    if (line.size() > kMax) out.append("...");
    out.push_back('\'');
    return out;
}

struct Parsed {
    uint64_t start = 0;
    std::string_view name;  // into the parsed text
    uint16_t module = 0;
    bool text = false;  // else a boundary
};

}  // namespace

class KallsymsBuilder {
  public:
    static Result<Kallsyms> build(std::string_view text,
                                  const std::vector<Kallsyms::Section>& sections) {
        KallsymsBuilder b;
        if (auto ok = b.read_lines(text); !ok) return std::unexpected(ok.error());
        auto& starts = b.out_.section_starts_;
        starts.resize(b.out_.modules_.size());
        for (const auto& section : sections) {
            // Sections of modules without symbols bound nothing.
            auto it = b.module_index_.find(section.module);
            if (section.start != 0 && it != b.module_index_.end())
                starts[it->second].push_back(section.start);
        }
        for (auto& v : starts) std::sort(v.begin(), v.end());
        return b.finish();
    }

  private:
    Kallsyms out_;
    std::vector<Parsed> lines_;
    std::unordered_map<std::string_view, uint16_t> module_index_;
    size_t text_lines_ = 0;

    Result<uint16_t> module_of(std::string_view bracketed, size_t line_no) {
        if (bracketed.empty()) return 0;
        if (auto it = module_index_.find(bracketed); it != module_index_.end()) return it->second;
        if (out_.modules_.size() > UINT16_MAX)
            return fail("line " + std::to_string(line_no) + ": more than 65535 modules");
        auto index = static_cast<uint16_t>(out_.modules_.size());
        out_.modules_.emplace_back(bracketed);
        module_index_.emplace(bracketed, index);
        return index;
    }

    Result<void> read_lines(std::string_view text) {
        out_.modules_.emplace_back(kKernelModule);
        size_t line_no = 0;
        while (!text.empty()) {
            size_t eol = text.find('\n');
            std::string_view line = text.substr(0, eol);
            text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
            ++line_no;
            if (auto ok = read_line(line, line_no); !ok) return ok;
        }
        return {};
    }

    Result<void> read_line(std::string_view line, size_t line_no) {
        std::array<std::string_view, 4> fields;
        size_t n = 0;
        for (size_t pos = 0;;) {
            pos = line.find_first_not_of(" \t\r", pos);
            if (pos == std::string_view::npos) break;
            size_t end = std::min(line.find_first_of(" \t\r", pos), line.size());
            if (n == fields.size()) return malformed(line, line_no, "too many fields");
            fields[n++] = line.substr(pos, end - pos);
            pos = end;
        }
        if (n == 0) return {};
        if (n < 3) return malformed(line, line_no, "expected ADDRESS TYPE NAME [[MODULE]]");

        uint64_t start = 0;
        auto addr = fields[0];
        auto [ptr, ec] = std::from_chars(addr.data(), addr.data() + addr.size(), start, 16);
        if (ec != std::errc() || ptr != addr.data() + addr.size())
            return malformed(line, line_no, "bad address " + quoted(addr));
        if (fields[1].size() != 1) return malformed(line, line_no, "bad type " + quoted(fields[1]));
        char type = fields[1][0];
        std::string_view name = fields[2];
        if (name.size() > kMaxNameSize) return malformed(line, line_no, "symbol name too long");
        std::string_view module;
        if (n == 4) {
            module = fields[3];
            if (module.size() < 3 || module.front() != '[' || module.back() != ']')
                return malformed(line, line_no, "bad module " + quoted(module));
        }

        bool text = is_text_type(type);
        if (text) ++text_lines_;
        // A zero address is either hidden (all are zero then, checked in finish) or a per-CPU
        // offset, which is no code address.
        if (start == 0 || (!text && !is_data_type(type))) return {};
        // arm64 mapping symbols ("$x" code, "$d" data), which kernels before 6.2 list for
        // modules at their functions' addresses: markers, not names.
        if (name.starts_with('$')) return {};
        auto index = module_of(module, line_no);
        if (!index) return std::unexpected(index.error());
        lines_.push_back(Parsed{start, name, *index, text && !is_end_marker(name)});
        return {};
    }

    static std::unexpected<Error> malformed(std::string_view line, size_t line_no,
                                            const std::string& what) {
        return fail("line " + std::to_string(line_no) + ": " + what + " in " + quoted(line));
    }

    Result<Kallsyms> finish() {
        if (text_lines_ == 0) return fail("no text symbols (types t, T, w, W)");
        bool any_text = std::any_of(lines_.begin(), lines_.end(),
                                    [](const Parsed& p) { return p.text && p.start != 0; });
        if (!any_text) {
            return fail(
                "all symbol addresses are zero: the kernel hides them from this reader (needs "
                "root with CAP_SYSLOG, and sysctl kernel.kptr_restrict below 2)");
        }
        // The core kernel comes sorted, modules and BPF programs do not. A stable sort keeps
        // the kernel's own order among aliases, whose first is the name it reports itself.
        std::stable_sort(lines_.begin(), lines_.end(),
                         [](const Parsed& a, const Parsed& b) { return a.start < b.start; });
        std::vector<Parsed> kept;
        kept.reserve(lines_.size());
        for (size_t i = 0; i < lines_.size();) {
            size_t j = i;
            const Parsed* best = &lines_[i];
            for (; j < lines_.size() && lines_[j].start == lines_[i].start; ++j) {
                if (lines_[j].text && !best->text) best = &lines_[j];
            }
            i = j;
            // A boundary only matters right after a symbol.
            if (!best->text && (kept.empty() || !kept.back().text)) continue;
            kept.push_back(*best);
        }
        lines_.clear();

        out_.entries_.reserve(kept.size());
        for (size_t i = 0; i < kept.size(); ++i) {
            const Parsed& p = kept[i];
            Kallsyms::Entry e{p.start, static_cast<uint32_t>(out_.names_.size()), 0, p.module};
            if (p.text) {
                ++out_.symbols_;
                if (p.start != 0 && (out_.text_base_ == 0 || p.start < out_.text_base_))
                    out_.text_base_ = p.start;
                std::string_view base = p.name;
                if (base.starts_with(kPaddingPrefix) && i + 1 < kept.size() && kept[i + 1].text &&
                    kept[i + 1].name == base.substr(kPaddingPrefix.size())) {
                    // The next symbol appends exactly these bytes at name_offset.
                    base.remove_prefix(kPaddingPrefix.size());
                    e.name_size = static_cast<uint16_t>(base.size()) | kPaddingFlag;
                } else {
                    out_.names_.append(base);
                    e.name_size = static_cast<uint16_t>(base.size());
                }
            }
            out_.entries_.push_back(e);
        }
        out_.names_.shrink_to_fit();
        return std::move(out_);
    }
};

Result<Kallsyms> Kallsyms::parse(std::string_view text, const std::vector<Section>& sections) {
    return KallsymsBuilder::build(text, sections);
}

namespace {

// A small file's contents, or "" when it cannot be read.
std::string read_small(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return {};
    std::string out(64, '\0');
    ssize_t n = ::read(fd, out.data(), out.size());
    ::close(fd);
    out.resize(n > 0 ? static_cast<size_t>(n) : 0);
    return out;
}

std::vector<std::string> entries_of(const std::string& dir) {
    std::vector<std::string> out;
    DIR* d = ::opendir(dir.c_str());
    if (!d) return out;
    while (const dirent* e = ::readdir(d))
        if (e->d_name[0] != '.' || (e->d_name[1] != '\0' && e->d_name[1] != '.'))
            out.emplace_back(e->d_name);
    ::closedir(d);
    return out;
}

}  // namespace

std::vector<Kallsyms::Section> Kallsyms::module_sections(const std::string& sys_module) {
    std::vector<Section> out;
    for (const auto& name : entries_of(sys_module)) {
        // Built-in "modules" have no sections folder.
        std::string dir = sys_module + "/" + name + "/sections";
        for (const auto& section : entries_of(dir)) {
            std::string text = read_small(dir + "/" + section);
            uint64_t start = 0;
            const char* begin = text.data();
            if (text.starts_with("0x")) begin += 2;
            std::from_chars(begin, text.data() + text.size(), start, 16);
            if (start != 0) out.push_back({start, "[" + name + "]"});
        }
    }
    return out;
}

Result<Kallsyms> Kallsyms::load(const std::string& path, const std::string& sys_module) {
    // procfs reports size 0, so read until EOF rather than by the file's size.
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail_errno("open " + path, errno);
    std::string text;
    constexpr size_t kChunk = 1 << 20;
    for (;;) {
        size_t used = text.size();
        text.resize(used + kChunk);
        ssize_t n = ::read(fd, text.data() + used, kChunk);
        if (n < 0 && errno == EINTR) {
            text.resize(used);
            continue;
        }
        if (n < 0) {
            int err = errno;
            ::close(fd);
            return fail_errno("read " + path, err);
        }
        text.resize(used + static_cast<size_t>(n));
        if (n == 0) break;
    }
    ::close(fd);
    auto parsed =
        parse(text, sys_module.empty() ? std::vector<Section>{} : module_sections(sys_module));
    if (!parsed) return fail(path + ": " + parsed.error().message);
    return parsed;
}

std::string Kallsyms::name_of(const Entry& e) const {
    std::string_view name(names_.data() + e.name_offset, e.name_size & ~kPaddingFlag);
    if (e.name_size & kPaddingFlag) return std::string(kPaddingPrefix) + std::string(name);
    return std::string(name);
}

std::map<std::string, uint64_t, std::less<>> Kallsyms::module_starts() const {
    std::vector<uint64_t> first(modules_.size(), UINT64_MAX);
    for (const auto& e : entries_)
        if (e.name_size != 0) first[e.module] = std::min(first[e.module], e.start);
    std::map<std::string, uint64_t, std::less<>> out;
    for (size_t i = 1; i < modules_.size(); i++)  // 0 is "[kernel]"
        if (first[i] != UINT64_MAX) out.emplace(modules_[i], first[i]);
    return out;
}

Frame Kallsyms::symbolize(uint64_t address) const {
    Frame f;
    f.address = address;
    f.module = kUnknownModule;
    // Outside every symbol, the offset from the kernel's first text symbol: unlike the
    // address, the same whatever KASLR did.
    if (address >= text_base_) f.module_offset = address - text_base_;
    auto it = std::upper_bound(entries_.begin(), entries_.end(), address,
                               [](uint64_t a, const Entry& e) { return a < e.start; });
    if (it == entries_.begin()) return f;
    const Entry& e = *std::prev(it);
    if (e.name_size == 0) return f;
    bool bounded = it != entries_.end() && it->module == e.module;
    if (!bounded && address - e.start >= kMaxUnboundedSize) return f;
    if (e.module < section_starts_.size()) {
        const auto& starts = section_starts_[e.module];
        auto next = std::upper_bound(starts.begin(), starts.end(), e.start);
        if (next != starts.end() && address >= *next) return f;
    }
    f.symbol = name_of(e);
    f.offset = address - e.start;
    f.module = modules_[e.module];
    f.module_offset = f.offset;
    return f;
}

}  // namespace leakwatch
