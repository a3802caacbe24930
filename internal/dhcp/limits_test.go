package dhcp

import (
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
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
	if n := len(s.leases.activeLeases(testClock)); n != 0 || s.Stats().LeaseWrites != 0 {
		t.Fatalf("%d leases bound, %d writes, without an offer taken", n, s.Stats().LeaseWrites)
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

// fakeConn records what a worker sends. Safe for concurrent use.
type fakeConn struct {
	net.PacketConn // nil: only WriteTo is used
	mu             sync.Mutex
	sent           map[uint32]time.Time // xid -> when its reply went out
	keep           map[uint32][]byte    // replies of these xids are kept
	n              int
}

func (c *fakeConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sent == nil {
		c.sent = map[uint32]time.Time{}
	}
	xid := binary.BigEndian.Uint32(b[4:8])
	c.sent[xid] = time.Now()
	if _, ok := c.keep[xid]; ok {
		c.keep[xid] = append([]byte(nil), b...)
	}
	c.n++
	return len(b), nil
}

// await waits for the reply to xid, up to 10 s, and returns it (if kept)
// and when it was sent.
func (c *fakeConn) await(xid uint32) ([]byte, time.Time, bool) {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Microsecond) {
		c.mu.Lock()
		at, ok := c.sent[xid]
		b := c.keep[xid]
		c.mu.Unlock()
		if ok {
			return b, at, true
		}
	}
	return nil, time.Time{}, false
}

func (c *fakeConn) sentAt(xid uint32) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.sent[xid]
	return t, ok
}

func packetOf(req *dhcpv4.DHCPv4) *packet {
	p := new(packet)
	p.n = copy(p.buf[:], req.ToBytes())
	p.src = &net.UDPAddr{IP: net.IPv4zero, Port: 68}
	return p
}

// TestLeaseWritesBatched: ACKs wait for the lease file but the workers do
// not, and a flood of binding changes makes at most one write per
// leaseWriteGap, not one per packet. A lone ACK on an idle server is
// written and sent at once.
func TestLeaseWritesBatched(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := smallPool(100)
		cfg.NewLeasesPerSecond = 1000
		cfg.LeaseFile = filepath.Join(t.TempDir(), "leases.json")
		s, err := NewServer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		conn := &fakeConn{}
		// 100 clients with a lease (one DORA each, written one by one).
		var ips []netip.Addr
		for i := range 100 {
			ips = append(ips, leaseFor(t, s, macN(i)))
		}
		before := s.Stats().LeaseWrites

		// Alone: sent at once.
		start := time.Now()
		renew := func(i int, xid uint32) *dhcpv4.DHCPv4 {
			r := kindLinux.build(macN(i), dhcpv4.MessageTypeRequest, xid)
			r.ClientIPAddr = ips[i].AsSlice()
			return r
		}
		s.process(conn, packetOf(renew(0, 1)), false)
		if at, ok := conn.sentAt(1); !ok || at.Sub(start) != 0 {
			t.Fatalf("lone ACK: sent %v after %v", ok, at.Sub(start))
		}

		// 20 000 renewals, 10 every millisecond of the fake clock, to 8
		// workers fed as Serve feeds them: one of them at a time is the
		// writer, the others keep up.
		start = time.Now()
		work := make(chan *packet, 16)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for p := range work {
					s.process(conn, p, false)
				}
			})
		}
		for j := range 20000 {
			work <- packetOf(renew(j%100, uint32(100+j)))
			if j%10 == 9 {
				time.Sleep(time.Millisecond)
			}
		}
		fed := time.Since(start)
		close(work)
		wg.Wait()
		synctest.Wait()
		took := time.Since(start)
		st := s.Stats()
		writes := st.LeaseWrites - before - 1
		t.Logf("20000 renewals over %v: %d lease file writes, %d superseded, %+v", took, writes, st.Superseded, st.ByType["REQUEST"])
		if fed > 2*time.Second+leaseWriteGap || took > fed+2*leaseWriteGap {
			t.Errorf("workers held up: the feed took %v, all sent after %v, for 2 s of packets", fed, took)
		}
		if max := uint64(took/leaseWriteGap) + 1; writes > max {
			t.Errorf("%d writes in %v: more than one per %v", writes, took, leaseWriteGap)
		}
		if got := st.ByType["REQUEST"]["answered"] + st.Superseded; got != 20000+1 {
			t.Errorf("%d REQUESTs accounted for", got)
		}
	})
}

