package dhcp

import (
	"encoding/binary"
	"fmt"
	"net"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Requests built the way real network-boot clients send them, option by
// option, from their sources:
//   - PXE 2.1 BIOS ROM (Intel Boot Agent style): PXE 2.1 spec 2.2.1.
//   - EDK2/OVMF UefiPxeBcDxe: PxeBcDhcp4.c PxeBcBuildDhcp4Options
//     (35-entry parameter list, UNDI 3.0, "PXEClient:Arch:xxxxx:UNDI:003000").
//   - EDK2 HttpBootDxe: "HTTPClient:Arch:00016:UNDI:003000", type 16.
//   - iPXE: src/net/udp/dhcp.c dhcp_request_options_data and
//     dhcp_create_request (user class "iPXE", option 175 features,
//     client identifier, flags 0).
//   - Linux: a plain DHCP client without PXE options.

type clientKind struct {
	name     string
	arch     uint16 // option 93; 0xffff: none
	ndi      []byte // option 94
	vendor   string // option 60
	user     string // option 77
	prl      []byte // option 55
	maxSize  uint16 // option 57
	ipxe     bool   // option 175 features and 61
	bcast    bool   // flags broadcast bit
	hostname string
}

var (
	edk2PRL = []byte{1, 2, 3, 4, 5, 6, 12, 13, 15, 17, 18, 22, 23, 28, 40, 41, 42, 43, 50, 51, 54, 58, 59, 60, 66, 67, 97,
		128, 129, 130, 131, 132, 133, 134, 135}
	biosPRL = []byte{1, 2, 3, 5, 6, 11, 12, 13, 15, 16, 17, 18, 22, 23, 28, 40, 41, 42, 43, 50, 51, 54, 58, 59, 60, 66, 67,
		97, 128, 129, 130, 131, 132, 133, 134, 135}
	ipxePRL  = []byte{1, 3, 6, 7, 12, 15, 17, 26, 42, 43, 60, 66, 67, 119, 121, 128, 129, 130, 131, 132, 133, 134, 135, 175, 203}
	linuxPRL = []byte{1, 28, 2, 3, 15, 6, 119, 12, 44, 47, 26, 121, 42}
)

var (
	kindBIOSPXE = clientKind{name: "bios-pxe", arch: 0, ndi: []byte{1, 2, 1}, vendor: "PXEClient:Arch:00000:UNDI:002001",
		prl: biosPRL, maxSize: 1260, bcast: true}
	kindOVMFx64 = clientKind{name: "ovmf-x64", arch: 7, ndi: []byte{1, 3, 0}, vendor: "PXEClient:Arch:00007:UNDI:003000",
		prl: edk2PRL, maxSize: 1464, bcast: true}
	kindOVMFia32 = clientKind{name: "ovmf-ia32", arch: 6, ndi: []byte{1, 3, 0}, vendor: "PXEClient:Arch:00006:UNDI:003000",
		prl: edk2PRL, maxSize: 1464, bcast: true}
	kindAAVMF = clientKind{name: "aavmf-arm64", arch: 11, ndi: []byte{1, 3, 0}, vendor: "PXEClient:Arch:00011:UNDI:003000",
		prl: edk2PRL, maxSize: 1464, bcast: true}
	kindHTTPx64 = clientKind{name: "http-x64", arch: 16, ndi: []byte{1, 3, 0}, vendor: "HTTPClient:Arch:00016:UNDI:003000",
		prl: []byte{1, 3, 6, 12, 15, 28, 43, 60, 67, 97}, maxSize: 1464, bcast: true}
	kindIPXEBIOS = clientKind{name: "ipxe-bios", arch: 0, ndi: []byte{1, 2, 1}, vendor: "PXEClient:Arch:00000:UNDI:002001",
		user: "iPXE", prl: ipxePRL, maxSize: 1472, ipxe: true}
	kindIPXEx64 = clientKind{name: "ipxe-efi-x64", arch: 7, ndi: []byte{1, 3, 16}, vendor: "PXEClient:Arch:00007:UNDI:003016",
		user: "iPXE", prl: ipxePRL, maxSize: 1472, ipxe: true}
	kindLinux = clientKind{name: "linux", arch: 0xffff, prl: linuxPRL, maxSize: 576, hostname: "node1"}
)

var testGUID = []byte{0x4c, 0x4c, 0x45, 0x44, 0x00, 0x35, 0x4b, 0x10, 0x80, 0x4e, 0xb4, 0xc0, 0x4f, 0x4e, 0x36, 0x31}

// ipxeEncap is an iPXE 1.21 option 175: features PXE_EXT, iSCSI, HTTP,
// HTTPS, TFTP, DNS, bzImage, ELF, PXE, EFI, and the version.
var ipxeEncap = []byte{
	0x10, 1, 1, 0x11, 1, 1, 0x13, 1, 1, 0x14, 1, 1, 0x15, 1, 1, 0x17, 1, 1, 0x18, 1, 1,
	0x22, 1, 1, 0x21, 1, 1, 0x24, 1, 1, 0xeb, 3, 1, 21, 1,
}

// build makes a request of type mt from this client. xid is fixed so
// golden replies are stable.
func (k clientKind) build(mac net.HardwareAddr, mt dhcpv4.MessageType, xid uint32) *dhcpv4.DHCPv4 {
	d := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootRequest,
		HWType:        iana.HWTypeEthernet,
		ClientHWAddr:  mac,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: net.IPv4zero,
		Options:       dhcpv4.Options{},
	}
	binary.BigEndian.PutUint32(d.TransactionID[:], xid)
	if k.bcast {
		d.Flags = 0x8000
	}
	if mt == dhcpv4.MessageTypeDiscover {
		d.NumSeconds = 4
	}
	o := d.Options
	o[53] = []byte{byte(mt)}
	if k.maxSize != 0 {
		o[57] = binary.BigEndian.AppendUint16(nil, k.maxSize)
	}
	if k.arch != 0xffff {
		o[93] = binary.BigEndian.AppendUint16(nil, k.arch)
		o[97] = append([]byte{0}, testGUID...)
	}
	if k.ndi != nil {
		o[94] = k.ndi
	}
	if k.vendor != "" {
		o[60] = []byte(k.vendor)
	}
	if k.user != "" {
		o[77] = []byte(k.user)
	}
	if k.prl != nil {
		o[55] = k.prl
	}
	if k.ipxe {
		o[175] = ipxeEncap
		o[61] = append([]byte{1}, mac...)
	}
	if k.hostname != "" {
		o[12] = []byte(k.hostname)
		o[61] = append([]byte{1}, mac...)
	}
	return d
}

