package dhcp

import (
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// result is what handling one datagram produced.
type result struct {
	kind  int
	out   outcome
	reply []byte         // nil: send nothing
	dst   netip.AddrPort // where reply goes
	op    string         // for logs: offer, ack, nak, proxy-offer, pxe-ack, ...
	mac   string
	hw    hwaddr
	// gen, when not 0, is the lease file generation that must be written
	// before the reply goes out and the outcome counts (RFC 2131 4.3.2:
	// commit the binding before the ACK).
	gen     uint64
	logArgs []any // the per-client log line, logged once the reply goes out
	// note is told to Config.OnReply once the reply went out (network-boot
	// clients only).
	note *Reply
}

// Reply is a reply sent to a network-boot client, for Config.OnReply.
type Reply struct {
	MAC     net.HardwareAddr
	Request string // the client's message: DISCOVER, REQUEST, ...
	Op      string // what we answered: offer, ack, nak, proxy-offer, pxe-ack
	IP      netip.Addr
	Client  ClientInfo
	File    string // the boot file or URL given, "" for none
}

// handle is answer followed by the lease file write the answer waits for,
// in the caller's goroutine: what the server loop does, minus the batching
// of writes across packets (see commitLater).
func (s *Server) handle(b []byte, src netip.AddrPort, pxePort bool) result {
	return s.settle(s.answer(b, src, pxePort))
}

// settle writes the lease file up to r.gen, if r waits for it, and
// withholds the reply if that fails.
func (s *Server) settle(r result) result {
	if r.gen == 0 {
		return r
	}
	if err := s.leases.sync(r.gen, s.now); err != nil {
		s.errorf("dhcp: lease file, not acknowledging", "op", r.op, "mac", r.mac, "err", err)
		r.out, r.reply = outError, nil
		return r
	}
	r.gen = 0
	if r.logArgs != nil {
		s.info("dhcp: "+r.op, r.logArgs...)
	}
	return r
}

// answer decodes one datagram from src and decides the reply. It does no
// I/O; a reply that needs the lease file written first says so in gen.
// pxePort tells a PXE port (4011) socket.
func (s *Server) answer(b []byte, src netip.AddrPort, pxePort bool) result {
	req, err := dhcpv4.FromBytes(b)
	if err != nil {
		s.debug("dhcp: undecodable packet", "ip", src.Addr().String(), "err", err)
		return result{kind: kindInvalid, out: outMalformed}
	}
	mt := req.MessageType()
	r := result{kind: kindOf(mt)}
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		r.out = outIgnored // replies of other servers, our own looped broadcasts
		return r
	}
	mac, ok := toHW(req.ClientHWAddr)
	if !ok || req.HWType != iana.HWTypeEthernet {
		// Only Ethernet: leases and reservations are keyed by a 6-byte MAC.
		s.warn("dhcp: not an Ethernet client", "ip", src.Addr().String(), "op", mt.String())
		r.out = outMalformed
		return r
	}
	r.mac, r.hw = mac.String(), mac
	if req.HopCount > 16 {
		r.out = outMalformed // RFC 1542 4.1.1: relays drop beyond 16 hops, so do we
		return r
	}
	if mt == 0 {
		r.out = outIgnored // BOOTP (no option 53) is not served
		return r
	}
	ci := classify(req)

	if pxePort {
		return s.handleBootServer(req, &ci, src, r)
	}
	if s.cfg.Mode == ModeProxy {
		return s.handleProxy(req, &ci, r)
	}
	return s.handleFull(req, &ci, mac, r)
}

