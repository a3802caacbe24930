package dhcp

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// lease runs a DORA for a Linux-like client and returns the ACKed address,
// or an invalid address if there was no ACK.
func leaseFor(t testing.TB, s *Server, mac net.HardwareAddr) netip.Addr {
	t.Helper()
	exs := dora(t, s, kindLinux, mac, 0x77, nil)
	if len(exs) < 2 || exs[1].rep == nil || exs[1].rep.MessageType() != dhcpv4.MessageTypeAck {
		return netip.Addr{}
	}
	return addrOf(exs[1].rep.YourIPAddr)
}

func smallPool(n int) Config {
	c := fullConfig()
	c.PoolStart = netip.MustParseAddr("10.77.0.100")
	c.PoolEnd = fromU32(u32(c.PoolStart) + uint32(n) - 1)
	return c
}

func TestLeasesPersistAcrossRestart(t *testing.T) {
	file := filepath.Join(t.TempDir(), "leases.json")
	cfg := smallPool(3)
	cfg.LeaseFile = file
	s1, _ := newTestServer(t, cfg)
	a, b := macN(1), macN(2)
	ipA, ipB := leaseFor(t, s1, a), leaseFor(t, s1, b)
	if !ipA.IsValid() || !ipB.IsValid() || ipA == ipB {
		t.Fatalf("leases %v %v", ipA, ipB)
	}

	var lf leaseFile
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &lf); err != nil || len(lf.Leases) != 2 {
		t.Fatalf("lease file %s: %v %+v", data, err, lf)
	}

	// A restarted server knows both leases: a new client gets the third
	// address, the old ones get theirs back.
	s2, _ := newTestServer(t, cfg)
	c := macN(3)
	ipC := leaseFor(t, s2, c)
	if !ipC.IsValid() || ipC == ipA || ipC == ipB {
		t.Fatalf("after restart a new client got %v (A %v, B %v)", ipC, ipA, ipB)
	}
	if got := leaseFor(t, s2, b); got != ipB {
		t.Errorf("after restart B got %v, want its lease %v", got, ipB)
	}
	if got := leaseFor(t, s2, macN(4)); got.IsValid() {
		t.Errorf("pool of 3 with 3 leases gave a 4th client %v", got)
	}
	// An INIT-REBOOT for A's address from someone else is refused.
	req := kindLinux.build(macN(5), dhcpv4.MessageTypeRequest, 9)
	req.Options[50] = ipA.AsSlice()
	if ex := do(t, s2, req, false, netip.AddrPort{}); ex.rep == nil || ex.rep.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("INIT-REBOOT for a leased address: want NAK, got %v", ex.rep)
	}
	// No temporary files are left behind.
	ents, _ := os.ReadDir(filepath.Dir(file))
	if len(ents) != 1 {
		t.Errorf("lease directory holds %d files", len(ents))
	}
}

func TestLeaseFileCorruptRefusesStart(t *testing.T) {
	file := filepath.Join(t.TempDir(), "leases.json")
	os.WriteFile(file, []byte(`{"version":1,"leases":[{"mac":"52:54:00:00:00:01","ip":"10.77.0.100","expires":`), 0o644)
	cfg := fullConfig()
	cfg.LeaseFile = file
	if _, err := NewServer(cfg); err == nil || !strings.Contains(err.Error(), "lease file") {
		t.Fatalf("corrupt lease file: err %v, want a lease file error", err)
	}
}

func TestLeaseFileDropsWhatConfigNoLongerAllows(t *testing.T) {
	file := filepath.Join(t.TempDir(), "leases.json")
	exp := testClock.Add(time.Hour).Format(time.RFC3339)
	os.WriteFile(file, []byte(`{"version":1,"leases":[
		{"mac":"52:54:00:00:00:01","ip":"10.77.0.100","expires":"`+exp+`"},
		{"mac":"52:54:00:00:00:02","ip":"10.99.0.5","expires":"`+exp+`"},
		{"mac":"52:54:00:00:00:03","ip":"10.77.0.10","expires":"`+exp+`"}]}`), 0o644)
	cfg := fullConfig() // 10.77.0.10 is reserved for 52:54:00:aa:00:01
	cfg.LeaseFile = file
	s, _ := newTestServer(t, cfg)
	got := s.leases.activeLeases(testClock)
	if len(got) != 1 || got["52:54:00:00:00:01"] != netip.MustParseAddr("10.77.0.100") {
		t.Errorf("leases after load: %v", got)
	}
}

