package iscsi

// The world FuzzSession runs in: a Server with one or two targets over
// in-memory disks, reached through net.Pipe connections, everything inside
// a testing/synctest bubble. The bubble gives the fuzzer three things a
// loopback socket cannot: time is fake (a 30 s login timeout or a NOP-In
// ping costs nothing), synctest.Wait tells when the target has done all it
// can with what it was sent (so every check runs on a quiescent target,
// deterministically), and a goroutine left behind when the bubble ends
// fails the input.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/diskless-boot/diskless/internal/ratelog"
	"github.com/diskless-boot/diskless/internal/scsi"
)

const (
	fzIQN       = "iqn.2026-11.org.example:fuzz"
	fzIQN2      = "iqn.2026-11.org.example:fuzz2"
	fzInit1     = "iqn.2026-11.org.example:init1"
	fzInit2     = "iqn.2026-11.org.example:init2"
	fzStranger  = "iqn.2026-11.org.example:stranger"
	fzUser      = "fuzz-initiator"
	fzSecret    = "fuzz-secret-0123"
	fzMutual    = "fuzz-target"
	fzMutualSec = "fuzz-mutual-4567"
	fzBlock     = 512
	fzBlocks    = 2048 // 1 MiB per LU
)

// fzMemDevice is a disk.Device in memory.
type fzMemDevice struct {
	mu     sync.RWMutex
	data   []byte
	flipAt int64 // when > 0, reads return this byte flipped (TestFuzzSessionDetects)
}

func (d *fzMemDevice) ReadAt(p []byte, off int64) (int, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if off < 0 || off+int64(len(p)) > int64(len(d.data)) {
		return 0, errors.New("fzmem: read out of range")
	}
	n := copy(p, d.data[off:])
	if d.flipAt > 0 && d.flipAt >= off && d.flipAt < off+int64(n) {
		p[d.flipAt-off] ^= 1
	}
	return n, nil
}

func (d *fzMemDevice) WriteAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if off < 0 || off+int64(len(p)) > int64(len(d.data)) {
		return 0, errors.New("fzmem: write out of range")
	}
	return copy(d.data[off:], p), nil
}

func (d *fzMemDevice) Size() int64  { return int64(len(d.data)) }
func (d *fzMemDevice) Flush() error { return nil }
func (d *fzMemDevice) Close() error { return nil }

// fzLU is one LU and what the fuzz initiators know of its blocks: the
// content of a block is checked on READ only while no write that could
// change it is in flight or of unknown outcome.
type fzLU struct {
	shadow   []byte
	known    []bool   // shadow holds the block's content
	gen      []uint32 // bumped by every write sent that may touch the block
	inflight []int32  // writes sent to the block and not answered
}

func newFzLU() *fzLU {
	return &fzLU{shadow: make([]byte, fzBlocks*fzBlock), known: fillBools(fzBlocks),
		gen: make([]uint32, fzBlocks), inflight: make([]int32, fzBlocks)}
}

func fillBools(n int) []bool {
	b := make([]bool, n)
	for i := range b {
		b[i] = true
	}
	return b
}

// fzAddr names one client connection in the target's logs ("remote").
type fzAddr string

func (a fzAddr) Network() string { return "pipe" }
func (a fzAddr) String() string  { return string(a) }

// fzConn is the target's end of a pipe, with the remote address of its client.
type fzConn struct {
	net.Conn
	remote fzAddr
}

func (c *fzConn) RemoteAddr() net.Addr { return c.remote }

// fzListener hands the target the server ends of pipes.
type fzListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func (l *fzListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *fzListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *fzListener) Addr() net.Addr { return fzAddr("fuzz-portal") }

// fzLogs records what the fuzzer checks in the target's logs: the CmdSNs
// it dropped as outside the window (per connection), panics, and any
// secret that shows up.
type fzLogs struct {
	mu      sync.Mutex
	dropped map[string]map[uint32]bool
	secrets []string
	leaks   []string
	panics  []string
}

type fzLogHandler struct {
	l     *fzLogs
	attrs []slog.Attr
}

func (h *fzLogHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *fzLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &fzLogHandler{l: h.l, attrs: append(slices.Clip(h.attrs), as...)}
}

func (h *fzLogHandler) WithGroup(string) slog.Handler { return h }

