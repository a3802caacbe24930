#!/usr/bin/env bash
# Compare two builds of diskless' iSCSI target on loopback, side by side in
# one run: A is a git revision (built from a temporary detached worktree),
# B the current work tree. Each serves its own copy of the same image with
# `diskless target`; ../shared/tools/iscsi-perf-compare alternates
# qemu-img bench on both and reports speed and the servers' CPU per GiB
# and per 1000 I/Os ("B/A speed" > 1: B faster; "B/A cpu" < 1: B cheaper).
# What a change costs the data path, measured on the same machine at once.
#
# Usage: scripts/bench-ab.sh [--size BYTES] [--rounds N] [--scale F] [--only W,W] REV
# Needs qemu-utils, qemu-block-extra, python3 (scripts/ci-deps.sh installs them).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
size=1G
rev=""
perf_args=()
while [ $# -gt 0 ]; do
	case "$1" in
	--size) size=$2; shift 2 ;;
	--rounds | --scale | --only) perf_args+=("$1" "$2"); shift 2 ;;
	-*) echo "usage: $0 [--size BYTES] [--rounds N] [--scale F] [--only W,W] REV" >&2; exit 2 ;;
	*) rev=$1; shift ;;
	esac
done
[ -n "$rev" ] || { echo "usage: $0 [--size BYTES] [--rounds N] [--scale F] [--only W,W] REV" >&2; exit 2; }
compare=$repo/../shared/tools/iscsi-perf-compare
[ -x "$compare" ] || { echo "bench: $compare not found" >&2; exit 1; }
iqn=iqn.2026-11.org.example:disk1

work=$(mktemp -d /var/tmp/diskless-ab.XXXXXX)
pid_a="" pid_b=""
cleanup() {
	set +e
	[ -n "$pid_a" ] && kill -TERM "$pid_a" 2>/dev/null
	[ -n "$pid_b" ] && kill -TERM "$pid_b" 2>/dev/null
	wait 2>/dev/null
	git -C "$repo" worktree remove --force "$work/src-a" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # wait_port PORT PID
	for _ in $(seq 100); do
		[ -n "$(ss -Hltn "sport = :$1")" ] && return 0
		kill -0 "$2" 2>/dev/null || { echo "bench: process $2 died" >&2; return 1; }
		sleep 0.1
	done
	echo "bench: nothing listens on 127.0.0.1:$1" >&2
	return 1
}

git -C "$repo" worktree add --quiet --detach "$work/src-a" "$rev"
(cd "$work/src-a" && go build -o "$work/diskless-a" ./cmd/diskless)
(cd "$repo" && go build -o "$work/diskless-b" ./cmd/diskless)
echo "A: $(git -C "$repo" rev-parse --short "$rev") ($rev)  B: work tree at $(git -C "$repo" rev-parse --short HEAD)$(git -C "$repo" diff --quiet HEAD || echo ' + changes')"

# Written data, not holes: diskless reports holes deallocated and QEMU
# would skip reading them (see scripts/bench-vs-tgt.sh).
truncate -s "$size" "$work/a.img"
head -c "$(stat -c %s "$work/a.img")" /dev/urandom >"$work/a.img"
cp "$work/a.img" "$work/b.img"
sync

port_a=$(free_port)
"$work/diskless-a" target --listen "127.0.0.1:$port_a" --iqn "$iqn" --lun "0=$work/a.img" >"$work/a.log" 2>&1 &
pid_a=$!
port_b=$(free_port)
"$work/diskless-b" target --listen "127.0.0.1:$port_b" --iqn "$iqn" --lun "0=$work/b.img" >"$work/b.log" 2>&1 &
pid_b=$!
wait_port "$port_a" "$pid_a"
wait_port "$port_b" "$pid_b"

"$compare" "iscsi://127.0.0.1:$port_a/$iqn/0" "iscsi://127.0.0.1:$port_b/$iqn/0" \
	--pid-a "$pid_a" --pid-b "$pid_b" "${perf_args[@]}"
