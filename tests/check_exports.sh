#!/bin/sh
# Fails if the shared library exports any symbol outside the tm2_ namespace.
set -eu
lib=$1
bad=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | grep -v '^tm2_' || true)
count=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ && $3 ~ /^tm2_/' | wc -l)
if [ -n "$bad" ]; then
    echo "symbols exported outside the tm2_ namespace:"; echo "$bad"; exit 1
fi
[ "$count" -gt 0 ] || { echo "no tm2_ symbols exported"; exit 1; }
echo "1 passed, 0 failed: $count tm2_ symbols exported, nothing else"
