package iscsi

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/diskless-boot/diskless/internal/disk"
	"github.com/diskless-boot/diskless/internal/iscsi/pdu"
	"golang.org/x/sys/unix"
)

// loginMaxData is the MaxRecvDataSegmentLength in force during login
// (RFC 7143 13.12: the default applies until negotiated).
const loginMaxData = 8192

// conn is one TCP connection. Its reader goroutine (serve) decodes PDUs
// and runs small commands itself (quick); other commands execute in a
// goroutine of their own. Every write happens under wmu, which stamps
// StatSN in the order responses reach the socket: by the writer goroutine
// (writeLoop) for what is queued, by a sender directly when nothing is
// (send), by the reader for the responses it held back (hold), or by a
// device's completion as far as the socket takes it without waiting
// (enqueue), the writer sending the rest.
type conn struct {
	srv *Server
	nc  net.Conn
	log *slog.Logger
	rd  pdu.Reader
	br  *bufio.Reader // under rd: what is buffered tells whether a read may block

	// held are responses of commands the reader ran itself, not yet
	// written because more input was already buffered (reader only).
	held []*outItem

	// rawConn is set when the socket can take sendfile(2).
	rawConn syscall.RawConn

	sess    *session
	sessCID uint16
	params  Params // as negotiated at login
	// sendSeg is the initiator's MaxRecvDataSegmentLength, which it may
	// declare anew in the full feature phase (RFC 7143 13.12).
	sendSeg atomic.Uint32
	ffpNeg  *Negotiator

	// Login-phase StatSN; writeLoop owns it after login.
	statSN uint32

	out        chan *outItem
	writerDone chan struct{}

	// Write side, under wmu: the batch being written and its scratch.
	wmu         sync.Mutex
	queuedItems atomic.Int32 // items in out or taken from it and not yet written
	batch       []*outItem
	frames      []byte
	iov         [][]byte
	wbufs       net.Buffers  // writeIOV's argument to WriteTo
	iovecs      []unix.Iovec // writeNow's argument to writev
	wfailed     bool
	// rest is what a write that could not wait (enqueue) left unwritten,
	// and restItems the items it belongs to: the writer sends it before
	// anything else, then releases them.
	rest      [][]byte
	restItems []*outItem

	// CmdSN window (RFC 7143 4.2.2.1). expCmdSN is advanced by the
	// reader only; maxCmdSN also moves as tasks complete.
	expCmdSN atomic.Uint32
	maxCmdSN atomic.Uint32

	mu       sync.Mutex
	tasks    map[uint32]*task    // by ITT, until the response is queued
	queued   map[uint32]admitted // commands that arrived ahead of ExpCmdSN
	active   int                 // tasks delivered and not yet answered
	memUsed  int64               // bytes of data buffers held by tasks
	nextTTT  uint32              // Target Transfer Tags for R2T
	aborted  map[uint32]struct{} // CmdSNs aborted before they arrived
	running  sync.WaitGroup      // executing commands
	closed   chan struct{}       // closed by abort
	closeErr error

	// loggedOut: a Logout Response of success is on the wire, the
	// connection ends (RFC 7143 11.14). Reader goroutine only.
	loggedOut bool

	// Text response still to be fetched with continuation requests.
	textPending []byte
	textTTT     uint32

	// What the watchdog (watch) reads to enforce the time bounds of the
	// full feature phase; the reader writes them.
	rxCount      atomic.Uint64 // PDUs received
	dataOutCount atomic.Uint64 // Data-Out PDUs placed in a task's buffer
	gotCommand   atomic.Bool   // a SCSI command has arrived
	nopProven    atomic.Bool   // the initiator sent a NOP-Out ping of its own
	pingPending  atomic.Uint32 // TTT of our unanswered NOP-In ping, 0 if none
	watchDone    chan struct{}

	// Admission (admit), under srv.mu.
	src      netip.Prefix
	accepted time.Time
	tracked  bool // counted in srv.conns and its source
	pending  bool // not (yet) a normal session: may be evicted

	// memTarget counts the memory of the session's target (memBudget);
	// nil in discovery sessions, which carry no commands.
	memTarget *atomic.Int64
	// cmds counts the commands of the session's target; nil in
	// discovery sessions.
	cmds *cmdCounters

	closeOnce sync.Once
	finished  chan struct{} // closed when the connection has cleaned up
}

