//go:build linux

package dhcp

import (
	"context"
	"math/rand/v2"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/testutil/netns"
	"github.com/insomniacslk/dhcp/dhcpv4"
)

// testNet is two network namespaces made for one test: "srv" with the
// server, "cli" with the clients, joined by two veth pairs. Only the first
// pair (srvIf-cliIf) is served; the second (srvIf2-cliIf2) is a link the
// server must not answer on.
type testNet struct {
	srv, cli               string
	srvIf, cliIf           string
	srvIf2, cliIf2         string
	cliMAC                 net.HardwareAddr
	served, unservedSubnet string
}

// newTestNet builds the namespaces, or skips the test when it cannot.
func newTestNet(t *testing.T) *testNet {
	t.Helper()
	netns.Need(t, "ip netns add")
	id := netns.ID()
	n := &testNet{
		srv: "dlsdhcp-s-" + id, cli: "dlsdhcp-c-" + id,
		srvIf: "ds" + id, cliIf: "dc" + id, srvIf2: "dt" + id, cliIf2: "du" + id,
	}
	netns.Add(t, n.srv, n.cli)
	steps := [][]string{
		{"-n", n.srv, "link", "add", n.srvIf, "type", "veth", "peer", "name", n.cliIf, "netns", n.cli},
		{"-n", n.srv, "link", "add", n.srvIf2, "type", "veth", "peer", "name", n.cliIf2, "netns", n.cli},
		{"-n", n.srv, "addr", "add", "10.77.0.1/24", "dev", n.srvIf},
		{"-n", n.srv, "addr", "add", "10.88.0.1/24", "dev", n.srvIf2},
		{"-n", n.srv, "link", "set", "lo", "up"},
		{"-n", n.srv, "link", "set", n.srvIf, "up"},
		{"-n", n.srv, "link", "set", n.srvIf2, "up"},
		{"-n", n.cli, "link", "set", "lo", "up"},
		{"-n", n.cli, "link", "set", n.cliIf, "address", "52:54:00:12:34:56", "up"},
		{"-n", n.cli, "link", "set", n.cliIf2, "up"},
	}
	for _, s := range steps {
		if err := netns.IP(s...); err != nil {
			t.Fatal(err)
		}
	}
	n.cliMAC = mustMAC("52:54:00:12:34:56")
	return n
}

