package dhcp

import (
	"fmt"
	"net/netip"
	"strings"
)

// Boot is what a client is told to boot.
type Boot struct {
	// Filename is a path on the TFTP server for PXE firmware, or a URL
	// (http://, https://, tftp://) for iPXE and UEFI HTTP boot. At most 254
	// bytes (option 67 with its NUL); names longer than 127 bytes travel in option 67 only.
	Filename string
	// NextServer is the TFTP server (siaddr) (default: Config.ServerIP).
	NextServer netip.Addr
}

// BootPolicy decides what a network-boot client boots. It returns false
// for a client that gets no boot information: in proxy mode such a client
// gets no answer at all; in full mode it still gets its address. It is
// called only for clients that ask to boot (ClientInfo.Netboot), from
// several goroutines at once, and must not block for long.
type BootPolicy func(ClientInfo) (Boot, bool)

// isURL reports whether a boot file name is a URL rather than a TFTP path.
func isURL(name string) bool {
	return strings.HasPrefix(name, "http://") || strings.HasPrefix(name, "https://") ||
		strings.HasPrefix(name, "tftp://")
}

// check validates what a policy returned for ci.
func (b *Boot) check(ci *ClientInfo) error {
	switch {
	case b.Filename == "":
		return fmt.Errorf("empty boot file name")
	case len(b.Filename) > 254:
		return fmt.Errorf("boot file name of %d bytes does not fit option 67", len(b.Filename))
	case strings.IndexByte(b.Filename, 0) >= 0:
		return fmt.Errorf("boot file name contains NUL")
	case ci.HTTPClient && !strings.HasPrefix(b.Filename, "http://") && !strings.HasPrefix(b.Filename, "https://"):
		// UEFI HTTP boot classifies an offer without an http(s) URI as
		// unusable (EDK2 HttpBootDhcp4.c HttpBootParseDhcp4Packet).
		return fmt.Errorf("HTTP boot client needs an http(s) URL, not %q", b.Filename)
	case b.NextServer.IsValid() && !b.NextServer.Unmap().Is4():
		return fmt.Errorf("next server %v is not IPv4", b.NextServer)
	}
	return nil
}
