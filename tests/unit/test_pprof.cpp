// http/pprof.cpp: profile.proto as go tool pprof, Parca and Pyroscope read it, decoded here with
// the same generated classes; folded stacks.
#include <profile.pb.h>
#include <zlib.h>

#include <catch2/catch.hpp>
#include <map>
#include <set>
#include <string>
#include <tuple>

#include "http/pprof.h"
#include "http_support.h"

using namespace leakwatch;
using namespace http_support;
namespace pb = perftools::profiles;

namespace {

std::string gunzip(const std::string& data) {
    z_stream z{};
    REQUIRE(inflateInit2(&z, 15 + 16) == Z_OK);
    std::string out;
    char buf[65536];
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
    z.avail_in = static_cast<uInt>(data.size());
    int rc;
    do {
        z.next_out = reinterpret_cast<Bytef*>(buf);
        z.avail_out = sizeof(buf);
        rc = inflate(&z, Z_NO_FLUSH);
        REQUIRE((rc == Z_OK || rc == Z_STREAM_END));
        out.append(buf, sizeof(buf) - z.avail_out);
    } while (rc != Z_STREAM_END);
    inflateEnd(&z);
    return out;
}

pb::Profile decode(const Snapshot& snap, const ProfileSelection& sel) {
    auto gz = pprof_profile(snap, sel, "9.9.9");
    REQUIRE(gz);
    REQUIRE(gz->size() > 2);
    CHECK(static_cast<unsigned char>((*gz)[0]) == 0x1f);  // gzip magic
    CHECK(static_cast<unsigned char>((*gz)[1]) == 0x8b);
    pb::Profile p;
    REQUIRE(p.ParseFromString(gunzip(*gz)));
    return p;
}

const std::string& text(const pb::Profile& p, int64_t index) {
    REQUIRE(index >= 0);
    REQUIRE(index < p.string_table_size());
    return p.string_table(static_cast<int>(index));
}

// Function names of a sample's locations, leaf first (each location's outermost line last, as
// pprof lays inlined frames out).
std::vector<std::string> names(const pb::Profile& p, const pb::Sample& s) {
    std::vector<std::string> out;
    for (uint64_t id : s.location_id()) {
        const pb::Location& loc = p.location(static_cast<int>(id - 1));
        REQUIRE(loc.id() == id);
        if (loc.line_size() == 0) out.push_back("?");
        for (const auto& line : loc.line()) {
            const pb::Function& f = p.function(static_cast<int>(line.function_id() - 1));
            out.push_back(text(p, f.name()));
        }
    }
    return out;
}

std::map<std::string, std::string> labels(const pb::Profile& p, const pb::Sample& s) {
    std::map<std::string, std::string> out;
    for (const auto& l : s.label()) out[text(p, l.key())] = text(p, l.str());
    return out;
}

ProfileSelection of_pid(uint32_t pid) {
    ProfileSelection s;
    s.pid = pid;
    return s;
}

ProfileSelection of_watch(const std::string& watch) {
    ProfileSelection s;
    s.watch = watch;
    return s;
}

ProfileSelection of_kernel() {
    ProfileSelection s;
    s.kernel = true;
    return s;
}

Frame with_line(Frame f, const std::string& file, uint32_t line) {
    f.file = file;
    f.line = line;
    return f;
}

// One process: a leak through an inlined helper (source lines known), and churn that holds
// nothing now but allocated much.
Snapshot leaky_snapshot() {
    Frame leak =
        with_line(frame(0x555500001240, "leak_nodes", 0x30, "/usr/bin/appd", 0x1240, "aa11"),
                  "/src/nodes.c", 32);
    leak.inlined = {{"grab", "/src/nodes.c", 20}, {"make_node", "/src/nodes.c", 25}};
    auto leak_frames = std::make_shared<std::vector<Frame>>(std::vector<Frame>{
        frame(0x7f0000028a40, "malloc", 0, kLibc, 0x28a40, kLibcBuildId),
        leak,
        with_line(frame(0x555500001300, "main", 0x40, "/usr/bin/appd", 0x1300, "aa11"),
                  "/src/main.c", 7),
    });
    auto churn_frames = std::make_shared<std::vector<Frame>>(std::vector<Frame>{
        frame(0x7f0000028a40, "malloc", 0, kLibc, 0x28a40, kLibcBuildId),
        frame(0x7f00000300a0, "", 0, kLibc, 0x300a0, kLibcBuildId),
        frame(0x555500001500, "churn", 0x20, "/usr/bin/appd", 0x1500, "aa11"),
        frame(0x555500001310, "main", 0x50, "/usr/bin/appd", 0x1310, "aa11"),
    });
    Snapshot snap;
    snap.taken = std::chrono::system_clock::time_point(std::chrono::seconds(1700000000));
    ProcessView p;
    p.pid = 77;
    p.watch = "app";
    p.comm = "appd";
    StackView leak_view{0xa, 3 << 20, 3, "leak_nodes", leak_frames, {}, false, 3 << 20, 3, 1};
    StackView churn_view{0xb, 0, 0, "churn", churn_frames, {}, false, 50 << 20, 5000, 1};
    p.stacks = {leak_view, churn_view};
    snap.processes = {p};
    return snap;
}

}  // namespace

