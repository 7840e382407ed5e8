# Cross-compiling for 64-bit ARM Linux with Debian's g++-aarch64-linux-gnu;
# the tests run under qemu-user (qemu-user-static), which ctest prefixes to
# each test command (CMAKE_CROSSCOMPILING_EMULATOR) and the tests' run_tool
# prefixes to the tools they start. Libraries the build links (xxhash) and
# the programs load come from Debian's arm64 multiarch packages
# (libxxhash-dev:arm64, libgomp1:arm64, libstdc++6:arm64);
# tests/aarch64-qemu.sh installs all of it.
#
#   cmake -S . -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

# The target's libraries (the cross compiler's sysroot and the arm64
# multiarch folders); programs (cmake, sh) are the host's. Headers are found
# in the host's /usr/include too: the header-only dependencies (doctest,
# nlohmann-json, xxhash.h) are architecture-independent.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)

# qemu's -cpu max has the ARMv8.2 dot-product and fp16 extensions, so the
# NEON kernels run. The guest's loader and C/C++ runtime are Debian's arm64
# multiarch packages (libc6:arm64, libstdc++6:arm64, libgomp1:arm64), found
# where the loader looks by default: qemu's -L prefix (the cross compiler's
# /usr/aarch64-linux-gnu) would do too, but qemu 7.2 then hangs in fork(),
# which tests use. GLOAS_QEMU_CPU picks another CPU model (e.g. cortex-a53,
# a plain ARMv8.0 without them, to run the scalar fallback of the dispatch).
if(NOT DEFINED GLOAS_QEMU_CPU)
  set(GLOAS_QEMU_CPU max)
endif()
find_program(GLOAS_QEMU_AARCH64 NAMES qemu-aarch64-static qemu-aarch64)
if(GLOAS_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${GLOAS_QEMU_AARCH64};-cpu;${GLOAS_QEMU_CPU})
endif()