// newConn returns the bare connection that admit counts; serve sets up
// the rest, so that a refused or evicted connection costs little.
func newConn(s *Server, nc net.Conn) *conn {
	return &conn{
		srv:      s,
		nc:       nc,
		log:      s.log,
		closed:   make(chan struct{}),
		finished: make(chan struct{}),
	}
}

// setup prepares an admitted connection for serve.
func (c *conn) setup() {
	nc := c.nc
	if tc, ok := nc.(*net.TCPConn); ok {
		// Sessions sit idle for long stretches (GRUB menu, iPXE
		// console); TCP keepalive finds dead peers without iSCSI pings
		// that iPXE would ignore.
		tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second, Interval: 10 * time.Second, Count: 6})
		tc.SetNoDelay(true)
		if rc, err := tc.SyscallConn(); err == nil {
			c.rawConn = rc
		}
	}
	c.log = c.srv.log.With("remote", nc.RemoteAddr().String())
	c.tasks = make(map[uint32]*task)
	c.queued = make(map[uint32]admitted)
	c.aborted = make(map[uint32]struct{})
	c.br = bufio.NewReaderSize(nc, 64<<10)
	c.rd = pdu.Reader{R: c.br, MaxData: loginMaxData}
}

// warn logs client misbehaviour or a refusal, rate limited.
func (c *conn) warn(msg string, args ...any) { c.srv.warn.Log(c.log, slog.LevelWarn, msg, args...) }

// info logs a state change a client can cause at will, rate limited.
func (c *conn) info(msg string, args ...any) { c.srv.info.Log(c.log, slog.LevelInfo, msg, args...) }

// isClosed reports whether abort has been called.
func (c *conn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// abort closes the connection; the reader notices and cleans up.
func (c *conn) abort(reason error) {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closeErr = reason
		c.mu.Unlock()
		close(c.closed)
		c.nc.Close()
	})
}

func (c *conn) serve() {
	defer close(c.finished)
	defer func() {
		if r := recover(); r != nil {
			c.srv.stats.panics.Add(1)
			c.srv.warn.Log(c.log, slog.LevelError, "iscsi connection handler panicked", "panic", r, "stack", string(debug.Stack()))
			c.abort(fmt.Errorf("panic: %v", r))
			c.teardown()
		}
	}()
	c.setup()
	c.nc.SetDeadline(time.Now().Add(c.srv.cfg.LoginTimeout))
	if err := c.login(); err != nil {
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			// The deadline covers the whole login, however slowly its
			// PDUs trickle in.
			c.srv.stats.loginTimeouts.Add(1)
			c.warn("iscsi login timed out", "after", c.srv.cfg.LoginTimeout)
		case c.isClosed():
			// Evicted or shut down: whoever closed it has said so.
		case errors.Is(err, errMutualRefused):
			c.warn("iscsi login failed", "err", err)
		case !errors.Is(err, io.EOF):
			c.info("iscsi login failed", "err", err)
		}
		c.abort(err)
		// A login that failed after binding its session (the last
		// response could not be sent) must not leave it registered.
		c.teardown()
		return
	}
	c.nc.SetDeadline(time.Time{})
	c.out = make(chan *outItem, 256)
	c.writerDone = make(chan struct{})
	go c.writeLoop()
	if tick := c.watchTick(); tick > 0 {
		c.watchDone = make(chan struct{})
		go c.watch(tick)
	}
	err := c.readLoop()
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, errLogout) {
		c.info("iscsi connection closed", "tsih", c.sess.tsih, "err", err)
	}
	c.abort(err)
	c.teardown()
}

// teardown ends every task of the connection, stops the writer and
// releases the session (I_T nexus loss for the SCSI target).
func (c *conn) teardown() {
	if c.sess == nil {
		return
	}
	c.mu.Lock()
	var idle []*task
	for _, t := range c.tasks {
		if !t.executing {
			idle = append(idle, t)
		}
		c.dropTaskLocked(t)
	}
	c.mu.Unlock()
	// The reader is done: the buffers of tasks that never ran (WRITEs
	// still waiting for Data-Out) have no other user.
	for _, t := range idle {
		putBuf(t.buf)
		t.buf = nil
	}
	c.running.Wait()
	if c.watchDone != nil {
		<-c.watchDone
	}
	if c.out != nil {
		close(c.out)
		<-c.writerDone
	}
	if !c.sess.discovery {
		c.srv.endTrace(c.sess) // before unbinding: SessionCount 0 means every trace is closed
		// Before unbinding: a login that no longer finds this session
		// (bindSession) must not find its nexus' state either.
		c.sess.target.SCSI.NexusLost(c.sess.nexus)
		c.srv.unbindSession(c.sess)
		c.info("iscsi session ended", "tsih", c.sess.tsih)
	}
	c.sess = nil
}

