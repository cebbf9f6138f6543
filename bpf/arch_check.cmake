# Keeps one architecture's BPF out of another's build (cmake -P, from bpf/CMakeLists.txt).
#   -DMODE=vmlinux -DARCH=x86|arm64 -DFILE=vmlinux.h: fails unless the BTF the header was
#     dumped from is of ARCH (its pt_regs layout decides what PT_REGS_* read).
#   -DMODE=skeleton -DARCH=... -DIN=x.skel.h.tmp -DOUT=x.skel.h: writes the skeleton with a
#     guard that stops the compilation of any C/C++ file of another architecture including it.
cmake_minimum_required(VERSION 3.25)
if(MODE STREQUAL "vmlinux")
  file(STRINGS ${FILE} arm64_regs REGEX "^struct user_pt_regs {" LIMIT_COUNT 1)
  file(STRINGS ${FILE} x86_regs REGEX "^struct pt_regs {" LIMIT_COUNT 1)
  file(READ ${FILE} text)
  string(FIND "${text}" "struct pt_regs {\n\tlong unsigned int r15;" x86_layout)
  if(ARCH STREQUAL "arm64" AND NOT arm64_regs)
    message(FATAL_ERROR "${FILE}: not an arm64 kernel's BTF (no struct user_pt_regs); "
                        "set VMLINUX_BTF to an arm64 BTF")
  elseif(ARCH STREQUAL "x86" AND x86_layout EQUAL -1)
    message(FATAL_ERROR "${FILE}: not an x86_64 kernel's BTF (pt_regs does not start with "
                        "r15); set VMLINUX_BTF to an x86_64 BTF")
  endif()
elseif(MODE STREQUAL "skeleton")
  if(ARCH STREQUAL "arm64")
    set(macro __aarch64__)
  else()
    set(macro __x86_64__)
  endif()
  file(READ ${IN} skel)
  get_filename_component(name ${OUT} NAME)
  file(WRITE ${OUT}
       "/* BPF compiled with -D__TARGET_ARCH_${ARCH} */\n"
       "#if !defined(${macro})\n"
       "#error \"${name} holds BPF built for ${ARCH}: this build targets another architecture\"\n"
       "#endif\n" "${skel}")
  file(REMOVE ${IN})
else()
  message(FATAL_ERROR "arch_check.cmake: unknown MODE '${MODE}'")
endif()
