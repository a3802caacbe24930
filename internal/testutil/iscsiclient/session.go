// Package iscsiclient is an iSCSI initiator (RFC 7143) for tests and
// benchmarks that drive a target from Go: it logs in (with one-way or mutual
// CHAP), lists targets with SendTargets, and runs SCSI commands at any queue
// depth on one session from many goroutines. It is for tests and benchmarks
// only; production code must not import it.
//
// It speaks the wire format through internal/iscsi/pdu but shares nothing
// else with the target, so that a bug in the target's logic is not mirrored
// here. It implements ErrorRecoveryLevel 0 only: any protocol or connection
// error, a Reject, or a command without an answer within Config.Timeout ends
// the session, and every outstanding command fails with an error wrapping
// the cause.
//
// internal/iscsi keeps its own strict test initiator on purpose: that one
// checks every field the target sends, this one is made to be convenient.
package iscsiclient

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/diskless-boot/diskless/internal/iscsi/pdu"
)

// Config says how to reach and log into a target.
type Config struct {
	// Addr is the target portal, host:port.
	Addr string
	// LocalAddr is the address to connect from (default: the system's
	// choice), e.g. one of many addresses of a simulated attacker.
	LocalAddr net.Addr
	// Initiator is the InitiatorName (required).
	Initiator string
	// Target is the TargetName; "" logs into a discovery session.
	Target string
	// LUN is the logical unit the SCSI methods address (default 0).
	LUN uint64
	// ISID is the initiator part of the session identifier, 48 bits
	// (RFC 7143 11.12.5). Default: random, with the 0x80 "random"
	// qualifier type.
	ISID uint64
	// CHAPUser and CHAPSecret, when CHAPUser is set, make the login offer
	// AuthMethod=CHAP,None and answer the target's MD5 challenge if it
	// picks CHAP (RFC 7143 12.1.3). Default: AuthMethod=None.
	CHAPUser, CHAPSecret string
	// MutualSecret, when set, makes the login offer CHAP only, challenge
	// the target too and check its answer; MutualUser, when set, is the
	// CHAP_N the target must answer with. Needs CHAPUser. Default:
	// one-way CHAP.
	MutualUser, MutualSecret string
	// Timeout bounds each request: the connect, each login step, and a
	// command from when it waits for the CmdSN window to its status.
	// A command that exceeds it ends the session (default 10 s).
	Timeout time.Duration
	// HeaderDigest requires CRC32C header digests (default none). Data
	// digests are never negotiated.
	HeaderDigest bool
	// ReportUnitAttention returns UNIT ATTENTION conditions as *SCSIError.
	// By default a command that fails with one is sent again (up to 8
	// times), as Linux does: the target did not run it (SAM-5 5.14), and
	// every new I_T nexus starts with a power-on unit attention.
	ReportUnitAttention bool
}

// LoopbackHost is the i-th of distinct loopback addresses (127.0.1.1,
// 127.0.1.2, ...) for Config.LocalAddr: a benchmark playing many machines
// connects each from its own address, as machines do - the target bounds
// connections per source address (32).
func LoopbackHost(i int) *net.TCPAddr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, byte(1+i/250), byte(1+i%250))}
}

func (c Config) withDefaults() Config {
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.ISID == 0 {
		// RFC 7143 11.12.5: T=10b (random), A reserved, B, C and D random.
		c.ISID = 0x80<<40 | rand.Uint64()&(1<<40-1)
	}
	return c
}

// Errors a session ends with; command errors wrap them.
var (
	// ErrClosed: Close was called.
	ErrClosed = errors.New("iscsiclient: session closed")
	// ErrLoggedOut: Logout completed.
	ErrLoggedOut = errors.New("iscsiclient: logged out")
	// ErrProtocol: the target sent something RFC 7143 does not allow.
	ErrProtocol = errors.New("iscsiclient: protocol error")
)

// RejectError is a Reject PDU from the target (RFC 7143 11.17). It ends the
// session: at ErrorRecoveryLevel 0 the rejected PDU cannot be retried.
type RejectError struct {
	Reason uint8
	// Opcode is that of the rejected PDU, whose header the Reject carries.
	Opcode pdu.Opcode
}

