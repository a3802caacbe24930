package iscsi

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/disk"
	"github.com/diskless-boot/diskless/internal/iscsi/pdu"
	"github.com/diskless-boot/diskless/internal/scsi"
)

const (
	testIQN        = "iqn.2026-11.org.example:test"
	testInitiator1 = "iqn.2026-11.org.example:client1"
)

// startTarget serves one LU backed by a temporary 8 MiB image file.
func startTarget(t *testing.T, mutate func(*Target)) (*Server, string) {
	t.Helper()
	return startTargetWith(t, Config{}, mutate)
}

// newTestSCSITarget is a SCSI target named name with an 8 MiB file as LU 0.
func newTestSCSITarget(t *testing.T, name, serial string) *scsi.Target {
	t.Helper()
	return scsiTargetOf(t, name, serial, newTestDisk(t))
}

// newTestDisk is an 8 MiB file device, closed at the test's end.
func newTestDisk(t *testing.T) *disk.File {
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
	return dev
}

// scsiTargetOf is a SCSI target named name with dev as LU 0.
func scsiTargetOf(t *testing.T, name, serial string, dev disk.Device) *scsi.Target {
	t.Helper()
	st := scsi.NewTarget(scsi.TargetConfig{Name: name, RelTargetPort: 1, TargetPortGroup: 1})
	lu, err := scsi.NewLogicalUnit(dev, scsi.LUConfig{Serial: serial})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.AddLU(0, lu); err != nil {
		t.Fatal(err)
	}
	return st
}

func startTargetWith(t *testing.T, cfg Config, mutate func(*Target)) (*Server, string) {
	t.Helper()
	st := newTestSCSITarget(t, testIQN, "test0")
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	srv := New(cfg)
	tgt := &Target{Name: testIQN, SCSI: st}
	if mutate != nil {
		mutate(tgt)
	}
	if err := srv.AddTarget(tgt); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(context.Background(), ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if n := srv.Panics(); n != 0 {
			t.Errorf("%d connection handlers panicked", n)
		}
	})
	return srv, ln.Addr().String()
}

func loggedIn(t *testing.T, addr string) *testInitiator {
	in := dialInitiator(t, addr)
	if st := in.login(loginOpts{initiator: testInitiator1, target: testIQN}); st != 0 {
		t.Fatalf("login status 0x%04x", st)
	}
	in.clearUnitAttention()
	return in
}

// clearUnitAttention issues TEST UNIT READY until the power-on unit
// attention every new I_T nexus starts with has been reported.
func (in *testInitiator) clearUnitAttention() {
	in.t.Helper()
	for i := 0; i < 5; i++ {
		st, sense, _ := in.command(0, []byte{0x00, 0, 0, 0, 0, 0}, nil, 0)
		if st == 0 {
			return
		}
		if len(sense) < 3 || sense[2]&0xf != 0x6 {
			in.t.Fatalf("TEST UNIT READY: status %#x sense %x", st, sense)
		}
	}
	in.t.Fatal("unit attention never cleared")
}

func rw10(op byte, lba uint32, blocks uint16) []byte {
	cdb := make([]byte, 10)
	cdb[0] = op
	binary.BigEndian.PutUint32(cdb[2:], lba)
	binary.BigEndian.PutUint16(cdb[7:], blocks)
	return cdb
}

func TestWriteReadThroughImmediateUnsolicitedAndR2T(t *testing.T) {
	_, addr := startTarget(t, nil)
	in := loggedIn(t, addr)
	// 1 MiB: 64 KiB immediate data (FirstBurstLength), the rest by R2T
	// in MaxBurstLength pieces.
	data := make([]byte, 1<<20)
	rand.Read(data)
	if st, sense, _ := in.command(0, rw10(0x2a, 100, 2048), data, 0); st != 0 {
		t.Fatalf("WRITE(10): status %#x sense %x", st, sense)
	}
	st, sense, got := in.command(0, rw10(0x28, 100, 2048), nil, 1<<20)
	if st != 0 {
		t.Fatalf("READ(10): status %#x sense %x", st, sense)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("read back differs from what was written")
	}
	in.logout()
}

