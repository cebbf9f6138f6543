#include "symbols/placement.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>

namespace leakwatch {

uint64_t null_check_prefix(std::span<const uint8_t> code) {
#if defined(__x86_64__)
    // test %rdi,%rdi
    if (code.size() < 3 || code[0] != 0x48 || code[1] != 0x85 || code[2] != 0xff) return 0;
    if (code.size() >= 5 && code[3] == 0x74) return 5;                     // je rel8
    if (code.size() >= 9 && code[3] == 0x0f && code[4] == 0x84) return 9;  // je rel32
#else
    (void)code;
#endif
    return 0;
}

uint64_t entry_only_probe_offset(const std::string& path, uint64_t offset) {
    std::array<uint8_t, 16> code{};
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return offset;
    ssize_t n = pread(fd, code.data(), code.size(), static_cast<off_t>(offset));
    close(fd);
    if (n <= 0) return offset;
    return offset +
           null_check_prefix(std::span<const uint8_t>(code.data(), static_cast<size_t>(n)));
}

}  // namespace leakwatch
