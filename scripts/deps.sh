#!/usr/bin/env bash
# Installs the Debian packages tm2p2p needs to build, test and fuzz; with
# --test also those only the tests use (a Prometheus server and promtool).
# A no-op when everything is present; otherwise needs root (or sudo) and apt-get.
# Packages named as arguments are needed too (e.g. `deps.sh dpkg-dev file` for
# make deb).
set -euo pipefail

pkgs=(cmake ninja-build pkg-config gcc libsodium-dev libssl-dev libuv1-dev libcjson-dev
      libsqlite3-dev libmicrohttpd-dev libcmocka-dev clang libclang-rt-14-dev iproute2)
if [ "${1:-}" = --test ]; then
    pkgs+=(prometheus)
    shift
fi
pkgs+=("$@")

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
