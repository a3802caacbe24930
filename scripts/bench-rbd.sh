#!/usr/bin/env bash
# Issue 14's speed proof for host disks on Ceph RBD, in one go: runs the
# manual benchmark TestRBDBench (test/interop/rbdbench_test.go, build tag
# ceph), which starts a single-node Ceph on loopback, `diskless serve` with
# storage rbd (a host on an RBD clone of an imported image), tgtd with
# Debian's tgt-rbd backing store on another clone of the same version and
# `diskless target` on a raw file of the same bytes, then prints
# ../shared/tools/iscsi-perf-compare's tables (tgt-rbd vs diskless-rbd,
# diskless-raw vs diskless-rbd: 4 KiB QD32 and 1 MiB QD8 reads and writes,
# server CPU per GiB and per 1000 I/Os) and the time and cluster space of
# 100 persistent hosts (RBD clones) added through the API.
#
# Usage: scripts/bench-rbd.sh [--size 1G] [--rounds 3] [--scale 0.5] [--clones 100]
#   --size    image size (1G, 512M or bytes)
#   --rounds  and --scale are passed to iscsi-perf-compare (--scale: the
#             fraction of its I/O counts; RBD on one loopback OSD is slow)
#   --clones  hosts added for the space and time figures
# Needs root (tgtd), librbd-dev (the -tags ceph,pacific build), ceph-mon,
# ceph-osd, ceph-common, tgt, tgt-rbd, qemu-utils, qemu-block-extra,
# python3; installs nothing (scripts/ci-deps.sh does). Takes 5-15 minutes.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
size=1G rounds=3 scale=0.5 clones=100
while [ $# -gt 0 ]; do
	case "$1" in
	--size) size=$2; shift 2 ;;
	--rounds) rounds=$2; shift 2 ;;
	--scale) scale=$2; shift 2 ;;
	--clones) clones=$2; shift 2 ;;
	*) echo "usage: $0 [--size 1G] [--rounds 3] [--scale 0.5] [--clones 100]" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "bench: needs root (tgtd's control socket)" >&2; exit 1; }
[ -x "$repo/../shared/tools/iscsi-perf-compare" ] || { echo "bench: $repo/../shared/tools/iscsi-perf-compare not found" >&2; exit 1; }

cd "$repo"
# DISKLESS_REQUIRE_CEPH=1: a missing Ceph daemon fails instead of skipping.
DISKLESS_BENCH_RBD=1 DISKLESS_REQUIRE_CEPH=1 \
	DISKLESS_BENCH_RBD_SIZE="$size" DISKLESS_BENCH_RBD_ROUNDS="$rounds" \
	DISKLESS_BENCH_RBD_SCALE="$scale" DISKLESS_BENCH_RBD_CLONES="$clones" \
	go test -tags ceph,pacific -run '^TestRBDBench$' -count 1 -v -timeout 60m ./test/interop/
