package iscsi

// Tests of "one client can never starve the others" (issue 13): limits on
// connections per source and in total, time bounds on logins, discovery
// and idle sessions, held WRITEs, the fair share of command memory, and
// a login with a host's ISID that fails CHAP.

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

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

// closedWithin reports whether the peer closes nc within d (reads end in
// EOF or a reset rather than the deadline; a nil nc was reset at once).
// What arrives before is read and dropped.
func closedWithin(nc net.Conn, d time.Duration) bool {
	if nc == nil {
		return true
	}
	nc.SetReadDeadline(time.Now().Add(d))
	b := make([]byte, 4096)
	for {
		_, err := nc.Read(b)
		if err == nil {
			continue
		}
		var ne net.Error
		return !(errors.As(err, &ne) && ne.Timeout())
	}
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
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	srv, addr := startTargetWith(t, Config{MaxConnectionsPerSource: 4, Logger: log}, nil)
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
	// Six refusals, one line: a flood of them cannot flood the log.
	if n := strings.Count(logs.String(), `msg="iscsi connection refused"`); n != 1 {
		t.Fatalf("%d log lines for 6 refused connections, want 1:\n%s", n, logs.String())
	}
}

// lockedBuffer is a log destination the target's goroutines share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Reset()
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
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

// TestDiscoverySessionBounded: a discovery session ends within
// DiscoveryTimeout, idle or busy.
func TestDiscoverySessionBounded(t *testing.T) {
	t.Parallel()
	const bound = 200 * time.Millisecond
	srv, addr := startTargetWith(t, Config{DiscoveryTimeout: bound}, nil)
	t.Run("idle", func(t *testing.T) {
		in := dialInitiator(t, addr)
		if st := in.login(loginOpts{initiator: testInitiator1, discovery: true}); st != 0 {
			t.Fatalf("discovery login 0x%04x", st)
		}
		start := time.Now()
		if !closedWithin(in.nc, 10*bound) {
			t.Fatal("idle discovery session not closed")
		}
		if took := time.Since(start); took < bound*3/4 {
			t.Fatalf("closed after %v, before the bound %v", took, bound)
		}
	})
	t.Run("busy", func(t *testing.T) {
		in := dialInitiator(t, addr)
		if st := in.login(loginOpts{initiator: testInitiator1, discovery: true}); st != 0 {
			t.Fatalf("discovery login 0x%04x", st)
		}
		deadline := time.Now().Add(10 * bound)
		for {
			if time.Now().After(deadline) {
				t.Fatal("a discovery session kept busy outlived its bound")
			}
			in.itt++
			var p pdu.PDU
			(&pdu.NOPOut{Immediate: true, ITT: in.itt, TTT: pdu.ReservedTag, CmdSN: in.cmdSN, ExpStatSN: in.expStatSN}).Marshal(&p.BHS)
			if err := p.WriteTo(in.nc, false, false); err != nil {
				break
			}
			var r pdu.PDU
			if err := in.rd.ReadPDU(&r); err != nil {
				break
			}
			time.Sleep(bound / 8)
		}
	})
	waitFor(t, "two discovery timeouts counted", func() bool { return srv.Stats().DiscoveryTimeouts == 2 })
}

// TestFirstCommandTimeout: a session that logs in and sends no command is
// closed; one that works is kept.
func TestFirstCommandTimeout(t *testing.T) {
	t.Parallel()
	const bound = 200 * time.Millisecond
	srv, addr := startTargetWith(t, Config{FirstCommandTimeout: bound}, nil)
	silent := dialInitiator(t, addr)
	if st := silent.login(loginOpts{initiator: testInitiator1, target: testIQN, isid: 0x800000000501}); st != 0 {
		t.Fatalf("login 0x%04x", st)
	}
	working := loggedInISID(t, addr, 0x800000000502)
	if !closedWithin(silent.nc, 10*bound) {
		t.Fatal("a session that sent no command was not closed")
	}
	time.Sleep(2 * bound)
	if st := tur(working); st != 0 {
		t.Fatalf("working session after the bound: status %#x", st)
	}
	if st := srv.Stats(); st.FirstCommandTimeouts != 1 || st.Sessions != 1 {
		t.Fatalf("stats %+v, want 1 first-command timeout and 1 session left", st)
	}
}