TEST_CASE("pprof: the sample types in one fixed order, inuse_space the default", "[http][pprof]") {
    pb::Profile p = decode(leaky_snapshot(), {});
    CHECK(text(p, 0).empty());
    std::vector<std::string> types;
    for (const auto& t : p.sample_type())
        types.push_back(text(p, t.type()) + "/" + text(p, t.unit()));
    CHECK(types == std::vector<std::string>{"alloc_objects/count", "alloc_space/bytes",
                                            "inuse_objects/count", "inuse_space/bytes",
                                            "growth_pages/count", "growth_space/bytes"});
    CHECK(text(p, p.default_sample_type()) == "inuse_space");
    CHECK(text(p, p.period_type().type()) == "space");
    CHECK(text(p, p.period_type().unit()) == "bytes");
    CHECK(p.time_nanos() == 1700000000ll * 1000000000ll);
    REQUIRE(p.comment_size() == 1);
    CHECK(text(p, p.comment(0)) == "leakwatch 9.9.9");
}

TEST_CASE("pprof: samples begin at the allocating function, with values and labels",
          "[http][pprof]") {
    pb::Profile p = decode(leaky_snapshot(), {});
    REQUIRE(p.sample_size() == 2);
    const pb::Sample& leak = p.sample(0);
    CHECK(std::vector<int64_t>(leak.value().begin(), leak.value().end()) ==
          std::vector<int64_t>{3, 3 << 20, 3, 3 << 20, 0, 0});
    // malloc (the allocator's frame) is left out; inlined functions innermost first, then the
    // frame's own function.
    CHECK(names(p, leak) == std::vector<std::string>{"grab", "make_node", "leak_nodes", "main"});
    CHECK(labels(p, leak) ==
          std::map<std::string, std::string>{{"pid", "77"}, {"comm", "appd"}, {"watch", "app"}});
    const pb::Sample& churn = p.sample(1);
    CHECK(std::vector<int64_t>(churn.value().begin(), churn.value().end()) ==
          std::vector<int64_t>{5000, 50 << 20, 0, 0, 0, 0});
    CHECK(names(p, churn) == std::vector<std::string>{"?", "churn", "main"});
}

TEST_CASE("pprof: ids are 1..N in table order, and lines carry files and numbers",
          "[http][pprof]") {
    pb::Profile p = decode(leaky_snapshot(), {});
    for (int i = 0; i < p.mapping_size(); i++) CHECK(p.mapping(i).id() == uint64_t(i + 1));
    for (int i = 0; i < p.location_size(); i++) CHECK(p.location(i).id() == uint64_t(i + 1));
    for (int i = 0; i < p.function_size(); i++) CHECK(p.function(i).id() == uint64_t(i + 1));
    std::set<std::tuple<std::string, std::string, int64_t>> lines;  // function, file, line
    for (const auto& loc : p.location())
        for (const auto& line : loc.line()) {
            const auto& f = p.function(static_cast<int>(line.function_id() - 1));
            lines.emplace(text(p, f.name()), text(p, f.filename()), line.line());
        }
    using Line = std::tuple<std::string, std::string, int64_t>;
    CHECK(lines.count(Line{"grab", "/src/nodes.c", 20}));
    CHECK(lines.count(Line{"make_node", "/src/nodes.c", 25}));
    CHECK(lines.count(Line{"leak_nodes", "/src/nodes.c", 32}));
    CHECK(lines.count(Line{"main", "/src/main.c", 7}));
    CHECK(lines.count(Line{"churn", "", 0}));  // no debug info: no file, line 0
}