func (e *RejectError) Error() string {
	return fmt.Sprintf("iscsiclient: target rejected a %s PDU, reason 0x%02x", e.Opcode, e.Reason)
}

// Session is one logged-in iSCSI session over one TCP connection. It is safe
// for concurrent use: commands are tagged, a reader goroutine hands each
// response to its command, and a command waits while the target's CmdSN
// window is full.
type Session struct {
	cfg       Config
	nc        net.Conn
	discovery bool
	tsih      uint16
	neg       negotiated

	rd pdu.Reader // login, then the reader goroutine only

	// wmu serializes writes, so PDUs never interleave, and orders
	// commands on the wire by CmdSN.
	wmu  sync.Mutex
	wbuf []byte      // frame scratch, under wmu
	iov  net.Buffers // under wmu

	mu       sync.Mutex
	tasks    map[uint32]*task // by ITT
	nextITT  uint32
	cmdSN    uint32        // the next CmdSN to assign
	maxCmdSN uint32        // from the target (RFC 7143 4.2.2.1)
	window   chan struct{} // closed when maxCmdSN moves or the session ends; nil while nobody waits
	err      error         // why the session ended; set once

	expStatSN atomic.Uint32
	blockSize atomic.Uint32 // from the last READ CAPACITY; 0 until then

	readerDone chan struct{}
	pings      sync.WaitGroup // NOP-Out answers in flight
}

// negotiated are the operational parameters in force (RFC 7143 13).
type negotiated struct {
	headerDigest  bool
	sendSeg       uint32 // the target's MaxRecvDataSegmentLength
	maxBurst      uint32
	firstBurst    uint32
	initialR2T    bool
	immediateData bool
}

// What the initiator offers and accepts.
const (
	recvSegLen      = 256 << 10 // our MaxRecvDataSegmentLength
	offerMaxBurst   = 262144    // RFC 7143 13.13 default
	offerFirstBurst = 65536     // RFC 7143 13.14 default
	offerMaxR2T     = 4         // R2Ts outstanding per task
)

// Dial connects to cfg.Addr and logs in. ctx bounds the connect and the
// login. A login the target refuses returns a *LoginError.
func Dial(ctx context.Context, cfg Config) (*Session, error) {
	s, err := connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	go s.readLoop()
	return s, nil
}

// connect connects and logs in; the caller starts the full feature phase.
func connect(ctx context.Context, cfg Config) (*Session, error) {
	cfg = cfg.withDefaults()
	if cfg.Initiator == "" {
		return nil, errors.New("iscsiclient: Config.Initiator is required")
	}
	if cfg.MutualSecret != "" && cfg.CHAPUser == "" {
		return nil, errors.New("iscsiclient: mutual CHAP needs CHAPUser")
	}
	d := net.Dialer{Timeout: cfg.Timeout, LocalAddr: cfg.LocalAddr}
	nc, err := d.DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("iscsiclient: %w", err)
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	s := &Session{
		cfg:        cfg,
		nc:         nc,
		discovery:  cfg.Target == "",
		tasks:      make(map[uint32]*task),
		nextITT:    1,
		cmdSN:      1,
		readerDone: make(chan struct{}),
	}
	s.rd = pdu.Reader{R: bufio.NewReaderSize(nc, 64<<10), MaxData: loginMaxData}
	// A cancelled ctx interrupts whatever login step is waiting.
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	err = s.login(ctx)
	if !stop() {
		err = ctx.Err() // the login failed, or would have, because ctx ended
	}
	if err != nil {
		nc.Close()
		name := cfg.Target
		if s.discovery {
			name = "discovery"
		}
		return nil, fmt.Errorf("iscsiclient: login to %s at %s: %w", name, cfg.Addr, err)
	}
	nc.SetDeadline(time.Time{})
	s.rd.MaxData = recvSegLen
	s.rd.HeaderDigest = s.neg.headerDigest
	return s, nil
}

// Close ends the session without logging out: commands in progress fail
// with an error wrapping ErrClosed. When Close returns, the session's
// goroutines have ended. Close is idempotent.
func (s *Session) Close() error {
	s.fail(ErrClosed)
	<-s.readerDone
	s.pings.Wait()
	return nil
}

