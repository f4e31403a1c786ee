#!/usr/bin/env bash
# The main job (`make run`): run.sh BUILD_DIR [testnet flags...]
#
# Runs a local test network on 127.0.0.1 with the built program: one seed node
# and fifteen nodes that know only the seed, find each other through peer
# exchange, and flood gossip messages. A progress line shows peers per node,
# whether the graph is connected, how many nodes reached their outbound
# target and how much gossip arrived; the summary gives the time to converge,
# gossip delivery and latency, and traffic per channel. Extra arguments go to
# `tm2p2p testnet` (try --processes --kill-one, or --help), e.g.
#   make run RUN_ARGS="--nodes 32 --duration 30"
set -euo pipefail
dir=$1; shift
bin="$dir/tm2p2p"

exec "$bin" testnet --nodes 16 --seeds 1 --duration 20 --outbound 4 "$@"