// peerClosed reports whether the connection is over: the initiator closed
// it and nothing is left to read (a peek returns 0 bytes), or this side
// closed the socket already (its teardown is under way). It never waits,
// and does not take the reader's place (the socket is peeked beside it).
// A connection that cannot be peeked (not TCP) reports false.
func (c *conn) peerClosed() bool {
	if c.rawConn == nil {
		return false
	}
	closed := false
	if err := c.rawConn.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		closed = n == 0 && err == nil
	}); err != nil {
		return true // the socket is closed
	}
	return closed
}

var errLogout = errors.New("logged out")

// readLoop is the full feature phase: one PDU at a time.
func (c *conn) readLoop() error {
	defer c.flushHeld()
	var p pdu.PDU
	for {
		if len(c.held) > 0 && c.br.Buffered() < pdu.BHSLen {
			// The next read may wait for the initiator, which may
			// be waiting for these.
			c.flushHeld()
		}
		err := c.rd.ReadHeader(&p)
		c.rxCount.Add(1) // for the watchdog
		if err == nil && c.isClosed() {
			// Aborted by what the last PDU did (a cold reset): the
			// rest, even if already buffered, is not for us.
			err = net.ErrClosed
		}
		if err != nil {
			if errors.Is(err, pdu.ErrTooLong) {
				c.reject(&p.BHS, pdu.RejectProtocolError)
			}
			return err
		}
		switch op := p.BHS.Opcode(); op {
		case pdu.OpSCSICommand:
			err = c.handleSCSICommand(&p)
		case pdu.OpDataOut:
			err = c.handleDataOut(&p)
		default:
			// Task management waits for the responses of the tasks it
			// aborts; every other control PDU goes after them anyway.
			c.flushHeld()
			if err = c.rd.ReadDataInto(&p); err != nil {
				if errors.Is(err, pdu.ErrDataDigest) {
					c.reject(&p.BHS, pdu.RejectDataDigestError)
					continue
				}
				return err
			}
			err = c.handleControl(&p)
		}
		if err == nil && c.loggedOut {
			err = errLogout
		}
		if err != nil {
			return err
		}
	}
}

// inCmdSNWindow reports whether a non-immediate command's CmdSN lies in
// [ExpCmdSN, MaxCmdSN]; one outside is ignored (RFC 7143 4.2.2.1) and
// logged at debug level.
func (c *conn) inCmdSNWindow(cmdSN uint32) bool {
	exp, max := c.expCmdSN.Load(), c.maxCmdSN.Load()
	if snLessEq(exp, cmdSN) && snLessEq(cmdSN, max) {
		return true
	}
	c.srv.info.Log(c.log, slog.LevelDebug, "iscsi command outside the CmdSN window dropped", "cmdsn", cmdSN, "exp", exp, "max", max)
	return false
}

// rejectData skips the data segment of the PDU whose header h was read
// and rejects it with reason (RFC 7143 11.17).
func (c *conn) rejectData(h *pdu.BHS, reason uint8) error {
	if err := c.rd.DiscardData(); err != nil {
		return err
	}
	c.reject(h, reason)
	return nil
}

// admitted is a command waiting in the CmdSN queue for the gap before it
// to fill.
type admitted struct{ deliver, drop func() }

