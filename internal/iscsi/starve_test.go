package iscsi

// Tests of "one client can never starve the others" (issue 13): limits on
// connections per source and in total, the login time bound, and the fair
// share of command memory.

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/disk"
	"github.com/diskless-boot/diskless/internal/iscsi/pdu"
	"github.com/diskless-boot/diskless/internal/scsi"
)

// dialFrom connects to addr from the loopback address local (any of
// 127/8 on Linux), so one test can play many source addresses. A
// connection the target resets so fast that the dial itself fails comes
// back as a closed one.
func dialFrom(t *testing.T, addr, local string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	nc, err := d.Dial("tcp", addr)
	if errors.Is(err, syscall.ECONNRESET) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

func initiatorFrom(t *testing.T, addr, local string) *testInitiator {
	t.Helper()
	nc := dialFrom(t, addr, local)
	if nc == nil {
		t.Fatalf("connection from %s reset", local)
	}
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	return &testInitiator{t: t, nc: nc, rd: pdu.Reader{R: bufio.NewReader(nc), MaxData: 1 << 24},
		isid: 0x800000001234, keys: map[string]string{}, mrdsl: 8192}
}

// closedWithin reports whether the peer closes nc within d (a read ends in
// EOF or a reset rather than the deadline; a nil nc was reset at once).
// Nothing may arrive first.
func closedWithin(nc net.Conn, d time.Duration) bool {
	if nc == nil {
		return true
	}
	nc.SetReadDeadline(time.Now().Add(d))
	var b [1]byte
	_, err := nc.Read(b[:])
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// countClosed reads all conns at once for d and counts those the target
// closed.
func countClosed(conns []net.Conn, d time.Duration) int {
	var (
		mu sync.Mutex
		n  int
		wg sync.WaitGroup
	)
	for _, nc := range conns {
		wg.Go(func() {
			if closedWithin(nc, d) {
				mu.Lock()
				n++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return n
}

// waitFor polls cond until it holds or 5 s pass.
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

func tur(in *testInitiator) uint8 {
	in.t.Helper()
	st, _, _ := in.command(0, []byte{0, 0, 0, 0, 0, 0}, nil, 0)
	return st
}

// TestConnectionsPerSource: idle connections from one address beyond
// MaxConnectionsPerSource are closed at once and counted, and another
// address still logs in.
func TestConnectionsPerSource(t *testing.T) {
	t.Parallel()
	srv, addr := startTargetWith(t, Config{MaxConnectionsPerSource: 4}, nil)
	var idle []net.Conn
	for range 10 {
		idle = append(idle, dialFrom(t, addr, "127.0.0.1"))
	}
	if n := countClosed(idle, 500*time.Millisecond); n != 6 {
		t.Fatalf("%d of 10 idle connections from one address closed, want 6", n)
	}
	in := initiatorFrom(t, addr, "127.0.0.2")
	if st := in.login(loginOpts{initiator: testInitiator1, target: testIQN}); st != 0 {
		t.Fatalf("login from another address: status 0x%04x", st)
	}
	in.clearUnitAttention()
	if st := srv.Stats(); st.RefusedPerSource != 6 || st.Sessions != 1 {
		t.Fatalf("stats %+v, want 6 refused per source and 1 session", st)
	}
}

// TestConnectionTableFull: when MaxConnections is reached, a new
// connection takes the slot of a login that has not finished, from the
// source holding most of them, so 50 addresses of idle sockets cannot
// keep a host from logging in; logged-in sessions are never evicted, and
// when they fill the table, newcomers are refused.
func TestConnectionTableFull(t *testing.T) {
	t.Parallel()
	t.Run("idle sockets from 50 addresses", func(t *testing.T) {
		srv, addr := startTargetWith(t, Config{MaxConnections: 64, MaxConnectionsPerSource: 4}, nil)
		var idle []net.Conn
		for i := range 50 {
			for range 4 {
				idle = append(idle, dialFrom(t, addr, net.IPv4(127, 0, 1, byte(i+1)).String()))
			}
		}
		waitFor(t, "200 connections handled", func() bool {
			st := srv.Stats()
			return st.Accepted+st.RefusedPerSource+st.RefusedTotal >= 200
		})
		in := initiatorFrom(t, addr, "127.0.0.200")
		if st := in.login(loginOpts{initiator: testInitiator1, target: testIQN}); st != 0 {
			t.Fatalf("login with the table full of idle sockets: status 0x%04x", st)
		}
		in.clearUnitAttention()
		st := srv.Stats()
		if st.Connections > 64 || st.Evicted < 200-64 || st.RefusedTotal != 0 {
			t.Fatalf("stats %+v: want at most 64 connections, at least 136 evicted, none refused", st)
		}
	})
	t.Run("sessions are never evicted", func(t *testing.T) {
		srv, addr := startTargetWith(t, Config{MaxConnections: 4, MaxConnectionsPerSource: 2}, nil)
		var sessions []*testInitiator
		for i := range 4 {
			in := initiatorFrom(t, addr, net.IPv4(127, 0, 2, byte(i/2+1)).String())
			if st := in.login(loginOpts{initiator: testInitiator1, target: testIQN, isid: uint64(0x800000000300 + i)}); st != 0 {
				t.Fatalf("session %d: login status 0x%04x", i, st)
			}
			in.clearUnitAttention()
			sessions = append(sessions, in)
		}
		late := dialFrom(t, addr, "127.0.0.9")
		if !closedWithin(late, 2*time.Second) {
			t.Fatal("connection beyond MaxConnections, all sessions, not closed")
		}
		for i, in := range sessions {
			if st := tur(in); st != 0 {
				t.Fatalf("session %d after the refusal: status %#x", i, st)
			}
		}
		if st := srv.Stats(); st.RefusedTotal != 1 || st.Evicted != 0 {
			t.Fatalf("stats %+v, want 1 refused for the total and none evicted", st)
		}
	})
}

// TestLoginTimeoutBoundsSlowDrip: LoginTimeout bounds the whole login,
// whether a PDU trickles in byte by byte or valid PDUs keep coming.
func TestLoginTimeoutBoundsSlowDrip(t *testing.T) {
	t.Parallel()
	const bound = 300 * time.Millisecond
	srv, addr := startTargetWith(t, Config{LoginTimeout: bound}, nil)
	var first pdu.PDU
	(&pdu.LoginRequest{CSG: pdu.StageSecurity, NSG: pdu.StageOperational, Continue: true, ISID: 0x800000000400}).Marshal(&first.BHS)
	first.Data = []byte("InitiatorName=" + testInitiator1 + "\x00")
	var wire bytes.Buffer
	first.WriteTo(&wire, false, false)

	drip := func(t *testing.T, send func(nc net.Conn) error, every time.Duration) {
		nc := dialFrom(t, addr, "127.0.0.1")
		start := time.Now()
		done := make(chan struct{})
		go func() {
			defer close(done)
			for send(nc) == nil {
				time.Sleep(every)
			}
		}()
		go io.Copy(io.Discard, nc) // the answers to Continue requests
		<-done
		if took := time.Since(start); took < bound || took > 10*bound {
			t.Fatalf("login closed after %v, want about %v", took, bound)
		}
	}
	t.Run("bytes", func(t *testing.T) {
		b := wire.Bytes()
		i := 0
		drip(t, func(nc net.Conn) error {
			_, err := nc.Write(b[i%len(b) : i%len(b)+1])
			i++
			return err
		}, 10*time.Millisecond)
	})
	t.Run("PDUs", func(t *testing.T) {
		// Login Requests with Continue: each is answered, none
		// completes the stage.
		var cont pdu.PDU
		(&pdu.LoginRequest{CSG: pdu.StageSecurity, NSG: pdu.StageOperational, Continue: true, ISID: 0x800000000400}).Marshal(&cont.BHS)
		cont.Data = []byte("X")
		first := true
		drip(t, func(nc net.Conn) error {
			if first {
				first = false
				_, err := nc.Write(wire.Bytes())
				return err
			}
			return cont.WriteTo(nc, false, false)
		}, 20*time.Millisecond)
	})
	waitFor(t, "two login timeouts counted", func() bool { return srv.Stats().LoginTimeouts == 2 })
}

// writeNoData sends a WRITE(10) of n bytes with no data: the target asks
// for it with R2T, or (final=false, InitialR2T=No) expects it unsolicited.
func (in *testInitiator) writeNoData(lba uint32, n int, final bool) uint32 {
	in.itt++
	m := pdu.SCSICommand{Final: final, Write: true, Attr: pdu.AttrSimple, ITT: in.itt, CmdSN: in.cmdSN, ExpStatSN: in.expStatSN,
		ExpectedDataTransferLength: uint32(n)}
	in.cmdSN++
	copy(m.CDB[:], rw10(0x2a, lba, uint16(n/512)))
	var p pdu.PDU
	m.Marshal(&p)
	in.sendPDU(&p)
	return in.itt
}

// addTestTarget exports one more target, with an 8 MiB LU, on srv.
func addTestTarget(t *testing.T, srv *Server, name string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 8<<20); err != nil {
		t.Fatal(err)
	}
	dev, err := disk.OpenFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	st := scsi.NewTarget(scsi.TargetConfig{Name: name, RelTargetPort: 1, TargetPortGroup: 1})
	lu, err := scsi.NewLogicalUnit(dev, scsi.LUConfig{Serial: name})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.AddLU(0, lu); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddTarget(&Target{Name: name, SCSI: st}); err != nil {
		t.Fatal(err)
	}
}

// TestMemoryFairness: eight sessions on four hosts hold WRITEs whose
// Data-Out never comes, as many as the target lets them; a ninth session,
// of another host, still does I/O. Without the per-target bound and the
// reserve, the eight would hold the whole budget (8 x SessionMemory) and
// the ninth would only get TASK SET FULL.
func TestMemoryFairness(t *testing.T) {
	t.Parallel()
	const mib = 1 << 20
	cfg := Config{TotalMemory: 16 * mib, SessionMemory: 2 * mib, TargetMemory: 3 * mib,
		ReservedMemory: 8 * mib, ReservedMemoryPerTarget: 1 * mib}
	srv, addr := startTargetWith(t, cfg, nil)
	hosts := []string{"iqn.2026-11.org.example:a", "iqn.2026-11.org.example:b", "iqn.2026-11.org.example:c",
		"iqn.2026-11.org.example:d", "iqn.2026-11.org.example:e"}
	for _, h := range hosts {
		addTestTarget(t, srv, h)
	}
	var attackers []*testInitiator
	full := 0
	for i := range 8 {
		in := dialInitiator(t, addr)
		if st := in.login(loginOpts{initiator: testInitiator1, target: hosts[i/2], isid: uint64(0x800000000800 + i)}); st != 0 {
			t.Fatalf("attacker %d: login 0x%04x", i, st)
		}
		in.clearUnitAttention()
		attackers = append(attackers, in)
		for range 8 {
			in.writeNoData(0, 512<<10, true)
			r := in.readPDU()
			switch r.BHS.Opcode() {
			case pdu.OpR2T:
			case pdu.OpSCSIResponse:
				resp, _ := pdu.ParseSCSIResponse(&r.BHS)
				if resp.Status != uint8(scsi.StatusTaskSetFull) {
					t.Fatalf("attacker %d: status %#x, want an R2T or TASK SET FULL", i, resp.Status)
				}
				in.expStatSN = resp.StatSN + 1
				full++
			default:
				t.Fatalf("attacker %d: got %s", i, r.BHS.Opcode())
			}
		}
	}
	held := srv.mem.used()
	t.Logf("eight sessions hold %d MiB of %d; %d of their WRITEs got TASK SET FULL", held/mib, cfg.TotalMemory/mib, full)
	if full == 0 || held > cfg.TotalMemory-cfg.ReservedMemoryPerTarget {
		t.Fatalf("the eight sessions hold %d bytes, leaving no room for another host", held)
	}

	ninth := dialInitiator(t, addr)
	if st := ninth.login(loginOpts{initiator: testInitiator1, target: hosts[4], isid: 0x800000000900}); st != 0 {
		t.Fatalf("ninth session: login 0x%04x", st)
	}
	ninth.clearUnitAttention()
	data := make([]byte, 512<<10)
	for i := range 4 {
		rand.Read(data)
		lba := uint32(i * 1024)
		if st, sense, _ := ninth.command(0, rw10(0x2a, lba, 1024), data, 0); st != 0 {
			t.Fatalf("ninth session WRITE %d: status %#x sense %x", i, st, sense)
		}
		st, _, got := ninth.command(0, rw10(0x28, lba, 1024), nil, uint32(len(data)))
		if st != 0 || !bytes.Equal(got, data) {
			t.Fatalf("ninth session READ %d: status %#x, equal %v", i, st, bytes.Equal(got, data))
		}
	}
	st := srv.Stats()
	if st.TaskSetFullTarget+st.TaskSetFullReserved+st.TaskSetFullSession == 0 {
		t.Fatalf("stats %+v: no refusal counted", st)
	}
	for _, in := range attackers {
		in.nc.Close()
	}
	waitFor(t, "memory given back", func() bool { return srv.mem.used() == 0 })
}

func TestSourceOf(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"192.0.2.7:3260", "192.0.2.7/32"},
		{"[::ffff:192.0.2.7]:3260", "192.0.2.7/32"},
		// A host picks its own address within its /64 at will.
		{"[2001:db8:1:2:aaaa:bbbb:cccc:dddd]:3260", "2001:db8:1:2::/64"},
		{"[fe80::1%eth0]:3260", "fe80::/64"},
	} {
		a, err := net.ResolveTCPAddr("tcp", tc.addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := sourceOf(a).String(); got != tc.want {
			t.Errorf("sourceOf(%s) = %s, want %s", tc.addr, got, tc.want)
		}
	}
}
