#!/usr/bin/env bash
# Installs the Debian packages a purpose needs, only those missing.
#   scripts/deps.sh build test run
#   scripts/deps.sh compose        Docker, Compose v1 and debootstrap (make test-compose)
set -euo pipefail

declare -A want=(
    [build]="make gcc pkg-config libcivetweb-dev libhiredis-dev libjansson-dev libcurl4-openssl-dev libevent-dev libssl-dev"
    [test]="libcmocka-dev redis-server redis-tools curl clang-format nginx openssl clang libfuzzer-14-dev nodejs python3-requests python3-httpx prometheus chromium python3"
    [run]="redis-server redis-tools curl ca-certificates nginx"
    [compose]="docker.io docker-compose debootstrap curl"
)

missing=()
for purpose in "$@"; do
    for pkg in ${want[$purpose]}; do
        status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
        [[ $status == *"install ok installed"* ]] || missing+=("$pkg")
    done
done
# The SDK tests (tests/sdk/) need Node.js and npm; a Node.js from elsewhere (e.g.
# NodeSource, which bundles npm) will do, so they are asked for only when missing.
for purpose in "$@"; do
    if [ "$purpose" = test ] && ! { command -v node && command -v npm; } >/dev/null; then
        missing+=(nodejs npm)
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "Installing missing Debian packages: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
