#include "tracker/attacher.h"

#include "leakwatch.h"

namespace leakwatch {

const std::vector<AllocatorFunction>& allocator_functions() {
    static const std::vector<AllocatorFunction> functions = {
        {"malloc", true, LW_MALLOC, 1},
        {"calloc", true, LW_CALLOC, 2},
        {"realloc", true, LW_REALLOC, 2},
        {"reallocarray", true, LW_REALLOCARRAY, 3},
        {"posix_memalign", true, LW_POSIX_MEMALIGN, 3},
        {"aligned_alloc", true, LW_ALIGNED_ALLOC, 2},
        {"memalign", true, LW_MEMALIGN, 2},
        {"valloc", true, LW_VALLOC, 1},
        {"pvalloc", true, LW_PVALLOC, 1},
        {"mmap", true, LW_MMAP, 2},
        {"mremap", true, LW_MREMAP, 3},
        {"free", false, LW_FREE, 1},
        {"munmap", false, LW_MUNMAP, 2},
        // jemalloc's own API and its C++ operators, which reach its internals without passing
        // through malloc or free: probed where the allocator library defines them.
        {"mallocx", true, LW_MALLOC, 1},   // (size, flags)
        {"rallocx", true, LW_REALLOC, 2},  // (ptr, size, flags)
        {"dallocx", false, LW_FREE, 1},    // (ptr, flags)
        {"sdallocx", false, LW_FREE, 1},   // (ptr, size, flags)
        {"_Znwm", true, LW_MALLOC, 1},     // operator new(size_t)
        {"_Znam", true, LW_MALLOC, 1},     // operator new[](size_t)
        {"_ZdlPvm", false, LW_FREE, 1},    // operator delete(void*, size_t)
        {"_ZdaPvm", false, LW_FREE, 1},    // operator delete[](void*, size_t)
    };
    return functions;
}

}  // namespace leakwatch