// admit applies the CmdSN rules to a non-immediate command (RFC 7143
// 4.2.2.1): outside [ExpCmdSN, MaxCmdSN] it is silently ignored; at
// ExpCmdSN it is delivered now; ahead of it, it waits for the gap to fill.
// deliver runs in CmdSN order on the reader goroutine. drop, when not nil,
// runs instead for a command that will not be delivered: one outside the
// window, a duplicate of a CmdSN already waiting, or one whose CmdSN a task
// management function aborted before it arrived (RFC 7143 11.5.1: that
// CmdSN "counts as received"). It lets the caller free what the command
// holds; without it, a task would stay in the table, its buffer counted,
// until the connection ends.
func (c *conn) admit(cmdSN uint32, immediate bool, deliver, drop func()) {
	if drop == nil {
		drop = func() {}
	}
	if immediate {
		deliver()
		return
	}
	if !c.inCmdSNWindow(cmdSN) {
		drop()
		return
	}
	exp := c.expCmdSN.Load()
	c.mu.Lock()
	if _, dup := c.queued[cmdSN]; dup {
		c.mu.Unlock()
		drop()
		return
	}
	if cmdSN != exp {
		c.queued[cmdSN] = admitted{deliver, drop}
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	for {
		c.mu.Lock()
		_, skip := c.aborted[exp]
		delete(c.aborted, exp)
		c.mu.Unlock()
		exp++
		c.expCmdSN.Store(exp)
		c.updateMaxCmdSN()
		if skip {
			drop()
		} else {
			deliver()
		}
		if c.loggedOut {
			return // what waits behind a Logout ends with the connection
		}
		c.mu.Lock()
		next, ok := c.queued[exp]
		delete(c.queued, exp)
		c.mu.Unlock()
		if !ok {
			return
		}
		deliver, drop = next.deliver, next.drop
	}
}

// updateMaxCmdSN recomputes MaxCmdSN from the commands in progress, so a
// session never has more than QueueDepth of them. It never moves back.
func (c *conn) updateMaxCmdSN() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.updateMaxCmdSNLocked()
}

func (c *conn) updateMaxCmdSNLocked() {
	room := max(c.srv.cfg.QueueDepth-c.active, 1)
	m := c.expCmdSN.Load() + uint32(room) - 1
	if snLess(c.maxCmdSN.Load(), m) {
		c.maxCmdSN.Store(m)
	}
}

// handleControl dispatches every PDU but SCSI Command and Data-Out; its
// data segment has been read into p.Data.
func (c *conn) handleControl(p *pdu.PDU) error {
	h := &p.BHS
	switch h.Opcode() {
	case pdu.OpNOPOut:
		m, _ := pdu.ParseNOPOut(h)
		if m.ITT == pdu.ReservedTag {
			// Answer to a NOP-In ping of ours: nothing to send (11.18.1).
			c.pingPending.CompareAndSwap(m.TTT, 0)
			return nil
		}
		// A ping of the initiator's own: it implements NOPs, so it
		// answers ours (Config.ProvenNOPInterval).
		if !c.nopProven.Load() {
			c.nopProven.Store(true)
		}
		if len(p.Data) > int(c.params.MaxRecvDataSegmentLength) {
			c.reject(h, pdu.RejectProtocolError)
			return nil
		}
		data := append([]byte(nil), p.Data...)
		c.admit(m.CmdSN, m.Immediate, func() {
			r := pdu.NOPIn{LUN: m.LUN, ITT: m.ITT, TTT: pdu.ReservedTag}
			item := &outItem{pdus: []outPDU{{data: data, sn: snAdvance}}}
			r.Marshal(&item.pdus[0].bhs)
			c.send(item)
		}, nil)
	case pdu.OpTextReq:
		m, _ := pdu.ParseTextRequest(h)
		data := append([]byte(nil), p.Data...)
		hdr := *h // p is reused before a queued command runs
		c.admit(m.CmdSN, m.Immediate, func() { c.handleText(m, &hdr, data) }, nil)
	case pdu.OpTaskMgmtReq:
		if c.sess.discovery {
			// No tasks to manage in a discovery session (RFC 7143 4.3).
			c.reject(h, pdu.RejectProtocolError)
			return nil
		}
		m, _ := pdu.ParseTaskMgmtRequest(h)
		c.admit(m.CmdSN, m.Immediate, func() { c.handleTaskMgmt(m) }, nil)
	case pdu.OpLogoutReq:
		m, _ := pdu.ParseLogoutRequest(h)
		hdr := *h
		// A Logout queued behind a CmdSN gap runs when another PDU
		// fills it: what it decides goes in c.loggedOut, which the
		// read loop checks after every PDU.
		c.admit(m.CmdSN, m.Immediate, func() { c.loggedOut = c.handleLogout(m, &hdr) }, nil)
	case pdu.OpSNACKReq:
		// ErrorRecoveryLevel 0: SNACK is not supported (RFC 7143 11.16).
		c.reject(h, pdu.RejectSNACKReject)
	case pdu.OpLoginReq:
		// A login on a logged-in connection is a protocol error (6.1).
		c.reject(h, pdu.RejectProtocolError)
	default:
		c.reject(h, pdu.RejectCmdNotSupported)
	}
	return nil
}

