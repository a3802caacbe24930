package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// loopbackServer serves cfg on a socket bound to lo. Replies that would be
// broadcast go to the client socket instead, so nothing leaves loopback.
func loopbackServer(t *testing.T, cfg Config, pxe bool) (*Server, net.PacketConn, net.Addr, chan error) {
	t.Helper()
	srvConn, err := listenUDP("lo", "127.0.0.1:0")
	if err != nil {
		t.Skipf("cannot bind a socket to lo: %v", err)
	}
	cli, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.bcast = netip.MustParseAddr("127.0.0.1")
	s.clientPort = uint16(cli.LocalAddr().(*net.UDPAddr).Port)
	errc := make(chan error, 1)
	go func() {
		if pxe {
			errc <- s.ServePXE(context.Background(), srvConn)
		} else {
			errc <- s.Serve(context.Background(), srvConn)
		}
	}()
	return s, cli, srvConn.LocalAddr(), errc
}

func roundTrip(t *testing.T, cli net.PacketConn, to net.Addr, req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	t.Helper()
	if _, err := cli.WriteTo(req.ToBytes(), to); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	cli.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		n, _, err := cli.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no reply to %s: %v", req.MessageType(), err)
		}
		rep, err := dhcpv4.FromBytes(buf[:n])
		if err == nil && rep.TransactionID == req.TransactionID {
			return rep
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestServeLoopback(t *testing.T) {
	before := runtime.NumGoroutine()
	cfg := fullConfig()
	cfg.Workers = 3
	var mu sync.Mutex
	var replies []string
	cfg.OnReply = func(r Reply) {
		mu.Lock()
		replies = append(replies, fmt.Sprintf("%s %s->%s %s %s %s", r.MAC, r.Request, r.Op, r.IP, r.Client.Arch, r.File))
		mu.Unlock()
	}
	s, cli, addr, errc := loopbackServer(t, cfg, false)
	mac := macN(7)

	offer := roundTrip(t, cli, addr, kindOVMFx64.build(mac, dhcpv4.MessageTypeDiscover, 42))
	if offer.MessageType() != dhcpv4.MessageTypeOffer || offer.BootFileName != "snponly.efi" {
		t.Fatalf("offer: %v", offer.Summary())
	}
	ack := roundTrip(t, cli, addr, kindOVMFx64.selecting(mac, 42, testServerIP.AsSlice(), offer.YourIPAddr))
	if ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(offer.YourIPAddr) {
		t.Fatalf("ack: %v", ack.Summary())
	}

	// Junk of every sort is counted and dropped; the server keeps going.
	junk := [][]byte{
		{},
		{1, 2, 3},
		make([]byte, 300), // no magic cookie
		append(make([]byte, 236), 99, 130, 83, 99, 53, 1), // option runs past the end
		offer.ToBytes(), // a BOOTREPLY
		kindLinux.build(mac, dhcpv4.MessageTypeDiscover, 1).ToBytes()[:250], // cut inside the options
	}
	for _, j := range junk {
		cli.WriteTo(j, addr)
	}
	roundTrip(t, cli, addr, kindBIOSPXE.build(macN(8), dhcpv4.MessageTypeDiscover, 43))
	waitFor(t, "all packets counted", func() bool { return s.Stats().Received == 3+uint64(len(junk)) })
	st := s.Stats()
	if st.Answered != 3 || st.Malformed != uint64(len(junk))-1 || st.Ignored != 1 {
		t.Errorf("stats %+v", st)
	}
	if st.ByType["DISCOVER"]["answered"] != 2 || st.ByType["REQUEST"]["answered"] != 1 || st.ByType["INVALID"]["malformed"] != 5 {
		t.Errorf("per-type stats %v", st.ByType)
	}
	// Every reply to a network-boot client reached OnReply once it went
	// out (the boot telemetry's DHCP steps). Workers call it after the
	// send, so a client may have its answer before it is reported, and
	// another worker's report may come first: compared as a set.
	waitFor(t, "three replies reported", func() bool { mu.Lock(); defer mu.Unlock(); return len(replies) >= 3 })
	mu.Lock()
	got := slices.Sorted(slices.Values(replies))
	mu.Unlock()
	want := []string{
		fmt.Sprintf("%s DISCOVER->offer %s efi-x64 snponly.efi", mac, offer.YourIPAddr),
		fmt.Sprintf("%s REQUEST->ack %s efi-x64 snponly.efi", mac, offer.YourIPAddr),
	}
	if len(got) != 3 || !slices.Contains(got, want[0]) || !slices.Contains(got, want[1]) ||
		!slices.ContainsFunc(got, func(r string) bool { return strings.HasPrefix(r, macN(8).String()+" DISCOVER->offer") }) {
		t.Errorf("replies:\n%s\nwant these two and %s's offer:\n%s", strings.Join(got, "\n"), macN(8), strings.Join(want, "\n"))
	}

	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Errorf("Serve after Shutdown: %v", err)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
	waitFor(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}

func TestServePXEPortLoopback(t *testing.T) {
	s, cli, addr, errc := loopbackServer(t, proxyConfig(), true)
	mac := macN(9)
	req := kindOVMFx64.bootServerRequest(mac, 77, net.IPv4(127, 0, 0, 1))
	// PXE_BOOT_ITEM type 0, layer 0: echoed back.
	req.Options[43] = []byte{71, 4, 0, 0, 0, 0, 255}
	ack := roundTrip(t, cli, addr, req)
	if ack.MessageType() != dhcpv4.MessageTypeAck || ack.BootFileName != "snponly.efi" || string(ack.Options[60]) != "PXEClient" {
		t.Fatalf("4011 ack: %v", ack.Summary())
	}
	if string(ack.Options[43]) != string([]byte{71, 4, 0, 0, 0, 0, 255}) {
		t.Errorf("boot item not echoed: % x", ack.Options[43])
	}
	// A DISCOVER on the PXE port is not for it.
	cli.WriteTo(kindOVMFx64.build(mac, dhcpv4.MessageTypeDiscover, 78).ToBytes(), addr)
	waitFor(t, "discover counted", func() bool { return s.Stats().Received == 2 })
	if st := s.Stats(); st.Ignored != 1 {
		t.Errorf("stats %+v", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.Shutdown(ctx)
	if err := <-errc; err != nil {
		t.Error(err)
	}
}

func TestServeCancelledByContext(t *testing.T) {
	srvConn, err := listenUDP("lo", "127.0.0.1:0")
	if err != nil {
		t.Skipf("cannot bind a socket to lo: %v", err)
	}
	s, _ := newTestServer(t, proxyConfig())
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ctx, srvConn) }()
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
}

// Serve refuses a socket that is not bound to the served interface: its
// broadcasts would leave through any interface.
func TestServeRefusesUnboundSocket(t *testing.T) {
	s, _ := newTestServer(t, proxyConfig())
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = s.Serve(context.Background(), c)
	if err == nil || !strings.Contains(err.Error(), "served interface") {
		t.Fatalf("Serve on an unbound socket: %v", err)
	}
	if _, err := c.WriteTo([]byte{1}, c.LocalAddr()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("refused socket left open")
	}
}

func TestConfigValidation(t *testing.T) {
	bad := map[string]func(c *Config){
		"mode off":             func(c *Config) { c.Mode = ModeOff },
		"no interface":         func(c *Config) { c.Interface = "" },
		"no server ip":         func(c *Config) { c.ServerIP = netip.Addr{} },
		"ipv6 server":          func(c *Config) { c.ServerIP = netip.MustParseAddr("fe80::1") },
		"no subnet":            func(c *Config) { c.Subnet = netip.Prefix{} },
		"server outside":       func(c *Config) { c.ServerIP = netip.MustParseAddr("10.1.0.1") },
		"pool outside":         func(c *Config) { c.PoolEnd = netip.MustParseAddr("10.77.1.5") },
		"pool backwards":       func(c *Config) { c.PoolStart, c.PoolEnd = c.PoolEnd, c.PoolStart },
		"half pool":            func(c *Config) { c.PoolEnd = netip.Addr{} },
		"short lease":          func(c *Config) { c.LeaseTime = time.Second },
		"reservation outside":  func(c *Config) { c.Reservations[0].IP = netip.MustParseAddr("10.8.0.1") },
		"reservation = server": func(c *Config) { c.Reservations[0].IP = testServerIP },
		"reservation twice": func(c *Config) {
			c.Reservations = append(c.Reservations, Reservation{MAC: macN(1), IP: c.Reservations[0].IP})
		},
		"reservation bad mac": func(c *Config) { c.Reservations[0].MAC = net.HardwareAddr{1, 2} },
	}
	for name, mod := range bad {
		c := fullConfig()
		mod(&c)
		if _, err := NewServer(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := ParseMode("fulll"); err == nil {
		t.Error("ParseMode accepted a typo")
	}
}
