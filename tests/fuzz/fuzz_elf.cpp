// The ELF symbolizer and the CFI reader on arbitrary files: every ELF file a watched process
// maps (and its debug files) is the process's to write.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "symbols/cfi.h"
#include "symbols/symbolizer.h"
#include "util/text.h"

using namespace leakwatch;

namespace {

// One scratch file per fuzzing process, rewritten for each input.
const std::string& scratch() {
    static const std::string path = [] {
        const char* dir = std::getenv("TMPDIR");
        std::string p = std::string(dir ? dir : "/tmp") + "/lw-fuzz-elf-XXXXXX";
        int fd = mkstemp(p.data());
        if (fd < 0) std::abort();
        close(fd);
        std::atexit([] { unlink(scratch().c_str()); });
        return p;
    }();
    return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string& path = scratch();
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) std::abort();
    if (size && std::fwrite(data, 1, size, f) != size) std::abort();
    std::fclose(f);
    const uint64_t probes[] = {0, 0x40, 0x1000, 0x1040, 0x401000, size / 2, ~uint64_t{0} - 8};
    if (auto elf = ElfFile::open(path, 1 << 20)) {
        for (uint64_t vaddr : probes) {
            if (const auto* s = (*elf)->symbol_at(vaddr)) {
                if (!is_shown_text(s->name, kMaxShownName)) __builtin_trap();
            }
            (void)(*elf)->file_offset_of_vaddr(vaddr);
            (void)(*elf)->vaddr_of_file_offset(vaddr);
        }
        (void)(*elf)->function_address("malloc");
        if (!is_shown_text((*elf)->debuglink(), kMaxShownPath)) __builtin_trap();
    }
    if (auto cfi = CfiFile::open(path, 1 << 20)) {
        for (uint64_t vaddr : probes) {
            (void)(*cfi)->rule_at(vaddr);
            (void)(*cfi)->function_start(vaddr);
        }
        (void)(*cfi)->frame_pointer_use();
    }
    return 0;
}
