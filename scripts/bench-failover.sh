#!/usr/bin/env bash
# Failover between two servers (issue 14): TestFailover with N failovers.
# Two diskless servers of one cluster (etcd in the test network), a Debian
# host (the end-to-end test's image, built and cached on first use) in its
# fsync'd append loop; the active server is killed (SIGKILL) N times, A and
# B in turn, the dead one coming back as a standby before the next kill.
# Prints each failover (takeover time, the loop's stall) and the series:
# survived/N, the longest stall, lost writes (lines acknowledged before a
# power cut that the next boot does not find). Goal: N of N, stall <= 10 s,
# nothing lost. Compare with scripts/bench-survival.sh (one server
# restarted) on the same harness.
#
# Usage: scripts/bench-failover.sh [N (20)] [test name regexp (^TestFailover$)]
# (TestFailoverRBD, in a build with -tags ceph, puts the disks on Ceph RBD.)
# Takes about 2 min + N x 15 s. Needs root, QEMU, ipxe-qemu, etcd and the
# image builder's tools (scripts/ci-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
	echo "bench-failover: SKIP: needs root (network namespaces, tap devices, image build)"
	exit 0
fi
export DISKLESS_FAILOVER=${1:-20}
tags=()
case "${2:-}" in *RBD*) tags=(-tags ceph,pacific) ;; esac
go test "${tags[@]}" ./test/pxe -run "${2:-^TestFailover\$}" -count=1 -v -timeout 2h |
	grep -E '^(=== RUN|--- |PASS|FAIL|ok )|failover(_rbd)?_test.go|debimage.go'