// handleProxy answers a DISCOVER from a network-boot client with a
// proxyDHCP offer: boot information, no address (PXE 2.1 2.2.5). The
// client's REQUEST on port 67 is for the site's server.
func (s *Server) handleProxy(req *dhcpv4.DHCPv4, ci *ClientInfo, r result) result {
	if req.MessageType() != dhcpv4.MessageTypeDiscover {
		r.out = outIgnored
		return r
	}
	boot, ok := s.proxyBoot(ci, &r)
	if !ok {
		return r
	}
	rep := s.newReply(req, dhcpv4.MessageTypeOffer)
	s.addProxyBoot(rep, req, ci, &boot, true)
	r.op = "proxy-offer"
	return s.finish(r, rep, s.replyDest(req, dhcpv4.MessageTypeOffer), ci, &boot)
}

// proxyBoot is the boot answer for a client served by proxyDHCP or the
// boot server: only PXE and HTTP boot clients get one. Otherwise r.out
// says why not.
func (s *Server) proxyBoot(ci *ClientInfo, r *result) (Boot, bool) {
	if !ci.PXE && !ci.HTTPClient {
		r.out = outNotPXE
		return Boot{}, false
	}
	boot, ok := s.decide(ci)
	if !ok {
		r.out = outIgnored
	}
	return boot, ok
}

// handleBootServer answers a REQUEST on port 4011 (PXE 2.1 2.2.7, the
// "BINL" step of EDK2's PxeBcRetryBinlOffer and iPXE's ProxyDHCPREQUEST)
// with an ACK carrying the boot file.
func (s *Server) handleBootServer(req *dhcpv4.DHCPv4, ci *ClientInfo, src netip.AddrPort, r result) result {
	if mt := req.MessageType(); mt != dhcpv4.MessageTypeRequest && mt != dhcpv4.MessageTypeInform {
		r.out = outIgnored
		return r
	}
	boot, ok := s.proxyBoot(ci, &r)
	if !ok {
		return r
	}
	rep := s.newReply(req, dhcpv4.MessageTypeAck)
	rep.ClientIPAddr = req.ClientIPAddr
	s.addProxyBoot(rep, req, ci, &boot, false)
	if item, ok := bootItem(req); ok {
		// A boot server echoes the boot item it serves (PXE 2.1 2.2.7).
		rep.Options[optPXEVendor] = append(append([]byte{pxeBootItem, 4}, item...), 255)
	}
	// The client has an address now and listens where it sent from: EDK2
	// sends from and listens on 4011, iPXE on 68.
	dst := src
	if !dst.Addr().IsValid() || dst.Addr().IsUnspecified() || dst.Port() == 0 {
		dst = s.replyDest(req, dhcpv4.MessageTypeAck)
	}
	r.op = "pxe-ack"
	return s.finish(r, rep, dst, ci, &boot)
}

