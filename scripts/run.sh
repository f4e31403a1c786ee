#!/usr/bin/env bash
# The main job (`make run`): run.sh BUILD_DIR [args...]
#
# Shows the node identity layer working end to end with the built program:
# a demo node home under the build directory, its node key (created once,
# then reused), the node ID and public key, and the canonical NetAddress
# other nodes would use to dial it on loopback.
set -euo pipefail
dir=$1; shift
bin="$dir/tm2p2p"
home="$dir/demo-home"
key="$home/secrets/node_key.json"
port=26656

section() { printf '\n== %s\n' "$*"; }

section "node home: $home"
if [ -f "$key" ]; then
    echo "reusing the node key in $key"
else
    "$bin" keys gen --home "$home" 2>&1 >/dev/null   # prints "wrote <file>"
    echo "file mode $(stat -c %a "$key"), directory mode $(stat -c %a "$home/secrets")"
fi

section "node key file (reference format; the private key is elided here)"
sed -E 's/("priv_key": ")[^"]*"/\1<88 base64 characters: seed || public key>"/' "$key"
echo

section "node identity (tm2p2p keys show --json)"
"$bin" keys show --home "$home" --json

section "NetAddress: parse, then print canonically (Go String() form)"
for addr in "127.0.0.1:$port" "tcp://127.0.0.1:$port" "[::ffff:127.0.0.1]:0$port" "[::1]:$port" \
            "[0:0:0:0:0:0:0:1]:$port"; do
    printf '  %-28s -> %s\n' "$addr" "$("$bin" keys show --home "$home" --addr "$addr")"
done

section "what a peer puts in persistent_peers to reach this node on loopback"
"$bin" keys show --home "$home" --addr "127.0.0.1:$port"
