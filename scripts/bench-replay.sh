#!/usr/bin/env bash
# The boot storm that is real (issue 11, item 5): the I/O trace of one real
# Debian boot (bench/replay/testdata) replayed by N hosts at once, each its
# own iSCSI session (CHAP both ways) on its own volatile overlay of one
# golden image, against `diskless serve`, against tgt serving the same
# file as N LUNs, and against a null responder (the machine's floor) - one
# boot alone first (its read time), then each N, in a network namespace
# with loopback only, built and removed by bench/replay.
# Prints a table (Markdown).
#
# Usage: scripts/bench-replay.sh [-n 10,50,100] [-alone 3] [-gaps] [-tgt=false] [-floor=false] [-trace FILE]
# Env DISKLESS_BIN: use this diskless binary instead of building ./cmd/diskless.
# Needs root and ip; tgt (tgtd, tgtadm) for the comparison (scripts/ci-deps.sh).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" != 0 ]; then
	echo "bench-replay: SKIP: needs root (network namespace, tgtd)"
	exit 0
fi
work=$(mktemp -d /tmp/diskless-bench-replay.XXXXXX)
trap 'rm -rf "$work"' EXIT
bin=${DISKLESS_BIN:-}
if [ -z "$bin" ]; then
	bin=$work/diskless
	(cd "$repo" && go build -o "$bin" ./cmd/diskless)
fi
(cd "$repo" && go build -o "$work/replay" ./bench/replay)
cd "$repo"
timeout 3600 "$work/replay" -diskless "$bin" "$@"