// TSIH is the target's session handle, from the login.
func (s *Session) TSIH() uint16 { return s.tsih }

// fail ends the session for cause (the first cause wins) and closes the
// connection; the reader then fails every outstanding task.
func (s *Session) fail(cause error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = fmt.Errorf("session ended: %w", cause)
		if s.window != nil {
			close(s.window)
			s.window = nil
		}
	}
	s.mu.Unlock()
	s.nc.Close()
}

func (s *Session) ended() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// task is one command or control request from its first PDU to its
// response.
type task struct {
	itt uint32
	lun uint64 // wire format
	in  []byte // Data-In lands here
	out []byte // Data-Out comes from here

	// Reader goroutine only.
	got    int    // Data-In bytes received
	dataSN uint32 // next expected Data-In DataSN

	// R2Ts the reader hands to the issuing goroutine.
	r2tMu    sync.Mutex
	r2ts     []pdu.R2T
	r2tReady chan struct{} // capacity 1

	done chan struct{} // closed once res is set
	res  response
}

// response is how a task ended.
type response struct {
	err error
	// SCSI commands.
	status              uint8
	response            uint8
	sense               []byte
	residual            uint32
	underflow, overflow bool
	// Control requests: the response header and data.
	hdr  pdu.BHS
	data []byte
}

func newTask(lun uint64, in, out []byte) *task {
	t := &task{lun: lun, in: in, out: out, done: make(chan struct{})}
	if out != nil {
		t.r2tReady = make(chan struct{}, 1)
	}
	return t
}

// run registers t, waits for room in the CmdSN window (unless immediate),
// sends its PDUs with send (called with the write lock held, t.itt set, and
// the CmdSN and ExpStatSN to use), answers R2Ts, and returns the response.
// op names the request in errors.
func (s *Session) run(t *task, op string, immediate bool, send func(t *task, cmdSN, expStatSN uint32) error) (response, error) {
	timer := time.NewTimer(s.cfg.Timeout)
	defer timer.Stop()
	timeout := func() error {
		return fmt.Errorf("%s: no response within %v: %w", op, s.cfg.Timeout, os.ErrDeadlineExceeded)
	}
	for {
		if err := s.waitWindow(immediate, timer.C); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				s.fail(fmt.Errorf("%s: %w", op, err))
			}
			return response{}, fmt.Errorf("iscsiclient: %s: %w", op, err)
		}
		s.wmu.Lock()
		s.mu.Lock()
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			s.wmu.Unlock()
			return response{}, fmt.Errorf("iscsiclient: %s: %w", op, err)
		}
		if !immediate && !snLessEq(s.cmdSN, s.maxCmdSN) {
			// Another command took the last slot meanwhile.
			s.mu.Unlock()
			s.wmu.Unlock()
			continue
		}
		if t.itt == 0 {
			t.itt = s.allocITT()
		}
		if _, busy := s.tasks[t.itt]; busy {
			s.mu.Unlock()
			s.wmu.Unlock()
			return response{}, fmt.Errorf("iscsiclient: %s: task tag %#x in use", op, t.itt)
		}
		s.tasks[t.itt] = t
		cmdSN := s.cmdSN
		if !immediate {
			s.cmdSN++
		}
		s.mu.Unlock()
		err := send(t, cmdSN, s.expStatSN.Load())
		s.wmu.Unlock()
		if err != nil {
			s.fail(err)
		}
		break
	}
	for {
		select {
		case <-t.done:
			if t.res.err != nil {
				return t.res, fmt.Errorf("iscsiclient: %s: %w", op, t.res.err)
			}
			return t.res, nil
		case <-t.r2tReady:
			for _, r := range t.takeR2Ts() {
				s.wmu.Lock()
				err := s.sendDataOut(t, r.TTT, r.BufferOffset, r.DesiredDataTransferLength)
				s.wmu.Unlock()
				if err != nil {
					s.fail(err) // the reader ends t
					break
				}
			}
		case <-timer.C:
			s.fail(timeout())
			<-t.done // the reader has stopped writing into t.in
			if t.res.err == nil {
				return t.res, nil // it made it after all
			}
			return t.res, fmt.Errorf("iscsiclient: %s: %w", op, t.res.err)
		}
	}
}

