// Reading a JVM's description of its own structures (symbols/hotspot.cpp) from a memory image
// built here with JDK 17's layout (the offsets Debian 12's libjvm.so exports), and naming a
// Method* through it; hostile tables are refused. A real JVM: tests/integration/test_runtimes.py.
// The whole reading of a process's JVM (hotspot_layout_of) from a fixture /proc tree whose files
// are FIFOs where a read would block, as it does while the process holds up its memory map lock.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "elf_support.h"
#include "proc/files.h"
#include "proc/proc_reads.h"
#include "symbols/hotspot.h"

using namespace leakwatch;

TEST_CASE("method descriptors as Java parameter lists", "[hotspot]") {
    CHECK(java_parameters("(I)V") == "(int)");
    CHECK(java_parameters("()V") == "()");
    CHECK(java_parameters("(JLjava/lang/String;[[B)Ljava/nio/ByteBuffer;") ==
          "(long, java.lang.String, byte[][])");
    CHECK(java_parameters("(II)V") == "(int, int)");
    CHECK_FALSE(java_parameters("I)V"));
    CHECK_FALSE(java_parameters("(Ljava/lang/String"));
    CHECK_FALSE(java_parameters("(Q)V"));
    CHECK_FALSE(java_parameters("(V)V"));
    CHECK_FALSE(java_parameters("(I"));
}

namespace {

// A sparse memory image: bytes at addresses.
struct Image {
    std::map<uint64_t, std::vector<uint8_t>> chunks;
    uint64_t next = 0x10000;

    uint64_t put(const void* data, size_t len, size_t align = 8) {
        next = (next + align - 1) / align * align;
        uint64_t at = next;
        auto* p = static_cast<const uint8_t*>(data);
        chunks[at] = std::vector<uint8_t>(p, p + len);
        next += len + 64;  // a gap: reads across chunks fail
        return at;
    }
    uint64_t str(const std::string& s) { return put(s.c_str(), s.size() + 1, 1); }
    uint64_t word(uint64_t v) { return put(&v, sizeof v); }
    template <class T>
    void write(uint64_t addr, T v) {
        for (auto& [at, bytes] : chunks) {
            if (addr >= at && addr + sizeof v <= at + bytes.size()) {
                std::memcpy(bytes.data() + (addr - at), &v, sizeof v);
                return;
            }
        }
        FAIL("write outside the image");
    }
    JvmMemory reader() const {
        return [this](uint64_t addr, void* out, size_t len) {
            auto it = chunks.upper_bound(addr);
            if (it == chunks.begin()) return false;
            --it;
            const auto& [at, bytes] = *it;
            if (addr + len > at + bytes.size()) return false;
            std::memcpy(out, bytes.data() + (addr - at), len);
            return true;
        };
    }
};

struct Field {
    std::string type, name;
    bool is_static;
    uint64_t value;  // offset, or address of a static
};

// VMStructs tables with the layout descriptors of JDK 17 (stride 48; type entries stride 40).
struct FakeJvm {
    Image mem;
    std::map<std::string, uint64_t> symbols;  // name -> address (bias 0)
    uint64_t method = 0;

    void table(const std::vector<Field>& fields, const std::map<std::string, uint64_t>& sizes,
               uint64_t struct_stride = 48) {
        std::vector<uint8_t> structs((fields.size() + 1) * struct_stride, 0);
        for (size_t i = 0; i < fields.size(); i++) {
            uint8_t* e = structs.data() + i * struct_stride;
            uint64_t tn = mem.str(fields[i].type), fn = mem.str(fields[i].name);
            int32_t st = fields[i].is_static;
            std::memcpy(e + 0, &tn, 8);
            std::memcpy(e + 8, &fn, 8);
            std::memcpy(e + 24, &st, 4);
            std::memcpy(e + (st ? 40 : 32), &fields[i].value, 8);
        }
        std::vector<uint8_t> types((sizes.size() + 1) * 40, 0);
        size_t i = 0;
        for (const auto& [name, size] : sizes) {
            uint64_t tn = mem.str(name);
            std::memcpy(types.data() + i * 40, &tn, 8);
            std::memcpy(types.data() + i * 40 + 32, &size, 8);
            i++;
        }
        symbols["gHotSpotVMStructs"] = mem.word(mem.put(structs.data(), structs.size()));
        symbols["gHotSpotVMTypes"] = mem.word(mem.put(types.data(), types.size()));
        symbols["gHotSpotVMStructEntryArrayStride"] = mem.word(struct_stride);
        symbols["gHotSpotVMStructEntryTypeNameOffset"] = mem.word(0);
        symbols["gHotSpotVMStructEntryFieldNameOffset"] = mem.word(8);
        symbols["gHotSpotVMStructEntryIsStaticOffset"] = mem.word(24);
        symbols["gHotSpotVMStructEntryOffsetOffset"] = mem.word(32);
        symbols["gHotSpotVMStructEntryAddressOffset"] = mem.word(40);
        symbols["gHotSpotVMTypeEntryArrayStride"] = mem.word(40);
        symbols["gHotSpotVMTypeEntryTypeNameOffset"] = mem.word(0);
        symbols["gHotSpotVMTypeEntrySizeOffset"] = mem.word(32);
    }

