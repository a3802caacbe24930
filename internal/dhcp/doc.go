// Package dhcp is the DHCPv4 server of diskless for network boot (PXE,
// UEFI HTTP boot, iPXE). It owns the server loop, address leases and the
// PXE-specific shape of replies; it decides nothing about what a machine
// boots (a BootPolicy does) and serves no files (TFTP and HTTP do).
//
// Three modes (Config.Mode):
//
//   - full: the DHCP server of the link. Addresses from a pool plus static
//     reservations per MAC; DISCOVER→OFFER, REQUEST→ACK/NAK, RELEASE,
//     DECLINE, INFORM (RFC 2131); leases persisted across restarts.
//   - proxy: beside the site's DHCP server (PXE 2.1 proxyDHCP). Only
//     PXE and HTTP boot clients are answered, with boot information and no
//     address (yiaddr 0), on port 67; the boot server REQUEST on port 4011
//     is answered with an ACK.
//   - off: no DHCP at all; NewServer refuses it.
//
// The codec is github.com/insomniacslk/dhcp/dhcpv4. Its server4 loop is not
// used: each socket gets one read loop and a fixed pool of workers with
// fixed buffers, so a flood costs bounded memory and the kernel drops what
// does not fit.
//
// Full mode on a link where anyone can send anything (issue 13): a client
// the server has no record of gets an offer only within
// Config.NewLeasesPerSecond and MaxLeases, and a lease only by taking that
// offer; reserved clients and clients with a lease are never held back,
// and the read loop hands their packets to the workers first, dropping the
// packets of unknown clients when the workers cannot keep up. ACKs wait
// for the lease file, the workers do not: writes are batched, at most ten
// a second (commit.go). Each refusal is counted by reason in Stats and
// logged, rate-limited.
//
// Client quirks the replies are shaped for, by source:
//
//   - EDK2/OVMF (NetworkPkg/UefiPxeBcDxe PxeBcDhcp4.c) sorts offers by
//     option 60 and 43: an offer with yiaddr carrying "PXEClient" but no
//     PXE discovery sub-options is a "DhcpBinl" offer and makes the firmware
//     ask port 4011 for its boot file. Full-mode offers therefore carry no
//     option 60 for PXE clients (a plain DhcpOnly offer with a file, as ISC
//     dhcpd and dnsmasq send). In proxy mode UEFI clients get a BINL offer
//     (option 60, no option 43) and then the 4011 ACK: older EDK2 drops
//     ProxyPxe10 offers (with option 43), every version follows BINL.
//   - BIOS PXE ROMs and iPXE in proxy mode get option 43 with
//     PXE_DISCOVERY_CONTROL = 8 (PXE 2.1 table 2-1: boot the file named in
//     this offer, no boot server discovery) plus siaddr and file.
//   - UEFI HTTP boot (HttpBootDxe) takes an offer only if option 60 starts
//     with "HTTPClient" and the boot file is a URL; in proxy mode the
//     offer with yiaddr 0 is paired with the site's address offer.
//   - iPXE (user class "iPXE" or option 175) waits up to 2-3 s for
//     ProxyDHCP offers after a plain DHCP offer; full-mode replies to iPXE
//     carry option 175.176 (no-pxedhcp) so it requests at once.
//   - Option 67 is NUL-terminated (EDK2 writes a NUL after an unterminated
//     option 67 in its copy of the packet, as dnsmasq notes).
//
// Replies go where RFC 2131 4.1 says: to the relay's server port when giaddr
// is set, to ciaddr when the client has an address, otherwise broadcast
// (broadcast is allowed when the server cannot unicast to a client without
// an address, which needs ARP cache injection).
package dhcp
