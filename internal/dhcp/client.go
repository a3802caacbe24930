package dhcp

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Arch is a client's firmware and processor, from option 93 (RFC 4578 2.1
// and the IANA "Processor Architecture Types" registry).
type Arch uint8

const (
	ArchUnknown        Arch = iota
	ArchBIOS                // 0: x86 BIOS
	ArchEFIIA32             // 6: x86 UEFI
	ArchEFIx64              // 7 (what EDK2 sends) and 9 (RFC 4578's "EFI x86-64")
	ArchEFIARM32            // 10
	ArchEFIARM64            // 11
	ArchEFIRISCV64          // 27
	ArchEFIIA32HTTP         // 15: x86 UEFI HTTP boot
	ArchEFIx64HTTP          // 16: x64 UEFI HTTP boot
	ArchEFIARM32HTTP        // 18
	ArchEFIARM64HTTP        // 19
	ArchEFIRISCV64HTTP      // 28
	ArchBIOSHTTP            // 20: x86 BIOS HTTP boot
)

var archNames = [...]string{
	ArchUnknown:        "unknown",
	ArchBIOS:           "bios",
	ArchEFIIA32:        "efi-ia32",
	ArchEFIx64:         "efi-x64",
	ArchEFIARM32:       "efi-arm32",
	ArchEFIARM64:       "efi-arm64",
	ArchEFIRISCV64:     "efi-riscv64",
	ArchEFIIA32HTTP:    "efi-ia32-http",
	ArchEFIx64HTTP:     "efi-x64-http",
	ArchEFIARM32HTTP:   "efi-arm32-http",
	ArchEFIARM64HTTP:   "efi-arm64-http",
	ArchEFIRISCV64HTTP: "efi-riscv64-http",
	ArchBIOSHTTP:       "bios-http",
}

func (a Arch) String() string {
	if int(a) < len(archNames) {
		return archNames[a]
	}
	return "arch(" + strconv.Itoa(int(a)) + ")"
}

// EFI reports UEFI firmware.
func (a Arch) EFI() bool { return a != ArchUnknown && a != ArchBIOS && a != ArchBIOSHTTP }

// HTTP reports an HTTP-boot architecture type.
func (a Arch) HTTP() bool { return a >= ArchEFIIA32HTTP }

// archFromCode maps an IANA processor architecture type to an Arch.
func archFromCode(c uint16) Arch {
	switch c {
	case 0:
		return ArchBIOS
	case 6:
		return ArchEFIIA32
	case 7, 9:
		return ArchEFIx64
	case 10:
		return ArchEFIARM32
	case 11:
		return ArchEFIARM64
	case 27:
		return ArchEFIRISCV64
	case 15:
		return ArchEFIIA32HTTP
	case 16:
		return ArchEFIx64HTTP
	case 18:
		return ArchEFIARM32HTTP
	case 19:
		return ArchEFIARM64HTTP
	case 28:
		return ArchEFIRISCV64HTTP
	case 20:
		return ArchBIOSHTTP
	}
	return ArchUnknown
}

// IPXEFeature is a capability an iPXE build announces in option 175 (iPXE
// src/include/ipxe/features.h, DHCP_EB_FEATURE_*).
type IPXEFeature uint8

const (
	IPXEFeatureISCSI IPXEFeature = 0x11
	IPXEFeatureHTTP  IPXEFeature = 0x13
	IPXEFeatureHTTPS IPXEFeature = 0x14
	IPXEFeatureTFTP  IPXEFeature = 0x15
	IPXEFeatureDNS   IPXEFeature = 0x17
	IPXEFeaturePXE   IPXEFeature = 0x21 // can load PXE NBPs
	IPXEFeatureEFI   IPXEFeature = 0x24 // can load EFI images
)

// ClientInfo is what a request says about the client, for a BootPolicy.
type ClientInfo struct {
	MAC net.HardwareAddr
	// Arch comes from option 93, else from the "Arch:NNNNN" field of a
	// PXEClient/HTTPClient vendor class; a PXEClient that says neither is
	// taken as BIOS (PXE 2.0 ROMs predate option 93).
	Arch Arch
	// ArchCode is the raw architecture type, or -1 when the client sent none.
	ArchCode int
	// PXE is set for vendor class "PXEClient..." (PXE ROMs, UEFI PXE, iPXE).
	PXE bool
	// HTTPClient is set for vendor class "HTTPClient..." (UEFI HTTP boot),
	// which must be given a URL.
	HTTPClient bool
	// IPXE is set when the client is iPXE itself (user class "iPXE" or
	// option 175): give it the script URL, not an iPXE binary again.
	IPXE bool
	// IPXEFeatures lists the features an iPXE client announced.
	IPXEFeatures []IPXEFeature
	VendorClass  string // option 60
	UserClass    string // option 77, raw
	Hostname     string // option 12
	// GUID is the client machine identifier (option 97, type 0), if sent.
	GUID []byte
	// Relay is the relay agent address (giaddr), if the request was relayed.
	Relay netip.Addr
}