func TestPoolExhaustion(t *testing.T) {
	s, clk := newTestServer(t, smallPool(2))
	for i := 1; i <= 2; i++ {
		if ex := do(t, s, kindLinux.build(macN(i), dhcpv4.MessageTypeDiscover, 1), false, netip.AddrPort{}); ex.rep == nil {
			t.Fatalf("client %d: no offer from a pool with room", i)
		}
	}
	// Both addresses are held for the offered clients: no third offer.
	ex := do(t, s, kindLinux.build(macN(3), dhcpv4.MessageTypeDiscover, 1), false, netip.AddrPort{})
	if ex.rep != nil || ex.res.out != outNoAddress {
		t.Fatalf("exhausted pool: got reply %v outcome %s", ex.rep, outcomeNames[ex.res.out])
	}
	// Unclaimed offers lapse.
	clk.advance(offerHold + time.Second)
	if got := leaseFor(t, s, macN(3)); !got.IsValid() {
		t.Errorf("after the offers lapsed the third client got nothing")
	}
}

func TestLeaseExpiryFreesAddress(t *testing.T) {
	s, clk := newTestServer(t, smallPool(1))
	a, b := macN(1), macN(2)
	ipA := leaseFor(t, s, a)
	if got := leaseFor(t, s, b); got.IsValid() {
		t.Fatalf("B got %v while A's lease runs", got)
	}
	clk.advance(time.Hour + time.Second)
	if got := leaseFor(t, s, b); got != ipA {
		t.Fatalf("after A's lease expired B got %v, want %v", got, ipA)
	}
	// A comes back asking for its old address: refused, it is B's now.
	req := kindLinux.build(a, dhcpv4.MessageTypeRequest, 5)
	req.Options[50] = ipA.AsSlice()
	if ex := do(t, s, req, false, netip.AddrPort{}); ex.rep == nil || ex.rep.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("A's INIT-REBOOT for B's address: want NAK")
	}
}

func TestReturningClientGetsItsAddress(t *testing.T) {
	s, clk := newTestServer(t, smallPool(10))
	ip := leaseFor(t, s, macN(1))
	for i := 2; i <= 4; i++ {
		leaseFor(t, s, macN(i))
	}
	clk.advance(3 * time.Hour) // every lease expired
	if got := leaseFor(t, s, macN(9)); got == ip {
		t.Errorf("a new client took an expired binding while never-used addresses were free")
	}
	if got := leaseFor(t, s, macN(1)); got != ip {
		t.Errorf("returning client got %v, want its previous %v", got, ip)
	}
}

func TestReservationHonoured(t *testing.T) {
	cfg := smallPool(3)
	cfg.Reservations = []Reservation{
		{MAC: macN(1), IP: netip.MustParseAddr("10.77.0.101")}, // inside the pool
		{MAC: macN(2), IP: netip.MustParseAddr("10.77.0.20")},  // outside
	}
	s, _ := newTestServer(t, cfg)
	seen := map[netip.Addr]bool{}
	for i := 3; i <= 6; i++ {
		ip := leaseFor(t, s, macN(i))
		if ip == netip.MustParseAddr("10.77.0.101") || ip == netip.MustParseAddr("10.77.0.20") {
			t.Fatalf("client %d got a reserved address %v", i, ip)
		}
		if ip.IsValid() {
			seen[ip] = true
		}
	}
	if len(seen) != 2 {
		t.Errorf("pool of 3 with one reserved gave %d addresses", len(seen))
	}
	if got := leaseFor(t, s, macN(1)); got != netip.MustParseAddr("10.77.0.101") {
		t.Errorf("reserved client 1 got %v", got)
	}
	if got := leaseFor(t, s, macN(2)); got != netip.MustParseAddr("10.77.0.20") {
		t.Errorf("reserved client 2 got %v", got)
	}
	// Asking for another address than its reservation: NAK.
	req := kindLinux.build(macN(2), dhcpv4.MessageTypeRequest, 5)
	req.Options[50] = []byte{10, 77, 0, 102}
	if ex := do(t, s, req, false, netip.AddrPort{}); ex.rep == nil || ex.rep.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("reserved client asking for another address: want NAK")
	}
}

