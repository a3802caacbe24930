#!/usr/bin/env bash
# Install the real peers the interop tests (test/interop) and
# scripts/bench-vs-tgt.sh run against, and the tools that make failing
# storage for internal/testutil/faildev. Idempotent and quiet: does nothing
# when everything is present. Needs root (CI runs as root).
set -euo pipefail

pkgs=(
	qemu-system-x86 # PC emulator for the iPXE and Linux guests (pulls in SeaBIOS)
	ipxe-qemu       # iPXE NIC ROMs QEMU loads (efi-e1000.rom)
	qemu-utils      # qemu-img
	qemu-block-extra # QEMU's iscsi:// block driver (libiscsi)
	libiscsi-bin    # iscsi-test-cu, iscsi-inq
	open-iscsi      # iscsistart, iscsid, iscsiadm copied into the Linux guest
	busybox-static  # the guest's userland
	e2fsprogs       # mkfs.ext4/e2fsck in the guest, e2fsck/debugfs on the host; small ext4s that fill up (faildev)
	dmsetup         # device-mapper error/flakey devices that start failing (internal/testutil/faildev)
	cpio            # packs the guest initramfs
	tgt             # reference target (DISKLESS_INTEROP_TARGET=tgt, benchmark)
	tgt-rbd         # tgt's Ceph RBD backing store: the reference in scripts/bench-rbd.sh
	iperf3          # loopback ceiling in the benchmark
	time            # /usr/bin/time: the initiator's CPU per I/O in the benchmark
	python3         # ../shared/tools scripts
	iproute2        # ip netns/link/tuntap for the test networks (test/pxe)
	ipxe            # undionly.kpxe, snponly.efi served by diskless serve's TFTP
	dnsmasq-base    # the site's DHCP server beside proxyDHCP (test/pxe)
	ovmf            # UEFI firmware with its own PXE stack (test/pxe)
	grub-efi-amd64-bin # standalone GRUB as the UEFI test disk's boot loader
	mtools          # builds the test disk's EFI system partition without mounting
	dosfstools      # mkfs.vfat for that partition
	tftp-hpa        # real TFTP clients for internal/tftp's interop tests
	atftp
	curl
	debootstrap     # diskless image build (its root test builds a small image)
	gdisk           # sgdisk for the image's GPT
	fdisk           # sfdisk: diskless image prepare reads partition tables
	chromium        # headless browser driving the web console's test (test/pxe)
	systemd         # systemd-analyze verify/security on the .deb's units (scripts/test-deb.sh)
	init-system-helpers # deb-systemd-helper in the .deb's maintainer scripts
	prometheus      # promtool checks a real /metrics scrape (internal/app TestMetricsPromtool)
	etcd-server     # the etcd store's tests start their own etcd on loopback (internal/testutil/etcd)
	ceph-mon        # the RBD backend's tests start their own one-node Ceph on loopback (internal/testutil/ceph)
	ceph-osd
	ceph-common     # ceph, rbd, rados, ceph-authtool, monmaptool
	librbd-dev      # the -tags ceph build (go-ceph, cgo)
	librados-dev
	libradospp-dev  # librados.hpp for librbd's C++ API (internal/storage/rbd_image.cc)
	g++             # compiles that file (cgo)
)

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# scripts/guest-bundle.sh resolves and downloads the guest kernel through apt.
if [ ${#missing[@]} -gt 0 ] || ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then
	apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The prometheus package also brings a Prometheus server, which its postinst
# starts wherever no policy-rc.d forbids it (containers usually do) or
# systemd runs: nothing here needs it, so it is stopped and not started again.
# etcd-server likewise brings an etcd daemon on the default ports 2379/2380;
# the tests start their own on free ports, so it is stopped and disabled too.
# The Ceph packages enable ceph.target and their daemons' templates; nothing
# is configured, but none should run: stopped and disabled.
for svc in prometheus etcd ceph ceph-mon ceph-osd; do
	pkg=$svc
	[ "$svc" = etcd ] && pkg=etcd-server
	[ "$svc" = ceph ] && pkg=ceph-common
	[[ " ${missing[*]} " == *" $pkg "* ]] || continue
	if [ -d /run/systemd/system ]; then
		systemctl disable --now "$svc.service" >/dev/null 2>&1 || true
		systemctl disable --now "$svc.target" >/dev/null 2>&1 || true
	elif [ -x "/etc/init.d/$svc" ]; then
		"/etc/init.d/$svc" stop >/dev/null 2>&1 || true
		update-rc.d "$svc" disable >/dev/null 2>&1 || true
	fi
done