    uint64_t symbol(const std::string& text) {
        // JDK 17: a u4 hash and refcount, the u2 length at 4, the bytes at 6
        std::vector<uint8_t> s(8 + text.size(), 0);
        uint16_t len = static_cast<uint16_t>(text.size());
        std::memcpy(s.data() + 4, &len, 2);
        std::memcpy(s.data() + 6, text.data(), text.size());
        return mem.put(s.data(), s.size());
    }

    // JDK 17's offsets, and one method: LeakSlow.leakBuffer(I)V
    explicit FakeJvm(uint64_t const_method_offset = 8) {
        uint64_t stub_buffer = 0x7f0000001000;
        std::vector<uint8_t> queue(32, 0);
        std::memcpy(queue.data() + 8, &stub_buffer, 8);
        int32_t limit = 0x1a920;
        std::memcpy(queue.data() + 20, &limit, 4);
        uint64_t queue_at = mem.put(queue.data(), queue.size());
        uint64_t code_static = mem.word(queue_at);
        table({{"Method", "_constMethod", false, const_method_offset},
               {"ConstMethod", "_constants", false, 8},
               {"ConstMethod", "_name_index", false, 34},
               {"ConstMethod", "_signature_index", false, 36},
               {"ConstantPool", "_pool_holder", false, 24},
               {"Klass", "_name", false, 24},
               {"Symbol", "_length", false, 4},
               {"Symbol", "_body", false, 6},
               {"AbstractInterpreter", "_code", true, code_static},
               {"StubQueue", "_stub_buffer", false, 8},
               {"StubQueue", "_buffer_limit", false, 20}},
              {{"Method", 88},
               {"ConstMethod", 48},
               {"ConstantPool", 72},
               {"Klass", 208},
               {"Symbol", 8}});
        // the class, its pool (72 bytes, then slots), the method
        std::vector<uint8_t> klass(208, 0);
        uint64_t klass_name = symbol("LeakSlow");
        std::memcpy(klass.data() + 24, &klass_name, 8);
        uint64_t klass_at = mem.put(klass.data(), klass.size());
        std::vector<uint8_t> pool(72 + 8 * 8, 0);
        std::memcpy(pool.data() + 24, &klass_at, 8);
        uint64_t name = symbol("leakBuffer") | 1, sig = symbol("(I)V") | 1;  // tagged slots
        std::memcpy(pool.data() + 72 + 8 * 3, &name, 8);
        std::memcpy(pool.data() + 72 + 8 * 5, &sig, 8);
        uint64_t pool_at = mem.put(pool.data(), pool.size());
        std::vector<uint8_t> cm(48, 0);
        std::memcpy(cm.data() + 8, &pool_at, 8);
        uint16_t ni = 3, si = 5;
        std::memcpy(cm.data() + 34, &ni, 2);
        std::memcpy(cm.data() + 36, &si, 2);
        uint64_t cm_at = mem.put(cm.data(), cm.size());
        std::vector<uint8_t> m(88, 0);
        std::memcpy(m.data() + 8, &cm_at, 8);
        method = mem.put(m.data(), m.size());
    }
};

}  // namespace

TEST_CASE("a JVM's tables give the offsets, the interpreter and a method's name", "[hotspot]") {
    FakeJvm jvm;
    auto layout = read_hotspot_layout(jvm.mem.reader(), jvm.symbols, 0);
    REQUIRE(layout);
    CHECK(layout->method_const == 8);
    CHECK(layout->const_name == 34);
    CHECK(layout->pool_size == 72);
    CHECK(layout->symbol_length == 4);
    CHECK(layout->symbol_body == 6);
    CHECK(layout->interpreter_lo == 0x7f0000001000);
    CHECK(layout->interpreter_hi == 0x7f0000001000 + 0x1a920);
    CHECK(hotspot_method_name(jvm.mem.reader(), *layout, jvm.method) == "LeakSlow.leakBuffer(int)");
    // Not a Method*: unaligned, unmapped, or leading to garbage
    CHECK_FALSE(hotspot_method_name(jvm.mem.reader(), *layout, jvm.method + 1));
    CHECK_FALSE(hotspot_method_name(jvm.mem.reader(), *layout, 0x7000));
    CHECK_FALSE(hotspot_method_name(jvm.mem.reader(), *layout, jvm.symbols["gHotSpotVMTypes"]));
}

