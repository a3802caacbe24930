// Package ra makes IPv6 hosts on a served link stop waiting for a router:
// it answers Router Solicitations (RFC 4861 6.1.1) with a Router
// Advertisement that carries no prefix, no flags and a router lifetime of 0.
// Such an RA configures nothing - no address, no default route, no DHCPv6 -
// it only tells the host that the link's routers have spoken. iPXE's IPv6
// autoconfiguration (src/net/ndp.c ipv6conf) otherwise solicits for about
// 13 s on a link without a router before `dhcp` returns, on every boot.
//
// It owns the wire format of the two messages (pure: no I/O, no logging) and
// a server that answers on one interface only, at a bounded rate. It must
// not advertise anything a host would configure: no prefix, no MTU, no DNS.
//
// ICMPv6 message layouts (the IPv6 header is the kernel's):
//
//	Router Solicitation (RFC 4861 4.1)   Router Advertisement (RFC 4861 4.2)
//	0      type 133                      0      type 134
//	1      code 0                        1      code 0
//	2-3    checksum                      2-3    checksum
//	4-7    reserved                      4      cur hop limit
//	8-     options                       5      M (0x80), O (0x40) flags
//	                                     6-7    router lifetime (s)
//	                                     8-11   reachable time (ms)
//	                                     12-15  retrans timer (ms)
//	                                     16-    options
//
//	option: type (1 byte), length in units of 8 bytes (1 byte, 0 invalid),
//	data. Source Link-Layer Address is type 1 (RFC 4861 4.6.1).
package ra

import (
	"encoding/binary"
	"errors"
	"net"
)

// ICMPv6 types and NDP option types used here (RFC 4861 4.1, 4.2, 4.6).
const (
	TypeRouterSolicitation  = 133
	TypeRouterAdvertisement = 134
	optSourceLinkAddr       = 1
	rsHeaderLen             = 8
	raHeaderLen             = 16
)

// Parse errors: why a solicitation was dropped.
var (
	ErrShort     = errors.New("ra: short message")
	ErrNotRS     = errors.New("ra: not a router solicitation")
	ErrBadOption = errors.New("ra: malformed option")
)

// RouterSolicitation is a parsed Router Solicitation.
type RouterSolicitation struct {
	// SourceLinkAddr is the Source Link-Layer Address option, nil if absent.
	SourceLinkAddr net.HardwareAddr
}

// ParseRouterSolicitation decodes an ICMPv6 Router Solicitation as a raw
// ICMPv6 socket delivers it (starting at the ICMP type), with the checks of
// RFC 4861 6.1.1 that need only the message: code 0, at least 8 bytes, no
// option of length 0. The hop limit (must be 255) and the source address
// are the caller's to check. Unknown options are skipped (RFC 4861 4.6).
func ParseRouterSolicitation(b []byte) (RouterSolicitation, error) {
	var rs RouterSolicitation
	if len(b) < rsHeaderLen {
		return rs, ErrShort
	}
	if b[0] != TypeRouterSolicitation || b[1] != 0 {
		return rs, ErrNotRS
	}
	opts := b[rsHeaderLen:]
	for len(opts) > 0 {
		if len(opts) < 2 {
			return rs, ErrBadOption
		}
		n := int(opts[1]) * 8
		if n == 0 || n > len(opts) {
			return rs, ErrBadOption
		}
		if opts[0] == optSourceLinkAddr && rs.SourceLinkAddr == nil {
			rs.SourceLinkAddr = net.HardwareAddr(append([]byte(nil), opts[2:n]...))
		}
		opts = opts[n:]
	}
	return rs, nil
}

// RouterAdvertisement is a Router Advertisement (RFC 4861 4.2).
type RouterAdvertisement struct {
	CurHopLimit    uint8
	Managed, Other bool   // M and O flags: DHCPv6 for addresses / other configuration
	RouterLifetime uint16 // seconds; 0: not a default router (RFC 4861 6.3.4)
	ReachableTime  uint32 // milliseconds; 0: unspecified
	RetransTimer   uint32 // milliseconds; 0: unspecified
	// SourceLinkAddr, when set, is sent as the Source Link-Layer Address
	// option (RFC 4861 4.2: a router SHOULD include it) so the host needs
	// no neighbour solicitation to answer.
	SourceLinkAddr net.HardwareAddr
}

// AppendBinary appends the ICMPv6 message to b with a zero checksum: the
// kernel computes the checksum of raw ICMPv6 sockets (RFC 3542 3.1).
func (ra *RouterAdvertisement) AppendBinary(b []byte) []byte {
	var flags byte
	if ra.Managed {
		flags |= 0x80
	}
	if ra.Other {
		flags |= 0x40
	}
	b = append(b, TypeRouterAdvertisement, 0, 0, 0, ra.CurHopLimit, flags)
	b = binary.BigEndian.AppendUint16(b, ra.RouterLifetime)
	b = binary.BigEndian.AppendUint32(b, ra.ReachableTime)
	b = binary.BigEndian.AppendUint32(b, ra.RetransTimer)
	if l := len(ra.SourceLinkAddr); l > 0 && l <= 253 {
		units := (2 + l + 7) / 8
		b = append(b, optSourceLinkAddr, byte(units))
		b = append(b, ra.SourceLinkAddr...)
		b = append(b, make([]byte, units*8-2-l)...)
	}
	return b
}
