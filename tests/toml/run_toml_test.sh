#!/bin/sh
# Fetches the toml-test corpus with Go (module cache) and runs the runner on
# it. Exits 77, which CTest reports as skipped, when Go or the corpus is
# missing.
set -u
runner=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
version=v1.6.0
if ! command -v go >/dev/null 2>&1; then
    echo "toml-test: SKIP: go not found (needed to fetch github.com/toml-lang/toml-test@$version)"
    exit 77
fi
# Go needs a cache directory; without HOME keep it beside the build.
if [ -z "${HOME:-}" ] && [ -z "${GOMODCACHE:-}" ]; then
    export GOPATH="${TMPDIR:-/tmp}/tm2p2p-gopath" GOCACHE="${TMPDIR:-/tmp}/tm2p2p-gocache"
fi
cd "${TMPDIR:-/tmp}" || exit 77
if ! GOFLAGS=-mod=mod go mod download github.com/toml-lang/toml-test@$version >/dev/null 2>&1; then
    echo "toml-test: SKIP: cannot download github.com/toml-lang/toml-test@$version"
    exit 77
fi
dir="$(go env GOMODCACHE)/github.com/toml-lang/toml-test@$version/tests"
if [ ! -f "$dir/files-toml-1.0.0" ]; then
    echo "toml-test: SKIP: corpus not found in $dir"
    exit 77
fi
exec "$runner" "$dir"