// waitWindow waits until a non-immediate command may be sent (RFC 7143
// 4.2.2.1: CmdSN <= MaxCmdSN), the session ends, or timer fires.
func (s *Session) waitWindow(immediate bool, timer <-chan time.Time) error {
	for {
		s.mu.Lock()
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return err
		}
		if immediate || snLessEq(s.cmdSN, s.maxCmdSN) {
			s.mu.Unlock()
			return nil
		}
		if s.window == nil {
			s.window = make(chan struct{})
		}
		ch := s.window
		s.mu.Unlock()
		select {
		case <-ch:
		case <-timer:
			return fmt.Errorf("CmdSN window still full after %v: %w", s.cfg.Timeout, os.ErrDeadlineExceeded)
		}
	}
}

// allocITT returns an unused Initiator Task Tag. Called with s.mu held.
func (s *Session) allocITT() uint32 {
	for {
		itt := s.nextITT
		s.nextITT++
		if itt == 0 || itt == pdu.ReservedTag {
			continue
		}
		if _, busy := s.tasks[itt]; !busy {
			return itt
		}
	}
}

func (t *task) pushR2T(r pdu.R2T) {
	t.r2tMu.Lock()
	t.r2ts = append(t.r2ts, r)
	t.r2tMu.Unlock()
	select {
	case t.r2tReady <- struct{}{}:
	default:
	}
}

func (t *task) takeR2Ts() []pdu.R2T {
	t.r2tMu.Lock()
	defer t.r2tMu.Unlock()
	r := t.r2ts
	t.r2ts = nil
	return r
}

// sendDataOut sends t.out[off:off+n] as one Data-Out sequence (RFC 7143
// 11.7): PDUs of at most the target's MaxRecvDataSegmentLength, DataSN from
// 0, F on the last. ttt is the R2T's tag, or pdu.ReservedTag for
// unsolicited data. Called with s.wmu held.
func (s *Session) sendDataOut(t *task, ttt, off, n uint32) error {
	seg := s.neg.sendSeg
	pdus := make([]pdu.PDU, 0, (n+seg-1)/seg)
	var sn uint32
	for end := off + n; off < end; sn++ {
		l := min(end-off, seg)
		d := pdu.DataOut{Final: off+l == end, LUN: t.lun, ITT: t.itt, TTT: ttt,
			ExpStatSN: s.expStatSN.Load(), DataSN: sn, BufferOffset: off}
		pdus = append(pdus, pdu.PDU{Data: t.out[off : off+l]})
		d.Marshal(&pdus[len(pdus)-1].BHS)
		off += l
	}
	return s.write(pdus...)
}

// write sends PDUs with one writev. Called with s.wmu held.
func (s *Session) write(pdus ...pdu.PDU) error {
	need := len(pdus) * pdu.FrameLen
	if cap(s.wbuf) < need {
		s.wbuf = make([]byte, need)
	}
	iov := s.iov[:0]
	for i := range pdus {
		p := &pdus[i]
		h, tr, err := p.Frame(s.wbuf[i*pdu.FrameLen:(i+1)*pdu.FrameLen], s.neg.headerDigest, false)
		if err != nil {
			return err
		}
		iov = append(iov, h)
		if len(p.Data) > 0 {
			iov = append(iov, p.Data)
		}
		if len(tr) > 0 {
			iov = append(iov, tr)
		}
	}
	s.nc.SetWriteDeadline(time.Now().Add(s.cfg.Timeout))
	bufs := iov // WriteTo consumes the slice it is called on
	_, err := bufs.WriteTo(s.nc)
	clear(iov)
	s.iov = iov[:0]
	return err
}

// readLoop reads the target's PDUs until the connection ends, then fails
// what is still outstanding.
func (s *Session) readLoop() {
	defer close(s.readerDone)
	var (
		p   pdu.PDU
		err error
	)
	for err == nil {
		err = s.readPDU(&p)
	}
	s.fail(err)
	s.mu.Lock()
	tasks, cause := s.tasks, s.err
	s.tasks = nil
	s.mu.Unlock()
	for _, t := range tasks {
		t.res.err = cause
		close(t.done)
	}
}

func protocolErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// readPDU reads and dispatches one PDU.
func (s *Session) readPDU(p *pdu.PDU) error {
	if err := s.rd.ReadHeader(p); err != nil {
		return err
	}
	h := &p.BHS
	s.updateWindow(h)
	switch h.Opcode() {
	case pdu.OpDataIn:
		return s.dataIn(h)
	case pdu.OpR2T:
		m, _ := pdu.ParseR2T(h)
		if err := s.rd.DiscardData(); err != nil {
			return err
		}
		t := s.task(m.ITT)
		if t == nil || t.out == nil {
			return protocolErrorf("R2T for task %#x, which has no data to send", m.ITT)
		}
		end := uint64(m.BufferOffset) + uint64(m.DesiredDataTransferLength)
		if m.DesiredDataTransferLength == 0 || end > uint64(len(t.out)) {
			return protocolErrorf("R2T for bytes %d+%d of a %d-byte write", m.BufferOffset, m.DesiredDataTransferLength, len(t.out))
		}
		t.pushR2T(m)
		return nil
	case pdu.OpSCSIResponse:
		m, _ := pdu.ParseSCSIResponse(h)
		if err := s.rd.ReadDataInto(p); err != nil {
			return err
		}
		s.expStatSN.Store(m.StatSN + 1)
		t := s.task(m.ITT)
		if t == nil {
			return protocolErrorf("SCSI Response for unknown task %#x", m.ITT)
		}
		r := response{status: m.Status, response: m.Response, residual: m.ResidualCount,
			underflow: m.Underflow, overflow: m.Overflow}
		if sense, ok := senseFromSegment(p.Data); ok {
			r.sense = sense
		} else {
			return protocolErrorf("SCSI Response with a malformed sense segment of %d bytes", len(p.Data))
		}
		s.complete(t, r)
		return nil
	case pdu.OpNOPIn:
		m, _ := pdu.ParseNOPIn(h)
		if err := s.rd.ReadDataInto(p); err != nil {
			return err
		}
		if m.ITT == pdu.ReservedTag {
			// A ping from the target (RFC 7143 11.19.2): answer when it
			// asks. Not from here: the reader must never wait for the
			// write lock, whose holder may be waiting for the reader.
			if m.TTT != pdu.ReservedTag {
				s.pings.Add(1)
				go s.answerPing(m, append([]byte(nil), p.Data...))
			}
			return nil
		}
		s.expStatSN.Store(m.StatSN + 1)
		return s.completeControl(p)
	case pdu.OpTextResp, pdu.OpTaskMgmtResp:
		if err := s.rd.ReadDataInto(p); err != nil {
			return err
		}
		s.expStatSN.Store(statSN(h) + 1)
		return s.completeControl(p)
	case pdu.OpLogoutResp:
		if err := s.rd.ReadDataInto(p); err != nil {
			return err
		}
		s.expStatSN.Store(statSN(h) + 1)
		if err := s.completeControl(p); err != nil {
			return err
		}
		if m, _ := pdu.ParseLogoutResponse(h); m.Response == pdu.LogoutSuccess {
			return ErrLoggedOut // the target closes the connection now
		}
		return nil
	case pdu.OpReject:
		if err := s.rd.ReadDataInto(p); err != nil {
			return err
		}
		m, _ := pdu.ParseReject(h)
		e := &RejectError{Reason: m.Reason}
		if len(p.Data) >= pdu.BHSLen {
			var rejected pdu.BHS
			copy(rejected[:], p.Data)
			e.Opcode = rejected.Opcode()
		}
		return e
	case pdu.OpAsyncMessage:
		// SCSI asynchronous events and logout requests (RFC 7143
		// 11.9): nothing to do at ErrorRecoveryLevel 0 but to let the
		// connection end when the target ends it.
		if err := s.rd.DiscardData(); err != nil {
			return err
		}
		s.expStatSN.Store(statSN(h) + 1)
		return nil
	}
	return protocolErrorf("unexpected %s", h.Opcode())
}