// selecting makes the REQUEST a client sends after taking offer yiaddr
// from server sid (RFC 2131 4.3.2 SELECTING).
func (k clientKind) selecting(mac net.HardwareAddr, xid uint32, sid, yiaddr net.IP) *dhcpv4.DHCPv4 {
	d := k.build(mac, dhcpv4.MessageTypeRequest, xid)
	d.Options[54] = sid.To4()
	d.Options[50] = yiaddr.To4()
	return d
}

// bootServerRequest is EDK2's BINL REQUEST to port 4011 once it has an
// address (PxeBcDhcp4.c PxeBcDhcp4Discover with DestIp): unicast,
// ciaddr set, no broadcast flag.
func (k clientKind) bootServerRequest(mac net.HardwareAddr, xid uint32, ciaddr net.IP) *dhcpv4.DHCPv4 {
	d := k.build(mac, dhcpv4.MessageTypeRequest, xid)
	d.Flags = 0
	d.ClientIPAddr = ciaddr.To4()
	return d
}

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func macN(i int) net.HardwareAddr {
	return net.HardwareAddr{0x52, 0x54, 0x00, byte(i >> 16), byte(i >> 8), byte(i)}
}

// testPolicy is the boot policy of the common setup: firmware chainloads
// an iPXE binary per architecture over TFTP, UEFI HTTP boot fetches it over
// HTTP, iPXE gets its script URL. Machine 52:54:00:00:00:99 is unknown and
// refused.
func testPolicy(ci ClientInfo) (Boot, bool) {
	if ci.MAC.String() == "52:54:00:00:00:99" {
		return Boot{}, false
	}
	bin := map[Arch]string{
		ArchBIOS: "undionly.kpxe", ArchEFIx64: "snponly.efi", ArchEFIIA32: "ipxe-i386.efi", ArchEFIARM64: "snponly-arm64.efi",
		ArchEFIx64HTTP: "ipxe.efi", ArchEFIARM64HTTP: "ipxe-arm64.efi",
	}
	switch {
	case ci.IPXE:
		return Boot{Filename: fmt.Sprintf("http://10.77.0.1/boot.ipxe?mac=%s", ci.MAC)}, true
	case ci.HTTPClient:
		return Boot{Filename: "http://10.77.0.1/ipxe/" + bin[ci.Arch]}, bin[ci.Arch] != ""
	}
	return Boot{Filename: bin[ci.Arch]}, bin[ci.Arch] != ""
}