// handleLogout answers a Logout Request whose header is h.
func (c *conn) handleLogout(m pdu.LogoutRequest, h *pdu.BHS) bool {
	resp := pdu.LogoutResponse{ITT: m.ITT, Response: pdu.LogoutSuccess}
	switch m.Reason {
	case pdu.LogoutCloseSession:
	case pdu.LogoutCloseConnection:
		if m.CID != c.sessCID {
			resp.Response = pdu.LogoutCIDNotFound
		}
	case pdu.LogoutRemoveForRecov:
		resp.Response = pdu.LogoutRecoveryNotSupp
	default:
		c.reject(h, pdu.RejectInvalidPDUField)
		return false
	}
	// Let commands in progress finish so their responses precede ours.
	c.running.Wait()
	item := &outItem{pdus: []outPDU{{sn: snAdvance}}}
	resp.Marshal(&item.pdus[0].bhs)
	if resp.Response != pdu.LogoutSuccess {
		c.send(item)
		return false
	}
	if !c.sess.discovery {
		// The nexus is gone before the initiator hears so: it may log
		// in again and send a command at once, which must not find the
		// old session's PREVENT or RESERVE (libiscsi's
		// PreventAllow.Logout failed on that race). teardown repeats it.
		c.sess.target.SCSI.NexusLost(c.sess.nexus)
	}
	flushed := make(chan struct{})
	item.release = func() { close(flushed) }
	c.send(item)
	<-flushed
	c.info("iscsi logout", "tsih", c.sess.tsih)
	return true
}

// reject sends a Reject PDU carrying the offending header (RFC 7143 11.17).
// The header is how the initiator learns which command failed: one left
// out leaves that command waiting for an answer forever (11.17.1 requires
// it). h is nil only when no PDU is at fault.
func (c *conn) reject(h *pdu.BHS, reason uint8) {
	c.warn("iscsi PDU rejected", "reason", reason, "op", opName(h))
	item := &outItem{pdus: []outPDU{{sn: snAdvance}}}
	r := pdu.Reject{Reason: reason, DataSN: 0}
	r.Marshal(&item.pdus[0].bhs)
	if h != nil {
		item.pdus[0].data = append([]byte(nil), h[:]...)
	}
	if c.out == nil {
		return
	}
	c.send(item)
}

func opName(h *pdu.BHS) string {
	if h == nil {
		return ""
	}
	return h.Opcode().String()
}

// snMode says how the writer fills the sequence-number fields of a PDU.
type snMode uint8

const (
	snNone    snMode = iota // Data-In without status: ExpCmdSN/MaxCmdSN only
	snPeek                  // R2T, NOP-In ping: current StatSN, not advanced
	snAdvance               // responses carrying status: next StatSN
)

type outPDU struct {
	bhs  pdu.BHS
	data []byte
	file disk.FileRange // data to send from a file instead, if Len > 0
	sn   snMode
}

// outItem is a group of PDUs written in order, then released.
type outItem struct {
	pdus    []outPDU
	release func() // after the write (success or not)
	// answered, when counted, is the command whose status the item
	// carries, counted once the item is written.
	answered answered
}

// maxHeld bounds the responses the reader holds back before writing them.
const maxHeld = 32

// hold keeps the response of a command the reader ran itself until the
// reader has taken the commands already buffered behind it (or maxHeld
// are waiting): at queue depth 32 one writev then carries a dozen
// responses instead of one, and the response of a lone command still goes
// out before the reader waits for more. Reader goroutine only.
func (c *conn) hold(item *outItem) {
	c.held = append(c.held, item)
	if len(c.held) >= maxHeld {
		c.flushHeld()
	}
}

// flushHeld sends the held responses as one batch. Reader goroutine only.
func (c *conn) flushHeld() {
	if len(c.held) == 0 {
		return
	}
	c.sendBatch(c.held)
	clear(c.held)
	c.held = c.held[:0]
}

// send hands item to the write side (sendBatch).
func (c *conn) send(item *outItem) {
	items := [1]*outItem{item}
	c.sendBatch(items[:])
}

