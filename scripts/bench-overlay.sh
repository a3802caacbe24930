#!/usr/bin/env bash
# Benchmark copy-on-write host disks against raw files (issue 8, item 5),
# side by side in one `diskless serve` on loopback:
#   - host "raw": a private raw copy of the golden version
#   - host "cow": a persistent overlay on the same version
# through ../shared/tools/iscsi-perf-compare (qemu-img bench over libiscsi;
# A = raw, B = cow, "B/A speed" > 1 means the overlay is faster):
#   1. reads of blocks the overlay never wrote (they come from the version)
#   2. writes to clusters the overlay does not own yet (reset before each round),
#      against the raw file cached and not cached
#   3. reads and writes of clusters the overlay owns
# then N hosts with overlays on the same version read at once (bench/hosts):
# aggregate throughput, fairness, server RSS and CPU.
#
# Usage: scripts/bench-overlay.sh [--size 1G] [--rounds N] [--hosts 50] [--mib 64]
# Env DISKLESS_BIN: use this binary instead of building ./cmd/diskless.
# Needs qemu-utils, qemu-block-extra, python3 (scripts/ci-deps.sh installs them).
set -euo pipefail

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

# Writing a block nobody wrote costs the kernel a new page-cache page (and
# ext4 an allocation); overwriting a cached page costs a copy. The raw
# file's pages are cached from part 1, the overlay's new layer has none:
# 2a compares them so, 2b with the raw file's pages dropped first
# (POSIX_FADV_DONTNEED), like a raw disk whose blocks were not touched
# since the server started.
evict_raw() {
	python3 -c 'import os,sys; fd=os.open(sys.argv[1],os.O_RDONLY); os.fsync(fd); os.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED)' "$data/hosts/raw/disk.img"
}
for cold in no yes; do
	if [ "$cold" = no ]; then
		echo "## 2a. writes to clusters the overlay does not own yet (overlay reset before each round; raw file cached)"
	else
		echo "## 2b. the same, raw file's pages dropped from the page cache before each round"
	fi
	for r in $(seq "$rounds"); do
		dl host reset cow >/dev/null
		[ "$cold" = yes ] && evict_raw
		"$compare" "$raw" "$cow" --rounds 1 --only write-1m-qd8,write-4k-qd32 | grep -E '^(write|name|perf)' || true
	done
done
echo "## page cache: 1 GiB of 1 MiB pwrite()s into a new sparse file vs over a cached one (no iSCSI)"
python3 - "$work" <<'PY'
import os, sys, time
buf = os.urandom(1 << 20)
new, old = os.path.join(sys.argv[1], "new.img"), os.path.join(sys.argv[1], "old.img")
os.truncate(os.open(new, os.O_CREAT | os.O_WRONLY, 0o600), 1 << 30)
with open(old, "wb") as f:
    for i in range(1024): f.write(buf)
for name in (new, old):
    fd = os.open(name, os.O_WRONLY); t = time.time()
    for i in range(1024): os.pwrite(fd, buf, i << 20)
    d = time.time() - t; os.close(fd)
    print(f"{'new sparse file' if name == new else 'cached file    '}  {1024 / d:7.0f} MiB/s")
os.remove(new); os.remove(old)
PY

echo "## 3. reads and writes of clusters the overlay owns"
"$compare" "$raw" "$cow" --rounds "$rounds" --only read-1m-qd8,read-4k-qd32,write-1m-qd8,write-4k-qd32

echo "## 4. $nhosts hosts with overlays on the same version, reading at once"
"$work/bench-hosts" -addr "127.0.0.1:$iport" -api "http://127.0.0.1:$hport" -token "$(cat "$data/api-token")" \
	-n "$nhosts" -mib "$mib" -pid "$pid"
