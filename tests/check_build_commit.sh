#!/bin/sh
# check_build_commit.sh CMAKE SCRIPT
# The build-time commit header (cmake/build_commit.cmake): "unknown" outside
# git, the commit of a checkout, "-dirty" with changes, a new commit picked up
# on the next run, and the header left untouched (no rebuild) when nothing
# changed. Exits 77 (skipped) without git.
set -eu
cmake=$1; script=$2
command -v git >/dev/null 2>&1 || { echo "no git: skipped"; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src=$work/src; out=$work/h/tm2_build_commit.h
mkdir -p "$src"
gen() { "$cmake" -DSRC="$src" -DOUT="$out" -DVERSION=1.2.3 -DGIT="$(command -v git)" -P "$script"; }
want() {
    grep -qx "#define TM2_BUILD_COMMIT \"$1\"" "$out" || { echo "wanted $1, got:"; cat "$out"; exit 1; }
}
g() { git -C "$src" -c user.name=t -c user.email=t@example.org "$@" >/dev/null; }

echo a > "$src/f"
gen; want unknown
grep -qx '#define TM2_BUILD_VERSION "1.2.3"' "$out" || { echo "no version line"; exit 1; }

g init -q; g add f; g commit -q -m one
gen; want "$(git -C "$src" rev-parse HEAD)"
touch -d 2000-01-01 "$out"
gen
[ "$(stat -c %Y "$out")" = "$(date -d 2000-01-01 +%s)" ] || { echo "unchanged commit rewrote the header"; exit 1; }

echo b > "$src/f"
gen; want "$(git -C "$src" rev-parse HEAD)-dirty"
echo untracked > "$src/u"
g commit -q -a -m two
gen; want "$(git -C "$src" rev-parse HEAD)"

# a tree inside another checkout (an unpacked tarball) is not that checkout
mkdir "$src/sub"
src=$src/sub gen; want unknown
echo "1 passed, 0 failed: build commit header"
