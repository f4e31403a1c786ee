#!/usr/bin/env bash
# The main job (`make run`): run.sh BUILD_DIR [args...]
set -euo pipefail
dir=$1; shift
exec "$dir/tm2p2p" --help
