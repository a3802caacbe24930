package tftp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := checkNoLeaks(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// checkNoLeaks fails when a server or transfer goroutine outlives the tests.
func checkNoLeaks() error {
	var stacks string
	for range 100 {
		buf := make([]byte, 1<<20)
		stacks = string(buf[:runtime.Stack(buf, true)])
		if !strings.Contains(stacks, "tftp.(*Server).") && !strings.Contains(stacks, "tftp.(*transfer).") {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("leaked goroutines:\n%s", stacks)
}

type testServer struct {
	*Server
	addr *net.UDPAddr
	dir  string

	mu    sync.Mutex
	infos []TransferInfo
}

func (ts *testServer) transfers() []TransferInfo {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]TransferInfo(nil), ts.infos...)
}

// waitStats polls until cond holds for the server's stats (transfers end
// asynchronously to the client's last packet).
func (ts *testServer) waitStats(t *testing.T, what string, cond func(Stats) bool) Stats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := ts.Stats()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats never satisfied %s: %+v", what, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// startServer serves a temporary directory (cfg.Dir, unless set) on
// 127.0.0.1 and shuts the server down when the test ends.
func startServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	ts := &testServer{}
	if cfg.Dir == "" && cfg.FS == nil {
		cfg.Dir = t.TempDir()
	}
	ts.dir = cfg.Dir
	user := cfg.OnTransfer
	cfg.OnTransfer = func(ti TransferInfo) {
		ts.mu.Lock()
		ts.infos = append(ts.infos, ti)
		ts.mu.Unlock()
		if user != nil {
			user(ti)
		}
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background(), conn) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		if p := s.Stats().Panics; p != 0 {
			t.Errorf("%d transfers panicked", p)
		}
	})
	ts.Server = s
	ts.addr = conn.LocalAddr().(*net.UDPAddr)
	return ts
}

func opts(kv ...string) []Option {
	var o []Option
	for i := 0; i+1 < len(kv); i += 2 {
		o = append(o, Option{kv[i], kv[i+1]})
	}
	return o
}

func TestGetBlockAndWindowSizes(t *testing.T) {
	ts := startServer(t, Config{MaxBlockSize: MaxBlockSize, Timeout: cleanLinkTimeout})
	sizes := []int{0, 1, 511, 512, 513, 8192, 3 * 1468, 100_000}
	files := map[int][]byte{}
	for i, n := range sizes {
		b, err := writeFile(ts.dir, fmt.Sprintf("f%d", n), n, uint64(i))
		if err != nil {
			t.Fatal(err)
		}
		files[n] = b
	}
	for _, blk := range []int{0, 512, 1468, 8192} {
		for _, win := range []int{0, 1, 4, 16} {
			for _, n := range sizes {
				name := fmt.Sprintf("blksize=%d/windowsize=%d/size=%d", blk, win, n)
				t.Run(name, func(t *testing.T) {
					var o []Option
					if blk != 0 {
						o = append(o, Option{"blksize", strconv.Itoa(blk)})
					}
					if win != 0 {
						o = append(o, Option{"windowsize", strconv.Itoa(win)})
					}
					o = append(o, Option{"tsize", "0"})
					res, err := tftpGet(ts.addr, fmt.Sprintf("f%d", n), getOpts{Options: o})
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(res.Data, files[n]) {
						t.Fatalf("got %d bytes, want %d (content differs: %v)", len(res.Data), n, len(res.Data) == n)
					}
					if got := res.OACK["tsize"]; got != strconv.Itoa(n) {
						t.Errorf("tsize %q, want %d", got, n)
					}
					wantBlk := max(blk, DefaultBlockSize)
					if blk != 0 && res.OACK["blksize"] != strconv.Itoa(wantBlk) {
						t.Errorf("blksize %q, want %d", res.OACK["blksize"], wantBlk)
					}
					if win != 0 && res.OACK["windowsize"] != strconv.Itoa(win) {
						t.Errorf("windowsize %q, want %d", res.OACK["windowsize"], win)
					}
					if want := n/wantBlk + 1; res.DataPkts != want || res.Stale != 0 {
						t.Errorf("%d DATA packets (%d stale), want %d: no retransmission on a clean link", res.DataPkts, res.Stale, want)
					}
				})
			}
		}
	}
	st := ts.waitStats(t, "all completed", func(s Stats) bool { return s.Completed == s.Requests })
	if st.Retransmits != 0 || st.Failed != 0 || st.TimedOut != 0 {
		t.Errorf("clean link: %+v", st)
	}
}

