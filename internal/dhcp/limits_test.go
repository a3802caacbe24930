package dhcp

import (
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Tests of the bounds that keep made-up MACs from starving real machines
// (issue 13).

// TestNewClientsRateLimited: new clients get offers at NewLeasesPerSecond;
// the excess gets nothing and is counted. A retransmitted DISCOVER of a
// client already offered, a reserved client and a client with a lease
// never count against the bound.
func TestNewClientsRateLimited(t *testing.T) {
	cfg := fullConfig()
	cfg.NewLeasesPerSecond = 5
	s, clk := newTestServer(t, cfg)
	known := macN(1000)
	if !leaseFor(t, s, known).IsValid() { // spends one token
		t.Fatal("no lease for the known client")
	}
	discover := func(mac net.HardwareAddr) exchange {
		return do(t, s, kindLinux.build(mac, dhcpv4.MessageTypeDiscover, 7), false, netip.AddrPort{})
	}
	for i := range 4 {
		if ex := discover(macN(i)); ex.rep == nil {
			t.Fatalf("new client %d within the burst: no offer", i)
		}
	}
	for i := 4; i < 10; i++ {
		if ex := discover(macN(i)); ex.rep != nil || ex.res.out != outRateLimited {
			t.Fatalf("new client %d beyond the bound: %v %s", i, ex.rep, outcomeNames[ex.res.out])
		}
	}
	if ex := discover(macN(0)); ex.rep == nil {
		t.Error("retransmitted DISCOVER of a client offered already: no offer")
	}
	if ex := discover(mustMAC("52:54:00:aa:00:01")); ex.rep == nil || !ex.rep.YourIPAddr.Equal(net.IPv4(10, 77, 0, 10)) {
		t.Errorf("reserved client held back: %v", ex.rep)
	}
	if ex := discover(known); ex.rep == nil {
		t.Error("client with a lease held back")
	}
	clk.advance(time.Second)
	if got := leaseFor(t, s, macN(4)); !got.IsValid() {
		t.Error("a second later a new client still gets nothing")
	}
}

// TestMaxLeases: at MaxLeases a new client gets nothing until a record
// lapses: an offer nobody took, or an expired lease, which is forgotten
// to make room. Reserved clients and clients with a lease are served at
// the bound.
func TestMaxLeases(t *testing.T) {
	cfg := smallPool(50)
	cfg.MaxLeases = 4
	s, clk := newTestServer(t, cfg)
	for i := range 2 {
		if !leaseFor(t, s, macN(i)).IsValid() {
			t.Fatalf("client %d: no lease", i)
		}
	}
	if got := leaseFor(t, s, mustMAC("52:54:00:aa:00:01")); got != netip.MustParseAddr("10.77.0.10") {
		t.Fatalf("reserved client got %v", got)
	}
	// An offer that is never taken fills the table.
	if ex := do(t, s, kindLinux.build(macN(2), dhcpv4.MessageTypeDiscover, 1), false, netip.AddrPort{}); ex.rep == nil {
		t.Fatal("third client: no offer")
	}
	ex := do(t, s, kindLinux.build(macN(3), dhcpv4.MessageTypeDiscover, 1), false, netip.AddrPort{})
	if ex.rep != nil || ex.res.out != outLeaseLimit {
		t.Fatalf("fourth client: %v %s", ex.rep, outcomeNames[ex.res.out])
	}
	if got := leaseFor(t, s, mustMAC("52:54:00:aa:00:01")); got != netip.MustParseAddr("10.77.0.10") {
		t.Errorf("reserved client at the bound got %v", got)
	}
	if got := leaseFor(t, s, macN(0)); !got.IsValid() {
		t.Error("client with a lease at the bound got nothing")
	}
	clk.advance(offerHold + time.Second) // the untaken offer lapses
	if got := leaseFor(t, s, macN(3)); !got.IsValid() {
		t.Error("no room made from a lapsed offer")
	}
	// Full of leases now: clients 0, 1, 3 and the reservation's.
	if ex := do(t, s, kindLinux.build(macN(4), dhcpv4.MessageTypeDiscover, 1), false, netip.AddrPort{}); ex.res.out != outLeaseLimit {
		t.Fatalf("client beyond the bound: %v %s", ex.rep, outcomeNames[ex.res.out])
	}
	clk.advance(2 * time.Hour) // every lease expired
	if got := leaseFor(t, s, macN(4)); !got.IsValid() {
		t.Error("no room made from an expired lease")
	}
	if n := len(s.leases.byMAC) + len(s.leases.offers); n > cfg.MaxLeases {
		t.Errorf("%d records", n)
	}
}

// TestNoLeaseWithoutOffer: a client the server has no record of gets a
// lease only by taking an offer. A REQUEST out of the blue binds nothing
// and writes nothing: a NAK when SELECTING or INIT-REBOOT (start over), no
// answer when RENEWING. Reserved clients and clients with a lease are
// acknowledged without an offer.
func TestNoLeaseWithoutOffer(t *testing.T) {
	cfg := fullConfig()
	cfg.LeaseFile = filepath.Join(t.TempDir(), "leases.json")
	s, _ := newTestServer(t, cfg)
	free := net.IPv4(10, 77, 0, 150)
	newMAC := macN(1)

	sel := kindLinux.selecting(newMAC, 1, testServerIP.AsSlice(), free)
	if ex := do(t, s, sel, false, netip.AddrPort{}); ex.rep == nil || ex.rep.MessageType() != dhcpv4.MessageTypeNak || ex.res.out != outNoOffer {
		t.Errorf("SELECTING without an offer: %v %s", ex.rep, outcomeNames[ex.res.out])
	}
	reboot := kindLinux.build(newMAC, dhcpv4.MessageTypeRequest, 2)
	reboot.Options[50] = free.To4()
	if ex := do(t, s, reboot, false, netip.AddrPort{}); ex.rep == nil || ex.rep.MessageType() != dhcpv4.MessageTypeNak || ex.res.out != outNoOffer {
		t.Errorf("INIT-REBOOT without a record: %v %s", ex.rep, outcomeNames[ex.res.out])
	}
	renew := kindLinux.build(newMAC, dhcpv4.MessageTypeRequest, 3)
	renew.ClientIPAddr = free.To4()
	if ex := do(t, s, renew, false, netip.AddrPortFrom(addrOf(free), 68)); ex.rep != nil || ex.res.out != outNoOffer {
		t.Errorf("RENEWING without a record: %v %s", ex.rep, outcomeNames[ex.res.out])
	}
	// An offer for another address does not count either.
	off := do(t, s, kindLinux.build(newMAC, dhcpv4.MessageTypeDiscover, 4), false, netip.AddrPort{})
	if off.rep == nil || off.rep.YourIPAddr.Equal(free) {
		t.Fatalf("offer %v", off.rep)
	}
	if ex := do(t, s, kindLinux.selecting(newMAC, 4, testServerIP.AsSlice(), free), false, netip.AddrPort{}); ex.rep.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("REQUEST for an address not offered: %v", ex.rep)
	}
	if n := len(s.leases.activeLeases(testClock)); n != 0 {
		t.Fatalf("%d leases bound without an offer taken", n)
	}

	res := kindLinux.build(mustMAC("52:54:00:aa:00:01"), dhcpv4.MessageTypeRequest, 5)
	res.Options[50] = []byte{10, 77, 0, 10}
	if ex := do(t, s, res, false, netip.AddrPort{}); ex.rep == nil || ex.rep.MessageType() != dhcpv4.MessageTypeAck {
		t.Errorf("reserved client's INIT-REBOOT: %v", ex.rep)
	}
	ip := leaseFor(t, s, newMAC) // the regular way
	renew = kindLinux.build(newMAC, dhcpv4.MessageTypeRequest, 6)
	renew.ClientIPAddr = ip.AsSlice()
	if ex := do(t, s, renew, false, netip.AddrPortFrom(ip, 68)); ex.rep == nil || ex.rep.MessageType() != dhcpv4.MessageTypeAck {
		t.Errorf("renewal of a lease: %v", ex.rep)
	}
}

// TestOffersStayBounded: offers to a flood of made-up MACs never grow the
// offer table beyond the pool, however many MACs pass by.
func TestOffersStayBounded(t *testing.T) {
	cfg := smallPool(20)
	cfg.NewLeasesPerSecond = 1 << 30
	s, clk := newTestServer(t, cfg)
	for i := range 5000 {
		do(t, s, kindLinux.build(macN(i), dhcpv4.MessageTypeDiscover, 1), false, netip.AddrPort{})
		if i%20 == 19 {
			clk.advance(offerHold) // the offers lapse: the next MACs get their addresses
		}
	}
	if n, m := len(s.leases.offers), len(s.leases.offered); n > 20 || m > 20 {
		t.Errorf("%d offers and %d offered addresses for a pool of 20", n, m)
	}
}
