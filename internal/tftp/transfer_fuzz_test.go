package tftp

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"testing/synctest"
	"time"
)

// FuzzTransfers drives the server's transfer loop with sequences of client
// packets from up to four clients (two of them sharing an address): read
// requests with any options, ACKs in order, duplicated, out of the window
// or wrapped, ERRORs, packets to the wrong transfer ID, garbage, write
// requests, silence while the fake clock runs. The input is a sequence of
// operations (ftOp*), so mutations keep transfers going and reach their
// late states (windows after a partial ACK, retransmissions, timeouts,
// busy slots).
//
// Everything runs on memNet in a testing/synctest bubble: time is fake
// (a timeout=255 transfer that is never ACKed costs nothing), and after
// each operation the server is idle, so each check is deterministic.
// Checked after every operation: each RRQ got its answer (OACK, DATA 1, or
// the right ERROR, busy only when the slots were taken), every packet is
// from the right port and well formed, the OACK keeps to what was asked and
// to the server's caps, DATA carries the file's bytes and never runs ahead
// of the last ACK by more than the window (what bounds the server's
// buffers), the server answers a stranger with ERROR 5 and stops after the
// client's ERROR or last ACK, and one client packet never triggers more
// than a window of server packets. At the end, with the clients silent
// until every transfer has given up: no busy slot and no transfer socket
// is left, every request is counted once, Shutdown returns, no transfer
// panicked (and synctest fails the input if a goroutine is left).
func FuzzTransfers(f *testing.F) {
	for _, s := range ftSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 2048 {
			return
		}
		synctest.Test(t, func(t *testing.T) {
			for _, f := range runFtTransfers(t, data, nil) {
				t.Error(f)
			}
		})
	})
}

// TestFuzzTransfersDetects checks that FuzzTransfers' checks can fail: a
// file served with other bytes than the client expects, and a slot that
// is never given back, must be noticed by the seeds.
func TestFuzzTransfersDetects(t *testing.T) {
	seed := ftSeeds()[0] // iPXE fetching undionly.kpxe
	synctest.Test(t, func(t *testing.T) {
		var w *ftWorld
		if got := runFtTransfers(t, seed, func(x *ftWorld) { w = x }); len(got) > 0 || w.srv.Stats().Completed != 1 {
			t.Errorf("the iPXE seed: %q, %+v", got, w.srv.Stats())
		}
	})
	synctest.Test(t, func(t *testing.T) {
		got := runFtTransfers(t, seed, func(w *ftWorld) {
			b := append([]byte(nil), ftData["undionly.kpxe"]...)
			b[2000] ^= 1
			w.fs["undionly.kpxe"].Data = b
		})
		if !slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, "differ from the file") }) {
			t.Errorf("wrong file content went unnoticed: %q", got)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		got := runFtTransfers(t, seed, func(w *ftWorld) { w.srv.active["10.9.9.9:1"] = &slot{key: "10.9.9.9:1"} })
		if !slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, "slots still busy") }) {
			t.Errorf("a leaked slot went unnoticed: %q", got)
		}
	})
}

// Files served, and what requests for them must get.
var (
	ftData = map[string][]byte{
		"undionly.kpxe": ftPattern(3000, 1),
		"exact":         ftPattern(1024, 2),
		"empty":         {},
		"big":           ftPattern(20000, 3),
		"text.txt":      []byte(strings.Repeat("#!ipxe\r\nchain http://10.0.0.1/boot.ipxe\n\r", 40)),
		"dir/file":      ftPattern(10, 4),
		"stream/blob":   ftPattern(5000, 5),
	}
	ftNames = []struct {
		name, file string // file is "" for a refusal
		code       ErrorCode
	}{
		{"undionly.kpxe", "undionly.kpxe", 0},
		{"exact", "exact", 0},
		{"empty", "empty", 0},
		{"big", "big", 0},
		{"text.txt", "text.txt", 0},
		{"stream/blob", "stream/blob", 0},
		{"dir//file", "dir/file", 0},
		{"./undionly.kpxe", "undionly.kpxe", 0},
		{"missing", "", ErrCodeFileNotFound},
		{"../etc/passwd", "", ErrCodeAccessViolation},
		{"/etc/passwd", "", ErrCodeAccessViolation},
		{"dir", "", ErrCodeAccessViolation},
		{"dir/../exact", "", ErrCodeAccessViolation},
	}
	ftModes = []string{"octet", "netascii", "OCTET", "NetASCII", "mail", "binary"}
	// Options a request may carry, each with the values the input picks from.
	ftOptions = []struct {
		name   string
		values []string
	}{
		{"blksize", []string{"512", "8", "1024", "1468", "1469", "65464", "65465", "7", "00512", "x"}},
		{"tsize", []string{"0", "123", "x"}},
		{"timeout", []string{"1", "2", "255", "256", "0"}},
		{"windowsize", []string{"1", "4", "16", "64", "65535", "0"}},
		{"BlkSize", []string{"600", "9"}},
		{"multicast", []string{"", "1"}},
		{"WINDOWSIZE", []string{"2", "8"}},
	}
)

func ftPattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed + byte(i>>9)
	}
	return b
}

// ftFS serves ftData; files under stream/ hide ReadAt, so the server
// streams them (buffering its window) as it does netascii.
type ftFS struct{ fstest.MapFS }

func (f ftFS) Open(name string) (fs.File, error) {
	file, err := f.MapFS.Open(name)
	if err == nil && strings.HasPrefix(name, "stream/") {
		return struct{ fs.File }{file}, nil
	}
	return file, err
}

type ftWorld struct {
	t        *testing.T
	srv      *Server
	mn       *memNet
	l        *memConn
	fs       fstest.MapFS
	cfg      Config
	clients  [4]*ftClient
	failures []string

	listenCalls atomic.Int64 // transfer goroutines call ListenTransfer and OnTransfer
	listenFails atomic.Int64
	infos       atomic.Int64
	wrqs        int
	completed   uint64 // transfers the clients saw through to the last ACK
	aborted     uint64 // transfers the clients ended with an ERROR
	started     int    // RRQs sent since the last settle, for "busy"
	shut        bool   // ftOpShutdown ran: the operations stop
	serveDone   chan error
}

func (w *ftWorld) failf(format string, args ...any) {
	w.failures = append(w.failures, fmt.Sprintf(format, args...))
}