func listenIn(t *testing.T, ns, iface, addr string) net.PacketConn {
	t.Helper()
	var c net.PacketConn
	if err := netns.Run(ns, func() (err error) {
		c, err = listenUDP(iface, addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// exchangeOn sends req to dst, again every 500 ms as clients do, and
// waits for the reply with its xid; nil after wait.
func exchangeOn(t *testing.T, c net.PacketConn, dst string, req *dhcpv4.DHCPv4, wait time.Duration) *dhcpv4.DHCPv4 {
	t.Helper()
	to, err := net.ResolveUDPAddr("udp4", dst)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		if _, err := c.WriteTo(req.ToBytes(), to); err != nil {
			t.Fatalf("send %s to %s: %v", req.MessageType(), dst, err)
		}
		next := time.Now().Add(500 * time.Millisecond)
		if next.After(deadline) {
			next = deadline
		}
		c.SetReadDeadline(next)
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				break
			}
			if rep, err := dhcpv4.FromBytes(buf[:n]); err == nil && rep.TransactionID == req.TransactionID &&
				rep.OpCode == dhcpv4.OpcodeBootReply {
				return rep
			}
		}
	}
	return nil
}

// TestNetnsEndToEnd runs the server on real sockets bound to a veth in a
// namespace of its own, and clients on the other end: full mode DORA,
// then proxy mode with the boot server on 4011. Nothing touches the host's
// interfaces.
func TestNetnsEndToEnd(t *testing.T) {
	n := newTestNet(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	serve := func(cfg Config, ports ...int) *Server {
		t.Helper()
		if err := netns.Run(n.srv, func() error { return checkInterfaceAddr(n.srvIf, cfg.ServerIP) }); err != nil {
			t.Fatal(err)
		}
		s, err := NewServer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ports {
			var c net.PacketConn
			if err := netns.Run(n.srv, func() (err error) { c, err = Listen(n.srvIf, p); return err }); err != nil {
				t.Fatal(err)
			}
			go func() {
				var err error
				if p == PXEPort {
					err = s.ServePXE(ctx, c)
				} else {
					err = s.Serve(ctx, c)
				}
				if err != nil {
					t.Errorf("serve port %d: %v", p, err)
				}
			}()
		}
		return s
	}
	stop := func(s *Server) {
		sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
		defer scancel()
		if err := s.Shutdown(sctx); err != nil {
			t.Fatal(err)
		}
	}

	cfg := fullConfig()
	cfg.Interface = n.srvIf
	cfg.LeaseFile = t.TempDir() + "/leases.json"
	full := serve(cfg, ServerPort)

	cli := listenIn(t, n.cli, n.cliIf, "0.0.0.0:68")
	offer := exchangeOn(t, cli, "255.255.255.255:67", kindOVMFx64.build(n.cliMAC, dhcpv4.MessageTypeDiscover, 0xe2e1), 5*time.Second)
	if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("full mode: no OFFER over the veth (stats %+v)", full.Stats())
	}
	if offer.BootFileName != "snponly.efi" || !offer.YourIPAddr.Equal(net.IPv4(10, 77, 0, 100)) {
		t.Errorf("offer: %s", offer.Summary())
	}
	ack := exchangeOn(t, cli, "255.255.255.255:67",
		kindOVMFx64.selecting(n.cliMAC, 0xe2e1, testServerIP.AsSlice(), offer.YourIPAddr), 5*time.Second)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(offer.YourIPAddr) {
		t.Fatalf("full mode: no ACK: %v", ack)
	}

	// The same DISCOVER on the link the server was not told to serve
	// gets nothing, although the server has an address there.
	cli2 := listenIn(t, n.cli, n.cliIf2, "0.0.0.0:68")
	if rep := exchangeOn(t, cli2, "255.255.255.255:67",
		kindOVMFx64.build(n.cliMAC, dhcpv4.MessageTypeDiscover, 0xe2e2), 500*time.Millisecond); rep != nil {
		t.Errorf("answered on an interface it does not serve: %s", rep.Summary())
	}
	fst := full.Stats()
	for deadline := time.Now().Add(2 * time.Second); (fst.Answered < 2 || fst.Received != fst.Answered) && time.Now().Before(deadline); fst = full.Stats() {
		time.Sleep(10 * time.Millisecond)
	}
	if fst.Answered < 2 || fst.Received != fst.Answered {
		t.Errorf("full mode stats %+v", fst)
	}
	stop(full)

	// Proxy mode: an offer without address, then the boot server REQUEST
	// on 4011 once the client has its address from the "site" server.
	pcfg := proxyConfig()
	pcfg.Interface = n.srvIf
	proxy, err := NewServer(pcfg)
	if err != nil {
		t.Fatal(err)
	}
	lasDone := make(chan error, 1)
	go func() { lasDone <- netns.Run(n.srv, func() error { return proxy.ListenAndServe(ctx) }) }()
	poffer := exchangeOn(t, cli, "255.255.255.255:67", kindOVMFx64.build(n.cliMAC, dhcpv4.MessageTypeDiscover, 0xe2e3), 15*time.Second)
	if poffer == nil || !poffer.YourIPAddr.Equal(net.IPv4zero) || string(poffer.Options[60]) != "PXEClient" {
		t.Fatalf("proxy mode: offer %v (stats %+v)", poffer, proxy.Stats())
	}
	if rep := exchangeOn(t, cli, "255.255.255.255:67",
		kindLinux.build(n.cliMAC, dhcpv4.MessageTypeDiscover, 0xe2e4), 500*time.Millisecond); rep != nil {
		t.Errorf("proxy mode answered a client that is not PXE")
	}
	if err := netns.IP("-n", n.cli, "addr", "add", "10.77.0.150/24", "dev", n.cliIf); err != nil {
		t.Fatal(err)
	}
	bs := listenIn(t, n.cli, n.cliIf, "0.0.0.0:4011")
	pack := exchangeOn(t, bs, "10.77.0.1:4011",
		kindOVMFx64.bootServerRequest(n.cliMAC, 0xe2e5, net.IPv4(10, 77, 0, 150)), 15*time.Second)
	if pack == nil || pack.MessageType() != dhcpv4.MessageTypeAck || pack.BootFileName != "snponly.efi" {
		t.Fatalf("proxy mode: no boot server ACK on 4011: %v (stats %+v)", pack, proxy.Stats())
	}
	// The server counts a reply after sending it, so the client can see
	// the ACK a moment before the counter moves.
	st := proxy.Stats()
	for deadline := time.Now().Add(2 * time.Second); (st.Answered < 2 || st.NotPXE < 1) && time.Now().Before(deadline); st = proxy.Stats() {
		time.Sleep(10 * time.Millisecond)
	}
	if st.Answered < 2 || st.NotPXE < 1 {
		t.Errorf("proxy stats %+v", st)
	}
	stop(proxy)
	if err := <-lasDone; err != nil {
		t.Errorf("ListenAndServe: %v", err)
	}
}

// TestNetnsFlood is TestFloodReservedAndKnownServed on real sockets: the
// server on a veth in its namespace, 100 000 DISCOVER and REQUEST from
// random MACs sent from the other end as fast as one socket sends them,
// while a reserved host and a host with a lease run DORAs, retransmitting
// every 500 ms as clients do. Both always get their address.
func TestNetnsFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("flood of 100 000 packets")
	}
	n := newTestNet(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := fullConfig()
	cfg.Interface = n.srvIf
	cfg.LeaseFile = t.TempDir() + "/leases.json"
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var sc net.PacketConn
	if err := netns.Run(n.srv, func() (err error) { sc, err = Listen(n.srvIf, ServerPort); return err }); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, sc) }()

	cli := listenIn(t, n.cli, n.cliIf, "0.0.0.0:68")
	dora := func(mac net.HardwareAddr, xid uint32) (offer, ack time.Duration, ok bool) {
		t0 := time.Now()
		off := exchangeOn(t, cli, "255.255.255.255:67", kindIPXEBIOS.build(mac, dhcpv4.MessageTypeDiscover, xid), 5*time.Second)
		if off == nil {
			return 0, 0, false
		}
		offer = time.Since(t0)
		t0 = time.Now()
		a := exchangeOn(t, cli, "255.255.255.255:67", kindIPXEBIOS.selecting(mac, xid+1, testServerIP.AsSlice(), off.YourIPAddr), 5*time.Second)
		return offer, time.Since(t0), a != nil && a.MessageType() == dhcpv4.MessageTypeAck
	}
	known := macN(0xfff0)
	if _, _, ok := dora(known, 1); !ok {
		t.Fatal("known host: no lease before the flood")
	}

	flooder := listenIn(t, n.cli, n.cliIf, "0.0.0.0:0")
	bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: ServerPort}
	done := make(chan time.Duration, 1)
	go func() {
		rng := rand.New(rand.NewPCG(13, 13))
		start := time.Now()
		for i := range 100_000 {
			mac := net.HardwareAddr{0x02, byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())}
			var req *dhcpv4.DHCPv4
			if i%2 == 0 {
				req = kindLinux.build(mac, dhcpv4.MessageTypeDiscover, uint32(i))
			} else {
				req = kindLinux.selecting(mac, uint32(i), testServerIP.AsSlice(), net.IPv4(10, 77, 0, byte(100+rng.IntN(101))))
			}
			flooder.WriteTo(req.ToBytes(), bcast)
		}
		done <- time.Since(start)
	}()

	var times []time.Duration
	var rounds int
	var took time.Duration
	for xid := uint32(1 << 30); took == 0; xid += 4 {
		select {
		case took = <-done:
		default:
		}
		for h, mac := range []net.HardwareAddr{mustMAC("52:54:00:aa:00:01"), known} {
			offer, ack, ok := dora(mac, xid+uint32(2*h))
			if !ok {
				t.Fatalf("host %d got no address during the flood (stats %+v)", h, s.Stats())
			}
			times = append(times, offer+ack)
		}
		rounds++
	}
	st := s.Stats()
	t.Logf("100000 packets sent in %v (%.0f/s); server handled %d (%.0f/s), %d lease file writes", took.Round(time.Millisecond),
		1e5/took.Seconds(), st.Received, float64(st.Received)/took.Seconds(), st.LeaseWrites)
	slices.Sort(times)
	t.Logf("reserved and known hosts: %d DORAs each, median %v, slowest %v", rounds,
		times[len(times)/2].Round(time.Millisecond), times[len(times)-1].Round(time.Millisecond))
	t.Logf("outcomes %v; %d shed unread", st.ByType, st.Shed)
	sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
	defer scancel()
	if err := s.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}