// Netboot reports whether the client asks to boot from the network.
func (c *ClientInfo) Netboot() bool { return c.PXE || c.HTTPClient || c.IPXE }

// HasIPXEFeature reports whether an iPXE client announced f.
func (c *ClientInfo) HasIPXEFeature(f IPXEFeature) bool {
	for _, g := range c.IPXEFeatures {
		if g == f {
			return true
		}
	}
	return false
}

const (
	optIPXEEncap  uint8 = 175 // iPXE encapsulated options
	optNoPXEDHCP  uint8 = 176 // inside 175: do not wait for ProxyDHCP offers
	optClientArch uint8 = 93
	optClientGUID uint8 = 97
	optPXEVendor  uint8 = 43
	pxeDiscCtrl   uint8 = 6  // PXE_DISCOVERY_CONTROL inside option 43
	pxeBootItem   uint8 = 71 // PXE_BOOT_ITEM inside option 43
)

// classify extracts ClientInfo from a request. It never fails: options it
// cannot read are left out.
func classify(req *dhcpv4.DHCPv4) ClientInfo {
	ci := ClientInfo{
		MAC:         append(net.HardwareAddr(nil), req.ClientHWAddr...),
		ArchCode:    -1,
		VendorClass: string(req.Options.Get(dhcpv4.OptionClassIdentifier)),
		UserClass:   string(req.Options.Get(dhcpv4.OptionUserClassInformation)),
		Hostname:    string(req.Options.Get(dhcpv4.OptionHostName)),
	}
	ci.PXE = strings.HasPrefix(ci.VendorClass, "PXEClient")
	ci.HTTPClient = strings.HasPrefix(ci.VendorClass, "HTTPClient")
	if g := req.GatewayIPAddr.To4(); g != nil && !g.IsUnspecified() {
		ci.Relay = netip.AddrFrom4([4]byte(g))
	}

	// Option 93 is a list of 16-bit types (RFC 4578 2.1); the first one is
	// the client's own.
	if v := req.Options[optClientArch]; len(v) >= 2 && len(v)%2 == 0 {
		ci.ArchCode = int(binary.BigEndian.Uint16(v))
	} else if c, ok := vendorClassArch(ci.VendorClass); ok {
		ci.ArchCode = int(c)
	}
	if ci.ArchCode >= 0 {
		ci.Arch = archFromCode(uint16(ci.ArchCode))
	} else if ci.PXE {
		ci.Arch = ArchBIOS
	}

	// iPXE sends user class "iPXE" as a plain string, not in RFC 3004
	// form; accept both.
	if ci.UserClass == "iPXE" {
		ci.IPXE = true
	} else {
		for _, u := range req.UserClass() {
			if u == "iPXE" {
				ci.IPXE = true
			}
		}
	}
	if enc, ok := req.Options[optIPXEEncap]; ok {
		ci.IPXE = true
		ci.IPXEFeatures = ipxeFeatures(enc)
	}
	if g := req.Options[optClientGUID]; len(g) == 17 && g[0] == 0 {
		ci.GUID = append([]byte(nil), g[1:]...)
	}
	return ci
}

// vendorClassArch reads the architecture from a vendor class of the form
// "PXEClient:Arch:xxxxx:UNDI:yyyzzz" (PXE 2.1 2.2.5; UEFI 2.x 24.7.x for
// HTTPClient), where xxxxx is the type in decimal.
func vendorClassArch(vc string) (uint16, bool) {
	_, rest, ok := strings.Cut(vc, ":Arch:")
	if !ok || len(rest) < 5 {
		return 0, false
	}
	n, err := strconv.ParseUint(rest[:5], 10, 16)
	if err != nil {
		return 0, false
	}
	return uint16(n), true
}

// ipxeFeatures walks the encapsulated options of option 175 and returns the
// feature tags set to a non-zero value. Malformed tails are ignored.
func ipxeFeatures(b []byte) []IPXEFeature {
	var fs []IPXEFeature
	for len(b) >= 2 {
		code, n := b[0], int(b[1])
		if code == 0 {
			b = b[1:]
			continue
		}
		if code == 255 || 2+n > len(b) {
			break
		}
		v := b[2 : 2+n]
		if code >= 0x10 && code < 0x30 && n == 1 && v[0] != 0 {
			fs = append(fs, IPXEFeature(code))
		}
		b = b[2+n:]
	}
	return fs
}

// bootItem returns the PXE_BOOT_ITEM (type, layer) a client asks a boot
// server for in option 43 (PXE 2.1 table 2-1), if any.
func bootItem(req *dhcpv4.DHCPv4) ([]byte, bool) {
	b := req.Options[optPXEVendor]
	for len(b) >= 2 {
		code, n := b[0], int(b[1])
		if code == 0 {
			b = b[1:]
			continue
		}
		if code == 255 || 2+n > len(b) {
			return nil, false
		}
		if code == pxeBootItem && n == 4 {
			return b[2:6], true
		}
		b = b[2+n:]
	}
	return nil, false
}
