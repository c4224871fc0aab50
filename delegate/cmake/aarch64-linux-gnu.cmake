# Cross-compiles the delegate for 64-bit ARM Linux with Debian/Ubuntu's GNU cross toolchain:
#   apt-get install g++-aarch64-linux-gnu qemu-user       (qemu only to run the tests)
#   cmake -S delegate -B build/aarch64 -DCMAKE_TOOLCHAIN_FILE=delegate/cmake/aarch64-linux-gnu.cmake
#   cmake --build build/aarch64 -j2 --target npas_kernels test_kernels npas_delegate
#   qemu-aarch64 -L /usr/aarch64-linux-gnu build/aarch64/test_kernels
# Override the compiler prefix with -DNPAS_CROSS_PREFIX=... (e.g. aarch64-none-linux-gnu-).
# For Android use the NDK's own toolchain file instead (see delegate/README.md).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

if(NOT NPAS_CROSS_PREFIX)
  set(NPAS_CROSS_PREFIX aarch64-linux-gnu-)
endif()
set(CMAKE_C_COMPILER ${NPAS_CROSS_PREFIX}gcc)
set(CMAKE_CXX_COMPILER ${NPAS_CROSS_PREFIX}g++)

# Debian's multiarch cross sysroot.
if(NOT CMAKE_SYSROOT AND EXISTS /usr/aarch64-linux-gnu)
  set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
endif()
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# Tests built here run under qemu-aarch64 (CMake's test launcher / ctest).
find_program(NPAS_QEMU_AARCH64 qemu-aarch64)
if(NPAS_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${NPAS_QEMU_AARCH64};-L;/usr/aarch64-linux-gnu)
endif()
