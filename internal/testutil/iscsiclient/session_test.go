package iscsiclient

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/disk"
	"github.com/diskless-boot/diskless/internal/iscsi"
	"github.com/diskless-boot/diskless/internal/iscsi/pdu"
	"github.com/diskless-boot/diskless/internal/scsi"
)

const (
	iqn1      = "iqn.2026-11.org.example:disk1"
	iqn2      = "iqn.2026-11.org.example:disk2"
	iqn3      = "iqn.2026-11.org.example:disk3"
	hostA     = "iqn.2026-11.org.example:host-a"
	hostB     = "iqn.2026-11.org.example:host-b"
	diskBytes = 32 << 20
)

// targetSpec is one target of a test server, with one LU on a sparse
// temporary image.
type targetSpec struct {
	name     string
	readOnly bool
	chap     *iscsi.Credentials
	mutual   *iscsi.Credentials
	allowed  []string
}

// testServer is an in-process diskless target on 127.0.0.1.
type testServer struct {
	addr   string
	srv    *iscsi.Server
	images map[string]string // target name -> image path
}

func startServer(t testing.TB, cfg iscsi.Config, specs ...targetSpec) *testServer {
	t.Helper()
	ts := &testServer{srv: iscsi.New(cfg), images: map[string]string{}}
	for _, sp := range specs {
		path := filepath.Join(t.TempDir(), "disk.img")
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, diskBytes); err != nil {
			t.Fatal(err)
		}
		dev, err := disk.OpenFile(path, sp.readOnly)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { dev.Close() })
		st := scsi.NewTarget(scsi.TargetConfig{Name: sp.name})
		lu, err := scsi.NewLogicalUnit(dev, scsi.LUConfig{Serial: "test", ReadOnly: sp.readOnly})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.AddLU(0, lu); err != nil {
			t.Fatal(err)
		}
		if err := ts.srv.AddTarget(&iscsi.Target{Name: sp.name, SCSI: st, CHAP: sp.chap, MutualCHAP: sp.mutual, AllowedInitiators: sp.allowed}); err != nil {
			t.Fatal(err)
		}
		ts.images[sp.name] = path
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = ln.Addr().String()
	served := make(chan struct{})
	go func() {
		defer close(served)
		ts.srv.Serve(context.Background(), ln)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := ts.srv.Shutdown(ctx); err != nil {
			t.Errorf("target shutdown: %v", err)
		}
		<-served
		if n := ts.srv.Panics(); n != 0 {
			t.Errorf("%d target connection handlers panicked", n)
		}
	})
	return ts
}

// image returns the bytes of the image of target name at off.
func (ts *testServer) image(t *testing.T, name string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(ts.images[name])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func dial(t testing.TB, cfg Config) *Session {
	t.Helper()
	s, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// checkNoSessionGoroutines fails t when a goroutine a Session started
// (the reader, a ping answer) is still running.
func checkNoSessionGoroutines(t *testing.T) {
	t.Helper()
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "created by github.com/diskless-boot/diskless/internal/testutil/iscsiclient.Dial") ||
			strings.Contains(g, "created by github.com/diskless-boot/diskless/internal/testutil/iscsiclient.(*Session)") {
			t.Errorf("session goroutine still running:\n%s", g)
		}
	}
}

func TestLoginAndIdentify(t *testing.T) {
	ts := startServer(t, iscsi.Config{}, targetSpec{name: iqn1})
	for _, hd := range []bool{false, true} {
		t.Run(fmt.Sprintf("HeaderDigest=%v", hd), func(t *testing.T) {
			s := dial(t, Config{Addr: ts.addr, Initiator: hostA, Target: iqn1, HeaderDigest: hd})
			if s.neg.headerDigest != hd {
				t.Errorf("header digest in force: %v", s.neg.headerDigest)
			}
			// The first command meets the power-on unit attention of a
			// new I_T nexus and is sent again.
			if err := s.TestUnitReady(); err != nil {
				t.Fatal(err)
			}
			blocks, bs, err := s.ReadCapacity()
			if err != nil || blocks != diskBytes/512 || bs != 512 {
				t.Fatalf("READ CAPACITY: %d blocks of %d bytes, %v", blocks, bs, err)
			}
			inq, err := s.Inquiry()
			if err != nil || inq.Vendor != "DISKLESS" || inq.PeripheralType != 0 {
				t.Fatalf("INQUIRY: %+v %v", inq, err)
			}
			luns, err := s.ReportLUNs()
			if err != nil || !slices.Equal(luns, []uint64{0}) {
				t.Fatalf("REPORT LUNS: %v %v", luns, err)
			}
			// The previous subtest's session may still be ending on the
			// target side.
			waitSessions(t, ts.srv, 1)
			if err := s.Logout(); err != nil {
				t.Fatal(err)
			}
			waitSessions(t, ts.srv, 0)
			if err := s.TestUnitReady(); !errors.Is(err, ErrLoggedOut) {
				t.Errorf("command after logout: %v", err)
			}
			s.Close()
			checkNoSessionGoroutines(t)
		})
	}
}