// sendBatch hands items to the write side. When nothing is queued or being
// written, the caller writes them itself, with one writev: at queue depth
// 1 that saves a goroutine hand-off (and often a thread wake-up) per
// command. Otherwise the items join the writer goroutine's queue, so the
// caller never waits for another's write. Either way StatSN is stamped
// under wmu, in the order PDUs reach the socket.
func (c *conn) sendBatch(items []*outItem) {
	if c.lockIdle() {
		c.batch = append(c.batch[:0], items...)
		c.writeBatchLocked()
		c.wmu.Unlock()
		release(items)
		return
	}
	c.queuedItems.Add(int32(len(items)))
	for _, it := range items {
		c.out <- it
	}
}

// enqueue hands item to the write side and never waits: it runs in a
// device's completion, on a thread that completes other disks' I/O too.
// When nothing is queued or being written it writes item itself, as far
// as the socket takes it without waiting (tryWriteLocked): that spares
// a hand-off to the writer goroutine, and the thread wake-up it costs,
// per READ. What the socket did not take waits in c.rest for the writer,
// which sends it before anything queued after it. Otherwise item joins
// the writer's queue; when that is full (a slow initiator) a goroutine of
// its own waits to add it, counted in running so the queue is not closed
// under it.
func (c *conn) enqueue(item *outItem) {
	if c.rawConn == nil || item.hasFile() || !c.lockIdle() {
		c.queuedItems.Add(1)
		c.queue(item)
		return
	}
	c.batch = append(c.batch[:0], item)
	if c.tryWriteLocked() {
		c.wmu.Unlock()
		release([]*outItem{item})
		return
	}
	// Counted until the writer has taken wakeWriter: senders queue
	// behind the rest meanwhile.
	c.queuedItems.Add(1)
	c.wmu.Unlock()
	c.queue(wakeWriter)
}

// lockIdle takes wmu when nothing is queued or being written, so that the
// caller may write at once; it never waits.
func (c *conn) lockIdle() bool {
	if c.queuedItems.Load() != 0 || !c.wmu.TryLock() {
		return false
	}
	if c.queuedItems.Load() != 0 {
		c.wmu.Unlock()
		return false
	}
	return true
}

// release releases items once written (or never to be).
func release(items []*outItem) {
	for _, it := range items {
		if it.release != nil {
			it.release()
		}
	}
}

// wakeWriter is queued to make the writer send c.rest; it carries nothing.
var wakeWriter = &outItem{}

// queue adds an item counted in queuedItems to the writer's queue without
// waiting (enqueue).
func (c *conn) queue(item *outItem) {
	select {
	case c.out <- item:
	default:
		c.running.Add(1)
		go func() {
			defer c.running.Done()
			c.out <- item
		}()
	}
}

// hasFile reports whether item sends data from a file (sendfile), which
// only a write that may wait can do.
func (item *outItem) hasFile() bool {
	for i := range item.pdus {
		if item.pdus[i].file.Len > 0 {
			return true
		}
	}
	return false
}

// writeLoop writes what send queued: it takes everything waiting and
// writes it as one batch. After a write error it keeps draining
// (releasing buffers) until the queue is closed.
func (c *conn) writeLoop() {
	defer close(c.writerDone)
	var batch []*outItem
	for item := range c.out {
		batch = append(batch[:0], item)
	drain:
		for len(batch) < 128 {
			select {
			case it, ok := <-c.out:
				if !ok {
					break drain
				}
				batch = append(batch, it)
			default:
				break drain
			}
		}
		c.wmu.Lock()
		rest := c.writeRestLocked()
		c.batch = append(c.batch[:0], batch...)
		c.writeBatchLocked()
		c.queuedItems.Add(-int32(len(batch)))
		c.wmu.Unlock()
		release(rest)
		release(batch)
	}
}

// writeRestLocked writes what tryWriteLocked left, waiting as a write may,
// and returns the items to release once wmu is released. Called by the
// writer with c.wmu held.
func (c *conn) writeRestLocked() []*outItem {
	items := c.restItems
	if items == nil {
		return nil
	}
	if !c.wfailed {
		if err := c.writeIOV(c.rest); !c.wroteLocked(items, err) {
			c.abort(err)
		}
	}
	clear(c.rest)
	c.rest, c.restItems = nil, nil
	return items
}

