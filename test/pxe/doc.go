// Package pxe holds the end-to-end network boot tests of `diskless serve`
// (issue 3, "What must show" item 1): a QEMU machine with an empty disk
// boots from power-on to the iSCSI LUN diskless serves, over a test network
// the test builds itself - no user-mode networking.
//
// Each test makes its own network namespaces (names unique per run): one
// with a bridge and the QEMU tap device, where QEMU runs; one where
// `diskless serve` runs (started with `ip netns exec`) on a veth to the
// bridge; in the proxy case one more for dnsmasq as the site's DHCP server.
// Nothing is added to the host's own namespace, and everything is removed in
// t.Cleanup. Cases:
//
//   - bios-full: SeaBIOS + iPXE NIC ROM, dhcp mode full (quick-start flags);
//   - bios-proxy: the same beside dnsmasq handing out addresses only;
//   - uefi-full: OVMF's own PXE stack chainloads snponly.efi by TFTP, which
//     sanboots a GPT disk whose EFI system partition holds a standalone GRUB
//     as \EFI\BOOT\BOOTX64.EFI (YAML config file);
//   - bios-rotate: a host with chap_rotation boot (YAML) boots twice with a
//     server restart between: each boot's script carries new secrets, the
//     target takes only those, and iPXE's login with them reaches the LUN.
//
// Each logs its power-on to marker time. The tests need root, ip, QEMU, the
// iPXE ROMs and binaries, dnsmasq, OVMF, grub-efi-amd64-bin, mtools and
// dosfstools (scripts/ci-deps.sh installs them) and skip with the reason
// otherwise, and under -short.
//
//	go test ./test/pxe/ -v -timeout 20m
package pxe