// TestFloodReservedAndKnownServed is the DHCP attack of issue 13 through
// the workers in-process: 100 000 DISCOVER and REQUEST from random MACs,
// fed as fast as eight workers take them, while a reserved host and a
// host with a lease run DISCOVER+REQUEST back to back. Both get every
// OFFER and ACK promptly; the flood binds only what NewLeasesPerSecond
// allows and makes at most one lease file write per leaseWriteGap.
func TestFloodReservedAndKnownServed(t *testing.T) {
	if testing.Short() {
		t.Skip("flood of 100 000 packets")
	}
	cfg := fullConfig()
	cfg.LeaseFile = filepath.Join(t.TempDir(), "leases.json")
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	known := macN(0xfff0)
	if !leaseFor(t, s, known).IsValid() {
		t.Fatal("known host: no lease")
	}
	reserved := mustMAC("52:54:00:aa:00:01")
	conn := &fakeConn{keep: map[uint32][]byte{}}
	writesBefore := s.Stats().LeaseWrites

	work := make(chan *packet, 16) // as Serve: 2 buffers per worker
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for p := range work {
				s.process(conn, p, false)
			}
		})
	}

	// The probes: DORA of both hosts, queued behind the flood.
	type probe struct{ offer, ack time.Duration }
	var probes [2][]probe
	var rounds atomic.Int32 // probe rounds done (both hosts)
	stop := make(chan struct{})
	probed := make(chan struct{})
	go func() {
		defer close(probed)
		xid := uint32(1 << 30)
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			for h, mac := range []net.HardwareAddr{reserved, known} {
				xid++
				conn.mu.Lock()
				conn.keep[xid] = nil
				conn.mu.Unlock()
				t0 := time.Now()
				work <- packetOf(kindIPXEBIOS.build(mac, dhcpv4.MessageTypeDiscover, xid))
				b, at, ok := conn.await(xid)
				if !ok {
					t.Errorf("host %d: no OFFER", h)
					return
				}
				off, err := dhcpv4.FromBytes(b)
				if err != nil || off.MessageType() != dhcpv4.MessageTypeOffer {
					t.Errorf("host %d: %v %v", h, off, err)
					return
				}
				pr := probe{offer: at.Sub(t0)}
				xid++
				t0 = time.Now()
				work <- packetOf(kindIPXEBIOS.selecting(mac, xid, testServerIP.AsSlice(), off.YourIPAddr))
				if _, at, ok = conn.await(xid); !ok {
					t.Errorf("host %d: no ACK", h)
					return
				}
				pr.ack = at.Sub(t0)
				probes[h] = append(probes[h], pr)
			}
			rounds.Add(1)
		}
	}()

	// A smarter attacker: full DORAs with made-up MACs, one after another.
	var bound int
	smart := make(chan struct{})
	go func() {
		defer close(smart)
		rng := rand.New(rand.NewPCG(7, 7))
		for xid := uint32(1 << 31); ; xid += 2 {
			select {
			case <-stop:
				return
			default:
			}
			mac := net.HardwareAddr{0x06, byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())}
			conn.mu.Lock()
			conn.keep[xid], conn.keep[xid+1] = nil, nil
			conn.mu.Unlock()
			work <- packetOf(kindLinux.build(mac, dhcpv4.MessageTypeDiscover, xid))
			time.Sleep(time.Millisecond) // an offer comes at once, or never
			conn.mu.Lock()
			b := conn.keep[xid]
			conn.mu.Unlock()
			off, err := dhcpv4.FromBytes(b)
			if b == nil || err != nil {
				continue
			}
			work <- packetOf(kindLinux.selecting(mac, xid+1, testServerIP.AsSlice(), off.YourIPAddr))
			if b, _, ok := conn.await(xid + 1); ok {
				if ack, err := dhcpv4.FromBytes(b); err == nil && ack.MessageType() == dhcpv4.MessageTypeAck {
					bound++
				}
			}
		}
	}()

	rng := rand.New(rand.NewPCG(13, 13))
	start := time.Now()
	const flood = 100_000
	templates := [2]*packet{
		packetOf(kindLinux.build(macN(0), dhcpv4.MessageTypeDiscover, 0)),
		packetOf(kindLinux.selecting(macN(0), 0, testServerIP.AsSlice(), net.IPv4(10, 77, 0, 150))),
	}
	// At least flood packets, and on until the probes made their three
	// rounds: a fast machine must not end the flood before they could.
	sent := 0
	for ; sent < flood || (rounds.Load() < 3 && time.Since(start) < 30*time.Second); sent++ {
		i := sent
		p := new(packet)
		*p = *templates[i%2]
		binary.BigEndian.PutUint32(p.buf[4:], uint32(i))       // xid
		binary.BigEndian.PutUint64(p.buf[26:], rng.Uint64()|2) // chaddr: a random local MAC (bytes 28-33)
		copy(p.buf[26:28], templates[i%2].buf[26:28])          // flags
		work <- p
	}
	close(stop)
	<-probed
	<-smart
	close(work)
	wg.Wait()
	took := time.Since(start)
	s.Shutdown(t.Context())

	st := s.Stats()
	writes := st.LeaseWrites - writesBefore
	t.Logf("%d packets in %v: %.0f packets/s; %d lease file writes", sent, took.Round(time.Millisecond),
		float64(sent)/took.Seconds(), writes)
	t.Logf("flood outcomes: %v", st.ByType)
	for h, name := range []string{"reserved", "known"} {
		ps := probes[h]
		if len(ps) < 3 {
			t.Fatalf("%s host: only %d exchanges during the flood", name, len(ps))
		}
		offers := make([]time.Duration, len(ps))
		acks := make([]time.Duration, len(ps))
		for i, p := range ps {
			offers[i], acks[i] = p.offer, p.ack
		}
		slices.Sort(offers)
		slices.Sort(acks)
		t.Logf("%s host: %d DORAs; OFFER median %v max %v; ACK median %v max %v", name, len(ps),
			offers[len(ps)/2], offers[len(ps)-1], acks[len(ps)/2], acks[len(ps)-1])
		// An ACK waits for at most one write cycle of the lease file.
		if offers[len(ps)-1] > time.Second || acks[len(ps)-1] > time.Second {
			t.Errorf("%s host waited too long", name)
		}
	}
	// New clients: at most the burst plus the rate over the flood.
	leases := len(s.leases.activeLeases(time.Now()))
	t.Logf("the smart attacker bound %d leases; %d leases in all", bound, leases)
	if max := defaultNewLeases * int(took.Seconds()+2); bound > max || leases > max+2 {
		t.Errorf("%d leases bound during the flood, more than %d", leases, max)
	}
	if st.RateLimited == 0 || st.NoOffer == 0 {
		t.Errorf("flood not refused: %+v", st)
	}
	if maxWrites := uint64(took/leaseWriteGap) + 2; writes > maxWrites {
		t.Errorf("%d lease file writes in %v", writes, took)
	}
}