// writeBatchLocked stamps the sequence numbers of c.batch and writes it
// with as few syscalls as it can: one writev, split only around file data
// sent with sendfile. Called with c.wmu held.
func (c *conn) writeBatchLocked() {
	if c.wfailed {
		return
	}
	iov, err := c.frameBatchLocked(true)
	if err == nil {
		err = c.writeIOV(iov)
	}
	if !c.endBatchLocked(iov, err) {
		c.abort(err)
	}
}

// tryWriteLocked writes c.batch, which sends no file data, as far as the
// socket takes it without waiting. It reports whether the batch is done
// with (written, or the connection failed); if not, the rest is in c.rest
// and c.restItems for the writer, and the items must not be released.
// Called with c.wmu held and nothing queued.
func (c *conn) tryWriteLocked() bool {
	if c.wfailed {
		clear(c.batch)
		return true
	}
	iov, _ := c.frameBatchLocked(false)
	n, err := c.writeNow(iov)
	if err != nil || n == iovLen(iov) {
		if !c.endBatchLocked(iov, err) {
			// Closing the socket waits for the reader to let go of
			// it: not on a device's completion thread.
			go c.abort(err)
		}
		return true
	}
	// The rest points into c.frames and c.iov: they go with it, and the
	// next batch takes new ones.
	c.rest = skipBytes(iov, n)
	c.restItems = append([]*outItem(nil), c.batch...)
	c.frames, c.iov = nil, nil
	clear(c.batch)
	return false
}

// frameBatchLocked stamps the sequence numbers of c.batch and returns the
// buffers to write: frames for the headers, digests and padding, and the
// items' data. With sendFiles it writes what comes before each PDU whose
// data is in a file, then the file data (sendfile); without, the batch
// must have no file data. Called with c.wmu held.
func (c *conn) frameBatchLocked(sendFiles bool) (iov [][]byte, err error) {
	hd, dd := c.params.HeaderDigest, c.params.DataDigest
	n := 0
	for _, it := range c.batch {
		n += len(it.pdus)
	}
	// Each PDU needs at most 48+4 header bytes and 3+4 trailer bytes;
	// frames must not grow while iov points into it.
	if cap(c.frames) < n*64 {
		c.frames = make([]byte, 0, n*64)
	}
	frames := c.frames[:0]
	iov = c.iov[:0]
	exp, max := c.expCmdSN.Load(), c.maxCmdSN.Load()
	for _, it := range c.batch {
		for i := range it.pdus {
			op := &it.pdus[i]
			h := &op.bhs
			switch op.sn {
			case snAdvance:
				binary.BigEndian.PutUint32(h[24:], c.statSN)
				c.statSN++
			case snPeek:
				binary.BigEndian.PutUint32(h[24:], c.statSN)
			}
			binary.BigEndian.PutUint32(h[28:], exp)
			binary.BigEndian.PutUint32(h[32:], max)
			dl := len(op.data)
			if op.file.Len > 0 {
				dl = int(op.file.Len)
			}
			h[4], h[5], h[6], h[7] = 0, byte(dl>>16), byte(dl>>8), byte(dl)
			start := len(frames)
			frames = append(frames, h[:]...)
			if hd {
				frames = binary.LittleEndian.AppendUint32(frames, pdu.Digest(h[:]))
			}
			iov = append(iov, frames[start:len(frames):len(frames)])
			if op.file.Len > 0 && sendFiles && err == nil {
				// Headers so far go out first, then the kernel
				// sends the data from the page cache.
				err = c.writeIOV(iov)
				iov = iov[:0]
				if err == nil {
					err = c.sendFile(op.file)
				}
			} else if dl > 0 {
				iov = append(iov, op.data)
			}
			if pad := pdu.Pad(dl); dl > 0 && (pad > 0 || dd) {
				tstart := len(frames)
				frames = append(frames, zeroPad[:pad]...)
				if dd {
					frames = binary.LittleEndian.AppendUint32(frames, pdu.Digest(op.data, zeroPad[:pad]))
				}
				iov = append(iov, frames[tstart:len(frames):len(frames)])
			}
		}
	}
	c.frames = frames
	return iov, err
}