func TestDefaultBlockSizeCap(t *testing.T) {
	ts := startServer(t, Config{})
	want, _ := writeFile(ts.dir, "f", 20000, 1)
	res, err := tftpGet(ts.addr, "f", getOpts{Options: opts("blksize", "8192")})
	if err != nil {
		t.Fatal(err)
	}
	if res.OACK["blksize"] != "1468" || !bytes.Equal(res.Data, want) {
		t.Fatalf("blksize %q (want the 1468 default cap), %d bytes", res.OACK["blksize"], len(res.Data))
	}
}

func TestNoOptionsNoOACK(t *testing.T) {
	ts := startServer(t, Config{})
	want, _ := writeFile(ts.dir, "f", 1500, 1)
	// Only unknown or invalid options: RFC 2347 says answer as RFC 1350.
	res, err := tftpGet(ts.addr, "f", getOpts{Options: opts("multicast", "", "blksize", "4")})
	if err != nil {
		t.Fatal(err)
	}
	if res.OACK != nil || !bytes.Equal(res.Data, want) {
		t.Fatalf("OACK %v, %d bytes", res.OACK, len(res.Data))
	}
}

func TestLossyLink(t *testing.T) {
	for _, tt := range []struct {
		blk, win int
		loss     float64
	}{
		{512, 1, 0.05}, {1468, 1, 0.10}, {512, 4, 0.05}, {1468, 16, 0.05}, {8192, 16, 0.10}, {512, 64, 0.02},
	} {
		t.Run(fmt.Sprintf("blksize=%d/windowsize=%d/loss=%.2f", tt.blk, tt.win, tt.loss), func(t *testing.T) {
			ts := startServer(t, Config{Timeout: 20 * time.Millisecond, MaxBlockSize: MaxBlockSize, Retries: 8})
			want, _ := writeFile(ts.dir, "f", 300_000, 7)
			c, err := net.ListenPacket("udp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			lc := newLossyConn(c, tt.loss, uint64(tt.blk*100+tt.win))
			res, err := tftpGet(ts.addr, "f", getOpts{
				Options: opts("blksize", strconv.Itoa(tt.blk), "windowsize", strconv.Itoa(tt.win), "tsize", "0"),
				Conn:    lc, Timeout: 50 * time.Millisecond, Dally: 400 * time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(res.Data, want) {
				t.Fatalf("file differs: %d bytes, want %d", len(res.Data), len(want))
			}
			st := ts.waitStats(t, "completed", func(s Stats) bool { return s.Completed == 1 })
			if lc.Dropped() == 0 || st.Retransmits == 0 {
				t.Errorf("the link lost nothing (%d dropped, %d retransmits): the test tests nothing", lc.Dropped(), st.Retransmits)
			}
			t.Logf("dropped %d packets, server retransmitted %d, client saw %d stale DATA", lc.Dropped(), st.Retransmits, res.Stale)
		})
	}
}

// TestRollover sends a file of more than 65535 blocks: block numbers wrap
// from 65535 to 0.
func TestRollover(t *testing.T) {
	if testing.Short() {
		t.Skip("33 MiB transfer")
	}
	ts := startServer(t, Config{Timeout: cleanLinkTimeout})
	const size = 65536*512 + 1000 // 65538 blocks
	want, err := writeFile(ts.dir, "big", size, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, win := range []int{1, 16} {
		t.Run(fmt.Sprintf("windowsize=%d", win), func(t *testing.T) {
			res, err := tftpGet(ts.addr, "big", getOpts{Options: opts("windowsize", strconv.Itoa(win)), MaxBytes: 40 << 20})
			if err != nil {
				t.Fatal(err)
			}
			if sha256.Sum256(res.Data) != sha256.Sum256(want) {
				t.Fatalf("file differs: %d bytes, want %d", len(res.Data), len(want))
			}
			if res.DataPkts != 65538 {
				t.Errorf("%d DATA packets, want 65538", res.DataPkts)
			}
		})
	}
	ts.waitStats(t, "completed", func(s Stats) bool { return s.Completed == 2 })
	for _, ti := range ts.transfers() {
		if ti.Err != nil || ti.Bytes != size || ti.Size != size {
			t.Errorf("transfer info %+v", ti)
		}
	}
}

func TestConcurrentTransfers(t *testing.T) {
	const n = 64
	// All the clients share 127.0.0.1.
	ts := startServer(t, Config{MaxBlockSize: 8192, MaxTransfersPerSource: n})
	files := make([][]byte, 8)
	for i := range files {
		files[i], _ = writeFile(ts.dir, fmt.Sprintf("f%d", i), 50_000+i*7777, uint64(i))
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			o := opts("blksize", strconv.Itoa([]int{512, 1468, 8192}[i%3]), "windowsize", strconv.Itoa(1+i%8), "tsize", "0")
			res, err := tftpGet(ts.addr, fmt.Sprintf("f%d", i%8), getOpts{Options: o})
			if err == nil && !bytes.Equal(res.Data, files[i%8]) {
				err = fmt.Errorf("client %d: content differs", i)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	ts.waitStats(t, "all completed", func(s Stats) bool { return s.Completed == n && s.Active == 0 })
}

func TestPathEscapesRefused(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "root")
	if err := os.MkdirAll(filepath.Join(root, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(base, "secret"), []byte("secret"), 0o644)
	os.WriteFile(filepath.Join(root, "ok"), []byte("fine"), 0o644)
	for name, target := range map[string]string{
		"passwd":  "/etc/passwd",
		"up":      "../secret",
		"updir":   "..",
		"inside":  "ok",
		"dangles": "nothing",
	} {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	ts := startServer(t, Config{Dir: root})
	for _, tt := range []struct {
		file string
		code ErrorCode
	}{
		{"../../etc/passwd", ErrCodeAccessViolation},
		{"../secret", ErrCodeAccessViolation},
		{"/etc/passwd", ErrCodeAccessViolation},
		{"sub/../../secret", ErrCodeAccessViolation},
		{"passwd", ErrCodeAccessViolation}, // symlink to /etc/passwd
		{"up", ErrCodeAccessViolation},     // symlink to ../secret
		{"updir/secret", ErrCodeAccessViolation},
		{"sub", ErrCodeAccessViolation}, // a directory
		{"missing", ErrCodeFileNotFound},
		{"dangles", ErrCodeFileNotFound},
	} {
		_, err := tftpGet(ts.addr, tt.file, getOpts{})
		var e *Error
		if !errors.As(err, &e) || e.Code != tt.code {
			t.Errorf("%s: got %v, want ERROR %d", tt.file, err, tt.code)
		}
		if e != nil && strings.Contains(e.Message, base) {
			t.Errorf("%s: error message reveals a path: %q", tt.file, e.Message)
		}
	}
	res, err := tftpGet(ts.addr, "inside", getOpts{})
	if err != nil || string(res.Data) != "fine" {
		t.Errorf("symlink inside the root: %q, %v", res.Data, err)
	}
	st := ts.waitStats(t, "refusals", func(s Stats) bool { return s.Refused == 10 && s.Completed == 1 })
	if st.Active != 0 {
		t.Errorf("%+v", st)
	}
}

func TestWriteRequestRefused(t *testing.T) {
	ts := startServer(t, Config{})
	c, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	defer c.Close()
	wrq := (&Request{Op: OpWRQ, Filename: "x", Mode: "octet"}).AppendBinary(nil)
	e := exchangeRaw(t, c, ts.addr, wrq)
	if e.Code != ErrCodeAccessViolation {
		t.Fatalf("WRQ answered %+v", e)
	}
	if _, err := os.Stat(filepath.Join(ts.dir, "x")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("WRQ created a file")
	}
}

func TestUnsupportedMode(t *testing.T) {
	ts := startServer(t, Config{})
	writeFile(ts.dir, "f", 10, 1)
	for _, mode := range []string{"mail", "binary"} {
		_, err := tftpGet(ts.addr, "f", getOpts{Mode: mode})
		var e *Error
		if !errors.As(err, &e) || e.Code != ErrCodeIllegalOperation {
			t.Errorf("mode %s: %v", mode, err)
		}
	}
	if _, err := tftpGet(ts.addr, "f", getOpts{Mode: "OcTeT"}); err != nil {
		t.Errorf("mode names are case-insensitive: %v", err)
	}
}

// exchangeRaw sends b and returns the ERROR that comes back.
func exchangeRaw(t *testing.T, c net.PacketConn, to net.Addr, b []byte) Error {
	t.Helper()
	if _, err := c.WriteTo(b, to); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	e, err := ParseError(buf[:n])
	if err != nil {
		t.Fatalf("reply %x: %v", buf[:n], err)
	}
	return e
}

func TestNetascii(t *testing.T) {
	ts := startServer(t, Config{})
	text := "line one\nline two\r\nbare\rcr\n\n" + strings.Repeat("x\n", 700) // crosses block edges
	os.WriteFile(filepath.Join(ts.dir, "t.txt"), []byte(text), 0o644)
	want := strings.NewReplacer("\r", "\r\x00", "\n", "\r\n").Replace(text)
	for _, win := range []string{"1", "4"} {
		res, err := tftpGet(ts.addr, "t.txt", getOpts{Mode: "netascii", Options: opts("tsize", "0", "windowsize", win)})
		if err != nil {
			t.Fatal(err)
		}
		if string(res.Data) != want {
			t.Fatalf("windowsize %s: netascii conversion wrong:\n got %q\nwant %q", win, res.Data, want)
		}
		if _, ok := res.OACK["tsize"]; ok {
			t.Errorf("tsize offered for netascii, where the file size is not the transfer size")
		}
	}
	ts.waitStats(t, "completed", func(s Stats) bool { return s.Completed == 2 })
	for _, ti := range ts.transfers() {
		if ti.Bytes != int64(len(want)) {
			t.Errorf("Bytes %d, want %d", ti.Bytes, len(want))
		}
	}
}

// noReaderAtFS hides ReadAt so that octet transfers use the streaming path.
type noReaderAtFS struct{ fs.FS }

type plainFile struct{ f fs.File }

func (p plainFile) Stat() (fs.FileInfo, error) { return p.f.Stat() }
func (p plainFile) Read(b []byte) (int, error) { return p.f.Read(b) }
func (p plainFile) Close() error               { return p.f.Close() }

func (n noReaderAtFS) Open(name string) (fs.File, error) {
	f, err := n.FS.Open(name)
	if err != nil {
		return nil, err
	}
	return plainFile{f}, nil
}

func TestStreamingSourceWithLoss(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 20000)
	mfs := fstest.MapFS{"f": {Data: data}}
	if _, ok := any(plainFile{}).(io.ReaderAt); ok {
		t.Fatal("plainFile must not be a ReaderAt")
	}
	ts := startServer(t, Config{FS: noReaderAtFS{mfs}, Timeout: 20 * time.Millisecond, Retries: 8})
	c, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	defer c.Close()
	res, err := tftpGet(ts.addr, "f", getOpts{
		Options: opts("windowsize", "8", "blksize", "1000", "tsize", "0"),
		Conn:    newLossyConn(c, 0.05, 42), Timeout: 50 * time.Millisecond, Dally: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.Data, data) || res.OACK["tsize"] != strconv.Itoa(len(data)) {
		t.Fatalf("got %d bytes, tsize %q", len(res.Data), res.OACK["tsize"])
	}
}

// TestDuplicateACKs: a client that ACKs everything twice must not make
// the server send anything twice (the Sorcerer's Apprentice syndrome).
func TestDuplicateACKs(t *testing.T) {
	ts := startServer(t, Config{Timeout: cleanLinkTimeout})
	want, _ := writeFile(ts.dir, "f", 512*300+17, 5)
	for _, win := range []string{"1", "8"} {
		res, err := tftpGet(ts.addr, "f", getOpts{DupAcks: true, Options: opts("windowsize", win)})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(res.Data, want) {
			t.Fatal("content differs")
		}
		if res.DataPkts != 301 || res.Stale != 0 {
			t.Errorf("windowsize %s: %d DATA packets (%d stale) for 301 blocks", win, res.DataPkts, res.Stale)
		}
	}
	st := ts.waitStats(t, "completed", func(s Stats) bool { return s.Completed == 2 })
	if st.Retransmits != 0 {
		t.Errorf("%d retransmits", st.Retransmits)
	}
}

// TestWindowPartialAck: a client that reports a gap in the window gets
// the window again from the block after the one it acknowledged (RFC 7440).
func TestWindowPartialAck(t *testing.T) {
	ts := startServer(t, Config{})
	want, _ := writeFile(ts.dir, "f", 512*10+3, 9)
	c, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	defer c.Close()
	rrq := (&Request{Op: OpRRQ, Filename: "f", Mode: "octet", Options: opts("windowsize", "4")}).AppendBinary(nil)
	c.WriteTo(rrq, ts.addr)
	buf := make([]byte, 2048)
	read := func() (Opcode, uint16, []byte, net.Addr) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		op, _ := PeekOpcode(buf[:n])
		if op == OpDATA {
			d, _ := ParseData(buf[:n])
			return op, d.Block, append([]byte(nil), d.Payload...), from
		}
		return op, 0, nil, from
	}
	op, _, _, tid := read()
	if op != OpOACK {
		t.Fatalf("got %v", op)
	}
	c.WriteTo((&Ack{0}).AppendBinary(nil), tid)
	for want := uint16(1); want <= 4; want++ {
		if _, blk, _, _ := read(); blk != want {
			t.Fatalf("block %d, want %d", blk, want)
		}
	}
	// Pretend block 3 was lost: ACK 2. The next window is 3..6.
	c.WriteTo((&Ack{2}).AppendBinary(nil), tid)
	var got []byte
	got = append(got, want[:1024]...)
	for want := uint16(3); want <= 6; want++ {
		_, blk, p, _ := read()
		if blk != want {
			t.Fatalf("after partial ACK: block %d, want %d", blk, want)
		}
		got = append(got, p...)
	}
	// A stale ACK (1, before the window) and a duplicate (2) change nothing.
	c.WriteTo((&Ack{1}).AppendBinary(nil), tid)
	c.WriteTo((&Ack{2}).AppendBinary(nil), tid)
	c.WriteTo((&Ack{6}).AppendBinary(nil), tid)
	for want := uint16(7); want <= 10; want++ {
		_, blk, p, _ := read()
		if blk != want {
			t.Fatalf("block %d, want %d", blk, want)
		}
		got = append(got, p...)
	}
	c.WriteTo((&Ack{10}).AppendBinary(nil), tid)
	_, blk, p, _ := read()
	if blk != 11 || len(p) != 3 {
		t.Fatalf("last block %d len %d", blk, len(p))
	}
	got = append(got, p...)
	c.WriteTo((&Ack{11}).AppendBinary(nil), tid)
	if !bytes.Equal(got, want) {
		t.Fatal("content differs")
	}
	st := ts.waitStats(t, "completed", func(s Stats) bool { return s.Completed == 1 })
	if st.Retransmits != 2 { // blocks 3 and 4 were sent again
		t.Errorf("retransmits %d, want 2", st.Retransmits)
	}
}

func TestDuplicateRRQIgnored(t *testing.T) {
	ts := startServer(t, Config{})
	want, _ := writeFile(ts.dir, "f", 5000, 2)
	c, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	defer c.Close()
	rrq := (&Request{Op: OpRRQ, Filename: "f", Mode: "octet"}).AppendBinary(nil)
	// The first RRQ starts a transfer that waits for ACK 1; the copy is ignored.
	c.WriteTo(rrq, ts.addr)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	if _, _, err := c.ReadFrom(buf); err != nil {
		t.Fatal(err)
	}
	c.WriteTo(rrq, ts.addr)
	ts.waitStats(t, "duplicate", func(s Stats) bool { return s.Duplicates == 1 })
	// The client restarts on the same socket: the running transfer's
	// retransmission serves it.
	res, err := tftpGet(ts.addr, "f", getOpts{Conn: c})
	if err != nil || !bytes.Equal(res.Data, want) {
		t.Fatalf("%d bytes, %v", len(res.Data), err)
	}
	st := ts.waitStats(t, "completed", func(s Stats) bool { return s.Completed == 1 })
	// The client re-sent its RRQ until the server's retransmission came.
	if st.Duplicates < 2 || st.Requests != st.Duplicates+1 {
		t.Errorf("%+v", st)
	}
}

func TestUnknownTID(t *testing.T) {
	ts := startServer(t, Config{})
	want, _ := writeFile(ts.dir, "f", 2000, 2)
	c, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	defer c.Close()
	stranger, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	defer stranger.Close()
	c.WriteTo((&Request{Op: OpRRQ, Filename: "f", Mode: "octet"}).AppendBinary(nil), ts.addr)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, tid, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	got := append([]byte(nil), buf[4:n]...)
	e := exchangeRaw(t, stranger, tid, (&Ack{1}).AppendBinary(nil))
	if e.Code != ErrCodeUnknownTID {
		t.Fatalf("stranger got %+v", e)
	}
	// The transfer goes on undisturbed.
	for blk := uint16(1); ; blk++ {
		c.WriteTo((&Ack{blk}).AppendBinary(nil), tid)
		if n-4 < 512 {
			break
		}
		n, _, err = c.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[4:n]...)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("content differs")
	}
	st := ts.waitStats(t, "completed", func(s Stats) bool { return s.Completed == 1 })
	if st.UnknownTID != 1 {
		t.Errorf("%+v", st)
	}
}

func TestMalformedDropped(t *testing.T) {
	ts := startServer(t, Config{})
	want, _ := writeFile(ts.dir, "f", 700, 2)
	c, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	defer c.Close()
	junk := [][]byte{
		{}, {0}, {0, 1}, []byte("\x00\x01f"), []byte("\x00\x01f\x00"), []byte("\x00\x01\x00octet\x00"),
		{0, 3, 0, 1, 'x'}, {0, 4, 0, 0}, {0, 5, 0, 0, 0}, {0, 6}, {0, 9, 1, 2}, {0xff, 0xff},
	}
	for _, b := range junk {
		c.WriteTo(b, ts.addr)
	}
	ts.waitStats(t, "malformed", func(s Stats) bool { return s.Malformed == uint64(len(junk)) })
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	reply := make([]byte, 100)
	if n, _, err := c.ReadFrom(reply); err == nil {
		t.Fatalf("server answered junk: %x", reply[:n])
	}
	res, err := tftpGet(ts.addr, "f", getOpts{})
	if err != nil || !bytes.Equal(res.Data, want) {
		t.Fatalf("server broken after junk: %v", err)
	}
}

func TestClientAbortAfterOACK(t *testing.T) {
	ts := startServer(t, Config{})
	writeFile(ts.dir, "f", 70000, 2)
	c, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	defer c.Close()
	// A PXE ROM's size probe: tsize, then ERROR 8 on the OACK.
	c.WriteTo(rrqPXEProbeFor("f"), ts.addr)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, tid, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	o, err := ParseOAck(buf[:n])
	if err != nil || o.Options[0] != (Option{"tsize", "70000"}) {
		t.Fatalf("OACK %+v %v", o, err)
	}
	c.WriteTo((&Error{ErrCodeOptionRefused, "tsize probe"}).AppendBinary(nil), tid)
	ts.waitStats(t, "aborted", func(s Stats) bool { return s.Aborted == 1 && s.Active == 0 })
	ti := ts.transfers()[0]
	var e *Error
	if !errors.Is(ti.Err, ErrClientAbort) || !errors.As(ti.Err, &e) || e.Code != ErrCodeOptionRefused {
		t.Errorf("info err %v", ti.Err)
	}
}

func rrqPXEProbeFor(file string) []byte {
	return (&Request{Op: OpRRQ, Filename: file, Mode: "octet", Options: opts("tsize", "0")}).AppendBinary(nil)
}

func TestBusy(t *testing.T) {
	for _, drop := range []bool{false, true} {
		t.Run(fmt.Sprintf("drop=%v", drop), func(t *testing.T) {
			ts := startServer(t, Config{MaxTransfers: 1, DropWhenBusy: drop, Timeout: time.Minute})
			writeFile(ts.dir, "f", 5000, 2)
			hog, _ := net.ListenPacket("udp4", "127.0.0.1:0")
			defer hog.Close()
			hog.WriteTo(rrqPXEProbeFor("f"), ts.addr) // then never ACKs
			ts.waitStats(t, "one active", func(s Stats) bool { return s.Active == 1 })
			c, _ := net.ListenPacket("udp4", "127.0.0.1:0")
			defer c.Close()
			rrq := (&Request{Op: OpRRQ, Filename: "f", Mode: "octet"}).AppendBinary(nil)
			if drop {
				c.WriteTo(rrq, ts.addr)
				ts.waitStats(t, "busy", func(s Stats) bool { return s.Busy == 1 })
				c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				if _, _, err := c.ReadFrom(make([]byte, 100)); err == nil {
					t.Fatal("busy request answered although DropWhenBusy")
				}
			} else {
				e := exchangeRaw(t, c, ts.addr, rrq)
				if e.Code != ErrCodeNotDefined || !strings.Contains(e.Message, "busy") {
					t.Fatalf("got %+v", e)
				}
			}
			// Free the slot: the next request is served.
			hog.WriteTo((&Error{ErrCodeOptionRefused, "x"}).AppendBinary(nil), hogTID(t, hog))
			ts.waitStats(t, "idle", func(s Stats) bool { return s.Active == 0 })
			if _, err := tftpGet(ts.addr, "f", getOpts{}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func hogTID(t *testing.T, c net.PacketConn) net.Addr {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, from, err := c.ReadFrom(make([]byte, 2048))
	if err != nil {
		t.Fatal(err)
	}
	return from
}

func TestShutdown(t *testing.T) {
	dir := t.TempDir()
	writeFile(dir, "f", 5000, 2)
	s, err := New(Config{Dir: dir, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	l, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	served := make(chan error, 1)
	go func() { served <- s.Serve(context.Background(), l) }()
	c, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	defer c.Close()
	c.WriteTo((&Request{Op: OpRRQ, Filename: "f", Mode: "octet"}).AppendBinary(nil), l.LocalAddr())
	tid := hogTID(t, c) // DATA 1 arrived; the client stalls

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a stalled transfer: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	// The stalled client is told.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, from, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := ParseError(buf[:n]); err != nil || !strings.Contains(e.Message, "shutting down") || !sameAddr(from, tid) {
		t.Fatalf("got %x from %v", buf[:n], from)
	}
	if st := s.Stats(); st.Failed != 1 || st.Active != 0 {
		t.Errorf("%+v", st)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
	if err := s.Serve(context.Background(), l); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve after Shutdown: %v", err)
	}
}

func TestShutdownWaitsForTransfers(t *testing.T) {
	dir := t.TempDir()
	want, _ := writeFile(dir, "f", 200_000, 2)
	s, _ := New(Config{Dir: dir})
	l, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	go s.Serve(context.Background(), l)
	got := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		c, _ := net.ListenPacket("udp4", "127.0.0.1:0")
		defer c.Close()
		// Slow client: a little pause per block, so Shutdown comes mid-transfer.
		res, err := tftpGet(l.LocalAddr().(*net.UDPAddr), "f", getOpts{Conn: &slowConn{PacketConn: c, started: started}})
		if err == nil && !bytes.Equal(res.Data, want) {
			err = errors.New("content differs")
		}
		got <- err
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("transfer under graceful shutdown: %v", err)
	}
	if st := s.Stats(); st.Completed != 1 {
		t.Errorf("%+v", st)
	}
}

type slowConn struct {
	net.PacketConn
	started chan struct{}
	once    sync.Once
}

func (s *slowConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, a, err := s.PacketConn.ReadFrom(p)
	if err == nil {
		s.once.Do(func() { close(s.started) })
		time.Sleep(time.Millisecond)
	}
	return n, a, err
}

func TestNewMissingDir(t *testing.T) {
	if _, err := New(Config{Dir: filepath.Join(t.TempDir(), "nope")}); err == nil {
		t.Fatal("New accepted a missing directory")
	}
}

func TestTransferInfo(t *testing.T) {
	ts := startServer(t, Config{})
	writeFile(ts.dir, "f", 3000, 2)
	c, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	defer c.Close()
	if _, err := tftpGet(ts.addr, "f", getOpts{Conn: c, Options: opts("blksize", "1024", "timeout", "3", "tsize", "0")}); err != nil {
		t.Fatal(err)
	}
	tftpGet(ts.addr, "nope", getOpts{})
	ts.waitStats(t, "two", func(s Stats) bool { return s.Completed+s.Refused == 2 })
	infos := ts.transfers()
	if infos[0].File != "f" {
		infos[0], infos[1] = infos[1], infos[0]
	}
	ti := infos[0]
	if ti.Client.String() != c.LocalAddr().String() || ti.File != "f" || ti.Mode != "octet" ||
		ti.BlockSize != 1024 || ti.WindowSize != 1 || ti.Timeout != 3*time.Second ||
		ti.Size != 3000 || ti.Bytes != 3000 || ti.Err != nil || ti.Duration <= 0 {
		t.Errorf("%+v", ti)
	}
	var e *Error
	if ti := infos[1]; !errors.As(ti.Err, &e) || e.Code != ErrCodeFileNotFound || ti.Size != -1 {
		t.Errorf("%+v", ti)
	}
}

// TestStreamWindowCapped: a netascii transfer buffers its window, so the
// windowsize offered shrinks to keep that buffer at 256 KiB.
func TestStreamWindowCapped(t *testing.T) {
	ts := startServer(t, Config{MaxBlockSize: 8192})
	text := strings.Repeat("some text\n", 40_000)
	os.WriteFile(filepath.Join(ts.dir, "t.txt"), []byte(text), 0o644)
	res, err := tftpGet(ts.addr, "t.txt", getOpts{Mode: "netascii", Options: opts("blksize", "8192", "windowsize", "64")})
	if err != nil {
		t.Fatal(err)
	}
	if res.OACK["windowsize"] != "32" || res.OACK["blksize"] != "8192" {
		t.Errorf("OACK %v, want windowsize 32 (256 KiB / 8192)", res.OACK)
	}
	if want := strings.ReplaceAll(text, "\n", "\r\n"); string(res.Data) != want {
		t.Errorf("content differs: %d bytes, want %d", len(res.Data), len(want))
	}
	// Octet transfers read by offset: no buffer, the full window.
	os.WriteFile(filepath.Join(ts.dir, "b"), []byte(text), 0o644)
	res, err = tftpGet(ts.addr, "b", getOpts{Options: opts("blksize", "8192", "windowsize", "64")})
	if err != nil || res.OACK["windowsize"] != "64" || string(res.Data) != text {
		t.Errorf("octet: OACK %v, %v", res.OACK, err)
	}
}

// cleanLinkTimeout is the retransmission timeout of tests that count
// packets on a loss-free link: long enough that a busy CI machine never
// makes the server resend, so any extra packet is a real bug.
const cleanLinkTimeout = time.Minute
