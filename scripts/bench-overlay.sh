#!/usr/bin/env bash
# Benchmark copy-on-write host disks against raw files (issue 8, item 5),
# side by side in one `diskless serve` on loopback:
#   - host "raw": a private raw copy of the golden version
#   - host "cow": a persistent overlay on the same version
# through ../shared/tools/iscsi-perf-compare (qemu-img bench over libiscsi;
# A = raw, B = cow, "B/A speed" > 1 means the overlay is faster):
#   1. reads of blocks the overlay never wrote (they come from the version)
#   2. writes to clusters the overlay does not own yet (reset before each
#      run), each side alone after a sync, against the raw file's blocks
#      cached and not cached
#   3. reads and writes of clusters the overlay owns; then first writes on
#      both, the raw file's blocks punched out (a fresh sparse raw disk)
# then N hosts with overlays on the same version read at once (bench/hosts):
# aggregate throughput, fairness, server RSS and CPU.
#
# Usage: scripts/bench-overlay.sh [--size 1G] [--rounds N] [--hosts 50] [--mib 64]
# Env DISKLESS_BIN: use this binary instead of building ./cmd/diskless.
# Needs qemu-utils, qemu-block-extra, python3 (scripts/ci-deps.sh installs them).
set -euo pipefail
shopt -s inherit_errexit # a failed step inside $(...) stops the script too

repo=$(cd "$(dirname "$0")/.." && pwd)
size=1G rounds=3 nhosts=50 mib=64
while [ $# -gt 0 ]; do
	case "$1" in
	--size) size=$2; shift 2 ;;
	--rounds) rounds=$2; shift 2 ;;
	--hosts) nhosts=$2; shift 2 ;;
	--mib) mib=$2; shift 2 ;;
	*) echo "usage: $0 [--size 1G] [--rounds N] [--hosts 50] [--mib 64]" >&2; exit 2 ;;
	esac
done
compare=$repo/../shared/tools/iscsi-perf-compare
[ -x "$compare" ] || { echo "bench: $compare not found" >&2; exit 1; }

work=$(mktemp -d /var/tmp/diskless-bench-overlay.XXXXXX)
pid=""
cleanup() {
	set +e
	[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

bin=${DISKLESS_BIN:-}
if [ -z "$bin" ]; then
	bin=$work/diskless
	(cd "$repo" && go build -o "$bin" ./cmd/diskless)
fi
(cd "$repo" && go build -o "$work/bench-hosts" ./bench/hosts)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
data=$work/data
dl() { "$bin" "$@" --data-dir "$data"; }

# The golden version holds written data everywhere: holes would be
# reported deallocated (GET LBA STATUS) and qemu-img would skip them.
truncate -s "$size" "$work/golden.raw"
head -c "$(stat -c %s "$work/golden.raw")" /dev/urandom >"$work/golden.raw"
dl image import golden "$work/golden.raw" >/dev/null
rm "$work/golden.raw"
dl host add raw --image golden --version 1 --disk raw --no-chap >/dev/null
dl host add cow --image golden --no-chap >/dev/null
for i in $(seq 0 $((nhosts - 1))); do dl host add "h$i" --image golden --no-chap >/dev/null; done
sync

iport=$(free_port) hport=$(free_port)
cat >"$work/diskless.yaml" <<YAML
interface: lo
server_ip: 127.0.0.1
data_dir: $data
dhcp: {mode: off}
tftp: {enabled: false}
http: {listen: "127.0.0.1:$hport"}
iscsi: {listen: "127.0.0.1:$iport"}
YAML
"$bin" serve --config "$work/diskless.yaml" --log-level warn >"$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 100); do [ -f "$data/server.json" ] && break; sleep 0.1; done
[ -f "$data/server.json" ] || { cat "$work/serve.log"; exit 1; }

url() { # url HOST
	local t i
	t=$(dl host show "$1" --json | python3 -c 'import json,sys; h=json.load(sys.stdin); print(h["target_iqn"], h["initiator_iqn"])')
	read -r t i <<<"$t"
	printf 'json:{"file":{"driver":"iscsi","transport":"tcp","portal":"127.0.0.1:%s","target":"%s","lun":0,"initiator-name":"%s"}}' "$iport" "$t" "$i"
}
raw=$(url raw) cow=$(url cow)
echo "# $(date -u +%FT%TZ) $(nproc) cores, image $size; A = raw file, B = overlay (B/A > 1: overlay faster)"

echo "## 1. reads of blocks the overlay never wrote"
"$compare" "$raw" "$cow" --pid-a "$pid" --pid-b "$pid" --rounds "$rounds" --only read-1m-qd8,read-4k-qd32,read-4k-qd1

# Writes to clusters the overlay does not own yet, against the raw disk
# three ways: its pages cached (overwrites in the page cache), dropped
# first (POSIX_FADV_DONTNEED: a raw disk untouched since the server
# started), and punched out (a fresh sparse raw disk: first writes on both,
# allocating in the file system alike). Each side is prepared, sync'd and
# measured on its own, 256 MiB at a time, in alternating order: after a
# writer dirtied 512 MiB or more the kernel throttles the next one to the
# disk's write-back speed even across a sync (here new files of 1 GiB,
# sync'd between: 5032, 786 and 430 MiB/s; of 256 MiB: 4986, 4943, 4992),
# so in a back-to-back A/B of 1 GiB runs the second side pays for the
# first (what the first version of this script measured: 0.18-0.37x).
raw_file=$data/hosts/raw/disk.img
write_alone() { # write_alone cached|evicted|punched|cow URL QEMU-IMG-BENCH-ARGS...: MiB/s
	local prep=$1 url=$2
	shift 2
	case $prep in
	evicted) python3 -c 'import os,sys; fd=os.open(sys.argv[1],os.O_RDONLY); os.fsync(fd); os.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED)' "$raw_file" ;;
	punched) fallocate --punch-hole --offset 0 --length "$(stat -c %s "$raw_file")" "$raw_file" ;;
	cow) dl host reset cow >/dev/null ;;
	esac
	sync
	qemu-img bench -w -f raw "$@" "$url" | python3 -c '