// TestNOPPingsOnlyProvenInitiators: with the default settings, a session
// whose initiator never pinged (iPXE) is never pinged, however long it
// idles; one whose initiator did (open-iscsi, libiscsi) is pinged when
// idle and dropped when it stops answering.
func TestNOPPingsOnlyProvenInitiators(t *testing.T) {
	t.Parallel()
	const iv = 100 * time.Millisecond
	srv, addr := startTargetWith(t, Config{ProvenNOPInterval: iv}, nil)

	ipxe := loggedInISID(t, addr, 0x800000000601)
	ipxe.nc.SetReadDeadline(time.Now().Add(6 * iv))
	var p pdu.PDU
	if err := ipxe.rd.ReadPDU(&p); err == nil {
		t.Fatalf("a session that never pinged got %s", p.BHS.Opcode())
	}
	ipxe.nc.SetDeadline(time.Now().Add(30 * time.Second))

	linux := loggedInISID(t, addr, 0x800000000602)
	linux.itt++
	(&pdu.NOPOut{Immediate: true, ITT: linux.itt, TTT: pdu.ReservedTag, CmdSN: linux.cmdSN, ExpStatSN: linux.expStatSN}).Marshal(&p.BHS)
	linux.sendPDU(&p)
	if r := linux.readPDU(); r.BHS.Opcode() != pdu.OpNOPIn || r.BHS.ITT() != linux.itt {
		t.Fatalf("answer to our ping: %s ITT %#x", r.BHS.Opcode(), r.BHS.ITT())
	}
	for range 2 {
		r := linux.readPDU()
		ping, err := pdu.ParseNOPIn(&r.BHS)
		if err != nil || ping.ITT != pdu.ReservedTag || ping.TTT == pdu.ReservedTag {
			t.Fatalf("got %s %+v, want a NOP-In ping", r.BHS.Opcode(), ping)
		}
		var a pdu.PDU
		(&pdu.NOPOut{Immediate: true, ITT: pdu.ReservedTag, TTT: ping.TTT, CmdSN: linux.cmdSN, ExpStatSN: linux.expStatSN}).Marshal(&a.BHS)
		linux.sendPDU(&a)
	}
	linux.readPDU() // a ping we leave unanswered
	if !closedWithin(linux.nc, 10*iv) {
		t.Fatal("a proven initiator that stopped answering was not dropped")
	}
	if st := tur(ipxe); st != 0 {
		t.Fatalf("the session that never pinged after %v idle: status %#x", 6*iv, st)
	}
	if st := srv.Stats(); st.NOPTimeouts != 1 {
		t.Fatalf("%d NOP timeouts, want 1", st.NOPTimeouts)
	}
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

// TestHeldWriteAborted: commands whose Data-Out does not come (solicited
// or unsolicited), or that wait behind a CmdSN that never comes, close
// the connection after DataOutTimeout and give their memory back; data
// that keeps coming, however slowly, is not cut off.
func TestHeldWriteAborted(t *testing.T) {
	t.Parallel()
	const bound = 200 * time.Millisecond
	srv, addr := startTargetWith(t, Config{DataOutTimeout: bound}, nil)
	cases := []struct {
		name string
		send func(in *testInitiator)
	}{
		{"solicited", func(in *testInitiator) {
			in.writeNoData(0, 1<<20, true)
			if r := in.readPDU(); r.BHS.Opcode() != pdu.OpR2T {
				t.Fatalf("got %s, want R2T", r.BHS.Opcode())
			}
		}},
		{"unsolicited", func(in *testInitiator) { in.writeNoData(0, 32<<10, false) }},
		{"solicited, other commands going on", func(in *testInitiator) {
			in.writeNoData(0, 1<<20, true)
			if r := in.readPDU(); r.BHS.Opcode() != pdu.OpR2T {
				t.Fatalf("got %s, want R2T", r.BHS.Opcode())
			}
			// TEST UNIT READY now and then does not keep the
			// WRITE's megabyte pinned.
			go func() {
				for range 60 { // longer than closedWithin waits
					time.Sleep(bound / 4)
					in.itt++
					m := pdu.SCSICommand{Final: true, ITT: in.itt, CmdSN: in.cmdSN, ExpStatSN: in.expStatSN}
					in.cmdSN++
					var p pdu.PDU
					m.Marshal(&p)
					if p.WriteTo(in.nc, false, false) != nil {
						return
					}
				}
			}()
		}},
		{"CmdSN gap", func(in *testInitiator) {
			in.cmdSN++ // the command at ExpCmdSN never comes
			in.itt++
			m := pdu.SCSICommand{Final: true, Read: true, ITT: in.itt, CmdSN: in.cmdSN, ExpectedDataTransferLength: 4096}
			copy(m.CDB[:], rw10(0x28, 0, 8))
			var p pdu.PDU
			m.Marshal(&p)
			in.sendPDU(&p)
		}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := loggedInISID(t, addr, uint64(0x800000000700+i))
			tc.send(in)
			waitFor(t, "the held command's memory", func() bool { return srv.mem.used() > 0 })
			start := time.Now()
			if !closedWithin(in.nc, 10*bound) {
				t.Fatal("connection with a held command not closed")
			}
			if took := time.Since(start); took < bound*3/4 {
				t.Fatalf("closed after %v, before the bound %v", took, bound)
			}
			waitFor(t, "memory given back", func() bool { return srv.mem.used() == 0 })
		})
	}
	t.Run("slow but steady", func(t *testing.T) {
		in := loggedInISID(t, addr, 0x800000000710)
		data := make([]byte, 32<<10)
		rand.Read(data)
		itt := in.writeNoData(8, len(data), true)
		r := in.readPDU()
		r2t, err := pdu.ParseR2T(&r.BHS)
		if err != nil || r2t.DesiredDataTransferLength != uint32(len(data)) {
			t.Fatalf("got %s %+v, want an R2T for it all", r.BHS.Opcode(), r2t)
		}
		// Four pieces, half a bound apart: twice the bound in all.
		for i := range 4 {
			time.Sleep(bound / 2)
			off := uint32(i * 8 << 10)
			d := pdu.DataOut{Final: i == 3, LUN: 0, ITT: itt, TTT: r2t.TTT, ExpStatSN: in.expStatSN, DataSN: uint32(i), BufferOffset: off}
			var dp pdu.PDU
			d.Marshal(&dp.BHS)
			dp.Data = data[off : off+8<<10]
			in.sendPDU(&dp)
		}
		r = in.readPDU()
		resp, err := pdu.ParseSCSIResponse(&r.BHS)
		if err != nil || resp.Status != 0 {
			t.Fatalf("got %s %+v, want GOOD", r.BHS.Opcode(), resp)
		}
		in.expStatSN = resp.StatSN + 1
		if st, _, got := in.command(0, rw10(0x28, 8, 64), nil, uint32(len(data))); st != 0 || !bytes.Equal(got, data) {
			t.Fatalf("read back: status %#x, equal %v", st, bytes.Equal(got, data))
		}
	})
	if st := srv.Stats(); st.DataOutTimeouts != 4 {
		t.Fatalf("%d Data-Out timeouts, want 4", st.DataOutTimeouts)
	}
}

