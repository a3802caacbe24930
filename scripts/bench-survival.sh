#!/usr/bin/env bash
# Survival under server restarts (issue 9): a Debian host booted from
# diskless serve (the end-to-end test's image, built and cached on first
# use) runs an fsync'd append loop while diskless serve is killed
# (SIGKILL) and started again N times per downtime, plain and with the
# iSCSI socket held as systemd's diskless.socket holds it, and while its
# network goes away as long (link-down, the server running on). Prints per
# outage and per series: survived/N, the longest I/O stall, lost writes
# (lines acknowledged before a power cut that the next boot does not find).
# Goal: N of N, stall <= downtime + 2 s, nothing lost.
#
# Usage: scripts/bench-survival.sh [N (20)] [downtimes (5s,20s)] [mode: plain|socket-activated|link-down (all)]
# Takes about (N x (downtime + 5 s) + 2 min) per downtime and mode.
# Needs root, QEMU, ipxe-qemu, debootstrap and the builder's tools
# (scripts/ci-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
	echo "bench-survival: SKIP: needs root (network namespaces, tap devices, image build)"
	exit 0
fi
export DISKLESS_SURVIVAL=${1:-20} DISKLESS_SURVIVAL_DOWN=${2:-5s,20s} DISKLESS_SURVIVAL_MODE=${3:-}
go test ./test/pxe -run '^TestRestartSurvival$' -count=1 -v -timeout 4h |
	grep -E '^(=== RUN|--- |PASS|FAIL|ok )|restart_test.go|debimage.go'
