#!/bin/sh
# run_one.sh TARGET SEED_CORPUS WORK_CORPUS SECONDS
# Fuzzes TARGET for SECONDS: new inputs go to WORK_CORPUS, the seed corpus in
# the tree is only read. Exit status is libFuzzer's (non-zero on a finding).
set -eu
target=$1; seeds=$2; work=$3; secs=$4
mkdir -p "$work"
[ -d "$seeds" ] || { echo "missing seed corpus $seeds"; exit 1; }
exec "$target" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
     -print_final_stats=1 -artifact_prefix="$work/../" "$work" "$seeds"