// endBatchLocked ends the write of c.batch through iov (wroteLocked) and
// keeps iov's array for the next batch. Called with c.wmu held.
func (c *conn) endBatchLocked(iov [][]byte, err error) bool {
	ok := c.wroteLocked(c.batch, err)
	clear(iov)
	c.iov = iov[:0]
	clear(c.batch)
	return ok
}

// wroteLocked ends a write of items' PDUs that returned err: it counts
// what they answered, or marks the write side failed and reports false,
// for the caller to abort the connection. Called with c.wmu held.
func (c *conn) wroteLocked(items []*outItem, err error) bool {
	if err != nil {
		c.wfailed = true
		return false
	}
	if c.cmds != nil {
		c.countAnswered(items)
	}
	return true
}

// countAnswered counts the commands whose responses items carried, now on
// the wire: one clock read for them all. Called with c.wmu held.
func (c *conn) countAnswered(items []*outItem) {
	var now int64
	for _, it := range items {
		if !it.answered.counted {
			continue
		}
		if now == 0 {
			now = monoNow()
		}
		c.cmds.count(&it.answered, now)
	}
}

// zeroPad is the padding after a data segment (at most 3 bytes).
var zeroPad [4]byte

// writeIOV writes the buffers with one writev. Called with wmu held.
func (c *conn) writeIOV(iov [][]byte) error {
	if len(iov) == 0 {
		return nil
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
	// WriteTo consumes the slice header it is called on; keeping it in
	// the conn spares an allocation per write.
	c.wbufs = iov
	_, err := c.wbufs.WriteTo(c.nc)
	c.wbufs = nil
	return err
}

// maxIOV is the most buffers one writev takes (IOV_MAX).
const maxIOV = 1024

// writeNow writes iov with one writev that does not wait for room in the
// socket, and returns how many bytes the socket took. Called with wmu held.
func (c *conn) writeNow(iov [][]byte) (int, error) {
	if len(iov) == 0 {
		return 0, nil
	}
	iov = iov[:min(len(iov), maxIOV)]
	vecs := c.iovecs[:0]
	for _, b := range iov {
		v := unix.Iovec{Base: unsafe.SliceData(b)}
		v.SetLen(len(b))
		vecs = append(vecs, v)
	}
	c.iovecs = vecs
	// Control, not Write: this write never waits for the poller, so it
	// needs no deadline (an expired one of an earlier write would fail
	// Write), and wmu already keeps other writers off the socket.
	var (
		n     uintptr
		errno unix.Errno
	)
	err := c.rawConn.Control(func(fd uintptr) {
		for {
			n, _, errno = unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&vecs[0])), uintptr(len(vecs)))
			if errno != unix.EINTR {
				return
			}
		}
	})
	runtime.KeepAlive(iov)
	clear(vecs)
	switch {
	case err != nil:
		return 0, err
	case errno == unix.EAGAIN:
		return 0, nil
	case errno != 0:
		return 0, errno
	}
	return int(n), nil
}

// iovLen is the number of bytes in iov.
func iovLen(iov [][]byte) int {
	n := 0
	for _, b := range iov {
		n += len(b)
	}
	return n
}

// skipBytes returns iov without its first n bytes; it reuses iov's array.
func skipBytes(iov [][]byte, n int) [][]byte {
	for len(iov) > 0 && n >= len(iov[0]) {
		n -= len(iov[0])
		iov[0] = nil
		iov = iov[1:]
	}
	if len(iov) > 0 {
		iov[0] = iov[0][n:]
	}
	return iov
}

// sendFile sends a file range on the socket with sendfile(2), waiting on
// the poller while the socket buffer is full. Data digests need the bytes
// in user space, so this path is only taken without them.
func (c *conn) sendFile(fr disk.FileRange) error {
	c.nc.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
	off, remain := fr.Off, fr.Len
	var serr error
	err := c.rawConn.Write(func(fd uintptr) bool {
		for remain > 0 {
			n, err := unix.Sendfile(int(fd), fr.FD, &off, int(min(remain, 1<<30)))
			if n > 0 {
				remain -= int64(n)
			}
			switch {
			case err == unix.EAGAIN:
				return false
			case err == unix.EINTR:
			case err != nil:
				serr = err
				return true
			case n == 0:
				// The file shrank under us: the PDU length is
				// already on the wire, so the stream is lost.
				serr = io.ErrUnexpectedEOF
				return true
			}
		}
		return true
	})
	if err != nil {
		return err
	}
	return serr
}
