#!/bin/busybox sh
# /init of the Linux guest of test/interop (packed by scripts/guest-bundle.sh).
#
# Drives the Linux kernel iSCSI initiator against the target under test:
#   1. log in with iscsistart (CHAP, mutual CHAP when dl.tuser is given),
#      mkfs.ext4 the LUN, write files, print their sha256 as DISKLESS-SUM1
#      lines, unmount;
#   2. start iscsid, which adopts the session (reconnecting it), and log out
#      with iscsiadm (a real Logout PDU);
#   3. log in again with iscsiadm, e2fsck -fn, verify the checksums, print
#      DISKLESS-SUM2 lines, log out;
#   4. print DISKLESS-GUEST-PASS and power off.
# Any failure prints DISKLESS-GUEST-FAIL and powers off. Output goes to the
# console (ttyS0), which the test reads.
#
# Parameters come from the kernel command line:
#   dl.addr dl.port dl.iqn dl.tpgt dl.initiator dl.user dl.secret
#   [dl.tuser dl.tsecret]   (target's credentials for mutual CHAP)
#   [dl.digest=crc32c]      (insist on CRC32C header and data digests)

/bin/busybox --install -s /bin
export PATH=/usr/sbin:/sbin:/usr/bin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

fail() {
	echo "DISKLESS-GUEST-FAIL: $*"
	dmesg | tail -n 40
	poweroff -f
	sleep 60
}
step() { echo "DISKLESS-GUEST: $*"; }

for kv in $(cat /proc/cmdline); do
	case "$kv" in
	dl.[a-z]*=*)
		k=${kv%%=*}
		k=${k#dl.}
		case "$k" in *[!a-z]*) continue ;; esac
		eval "dl_$k=\"\${kv#*=}\""
		;;
	esac
done
for v in addr port iqn tpgt initiator user secret; do
	eval "[ -n \"\$dl_$v\" ]" || fail "missing kernel parameter dl.$v"
done
# Keep kernel chatter (all but errors) off the console we parse.
dmesg -n 4

for m in e1000 crc32c_generic iscsi_tcp sd_mod ext4; do
	modprobe "$m" || fail "modprobe $m"
done
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
echo "InitiatorName=$dl_initiator" >/etc/iscsi/initiatorname.iscsi

# wait_disk present|absent: the LUN appears as /dev/sda (the only disk).
wait_disk() {
	i=0
	while :; do
		if [ "$1" = present ]; then [ -b /dev/sda ] && return 0; else [ -b /dev/sda ] || return 0; fi
		i=$((i + 1))
		[ $i -gt 600 ] && fail "disk not $1 after 60s"
		sleep 0.1
	done
}

step "login 1 (iscsistart)"
mutual=""
[ -n "$dl_tuser" ] && mutual="-U $dl_tuser -W $dl_tsecret"
digests=""
case "$dl_digest" in
"") ;;
crc32c) digests="-P node.conn[0].iscsi.HeaderDigest=CRC32C -P node.conn[0].iscsi.DataDigest=CRC32C" ;;
*) fail "dl.digest=$dl_digest: want crc32c" ;;
esac
# shellcheck disable=SC2086 # $mutual and $digests are options or nothing
iscsistart -i "$dl_initiator" -t "$dl_iqn" -g "$dl_tpgt" -a "$dl_addr" -p "$dl_port" \
	-u "$dl_user" -w "$dl_secret" $mutual $digests || fail "iscsistart login"
wait_disk present
step "disk $(cat /sys/block/sda/size) sectors"

mkfs.ext4 -q -F -L diskless /dev/sda || fail "mkfs.ext4"
mkdir -p /mnt
mount -t ext4 /dev/sda /mnt || fail "mount after mkfs"
mkdir /mnt/data
dd if=/dev/urandom of=/mnt/data/small bs=1000 count=3 2>/dev/null || fail "write small"
dd if=/dev/urandom of=/mnt/data/medium bs=65536 count=16 2>/dev/null || fail "write medium"
dd if=/dev/urandom of=/mnt/data/large bs=1048576 count=8 2>/dev/null || fail "write large"
(cd /mnt/data && sha256sum small medium large) >/tmp/sums || fail "sha256sum"
sed 's/^/DISKLESS-SUM1 /' /tmp/sums
sync
umount /mnt || fail "umount"

step "logout 1 (iscsid + iscsiadm)"
# iscsid adopts the session by dropping its connection and logging in again
# with the session's TSIH (connection reinstatement, RFC 7143 6.3.4); until
# that completes, logout is refused with "try again later".
iscsid -f &
i=0
until iscsiadm -m session -u >/tmp/logout.log 2>&1; do
	i=$((i + 1))
	[ $i -gt 60 ] && fail "iscsiadm logout: $(cat /tmp/logout.log)"
	sleep 0.5
done
wait_disk absent

step "login 2 (iscsiadm)"
portal="$dl_addr:$dl_port,$dl_tpgt"
node() { iscsiadm -m node -T "$dl_iqn" -p "$portal" "$@" >/dev/null || fail "iscsiadm $*"; }
node -o new
node -o update -n node.session.auth.authmethod -v CHAP
node -o update -n node.session.auth.username -v "$dl_user"
node -o update -n node.session.auth.password -v "$dl_secret"
if [ -n "$dl_tuser" ]; then
	node -o update -n node.session.auth.username_in -v "$dl_tuser"
	node -o update -n node.session.auth.password_in -v "$dl_tsecret"
fi
if [ -n "$digests" ]; then
	node -o update -n "node.conn[0].iscsi.HeaderDigest" -v CRC32C
	node -o update -n "node.conn[0].iscsi.DataDigest" -v CRC32C
fi
iscsiadm -m node -T "$dl_iqn" -p "$portal" --login || fail "iscsiadm login"
wait_disk present
e2fsck -fn /dev/sda || fail "e2fsck -fn reports errors"
mount -t ext4 -o ro /dev/sda /mnt || fail "mount after re-login"
(cd /mnt/data && sha256sum -c /tmp/sums) || fail "checksums differ after re-login"
(cd /mnt/data && sha256sum small medium large) | sed 's/^/DISKLESS-SUM2 /'
umount /mnt || fail "umount 2"
iscsiadm -m node -T "$dl_iqn" -p "$portal" --logout || fail "iscsiadm logout 2"
wait_disk absent

echo "DISKLESS-GUEST-PASS"
poweroff -f