func TestRenewReleaseDeclineInform(t *testing.T) {
	s, clk := newTestServer(t, smallPool(2))
	a := macN(1)
	ip := leaseFor(t, s, a)

	// RENEWING: unicast, ciaddr set, answered to ciaddr.
	clk.advance(30 * time.Minute)
	renew := kindLinux.build(a, dhcpv4.MessageTypeRequest, 6)
	renew.ClientIPAddr = ip.AsSlice()
	ex := do(t, s, renew, false, netip.AddrPortFrom(ip, 68))
	if ex.rep == nil || ex.rep.MessageType() != dhcpv4.MessageTypeAck || ex.res.dst != netip.AddrPortFrom(ip, 68) {
		t.Fatalf("renew: %v to %v", ex.rep, ex.res.dst)
	}
	if l := s.leases.byMAC[hwaddr(a)]; !l.expires.Equal(clk.t.Add(time.Hour)) {
		t.Errorf("renew did not extend the lease: %v", l.expires)
	}

	// INFORM: configuration, no lease, to ciaddr.
	inf := kindLinux.build(a, dhcpv4.MessageTypeInform, 7)
	inf.ClientIPAddr = ip.AsSlice()
	ex = do(t, s, inf, false, netip.AddrPortFrom(ip, 68))
	if ex.rep == nil || ex.rep.Options.Has(dhcpv4.OptionIPAddressLeaseTime) || !ex.rep.YourIPAddr.Equal(net.IPv4zero) ||
		len(ex.rep.Options[1]) != 4 || ex.res.dst != netip.AddrPortFrom(ip, 68) {
		t.Errorf("inform ack wrong: %v to %v", ex.rep, ex.res.dst)
	}

	// RELEASE: no reply, address free for another client.
	rel := kindLinux.build(a, dhcpv4.MessageTypeRelease, 8)
	rel.ClientIPAddr = ip.AsSlice()
	if ex := do(t, s, rel, false, netip.AddrPortFrom(ip, 68)); ex.rep != nil || ex.res.out != outDone {
		t.Fatalf("release: reply %v outcome %s", ex.rep, outcomeNames[ex.res.out])
	}
	if len(s.leases.activeLeases(clk.t)) != 0 {
		t.Errorf("lease still active after RELEASE")
	}

	// DECLINE from the holder takes the address out for a while; a
	// DECLINE from anyone else is ignored.
	b := macN(2)
	ipB := leaseFor(t, s, b)
	dec := kindLinux.build(macN(3), dhcpv4.MessageTypeDecline, 9)
	dec.Options[50] = ipB.AsSlice()
	do(t, s, dec, false, netip.AddrPort{})
	if s.leases.activeLeases(clk.t)[b.String()] != ipB {
		t.Fatalf("a stranger's DECLINE removed B's lease")
	}
	dec = kindLinux.build(b, dhcpv4.MessageTypeDecline, 9)
	dec.Options[50] = ipB.AsSlice()
	dec.Options[54] = testServerIP.AsSlice()
	if ex := do(t, s, dec, false, netip.AddrPort{}); ex.res.out != outDone {
		t.Fatalf("decline outcome %s", outcomeNames[ex.res.out])
	}
	got := leaseFor(t, s, b)
	if got == ipB || !got.IsValid() {
		t.Errorf("after DECLINE of %v the client got %v", ipB, got)
	}
	// The pool has 2: one declined, one now B's: nothing for a newcomer.
	if got := leaseFor(t, s, macN(4)); got.IsValid() {
		t.Errorf("declined address %v handed out", got)
	}
	clk.advance(declineHold + time.Second)
	if got := leaseFor(t, s, macN(4)); got != ipB {
		t.Errorf("after the decline hold, got %v want %v", got, ipB)
	}
}

