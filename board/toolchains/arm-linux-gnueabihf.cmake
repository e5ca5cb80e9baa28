# Cross build for armhf (32-bit ARMv7) gateways against a sysroot (docs/board.md).
#
# Adding the armhf architecture breaks apt-get update on the build machines' mirror, so the
# armhf libraries are not installed but unpacked: apt-get download the armhf .deb files
# (libc6, libc6-dev, linux-libc-dev and each library with its -dev package) and
# `dpkg -x FILE.deb SYSROOT` each of them. Then:
#   apt-get install gcc-arm-linux-gnueabihf qemu-user
#   cmake -S . -B build-armhf -DCMAKE_TOOLCHAIN_FILE=board/toolchains/arm-linux-gnueabihf.cmake \
#         -DMLK_ARMHF_SYSROOT=/path/to/sysroot
# (or export MLK_ARMHF_SYSROOT). Do not leave the armhf architecture added to dpkg.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR arm)
set(CMAKE_C_COMPILER arm-linux-gnueabihf-gcc)
set(CMAKE_LIBRARY_ARCHITECTURE arm-linux-gnueabihf)

# The toolchain file is read again for every try_compile, where cache variables from the
# command line are not set: the environment variable carries the sysroot there.
if(NOT MLK_ARMHF_SYSROOT AND DEFINED ENV{MLK_ARMHF_SYSROOT})
  set(MLK_ARMHF_SYSROOT "$ENV{MLK_ARMHF_SYSROOT}")
endif()
if(NOT MLK_ARMHF_SYSROOT)
  message(FATAL_ERROR
          "arm-linux-gnueabihf.cmake: set MLK_ARMHF_SYSROOT to the unpacked armhf sysroot")
endif()
set(MLK_ARMHF_SYSROOT "${MLK_ARMHF_SYSROOT}" CACHE PATH "unpacked armhf sysroot (dpkg -x)")
set(ENV{MLK_ARMHF_SYSROOT} "${MLK_ARMHF_SYSROOT}")
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES MLK_ARMHF_SYSROOT)

set(CMAKE_SYSROOT "${MLK_ARMHF_SYSROOT}")
set(CMAKE_FIND_ROOT_PATH "${MLK_ARMHF_SYSROOT}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# The host's pkg-config, told to read only the sysroot's .pc files and to prefix the paths
# they name (-I/usr/include -> -I$SYSROOT/usr/include).
set(PKG_CONFIG_EXECUTABLE pkg-config CACHE FILEPATH "pkg-config (reads the armhf sysroot)")
set(ENV{PKG_CONFIG_SYSROOT_DIR} "${MLK_ARMHF_SYSROOT}")
set(_mlk_pc "${MLK_ARMHF_SYSROOT}/usr/lib/arm-linux-gnueabihf/pkgconfig")
set(ENV{PKG_CONFIG_LIBDIR} "${_mlk_pc}:${MLK_ARMHF_SYSROOT}/usr/share/pkgconfig")

set(CMAKE_CROSSCOMPILING_EMULATOR "qemu-arm;-L;${MLK_ARMHF_SYSROOT}")
