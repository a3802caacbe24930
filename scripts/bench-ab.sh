#!/usr/bin/env bash
# Compare two builds of diskless' iSCSI target on loopback, side by side in
# one run: A is a git revision (built from a temporary detached worktree),
# B the current work tree. Each serves its own copy of the same image with
# `diskless target`; ../shared/tools/iscsi-perf-compare alternates
# qemu-img bench on both and reports speed and the servers' CPU per GiB
# and per 1000 I/Os ("B/A speed" > 1: B faster; "B/A cpu" < 1: B cheaper).
# What a change costs the data path, measured on the same machine at once.
#
# Usage: scripts/bench-ab.sh [--size BYTES] [--rounds N] [--scale F] [--only W,W]
#                            [--a-flags "FLAGS"] [--b-flags "FLAGS"] [--veth] REV
#   --a-flags, --b-flags  extra `diskless target` flags of one side, e.g. the
#                         same build with two settings: --a-flags "--sendfile-min -1" HEAD
#   --veth                the targets in one network namespace and the initiator
#                         in another, joined by a veth pair (closer to a NIC than
#                         loopback: real segmentation and checksumming), instead of
#                         loopback; the namespaces are removed at exit
# Needs qemu-utils, qemu-block-extra, python3 (scripts/ci-deps.sh installs them),
# iproute2 and root for --veth.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
size=1G
rev=""
perf_args=()
a_flags="" b_flags="" veth=""
usage="usage: $0 [--size BYTES] [--rounds N] [--scale F] [--only W,W] [--a-flags F] [--b-flags F] [--veth] REV"
while [ $# -gt 0 ]; do
	case "$1" in
	--size) size=$2; shift 2 ;;
	--rounds | --scale | --only) perf_args+=("$1" "$2"); shift 2 ;;
	--a-flags) a_flags=$2; shift 2 ;;
	--b-flags) b_flags=$2; shift 2 ;;
	--veth) veth=1; shift ;;
	-*) echo "$usage" >&2; exit 2 ;;
	*) rev=$1; shift ;;
	esac
done
[ -n "$rev" ] || { echo "$usage" >&2; exit 2; }
compare=$repo/../shared/tools/iscsi-perf-compare
[ -x "$compare" ] || { echo "bench: $compare not found" >&2; exit 1; }
iqn=iqn.2026-11.org.example:disk1

work=$(mktemp -d /var/tmp/diskless-ab.XXXXXX)
pid_a="" pid_b=""
# Where the targets listen and the initiator runs: loopback, or two
# namespaces of this run joined by a veth pair.
host=127.0.0.1 srv=() cli=()
ns_srv="" ns_cli=""
cleanup() {
	set +e
	[ -n "$pid_a" ] && kill -TERM "$pid_a" 2>/dev/null
	[ -n "$pid_b" ] && kill -TERM "$pid_b" 2>/dev/null
	wait 2>/dev/null
	[ -n "$ns_srv" ] && ip netns del "$ns_srv" 2>/dev/null
	[ -n "$ns_cli" ] && ip netns del "$ns_cli" 2>/dev/null
	git -C "$repo" worktree remove --force "$work/src-a" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT INT TERM
if [ -n "$veth" ]; then
	id=$$
	ns_srv=dlab-srv-$id ns_cli=dlab-cli-$id
	ip netns add "$ns_srv"
	ip netns add "$ns_cli"
	ip link add "dlab-s$id" netns "$ns_srv" type veth peer name "dlab-c$id" netns "$ns_cli"
	ip -n "$ns_srv" addr add 10.98.0.1/24 dev "dlab-s$id"
	ip -n "$ns_cli" addr add 10.98.0.2/24 dev "dlab-c$id"
	for ns in "$ns_srv" "$ns_cli"; do
		ip -n "$ns" link set lo up
	done
	ip -n "$ns_srv" link set "dlab-s$id" up
	ip -n "$ns_cli" link set "dlab-c$id" up
	host=10.98.0.1 srv=(ip netns exec "$ns_srv") cli=(ip netns exec "$ns_cli")
fi

# shellcheck source=scripts/lib/bench.sh
. "$repo/scripts/lib/bench.sh"

git -C "$repo" worktree add --quiet --detach "$work/src-a" "$rev"
(cd "$work/src-a" && go build -o "$work/diskless-a" ./cmd/diskless)
(cd "$repo" && go build -o "$work/diskless-b" ./cmd/diskless)
echo "A: $(git -C "$repo" rev-parse --short "$rev") ($rev)  B: work tree at $(git -C "$repo" rev-parse --short HEAD)$(git -C "$repo" diff --quiet HEAD || echo ' + changes')"

random_image "$work/a.img" "$size"
cp "$work/a.img" "$work/b.img"
sync

[ -n "$a_flags$b_flags" ] && echo "A flags: ${a_flags:-none}  B flags: ${b_flags:-none}"
[ -n "$veth" ] && echo "over a veth pair: targets in $ns_srv ($host), initiator in $ns_cli"
port_a=$(free_port)
# shellcheck disable=SC2086 # the flags are words
"${srv[@]}" "$work/diskless-a" target --listen "$host:$port_a" --iqn "$iqn" --lun "0=$work/a.img" $a_flags >"$work/a.log" 2>&1 &
pid_a=$!
port_b=$(free_port)
# shellcheck disable=SC2086
"${srv[@]}" "$work/diskless-b" target --listen "$host:$port_b" --iqn "$iqn" --lun "0=$work/b.img" $b_flags >"$work/b.log" 2>&1 &
pid_b=$!
wait_port "$port_a" "$pid_a" "$ns_srv"
wait_port "$port_b" "$pid_b" "$ns_srv"

"${cli[@]}" "$compare" "iscsi://$host:$port_a/$iqn/0" "iscsi://$host:$port_b/$iqn/0" \
	--pid-a "$pid_a" --pid-b "$pid_b" "${perf_args[@]}"