// addTestTarget exports one more target, with an 8 MiB LU, on srv.
func addTestTarget(t *testing.T, srv *Server, name string) {
	t.Helper()
	if err := srv.AddTarget(&Target{Name: name, SCSI: newTestSCSITarget(t, name, name)}); err != nil {
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
		ReservedMemory: 8 * mib, ReservedMemoryPerTarget: 1 * mib, DataOutTimeout: -1}
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

// TestISIDHijackWithWrongSecret: logins with a host's initiator name and
// ISID (and even its TSIH) that fail CHAP, or come as discovery sessions,
// leave the host's session alone: sessions are bound only after
// authentication.
func TestISIDHijackWithWrongSecret(t *testing.T) {
	t.Parallel()
	creds := &Credentials{User: "host1", Secret: "secret-of-host1"}
	srv, addr := startTarget(t, func(tg *Target) { tg.CHAP = creds })
	const isid = 0x800000000a00
	host := dialInitiator(t, addr)
	if st := host.login(loginOpts{initiator: testInitiator1, target: testIQN, isid: isid, chapUser: "host1", chapSec: "secret-of-host1"}); st != 0 {
		t.Fatalf("host login 0x%04x", st)
	}
	host.clearUnitAttention()

	attempts := []struct {
		name string
		tsih uint16
		o    loginOpts
		want uint16
	}{
		{"wrong secret", 0, loginOpts{chapUser: "host1", chapSec: "guessed-secret"}, pdu.LoginAuthFailure},
		{"wrong secret, host's TSIH", host.tsih, loginOpts{chapUser: "host1", chapSec: "guessed-secret"}, pdu.LoginAuthFailure},
		{"no authentication", 0, loginOpts{}, pdu.LoginAuthFailure},
		{"discovery with the host's TSIH", host.tsih, loginOpts{discovery: true}, pdu.LoginSessionDoesNotExist},
	}
	for _, a := range attempts {
		t.Run(a.name, func(t *testing.T) {
			in := dialInitiator(t, addr)
			in.tsih = a.tsih
			a.o.initiator, a.o.isid = testInitiator1, isid
			if !a.o.discovery {
				a.o.target = testIQN
			}
			if got := in.login(a.o); got != a.want {
				t.Fatalf("login status 0x%04x, want 0x%04x", got, a.want)
			}
			if st := tur(host); st != 0 {
				t.Fatalf("host session after the attempt: status %#x", st)
			}
			if n := srv.SessionCount(); n != 1 {
				t.Fatalf("%d sessions, want the host's only", n)
			}
		})
	}
	host.logout()
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