// dataIn places a Data-In PDU's data into its task's buffer (RFC 7143
// 11.7). DataPDUInOrder=Yes was negotiated, so the data must come in order.
func (s *Session) dataIn(h *pdu.BHS) error {
	m, _ := pdu.ParseDataIn(h)
	n := h.DataSegmentLength()
	t := s.task(m.ITT)
	if t == nil {
		return protocolErrorf("Data-In for unknown task %#x", m.ITT)
	}
	if m.DataSN != t.dataSN || int(m.BufferOffset) != t.got || n > len(t.in)-t.got {
		return protocolErrorf("Data-In DataSN %d offset %d length %d; expected DataSN %d offset %d, buffer %d bytes",
			m.DataSN, m.BufferOffset, n, t.dataSN, t.got, len(t.in))
	}
	if err := s.rd.ReadData(t.in[t.got : t.got+n]); err != nil {
		return err
	}
	t.got += n
	t.dataSN++
	if !m.HasStatus {
		return nil
	}
	if !m.Final {
		return protocolErrorf("Data-In with status but without F")
	}
	s.expStatSN.Store(m.StatSN + 1)
	s.complete(t, response{status: m.Status, residual: m.ResidualCount, underflow: m.Underflow, overflow: m.Overflow})
	return nil
}

func statSN(h *pdu.BHS) uint32 {
	// StatSN sits at bytes 24-27 of every target PDU that carries one
	// (RFC 7143 11.2.1 and the PDU layouts of section 11).
	return binary.BigEndian.Uint32(h[24:28])
}

// updateWindow takes ExpCmdSN and MaxCmdSN from a target PDU (bytes 28-35
// of all of them but the Login Response): MaxCmdSN moves forward only, and
// a MaxCmdSN below ExpCmdSN-1 is ignored (RFC 7143 4.2.2.1).
func (s *Session) updateWindow(h *pdu.BHS) {
	exp, max := binary.BigEndian.Uint32(h[28:32]), binary.BigEndian.Uint32(h[32:36])
	if snLess(max, exp-1) {
		return
	}
	s.mu.Lock()
	if snLess(s.maxCmdSN, max) {
		s.maxCmdSN = max
		if s.window != nil {
			close(s.window)
			s.window = nil
		}
	}
	s.mu.Unlock()
}

func (s *Session) task(itt uint32) *task {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tasks[itt]
}

// complete ends t with r. Reader goroutine only.
func (s *Session) complete(t *task, r response) {
	s.mu.Lock()
	delete(s.tasks, t.itt)
	s.mu.Unlock()
	t.res = r
	close(t.done)
}

// completeControl ends the control request a response PDU answers.
func (s *Session) completeControl(p *pdu.PDU) error {
	itt := p.BHS.ITT()
	t := s.task(itt)
	if t == nil {
		return protocolErrorf("%s for unknown task %#x", p.BHS.Opcode(), itt)
	}
	s.complete(t, response{hdr: p.BHS, data: append([]byte(nil), p.Data...)})
	return nil
}

// answerPing answers a target's NOP-In ping with a NOP-Out (RFC 7143
// 11.18): immediate, ITT reserved, the target's TTT and data echoed.
func (s *Session) answerPing(m pdu.NOPIn, data []byte) {
	defer s.pings.Done()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	cmdSN, ended := s.cmdSN, s.err != nil
	s.mu.Unlock()
	if ended {
		return
	}
	r := pdu.NOPOut{Immediate: true, LUN: m.LUN, ITT: pdu.ReservedTag, TTT: m.TTT, CmdSN: cmdSN, ExpStatSN: s.expStatSN.Load()}
	p := pdu.PDU{Data: data}
	r.Marshal(&p.BHS)
	if err := s.write(p); err != nil {
		s.fail(err)
	}
}

// Serial number arithmetic (RFC 1982) for CmdSN comparisons (RFC 7143
// 4.2.2.1).
func snLess(a, b uint32) bool   { return a != b && int32(a-b) < 0 }
func snLessEq(a, b uint32) bool { return a == b || int32(a-b) < 0 }