func TestDataInRespectsInitiatorSegmentLength(t *testing.T) {
	_, addr := startTarget(t, nil)
	in := dialInitiator(t, addr)
	ops := []pdu.KV{{Key: "MaxRecvDataSegmentLength", Value: "512"}, {Key: "MaxBurstLength", Value: "4096"}}
	if st := in.login(loginOpts{initiator: testInitiator1, target: testIQN, ops: ops}); st != 0 {
		t.Fatalf("login 0x%04x", st)
	}
	in.clearUnitAttention()
	in.itt++
	m := pdu.SCSICommand{Final: true, Read: true, Attr: pdu.AttrSimple, ITT: in.itt, CmdSN: in.cmdSN,
		ExpectedDataTransferLength: 8192}
	in.cmdSN++
	copy(m.CDB[:], rw10(0x28, 0, 16))
	var p pdu.PDU
	m.Marshal(&p)
	in.sendPDU(&p)
	var sn uint32
	for {
		r := in.readPDU()
		d, err := pdu.ParseDataIn(&r.BHS)
		if err != nil {
			t.Fatalf("got %s", r.BHS.Opcode())
		}
		if len(r.Data) > 512 || d.DataSN != sn {
			t.Fatalf("Data-In of %d bytes, DataSN %d (want <=512, %d)", len(r.Data), d.DataSN, sn)
		}
		// A sequence ends (F=1) every MaxBurstLength bytes.
		if wantF := (d.BufferOffset+uint32(len(r.Data)))%4096 == 0; d.Final != wantF {
			t.Fatalf("F=%v at offset %d", d.Final, d.BufferOffset)
		}
		sn++
		if d.HasStatus {
			break
		}
	}
	if sn != 16 {
		t.Fatalf("%d Data-In PDUs, want 16", sn)
	}
}

func TestCHAPLogin(t *testing.T) {
	creds := &Credentials{User: "alice", Secret: "secret-of-alice"}
	mutual := &Credentials{User: "target", Secret: "secret-of-target"}
	_, addr := startTarget(t, func(tg *Target) { tg.CHAP, tg.MutualCHAP = creds, mutual })
	cases := []struct {
		name string
		o    loginOpts
		want uint16
	}{
		{"one-way", loginOpts{chapUser: "alice", chapSec: "secret-of-alice"}, 0},
		{"mutual", loginOpts{chapUser: "alice", chapSec: "secret-of-alice", mutualUser: "target", mutualSec: "secret-of-target"}, 0},
		{"wrong secret", loginOpts{chapUser: "alice", chapSec: "wrong-secret-xx"}, pdu.LoginAuthFailure},
		{"wrong user", loginOpts{chapUser: "mallory", chapSec: "secret-of-alice"}, pdu.LoginAuthFailure},
		{"no auth offered", loginOpts{}, pdu.LoginAuthFailure},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := dialInitiator(t, addr)
			c.o.initiator, c.o.target, c.o.isid = testInitiator1, testIQN, uint64(0x800000000100+i)
			if got := in.login(c.o); got != c.want {
				t.Fatalf("login status 0x%04x, want 0x%04x", got, c.want)
			}
		})
	}
}

