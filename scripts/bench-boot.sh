#!/usr/bin/env bash
# Boot time benchmark (issue 3, item 4): power-on to marker of a QEMU client
# served by `diskless serve` and by the reference stack (dnsmasq DHCP/proxy
# + TFTP, tgt), for bios-full, bios-proxy and uefi-full, on namespace
# networks built and removed by bench/boot. Prints a table of medians.
#
# Usage: scripts/bench-boot.sh [--runs N] [--cases a,b] [--stacks diskless,reference] [--logdir DIR]
# Env DISKLESS_BIN: use this diskless binary instead of building ./cmd/diskless.
# Needs root, QEMU, ipxe, ipxe-qemu, ovmf, dnsmasq, tgt, grub-efi-amd64-bin,
# mtools, dosfstools (scripts/ci-deps.sh); skips with the reason otherwise.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" != 0 ]; then
	echo "bench-boot: SKIP: needs root (network namespaces, tap devices)"
	exit 0
fi
work=$(mktemp -d /tmp/diskless-bench-boot.XXXXXX)
trap 'rm -rf "$work"' EXIT
bin=${DISKLESS_BIN:-}
if [ -z "$bin" ]; then
	bin=$work/diskless
	(cd "$repo" && go build -o "$bin" ./cmd/diskless)
fi
(cd "$repo" && go build -o "$work/bootbench" ./bench/boot)
# Bounded: at most 4 min per run (UEFI timeout) x runs x cases x stacks.
timeout 3600 "$work/bootbench" -diskless "$bin" "$@"
