package dhcp

import (
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// newReply starts a reply to req (RFC 2131 table 3): xid, flags, giaddr and
// chaddr copied; option 54 ours; client identifier (RFC 6842) and relay
// agent information (RFC 3046 2.2) echoed.
func (s *Server) newReply(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	rep := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootReply,
		HWType:        req.HWType,
		TransactionID: req.TransactionID,
		Flags:         req.Flags,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: req.GatewayIPAddr,
		ClientHWAddr:  req.ClientHWAddr,
		Options: dhcpv4.Options{
			uint8(dhcpv4.OptionDHCPMessageType):  {byte(mt)},
			uint8(dhcpv4.OptionServerIdentifier): s.cfg.ServerIP.AsSlice(),
		},
	}
	for _, o := range []dhcpv4.OptionCode{dhcpv4.OptionClientIdentifier, dhcpv4.OptionRelayAgentInformation} {
		// Longer values came concatenated from repeated options (RFC
		// 3396); no real client or relay sends them, so they are not
		// worth bloating the reply.
		if v, ok := req.Options[o.Code()]; ok && len(v) <= 255 {
			rep.Options[o.Code()] = v
		}
	}
	return rep
}

// replyDest is RFC 2131 4.1: a relayed request is answered to the relay's
// server port; a NAK is broadcast; a client with an address (ciaddr) gets
// unicast; anyone else gets a broadcast. Unicast to yiaddr of a client
// without an address would need ARP cache injection; RFC 2131 allows the
// broadcast instead, and every PXE client listens for it.
func (s *Server) replyDest(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType) netip.AddrPort {
	if g := addrOf(req.GatewayIPAddr); g.IsValid() {
		return netip.AddrPortFrom(g, s.serverPort)
	}
	if mt == dhcpv4.MessageTypeNak {
		return netip.AddrPortFrom(s.bcast, s.clientPort)
	}
	if c := addrOf(req.ClientIPAddr); c.IsValid() {
		return netip.AddrPortFrom(c, s.clientPort)
	}
	return netip.AddrPortFrom(s.bcast, s.clientPort)
}

// addLeaseOptions adds the network configuration of full mode: netmask,
// router, DNS, the host name of a known machine and, unless for an INFORM,
// lease time with T1 = 1/2 and T2 = 7/8 of it (RFC 2131 4.4.5).
func (s *Server) addLeaseOptions(rep *dhcpv4.DHCPv4, mac hwaddr, withLease bool) {
	o := rep.Options
	o[uint8(dhcpv4.OptionSubnetMask)] = s.cfg.netmask()
	if s.cfg.Router.IsValid() {
		o[uint8(dhcpv4.OptionRouter)] = s.cfg.Router.AsSlice()
	}
	if len(s.cfg.DNS) > 0 {
		var b []byte
		for _, a := range s.cfg.DNS {
			b = append(b, a.AsSlice()...)
		}
		o[uint8(dhcpv4.OptionDomainNameServer)] = b
	}
	if name := s.hostname(mac); name != "" {
		o[uint8(dhcpv4.OptionHostName)] = []byte(name)
	}
	if withLease {
		secs := uint32(s.cfg.LeaseTime.Seconds())
		o[uint8(dhcpv4.OptionIPAddressLeaseTime)] = binary.BigEndian.AppendUint32(nil, secs)
		o[uint8(dhcpv4.OptionRenewTimeValue)] = binary.BigEndian.AppendUint32(nil, secs/2)
		o[uint8(dhcpv4.OptionRebindingTimeValue)] = binary.BigEndian.AppendUint32(nil, secs/8*7)
	}
}

// fullBoot adds boot information to a full-mode OFFER or ACK, if the policy
// gives any. PXE clients get siaddr and file but no option 60: with
// "PXEClient" and no PXE vendor options, EDK2 takes the offer for a BINL
// offer and asks port 4011 for the file (PxeBcDhcp4.c
// PxeBcParseDhcp4Packet, PxeOfferTypeDhcpBinl). The ACK carries it all
// again: EDK2 boots from what the ACK says.
func (s *Server) fullBoot(rep, req *dhcpv4.DHCPv4, ci *ClientInfo) (Boot, bool) {
	if ci.IPXE {
		// No ProxyDHCP on a link we serve in full: iPXE need not wait
		// for one (iPXE dhcp.c dhcp_discovery_rx, DHCP_EB_NO_PXEDHCP).
		rep.Options[optIPXEEncap] = []byte{optNoPXEDHCP, 1, 1}
	}
	boot, ok := s.decide(ci)
	if !ok {
		return boot, false
	}
	if ci.HTTPClient {
		rep.Options[uint8(dhcpv4.OptionClassIdentifier)] = []byte("HTTPClient")
	}
	s.addFile(rep, req, &boot)
	return boot, true
}

// addProxyBoot fills a proxyDHCP offer (discover true) or a boot server
// ACK: yiaddr 0, no lease, option 60 naming the client kind, the client's
// GUID echoed (PXE 2.1 2.2.5), siaddr and file.
//
// BIOS PXE ROMs and iPXE get option 43 with PXE_DISCOVERY_CONTROL = 8:
// "boot the file in this offer, skip boot server discovery" (PXE 2.1 table
// 2-1); iPXE boots it directly (dhcp_has_pxeopts: siaddr and file). UEFI
// PXE gets no option 43, which makes the offer a ProxyBinl offer to EDK2: it
// sends a REQUEST to siaddr:4011 and boots what the ACK says. EDK2 before
// 2016 dropped proxy offers with option 43 (PxeBcCacheDhcp4Offer), and
// pixiecore found other UEFI firmware ignoring them, while BINL works on
// all.
func (s *Server) addProxyBoot(rep, req *dhcpv4.DHCPv4, ci *ClientInfo, boot *Boot, discover bool) {
	vc := "PXEClient"
	if ci.HTTPClient {
		vc = "HTTPClient"
	}
	rep.Options[uint8(dhcpv4.OptionClassIdentifier)] = []byte(vc)
	if g := req.Options[optClientGUID]; len(g) == 17 {
		rep.Options[optClientGUID] = g
	}
	if discover && ci.PXE && (!ci.Arch.EFI() || ci.IPXE) {
		rep.Options[optPXEVendor] = []byte{pxeDiscCtrl, 1, 8, 255}
	}
	s.addFile(rep, req, boot)
}

// addFile puts the boot file into siaddr, file and, when the client asks
// for it or it does not fit the 128-byte field, option 67 (NUL-terminated,
// see the package doc). A TFTP client asking for option 66 gets the server
// name too.
func (s *Server) addFile(rep, req *dhcpv4.DHCPv4, boot *Boot) {
	rep.ServerIPAddr = net.IP(boot.NextServer.AsSlice())
	prl := req.ParameterRequestList()
	if len(boot.Filename) <= 127 {
		rep.BootFileName = boot.Filename
	}
	if len(boot.Filename) > 127 || prl.Has(dhcpv4.OptionBootfileName) {
		rep.Options[uint8(dhcpv4.OptionBootfileName)] = append([]byte(boot.Filename), 0)
	}
	if !isURL(boot.Filename) && prl.Has(dhcpv4.OptionTFTPServerName) {
		rep.Options[uint8(dhcpv4.OptionTFTPServerName)] = []byte(boot.NextServer.String())
	}
}