// waitSessions waits until the target counts n sessions.
func waitSessions(t *testing.T, srv *iscsi.Server, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); srv.SessionCount() != n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("target counts %d sessions, want %d", srv.SessionCount(), n)
		}
	}
}

func TestUnitAttentionReportedWhenAsked(t *testing.T) {
	ts := startServer(t, iscsi.Config{}, targetSpec{name: iqn1})
	s := dial(t, Config{Addr: ts.addr, Initiator: hostA, Target: iqn1, ReportUnitAttention: true})
	var se *SCSIError
	if err := s.TestUnitReady(); !errors.As(err, &se) || se.SenseKey != SenseUnitAttention || se.ASC != 0x29 {
		t.Fatalf("first command of a new nexus: %v, want UNIT ATTENTION 29h", err)
	}
	if err := s.TestUnitReady(); err != nil {
		t.Fatal(err)
	}
}

func TestCHAP(t *testing.T) {
	initiator := iscsi.Credentials{User: "host-a", Secret: "initiator-secret"}
	target := iscsi.Credentials{User: "disk2", Secret: "target-secret-2"}
	ts := startServer(t, iscsi.Config{},
		targetSpec{name: iqn1, chap: &initiator},
		targetSpec{name: iqn2, chap: &initiator, mutual: &target},
		targetSpec{name: iqn3})
	ok := []struct {
		name string
		cfg  Config
	}{
		{"one-way", Config{Target: iqn1, CHAPUser: "host-a", CHAPSecret: "initiator-secret"}},
		{"mutual", Config{Target: iqn2, CHAPUser: "host-a", CHAPSecret: "initiator-secret", MutualUser: "disk2", MutualSecret: "target-secret-2"}},
	}
	for _, c := range ok {
		t.Run(c.name, func(t *testing.T) {
			c.cfg.Addr, c.cfg.Initiator = ts.addr, hostA
			s := dial(t, c.cfg)
			if err := s.TestUnitReady(); err != nil {
				t.Fatal(err)
			}
			if err := s.Logout(); err != nil {
				t.Fatal(err)
			}
		})
	}
	var le *LoginError
	refused := []struct {
		name   string
		cfg    Config
		status uint16
	}{
		{"wrong secret", Config{Target: iqn1, CHAPUser: "host-a", CHAPSecret: "not-the-secret"}, pdu.LoginAuthFailure},
		{"wrong user", Config{Target: iqn1, CHAPUser: "host-b", CHAPSecret: "initiator-secret"}, pdu.LoginAuthFailure},
		{"no CHAP", Config{Target: iqn1}, pdu.LoginAuthFailure},
		{"mutual from a one-way target", Config{Target: iqn1, CHAPUser: "host-a", CHAPSecret: "initiator-secret", MutualSecret: "x-secret-123456"}, pdu.LoginAuthFailure},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			c.cfg.Addr, c.cfg.Initiator = ts.addr, hostA
			_, err := Dial(context.Background(), c.cfg)
			if !errors.As(err, &le) || le.Status() != c.status {
				t.Fatalf("login: %v, want status %#04x", err, c.status)
			}
			if strings.Contains(err.Error(), c.cfg.CHAPSecret) && c.cfg.CHAPSecret != "" {
				t.Errorf("error shows the secret: %v", err)
			}
		})
	}
	t.Run("credentials for a target without CHAP", func(t *testing.T) {
		s := dial(t, Config{Addr: ts.addr, Initiator: hostA, Target: iqn3, CHAPUser: "host-a", CHAPSecret: "initiator-secret"})
		if err := s.TestUnitReady(); err != nil {
			t.Fatal(err)
		}
		names, err := Discover(context.Background(), Config{Addr: ts.addr, Initiator: hostA, CHAPUser: "host-a", CHAPSecret: "initiator-secret"})
		if err != nil || len(names) != 3 {
			t.Fatalf("discovery with credentials: %q %v", names, err)
		}
		_, err = Dial(context.Background(), Config{Addr: ts.addr, Initiator: hostA, Target: iqn3,
			CHAPUser: "host-a", CHAPSecret: "initiator-secret", MutualSecret: "target-secret-2"})
		var le *LoginError
		if !errors.As(err, &le) || le.Status() != pdu.LoginAuthFailure {
			t.Fatalf("mutual CHAP with a target without CHAP: %v, want authentication failure", err)
		}
	})
	t.Run("target proves the wrong secret", func(t *testing.T) {
		_, err := Dial(context.Background(), Config{Addr: ts.addr, Initiator: hostA, Target: iqn2,
			CHAPUser: "host-a", CHAPSecret: "initiator-secret", MutualSecret: "what-we-expected"})
		if !errors.Is(err, ErrMutualAuth) {
			t.Fatalf("login: %v, want ErrMutualAuth", err)
		}
	})
	t.Run("target answers with another name", func(t *testing.T) {
		_, err := Dial(context.Background(), Config{Addr: ts.addr, Initiator: hostA, Target: iqn2,
			CHAPUser: "host-a", CHAPSecret: "initiator-secret", MutualUser: "disk9", MutualSecret: "target-secret-2"})
		if !errors.Is(err, ErrMutualAuth) {
			t.Fatalf("login: %v, want ErrMutualAuth", err)
		}
	})
	checkNoSessionGoroutines(t)
}