func (h *fzLogHandler) Handle(_ context.Context, r slog.Record) error {
	var remote string
	var cmdSN uint64
	hasSN := false
	var text strings.Builder
	text.WriteString(r.Message)
	visit := func(a slog.Attr) bool {
		v := a.Value.Resolve()
		fmt.Fprintf(&text, " %s=%v", a.Key, v)
		switch a.Key {
		case "remote":
			remote = v.String()
		case "cmdsn":
			if v.Kind() == slog.KindUint64 {
				cmdSN, hasSN = v.Uint64(), true
			}
		}
		return true
	}
	for _, a := range h.attrs {
		visit(a)
	}
	r.Attrs(visit)
	h.l.mu.Lock()
	defer h.l.mu.Unlock()
	if r.Message == "iscsi command outside the CmdSN window dropped" && hasSN {
		if h.l.dropped[remote] == nil {
			h.l.dropped[remote] = map[uint32]bool{}
		}
		h.l.dropped[remote][uint32(cmdSN)] = true
	}
	if r.Level >= slog.LevelError && strings.Contains(r.Message, "panic") {
		h.l.panics = append(h.l.panics, text.String())
	}
	for _, s := range h.l.secrets {
		if strings.Contains(text.String(), s) {
			h.l.leaks = append(h.l.leaks, text.String())
		}
	}
	return nil
}

func (l *fzLogs) wasDropped(remote string, sn uint32) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropped[remote][sn]
}

// fzWorld is one fuzz input's target and initiators.
type fzWorld struct {
	t         *testing.T
	srv       *Server
	ln        *fzListener
	logs      *fzLogs
	luns      map[uint64]*fzLU
	devs      []*fzMemDevice // of the first target, by LUN
	clients   [2]*fzClient
	chap      bool
	mutual    bool
	allowList bool
	second    bool // a second target exists
	dials     int
	writeIDs  uint32
	serveDone chan error
	failures  []string
}

// newFzWorld configures the target from two bytes of the input:
//
//	flags: 0 CHAP, 1 mutual CHAP, 2 allow list, 3 NOP-In pings,
//	       4 small memory budgets, 5 a second target, 6 LUN 1, 7 write-through
//	shape: 0-1 queue depth {64, 1, 2, 8}, 2-3 limits {default, small,
//	       medium, InitialR2T/no immediate data}, 4 small MaxTransferLength
func newFzWorld(t *testing.T, flags, shape byte) *fzWorld {
	w := &fzWorld{t: t, luns: map[uint64]*fzLU{0: newFzLU()},
		chap: flags&1 != 0, mutual: flags&3 == 3, allowList: flags&4 != 0, second: flags&0x20 != 0}
	w.logs = &fzLogs{dropped: map[string]map[uint32]bool{}}
	if w.chap {
		w.logs.secrets = append(w.logs.secrets, fzSecret)
	}
	if w.mutual {
		w.logs.secrets = append(w.logs.secrets, fzMutualSec)
	}
	lim := DefaultLimits()
	switch shape >> 2 & 3 {
	case 1:
		lim.MaxRecvDataSegmentLength, lim.MaxBurstLength, lim.FirstBurstLength, lim.MaxOutstandingR2T = 512, 2048, 1024, 2
	case 2:
		lim.MaxRecvDataSegmentLength, lim.MaxBurstLength, lim.FirstBurstLength, lim.MaxOutstandingR2T = 4096, 16384, 8192, 4
	case 3:
		lim.InitialR2T, lim.ImmediateData = true, false
	}
	cfg := Config{
		Limits:     &lim,
		QueueDepth: []int{64, 1, 2, 8}[shape&3],
		Logger:     slog.New(&fzLogHandler{l: w.logs}),
	}
	if flags&8 != 0 {
		cfg.NOPInterval = 5 * time.Second
	}
	if flags&0x10 != 0 {
		cfg.SessionMemory, cfg.TotalMemory = 64<<10, 96<<10
	}
	if shape&0x10 != 0 {
		cfg.MaxTransferLength = 64 << 10
	}
	w.srv = New(cfg)
	// The fuzzer reads every line: which CmdSNs were dropped, what
	// holds a secret. Unlimited, the rate limiters keep out of its way.
	w.srv.warn = ratelog.NewLogger(0, 1<<30)
	w.srv.info = ratelog.NewLogger(0, 1<<30)
	mk := func(name string, lus ...uint64) {
		st := scsi.NewTarget(scsi.TargetConfig{Name: name, RelTargetPort: 1, TargetPortGroup: 1})
		for _, n := range lus {
			dev := &fzMemDevice{data: make([]byte, fzBlocks*fzBlock)}
			if name == fzIQN {
				w.devs = append(w.devs, dev)
			}
			lu, err := scsi.NewLogicalUnit(dev, scsi.LUConfig{Serial: fmt.Sprintf("fuzz%d", n), WriteCacheDisabled: flags&0x80 != 0})
			if err != nil {
				t.Fatal(err)
			}
			if err := st.AddLU(n, lu); err != nil {
				t.Fatal(err)
			}
		}
		tg := &Target{Name: name, Alias: "fuzz", SCSI: st}
		if w.chap {
			tg.CHAP = &Credentials{User: fzUser, Secret: fzSecret}
			if w.mutual {
				tg.MutualCHAP = &Credentials{User: fzMutual, Secret: fzMutualSec}
			}
		}
		if w.allowList {
			tg.AllowedInitiators = []string{fzInit1, fzInit2}
		}
		if err := w.srv.AddTarget(tg); err != nil {
			t.Fatal(err)
		}
	}
	if flags&0x40 != 0 {
		w.luns[1] = newFzLU()
		mk(fzIQN, 0, 1)
	} else {
		mk(fzIQN, 0)
	}
	if w.second {
		mk(fzIQN2, 0)
	}
	w.ln = &fzListener{conns: make(chan net.Conn), closed: make(chan struct{})}
	w.serveDone = make(chan error, 1)
	go func() { w.serveDone <- w.srv.Serve(context.Background(), w.ln) }()
	return w
}

