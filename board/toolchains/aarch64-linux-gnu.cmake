# Cross build for arm64 gateways with Debian multiarch libraries (docs/board.md):
#   dpkg --add-architecture arm64 && apt-get update
#   apt-get install gcc-aarch64-linux-gnu qemu-user pkgconf:arm64 \
#       libmodbus-dev:arm64 libsqlite3-dev:arm64 libmosquitto-dev:arm64 libcjson-dev:arm64 \
#       libmicrohttpd-dev:arm64 libmbedtls-dev:arm64 libcmocka-dev:arm64
#   cmake -S . -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=board/toolchains/aarch64-linux-gnu.cmake
#   make -C build-arm64 -j2 && (cd build-arm64 && ctest -R unit)   # tests run under qemu
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

# The arm64 pkg-config (from pkgconf:arm64) looks only at /usr/lib/aarch64-linux-gnu/pkgconfig
# and /usr/share/pkgconfig, so pkg_check_modules() finds the :arm64 -dev packages.
set(PKG_CONFIG_EXECUTABLE aarch64-linux-gnu-pkg-config CACHE FILEPATH "pkg-config for arm64")

# Multiarch: the :arm64 headers and libraries live in the host's /usr (include/ and
# lib/aarch64-linux-gnu/), which Debian's cross gcc searches; find_library() looks in
# lib/${CMAKE_LIBRARY_ARCHITECTURE}, so it does not pick up the host's x86_64 libraries.
# No CMAKE_SYSROOT: the sysroot is / .

# ctest runs the test programs through qemu-user (about 20x slower than native).
set(CMAKE_CROSSCOMPILING_EMULATOR "qemu-aarch64;-L;/usr/aarch64-linux-gnu")