func TestAccessControlAndDiscovery(t *testing.T) {
	ts := startServer(t, iscsi.Config{},
		targetSpec{name: iqn1, allowed: []string{hostA}},
		targetSpec{name: iqn2, allowed: []string{hostB}},
		targetSpec{name: iqn3})
	var le *LoginError
	if _, err := Dial(context.Background(), Config{Addr: ts.addr, Initiator: hostB, Target: iqn1}); !errors.As(err, &le) || le.Status() != pdu.LoginForbidden {
		t.Errorf("host B into host A's target: %v, want authorization failure", err)
	}
	if _, err := Dial(context.Background(), Config{Addr: ts.addr, Initiator: hostA, Target: "iqn.2026-11.org.example:nope"}); !errors.As(err, &le) || le.Status() != pdu.LoginTargetNotFound {
		t.Errorf("unknown target: %v, want not found", err)
	}
	s := dial(t, Config{Addr: ts.addr, Initiator: hostA, Target: iqn1})
	if err := s.TestUnitReady(); err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string][]string{hostA: {iqn1, iqn3}, hostB: {iqn2, iqn3}} {
		got, err := Discover(context.Background(), Config{Addr: ts.addr, Initiator: host})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s discovers %q, want %q", host, got, want)
		}
	}
}

// A SendTargets answer longer than our MaxRecvDataSegmentLength comes in
// several Text Responses, fetched with continuation requests.
func TestDiscoveryContinuation(t *testing.T) {
	ts := startServer(t, iscsi.Config{})
	st := scsi.NewTarget(scsi.TargetConfig{})
	var want []string
	for i := range 1200 {
		name := fmt.Sprintf("iqn.2026-11.org.example:%s-%04d", strings.Repeat("x", 200), i)
		if err := ts.srv.AddTarget(&iscsi.Target{Name: name, SCSI: st}); err != nil {
			t.Fatal(err)
		}
		want = append(want, name)
	}
	got, err := Discover(context.Background(), Config{Addr: ts.addr, Initiator: hostA})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("discovered %d targets, want %d", len(got), len(want))
	}
}

