#!/usr/bin/env bash
# check_deb.sh [PACKAGE.deb]: installs the Debian package `make deb` built
# (default build/deb/tm2p2p_*.deb), checks what it installed, and purges it
# again, leaving the machine as it was. Needs root (or sudo); refuses to run
# where tm2p2p is already installed rather than replace it.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
deb=${1:-$(ls build/deb/tm2p2p_*.deb 2>/dev/null | head -n1)}
[ -n "$deb" ] && [ -f "$deb" ] || { echo "check_deb: no package; run make deb first" >&2; exit 1; }
deb=$(realpath "$deb")
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive

if dpkg-query -W -f='${Status}' tm2p2p 2>/dev/null | grep -q 'ok installed'; then
    echo "check_deb: tm2p2p is already installed here; not touching it" >&2
    exit 1
fi
scripts/deps.sh

work=$(mktemp -d)
cleanup() {
    # purge, not just remove: the maintainer scripts would otherwise keep the
    # package known to dpkg ("rc")
    $sudo dpkg --purge tm2p2p >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "check_deb: $*" >&2; exit 1; }

echo "check_deb: installing $(basename "$deb")"
if ! $sudo dpkg -i "$deb"; then
    echo "check_deb: fetching missing dependencies"
    $sudo apt-get update -qq
    $sudo apt-get -f install -y -qq --no-install-recommends
fi
dpkg-query -W -f='${Status}' tm2p2p | grep -q 'install ok installed' || fail "package not installed"
version=$(dpkg-query -W -f='${Version}' tm2p2p)

# The installed program, found on PATH, reports the package's version.
[ "$(command -v tm2p2p)" = /usr/bin/tm2p2p ] || fail "tm2p2p is not /usr/bin/tm2p2p"
/usr/bin/tm2p2p version | tee "$work/version"
[ "$(wc -l < "$work/version")" -eq 6 ] || fail "tm2p2p version: not 6 lines"
[ "$(sed -n 1p "$work/version")" = "tm2p2p $version" ] || fail "tm2p2p version disagrees with the package ($version)"
grep -Eqx 'commit ([0-9a-f]{40}(-dirty)?|unknown)' "$work/version" || fail "bad commit line"
grep -Eq '^libsodium [0-9]' "$work/version" || fail "bad libsodium line"
grep -Eq '^OpenSSL ' "$work/version" || fail "bad OpenSSL line"
grep -Eq '^libuv [0-9]' "$work/version" || fail "bad libuv line"

# A program against the installed headers and library: what it reports must
# match the installed tm2p2p's own report.
cat > "$work/consumer.c" <<'C'
#include <stdio.h>
#include <string.h>

#include <tm2p2p.h>

int main(void)
{
    tm2_node_key key;
    uint8_t seed[32];
    memset(seed, 1, sizeof seed);
    tm2_node_key_from_seed(&key, seed);
    tm2_id id;
    tm2_node_key_id(&key, &id);
    tm2_node_key_wipe(&key);
    if (strcmp(id.s, "g1x36slx9at870e9rd53d2405n80s4ff94dx42dl") != 0) {
        fprintf(stderr, "wrong id %s\n", id.s);
        return 1;
    }
    tm2_build_info bi;
    tm2_build_info_get(&bi);
    printf("tm2p2p %s\ncommit %s\n", tm2_version(), bi.commit);
    return 0;
}
C
head -n2 "$work/version" > "$work/want"

[ "$(pkg-config --modversion tm2p2p)" = "$version" ] || fail "tm2p2p.pc has version $(pkg-config --modversion tm2p2p)"
# pkg-config, shared library from the linker's default path (no -L, no
# LD_LIBRARY_PATH: the ldconfig trigger ran)
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror -o "$work/consumer_pc" "$work/consumer.c" \
    $(pkg-config --cflags --libs tm2p2p)
"$work/consumer_pc" > "$work/got_pc"
cmp -s "$work/want" "$work/got_pc" || fail "pkg-config consumer reports $(cat "$work/got_pc")"
# ldd's output is read whole first: grep -q stops at the first match, and
# under pipefail the SIGPIPE that leaves ldd would fail the check.
deps=$(ldd "$work/consumer_pc")
grep -Eq 'libtm2p2p\.so\.0 => /(usr/)?lib/' <<<"$deps" || fail "consumer_pc does not load the installed libtm2p2p.so.0"
echo "check_deb: pkg-config consumer ok"

# CMake package: the shared and the static library
mkdir -p "$work/cm"
cat > "$work/cm/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.20)
project(tm2p2p_deb_consumer C)
find_package(tm2p2p 0.1 REQUIRED)
add_executable(consumer_shared ../consumer.c)
target_link_libraries(consumer_shared PRIVATE tm2p2p::tm2p2p_shared)
add_executable(consumer_static ../consumer.c)
target_link_libraries(consumer_static PRIVATE tm2p2p::tm2p2p_static)
CM
cmake -S "$work/cm" -B "$work/cm/build" -G Ninja >/dev/null
cmake --build "$work/cm/build" >/dev/null
for v in shared static; do
    "$work/cm/build/consumer_$v" > "$work/got_$v"
    cmp -s "$work/want" "$work/got_$v" || fail "CMake $v consumer reports $(cat "$work/got_$v")"
done
deps=$(ldd "$work/cm/build/consumer_static")
grep -q libtm2p2p <<<"$deps" && fail "static consumer loads libtm2p2p.so"
echo "check_deb: CMake package consumers (shared, static) ok"

# The units
units=(/usr/lib/systemd/system/tm2p2p-node.service /usr/lib/systemd/system/tm2p2p-seed.service)
for u in "${units[@]}"; do
    [ -f "$u" ] || fail "missing $u"
done
if command -v systemd-analyze >/dev/null 2>&1; then
    # verify exits 0 on unknown keys and bad values (it ignores them and
    # warns), so any line about our units fails the check
    out=$(systemd-analyze verify "${units[@]}" 2>&1) || { echo "$out"; fail "systemd-analyze verify failed"; }
    [ -z "$out" ] || echo "$out"
    if grep -q 'tm2p2p-' <<<"$out"; then fail "systemd-analyze verify warns about the units"; fi
    for u in "${units[@]}"; do
        systemd-analyze security --offline=true "$u" 2>/dev/null | grep 'Overall exposure' || true
    done
    echo "check_deb: systemd-analyze verify ok"
else
    echo "check_deb: no systemd-analyze here; units not verified"
fi

# Purge, and check nothing is left behind.
$sudo dpkg --purge tm2p2p
if dpkg-query -W -f='${Status}' tm2p2p 2>/dev/null | grep -q 'installed'; then
    fail "tm2p2p still known to dpkg after purge"
fi
for f in /usr/bin/tm2p2p /usr/include/tm2p2p.h "${units[@]}"; do
    [ ! -e "$f" ] || fail "$f left after purge"
done
cache=$(ldconfig -p)
grep -q libtm2p2p <<<"$cache" && fail "libtm2p2p still in the linker cache"
echo "check_deb: installed, checked and purged $(basename "$deb") ($src)"