// TestKnownClientsFirst: the read loop of full mode tells known clients
// from the fixed header, and workers take their packets before any other.
func TestKnownClientsFirst(t *testing.T) {
	s, _ := newTestServer(t, fullConfig())
	leased := macN(1)
	if !leaseFor(t, s, leased).IsValid() {
		t.Fatal("no lease")
	}
	for _, tc := range []struct {
		mac  net.HardwareAddr
		want bool
	}{
		{mustMAC("52:54:00:aa:00:01"), true}, // reserved
		{leased, true},
		{macN(2), false},
	} {
		b := kindLinux.build(tc.mac, dhcpv4.MessageTypeDiscover, 1).ToBytes()
		if got := s.known(b); got != tc.want {
			t.Errorf("%v: known %v", tc.mac, got)
		}
	}
	reply := kindLinux.build(leased, dhcpv4.MessageTypeDiscover, 1)
	reply.OpCode = dhcpv4.OpcodeBootReply
	if s.known(reply.ToBytes()) || s.known([]byte{1, 1, 6}) {
		t.Error("a reply or a stub taken for a known client's request")
	}

	prio, work := make(chan *packet, 4), make(chan *packet, 4)
	a, b, c := new(packet), new(packet), new(packet)
	work <- a
	work <- b
	prio <- c
	close(prio)
	close(work)
	var got []*packet
	for p, ok := next(prio, work); ok; p, ok = next(prio, work) {
		got = append(got, p)
	}
	if len(got) != 3 || got[0] != c || got[1] != a || got[2] != b {
		t.Errorf("order %p, want %p %p %p", got, c, a, b)
	}
}