import re, sys
out = sys.stdin.read()
secs = float(re.search(r"Run completed in ([0-9.]+) seconds", out).group(1))
count, size = int(sys.argv[1]), int(sys.argv[2])
print(f"{count * size / secs / 2**20:.1f}")' "$2" "$(numfmt --from=iec "$6")"
}
new_clusters() { # new_clusters cached|evicted|punched
	local r w a b name
	for r in $(seq "$rounds"); do
		for w in "1m-qd8 -c 256 -d 8 -s 1M -S 1M" "4k-qd32 -c 65536 -d 32 -s 4K -S 4K"; do
			set -- $w
			name=$1
			shift
			if [ $((r % 2)) = 1 ]; then
				a=$(write_alone "$raw_prep" "$raw" "$@")
				b=$(write_alone cow "$cow" "$@")
			else
				b=$(write_alone cow "$cow" "$@")
				a=$(write_alone "$raw_prep" "$raw" "$@")
			fi
			echo "write-$name round $r: raw $a MiB/s, overlay $b MiB/s, B/A speed $(python3 -c "print(f'{$b/$a:.2f}')")"
		done
	done
}
echo "## 2a. overlay's first writes (reset before each run) vs the raw disk overwriting cached blocks; each alone after a sync"
raw_prep=cached new_clusters
echo "## 2b. the same, the raw disk's pages dropped first"
raw_prep=evicted new_clusters

echo "## 3. reads and writes of clusters the overlay owns"
"$compare" "$raw" "$cow" --rounds "$rounds" --only read-1m-qd8,read-4k-qd32,write-1m-qd8,write-4k-qd32

# Last, as it changes the raw disk for good.
echo "## 3b. first writes on both: the raw disk's blocks punched out (a fresh sparse raw disk) vs the overlay reset; each alone after a sync"
raw_prep=punched new_clusters
echo "## 4. $nhosts hosts with overlays on the same version, reading at once"
"$work/bench-hosts" -addr "127.0.0.1:$iport" -api "http://127.0.0.1:$hport" -token "$(cat "$data/api-token")" \
	-n "$nhosts" -mib "$mib" -pid "$pid"