// An initiator that does not accept the target's mutual CHAP answer just
// hangs up (iPXE, open-iscsi): the target says why, naming both ends, as
// the host's boot stops there. A hang-up anywhere else in the login stays
// quiet.
func TestMutualCHAPRefusedByInitiatorIsLogged(t *testing.T) {
	var logs lockedBuffer
	cfg := Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	_, addr := startTargetWith(t, cfg, func(tg *Target) {
		tg.CHAP = &Credentials{User: "alice", Secret: "secret-of-alice"}
		tg.MutualCHAP = &Credentials{User: "target", Secret: "secret-of-target"}
	})
	in := dialInitiator(t, addr)
	o := loginOpts{initiator: testInitiator1, target: testIQN, chapUser: "alice", chapSec: "secret-of-alice",
		mutualUser: "target", mutualSec: "the-secret-it-was-given", hangUpOnBadMutual: true}
	if got := in.login(o); got != statusHungUp {
		t.Fatalf("login status 0x%04x, want the initiator to hang up", got)
	}
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(logs.String(), "after the target's mutual CHAP answer"); {
		if time.Now().After(deadline) {
			t.Fatalf("no log line saying why the login ended:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if l := logs.String(); !strings.Contains(l, testInitiator1) || !strings.Contains(l, testIQN) || !strings.Contains(l, "level=WARN") {
		t.Errorf("the line does not name initiator and target as a warning:\n%s", l)
	}
	// Hanging up before any mutual answer: nothing to explain.
	logs.Reset()
	quiet := dialInitiator(t, addr)
	quiet.loginStep(pdu.StageSecurity, pdu.StageOperational, false,
		pdu.KV{Key: "InitiatorName", Value: testInitiator1}, pdu.KV{Key: "TargetName", Value: testIQN}, pdu.KV{Key: "AuthMethod", Value: "CHAP"})
	quiet.nc.Close()
	time.Sleep(200 * time.Millisecond)
	if strings.Contains(logs.String(), "mutual CHAP") {
		t.Errorf("a plain hang-up blamed on mutual CHAP:\n%s", logs.String())
	}
}

func TestLoginRefusals(t *testing.T) {
	_, addr := startTarget(t, func(tg *Target) { tg.AllowedInitiators = []string{"iqn.2026-11.org.example:only"} })
	in := dialInitiator(t, addr)
	if got := in.login(loginOpts{initiator: testInitiator1, target: testIQN}); got != pdu.LoginForbidden {
		t.Errorf("initiator not on the allow list: 0x%04x, want 0x%04x", got, pdu.LoginForbidden)
	}
	in = dialInitiator(t, addr)
	if got := in.login(loginOpts{initiator: testInitiator1, target: "iqn.2026-11.org.example:nope"}); got != pdu.LoginTargetNotFound {
		t.Errorf("unknown target: 0x%04x, want 0x%04x", got, pdu.LoginTargetNotFound)
	}
	in = dialInitiator(t, addr)
	if got := in.login(loginOpts{initiator: "iqn.2026-11.org.example:only", target: testIQN}); got != 0 {
		t.Errorf("allowed initiator: 0x%04x", got)
	}
}

func TestSendTargets(t *testing.T) {
	_, addr := startTarget(t, nil)
	in := dialInitiator(t, addr)
	if st := in.login(loginOpts{initiator: testInitiator1, discovery: true}); st != 0 {
		t.Fatalf("discovery login 0x%04x", st)
	}
	in.itt++
	m := pdu.TextRequest{Immediate: true, Final: true, ITT: in.itt, TTT: pdu.ReservedTag, CmdSN: in.cmdSN, ExpStatSN: in.expStatSN}
	var p pdu.PDU
	m.Marshal(&p.BHS)
	p.Data = pdu.AppendText(nil, pdu.KV{Key: "SendTargets", Value: "All"})
	in.sendPDU(&p)
	r := in.readPDU()
	kvs, err := pdu.ParseText(r.Data)
	if err != nil {
		t.Fatal(err)
	}
	want := []pdu.KV{{Key: "TargetName", Value: testIQN}, {Key: "TargetAddress", Value: addr + ",1"}}
	if len(kvs) != 2 || kvs[0] != want[0] || kvs[1] != want[1] {
		t.Fatalf("SendTargets=All answered %v, want %v", kvs, want)
	}
	// SCSI commands have no place in a discovery session.
	in.itt++
	c := pdu.SCSICommand{Final: true, ITT: in.itt, CmdSN: in.cmdSN}
	c.Marshal(&p)
	p.Data = nil
	in.sendPDU(&p)
	if r := in.readPDU(); r.BHS.Opcode() != pdu.OpReject {
		t.Fatalf("SCSI command in discovery: got %s, want Reject", r.BHS.Opcode())
	}
}

func TestSessionReinstatement(t *testing.T) {
	srv, addr := startTarget(t, nil)
	first := loggedIn(t, addr)
	second := loggedIn(t, addr) // same initiator name and ISID
	// The first connection is closed by the reinstatement.
	first.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := first.nc.Read(make([]byte, 1)); err == nil {
		t.Fatal("old connection still open after reinstatement")
	}
	if st, _, _ := second.command(0, []byte{0, 0, 0, 0, 0, 0}, nil, 0); st != 0 {
		t.Fatalf("new session TEST UNIT READY status %#x", st)
	}
	if n := srv.SessionCount(); n != 1 {
		t.Fatalf("%d sessions, want 1", n)
	}
}

// TestHostileInput sends what a broken or malicious client might: the
// target answers with Reject or closes that connection, never crashes,
// and a well-behaved session beside it carries on.
func TestHostileInput(t *testing.T) {
	srv, addr := startTarget(t, nil)
	good := loggedIn(t, addr)
	data := make([]byte, 64<<10)
	rand.Read(data)
	if st, _, _ := good.command(0, rw10(0x2a, 0, 128), data, 0); st != 0 {
		t.Fatal("write on the good session failed")
	}

	t.Run("garbage before login", func(t *testing.T) {
		in := dialInitiator(t, addr)
		junk := make([]byte, 4096)
		rand.Read(junk)
		junk[0] = 0x3c // not a Login Request
		in.nc.Write(junk)
		expectClosed(t, in.nc)
	})
	t.Run("oversized login segment", func(t *testing.T) {
		in := dialInitiator(t, addr)
		var h pdu.BHS
		(&pdu.LoginRequest{Transit: true, NSG: 1}).Marshal(&h)
		h[5], h[6], h[7] = 0xff, 0xff, 0xff // 16 MiB announced
		in.nc.Write(h[:])
		expectClosed(t, in.nc)
	})
	t.Run("oversized data segment after login", func(t *testing.T) {
		in := loggedInISID(t, addr, 0x800000000201)
		var h pdu.BHS
		(&pdu.NOPOut{ITT: 1, CmdSN: in.cmdSN}).Marshal(&h)
		h[5], h[6], h[7] = 0x7f, 0xff, 0xff
		in.nc.Write(h[:])
		expectRejectOrClose(t, in)
	})
	t.Run("unknown opcode", func(t *testing.T) {
		in := loggedInISID(t, addr, 0x800000000202)
		var p pdu.PDU
		p.BHS[0] = 0x1c
		p.BHS[1] = 0x80
		in.sendPDU(&p)
		r := in.readPDU()
		if r.BHS.Opcode() != pdu.OpReject || r.BHS[2] != pdu.RejectCmdNotSupported {
			t.Fatalf("got %s reason %#x, want Reject 0x05", r.BHS.Opcode(), r.BHS[2])
		}
		// The session still works afterwards.
		if st, _, _ := in.command(0, []byte{0, 0, 0, 0, 0, 0}, nil, 0); st != 0 {
			t.Fatalf("TEST UNIT READY after Reject: %#x", st)
		}
	})
	t.Run("CmdSN outside the window is ignored", func(t *testing.T) {
		in := loggedInISID(t, addr, 0x800000000203)
		saved := in.cmdSN
		in.cmdSN += 1000
		in.itt++
		m := pdu.SCSICommand{Final: true, ITT: in.itt, CmdSN: in.cmdSN}
		var p pdu.PDU
		m.Marshal(&p)
		in.sendPDU(&p)
		in.cmdSN = saved
		// The next in-window command is answered, the ignored one never.
		st, _, _ := in.command(0, []byte{0, 0, 0, 0, 0, 0}, nil, 0)
		if st != 0 {
			t.Fatalf("status %#x", st)
		}
		in.nc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		var q pdu.PDU
		if err := in.rd.ReadPDU(&q); err == nil {
			t.Fatalf("out-of-window command was answered: %s", q.BHS.Opcode())
		}
	})
	t.Run("Data-Out past the buffer", func(t *testing.T) {
		in := loggedInISID(t, addr, 0x800000000204)
		in.itt++
		m := pdu.SCSICommand{ITT: in.itt, CmdSN: in.cmdSN, Write: true, ExpectedDataTransferLength: 512}
		in.cmdSN++
		copy(m.CDB[:], rw10(0x2a, 0, 1))
		var p pdu.PDU
		m.Marshal(&p)
		in.sendPDU(&p)
		d := pdu.DataOut{Final: true, ITT: in.itt, TTT: pdu.ReservedTag, BufferOffset: 4096}
		var dp pdu.PDU
		d.Marshal(&dp.BHS)
		dp.Data = make([]byte, 512)
		in.sendPDU(&dp)
		expectRejectOrClose(t, in)
	})
	t.Run("huge transfer length", func(t *testing.T) {
		in := loggedInISID(t, addr, 0x800000000205)
		in.itt++
		m := pdu.SCSICommand{Final: true, ITT: in.itt, CmdSN: in.cmdSN, Read: true, ExpectedDataTransferLength: 0xffffffff}
		in.cmdSN++
		copy(m.CDB[:], rw10(0x28, 0, 0xffff))
		var p pdu.PDU
		m.Marshal(&p)
		in.sendPDU(&p)
		r := in.readPDU()
		resp, err := pdu.ParseSCSIResponse(&r.BHS)
		if err != nil || resp.Status != uint8(scsi.StatusCheckCondition) {
			t.Fatalf("got %s %+v, want CHECK CONDITION", r.BHS.Opcode(), resp)
		}
	})

	st, _, got := good.command(0, rw10(0x28, 0, 128), nil, 64<<10)
	if st != 0 || !bytes.Equal(got, data) {
		t.Fatalf("good session damaged: status %#x", st)
	}
	if srv.Panics() != 0 {
		t.Fatal("a handler panicked")
	}
}

func loggedInISID(t *testing.T, addr string, isid uint64) *testInitiator {
	in := dialInitiator(t, addr)
	if st := in.login(loginOpts{initiator: testInitiator1, target: testIQN, isid: isid}); st != 0 {
		t.Fatalf("login 0x%04x", st)
	}
	in.clearUnitAttention()
	return in
}

func expectClosed(t *testing.T, nc net.Conn) {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	for {
		_, err := nc.Read(buf)
		if err == io.EOF || (err != nil && strings.Contains(err.Error(), "reset")) {
			return
		}
		if err != nil {
			t.Fatalf("connection not closed: %v", err)
		}
	}
}

// expectRejectOrClose accepts a Reject PDU or a closed connection, the two
// answers RFC 7143 allows to a PDU that breaks the protocol.
func expectRejectOrClose(t *testing.T, in *testInitiator) {
	t.Helper()
	in.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		var p pdu.PDU
		err := in.rd.ReadPDU(&p)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("neither Reject nor close")
			}
			return
		}
		if p.BHS.Opcode() == pdu.OpReject {
			return
		}
	}
}

