#!/usr/bin/env bash
# Boot storm benchmark (issue 3, item 5): N simulated PXE clients at once
# (DHCP DORA + TFTP undionly.kpxe with blksize 1468 + script) against
# `diskless serve --dhcp full` and against dnsmasq (DHCP + TFTP), alternating,
# inside network namespaces built and removed by bench/storm. Prints a table.
#
# Usage: scripts/bench-storm.sh [-n 100,500] [-rounds 3] [-client-timeout 60s]
# Env DISKLESS_BIN: use this diskless binary instead of building ./cmd/diskless.
# Needs root, ip, dnsmasq, ipxe (scripts/ci-deps.sh); skips otherwise.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" != 0 ]; then
	echo "bench-storm: SKIP: needs root (network namespaces)"
	exit 0
fi
work=$(mktemp -d /tmp/diskless-bench-storm.XXXXXX)
trap 'rm -rf "$work"' EXIT
bin=${DISKLESS_BIN:-}
if [ -z "$bin" ]; then
	bin=$work/diskless
	(cd "$repo" && go build -o "$bin" ./cmd/diskless)
fi
(cd "$repo" && go build -o "$work/storm" ./bench/storm)
timeout 1800 "$work/storm" -diskless "$bin" "$@"