// handleFull is the full-mode server (RFC 2131 4.3).
func (s *Server) handleFull(req *dhcpv4.DHCPv4, ci *ClientInfo, mac hwaddr, r result) result {
	if ci.Relay.IsValid() && !s.cfg.Subnet.Contains(ci.Relay) {
		// The pool belongs to our own link; a relay from another subnet
		// would need a pool there.
		s.debug("dhcp: relayed request from a subnet without pool", "mac", r.mac, "ip", ci.Relay.String())
		r.out = outIgnored
		return r
	}
	now := s.now()
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		ip, out := s.leases.offer(mac, addrOf(req.RequestedIPAddress()), now)
		switch out {
		case outNoAddress:
			s.warn("dhcp: no address left to offer", "op", "offer", "mac", r.mac)
		case outRateLimited:
			s.warn("dhcp: new client not answered: more new clients per second than allowed",
				"op", "offer", "mac", r.mac, "limit", s.cfg.NewLeasesPerSecond)
		case outLeaseLimit:
			s.warn("dhcp: new client not answered: lease table full",
				"op", "offer", "mac", r.mac, "limit", s.cfg.MaxLeases)
		}
		if out != outAnswered {
			r.out = out
			return r
		}
		rep := s.newReply(req, dhcpv4.MessageTypeOffer)
		rep.YourIPAddr = net.IP(ip.AsSlice())
		s.addLeaseOptions(rep, mac, true)
		boot, ok := s.fullBoot(rep, req, ci)
		r.op = "offer"
		return s.finish(r, rep, s.replyDest(req, dhcpv4.MessageTypeOffer), ci, boot.orNil(ok))

	case dhcpv4.MessageTypeRequest:
		return s.handleRequest(req, ci, mac, r, now)

	case dhcpv4.MessageTypeRelease:
		// RFC 2131 4.3.4: identified by ciaddr; no reply.
		r.op, r.out = "release", outDone
		if gen := s.leases.release(mac, addrOf(req.ClientIPAddr), now); gen != 0 {
			r.gen = s.fileGen(gen)
			s.info("dhcp: released", "op", "release", "mac", r.mac, "ip", addrOf(req.ClientIPAddr).String())
		}
		return r

	case dhcpv4.MessageTypeDecline:
		// RFC 2131 4.3.3: the requested-address option names the address.
		ip := addrOf(req.RequestedIPAddress())
		if sid := addrOf(req.ServerIdentifier()); sid.IsValid() && sid != s.cfg.ServerIP {
			r.out = outIgnored
			return r
		}
		r.op, r.out = "decline", outDone
		if gen := s.leases.decline(mac, ip, now); gen != 0 {
			s.warn("dhcp: address declined, in use by another host", "op", "decline", "mac", r.mac, "ip", ip.String())
			r.gen = s.fileGen(gen)
		}
		return r

	case dhcpv4.MessageTypeInform:
		// RFC 2131 4.3.5: configuration only; no lease time, no yiaddr.
		rep := s.newReply(req, dhcpv4.MessageTypeAck)
		rep.ClientIPAddr = req.ClientIPAddr
		s.addLeaseOptions(rep, mac, false)
		r.op = "inform-ack"
		return s.finish(r, rep, s.replyDest(req, dhcpv4.MessageTypeAck), ci, nil)
	}
	r.out = outIgnored
	return r
}

// handleRequest is RFC 2131 4.3.2: a REQUEST in SELECTING (server
// identifier), INIT-REBOOT (requested address, no ciaddr) or
// RENEWING/REBINDING (ciaddr) state. The server is authoritative for its
// link: an INIT-REBOOT or RENEW for a free address it has no record of is
// granted rather than left unanswered, so a client keeps its address across
// a lost lease file.
func (s *Server) handleRequest(req *dhcpv4.DHCPv4, ci *ClientInfo, mac hwaddr, r result, now time.Time) result {
	sid := addrOf(req.ServerIdentifier())
	requested := addrOf(req.RequestedIPAddress())
	ciaddr := addrOf(req.ClientIPAddr)
	var ip netip.Addr
	var state requestState
	switch {
	case sid.IsValid():
		if sid != s.cfg.ServerIP {
			s.leases.forgetOffer(mac) // the client chose another server
			r.out = outIgnored
			return r
		}
		ip, state = requested, stateSelecting
		if !ip.IsValid() {
			ip = ciaddr
		}
	case requested.IsValid() && !ciaddr.IsValid():
		ip, state = requested, stateInitReboot
	case ciaddr.IsValid():
		ip, state = ciaddr, stateRenewing
	}
	if !ip.IsValid() {
		s.warn("dhcp: REQUEST names no address", "op", "request", "mac", r.mac)
		r.out = outMalformed
		return r
	}
	res := s.leases.bind(mac, ip, ci.Hostname, state, now)
	if res.noOffer {
		s.warn("dhcp: new client's REQUEST refused: no offer of ours for it", "op", "request", "mac", r.mac, "ip", ip.String())
		r.out = outNoOffer
		if res.nak == "" {
			return r
		}
	}
	if res.nak != "" {
		rep := s.newReply(req, dhcpv4.MessageTypeNak)
		rep.Options[uint8(dhcpv4.OptionMessage)] = []byte(res.nak)
		if !req.GatewayIPAddr.Equal(net.IPv4zero) {
			rep.SetBroadcast() // RFC 2131 4.1: so the relay broadcasts the NAK
		}
		r.op = "nak"
		if !res.noOffer {
			s.warn("dhcp: nak", "op", "nak", "mac", r.mac, "ip", ip.String(), "err", res.nak)
			r.out = outAnswered
		}
		r.reply, r.dst = rep.ToBytes(), s.replyDest(req, dhcpv4.MessageTypeNak)
		return r
	}
	r.gen = s.fileGen(res.gen)
	rep := s.newReply(req, dhcpv4.MessageTypeAck)
	rep.ClientIPAddr = req.ClientIPAddr
	rep.YourIPAddr = net.IP(ip.AsSlice())
	s.addLeaseOptions(rep, mac, true)
	boot, ok := s.fullBoot(rep, req, ci)
	r.op = "ack"
	return s.finish(r, rep, s.replyDest(req, dhcpv4.MessageTypeAck), ci, boot.orNil(ok))
}