// Write and read back sizes from one block to 8 MiB, across the target's
// segment length, FirstBurstLength and MaxBurstLength, under each way of
// sending write data the target can negotiate.
func TestWriteReadRoundTrip(t *testing.T) {
	sizes := []int{512, 4096, 8192 + 512, 65536 - 512, 65536, 65536 + 512, 262144, 262144 + 4096, 1 << 20, 8 << 20}
	modes := []struct {
		name          string
		limits        func(*iscsi.Limits)
		immediate     bool
		initialR2T    bool
		sendSeg       uint32
		headerDigests bool
	}{
		{"immediate data", nil, true, false, 256 << 10, false},
		{"immediate and unsolicited Data-Out", func(l *iscsi.Limits) { l.MaxRecvDataSegmentLength = 8192 }, true, false, 8192, false},
		{"unsolicited Data-Out only", func(l *iscsi.Limits) { l.ImmediateData = false; l.MaxRecvDataSegmentLength = 16384 }, false, false, 16384, false},
		{"immediate data and R2T", func(l *iscsi.Limits) { l.InitialR2T = true }, true, true, 256 << 10, false},
		{"R2T only, header digests", func(l *iscsi.Limits) { l.InitialR2T = true; l.ImmediateData = false; l.MaxRecvDataSegmentLength = 4096 }, false, true, 4096, true},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			lim := iscsi.DefaultLimits()
			if m.limits != nil {
				m.limits(&lim)
			}
			ts := startServer(t, iscsi.Config{Limits: &lim}, targetSpec{name: iqn1})
			s := dial(t, Config{Addr: ts.addr, Initiator: hostA, Target: iqn1, HeaderDigest: m.headerDigests})
			if s.neg.immediateData != m.immediate || s.neg.initialR2T != m.initialR2T || s.neg.sendSeg != m.sendSeg {
				t.Fatalf("negotiated %+v", s.neg)
			}
			fill := rand.NewChaCha8([32]byte{1})
			lba := uint64(7)
			for _, n := range sizes {
				data := make([]byte, n)
				fill.Read(data)
				if err := s.Write(lba, data, n%2 == 0); err != nil {
					t.Fatalf("write %d bytes: %v", n, err)
				}
				if got := ts.image(t, iqn1, int64(lba)*512, n); !bytes.Equal(got, data) {
					t.Fatalf("%d bytes written at lba %d: the image differs", n, lba)
				}
				got := make([]byte, n)
				if err := s.Read(lba, got); err != nil {
					t.Fatalf("read %d bytes: %v", n, err)
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("%d bytes read back differ", n)
				}
				lba += uint64(n/512) + 3
			}
		})
	}
}