// testLogWriter sends the target's logs to the test log.
type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// TestConnectionLossCleansUp drops the connection while a write waits for
// its data: the session, its tasks and its goroutines must all go away.
func TestConnectionLossCleansUp(t *testing.T) {
	srv, addr := startTarget(t, nil)
	before := runtime.NumGoroutine()
	in := loggedIn(t, addr)
	in.itt++
	m := pdu.SCSICommand{Final: true, Write: true, ITT: in.itt, CmdSN: in.cmdSN, ExpectedDataTransferLength: 1 << 20}
	in.cmdSN++
	copy(m.CDB[:], rw10(0x2a, 0, 2048))
	var p pdu.PDU
	m.Marshal(&p)
	in.sendPDU(&p)
	if r := in.readPDU(); r.BHS.Opcode() != pdu.OpR2T {
		t.Fatalf("got %s, want R2T", r.BHS.Opcode())
	}
	in.nc.Close()
	deadline := time.Now().Add(5 * time.Second)
	for srv.SessionCount() != 0 || runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions, %d goroutines (had %d) after the connection dropped",
				srv.SessionCount(), runtime.NumGoroutine(), before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNOPInPing: with pings on, an idle connection gets NOP-In pings; one
// that answers stays, one that stops answering is dropped.
func TestNOPInPing(t *testing.T) {
	srv, addr := startTargetWith(t, Config{NOPInterval: 100 * time.Millisecond}, nil)
	in := loggedIn(t, addr)
	for i := 0; i < 2; i++ {
		r := in.readPDU()
		ping, err := pdu.ParseNOPIn(&r.BHS)
		if err != nil || ping.ITT != pdu.ReservedTag || ping.TTT == pdu.ReservedTag {
			t.Fatalf("got %s %+v, want a NOP-In ping", r.BHS.Opcode(), ping)
		}
		var p pdu.PDU
		(&pdu.NOPOut{Immediate: true, ITT: pdu.ReservedTag, TTT: ping.TTT, CmdSN: in.cmdSN, ExpStatSN: in.expStatSN}).Marshal(&p.BHS)
		in.sendPDU(&p)
	}
	if srv.SessionCount() != 1 {
		t.Fatal("answering session was dropped")
	}
	// Now stay silent: the target gives up on us.
	in.readPDU()
	expectClosed(t, in.nc)
}

// TestMemoryBudget: a command whose buffer would exceed the session budget
// is answered TASK SET FULL instead of being allocated.
func TestMemoryBudget(t *testing.T) {
	_, addr := startTargetWith(t, Config{SessionMemory: 64 << 10}, nil)
	in := loggedIn(t, addr)
	if st, _, _ := in.command(0, rw10(0x28, 0, 128), nil, 64<<10); st != 0 {
		t.Fatalf("read within the budget: status %#x", st)
	}
	if st, _, _ := in.command(0, rw10(0x28, 0, 256), nil, 128<<10); st != uint8(scsi.StatusTaskSetFull) {
		t.Fatalf("read over the budget: status %#x, want TASK SET FULL", st)
	}
}

func TestTaskManagementInDiscoveryRejected(t *testing.T) {
	_, addr := startTarget(t, nil)
	in := dialInitiator(t, addr)
	if st := in.login(loginOpts{initiator: testInitiator1, discovery: true}); st != 0 {
		t.Fatalf("discovery login 0x%04x", st)
	}
	var p pdu.PDU
	(&pdu.TaskMgmtRequest{Immediate: true, Function: pdu.TMFLogicalUnitReset, ITT: 9, CmdSN: in.cmdSN}).Marshal(&p.BHS)
	in.sendPDU(&p)
	if r := in.readPDU(); r.BHS.Opcode() != pdu.OpReject {
		t.Fatalf("got %s, want Reject", r.BHS.Opcode())
	}
}

// TestDigests runs writes and reads with CRC32C header and data digests,
// and checks that a corrupted data digest is answered with a Reject.
func TestDigests(t *testing.T) {
	_, addr := startTarget(t, nil)
	in := dialInitiator(t, addr)
	ops := []pdu.KV{{Key: "HeaderDigest", Value: "CRC32C,None"}, {Key: "DataDigest", Value: "CRC32C,None"},
		{Key: "MaxRecvDataSegmentLength", Value: "65536"}, {Key: "ImmediateData", Value: "Yes"},
		{Key: "InitialR2T", Value: "No"}, {Key: "FirstBurstLength", Value: "16384"}}
	if st := in.login(loginOpts{initiator: testInitiator1, target: testIQN, ops: ops}); st != 0 {
		t.Fatalf("login 0x%04x", st)
	}
	if !in.headerDigest || !in.dataDigest {
		t.Fatalf("digests not negotiated: %v", in.keys)
	}
	in.clearUnitAttention()
	data := make([]byte, 256<<10)
	rand.Read(data)
	if st, sense, _ := in.command(0, rw10(0x2a, 8, 512), data, 0); st != 0 {
		t.Fatalf("WRITE with digests: %#x %x", st, sense)
	}
	st, _, got := in.command(0, rw10(0x28, 8, 512), nil, 256<<10)
	if st != 0 || !bytes.Equal(got, data) {
		t.Fatalf("READ with digests: status %#x, equal %v", st, bytes.Equal(got, data))
	}
	// A NOP-Out whose data digest is wrong: the target rejects it and
	// the connection stays usable (RFC 7143 7.8).
	var p pdu.PDU
	(&pdu.NOPOut{Immediate: true, ITT: 99, TTT: pdu.ReservedTag, CmdSN: in.cmdSN}).Marshal(&p.BHS)
	p.Data = []byte("ping")
	var wire bytes.Buffer
	p.WriteTo(&wire, true, true)
	b := wire.Bytes()
	b[len(b)-1] ^= 0xff
	in.nc.Write(b)
	r := in.readPDU()
	if r.BHS.Opcode() != pdu.OpReject || r.BHS[2] != pdu.RejectDataDigestError {
		t.Fatalf("got %s reason %#x, want Reject 0x02", r.BHS.Opcode(), r.BHS[2])
	}
	if st, _, _ := in.command(0, []byte{0, 0, 0, 0, 0, 0}, nil, 0); st != 0 {
		t.Fatalf("TEST UNIT READY after the digest error: %#x", st)
	}
}