func (w *fzWorld) failf(format string, args ...any) {
	w.failures = append(w.failures, fmt.Sprintf(format, args...))
}

// dial connects a new client in slot i, closing the one there.
func (w *fzWorld) dial(i int) *fzClient {
	if old := w.clients[i]; old != nil {
		old.close()
	}
	w.dials++
	cli, srvEnd := net.Pipe()
	remote := fzAddr(fmt.Sprintf("client-%d", w.dials))
	sc := &fzConn{Conn: srvEnd, remote: remote}
	c := newFzClient(w, cli, sc)
	w.clients[i] = c
	select {
	case w.ln.conns <- sc:
	case <-w.ln.closed:
	}
	return c
}

// settle writes what the clients have pending, waits until the target is
// idle, takes in what it answered, and checks the target's state.
func (w *fzWorld) settle() {
	for _, c := range w.clients {
		if c != nil {
			c.flush()
		}
	}
	synctest.Wait()
	for _, c := range w.clients {
		if c != nil {
			c.takeResponses()
		}
	}
	w.checkIdleTarget()
}

// serverConn finds the target's connection of a client, nil once it is gone.
func (w *fzWorld) serverConn(c *fzClient) *conn {
	w.srv.mu.Lock()
	defer w.srv.mu.Unlock()
	for sc := range w.srv.conns {
		if sc.nc == net.Conn(c.srvEnd) {
			return sc
		}
	}
	return nil
}

