#!/usr/bin/env bash
# Hostile-load harness (issue 13, proof item 1): every attack of the issue,
# each for a bounded time, against `diskless serve --dhcp full` while a QEMU
# machine PXE-boots through it and another host runs 4 KiB I/O, on
# namespace networks built and removed by bench/hostile. Prints a table
# (boot time with and without the attack, the other host's latency, the
# server's peak RSS, CPU and log rate, pass/fail against the goal).
#
# Usage: scripts/bench-hostile.sh [-attacks a,b] [-duration 60s] [-logdir DIR] [-json FILE] [...]
#        (bench/hostile -h lists every flag: attack sizes, goal bounds)
# Env DISKLESS_BIN: use this diskless binary instead of building ./cmd/diskless.
# Needs root, ip, QEMU, ipxe-qemu, ipxe (scripts/ci-deps.sh); skips otherwise.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" != 0 ]; then
	echo "bench-hostile: SKIP: needs root (network namespaces, tap devices)"
	exit 0
fi
work=$(mktemp -d /tmp/diskless-bench-hostile.XXXXXX)
# The namespaces are named after this tag and the run's files are under
# $work: should the harness be killed outright (SIGKILL; its processes
# die with it), the trap still removes what it left.
tag=$(printf '%06x' $((RANDOM * 32768 + RANDOM)))
cleanup() {
	for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^dlhx-$tag-" || true); do
		ip netns del "$ns" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT
bin=${DISKLESS_BIN:-}
if [ -z "$bin" ]; then
	bin=$work/diskless
	(cd "$repo" && go build -o "$bin" ./cmd/diskless)
fi
(cd "$repo" && go build -o "$work/hostile" ./bench/hostile)
echo "bench-hostile: diskless from $(cd "$repo" && git rev-parse --short HEAD 2>/dev/null || echo '?')$( [ -n "${DISKLESS_BIN:-}" ] && echo " ($bin)")"
# Bounded twice: the harness's own -timeout (45 min by default) and this
# one. --foreground keeps the harness in the terminal's process group, so
# that Ctrl-C reaches it and it cleans up.
timeout --foreground -k 60 3000 "$work/hostile" -diskless "$bin" -id "$tag" -workdir "$work/run" "$@"
