#!/usr/bin/env bash
# The main job, for real, on a fresh Debian 12 machine (as root, Go 1.26
# installed): build diskless, build a Debian image with `diskless image
# build` (or reuse it), add a host, start `diskless serve` on a private test
# network and power on a QEMU PC with no disk that boots from it over the
# network - DHCP, iPXE, sanboot, GRUB, the initramfs' iSCSI login - to a
# login prompt, printing each boot stage with its time. Then it says how to
# log in and how to reach the server, and runs until Ctrl-C.
#
# The test network is a network namespace (diskless-demo: a bridge with
# the server at 10.99.0.1 and the PC's tap): nothing is served on this
# machine's own interfaces. Ctrl-C stops the PC and the server and removes
# the namespace; $DEMO_DIR keeps the image and the host's disk for the next
# run, which boots the same machine again.
#
# Env: DEMO_DIR (var/demo), SIZE (4G, the image's disk), MEMORY (1024, MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
demo=${DEMO_DIR:-$repo/var/demo}
ns=diskless-demo
mac=52:54:00:d1:5c:01
server=10.99.0.1

say() { printf '%s\n' "$*" >&2; }
die() { say "run.sh: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root: it makes a network namespace and a tap device, and builds a disk image"
command -v go >/dev/null || die "Go 1.26 is needed (https://go.dev/dl)"

# The programs this needs, from Debian.
pkgs=(qemu-system-x86 ipxe-qemu ipxe debootstrap gdisk dosfstools mtools e2fsprogs iproute2 socat)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	say "== installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

say "== building diskless"
go build -o diskless ./cmd/diskless
# stop_network ends every process in the test network (the server gets
# SIGTERM and 10 s to flush the host disks) and removes it.
stop_network() {
	set +e
	local pids
	pids=$(ip netns pids "$ns" 2>/dev/null)
	[ -n "$pids" ] && kill $pids 2>/dev/null
	for _ in $(seq 100); do
		[ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && break
		sleep 0.1
	done
	pids=$(ip netns pids "$ns" 2>/dev/null)
	[ -n "$pids" ] && kill -9 $pids 2>/dev/null
	ip netns del "$ns" 2>/dev/null
	set -e
}
cleanup() {
	trap - EXIT INT TERM
	stop_network
}
# A test network an earlier run left goes first (its server would hold
# the data directory).
if ip netns list | grep -qw "$ns"; then
	stop_network
fi

mkdir -p "$demo"
chmod 700 "$demo"
state=$demo/state
dl() { ./diskless "$@" --data-dir "$state"; }

if ! dl image show debian >/dev/null 2>&1; then
	# A root password for the serial console login, only in this file.
	[ -s "$demo/root-password" ] || (umask 077 && head -c 12 /dev/urandom | base64 | tr -d '/+=' >"$demo/root-password")
	say "== building the Debian image (debootstrap from this machine's apt mirror; a few minutes the first time)"
	dl image build debian --suite bookworm --size "${SIZE:-4G}" --root-password-file "$demo/root-password" \
		--description "Debian 12 made by scripts/run.sh"
fi
dl host show pc1 >/dev/null 2>&1 || dl host add pc1 --image debian --disk persistent --mac "$mac" >/dev/null

# The private test network.
trap cleanup EXIT
trap 'say; say "stopping"; exit 0' INT TERM
ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link add br0 type bridge forward_delay 0
ip -n "$ns" tuntap add dev tap0 mode tap
ip -n "$ns" link set tap0 master br0 up
ip -n "$ns" addr add "$server/24" dev br0
ip -n "$ns" link set br0 up

say "== starting diskless serve on the test network ($server, DHCP for 10.99.0.100-199)"
: >"$demo/serve.log"
ip netns exec "$ns" ./diskless serve --interface br0 --dhcp full --dhcp-range 10.99.0.100-10.99.0.199 \
	--data-dir "$state" >>"$demo/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 100); do
	grep -q 'msg=serving' "$demo/serve.log" && break
	kill -0 "$serve_pid" 2>/dev/null || { cat "$demo/serve.log" >&2; die "diskless serve did not start"; }
	sleep 0.1
done

say "== powering on pc1 (QEMU, SeaBIOS + iPXE, no disk); its console: $demo/console.log"
# KVM when it works (a paused machine that lives 2 s); software emulation
# otherwise, about ten times slower.
accel=()
if [ -w /dev/kvm ] && (timeout 2 qemu-system-x86_64 -accel kvm -cpu host -machine pc -display none \
	-nodefaults -monitor none -S || [ $? = 124 ]) >/dev/null 2>&1; then
	accel=(-accel kvm -cpu host)
fi
rm -f "$demo/console.sock"
: >"$demo/console.log"
ip netns exec "$ns" qemu-system-x86_64 "${accel[@]}" -m "${MEMORY:-1024}" -machine graphics=off \
	-display none -monitor none \
	-chardev "socket,id=con,path=$demo/console.sock,server=on,wait=off,logfile=$demo/console.log" \
	-serial chardev:con \
	-netdev tap,id=n0,ifname=tap0,script=no,downscript=no -device "e1000,netdev=n0,mac=$mac" -boot n &
qemu_pid=$!
start=$(date +%s.%N)

# stage FILE PATTERN [NTH] TEXT: wait until FILE holds PATTERN NTH times,
# then print TEXT with the time since power-on.
stage() {
	local file=$1 pattern=$2 nth=$3 text=$4
	for _ in $(seq 6000); do # 10 min
		if [ "$(grep -a -c -- "$pattern" "$file" 2>/dev/null)" -ge "$nth" ]; then
			awk -v now="$(date +%s.%N)" -v start="$start" -v text="$text" 'BEGIN { printf "  %6.1f s  %s\n", now - start, text }' >&2
			return 0
		fi
		kill -0 "$qemu_pid" 2>/dev/null || die "QEMU exited; console: $demo/console.log"
		sleep 0.1
	done
	die "no \"$text\" after 10 minutes; console: $demo/console.log, server: $demo/serve.log"
}
stage "$demo/serve.log" 'msg="dhcp: ack"' 1 "DHCP: address from diskless (QEMU's NIC ROM is iPXE: no TFTP)"
stage "$demo/serve.log" 'msg="iPXE script"' 1 "HTTP: the host's iPXE script"
stage "$demo/serve.log" 'boot: iSCSI login' 1 "iSCSI: iPXE's sanboot logged in (CHAP both ways)"
stage "$demo/console.log" 'Linux version' 1 "GRUB started the kernel from the iSCSI disk"
stage "$demo/console.log" 'iscsistart: Connection' 1 "iSCSI: the initramfs logged in again from the iBFT"
stage "$demo/console.log" 'EXT4-fs (sda' 1 "root file system mounted from the iSCSI disk"
stage "$demo/console.log" 'login:' 1 "login prompt"

cat >&2 <<EOF

pc1 booted from the network. Log in on its serial console as root
(password in $demo/root-password; Ctrl-] leaves):

    socat -,raw,echo=0,escape=0x1d UNIX-CONNECT:$demo/console.sock

The server runs in the namespace $ns; its CLI and API from there:

    ip netns exec $ns ./diskless host show pc1 --data-dir $state
    ip netns exec $ns ./diskless host list --data-dir $state
    ip netns exec $ns curl -s -H "Authorization: Bearer \$(cat $state/api-token)" http://$server:8080/api/v1/hosts

Its log: $demo/serve.log. Ctrl-C stops pc1 and the server and removes the
test network; $demo keeps the image and pc1's disk for the next run.
EOF
wait "$qemu_pid" || true
say "pc1 powered off"