TEST_CASE("a code blob found through its heap's segment map, and its name", "[hotspot]") {
    Image mem;
    // JDK 17's offsets: HeapBlock 16 bytes, CodeBlob::_frame_size 28, _name 96,
    // CompiledMethod::_method 112
    HotSpotLayout l;
    l.heap_block = 16;
    l.blob_frame_size = 28;
    l.blob_name = 96;
    l.blob_method = 112;
    // Four 128-byte segments: the call stub in the first, an nmethod in the next two, one free.
    const uint64_t stub_name = mem.str("StubRoutines (1)"), nmethod_name = mem.str("nmethod");
    std::vector<uint8_t> code(4 * 128, 0);
    auto put = [&](size_t at, auto v) { std::memcpy(code.data() + at, &v, sizeof v); };
    put(16 + 96, stub_name);
    put(128 + 16 + 28, int32_t{4});
    put(128 + 16 + 96, nmethod_name);
    put(128 + 16 + 112, uint64_t{0x7f0000123450});
    const uint64_t lo = mem.put(code.data(), code.size(), 128);
    const uint8_t segmap[4] = {0, 0, 1, 0xff};
    l.heaps.push_back({lo, lo + code.size(), mem.put(segmap, sizeof segmap), 7});

    auto stub = hotspot_blob(mem.reader(), l, lo + 60);
    REQUIRE(stub);
    CHECK(stub->address == lo + 16);
    CHECK(stub->frame_size == 0);
    CHECK_FALSE(stub->nmethod);
    CHECK(stub->name == "StubRoutines (1)");
    auto compiled = hotspot_blob(mem.reader(), l, lo + 2 * 128 + 5);  // its second segment
    REQUIRE(compiled);
    CHECK(compiled->address == lo + 128 + 16);
    CHECK(compiled->frame_size == 4);
    CHECK(compiled->nmethod);
    CHECK(compiled->method == 0x7f0000123450);
    CHECK_FALSE(hotspot_blob(mem.reader(), l, lo + 3 * 128));      // a free segment
    CHECK_FALSE(hotspot_blob(mem.reader(), l, lo + code.size()));  // outside the heap
}

TEST_CASE("hostile tables are refused", "[hotspot]") {
    SECTION("a field outside its class") {
        FakeJvm jvm(4096);  // Method::_constMethod beyond sizeof(Method)
        auto layout = read_hotspot_layout(jvm.mem.reader(), jvm.symbols, 0);
        REQUIRE_FALSE(layout);
        CHECK(layout.error().message.find("Method::_constMethod") != std::string::npos);
    }
    SECTION("a stride past the bound") {
        FakeJvm jvm;
        jvm.mem.write<uint64_t>(jvm.symbols["gHotSpotVMStructEntryArrayStride"], 4096);
        CHECK_FALSE(read_hotspot_layout(jvm.mem.reader(), jvm.symbols, 0));
    }
    SECTION("a table without its end") {
        FakeJvm jvm;
        // the table pointer moved onto memory that never ends with a NULL type name: reads
        // run off the image and fail, never loop
        jvm.mem.write<uint64_t>(jvm.symbols["gHotSpotVMStructs"], 0x10000);
        CHECK_FALSE(read_hotspot_layout(jvm.mem.reader(), jvm.symbols, 0));
    }
    SECTION("an export missing") {
        FakeJvm jvm;
        jvm.symbols.erase("gHotSpotVMTypes");
        auto layout = read_hotspot_layout(jvm.mem.reader(), jvm.symbols, 0);
        REQUIRE_FALSE(layout);
        CHECK(layout.error().message.find("gHotSpotVMTypes") != std::string::npos);
    }
}

namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

