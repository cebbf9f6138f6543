// Where each allocator function's uprobe goes (tracker/placement.cpp): prologues of glibc and
// jemalloc decoded from their bytes, and the real libc read from its file.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "proc/proc.h"
#include "symbols/symbolizer.h"
#include "tracker/placement.h"

TEST_CASE("probes go on the first instruction the kernel emulates", "[placement]") {
    using leakwatch::place_probe;
    auto at = [](std::initializer_list<uint8_t> bytes, int args, bool null_is_noop = false) {
        std::vector<uint8_t> code(bytes);
        return place_probe(code, args, null_is_noop);
    };
#if defined(__x86_64__)
    // glibc 2.36's prologues (objdump of Debian 12's libc.so.6)
    auto malloc = at({0x41, 0x54, 0x55, 0x53}, 1);  // push %r12; push %rbp; push %rbx
    CHECK(malloc.skip == 0);
    CHECK(malloc.emulated);
    // free: test %rdi,%rdi; je rel32; push %rbp
    auto free_rel32 = at({0x48, 0x85, 0xff, 0x0f, 0x84, 0xbf, 0x00, 0x00, 0x00, 0x55}, 1, true);
    CHECK(free_rel32.skip == 9);
    CHECK(free_rel32.emulated);
    CHECK(at({0x48, 0x85, 0xff, 0x74, 0x10, 0x55}, 1, true).skip == 5);
    // Without the NULL rule the je itself is the first emulated instruction: every call,
    // free(NULL) too, passes it.
    auto je = at({0x48, 0x85, 0xff, 0x74, 0x10, 0x55}, 1, false);
    CHECK(je.skip == 3);
    CHECK(je.emulated);
    // test then jne is not a NULL return: the jne is probed, not skipped
    CHECK(at({0x48, 0x85, 0xff, 0x75, 0x10, 0x55}, 1, true).skip == 3);
    // memalign: cmpb $0x0,disp32(%rip); je rel8
    auto memalign = at({0x80, 0x3d, 0x71, 0x0e, 0x14, 0x00, 0x00, 0x74, 0x07}, 2);
    CHECK(memalign.skip == 7);
    CHECK(memalign.emulated);
    // valloc: cmpb $0x0,disp32(%rip); push %rbx
    CHECK(at({0x80, 0x3d, 0x31, 0x0e, 0x14, 0x00, 0x00, 0x53}, 1).skip == 7);
    // mmap: mov %ecx,%r10d; test $0xfff,%r9d; jne rel8
    auto mmap = at({0x41, 0x89, 0xca, 0x41, 0xf7, 0xc1, 0xff, 0x0f, 0x00, 0x00, 0x75, 0x14}, 2);
    CHECK(mmap.skip == 10);
    CHECK(mmap.emulated);
    CHECK(mmap.how.find("past mov, test") != std::string::npos);

    // jemalloc 5.3's (Debian 12's libjemalloc2) malloc: cmp $0x1000,%rdi; ja rel32
    CHECK(at({0x48, 0x81, 0xff, 0x00, 0x10, 0x00, 0x00, 0x0f, 0x87, 0x93, 0x00, 0x00, 0x00}, 1)
              .skip == 7);
    // and its free: ten instructions of address arithmetic (writing %rax, %rdx, %rcx, none
    // of them free's argument) before the first conditional jump
    auto je_free =
        at({0x48, 0x89, 0xf8, 0x48, 0x8b, 0x15, 0x0e, 0x53, 0x0a, 0x00, 0x48, 0x89, 0xf9, 0x48,
            0xc1, 0xe8, 0x1a, 0x48, 0x81, 0xe1, 0x00, 0x00, 0x00, 0xc0, 0x25, 0xf0, 0x00, 0x00,
            0x00, 0x64, 0x48, 0x03, 0x04, 0x25, 0x00, 0x00, 0x00, 0x00, 0x48, 0x01, 0xd0, 0x48,
            0x3b, 0x88, 0xb0, 0x01, 0x00, 0x00, 0x0f, 0x85, 0x8a, 0x00, 0x00, 0x00},
           1, true);
    CHECK(je_free.skip == 0x30);
    CHECK(je_free.emulated);
    // The same code for a function that reads three arguments: the load into %rdx stops it.
    auto three = at({0x48, 0x89, 0xf8, 0x48, 0x8b, 0x15, 0x0e, 0x53, 0x0a, 0x00, 0x0f, 0x85, 0x8a,
                     0x00, 0x00, 0x00},
                    3);
    CHECK(three.skip == 0);
    CHECK(three.how.find("writes an argument") != std::string::npos);

    // What must not be skipped: the probe stays at the entry, marked single-stepped.
    // reallocarray: mov %rsi,%rax; mul %rdx (writes %rdx, its third argument)
    auto reallocarray = at({0x48, 0x89, 0xf0, 0x48, 0xf7, 0xe2, 0x48, 0x89, 0xc6, 0x70, 0x05}, 3);
    CHECK(reallocarray.skip == 0);
    CHECK_FALSE(reallocarray.emulated);
    // mremap: sub $0x58,%rsp moves the stack pointer
    auto mremap = at({0x48, 0x83, 0xec, 0x58, 0x4c, 0x89, 0x44, 0x24, 0x40}, 3);
    CHECK(mremap.skip == 0);
    CHECK(mremap.how.find("stack pointer") != std::string::npos);
    // mov %rax,%rdi writes the first argument before the push
    auto clobber = at({0x48, 0x89, 0xc7, 0x55}, 1);
    CHECK(clobber.skip == 0);
    CHECK_FALSE(clobber.emulated);
    // mov %rsp,%rbp is fine to skip (writes neither); mov %rbp,%rsp is not
    CHECK(at({0x48, 0x89, 0xe5, 0x55}, 1).skip == 3);
    CHECK(at({0x48, 0x89, 0xec, 0x55}, 1).skip == 0);
    // a store to memory stops it: mov %rdi,(%rsp)
    CHECK(at({0x48, 0x89, 0x3c, 0x24, 0x55}, 1).skip == 0);
    // mov $0xb,%eax; syscall (munmap): the system call is not stepped over
    auto munmap = at({0xb8, 0x0b, 0x00, 0x00, 0x00, 0x0f, 0x05}, 2);
    CHECK(munmap.skip == 0);
    CHECK(munmap.how.find("syscall") != std::string::npos);
    // an indirect jump is a branch the kernel does not emulate
    CHECK(at({0x48, 0x89, 0xe5, 0xff, 0xe0}, 1).skip == 0);
    // cut short: nothing is guessed from missing bytes
    CHECK(at({0x48, 0x85, 0xff, 0x0f}, 1, true).skip == 0);
    CHECK(at({}, 1).skip == 0);
#else
    auto any = at({0x41, 0x54}, 1);
    CHECK(any.skip == 0);
    CHECK_FALSE(any.emulated);
#endif
}

