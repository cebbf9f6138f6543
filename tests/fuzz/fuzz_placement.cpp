// Probe placement on arbitrary bytes: the first instructions of a function in a file the
// watched process maps. A placement a few bytes in must be an instruction boundary of the
// code decoded from its start, inside the bytes given.
#include <cstddef>
#include <cstdint>
#include <span>

#include "tracker/placement.h"

using namespace leakwatch;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 1) return 0;
    const int arguments = data[0] % 7;
    const bool null_is_noop = (data[0] & 0x80) != 0;
    const std::span<const uint8_t> code(data + 1, size - 1);
    const Placement p = place_probe(code, arguments, null_is_noop);
    if (p.skip > 0) {
        if (p.skip >= code.size()) __builtin_trap();
        if (!instruction_boundary(code, p.skip)) __builtin_trap();
    }
    for (uint64_t offset = 0; offset < 24; offset++) (void)instruction_boundary(code, offset);
    return 0;
}
