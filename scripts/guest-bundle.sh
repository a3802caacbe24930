#!/usr/bin/env bash
# Build the Linux guest used by the interop tests (test/interop): Debian's
# kernel plus a small initramfs holding busybox, open-iscsi (iscsistart,
# iscsid, iscsiadm), e2fsprogs and exactly the kernel modules the guest needs.
# Its /init is scripts/guest-init.sh.
#
# Usage: scripts/guest-bundle.sh CACHE_DIR
# Writes CACHE_DIR/vmlinuz and CACHE_DIR/initramfs.gz and prints nothing else
# on success. Idempotent: a stamp keyed on the kernel package, the versions of
# the copied userland packages, this script and guest-init.sh skips the work
# when nothing changed.
#
# Needs (scripts/ci-deps.sh installs them): apt-get (to download the kernel
# .deb, never installed on the host), dpkg-deb, busybox-static, open-iscsi,
# e2fsprogs, cpio, gzip.
set -euo pipefail

cache=${1:?usage: guest-bundle.sh CACHE_DIR}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$cache/dl"
cache=$(cd "$cache" && pwd)

# Kernel modules the guest loads, with their dependencies resolved below.
modules="e1000 iscsi_tcp sd_mod crc32c_generic ext4"
# Userland the guest runs; shared libraries come along via ldd.
programs="/usr/sbin/iscsistart /usr/sbin/iscsid /usr/sbin/iscsiadm /usr/sbin/mke2fs /usr/sbin/e2fsck"

# newest FILE...: the highest-versioned of the existing FILEs, or nothing.
newest() { ls -1 "$@" 2>/dev/null | sort -V | tail -n 1 || true; }

# The kernel package linux-image-amd64 points at, or the newest .deb already
# cached when the package lists are unavailable.
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$pkg" ]; then
	deb=$(newest "$cache"/dl/linux-image-*-amd64_*.deb)
	[ -n "$deb" ] || { echo "guest-bundle: cannot resolve linux-image-amd64 (run apt-get update)" >&2; exit 1; }
	pkg=$(basename "$deb" | cut -d_ -f1)
fi
key=$( (cat "$0" "$here/guest-init.sh"; dpkg-query -W open-iscsi e2fsprogs busybox-static) | sha256sum | cut -c1-16)-$pkg
if [ -f "$cache/stamp" ] && [ "$(cat "$cache/stamp")" = "$key" ] &&
	[ -s "$cache/vmlinuz" ] && [ -s "$cache/initramfs.gz" ]; then
	exit 0
fi

deb=$(newest "$cache"/dl/"$pkg"_*.deb)
if [ -z "$deb" ]; then
	# apt would drop to user _apt, who may not write to the cache directory.
	(cd "$cache/dl" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >/dev/null 2>&1) ||
		{ echo "guest-bundle: apt-get download $pkg failed" >&2; exit 1; }
	deb=$(newest "$cache"/dl/"$pkg"_*.deb)
	[ -n "$deb" ] || { echo "guest-bundle: $pkg missing after download" >&2; exit 1; }
fi

work=$(mktemp -d "$cache/work.XXXXXX")
trap 'rm -rf "$work"' EXIT
kroot=$work/kernel
dpkg-deb -x "$deb" "$kroot"
kver=$(ls -1 "$kroot/lib/modules" | head -n 1)
mdir=$kroot/lib/modules/$kver
# The .deb ships no modules.dep (the host's depmod writes it at install).
busybox depmod -b "$kroot" "$kver"

root=$work/initramfs
mkdir -p "$root"/{bin,sbin,dev,proc,sys,run/lock/iscsi,tmp,mnt,etc/iscsi/nodes,etc/iscsi/send_targets,etc/iscsi/ifaces,var/lib/iscsi,lib/modules/$kver}
cp /bin/busybox "$root/bin/busybox"
install -m 0755 "$here/guest-init.sh" "$root/init"
cp /etc/mke2fs.conf "$root/etc/mke2fs.conf"
printf 'node.startup = manual\n' >"$root/etc/iscsi/iscsid.conf"
# iscsid only obeys iscsiadm when getpwuid names the caller root.
echo 'root:x:0:0:root:/:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"

# copy_with_path FILE: copy FILE to the same path inside the initramfs.
copy_with_path() {
	mkdir -p "$root$(dirname "$1")"
	cp -L "$1" "$root$1"
}
for p in $programs; do
	copy_with_path "$p"
	for lib in $(ldd "$p" | awk '/=> \// {print $3} /^\t\/lib/ {print $1}'); do
		[ -e "$root$lib" ] || copy_with_path "$lib"
	done
done
ln -s mke2fs "$root/usr/sbin/mkfs.ext4"

# Resolve module dependencies from modules.dep (busybox modprobe reads the
# same file inside the guest) and copy only those modules.
needed=$(awk -v want="$modules" '
	BEGIN { n = split(want, w, " ") }
	{ sub(":", "", $1); name = $1; sub(".*/", "", name); sub("\\.ko.*", "", name)
	  gsub("-", "_", name); path[name] = $1; deps[$1] = ""
	  for (i = 2; i <= NF; i++) deps[$1] = deps[$1] " " $i }
	function visit(p,   d, k, i) {
		if (p in seen) return
		seen[p] = 1; print p
		k = split(deps[p], d, " ")
		for (i = 1; i <= k; i++) visit(d[i])
	}
	END { for (i = 1; i <= n; i++) {
		if (!(w[i] in path)) { print "missing module " w[i] > "/dev/stderr"; exit 1 }
		visit(path[w[i]]) } }' "$mdir/modules.dep")
for m in $needed; do
	mkdir -p "$root/lib/modules/$kver/$(dirname "$m")"
	cp "$mdir/$m" "$root/lib/modules/$kver/$m"
	grep "^$m:" "$mdir/modules.dep" >>"$root/lib/modules/$kver/modules.dep"
done

cp "$kroot/boot/vmlinuz-$kver" "$work/vmlinuz"
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet --owner=0:0) | gzip -1 >"$work/initramfs.gz"
mv "$work/vmlinuz" "$cache/vmlinuz"
mv "$work/initramfs.gz" "$cache/initramfs.gz"
echo "$key" >"$cache/stamp"
