#include "http/pprof.h"

#include <profile.pb.h>
#include <zlib.h>

#include <array>
#include <chrono>
#include <map>
#include <tuple>
#include <unordered_map>

namespace leakwatch {

namespace {

namespace pb = perftools::profiles;

constexpr uint64_t kPage = 4096;

// The address a frame was named at: past the first frame, frames are return addresses, and
// the symbolizer looked up the call before them (address - 1). A server that symbolizes the
// profile again then names the same function.
uint64_t lookup_address(const Frame& f, size_t index) {
    return index == 0 || f.address == 0 ? f.address : f.address - 1;
}

// Builds one profile: strings interned, and mappings, functions and locations numbered 1..N
// in table order (Parca rejects any other numbering).
class ProfileBuilder {
  public:
    ProfileBuilder() { profile_.add_string_table(""); }

    int64_t str(const std::string& s) {
        auto [it, fresh] = strings_.try_emplace(s, profile_.string_table_size());
        if (fresh) profile_.add_string_table(s);
        return it->second;
    }

    // The sample begins at frame `first`: a heap profile's leaf is the function that
    // allocated, as in Go's, so `-top` lists allocation sites rather than malloc.
    void add_stack(const std::vector<Frame>* frames, size_t first,
                   const std::array<int64_t, std::size(kSampleTypes)>& values,
                   const std::vector<std::pair<std::string, std::string>>& labels) {
        pb::Sample* sample = profile_.add_sample();
        if (frames) {
            if (first >= frames->size()) first = 0;  // nothing but the allocator: keep it all
            for (size_t i = first; i < frames->size(); i++)
                sample->add_location_id(location((*frames)[i], i));
        }
        for (int64_t v : values) sample->add_value(v);
        for (const auto& [key, value] : labels) {
            pb::Label* label = sample->add_label();
            label->set_key(str(key));
            label->set_str(str(value));
        }
    }

    pb::Profile& profile() { return profile_; }

    pb::Profile& finish() {
        // Mappings are known once every frame is: their extent covers each address seen.
        for (const auto& [key, m] : mappings_) {
            pb::Mapping* out = profile_.mutable_mapping(static_cast<int>(m.id - 1));
            const uint64_t start = m.lo & ~(kPage - 1);
            const uint64_t limit = (m.hi + kPage) & ~(kPage - 1);
            const auto& [module, build_id, bias] = key;
            out->set_memory_start(start);
            out->set_memory_limit(limit);
            // bias = address - file offset, so the file offset at `start` is start - bias;
            // for memory that is not a file's, 0.
            out->set_file_offset(bias != kNoFile ? start - bias : 0);
            // Every frame was looked up already: one without a name has none to find (a
            // local function of a stripped library). Saying so keeps go tool pprof from
            // asking the server to symbolize (Go's /debug/pprof/symbol, which is not here).
            out->set_has_functions(true);
            out->set_has_filenames(m.any_file);
            out->set_has_line_numbers(m.any_file);
            out->set_has_inline_frames(m.any_file);
        }
        return profile_;
    }

  private:
    static constexpr uint64_t kNoFile = UINT64_MAX;
    using MappingKey = std::tuple<std::string, std::string, uint64_t>;  // module, build-id, bias
    struct MappingExtent {
        uint64_t id = 0;
        uint64_t lo = UINT64_MAX, hi = 0;
        bool any_file = false;
    };

    uint64_t mapping(const Frame& f, uint64_t address) {
        const std::string& module = f.module.str();
        const bool file = !module.empty() && module[0] == '/';
        // module_offset is the file offset of f.address, so their difference is the same
        // for every address of the mapping.
        MappingKey key{module, f.build_id.str(), file ? f.address - f.module_offset : kNoFile};
        auto [it, fresh] = mappings_.try_emplace(key);
        MappingExtent& m = it->second;
        if (fresh) {
            pb::Mapping* out = profile_.add_mapping();
            m.id = static_cast<uint64_t>(profile_.mapping_size());
            out->set_id(m.id);
            out->set_filename(str(module));
            out->set_build_id(str(f.build_id.str()));
        }
        m.lo = std::min(m.lo, address);
        m.hi = std::max(m.hi, address);
        if (!f.file.empty()) m.any_file = true;
        return m.id;
    }

