#!/usr/bin/env bash
# Benchmark diskless against Debian's tgt on loopback: both serve a same-sized
# image file, iperf3 measures the loopback ceiling, then
# ../shared/tools/iscsi-perf-compare runs qemu-img bench on both (A = tgt,
# B = diskless; "B/A speed" > 1 means diskless is faster).
#
# Usage: scripts/bench-vs-tgt.sh [--size BYTES] [--rounds N] [--scale F]
#   --size    image size (default 1G; 1G, 256M or bytes)
#   --rounds  and --scale are passed to iscsi-perf-compare
# Env DISKLESS_BIN: use this diskless binary instead of building ./cmd/diskless.
# Needs root (tgtd), tgt, iperf3, qemu-utils, qemu-block-extra, python3
# (scripts/ci-deps.sh installs them).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
size=1G
perf_args=()
while [ $# -gt 0 ]; do
	case "$1" in
	--size) size=$2; shift 2 ;;
	--rounds | --scale) perf_args+=("$1" "$2"); shift 2 ;;
	*) echo "usage: $0 [--size BYTES] [--rounds N] [--scale F]" >&2; exit 2 ;;
	esac
done
compare=$repo/../shared/tools/iscsi-perf-compare
[ -x "$compare" ] || { echo "bench: $compare not found" >&2; exit 1; }
iqn=iqn.2026-11.org.example:disk1

# shellcheck source=scripts/lib/bench.sh
. "$repo/scripts/lib/bench.sh"

work=$(mktemp -d /var/tmp/diskless-bench.XXXXXX)
diskless_pid="" iperf_pid=""
cleanup() {
	set +e
	tgt_stop
	[ -n "$diskless_pid" ] && kill -TERM "$diskless_pid" 2>/dev/null
	[ -n "$iperf_pid" ] && kill -TERM "$iperf_pid" 2>/dev/null
	wait 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

bin=${DISKLESS_BIN:-}
if [ -z "$bin" ]; then
	bin=$work/diskless
	(cd "$repo" && go build -o "$bin" ./cmd/diskless)
fi

# Same-sized images with written data everywhere (random_image says why).
random_image "$work/tgt.img" "$size"
cp "$work/tgt.img" "$work/diskless.img"
sync
echo "images: $(stat -c %s "$work/tgt.img") bytes each in $work"

tgt_port=$(free_port)
tgt_start "$tgt_port" "$work/tgtd.log"
tgt_adm --lld iscsi --op new --mode target --tid 1 -T "$iqn"
tgt_adm --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$work/tgt.img"
tgt_adm --lld iscsi --op bind --mode target --tid 1 -I ALL
wait_port "$tgt_port" "$tgt_pid"

diskless_port=$(free_port)
"$bin" target --listen "127.0.0.1:$diskless_port" --iqn "$iqn" --lun "0=$work/diskless.img" >"$work/diskless.log" 2>&1 &
diskless_pid=$!
wait_port "$diskless_port" "$diskless_pid"

echo "== loopback ceiling (iperf3 -l 1M -t 5)"
iperf_port=$(free_port)
iperf3 -s -B 127.0.0.1 -p "$iperf_port" >/dev/null 2>&1 &
iperf_pid=$!
wait_port "$iperf_port" "$iperf_pid"
iperf3 -c 127.0.0.1 -p "$iperf_port" -l 1M -t 5 | grep -E 'sender|receiver'

tgt_url=iscsi://127.0.0.1:$tgt_port/$iqn/1
diskless_url=iscsi://127.0.0.1:$diskless_port/$iqn/0
echo "== iscsi-perf-compare A=tgt ($tgt_url) B=diskless ($diskless_url)"
# With the servers' pids, CPU seconds per GiB and per 1000 I/Os beside each
# figure (issue 11: fast by burning both cores is not efficient).
"$compare" "$tgt_url" "$diskless_url" --pid-a "$tgt_pid" --pid-b "$diskless_pid" "${perf_args[@]}"

# At queue depth 1 the initiator waits for each answer before it sends the
# next command, so its own CPU time per I/O is a floor under the round trip
# that no target can go below. Measure it beside the round trip, for both.
echo "== QD1 4 KiB read: round trip and the initiator's own CPU per I/O (qemu-img bench -d 1, 20000 I/Os)"
for side in tgt diskless; do
	url=$tgt_url
	[ "$side" = diskless ] && url=$diskless_url
	for _ in 1 2 3; do
		/usr/bin/time -f "%U %S" -o "$work/time" qemu-img bench -f raw -c 20000 -d 1 -s 4096 -S 4096 "$url" >"$work/bench"
		secs=$(sed -n 's/Run completed in \([0-9.]*\) seconds./\1/p' "$work/bench")
		read -r user sys <"$work/time"
		awk -v s="$side" -v t="$secs" -v u="$user" -v k="$sys" \
			'BEGIN { printf "%-8s %6.1f us/IO round trip, initiator CPU %5.1f us/IO\n", s, t/20000*1e6, (u+k)/20000*1e6 }'
	done
done
