#!/bin/sh
# check_install.sh BUILD_DIR SRC_DIR "EXTRA_CFLAGS"
# Installs the build into a scratch prefix, then builds and runs a consumer
# program twice: through pkg-config and through find_package(tm2p2p).
set -eu
build=$1; src=$2; extra=${3:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix

cmake --install "$build" --prefix "$prefix" >/dev/null
for f in include/tm2p2p.h include/tm2p2p/switch.h bin/tm2p2p; do
    [ -e "$prefix/$f" ] || { echo "install lacks $f"; exit 1; }
done
libdir=$(dirname "$(find "$prefix" -name libtm2p2p.a | head -n1)")
[ -e "$libdir/libtm2p2p.so" ] || { echo "install lacks libtm2p2p.so"; exit 1; }
[ -e "$libdir/pkgconfig/tm2p2p.pc" ] || { echo "install lacks tm2p2p.pc"; exit 1; }

# pkg-config
export PKG_CONFIG_PATH="$libdir/pkgconfig"
# shellcheck disable=SC2046,SC2086
cc $extra -o "$work/consumer_pc" "$src/tests/install/consumer.c" \
    $(pkg-config --cflags tm2p2p) $(pkg-config --libs tm2p2p)
LD_LIBRARY_PATH="$libdir" "$work/consumer_pc" >/dev/null

# CMake package, shared library
mkdir -p "$work/cm"
cp "$src/tests/install/consumer.c" "$work/cm/"
cp "$src/tests/install/CMakeLists.txt.in" "$work/cm/CMakeLists.txt"
cmake -S "$work/cm" -B "$work/cm/build" -DCMAKE_PREFIX_PATH="$prefix" \
      -DCMAKE_C_FLAGS="$extra" -DCMAKE_EXE_LINKER_FLAGS="$extra" >/dev/null
cmake --build "$work/cm/build" >/dev/null
LD_LIBRARY_PATH="$libdir" "$work/cm/build/consumer_cmake" >/dev/null
echo "1 passed, 0 failed: installed headers, libraries, pkg-config file, CMake package and program"