    uint64_t function(const std::string& name, const std::string& file) {
        auto [it, fresh] = functions_.try_emplace({name, file}, 0);
        if (fresh) {
            pb::Function* out = profile_.add_function();
            it->second = static_cast<uint64_t>(profile_.function_size());
            out->set_id(it->second);
            out->set_name(str(name));
            out->set_system_name(str(name));
            out->set_filename(str(file));
        }
        return it->second;
    }

    uint64_t location(const Frame& f, size_t index) {
        const uint64_t address = lookup_address(f, index);
        const uint64_t map_id = mapping(f, address);
        auto [it, fresh] = locations_.try_emplace({map_id, address}, 0);
        if (!fresh) return it->second;
        pb::Location* out = profile_.add_location();
        it->second = static_cast<uint64_t>(profile_.location_size());
        out->set_id(it->second);
        out->set_mapping_id(map_id);
        out->set_address(address);
        if (!f.symbol.empty()) {
            // Innermost first, the frame's own function last: each inlined function with the
            // line inside it, the frame's function with the line of the call it makes.
            for (const auto& in : f.inlined) {
                pb::Line* line = out->add_line();
                line->set_function_id(function(in.function, in.file));
                line->set_line(in.line);
            }
            pb::Line* line = out->add_line();
            line->set_function_id(function(f.symbol, f.file.str()));
            line->set_line(f.line);
        }
        return it->second;
    }