// newFtWorld configures the server from two bytes:
//
//	flags: 0-1 MaxTransfers {1, 2, 3, 256}, 2 DropWhenBusy,
//	       3-4 MaxBlockSize {1468, 512, 8192, 65464}, 5 Retries 1,
//	       6 Timeout 100 ms, 7 every other transfer socket fails to open
//	shape: 0-1 MaxWindowSize {64, 1, 4, 16}
func newFtWorld(t *testing.T, flags, shape byte) *ftWorld {
	w := &ftWorld{t: t, mn: newMemNet(), serveDone: make(chan error, 1)}
	w.fs = fstest.MapFS{}
	for name, b := range ftData {
		w.fs[name] = &fstest.MapFile{Data: b, ModTime: time.Unix(1e9, 0)}
	}
	w.cfg = Config{
		FS:            ftFS{w.fs},
		MaxTransfers:  []int{1, 2, 3, 256}[flags&3],
		DropWhenBusy:  flags&4 != 0,
		MaxBlockSize:  []int{1468, 512, 8192, MaxBlockSize}[flags>>3&3],
		MaxWindowSize: []int{0, 1, 4, 16}[shape&3],
		OnTransfer:    func(TransferInfo) { w.infos.Add(1) },
	}
	if flags&0x20 != 0 {
		w.cfg.Retries = 1
	}
	if flags&0x40 != 0 {
		w.cfg.Timeout = 100 * time.Millisecond
	}
	failing := flags&0x80 != 0
	w.cfg.ListenTransfer = func(net.Addr) (net.PacketConn, error) {
		if n := w.listenCalls.Add(1); failing && n%2 == 0 {
			w.listenFails.Add(1)
			return nil, fmt.Errorf("no more sockets")
		}
		return w.mn.listen("10.0.0.1", 0), nil
	}
	s, err := New(w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	w.srv = s
	w.cfg = s.cfg // with the defaults
	w.l = w.mn.listen("10.0.0.1", 69)
	go func() { w.serveDone <- s.Serve(context.Background(), w.l) }()
	synctest.Wait() // listening: a Shutdown first thing finds it serving
	for i := range w.clients {
		sock := w.mn.listen(fmt.Sprintf("10.0.0.%d", 10+i/2), 2000+i)
		// Room for all a long silence brings (several transfers' retries
		// of a full window): a dropped packet would make the client's
		// view of the window lag the server's.
		sock.in = make(chan memPacket, 8192)
		w.clients[i] = &ftClient{w: w, id: i, sock: sock}
	}
	return w
}

// settle lets the server act on what the clients sent, then has each
// client take in what it got.
func (w *ftWorld) settle(op int) {
	synctest.Wait()
	w.started = 0
	for _, c := range w.clients {
		c.take(op)
	}
}

// Operations: the low four bits of an operation byte; bits 4-5 pick the
// client; bit 7 is an operation-specific variant.
const (
	ftOpRRQ = iota
	ftOpAck
	ftOpAckAny
	ftOpError
	ftOpWrongTID
	ftOpGarbage
	ftOpGarbageToServer
	ftOpSleep
	ftOpFinish
	ftOpWRQ
	ftOpDuplicateRRQ
	ftOpBurst
	ftOpRRQBurst
	ftOpShutdown
	ftNumOps
)

// runFtTransfers runs one input and returns what failed; tamper, when
// set, breaks the world before the operations run.
func runFtTransfers(t *testing.T, data []byte, tamper func(*ftWorld)) []string {
	in := &ftInput{b: data}
	w := newFtWorld(t, in.u8(), in.u8())
	if tamper != nil {
		tamper(w)
	}
	for n := 0; !in.empty() && n < 200 && len(w.failures) == 0 && !w.shut; n++ {
		w.step(in.u8(), in)
	}
	if len(w.failures) == 0 {
		w.finish()
	} else if !w.shut {
		w.srv.Shutdown(t.Context())
		<-w.serveDone
	}
	return w.failures
}

type ftInput struct{ b []byte }

func (in *ftInput) empty() bool { return len(in.b) == 0 }

func (in *ftInput) u8() byte {
	if len(in.b) == 0 {
		return 0
	}
	v := in.b[0]
	in.b = in.b[1:]
	return v
}

func (in *ftInput) bytes(n int) []byte {
	out := make([]byte, n)
	copy(out, in.b)
	in.b = in.b[min(n, len(in.b)):]
	return out
}

func (w *ftWorld) step(op byte, in *ftInput) {
	c := w.clients[op>>4&3]
	kind := int(op&0xf) % ftNumOps
	alt := op&0x80 != 0
	switch kind {
	case ftOpRRQ:
		c.rrq(in, alt)
	case ftOpAck:
		if c.running() {
			if alt && c.acked+1 <= c.sent {
				c.ack(uint16(c.acked + 1)) // the first block of the window only
			} else {
				c.ack(c.nextAck())
			}
		}
	case ftOpAckAny:
		hi, lo := in.u8(), in.u8()
		if c.running() {
			b := uint16(hi)<<8 | uint16(lo)
			if alt {
				b = uint16(c.acked) + uint16(int8(hi)) // near the window, wrapping
			}
			c.ack(b)
		}
	case ftOpError:
		code := ErrorCode(in.u8() % 9)
		if c.running() {
			c.sendTID((&Error{Code: code, Message: "client says no"}).AppendBinary(nil))
			if c.answered {
				w.aborted++
			}
			c.end()
		} else {
			c.sock.WriteTo((&Error{Code: code}).AppendBinary(nil), w.l.addr) // dropped
		}
	case ftOpWrongTID:
		j := w.clients[in.u8()%4]
		if j != c && j.running() && j.tid != nil {
			c.sock.WriteTo((&Ack{Block: 1}).AppendBinary(nil), j.tid)
			c.strangers = append(c.strangers, j.tid.String())
		}
	case ftOpGarbage, ftOpGarbageToServer:
		n := int(in.u8() % 64)
		b := in.bytes(n + 2)
		// Never a valid ACK, ERROR or request: those have their own
		// operations, with a model of what they do.
		for i := range b {
			if b[i] == 0 {
				b[i] = 'x'
			}
		}
		b[0] = 0
		if op := Opcode(b[1]); op == OpACK || op == OpERROR {
			b[1] = byte(OpDATA)
		}
		if kind == ftOpGarbage && c.running() {
			c.sendTID(b)
		} else {
			c.sock.WriteTo(b, w.l.addr)
		}
	case ftOpSleep:
		time.Sleep([]time.Duration{100 * time.Millisecond, time.Second, 3 * time.Second, 12 * time.Second, 300 * time.Second}[in.u8()%5])
	case ftOpFinish:
		c.finishTransfer()
	case ftOpWRQ:
		c.sock.WriteTo((&Request{Op: OpWRQ, Filename: "upload", Mode: "octet"}).AppendBinary(nil), w.l.addr)
		c.wrqPending++
		w.wrqs++
	case ftOpDuplicateRRQ:
		if c.lastRRQ != nil && c.running() {
			c.sock.WriteTo(c.lastRRQ, w.l.addr)
		}
	case ftOpBurst:
		for _, o := range w.clients {
			if o.running() {
				o.ack(o.nextAck())
			}
		}
	case ftOpShutdown:
		// Shutdown with transfers running: it must return by its
		// deadline, and end them (clients get ERROR 0).
		d := []time.Duration{0, 100 * time.Millisecond, 5 * time.Second, time.Hour}[in.u8()%4]
		ctx, cancel := context.WithTimeout(context.Background(), d)
		start := time.Now()
		err := w.srv.Shutdown(ctx)
		cancel()
		if took := time.Since(start); took > d || (err != nil && !errors.Is(err, context.DeadlineExceeded)) {
			w.failf("Shutdown with a %v deadline took %v: %v", d, took, err)
		}
		if err := <-w.serveDone; err != nil {
			w.failf("serve: %v", err)
		}
		w.shut = true
	case ftOpRRQBurst:
		name, mode := in.u8(), in.u8()
		for _, o := range w.clients {
			if !o.running() && o.wrqPending == 0 {
				o.request(int(name), int(mode), nil)
			}
		}
	}
	w.settle(kind)
}

// finish lets every transfer give up (the clients stay silent for longer
// than any retransmission schedule), then checks that the server let go of
// everything and counted every request once.
func (w *ftWorld) finish() {
	if !w.shut {
		time.Sleep(2 * time.Hour)
	}
	w.settle(ftOpSleep)
	st := w.srv.Stats()
	if st.Active != 0 {
		w.failf("%d transfer slots still busy after every client went silent", st.Active)
	}
	w.mn.mu.Lock()
	socks := 0
	for addr := range w.mn.conns {
		if strings.HasPrefix(addr, "10.0.0.1:") && addr != w.l.addr.String() {
			socks++ // a transfer's
		}
	}
	w.mn.mu.Unlock()
	if socks != 0 {
		w.failf("%d transfer sockets still open after every transfer ended", socks)
	}
	if ended := st.Duplicates + st.Busy + st.SourceBusy + st.Refused + st.Completed + st.Aborted + st.TimedOut +
		st.Failed + st.Preempted + st.Expired; st.Requests != ended {
		w.failf("%d requests, %d accounted for: %+v", st.Requests, ended, st)
	}
	if st.Completed != w.completed || st.Aborted != w.aborted {
		w.failf("the server counts %d completed and %d aborted transfers, the clients %d and %d", st.Completed, st.Aborted, w.completed, w.aborted)
	}
	if want := int64(st.Busy+st.SourceBusy+st.Refused+st.Completed+st.Aborted+st.TimedOut+st.Failed+st.Preempted+st.Expired) -
		int64(w.wrqs); w.infos.Load() != want {
		w.failf("OnTransfer called %d times, for %d answered read requests", w.infos.Load(), want)
	}
	if !w.shut {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := w.srv.Shutdown(ctx); err != nil {
			w.failf("shutdown: %v", err)
		}
		if err := <-w.serveDone; err != nil {
			w.failf("serve: %v", err)
		}
	}
	if p := w.srv.Stats().Panics; p != 0 {
		w.failf("%d transfers panicked", p)
	}
}

// ftClient is one client port and its current transfer, as the client
// sees it.
type ftClient struct {
	w    *ftWorld
	id   int
	sock *memConn

	lastRRQ    []byte
	requested  bool   // RRQ sent, not answered yet
	answered   bool   // the server answered the current request
	ended      bool   // the transfer is over (or never started)
	wantFile   []byte // expected content, nil for a refusal
	wantCode   ErrorCode
	octet      bool
	streamed   bool // the server buffers its window (netascii, no ReadAt)
	opts       []Option
	busyOK     bool // the slots may all have been taken
	tid        net.Addr
	oack       bool
	oackAcked  bool
	bs, window int64
	acked      int64 // blocks acknowledged and accepted
	sent       int64 // highest block received
	last       int64 // the final block, 0 until seen
	strangers  []string
	wrqPending int
}

func (c *ftClient) running() bool { return !c.ended && c.lastRRQ != nil }

func (c *ftClient) end() {
	c.ended, c.requested = true, false
}

func (c *ftClient) sendTID(b []byte) {
	if c.tid != nil {
		c.sock.WriteTo(b, c.tid)
	}
}

// rrq sends a read request. Input: file, mode, option mask, a value byte
// per option. alt: the mode in upper case is left alone, options repeat.
func (c *ftClient) rrq(in *ftInput, alt bool) {
	name, mode, mask := int(in.u8()), int(in.u8()), in.u8()
	var opts []Option
	for i, o := range ftOptions {
		if mask&(1<<i) != 0 {
			opts = append(opts, Option{o.name, o.values[int(in.u8())%len(o.values)]})
		}
	}
	if alt && len(opts) > 0 {
		opts = append(opts, Option{opts[0].Name, "1"}) // a repeat: the first one counts
	}
	if c.running() {
		// A request from a port whose transfer runs is a duplicate: the
		// server ignores it and the transfer goes on.
		b := (&Request{Op: OpRRQ, Filename: ftNames[name%len(ftNames)].name, Mode: ftModes[mode%len(ftModes)], Options: opts}).AppendBinary(nil)
		c.sock.WriteTo(b, c.w.l.addr)
		return
	}
	c.request(name, mode, opts)
}

func (c *ftClient) request(name, mode int, opts []Option) {
	n := ftNames[name%len(ftNames)]
	m := ftModes[mode%len(ftModes)]
	req := Request{Op: OpRRQ, Filename: n.name, Mode: m, Options: opts}
	*c = ftClient{w: c.w, id: c.id, sock: c.sock, wrqPending: c.wrqPending, strangers: c.strangers}
	c.lastRRQ = req.AppendBinary(nil)
	c.requested, c.opts, c.bs, c.window = true, opts, DefaultBlockSize, 1
	lm := strings.ToLower(m)
	switch {
	case lm != "octet" && lm != "netascii":
		c.wantCode = ErrCodeIllegalOperation
	case n.file == "":
		c.wantCode = n.code
	case lm == "octet":
		c.octet, c.wantFile = true, ftData[n.file]
		c.streamed = strings.HasPrefix(n.file, "stream/")
	default:
		c.wantFile = []byte(strings.NewReplacer("\r", "\r\x00", "\n", "\r\n").Replace(string(ftData[n.file])))
		c.streamed = true
	}
	w := c.w
	w.started++
	c.busyOK = w.srv.Stats().Active+w.started > w.cfg.MaxTransfers
	c.sock.WriteTo(c.lastRRQ, w.l.addr)
}

// nextAck is what a good client ACKs: the highest block received.
func (c *ftClient) nextAck() uint16 {
	if c.oack && !c.oackAcked {
		return 0
	}
	return uint16(c.sent)
}

// ack sends an ACK and follows the server's rules for it: ACK 0 accepts
// the OACK; afterwards an ACK moves the window if its distance from the
// last accepted one is in 1..(sent-acked) (16-bit arithmetic, RFC 7440).
func (c *ftClient) ack(block uint16) {
	c.sendTID((&Ack{Block: block}).AppendBinary(nil))
	if !c.answered {
		return
	}
	if c.oack && !c.oackAcked {
		c.oackAcked = block == 0
		return
	}
	delta := int64(block - uint16(c.acked))
	if delta == 0 || delta > c.sent-c.acked {
		return
	}
	c.acked += delta
	if c.last != 0 && c.acked == c.last {
		c.w.completed++
		c.end()
	}
}

// finishTransfer runs the transfer to its end as a good client does.
func (c *ftClient) finishTransfer() {
	for range 3000 {
		if !c.running() || !c.answered {
			return
		}
		c.ack(c.nextAck())
		c.w.settle(ftOpBurst)
	}
}

// take checks and takes in what the server sent the client since the
// last settle.
func (c *ftClient) take(op int) {
	w := c.w
	perTID := map[string]int{}
	for {
		var pkt memPacket
		select {
		case pkt = <-c.sock.in:
		default:
			c.afterTake(op, perTID)
			return
		}
		from := pkt.from.String()
		perTID[from]++
		b := pkt.b
		opc, _ := PeekOpcode(b)
		if from == w.l.addr.String() {
			c.fromRequestPort(b, opc)
			continue
		}
		if i := indexOf(c.strangers, from); i >= 0 {
			if e, err := ParseError(b); err != nil || e.Code != ErrCodeUnknownTID {
				w.failf("client %d: a stranger to transfer %s got %v %v, want ERROR 5", c.id, from, opc, err)
			}
			c.strangers = append(c.strangers[:i], c.strangers[i+1:]...)
			continue
		}
		if c.tid == nil && c.requested {
			c.tid = pkt.from
		}
		if c.tid == nil || from != c.tid.String() {
			w.failf("client %d: %v from %s, which is not its transfer", c.id, opc, from)
			continue
		}
		if c.ended {
			w.failf("client %d: %v after its transfer ended", c.id, opc)
			continue
		}
		c.fromTransfer(b, opc)
	}
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

func (c *ftClient) afterTake(op int, perTID map[string]int) {
	w := c.w
	if len(c.strangers) > 0 {
		w.failf("client %d: wrote to a running transfer's port, no ERROR 5 came back", c.id)
		c.strangers = nil
	}
	if c.wrqPending > 0 {
		w.failf("client %d: write request not refused", c.id)
		c.wrqPending = 0
	}
	if c.requested && !c.answered {
		if c.busyOK && w.cfg.DropWhenBusy {
			c.end() // dropped: the client would ask again later
		} else {
			w.failf("client %d: read request %q unanswered", c.id, c.lastRRQ)
		}
	}
	// A client packet is worth at most a window of server packets (and an
	// OACK or ERROR): the server cannot be used as an amplifier. Not where
	// time passes: a sleep, or a graceful Shutdown, which lets running
	// transfers retransmit until its deadline.
	if op != ftOpSleep && op != ftOpBurst && op != ftOpFinish && op != ftOpShutdown {
		for from, n := range perTID {
			if n > MaxWindowSize+1 {
				w.failf("client %d: %d packets from %s for one packet sent", c.id, n, from)
			}
		}
	}
}

func (c *ftClient) fromRequestPort(b []byte, opc Opcode) {
	w := c.w
	e, err := ParseError(b)
	if err != nil {
		w.failf("client %d: %v from the request port", c.id, opc)
		return
	}
	switch {
	case c.wrqPending > 0 && e.Code == ErrCodeAccessViolation:
		c.wrqPending--
	case !c.requested || c.answered:
		w.failf("client %d: ERROR %d %q from the request port, nothing asked", c.id, e.Code, e.Message)
	case e.Code == ErrCodeNotDefined && e.Message == errBusy.Message && c.busyOK && !w.cfg.DropWhenBusy:
		c.answered = true
		c.end()
	case e.Code == ErrCodeNotDefined && e.Message == errInternal.Message && w.listenFails.Load() > 0 && c.wantFile != nil:
		c.answered = true
		c.end()
	case c.wantFile == nil && e.Code == c.wantCode:
		c.answered = true
		c.end()
	default:
		w.failf("client %d: request %q refused with ERROR %d %q (busy possible %v, want code %d or the file)",
			c.id, c.lastRRQ, e.Code, e.Message, c.busyOK, c.wantCode)
		c.end()
	}
}

func (c *ftClient) fromTransfer(b []byte, opc Opcode) {
	w := c.w
	if c.wantFile == nil {
		w.failf("client %d: %v for a request that should have been refused with %d", c.id, opc, c.wantCode)
		c.end()
		return
	}
	first := !c.answered
	c.answered = true
	switch opc {
	case OpOACK:
		o, err := ParseOAck(b)
		if err != nil || (!first && !c.oack) || c.oackAcked {
			w.failf("client %d: OACK %v (first packet %v, acked %v)", c.id, err, first, c.oackAcked)
			return
		}
		c.oack = true
		c.checkOAck(o)
	case OpDATA:
		d, err := ParseData(b)
		if err != nil {
			w.failf("client %d: DATA: %v", c.id, err)
			return
		}
		if c.oack && !c.oackAcked {
			w.failf("client %d: DATA %d before the OACK was acknowledged", c.id, d.Block)
			return
		}
		delta := int64(d.Block - uint16(c.acked))
		if delta < 1 || delta > c.window {
			w.failf("client %d: DATA %d with %d blocks acknowledged, window %d", c.id, d.Block, c.acked, c.window)
			return
		}
		blk := c.acked + delta
		if c.last != 0 && blk > c.last {
			w.failf("client %d: DATA block %d past the last one, %d", c.id, blk, c.last)
			return
		}
		start := min((blk-1)*c.bs, int64(len(c.wantFile)))
		want := c.wantFile[start:min(start+c.bs, int64(len(c.wantFile)))]
		if string(d.Payload) != string(want) {
			w.failf("client %d: DATA block %d: %d bytes differ from the file's %d (block size %d)", c.id, blk, len(d.Payload), len(want), c.bs)
			return
		}
		if int64(len(d.Payload)) < c.bs {
			c.last = blk
		}
		c.sent = max(c.sent, blk)
	case OpERROR:
		// The server gave up (timed out, shutting down, socket trouble).
		c.end()
	default:
		w.failf("client %d: %v on a read transfer", c.id, opc)
	}
}

// checkOAck checks the OACK against the request (RFC 2347-2349, 7440) and
// the server's caps, and takes the values.
func (c *ftClient) checkOAck(o OAck) {
	w := c.w
	asked := map[string]string{}
	for _, op := range c.opts {
		n := strings.ToLower(op.Name)
		if _, dup := asked[n]; !dup {
			asked[n] = op.Value
		}
	}
	num := func(s string) int64 {
		var v int64
		if _, err := fmt.Sscan(s, &v); err != nil || fmt.Sprint(v) != s {
			w.failf("client %d: OACK value %q", c.id, s)
		}
		return v
	}
	seen := map[string]bool{}
	for _, op := range o.Options {
		n := strings.ToLower(op.Name)
		av, ok := asked[n]
		if !ok || seen[n] {
			w.failf("client %d: OACK option %q not asked for (or twice)", c.id, op.Name)
			continue
		}
		seen[n] = true
		v := num(op.Value)
		a, _ := parseDecimal(av, 1<<31-1)
		switch n {
		case "blksize":
			if v < MinBlockSize || v > int64(w.cfg.MaxBlockSize) || v > int64(a) {
				w.failf("client %d: blksize %d for %q (cap %d)", c.id, v, av, w.cfg.MaxBlockSize)
			}
			c.bs = v
		case "windowsize":
			if v < 1 || v > int64(w.cfg.MaxWindowSize) || v > int64(a) {
				w.failf("client %d: windowsize %d for %q (cap %d)", c.id, v, av, w.cfg.MaxWindowSize)
			}
			c.window = v
		case "timeout":
			// Accepted as asked, or left out (RFC 2349: never lowered);
			// above MaxTimeout it is left out.
			if v < 1 || time.Duration(v)*time.Second > w.cfg.MaxTimeout || v != int64(a) {
				w.failf("client %d: timeout %d for %q (cap %v)", c.id, v, av, w.cfg.MaxTimeout)
			}
		case "tsize":
			if !c.octet || v != int64(len(c.wantFile)) {
				w.failf("client %d: tsize %d, file of %d bytes (octet %v)", c.id, v, len(c.wantFile), c.octet)
			}
		default:
			w.failf("client %d: OACK option %q the server does not know", c.id, op.Name)
		}
	}
	if c.streamed && c.bs*c.window > maxStreamWindow+c.bs {
		w.failf("client %d: a streamed transfer with window %d x %d bytes", c.id, c.window, c.bs)
	}
}

// ftSeed builds a FuzzTransfers input.
type ftSeed struct{ b []byte }

func (s *ftSeed) op(op byte, params ...byte) *ftSeed {
	s.b = append(append(s.b, op), params...)
	return s
}

// rrq adds a read request from client c: ftNames and ftModes indexes, and
// options as (ftOptions index, value index) pairs.
func (s *ftSeed) rrq(c byte, name, mode byte, opts ...[2]byte) *ftSeed {
	var mask byte
	vals := map[byte]byte{}
	for _, o := range opts {
		mask |= 1 << o[0]
		vals[o[0]] = o[1]
	}
	s.op(ftOpRRQ|c<<4, name, mode, mask)
	for i := range byte(len(ftOptions)) {
		if mask&(1<<i) != 0 {
			s.b = append(s.b, vals[i])
		}
	}
	return s
}

// Seeds: what PXE ROMs, iPXE and tftp-hpa do, and what a hostile client
// does to hold slots.
func ftSeeds() [][]byte {
	const (
		blksize, tsize, timeout, windowsize = 0, 1, 2, 3
		octet, netascii, mail               = 0, 1, 4
		undionly, exact, empty, big, text   = 0, 1, 2, 3, 4
		stream, missing, escape, dir        = 5, 8, 9, 11
		alt                                 = 0x80
	)
	seeds := []*ftSeed{
		// iPXE: blksize 1468 and tsize, the whole file.
		(&ftSeed{b: []byte{3, 0}}).rrq(0, undionly, octet, [2]byte{blksize, 3}, [2]byte{tsize, 0}).op(ftOpFinish),
		// A PXE ROM: a tsize probe aborted with ERROR 8 after the OACK,
		// then the real request with blksize.
		(&ftSeed{b: []byte{3, 0}}).rrq(0, undionly, octet, [2]byte{tsize, 0}).op(ftOpError, 8).
			rrq(0, undionly, octet, [2]byte{blksize, 2}).op(ftOpFinish),
		// RFC 7440 windows: a partial ACK, a duplicate ACK, a stale ACK
		// from before a wrap, a retransmission, then to the end.
		(&ftSeed{b: []byte{3, 0}}).rrq(0, big, octet, [2]byte{blksize, 0}, [2]byte{windowsize, 2}).
			op(ftOpAck).op(ftOpAck|alt).op(ftOpAckAny|alt, 0).op(ftOpAckAny|alt, 0xf0).op(ftOpSleep, 1).op(ftOpAck).op(ftOpFinish),
		// netascii and a stream without ReadAt: the window is buffered.
		(&ftSeed{b: []byte{3, 0}}).rrq(0, text, netascii, [2]byte{windowsize, 3}, [2]byte{blksize, 5}).op(ftOpFinish).
			rrq(1<<1, stream, octet, [2]byte{windowsize, 2}).op(ftOpAck|1<<5).op(ftOpAck|alt|1<<5).op(ftOpSleep, 2).op(ftOpFinish | 1<<5),
		// Holding the slots: timeout=255 and never an ACK, from two ports
		// of one address; the third request finds the server busy.
		(&ftSeed{b: []byte{1, 0}}).rrq(0, undionly, octet, [2]byte{timeout, 2}).rrq(1, undionly, octet, [2]byte{timeout, 2}).
			rrq(2, exact, octet).op(ftOpSleep, 4).rrq(3, empty, octet).op(ftOpFinish | 3<<4),
		// Refusals: missing, out of the root, a directory, mode mail, a
		// write; an exact multiple of the block size ends with an empty block.
		(&ftSeed{b: []byte{3, 0}}).rrq(0, missing, octet).rrq(0, escape, octet).rrq(0, dir, octet).
			rrq(0, undionly, mail).op(ftOpWRQ).rrq(0, exact, octet).op(ftOpFinish).rrq(0, empty, octet).op(ftOpFinish),
		// Strangers: another client writes to a running transfer's port;
		// garbage to the port and to the server; a duplicate RRQ.
		(&ftSeed{b: []byte{3, 0}}).rrq(0, big, octet, [2]byte{windowsize, 1}).rrq(1, undionly, octet).
			op(ftOpWrongTID|1<<4, 0).op(ftOpGarbage, 5, 1, 2, 3, 4, 5, 6, 7).op(ftOpGarbageToServer|2<<4, 3, 0, 4, 1, 2, 3).
			op(ftOpDuplicateRRQ).op(ftOpBurst).op(ftOpBurst).op(ftOpFinish | 1<<4),
		// Sockets that fail to open, short timeouts, one retry, a busy
		// server that drops rather than refuses.
		(&ftSeed{b: []byte{0x80 | 0x40 | 0x20 | 0x04, 1}}).op(ftOpRRQBurst, undionly, octet).op(ftOpSleep, 1).
			op(ftOpRRQBurst, big, octet).op(ftOpFinish).op(ftOpFinish | 1<<4),
	}
	// Shutdown while transfers wait for ACKs: at once, and with time
	// to let them finish.
	seeds = append(seeds,
		(&ftSeed{b: []byte{3, 0}}).rrq(0, big, octet, [2]byte{windowsize, 1}).rrq(1, text, netascii).op(ftOpAck).op(ftOpShutdown, 0),
		(&ftSeed{b: []byte{3, 0}}).rrq(0, undionly, octet, [2]byte{timeout, 2}).op(ftOpShutdown, 2))
	out := make([][]byte, len(seeds))
	for i, s := range seeds {
		out[i] = s.b
	}
	return out
}
