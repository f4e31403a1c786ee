#!/usr/bin/env bash
# Runs every benchmark in a build dir, or the one named: bench.sh BUILD_DIR [name]
# (scale, 10,000 peers on one hub, takes about 20 s and runs in both).
set -euo pipefail
dir=$1; name=${2:-}
# vs_reference needs the Go reference harness, built on demand only; without
# it that bench skips itself.
if [ -z "$name" ] || [ "$name" = vs_reference ]; then
    cmake --build "$dir" --target bench_tm2ref >&2 || echo "bench: tm2ref not built" >&2
fi
if [ -n "$name" ]; then
    exe="$dir/bench/bench_$name"
    [ -x "$exe" ] || { echo "no benchmark named '$name' (have: $(ls "$dir/bench" | sed -n 's/^bench_//p' | tr '\n' ' '))" >&2; exit 2; }
    exec "$exe"
fi
for exe in "$dir"/bench/bench_*; do
    [ -x "$exe" ] || continue
    echo "== ${exe##*/bench_}"
    "$exe"
done