    pb::Profile profile_;
    std::unordered_map<std::string, int64_t> strings_;
    std::map<MappingKey, MappingExtent> mappings_;
    std::map<std::pair<std::string, std::string>, uint64_t> functions_;
    std::map<std::pair<uint64_t, uint64_t>, uint64_t> locations_;
};

bool selected(const ProcessView& p, const ProfileSelection& s) {
    return (!s.pid || p.pid == *s.pid) && (!s.watch || p.watch == *s.watch);
}

// A frame's name in folded stacks, which use ';' between frames and end at a newline.
std::string folded_name(std::string name) {
    for (char& c : name)
        if (c == ';' || c == '\n' || c == '\r') c = ':';
    return name;
}

void append_folded(std::string& out, const std::string& prefix, const std::vector<Frame>* frames,
                   int64_t bytes) {
    std::string line = prefix;
    if (frames) {
        for (auto f = frames->rbegin(); f != frames->rend(); ++f) {
            const std::string own = f->symbol.empty() ? f->display() : f->symbol;
            line += (line.empty() ? "" : ";") + folded_name(own);
            // Inlined functions are called from the frame's own function, innermost last.
            for (auto in = f->inlined.rbegin(); in != f->inlined.rend(); ++in)
                line += ";" + folded_name(in->function);
        }
    }
    if (line.empty()) line = "[unknown]";
    out += line + " " + std::to_string(bytes) + "\n";
}

}  // namespace

std::optional<std::string> missing_target(const Snapshot& snap, const ProfileSelection& s) {
    if (s.kernel) {
        if (snap.kernel) return std::nullopt;
        return "kernel allocation tracking is off (kernel.enabled)";
    }
    if (!s.pid) return std::nullopt;
    for (const auto& p : snap.processes)
        if (p.pid == *s.pid) return std::nullopt;
    return "pid " + std::to_string(*s.pid) + " is not watched";
}

Result<std::string> gzip(const std::string& data) {
    z_stream z{};
    // windowBits 15 + 16: a gzip header and trailer instead of zlib's.
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return fail("gzip: deflateInit2 failed");
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
    z.avail_in = static_cast<uInt>(data.size());
    // The output grows as deflate fills it rather than starting at deflateBound (the size of
    // the input): a whole-host profile is megabytes before and a small share of it after.
    constexpr size_t kChunk = 64 * 1024;
    std::string out;
    int rc = Z_OK;
    while (rc == Z_OK) {
        out.resize(z.total_out + kChunk);
        z.next_out = reinterpret_cast<Bytef*>(out.data() + z.total_out);
        z.avail_out = static_cast<uInt>(kChunk);
        rc = deflate(&z, Z_FINISH);
    }
    out.resize(z.total_out);
    deflateEnd(&z);
    if (rc != Z_STREAM_END) return fail("gzip: deflate failed");
    return out;
}

Result<std::string> pprof_profile(const Snapshot& snap, const ProfileSelection& sel,
                                  const std::string& version) {
    ProfileBuilder b;
    pb::Profile& p = b.profile();
    for (const char* type : kSampleTypes) {
        pb::ValueType* vt = p.add_sample_type();
        vt->set_type(b.str(type));
        vt->set_unit(b.str(std::string_view(type).ends_with("_space") ? "bytes" : "count"));
    }
    bool any_allocation = false, any_growth = false;
    if (sel.kernel && snap.kernel) {
        // Kernel stacks keep what they hold now, not what they allocated: alloc_* are 0.
        for (const auto& s : snap.kernel->stacks) {
            if (s.bytes <= 0 && s.count <= 0) continue;
            b.add_stack(s.frames.get(), 0, {0, 0, s.count, s.bytes, 0, 0},
                        {{"kind", std::string(kKernelKinds[s.kind])}});
            any_allocation = true;
        }
    } else if (!sel.kernel) {
        for (const auto& proc : snap.processes) {
            if (!selected(proc, sel)) continue;
            const std::vector<std::pair<std::string, std::string>> labels = {
                {"pid", std::to_string(proc.pid)}, {"comm", proc.comm}, {"watch", proc.watch}};
            for (const auto& s : proc.stacks) {
                if (s.bytes <= 0 && s.count <= 0 && s.alloc_count == 0) continue;
                b.add_stack(s.frames.get(), s.allocator_frames,
                            {static_cast<int64_t>(s.alloc_count),
                             static_cast<int64_t>(s.alloc_bytes), s.count, s.bytes, 0, 0},
                            labels);
                any_allocation = true;
            }
            for (const auto& s : proc.growth_stacks) {
                if (s.bytes <= 0) continue;
                b.add_stack(s.frames.get(), s.allocator_frames, {0, 0, 0, 0, s.count, s.bytes},
                            labels);
                any_growth = true;
            }
        }
    }
    pb::ValueType* period = p.mutable_period_type();
    period->set_type(b.str("space"));
    period->set_unit(b.str("bytes"));
    p.set_period(1);
    p.set_time_nanos(
        std::chrono::duration_cast<std::chrono::nanoseconds>(snap.taken.time_since_epoch())
            .count());
    p.add_comment(b.str("leakwatch " + version));
    // A profile of the watch tier alone opens on what it has rather than on zeros.
    p.set_default_sample_type(
        b.str(any_growth && !any_allocation ? "growth_space" : "inuse_space"));
    b.finish();
    std::string raw;
    if (!p.SerializeToString(&raw)) return fail("pprof: the profile does not serialize");
    return gzip(raw);
}

std::string folded_stacks(const Snapshot& snap, const ProfileSelection& sel) {
    std::string out;
    if (sel.kernel) {
        if (!snap.kernel) return out;
        for (const auto& s : snap.kernel->stacks)
            if (s.bytes > 0) append_folded(out, "", s.frames.get(), s.bytes);
        return out;
    }
    for (const auto& proc : snap.processes) {
        if (!selected(proc, sel)) continue;
        const std::string prefix =
            sel.pid ? "" : folded_name(proc.comm) + " [" + std::to_string(proc.pid) + "]";
        for (const auto& s : proc.stacks)
            if (s.bytes > 0) append_folded(out, prefix, s.frames.get(), s.bytes);
    }
    return out;
}

}  // namespace leakwatch