// Sixteen goroutines write and read at once on one session, directly and
// through a proxy that keeps the CmdSN window at two commands: a command
// sent outside the window fails the test.
func TestConcurrentCommandsRespectTheWindow(t *testing.T) {
	for _, window := range []uint32{0, 2} {
		t.Run(fmt.Sprintf("window %d", window), func(t *testing.T) {
			ts := startServer(t, iscsi.Config{}, targetSpec{name: iqn1})
			addr := ts.addr
			var wp *windowProxy
			if window > 0 {
				wp = newWindowProxy(t, ts.addr, window)
				addr = wp.addr
			}
			s := dial(t, Config{Addr: addr, Initiator: hostA, Target: iqn1})
			if _, _, err := s.ReadCapacity(); err != nil {
				t.Fatal(err)
			}
			const workers, rounds, slot = 16, 16, 1 << 20 // each worker owns a 1 MiB slot
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for w := range workers {
				wg.Go(func() {
					fill := rand.NewChaCha8([32]byte{byte(w)})
					r := rand.New(fill)
					base := uint64(w * slot / 512)
					for i := range rounds {
						n := (1 + r.IntN(512)) * 512 // up to 256 KiB
						if i%4 == 3 {
							n = slot
						}
						data := make([]byte, n)
						fill.Read(data)
						lba := base + uint64(r.IntN((slot-n)/512+1))
						if err := s.Write(lba, data, false); err != nil {
							errs <- err
							return
						}
						if err := s.SyncCache(); err != nil {
							errs <- err
							return
						}
						got := make([]byte, n)
						if err := s.Read(lba, got); err != nil {
							errs <- err
							return
						}
						if !bytes.Equal(got, data) {
							errs <- fmt.Errorf("worker %d round %d: %d bytes at lba %d read back differ", w, i, n, lba)
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if wp != nil {
				wp.mu.Lock()
				defer wp.mu.Unlock()
				for _, v := range wp.violations {
					t.Error(v)
				}
				if wp.full == 0 {
					t.Error("no command ever filled the window: the test did not exercise it")
				}
			}
		})
	}
}

// windowProxy forwards sessions to a target, PDU by PDU, offering the
// initiator a CmdSN window of size commands past the target's ExpCmdSN
// (RFC 7143 4.2.2.1), and records the commands sent outside it. Header
// digests must be off: it rewrites MaxCmdSN.
type windowProxy struct {
	addr string
	size uint32

	mu         sync.Mutex
	maxSent    uint32 // the highest MaxCmdSN forwarded to the initiator
	full       int    // commands that took the last slot of the window
	violations []string
}

func newWindowProxy(t *testing.T, target string, size uint32) *windowProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &windowProxy{addr: ln.Addr().String(), size: size}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	forward := func(dst, src net.Conn, edit func(*pdu.PDU)) {
		defer dst.Close()
		rd := pdu.Reader{R: bufio.NewReader(src), MaxData: 1 << 24}
		var q pdu.PDU
		for rd.ReadPDU(&q) == nil {
			edit(&q)
			if q.WriteTo(dst, false, false) != nil {
				return
			}
		}
	}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, up)
			mu.Unlock()
			wg.Go(func() { forward(up, c, p.check) })
			wg.Go(func() { forward(c, up, p.shrink) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return p
}

// shrink lowers the MaxCmdSN of a target PDU (bytes 32-35; ExpCmdSN is at
// 28-31 in every target PDU).
func (p *windowProxy) shrink(q *pdu.PDU) {
	h := q.BHS[:]
	exp, max := binary.BigEndian.Uint32(h[28:]), binary.BigEndian.Uint32(h[32:])
	if m := exp + p.size - 1; snLess(m, max) {
		max = m
		binary.BigEndian.PutUint32(h[32:], max)
	}
	p.mu.Lock()
	if snLess(p.maxSent, max) || p.maxSent == 0 {
		p.maxSent = max
	}
	p.mu.Unlock()
}

// check records a non-immediate command past the window offered so far.
func (p *windowProxy) check(q *pdu.PDU) {
	switch q.BHS.Opcode() {
	case pdu.OpSCSICommand, pdu.OpNOPOut, pdu.OpTaskMgmtReq, pdu.OpTextReq, pdu.OpLogoutReq:
	default:
		return
	}
	if q.BHS.Immediate() {
		return
	}
	cmdSN := binary.BigEndian.Uint32(q.BHS[24:])
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case snLess(p.maxSent, cmdSN):
		p.violations = append(p.violations, fmt.Sprintf("%s with CmdSN %d past MaxCmdSN %d", q.BHS.Opcode(), cmdSN, p.maxSent))
	case cmdSN == p.maxSent:
		p.full++
	}
}

func TestWriteToReadOnlyLU(t *testing.T) {
	ts := startServer(t, iscsi.Config{}, targetSpec{name: iqn1, readOnly: true})
	s := dial(t, Config{Addr: ts.addr, Initiator: hostA, Target: iqn1})
	err := s.Write(0, make([]byte, 4096), false)
	var se *SCSIError
	if !errors.As(err, &se) || se.Status != StatusCheckCondition || se.SenseKey != SenseDataProtect || se.ASC != 0x27 || se.ASCQ != 0 {
		t.Fatalf("write to a read-only LU: %v, want DATA PROTECT, WRITE PROTECTED", err)
	}
	if err := s.Read(0, make([]byte, 4096)); err != nil {
		t.Fatalf("read after the refused write: %v", err)
	}
}

func TestSenseFormats(t *testing.T) {
	fixed := []byte{0x70, 0, 0x07, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x27, 0x07, 0, 0, 0, 0}
	desc := []byte{0x72, 0x05, 0x24, 0x00, 0, 0, 0, 0}
	for _, c := range []struct {
		sense        []byte
		key, asc, aq uint8
	}{{fixed, 7, 0x27, 0x07}, {desc, 5, 0x24, 0}, {fixed[:3], 7, 0, 0}, {nil, 0, 0, 0}} {
		e := scsiError(StatusCheckCondition, c.sense)
		if e.SenseKey != c.key || e.ASC != c.asc || e.ASCQ != c.aq {
			t.Errorf("sense %x: %+v", c.sense, e)
		}
	}
}

// stallProxy forwards connections to a target; after stall, nothing more
// reaches the initiator, and cut ends every connection.
type stallProxy struct {
	addr    string
	stalled chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	conns   []net.Conn
	once    sync.Once
}

func newStallProxy(t *testing.T, target string) *stallProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{addr: ln.Addr().String(), stalled: make(chan struct{}), done: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			wg.Go(func() { io.Copy(up, c); up.Close() })
			wg.Go(func() {
				buf := make([]byte, 64<<10)
				for {
					n, err := up.Read(buf)
					select {
					case <-p.stalled:
						<-p.done
						return
					default:
					}
					if n > 0 {
						c.Write(buf[:n])
					}
					if err != nil {
						c.Close()
						return
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		close(p.done)
		ln.Close()
		p.cut()
		wg.Wait()
	})
	return p
}

func (p *stallProxy) stall() { p.once.Do(func() { close(p.stalled) }) }

func (p *stallProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

// pending waits until the session has n commands outstanding.
func pending(t *testing.T, s *Session, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		s.mu.Lock()
		got := len(s.tasks)
		s.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d commands outstanding, want %d", got, n)
		}
		runtime.Gosched()
	}
}

// startPending starts reads and writes on s and returns their errors.
func startPending(s *Session, n int) (chan error, *sync.WaitGroup) {
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			buf := make([]byte, 1<<20)
			if i%2 == 0 {
				errs <- s.Read(uint64(i)*2048, buf)
			} else {
				errs <- s.Write(uint64(i)*2048, buf, false)
			}
		})
	}
	return errs, &wg
}

func TestClosePendingCommands(t *testing.T) {
	ts := startServer(t, iscsi.Config{}, targetSpec{name: iqn1})
	px := newStallProxy(t, ts.addr)
	s := dial(t, Config{Addr: px.addr, Initiator: hostA, Target: iqn1})
	if _, _, err := s.ReadCapacity(); err != nil {
		t.Fatal(err)
	}
	px.stall()
	errs, wg := startPending(s, 8)
	pending(t, s, 8)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkNoSessionGoroutines(t)
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("command pending at Close: %v, want ErrClosed", err)
		}
	}
	if err := s.TestUnitReady(); !errors.Is(err, ErrClosed) {
		t.Errorf("command after Close: %v", err)
	}
	s.Close() // idempotent
	checkNoSessionGoroutines(t)
}