TEST_CASE("pprof: mappings translate each address to its file offset, with the build-id",
          "[http][pprof]") {
    pb::Profile p = decode(leaky_snapshot(), {});
    // Return addresses (every frame past the first) are given as the call before them.
    std::map<uint64_t, uint64_t> expect = {{0x55550000123f, 0x123f},
                                           {0x5555000012ff, 0x12ff},
                                           {0x7f000003009f, 0x3009f},
                                           {0x5555000014ff, 0x14ff},
                                           {0x55550000130f, 0x130f}};
    REQUIRE(p.location_size() == static_cast<int>(expect.size()));
    for (const auto& loc : p.location()) {
        INFO("address 0x" << std::hex << loc.address());
        REQUIRE(expect.count(loc.address()));
        const pb::Mapping& m = p.mapping(static_cast<int>(loc.mapping_id() - 1));
        CHECK(m.memory_start() <= loc.address());
        CHECK(loc.address() < m.memory_limit());
        CHECK(m.memory_start() % 4096 == 0);
        CHECK(loc.address() - m.memory_start() + m.file_offset() == expect[loc.address()]);
        const std::string& file = text(p, m.filename());
        CHECK(text(p, m.build_id()) == (file == kLibc ? kLibcBuildId : "aa11"));
        CHECK(m.has_functions());
    }
}

TEST_CASE("pprof: a selection by pid or rule, and what it cannot find", "[http][pprof]") {
    Snapshot snap = make_snapshot();
    CHECK(decode(snap, {}).sample_size() == 4);
    CHECK(decode(snap, of_pid(4242)).sample_size() == 1);
    CHECK(decode(snap, of_watch("app")).sample_size() == 3);
    CHECK(decode(snap, of_watch("none")).sample_size() == 0);
    CHECK(!missing_target(snap, of_pid(100)));
    CHECK(*missing_target(snap, of_pid(5)) == "pid 5 is not watched");
    CHECK(*missing_target(snap, of_kernel()) ==
          "kernel allocation tracking is off (kernel.enabled)");
}

TEST_CASE("pprof: kernel stacks hold what they hold now, labelled by kind", "[http][pprof]") {
    Snapshot snap;
    snap.kernel.emplace();
    auto frames = std::make_shared<std::vector<Frame>>(std::vector<Frame>{
        frame(0xffffffff81234560, "__kmalloc", 0x10, "[kernel]", 0xffffffff81234560, ""),
        frame(0xffffffff81300000, "pipe_write", 0x100, "[kernel]", 0xffffffff81300000, "")});
    snap.kernel->stacks = {{0x1, 0, 8192, 2, "pipe_write", frames, {}}};
    pb::Profile p = decode(snap, of_kernel());
    REQUIRE(p.sample_size() == 1);
    CHECK(std::vector<int64_t>(p.sample(0).value().begin(), p.sample(0).value().end()) ==
          std::vector<int64_t>{0, 0, 2, 8192, 0, 0});
    CHECK(labels(p, p.sample(0)) == std::map<std::string, std::string>{{"kind", "kmalloc"}});
    CHECK(names(p, p.sample(0)) == std::vector<std::string>{"__kmalloc", "pipe_write"});
}