// checkIdleTarget checks the bookkeeping of every connection of an idle
// target: each task is waiting for something only the initiator can send
// (its CmdSN gap to fill, or data it was asked for), the counts of active
// tasks and of buffer bytes agree with the tasks, and nothing is left
// unwritten.
func (w *fzWorld) checkIdleTarget() {
	w.srv.mu.Lock()
	conns := make([]*conn, 0, len(w.srv.conns))
	for c := range w.srv.conns {
		conns = append(conns, c)
	}
	w.srv.mu.Unlock()
	var total int64
	byTarget := map[*atomic.Int64]int64{}
	for _, c := range conns {
		if c.sess == nil || c.isClosed() {
			continue // logging in, or tearing down
		}
		name := c.nc.RemoteAddr().String()
		c.mu.Lock()
		exp := c.expCmdSN.Load()
		active, mem := 0, int64(0)
		waiting := map[uint32]bool{}
		for itt, t := range sortedTasks(c.tasks) {
			switch {
			case t.cmd.ITT != itt:
				w.failf("%s: task %#x filed under ITT %#x", name, t.cmd.ITT, itt)
			case t.aborted.Load():
				w.failf("%s: aborted task %#x still in the task table", name, itt)
			case t.executing:
				w.failf("%s: task %#x executing on an idle target", name, itt)
			case !t.delivered && t.cmd.Immediate:
				w.failf("%s: immediate task %#x never delivered", name, itt)
			case !t.delivered && !snLess(exp, t.cmd.CmdSN):
				w.failf("%s: task %#x (CmdSN %d) passed by ExpCmdSN %d without being delivered", name, itt, t.cmd.CmdSN, exp)
			case !t.delivered && !queuedHas(c.queued, t.cmd.CmdSN):
				w.failf("%s: task %#x (CmdSN %d) neither delivered nor queued", name, itt, t.cmd.CmdSN)
			case !t.delivered && waiting[t.cmd.CmdSN]:
				w.failf("%s: task %#x waits on CmdSN %d, which another task waits on", name, itt, t.cmd.CmdSN)
			case t.delivered && (!t.write || t.dataDone):
				w.failf("%s: task %#x delivered with all its data but never run", name, itt)
			case t.write && !t.dataDone && t.unsolicitedRecv >= t.unsolicitedEnd && len(t.r2ts) == 0:
				w.failf("%s: task %#x waits for data it never asked for (%d/%d unsolicited, R2T up to %d of %d)",
					name, itt, t.unsolicitedRecv, t.unsolicitedEnd, t.nextR2TOffset, t.edtl)
			}
			if t.delivered {
				active++
			} else {
				waiting[t.cmd.CmdSN] = true
			}
			if t.memHeld {
				mem += int64(t.edtl)
			}
		}
		for sn := range c.queued {
			if !snLess(exp, sn) {
				w.failf("%s: CmdSN %d queued behind ExpCmdSN %d", name, sn, exp)
			}
		}
		if active != c.active {
			w.failf("%s: %d tasks delivered, active count %d", name, active, c.active)
		}
		if mem != c.memUsed {
			w.failf("%s: tasks hold %d buffer bytes, the connection counts %d", name, mem, c.memUsed)
		}
		total += c.memUsed
		if c.memTarget != nil {
			byTarget[c.memTarget] += c.memUsed
		}
		c.mu.Unlock()
		if len(c.held) != 0 || c.queuedItems.Load() != 0 {
			w.failf("%s: %d held and %d queued responses on an idle connection", name, len(c.held), c.queuedItems.Load())
		}
	}
	if used := w.srv.mem.used(); used != total {
		w.failf("server counts %d buffer bytes, its connections %d", used, total)
	}
	w.srv.mem.mu.Lock()
	for name, counter := range w.srv.mem.byTarget {
		if n := counter.Load(); n != byTarget[counter] {
			w.failf("target %s counts %d buffer bytes, its sessions %d", name, n, byTarget[counter])
		}
	}
	w.srv.mem.mu.Unlock()
}

func queuedHas(q map[uint32]admitted, sn uint32) bool {
	_, ok := q[sn]
	return ok
}

// sortedTasks orders a task table by ITT, so failures read the same on
// every run.
func sortedTasks(m map[uint32]*task) func(func(uint32, *task) bool) {
	return func(yield func(uint32, *task) bool) {
		for _, itt := range slices.Sorted(maps.Keys(m)) {
			if !yield(itt, m[itt]) {
				return
			}
		}
	}
}

// finish completes every command as a well-behaved initiator would, checks
// that each was answered or legitimately dropped, closes everything, and
// checks that the target let go of all it held.
func (w *fzWorld) finish() {
	w.settle()
	for _, c := range w.clients {
		if c != nil {
			c.complete()
		}
	}
	for _, c := range w.clients {
		if c != nil {
			c.checkAnswered()
			if sc := w.serverConn(c); sc != nil && sc.sess != nil && !c.eof() {
				sc.mu.Lock()
				if len(sc.tasks) != 0 || len(sc.queued) != 0 || sc.memUsed != 0 {
					w.failf("%s: after the initiator completed everything: %d tasks, %d queued, %d buffer bytes",
						c.remote, len(sc.tasks), len(sc.queued), sc.memUsed)
				}
				sc.mu.Unlock()
			}
		}
	}
	for _, c := range w.clients {
		if c != nil {
			c.close()
		}
	}
	synctest.Wait()
	w.srv.mu.Lock()
	nconns, nsess := len(w.srv.conns), len(w.srv.sessions)
	w.srv.mu.Unlock()
	if nconns != 0 || nsess != 0 {
		w.failf("all initiators gone, the target still has %d connections and %d sessions", nconns, nsess)
	}
	if used := w.srv.mem.used(); used != 0 {
		w.failf("all connections closed, %d buffer bytes still counted", used)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := w.srv.Shutdown(ctx); err != nil {
		w.failf("shutdown: %v", err)
	}
	if err := <-w.serveDone; err != nil {
		w.failf("serve: %v", err)
	}
	if n := w.srv.Panics(); n != 0 {
		w.failf("%d connection handlers panicked: %v", n, w.logs.panics)
	}
	if len(w.logs.leaks) > 0 {
		w.failf("a secret is in the logs: %q", w.logs.leaks[0])
	}
}
