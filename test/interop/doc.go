// Package interop holds the tests that run the diskless iSCSI target against
// real initiators: iPXE sanboot under QEMU (SeaBIOS + the iPXE NIC ROM), the
// Linux kernel initiator (open-iscsi) in a QEMU guest, QEMU's libiscsi
// (qemu-img), and libiscsi's conformance suite (iscsi-test-cu).
//
// The package has no non-test code. TestMain builds ./cmd/diskless once; each
// test starts `diskless target` on a free 127.0.0.1 port and kills it on
// cleanup. All traffic stays on loopback: QEMU guests use user networking
// (slirp), where 10.0.2.2 is the host's 127.0.0.1.
//
// Run:
//
//	go test ./test/interop/ -v -timeout 30m
//	DISKLESS_INTEROP_TARGET=tgt go test ./test/interop/ -v    # same tests against Debian's tgt
//
// A test skips with its reason when a peer (qemu-system-x86_64, iPXE ROM,
// tgtd, libiscsi-bin, open-iscsi, ...) is missing; scripts/ci-deps.sh
// installs them all. All tests skip under -short.
//
// The Linux guest (kernel from Debian's linux-image-amd64 .deb plus an
// initramfs, built by scripts/guest-bundle.sh) is cached in
// $DISKLESS_INTEROP_CACHE, default /var/tmp/diskless-interop.
package interop
