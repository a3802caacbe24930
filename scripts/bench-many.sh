#!/usr/bin/env bash
# Many clients at once (issue 11, item 4): N initiator sessions at the same
# time, each its own qemu-img process (QEMU's libiscsi, its own initiator
# name) on its own LUN and its own image file, against Debian's tgt and
# diskless serving the same layout on loopback, one after the other. Per
# workload and N it prints the aggregate throughput (all bytes / the
# slowest client's time), the fairness (fastest client's time / slowest's:
# 1 = all equal) and each server's CPU seconds per GiB.
#
# Usage: scripts/bench-many.sh [--clients 4,16] [--size 256M] [--only W,W]
#   workloads: read-1m-qd8, read-4k-qd32, write-4k-qd32
# Env DISKLESS_BIN: use this diskless binary instead of building ./cmd/diskless.
# Needs root (tgtd), tgt, qemu-utils, qemu-block-extra, python3
# (scripts/ci-deps.sh installs them).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
clients=4,16 size=256M only=""
while [ $# -gt 0 ]; do
	case "$1" in
	--clients) clients=$2; shift 2 ;;
	--size) size=$2; shift 2 ;;
	--only) only=$2; shift 2 ;;
	*) echo "usage: $0 [--clients 4,16] [--size 256M] [--only W,W]" >&2; exit 2 ;;
	esac
done
iqn=iqn.2026-11.org.example:many
max=$(tr ',' '\n' <<<"$clients" | sort -n | tail -1)

# shellcheck source=scripts/lib/bench.sh
. "$repo/scripts/lib/bench.sh"

work=$(mktemp -d /var/tmp/diskless-many.XXXXXX)
diskless_pid=""
cleanup() {
	set +e
	tgt_stop
	[ -n "$diskless_pid" ] && kill -TERM "$diskless_pid" 2>/dev/null
	pkill -f "qemu-img bench.*$work" 2>/dev/null
	wait 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

cpu() { # utime+stime of a process in seconds
	awk -v t="$(getconf CLK_TCK)" '{sub(/.*\) /, ""); print ($12 + $13) / t}' "/proc/$1/stat"
}

bin=${DISKLESS_BIN:-}
if [ -z "$bin" ]; then
	(cd "$repo" && go build -o "$work/diskless" ./cmd/diskless)
	bin=$work/diskless
fi

random_image "$work/base.img" "$size"
for i in $(seq 0 $((max - 1))); do
	cp "$work/base.img" "$work/t$i.img"
	cp "$work/base.img" "$work/d$i.img"
done
sync
echo "images: $max x 2 of $(stat -c %s "$work/base.img") bytes in $work; load $(cut -d' ' -f1-3 /proc/loadavg)"

# workload -> qemu-img bench args and I/Os per client
declare -A wargs=(
	[read-1m-qd8]="-d 8 -s 1048576 -S 1048576"
	[read-4k-qd32]="-d 32 -s 4096 -S 4096"
	[write-4k-qd32]="-w -d 32 -s 4096 -S 4096"
)
declare -A wcount=([read-1m-qd8]=400 [read-4k-qd32]=20000 [write-4k-qd32]=20000)
workloads=${only:-read-1m-qd8,read-4k-qd32,write-4k-qd32}

# run_clients NAME PID PORT FIRSTLUN N WORKLOAD: N qemu-img at once on LUNs
# FIRSTLUN.. of the server on PORT; prints one result line.
run_clients() {
	local name=$1 pid=$2 port=$3 first=$4 n=$5 w=$6
	local args=${wargs[$w]} count=${wcount[$w]} size
	size=$(awk '{for (i = 1; i < NF; i++) if ($i == "-s") print $(i + 1)}' <<<"$args")
	local c0 c1 i pids=()
	c0=$(cpu "$pid")
	for i in $(seq 0 $((n - 1))); do
		local url="json:{\"file\":{\"driver\":\"iscsi\",\"transport\":\"tcp\",\"portal\":\"127.0.0.1:$port\",\"target\":\"$iqn\",\"lun\":$((first + i)),\"initiator-name\":\"iqn.2026-12.bench:c$i\"}}"
		# shellcheck disable=SC2086 # the args are words
		qemu-img bench -f raw -c "$count" $args "$url" >"$work/out.$i" 2>&1 &
		pids+=($!)
	done
	wait "${pids[@]}" # the clients only: the servers are children too
	c1=$(cpu "$pid")
	python3 - "$name" "$w" "$n" "$count" "$size" "$c0" "$c1" "$work" <<'EOF'
import re, sys
name, w, n, count, size, c0, c1, work = sys.argv[1:]
n, count, size, c0, c1 = int(n), int(count), int(size), float(c0), float(c1)
times = []
for i in range(n):
    out = open(f"{work}/out.{i}").read()
    m = re.search(r"Run completed in ([0-9.]+) seconds", out)
    if not m:
        sys.exit(f"bench: client {i} of {name} failed: {out[-300:]}")
    times.append(float(m.group(1)))
gib = n * count * size / 2**30
agg = gib * 1024 / max(times)
print(f"{w:14s} N={n:<3d} {name:9s} aggregate {agg:8.1f} MiB/s  ({n*count/max(times):8.0f} IOPS)  "
      f"fairness {min(times)/max(times):4.2f}  slowest {max(times):6.2f} s  cpu {(c1-c0)/gib:5.2f} s/GiB")
EOF
}

# tgt: one target, LUNs 1..max on the t*.img files.
tgt_port=$(free_port)
tgt_start "$tgt_port" "$work/tgtd.log"
tgt_adm --lld iscsi --op new --mode target --tid 1 -T "$iqn"
for i in $(seq 0 $((max - 1))); do
	tgt_adm --lld iscsi --op new --mode logicalunit --tid 1 --lun $((i + 1)) -b "$work/t$i.img"
done
tgt_adm --lld iscsi --op bind --mode target --tid 1 -I ALL
wait_port "$tgt_port" "$tgt_pid"

# diskless: one target, LUNs 0..max-1 on the d*.img files.
lun_args=()
for i in $(seq 0 $((max - 1))); do lun_args+=(--lun "$i=$work/d$i.img"); done
diskless_port=$(free_port)
"$bin" target --listen "127.0.0.1:$diskless_port" --iqn "$iqn" "${lun_args[@]}" >"$work/diskless.log" 2>&1 &
diskless_pid=$!
wait_port "$diskless_port" "$diskless_pid"

for w in ${workloads//,/ }; do
	[ -n "${wargs[$w]:-}" ] || { echo "bench: unknown workload $w" >&2; exit 2; }
	for n in ${clients//,/ }; do
		run_clients tgt "$tgt_pid" "$tgt_port" 1 "$n" "$w"
		run_clients diskless "$diskless_pid" "$diskless_port" 0 "$n" "$w"
	done
done
echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