// finish encodes rep and logs the answer per client.
func (s *Server) finish(r result, rep *dhcpv4.DHCPv4, dst netip.AddrPort, ci *ClientInfo, boot *Boot) result {
	r.reply, r.dst, r.out = rep.ToBytes(), dst, outAnswered
	args := []any{"op", r.op, "mac", r.mac}
	if y := addrOf(rep.YourIPAddr); y.IsValid() {
		args = append(args, "ip", y.String())
	}
	if ci.Netboot() {
		args = append(args, "arch", ci.Arch.String())
		if ci.IPXE {
			args = append(args, "ipxe", true)
		}
	}
	if boot != nil {
		args = append(args, "file", boot.Filename)
	}
	if ci.Netboot() && s.cfg.OnReply != nil {
		r.note = &Reply{MAC: net.HardwareAddr(r.hw[:]), Request: kindNames[r.kind], Op: r.op, IP: addrOf(rep.YourIPAddr), Client: *ci}
		if boot != nil {
			r.note.File = boot.Filename
		}
	}
	if r.gen != 0 {
		r.logArgs = args // once the lease file is written
		return r
	}
	s.info("dhcp: "+r.op, args...)
	return r
}

// fileGen is gen if there is a lease file to write it to, else 0.
func (s *Server) fileGen(gen uint64) uint64 {
	if s.leases == nil || s.leases.store == nil {
		return 0
	}
	return gen
}

// decide asks the boot policy about a network-boot client and checks the
// answer. A bad answer is logged and treated as "no boot".
func (s *Server) decide(ci *ClientInfo) (Boot, bool) {
	if s.cfg.Boot == nil || !ci.Netboot() {
		return Boot{}, false
	}
	b, ok := s.cfg.Boot(*ci)
	if !ok {
		s.debug("dhcp: boot policy says no", "mac", ci.MAC.String(), "arch", ci.Arch.String())
		return Boot{}, false
	}
	if err := b.check(ci); err != nil {
		s.warn("dhcp: boot policy answer unusable", "mac", ci.MAC.String(), "arch", ci.Arch.String(), "err", err)
		return Boot{}, false
	}
	b.NextServer = b.NextServer.Unmap()
	if !b.NextServer.IsValid() {
		b.NextServer = s.cfg.ServerIP
	}
	return b, true
}

func (b Boot) orNil(ok bool) *Boot {
	if !ok {
		return nil
	}
	return &b
}

// debug logs at debug level; cheap when debug is off.
func (s *Server) debug(msg string, args ...any) { s.log.Debug(msg, args...) }

func addrOf(ip net.IP) netip.Addr {
	v4 := ip.To4()
	if v4 == nil || v4.IsUnspecified() {
		return netip.Addr{}
	}
	return netip.AddrFrom4([4]byte(v4))
}
