// CPython processes: which interpreter a process runs (its version, where its runtime state is),
// the offsets of the interpreter's structures per minor version, and naming the Python frames
// the BPF side records (code object address, instruction index) from the process's memory.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "proc/files.h"
#include "proc/proc.h"
#include "util/result.h"

namespace leakwatch {

// Where CPython 3.X keeps what a frame walk and a code object's name need (x86-64, default
// builds as distributions ship them: no Py_TRACE_REFS, no free threading).
struct PythonLayout {
    int minor = 0;
    uint64_t runtime_size = 0;  // sizeof(_PyRuntimeState): st_size of _PyRuntime, checked (<3.13)
    uint32_t key_off = 0;       // _PyRuntime -> autoTSSkey's u32 key
    // The thread state and frames (bpf/leakwatch.h, lw_py_cfg, says how they are walked).
    uint16_t thread_id_off = 0;
    uint16_t frame_off = 0;
    uint16_t cframe_off = 0xffff;  // 0xffff: frame_off is the frame itself
    uint16_t code_off = 0;
    uint16_t back_off = 0;
    uint16_t instr_off = 0;
    uint16_t code_units_off = 0;
    uint16_t entry_off = 0;
    enum class Instr : uint8_t { kLastiBytes = 1, kLastiUnits = 2, kPointer = 3 } instr{};
    enum class Group : uint8_t { kEach = 1, kIsEntry = 2, kShim = 3 } group{};
    // Code objects and strings.
    uint16_t co_firstlineno = 0;
    uint16_t co_filename = 0;
    uint16_t co_name = 0;
    uint16_t co_qualname = 0;  // 0: none (3.9, 3.10): co_name
    uint16_t co_linetable = 0;
    uint16_t ascii_data = 0;    // sizeof(PyASCIIObject)
    uint16_t compact_data = 0;  // sizeof(PyCompactUnicodeObject)
};

// The layout of CPython 3.minor, or nullptr when leakwatch has none (its frames are then not
// read).
const PythonLayout* python_layout(int minor);

// The CPython interpreter of a process.
struct PythonRuntime {
    int minor = 0;             // 3.minor
    std::string module;        // the file holding the runtime: the executable or libpython
    uint64_t key_address = 0;  // of autoTSSkey's key in the process
    // The version's offsets (3.13+: those its _Py_DebugOffsets give); none: a version or
    // build without offsets.
    std::optional<PythonLayout> layout;
    std::string why_unsupported;  // when there is no layout
};

// Finds the CPython runtime a process runs: the executable or a mapped libpython3.X whose
// dynamic symbols define _PyRuntime. Its version comes from Py_Version (3.11+) or the file's
// name (python3.X, libpython3.X), and the size of _PyRuntime must be the layout's; from 3.13 on
// the offsets the runtime describes itself (_Py_DebugOffsets, read from the file) replace the
// table's. nullopt: no CPython in the process. Reads the files through the process's root
// (proc/files.h), through /proc/PID/map_files only when `gate` admits it (open_mapped).
std::optional<PythonRuntime> find_python(const ProcReader& proc, int pid,
                                         const std::vector<MapEntry>& maps, const std::string& exe,
                                         uint64_t max_file_bytes, const ProcGate& gate = {});

// What a code object says of its function, read once.
struct PythonCode {
    std::string qualname;
    std::string filename;
    int firstlineno = 0;
    std::string linetable;  // co_lnotab (3.9), co_linetable (3.10+)
    // What the code object's header held: the code object at that address is this one as long
    // as these are the same.
    std::string header;
};

// Reads the code object at `address` of process `pid` (/proc/PID/mem), every length bounded.
Result<PythonCode> read_python_code(const ProcReader& proc, int pid, const PythonLayout& layout,
                                    uint64_t address);
// The header of the code object at `address` (compared with PythonCode::header).
Result<std::string> read_python_code_header(const ProcReader& proc, int pid,
                                            const PythonLayout& layout, uint64_t address);

// The instruction index (code units) of a frame's instruction as the BPF side recorded it
// (bpf/leakwatch.h: a byte offset from the code object, or f_lasti + 1): -1 before the first
// instruction, -2 when not known.
int64_t python_instruction_index(const PythonLayout& layout, uint32_t recorded);

// The line of instruction `index` (in code units; -1: not started) of a code object, from its
// line table in 3.minor's format; 0 when the instruction has no line or is not known (-2).
int python_line(const PythonCode& code, int minor, int64_t index);

}  // namespace leakwatch