func TestSelectingAnotherServer(t *testing.T) {
	s, _ := newTestServer(t, smallPool(1))
	a := macN(1)
	if ex := do(t, s, kindLinux.build(a, dhcpv4.MessageTypeDiscover, 1), false, netip.AddrPort{}); ex.rep == nil {
		t.Fatal("no offer")
	}
	// A chose another server: the held offer is released at once.
	req := kindLinux.selecting(a, 1, net.IPv4(10, 77, 0, 9), net.IPv4(10, 77, 0, 100))
	if ex := do(t, s, req, false, netip.AddrPort{}); ex.rep != nil || ex.res.out != outIgnored {
		t.Fatalf("REQUEST for another server answered")
	}
	if got := leaseFor(t, s, macN(2)); !got.IsValid() {
		t.Errorf("offer held for a client that went elsewhere")
	}
}

func TestRelayFromForeignSubnetIgnored(t *testing.T) {
	s, _ := newTestServer(t, fullConfig())
	d := kindBIOSPXE.build(macN(1), dhcpv4.MessageTypeDiscover, 1)
	d.GatewayIPAddr = net.IPv4(192, 168, 9, 1)
	if ex := do(t, s, d, false, netip.AddrPort{}); ex.rep != nil || ex.res.out != outIgnored {
		t.Errorf("full mode answered a relay from a subnet it has no pool for")
	}
	// NAKs through a relay carry the broadcast bit (RFC 2131 4.1).
	req := kindLinux.build(macN(1), dhcpv4.MessageTypeRequest, 2)
	req.Options[50] = []byte{10, 77, 0, 250}
	req.GatewayIPAddr = net.IPv4(10, 77, 0, 2)
	ex := do(t, s, req, false, netip.AddrPort{})
	if ex.rep == nil || ex.rep.MessageType() != dhcpv4.MessageTypeNak || !ex.rep.IsBroadcast() || ex.res.dst.Port() != 67 {
		t.Errorf("relayed NAK: %v to %v", ex.rep, ex.res.dst)
	}
}

func TestLeaseFileWriteFailureWithholdsAck(t *testing.T) {
	dir := t.TempDir()
	cfg := smallPool(2)
	cfg.LeaseFile = filepath.Join(dir, "sub", "leases.json") // directory missing
	s, _ := newTestServer(t, cfg)
	exs := dora(t, s, kindLinux, macN(1), 1, nil)
	if len(exs) != 2 || exs[1].rep != nil || exs[1].res.out != outError {
		t.Fatalf("ACK sent although the lease was not written")
	}
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	if got := leaseFor(t, s, macN(1)); !got.IsValid() {
		t.Errorf("no lease once the file can be written")
	}
}

// Many clients at once on a pool too small for all: no address is ACKed
// twice and the lease file agrees. Run with -race.
func TestConcurrentClientsNeverShareAddress(t *testing.T) {
	cfg := smallPool(40)
	cfg.LeaseFile = filepath.Join(t.TempDir(), "leases.json")
	s, _ := newTestServer(t, cfg)
	s.now = time.Now // the fake clock is not safe for concurrent use
	var mu sync.Mutex
	got := map[netip.Addr]string{}
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Go(func() {
			mac := macN(100 + i)
			ip := leaseFor(t, s, mac)
			if !ip.IsValid() {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if other, dup := got[ip]; dup {
				t.Errorf("%v handed to %s and %s", ip, other, mac)
			}
			got[ip] = mac.String()
		})
	}
	wg.Wait()
	if len(got) != 40 {
		t.Errorf("%d of 40 addresses leased", len(got))
	}
	var lf leaseFile
	data, _ := os.ReadFile(cfg.LeaseFile)
	if err := json.Unmarshal(data, &lf); err != nil || len(lf.Leases) != 40 {
		t.Errorf("lease file holds %d leases (%v)", len(lf.Leases), err)
	}
}

