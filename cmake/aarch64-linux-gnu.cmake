# Cross-compiles leakwatch for aarch64 with Debian's cross compiler (g++-aarch64-linux-gnu)
# against the arm64 multiarch -dev packages (scripts/matrix-deps.sh installs both):
#   cmake -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
#         -DVMLINUX_BTF=/path/to/arm64.btf -DBUILD_TESTING=OFF -DLEAKWATCH_FIXTURES=ON
# The BPF objects need an arm64 kernel's BTF (tests/matrix/kernels.py btf aarch64 bookworm F
# extracts one from Debian's arm64 kernel package); bpf/CMakeLists.txt refuses the host's.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

# Libraries and CMake packages from the arm64 multiarch directories; programs (clang,
# bpftool) from the host.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")
# libyaml-cpp-dev for arm64, unpacked by scripts/matrix-deps.sh
if(DEFINED ENV{LEAKWATCH_ARM64_OVERLAY})
  set(LEAKWATCH_ARM64_OVERLAY $ENV{LEAKWATCH_ARM64_OVERLAY})
else()
  set(LEAKWATCH_ARM64_OVERLAY /var/cache/leakwatch-matrix/arm64-overlay)
endif()
list(APPEND CMAKE_PREFIX_PATH ${LEAKWATCH_ARM64_OVERLAY}/usr)