TEST_CASE("place_probe_in_file reads the real libc", "[placement]") {
    // The libc this test runs on: malloc and free land on emulated instructions, or stay at
    // the entry; never past a branch that free(p != NULL) takes.
    auto maps = leakwatch::ProcReader().maps(getpid());
    REQUIRE(maps);
    auto libc = leakwatch::find_allocator_mapping(*maps, leakwatch::Allocator{}, "");
    REQUIRE(libc);
    auto elf = leakwatch::ElfFile::open(libc->path);
    REQUIRE(elf);
    auto file = leakwatch::open_file(libc->path, 512 << 20);
    REQUIRE(file);
    for (const char* fn : {"malloc", "free", "calloc", "realloc", "mmap"}) {
        auto vaddr = (*elf)->function_address(fn);
        REQUIRE(vaddr);
        auto off = (*elf)->file_offset_of_vaddr(*vaddr);
        REQUIRE(off);
        auto where = leakwatch::place_probe_in_file(*file, *off, 2, std::string(fn) == "free");
        INFO(fn << ": " << where.how);
        CHECK(where.skip < 16);
        if (where.skip > 0) CHECK(where.emulated);
    }
    // Past the end of the file: nothing to read, the entry.
    auto none = leakwatch::place_probe_in_file(*file, file->size() + 4096, 1, false);
    CHECK(none.skip == 0);
    CHECK_FALSE(none.emulated);
}

TEST_CASE("instruction_boundary decodes from the function's start", "[placement]") {
    // push %r12 (41 54); mov %rdi,%rbp (48 89 fd); sub $0x8,%rsp (48 83 ec 08)
    const std::vector<uint8_t> code = {0x41, 0x54, 0x48, 0x89, 0xfd, 0x48, 0x83, 0xec, 0x08};
    using leakwatch::instruction_boundary;
    CHECK(instruction_boundary(code, 0));
    CHECK(instruction_boundary(code, 2));
    CHECK(instruction_boundary(code, 5));
    CHECK_FALSE(instruction_boundary(code, 1));  // inside push %r12: what a fake symbol names
    CHECK_FALSE(instruction_boundary(code, 3));
    CHECK_FALSE(instruction_boundary(code, 7));
    CHECK_FALSE(instruction_boundary(code, 9));  // past the bytes given
    CHECK_FALSE(instruction_boundary(code, 100));
    // Bytes that do not decode cannot be vouched for.
    const std::vector<uint8_t> junk = {0x0f, 0xff, 0xff, 0xff, 0x90, 0x90};
    CHECK_FALSE(instruction_boundary(junk, 4));
}