func TestConnectionLossFailsPendingCommands(t *testing.T) {
	ts := startServer(t, iscsi.Config{}, targetSpec{name: iqn1})
	px := newStallProxy(t, ts.addr)
	s := dial(t, Config{Addr: px.addr, Initiator: hostA, Target: iqn1})
	if _, _, err := s.ReadCapacity(); err != nil {
		t.Fatal(err)
	}
	px.stall()
	errs, wg := startPending(s, 6)
	pending(t, s, 6)
	px.cut()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err == nil || errors.Is(err, ErrClosed) || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed)) {
			t.Errorf("command pending when the connection broke: %v, want the cause", err)
		}
	}
	s.Close()
	checkNoSessionGoroutines(t)
}

func TestCommandTimeoutEndsSession(t *testing.T) {
	ts := startServer(t, iscsi.Config{}, targetSpec{name: iqn1})
	px := newStallProxy(t, ts.addr)
	s := dial(t, Config{Addr: px.addr, Initiator: hostA, Target: iqn1, Timeout: 300 * time.Millisecond})
	if _, _, err := s.ReadCapacity(); err != nil {
		t.Fatal(err)
	}
	px.stall()
	errs, wg := startPending(s, 4)
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("command without answer: %v, want a deadline error", err)
		}
	}
	s.Close()
	checkNoSessionGoroutines(t)
}

func TestDialHonoursContextAndTimeout(t *testing.T) {
	// A listener that accepts and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	_, err = Dial(context.Background(), Config{Addr: ln.Addr().String(), Initiator: hostA, Target: iqn1, Timeout: 200 * time.Millisecond})
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("silent target: %v, want a deadline error", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err = Dial(ctx, Config{Addr: ln.Addr().String(), Initiator: hostA, Target: iqn1})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled login: %v", err)
	}
}