TEST_CASE("folded stacks: outermost first, inlined functions as frames, bytes held",
          "[http][pprof]") {
    CHECK(folded_stacks(leaky_snapshot(), of_pid(77)) ==
          "main;leak_nodes;make_node;grab;malloc 3145728\n");
    // More than one process: each line starts with the process.
    Snapshot snap = make_snapshot();
    std::string all = folded_stacks(snap, {});
    CHECK(all ==
          "appd [100];main;record_entry;malloc 600000000\n"
          "appd [100];Session::open;operator new(unsigned long) 400000000\n"
          "appd [100];[anon]+0x10;malloc 73741824\n"
          "svcd [4242];main;record_entry;malloc 65536\n");
}

TEST_CASE("folded stacks: a name cannot break the format", "[http][pprof]") {
    Snapshot snap;
    ProcessView p;
    p.pid = 1;
    p.comm = "a;b";
    auto frames = std::make_shared<std::vector<Frame>>(
        std::vector<Frame>{frame(0x1000, "f;g\nh", 0, "/bin/x", 0x1000, "")});
    p.stacks = {{0x1, 10, 1, "f", frames, {}}};
    snap.processes = {p};
    CHECK(folded_stacks(snap, {}) == "a:b [1];f:g:h 10\n");
}

TEST_CASE("pprof: the watch tier's growth stacks are growth_* samples from their touch site",
          "[http][pprof][watch]") {
    // A process in the watch tier: no allocator stacks, two stacks that first touched pages it
    // still holds (each sampled page standing for 64 KiB), one inside memset.
    auto leak = std::make_shared<std::vector<Frame>>(std::vector<Frame>{
        frame(0x7f00000b1000, "__memset_avx2_unaligned_erms", 0x40, kLibc, 0xb1000, kLibcBuildId),
        frame(0x555500001740, "leak_steady_growth", 0x30, "/usr/bin/appd", 0x1740, "aa11"),
        frame(0x555500001300, "main", 0x40, "/usr/bin/appd", 0x1300, "aa11")});
    auto stack = std::make_shared<std::vector<Frame>>(std::vector<Frame>{
        frame(0x555500001600, "fill_table", 0x10, "/usr/bin/appd", 0x1600, "aa11"),
        frame(0x555500001310, "main", 0x50, "/usr/bin/appd", 0x1310, "aa11")});
    Snapshot snap;
    ProcessView w;
    w.pid = 88;
    w.watch = "tier";
    w.comm = "appd";
    w.tracking = TrackingState::kWatch;
    StackView g1{0x1, 40 * 65536, 40, "leak_steady_growth", leak, {}, false, 0, 0, 1};
    StackView g2{0x2, 3 * 65536, 3, "fill_table", stack, {}, false, 0, 0, 0};
    StackView gone{0x3, 0, 0, "fill_table", stack, {}, false, 0, 0, 0};
    w.growth_stacks = {g1, g2, gone};
    snap.processes = {w};

    pb::Profile p = decode(snap, of_pid(88));
    // Only growth samples: the profile opens on growth_space, not on inuse_space's zeros.
    CHECK(text(p, p.default_sample_type()) == "growth_space");
    REQUIRE(p.sample_size() == 2);  // a stack whose pages are all gone has nothing to show
    const pb::Sample& s = p.sample(0);
    CHECK(std::vector<int64_t>(s.value().begin(), s.value().end()) ==
          std::vector<int64_t>{0, 0, 0, 0, 40, 40 * 65536});
    CHECK(names(p, s) == std::vector<std::string>{"leak_steady_growth", "main"});
    CHECK(labels(p, s) ==
          std::map<std::string, std::string>{{"pid", "88"}, {"comm", "appd"}, {"watch", "tier"}});
    CHECK(names(p, p.sample(1)) == std::vector<std::string>{"fill_table", "main"});

    // With allocator stacks beside them (another process, escalated), inuse_space stays the
    // default and growth samples add nothing to inuse_*.
    Snapshot both = leaky_snapshot();
    both.processes.push_back(w);
    pb::Profile q = decode(both, {});
    CHECK(text(q, q.default_sample_type()) == "inuse_space");
    REQUIRE(q.sample_size() == 4);
    int64_t inuse = 0, growth = 0;
    for (const auto& x : q.sample()) {
        inuse += x.value(3);
        growth += x.value(5);
    }
    CHECK(inuse == 3 << 20);
    CHECK(growth == 43 * 65536);
}
