// Naming the Java methods of a HotSpot JVM's interpreted frames from the JVM's own description
// of its structures: libjvm.so exports tables of its classes' fields and sizes
// (gHotSpotVMStructs, gHotSpotVMTypes and the descriptors of their entries' layout, filled in
// when libjvm is loaded), read from the process's memory. A `Method*`, which each interpreter
// frame holds (at rbp - 24 on x86-64), leads to its class and method names and signature:
// Method -> ConstMethod -> ConstantPool -> its holder Klass's name; the name and signature are
// Symbols in the pool at ConstMethod's indexes.
//
// The JVM is hostile input like its files (proc/files.h): libjvm.so is opened as a mapped file
// is, every table and string is read with bounds (entries, stride, string length), every offset
// is checked against its class's size, and a Method* that does not lead to well-formed names
// gives no name.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proc/files.h"
#include "proc/proc.h"
#include "util/result.h"

namespace leakwatch {

// A frame that is an interpreted Java method: its Method* with this bit set (the BPF walk's
// LW_JAVA_METHOD; user addresses never have it).
constexpr uint64_t kJavaMethodTag = 1ull << 63;

// Reads `len` bytes of a process's memory at `addr`; false when it cannot.
using JvmMemory = std::function<bool(uint64_t addr, void* out, size_t len)>;

// The offsets leakwatchd needs, from one JVM's tables (they differ between JDK versions).
struct HotSpotLayout {
    uint32_t method_const = 0;     // Method::_constMethod
    uint32_t const_constants = 0;  // ConstMethod::_constants
    uint32_t const_name = 0;       // ConstMethod::_name_index (u2)
    uint32_t const_signature = 0;  // ConstMethod::_signature_index (u2)
    uint32_t pool_holder = 0;      // ConstantPool::_pool_holder
    uint32_t pool_size = 0;        // sizeof(ConstantPool): its slots follow, 8 bytes each
    uint32_t klass_name = 0;       // Klass::_name
    uint32_t symbol_length = 0;    // Symbol::_length (u2)
    uint32_t symbol_body = 0;      // Symbol::_body
    uint64_t interpreter_lo = 0;   // the interpreter's code: [lo, hi)
    uint64_t interpreter_hi = 0;
    // The code cache, to find the code blob of a compiled frame (none when the tables do not
    // describe it): each heap's reserved range, its segment map (a byte per segment: 0 at a
    // block's first segment, else how many segments back to go, 0xff for a free one).
    struct CodeHeap {
        uint64_t lo = 0, hi = 0, segmap = 0;
        uint32_t log2_segment = 0;
    };
    std::vector<CodeHeap> heaps;
    uint32_t heap_block = 0;       // sizeof(HeapBlock): a blob follows its block's header
    uint32_t blob_frame_size = 0;  // CodeBlob::_frame_size (int, in words)
    uint32_t blob_name = 0;        // CodeBlob::_name (const char*)
    uint32_t blob_method = 0;      // CompiledMethod::_method (nmethod::_method after JDK 21)
};

// A compiled frame's code blob.
struct HotSpotBlob {
    uint64_t address = 0;
    int32_t frame_size = 0;  // words
    // A compiled Java method or a native wrapper ("nmethod", "native nmethod"): `method` is
    // its Method*.
    bool nmethod = false;
    uint64_t method = 0;
    // Its name ("nmethod", "StubRoutines (1)", "Interpreter"...): what names a frame in a stub
    // when no perf map does (JDK 11 writes none).
    std::string name;
};
// The blob holding pc, through the segment map of its heap (at most 32 steps back).
std::optional<HotSpotBlob> hotspot_blob(const JvmMemory& mem, const HotSpotLayout& layout,
                                        uint64_t pc);

// The dynamic symbols of libjvm.so named gHotSpot*, by name, as virtual addresses of the file.
Result<std::map<std::string, uint64_t>> hotspot_symbols(const OpenFile& libjvm);

// Reads the tables of a JVM whose libjvm is loaded at `bias` (mapped address minus the file's
// virtual address) with `symbols` (hotspot_symbols).
Result<HotSpotLayout> read_hotspot_layout(const JvmMemory& mem,
                                          const std::map<std::string, uint64_t>& symbols,
                                          uint64_t bias);

// "pkg.Class.method(int, java.lang.String)", as HotSpot's perf map names compiled methods
// (without the return type), of a Method*; nullopt when it does not lead to one.
std::optional<std::string> hotspot_method_name(const JvmMemory& mem, const HotSpotLayout& layout,
                                               uint64_t method);

// A method descriptor's parameters as Java types: "(I[Ljava/lang/String;)V" -> "(int,
// java.lang.String[])"; nullopt when malformed.
std::optional<std::string> java_parameters(std::string_view descriptor);

// The whole reading for process pid: its libjvm mapping, that file's symbols, its tables.
// Its reads of /proc/PID/maps, /proc/PID/map_files (open_mapped) and /proc/PID/mem take the
// process's memory map lock: with a `gate` (ProcReadPool::gate), each is done only when the
// gate admits it; a refusal is counted as files_refused{reason="busy"}, logged once, and sets
// `busy` (ask again later: the JVM is not at fault).
Result<HotSpotLayout> hotspot_layout_of(const ProcReader& proc, int pid, uint64_t max_file_bytes,
                                        const ProcGate& gate = {}, bool* busy = nullptr);

// A JvmMemory over /proc/PID/mem (opened per read: the process may exit). Its reads take the
// process's memory map lock: the symbolizer holds its gate's admission while it reads.
JvmMemory process_memory(const ProcReader& proc, int pid);

}  // namespace leakwatch
