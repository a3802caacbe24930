package boot

import (
	"net"
	"net/netip"
	"strconv"
)

// Client system architecture types of DHCP option 93 (RFC 4578 2.1 and the
// IANA "Processor Architecture Types" registry).
const (
	ArchBIOS         uint16 = 0  // x86 BIOS
	ArchEFIIA32      uint16 = 6  // x86 UEFI
	ArchEFIx64BC     uint16 = 7  // x64 UEFI (EFI BC; what most x64 firmware sends)
	ArchEFIx64       uint16 = 9  // x64 UEFI (EFI x86-64)
	ArchEFIARM32     uint16 = 10 // ARM 32-bit UEFI
	ArchEFIARM64     uint16 = 11 // ARM 64-bit UEFI
	ArchEFIIA32HTTP  uint16 = 15 // x86 UEFI HTTP boot
	ArchEFIx64HTTP   uint16 = 16 // x64 UEFI HTTP boot
	ArchEFIARM32HTTP uint16 = 18 // ARM 32-bit UEFI HTTP boot
	ArchEFIARM64HTTP uint16 = 19 // ARM 64-bit UEFI HTTP boot
)

// cpu families the binaries are built for.
const (
	cpuBIOS  = "bios"
	cpuIA32  = "efi-ia32"
	cpuX64   = "efi-x64"
	cpuARM32 = "efi-arm32"
	cpuARM64 = "efi-arm64"
)

// binaries are the iPXE builds offered per family, best first, as paths
// in Config.Binaries. Debian's ipxe package ships the BIOS and x86-64 ones
// in /usr/lib/ipxe; for IA32 and arm64 put upstream's bin-i386-efi and
// bin-arm64-efi builds in subdirectories. snponly.efi drives the NIC
// through the firmware's SNP, which works on any NIC the firmware knows;
// ipxe.efi (all iPXE drivers) is the fallback.
var binaries = map[string][]string{
	cpuBIOS:  {"undionly.kpxe"},
	cpuX64:   {"snponly.efi", "ipxe.efi"},
	cpuIA32:  {"i386-efi/snponly.efi", "i386-efi/ipxe.efi"},
	cpuARM64: {"arm64-efi/snponly.efi", "arm64-efi/ipxe.efi"},
	cpuARM32: {}, // iPXE has no arm32 EFI build worth offering
}

// ArchName names an option 93 value for logs and the registry.
func ArchName(arch uint16) string {
	switch arch {
	case ArchBIOS:
		return cpuBIOS
	case ArchEFIIA32:
		return cpuIA32
	case ArchEFIx64BC, ArchEFIx64:
		return cpuX64
	case ArchEFIARM32:
		return cpuARM32
	case ArchEFIARM64:
		return cpuARM64
	case ArchEFIIA32HTTP:
		return cpuIA32 + "-http"
	case ArchEFIx64HTTP:
		return cpuX64 + "-http"
	case ArchEFIARM32HTTP:
		return cpuARM32 + "-http"
	case ArchEFIARM64HTTP:
		return cpuARM64 + "-http"
	}
	return "arch-" + strconv.Itoa(int(arch))
}

func cpuOf(arch uint16) string {
	switch arch {
	case ArchBIOS:
		return cpuBIOS
	case ArchEFIIA32, ArchEFIIA32HTTP:
		return cpuIA32
	case ArchEFIx64BC, ArchEFIx64, ArchEFIx64HTTP:
		return cpuX64
	case ArchEFIARM32, ArchEFIARM32HTTP:
		return cpuARM32
	case ArchEFIARM64, ArchEFIARM64HTTP:
		return cpuARM64
	}
	return ""
}

// ScriptPath is the path of the iPXE script endpoint served by internal/web.
const ScriptPath = "/boot.ipxe"

// ReportPath is where a host's script reports a failed step:
// ?mac=...&step=sanboot&errno=0x0216eb3c (internal/web).
const ReportPath = "/boot/report"

// ReportSteps are the steps a script names in its reports.
var ReportSteps = []string{"sanboot", "sanhook", "kernel", "initrd", "boot"}

// BinaryPathPrefix is where internal/web serves the iPXE binaries (UEFI
// HTTP boot).
const BinaryPathPrefix = "/ipxe/"

// ScriptURL is the URL iPXE is sent to for its script. It carries the
// iPXE variable ${netX/mac} literally: iPXE expands settings in the DHCP
// filename (usr/autoboot.c) and in chain, so each host fetches its own
// script. netX is the NIC iPXE opened last - the one it is booting from -
// where net0 would be wrong on a machine booting from its second NIC.
func (b *Booter) ScriptURL(server netip.Addr) string {
	return "http://" + hostPort(server, b.cfg.HTTPPort) + ScriptPath + "?mac=${netX/mac}"
}

// DHCPBoot decides what a PXE client is offered: ok false means no boot
// offer at all (unknown host under PolicyRefuse, or no binary for its
// architecture). arch is the option 93 value; isIPXE means the request
// came from iPXE itself (user class "iPXE" / option 175), isHTTP a UEFI
// HTTP boot client (vendor class "HTTPClient"); server is the address of
// the interface the request came in on.
//
//   - iPXE: the script URL, so iPXE never chainloads itself again.
//   - UEFI HTTP boot: the http:// URL of the EFI binary.
//   - otherwise: the TFTP file name: undionly.kpxe for BIOS, snponly.efi
//     (else ipxe.efi) for x64 UEFI, and the i386-efi/ or arm64-efi/ builds
//     when present.
//
// Unknown MACs are recorded in the registry with their architecture.
func (b *Booter) DHCPBoot(mac net.HardwareAddr, arch uint16, isIPXE, isHTTP bool, server netip.Addr) (string, bool) {
	if _, known := b.host(mac); !known {
		b.registry.Observe(mac, netip.Addr{}, ArchName(arch))
		if b.cfg.Unknown == PolicyRefuse {
			return "", false
		}
	}
	if isIPXE {
		return b.ScriptURL(server), true
	}
	name := ""
	for _, n := range binaries[cpuOf(arch)] {
		if b.present[n] {
			name = n
			break
		}
	}
	if name == "" {
		return "", false
	}
	if isHTTP {
		return "http://" + hostPort(server, b.cfg.HTTPPort) + BinaryPathPrefix + name, true
	}
	return name, true
}

// hostPort formats an address for a URL or SAN URI: IPv6 in brackets,
// IPv4-mapped addresses (from dual-stack sockets) as IPv4.
func hostPort(a netip.Addr, port uint16) string {
	return netip.AddrPortFrom(a.Unmap().WithZone(""), port).String()
}