// A generalized image takes its hostname from DHCP: known machines get
// their name with a pool address too, a reservation's own name wins, and
// strangers get none.
func TestHostnamesOfKnownMachines(t *testing.T) {
	cfg := smallPool(4)
	cfg.Reservations = []Reservation{{MAC: macN(3), IP: netip.MustParseAddr("10.77.0.20"), Hostname: "reserved"}}
	s, _ := newTestServer(t, cfg)
	if err := s.SetHostnames(map[string]string{macN(1).String(): "pc1", macN(3).String(): "other"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		mac  net.HardwareAddr
		want string
	}{{macN(1), "pc1"}, {macN(2), ""}, {macN(3), "reserved"}} {
		exs := dora(t, s, kindLinux, c.mac, 0x77, nil)
		if len(exs) < 2 || exs[1].rep == nil {
			t.Fatalf("%v: no DORA", c.mac)
		}
		for _, ex := range exs[:2] {
			if got := string(ex.rep.Options.Get(dhcpv4.OptionHostName)); got != c.want {
				t.Errorf("%v %v: option 12 %q, want %q", c.mac, ex.rep.MessageType(), got, c.want)
			}
		}
	}
	for _, bad := range []map[string]string{{"nope": "x"}, {macN(1).String(): ""}, {macN(1).String(): strings.Repeat("a", 256)}} {
		if err := s.SetHostnames(bad); err == nil {
			t.Errorf("SetHostnames(%v) accepted", bad)
		}
	}
	if got := s.hostname(hwaddr(macN(1))); got != "pc1" {
		t.Errorf("a refused table replaced the good one: %q", got)
	}
}

// memLeases is a LeaseStore in memory, shared by the servers of a test
// like a cluster's etcd; failing makes its writes fail.
type memLeases struct {
	mu      sync.Mutex
	data    []byte
	failing bool
}

func (m *memLeases) String() string { return "test lease store" }

func (m *memLeases) LoadLeases() ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.data), nil
}

func (m *memLeases) SaveLeases(b []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failing {
		return errors.New("not the active server")
	}
	m.data = bytes.Clone(b)
	return nil
}

// TestLeaseStoreTakeover: two servers on one LeaseStore, as a cluster's
// active and standby. The standby, started before the leases were given,
// knows them after ReloadLeases - and only them: a lease of its own from
// before is replaced, so an address the store gives another client is not
// handed out twice. A write the store refuses (a deposed server) withholds
// the ACK.
func TestLeaseStoreTakeover(t *testing.T) {
	st := &memLeases{}
	cfg := smallPool(3)
	cfg.LeaseStore = st
	standby, _ := newTestServer(t, cfg)
	// Leases the standby alone remembers (from before the site's history
	// it will take over): the whole pool.
	var stale []netip.Addr
	for i := 7; i <= 9; i++ {
		stale = append(stale, leaseFor(t, standby, macN(i)))
	}
	st.mu.Lock()
	st.data = nil // the store never saw it (another site's history)
	st.mu.Unlock()

	active, _ := newTestServer(t, cfg)
	a, b := macN(1), macN(2)
	ipA, ipB := leaseFor(t, active, a), leaseFor(t, active, b)
	if !ipA.IsValid() || !ipB.IsValid() {
		t.Fatalf("leases %v %v", ipA, ipB)
	}
	if err := standby.ReloadLeases(); err != nil {
		t.Fatal(err)
	}
	if got := leaseFor(t, standby, b); got != ipB {
		t.Errorf("after the takeover B got %v, want its lease %v", got, ipB)
	}
	c := leaseFor(t, standby, macN(3))
	if !c.IsValid() || c == ipA || c == ipB {
		t.Errorf("after the takeover a new client got %v (A %v, B %v; the standby's old lease was %v)", c, ipA, ipB, stale)
	}
	st.mu.Lock()
	st.failing = true
	st.mu.Unlock()
	if got := leaseFor(t, active, macN(4)); got.IsValid() {
		t.Errorf("a deposed server ACKed %v although the store refused its write", got)
	}
}