// A fixture /proc tree with one process, 700 of user 1000.
struct JvmTree {
    fs::path dir = elf_support::temp_dir().path / "jvm-proc";
    fs::path proc = dir / "700";
    JvmTree() {
        fs::remove_all(dir);
        fs::create_directories(proc);
        std::ofstream(proc / "status") << "Name:\tjava\nUid:\t1000\t1000\t1000\t1000\n";
    }
    ~JvmTree() {
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
    void fifo(const std::string& file) const {
        REQUIRE(::mkfifo((proc / file).c_str(), 0600) == 0);
    }
    // The process maps `lib` at 0x7f0000000000, file offset 0.
    void maps(const std::string& lib) const {
        std::ofstream(proc / "maps")
            << "7f0000000000-7f0000001000 r--p 00000000 00:00 0 " << lib << "\n";
    }
};

// Whether a reader has the FIFO open now (its open blocks until a writer comes); a writer
// opened lets it go.
bool reader_there(const fs::path& fifo) {
    int fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return false;
    ::close(fd);
    return true;
}

// hotspot_layout_of on a thread of its own: a read that blocks on a FIFO is let go (and the
// test fails) instead of holding the test up.
Result<HotSpotLayout> layout_within(const JvmTree& tree, const ProcGate& gate, bool& busy) {
    auto got = std::async(std::launch::async, [&] {
        return hotspot_layout_of(ProcReader(tree.dir.string()), 700, 64 << 20, gate, &busy);
    });
    for (int i = 0; i < 1000 && got.wait_for(milliseconds(10)) != std::future_status::ready; i++) {
    }
    const bool blocked = got.wait_for(milliseconds(0)) != std::future_status::ready;
    for (const char* f : {"maps", "mem"})
        while (got.wait_for(milliseconds(0)) != std::future_status::ready &&
               reader_there(tree.proc / f))
            std::this_thread::sleep_for(milliseconds(10));
    auto out = got.get();
    CHECK_FALSE(blocked);
    return out;
}

uint64_t busy_refusals() {
    return refused_files()[static_cast<size_t>(Refusal::kBusy)];
}

// A libjvm.so that exports a gHotSpot table, built once.
const std::string& fake_libjvm() {
    static const std::string lib = [] {
        const fs::path dir = elf_support::temp_dir().path / "jvm-lib";
        fs::create_directories(dir);
        const fs::path src = dir / "jvm.c", so = dir / "libjvm.so";
        std::ofstream(src) << "unsigned long gHotSpotVMStructs = 0;\n";
        if (!elf_support::sh("cc -shared -fPIC -o '" + so.string() + "' '" + src.string() + "'",
                             dir / "build.log"))
            FAIL("building the fake libjvm.so failed; see " << (dir / "build.log").string());
        return so.string();
    }();
    return lib;
}

}  // namespace

TEST_CASE("a JVM's /proc reads wait for the gate's admission, refused ones leave it busy",
          "[hotspot]") {
    JvmTree tree;
    const uint64_t refusals_before = busy_refusals();
    bool busy = false;
    SECTION("its maps: a read of the process in flight refuses them; not read") {
        tree.fifo("maps");
        ProcReadPool pool(ProcReadLimits{.per_uid = 4, .total = 24, .on_caller = 4});
        auto gate = pool.gate(ProcReader(tree.dir.string()), milliseconds(30));
        auto [admission, stuck] = pool.admit(700, 1000);  // a read of it that never ends
        REQUIRE(admission == ProcReadPool::Admission::kStarted);
        auto layout = layout_within(tree, gate, busy);
        REQUIRE_FALSE(layout);
        CHECK(busy);
        CHECK(layout.error().message.find("/700/maps") != std::string::npos);
        CHECK(busy_refusals() == refusals_before + 1);
        stuck.reset();
        CHECK(pool.in_flight() == 0);
    }
    SECTION("its memory: refused after its maps were admitted; never opened") {
        tree.maps(fake_libjvm());
        tree.fifo("mem");
        int asked = 0;
        ProcGate gate = [&](int pid) -> std::optional<std::shared_ptr<void>> {
            CHECK(pid == 700);
            if (++asked == 1) return std::make_shared<int>(0);
            return std::nullopt;
        };
        auto layout = layout_within(tree, gate, busy);
        REQUIRE_FALSE(layout);
        CHECK(busy);
        CHECK(asked == 2);  // maps, mem: libjvm.so opened by its path, without the gate
        CHECK(layout.error().message.find("/700/mem") != std::string::npos);
        CHECK(busy_refusals() == refusals_before + 1);
    }
    SECTION("admitted: read while the admission is held, and a failure is not busy") {
        tree.maps(fake_libjvm());
        std::ofstream(tree.proc / "mem");  // empty: the tables cannot be read
        ProcReadPool pool;
        auto inner = pool.gate(ProcReader(tree.dir.string()), milliseconds(30));
        size_t held = 0;
        int asked = 0;
        ProcGate gate = [&](int pid) {
            asked++;
            auto flight = inner(pid);
            held = std::max(held, pool.in_flight());
            return flight;
        };
        auto layout = layout_within(tree, gate, busy);
        REQUIRE_FALSE(layout);
        CHECK_FALSE(busy);
        CHECK(asked == 2);
        CHECK(held == 1);
        CHECK(pool.in_flight() == 0);  // each admission let go
        CHECK(busy_refusals() == refusals_before);
    }
    SECTION("no libjvm.so mapped: a failure, not busy") {
        tree.maps("/usr/lib/libc.so.6");
        auto layout = layout_within(tree, ProcGate(), busy);
        REQUIRE_FALSE(layout);
        CHECK_FALSE(busy);
        CHECK(layout.error().message.find("maps no libjvm.so") != std::string::npos);
    }
}
