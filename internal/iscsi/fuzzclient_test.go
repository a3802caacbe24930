package iscsi

// The initiator side of FuzzSession: a client that speaks iSCSI well by
// default and badly where the fuzz input says so, and checks every PDU the
// target sends it against RFC 7143 and against what it sent.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/diskless-boot/diskless/internal/iscsi/pdu"
)

// fzCmd is one command the client sent (by ITT), until it is answered.
type fzCmd struct {
	itt       uint32
	op        pdu.Opcode
	seq       int
	cmdSN     uint32
	immediate bool
	sends     int  // commands sent with this ITT (a reused ITT is rejected)
	answers   int  // final responses
	rejects   int  // Rejects carrying its header
	aborted   bool // ABORT TASK said Function Complete: no answer may follow
	mayAbort  bool // a task management function may have ended it
	mayDrop   bool // sent in a way the target may ignore silently

	// SCSI commands.
	lun          uint64 // decoded
	read, write  bool
	edtl         uint32
	payload      func(off uint32) byte // Data-Out content
	dataIn       []byte
	dataSN       uint32
	lba, nblk    int
	modelRead    bool // READ with EDTL = blocks: its data is checked
	modelWrite   bool // WRITE with EDTL = blocks: may update the shadow
	opaque       bool // may change any block of its LU
	gens         []uint32
	knownAtSend  []bool
	unsolEnd     uint32
	unsolSent    uint32
	unsolDataSN  uint32
	r2ts         []*fzR2T
	nextR2TSN    uint32
	countedWrite bool // inflight counts taken

	// Task management.
	fn     uint8
	refTag uint32
	refSN  uint32
	tmfLUN uint64
}

type fzR2T struct{ ttt, off, length, sent, dataSN uint32 }

func (c *fzCmd) done() bool { return c.answers+c.rejects >= c.sends }

// fzClient is one initiator connection.
type fzClient struct {
	w      *fzWorld
	nc     net.Conn
	srvEnd *fzConn
	remote string

	mu      sync.Mutex
	inbox   []*pdu.PDU
	readErr error
	gone    bool
	readerD chan struct{}

	pend     []byte
	lastPDU  int
	closedMe bool

	// Login.
	phase      int // 0 login, 1 full feature, 2 failed or logged out
	initiator  string
	target     string
	discovery  bool
	isid       uint64
	tsih       uint16
	keys       map[string]string
	lastLogin  *pdu.LoginResponse
	loginStat  uint32
	chapAlg    uint64
	chapID     byte
	chapChal   []byte
	offered    map[string]string // our operational offers in a clean login
	cleanLogin bool

	// Full feature phase, as negotiated.
	hd, dd       bool
	immData      bool
	initialR2T   bool
	firstBurst   uint32
	maxBurst     uint32
	targetMRDSL  uint32 // the most we may send in one PDU
	ourMRDSL     uint32 // the most the target may send us (largest declared)
	maxR2T       uint32
	cmdSN        uint32
	expStatSN    uint32
	maxCmdSN     uint32
	itt          uint32
	seq          int
	cmds         map[uint32]*fzCmd
	usedSN       map[uint32]int
	gaps         []uint32
	abortedSN    map[uint32]bool
	rawITTs      map[uint32]bool
	pingTTT      uint32
	textTTT      uint32
	textITT      uint32
	loggedOut    bool
	pendingLogin bool
}

func newFzClient(w *fzWorld, nc net.Conn, srvEnd *fzConn) *fzClient {
	c := &fzClient{w: w, nc: nc, srvEnd: srvEnd, remote: srvEnd.remote.String(), readerD: make(chan struct{}),
		keys: map[string]string{}, cmds: map[uint32]*fzCmd{}, usedSN: map[uint32]int{},
		abortedSN: map[uint32]bool{}, rawITTs: map[uint32]bool{}, itt: 0x100, isid: 0x80000000abcd,
		targetMRDSL: loginMaxData, ourMRDSL: loginMaxData}
	go c.readLoop()
	return c
}

// readLoop collects the target's PDUs. It switches digests on itself when
// the login ends, since the next PDU may follow the last login response at
// once.
func (c *fzClient) readLoop() {
	defer close(c.readerD)
	rd := pdu.Reader{R: bufio.NewReader(c.nc), MaxData: 1 << 24}
	keys := map[string]string{}
	for {
		p := new(pdu.PDU)
		err := rd.ReadPDU(p)
		if err != nil {
			c.mu.Lock()
			c.readErr, c.gone = err, true
			c.mu.Unlock()
			return
		}
		if p.BHS.Opcode() == pdu.OpLoginResp {
			if kvs, err := pdu.ParseText(p.Data); err == nil {
				for _, kv := range kvs {
					keys[kv.Key] = kv.Value
				}
			}
			if r, _ := pdu.ParseLoginResponse(&p.BHS); r.Status == 0 && r.Transit && r.NSG == pdu.StageFullFeature {
				rd.HeaderDigest = keys["HeaderDigest"] == "CRC32C"
				rd.DataDigest = keys["DataDigest"] == "CRC32C"
			}
		}
		c.mu.Lock()
		c.inbox = append(c.inbox, p)
		c.mu.Unlock()
	}
}

// eof reports that the target closed the connection (or the client did).
func (c *fzClient) eof() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gone || c.closedMe
}

func (c *fzClient) close() {
	c.flush()
	c.closedMe = true
	c.nc.Close()
	<-c.readerD
}

// fzTrace, when set, is told every PDU the fuzz clients send and take in:
// set it in a test that replays one failing input to see its session.
var fzTrace func(remote, dir string, h *pdu.BHS, dataLen int)

// queue adds a PDU to what the next flush writes.
func (c *fzClient) queue(p *pdu.PDU) {
	if fzTrace != nil {
		fzTrace(c.remote, ">", &p.BHS, len(p.Data))
	}
	var b bytes.Buffer
	hd, dd := c.hd && c.phase == 1, c.dd && c.phase == 1
	if err := p.WriteTo(&b, hd, dd); err != nil {
		return
	}
	c.lastPDU = len(c.pend)
	c.pend = append(c.pend, b.Bytes()...)
}

func (c *fzClient) flush() {
	if len(c.pend) == 0 || c.closedMe {
		c.pend = c.pend[:0]
		return
	}
	c.nc.Write(c.pend) // a target that closed makes it fail: fine
	c.pend = c.pend[:0]
}

// corrupt flips the last byte of the last PDU queued: a digest when
// digests are on, else padding, data or a reserved header byte.
func (c *fzClient) corrupt() {
	if len(c.pend) > c.lastPDU {
		c.pend[len(c.pend)-1] ^= 0x5a
	}
}

func (c *fzClient) nextITT() uint32 {
	c.itt++
	if c.itt == pdu.ReservedTag {
		c.itt = 1
	}
	return c.itt
}

// cmdSNFor is the CmdSN of a command: the current one for an immediate
// command (it does not advance CmdSN), else pickCmdSN's choice.
func (c *fzClient) cmdSNFor(immediate bool, sel byte) (sn uint32, mayDrop bool) {
	if immediate {
		return c.cmdSN, false
	}
	return c.pickCmdSN(sel)
}

// pickCmdSN chooses the CmdSN of a non-immediate command:
// 0-3 the next one, 4 the previous again, 5 skip one (a gap), 6 fill the
// oldest gap, 7 far outside the window.
func (c *fzClient) pickCmdSN(sel byte) (sn uint32, mayDrop bool) {
	switch sel % 8 {
	case 4:
		return c.cmdSN - 1, true
	case 5:
		c.gaps = append(c.gaps, c.cmdSN)
		sn = c.cmdSN + 1
		c.cmdSN += 2
		return sn, false
	case 6:
		if len(c.gaps) > 0 {
			sn, c.gaps = c.gaps[0], c.gaps[1:]
			return sn, false
		}
	case 7:
		return c.cmdSN + 0x1000, true
	}
	sn = c.cmdSN
	c.cmdSN++
	return sn, false
}

// register records a command sent with itt.
func (c *fzClient) register(itt uint32, op pdu.Opcode, cmdSN uint32, immediate, mayDrop bool) *fzCmd {
	c.seq++
	if !immediate {
		c.usedSN[cmdSN]++
	}
	if old := c.cmds[itt]; old != nil && !old.done() {
		old.sends++
		old.mayDrop = old.mayDrop || mayDrop
		return nil
	}
	cmd := &fzCmd{itt: itt, op: op, seq: c.seq, cmdSN: cmdSN, immediate: immediate, sends: 1, mayDrop: mayDrop}
	c.cmds[itt] = cmd
	return cmd
}

// takeResponses processes what the reader collected.
func (c *fzClient) takeResponses() {
	c.mu.Lock()
	in := c.inbox
	c.inbox = nil
	err := c.readErr
	c.mu.Unlock()
	for _, p := range in {
		c.process(p)
	}
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) && !c.closedMe {
		c.w.failf("%s: the target sent something unreadable: %v", c.remote, err)
		c.readErr = nil
	}
	if c.loggedOut && err == nil && !c.closedMe {
		// RFC 7143 11.14: the connection is closed after the Logout
		// Response; the idle target must have done so.
		c.w.failf("%s: the connection stays open after a successful Logout Response", c.remote)
		c.loggedOut = false
	}
}

// stat checks the sequence numbers of a PDU: StatSN in order (advance for
// responses with status, peek for R2T and NOP-In pings), MaxCmdSN never
// moving back and never below ExpCmdSN-1 (RFC 7143 4.2.2.1, 11.1).
func (c *fzClient) stat(h *pdu.BHS, advance bool) {
	if c.phase != 1 {
		return
	}
	sn := binary.BigEndian.Uint32(h[24:])
	exp, max := binary.BigEndian.Uint32(h[28:]), binary.BigEndian.Uint32(h[32:])
	if advance || h.Opcode() == pdu.OpR2T || h.Opcode() == pdu.OpNOPIn {
		if sn != c.expStatSN {
			c.w.failf("%s: %s StatSN %d, want %d", c.remote, h.Opcode(), sn, c.expStatSN)
		}
		if advance {
			c.expStatSN = sn + 1
		}
	}
	if snLess(max, c.maxCmdSN) {
		c.w.failf("%s: %s MaxCmdSN %d moved back from %d", c.remote, h.Opcode(), max, c.maxCmdSN)
	}
	if snLess(max, exp-1) {
		c.w.failf("%s: %s MaxCmdSN %d below ExpCmdSN %d - 1", c.remote, h.Opcode(), max, exp)
	}
	c.maxCmdSN = max
}

// answered counts a final response to itt.
func (c *fzClient) answered(h *pdu.BHS, itt uint32) *fzCmd {
	cmd := c.cmds[itt]
	switch {
	case c.rawITTs[itt]:
		if cmd != nil {
			cmd.answers++
		}
		return nil // not checked, and the model learns nothing
	case cmd == nil:
		c.w.failf("%s: %s for ITT %#x, which was never used", c.remote, h.Opcode(), itt)
		return nil
	case cmd.done():
		c.w.failf("%s: %s for ITT %#x, which was already answered", c.remote, h.Opcode(), itt)
		return nil
	case cmd.aborted:
		c.w.failf("%s: %s for ITT %#x after ABORT TASK reported it gone", c.remote, h.Opcode(), itt)
	}
	cmd.answers++
	return cmd
}

func (c *fzClient) process(p *pdu.PDU) {
	h := &p.BHS
	if fzTrace != nil {
		fzTrace(c.remote, "<", h, len(p.Data))
	}
	switch h.Opcode() {
	case pdu.OpLoginResp:
		c.processLogin(p)
	case pdu.OpR2T:
		c.stat(h, false)
		r, _ := pdu.ParseR2T(h)
		cmd := c.cmds[r.ITT]
		if c.rawITTs[r.ITT] {
			return // which command it is for is anyone's guess
		}
		if cmd == nil || cmd.done() || !cmd.write {
			if !c.rawITTs[r.ITT] {
				c.w.failf("%s: R2T for ITT %#x, no write outstanding", c.remote, r.ITT)
			}
			return
		}
		if r.TTT == pdu.ReservedTag || r.R2TSN != cmd.nextR2TSN || r.DesiredDataTransferLength == 0 ||
			r.DesiredDataTransferLength > c.maxBurst || uint64(r.BufferOffset)+uint64(r.DesiredDataTransferLength) > uint64(cmd.edtl) {
			c.w.failf("%s: R2T %+v for a write of %d bytes (R2TSN want %d, MaxBurstLength %d)",
				c.remote, r, cmd.edtl, cmd.nextR2TSN, c.maxBurst)
		}
		cmd.nextR2TSN++
		cmd.r2ts = append(cmd.r2ts, &fzR2T{ttt: r.TTT, off: r.BufferOffset, length: r.DesiredDataTransferLength})
	case pdu.OpDataIn:
		d, _ := pdu.ParseDataIn(h)
		c.stat(h, d.HasStatus)
		cmd := c.cmds[d.ITT]
		if c.rawITTs[d.ITT] {
			// Not checked: a raw PDU or a reused ITT.
		} else if cmd != nil && !cmd.done() && cmd.read {
			if d.DataSN != cmd.dataSN || int(d.BufferOffset) != len(cmd.dataIn) || uint32(len(p.Data)) > c.ourMRDSL ||
				uint64(len(cmd.dataIn))+uint64(len(p.Data)) > uint64(cmd.edtl) {
				c.w.failf("%s: Data-In DataSN %d offset %d length %d; want DataSN %d offset %d, at most %d bytes per PDU, %d in all",
					c.remote, d.DataSN, d.BufferOffset, len(p.Data), cmd.dataSN, len(cmd.dataIn), c.ourMRDSL, cmd.edtl)
			}
			cmd.dataSN++
			cmd.dataIn = append(cmd.dataIn, p.Data...)
		} else {
			c.w.failf("%s: Data-In for ITT %#x, no read outstanding", c.remote, d.ITT)
		}
		if d.HasStatus {
			if cmd := c.answered(h, d.ITT); cmd != nil {
				c.scsiDone(cmd, d.Status)
			}
		}
	case pdu.OpSCSIResponse:
		c.stat(h, true)
		r, _ := pdu.ParseSCSIResponse(h)
		if cmd := c.answered(h, r.ITT); cmd != nil {
			c.scsiDone(cmd, r.Status)
		}
	case pdu.OpNOPIn:
		m, _ := pdu.ParseNOPIn(h)
		if m.ITT == pdu.ReservedTag {
			c.stat(h, false)
			if m.TTT == pdu.ReservedTag {
				c.w.failf("%s: NOP-In with neither ITT nor TTT", c.remote)
			}
			c.pingTTT = m.TTT
			return
		}
		c.stat(h, true)
		c.answered(h, m.ITT)
	case pdu.OpTextResp:
		c.stat(h, true)
		r, _ := pdu.ParseTextResponse(h)
		if r.Continue || r.TTT != pdu.ReservedTag {
			if r.Final || r.TTT == pdu.ReservedTag {
				c.w.failf("%s: Text Response with C=%v F=%v TTT %#x", c.remote, r.Continue, r.Final, r.TTT)
			}
			c.textTTT, c.textITT = r.TTT, r.ITT
			if cmd := c.cmds[r.ITT]; cmd != nil {
				cmd.sends++ // the continuation request it asks for
				cmd.answers++
			}
			return
		}
		c.textTTT = 0
		c.answered(h, r.ITT)
	case pdu.OpTaskMgmtResp:
		c.stat(h, true)
		if cmd := c.answered(h, h.ITT()); cmd != nil {
			c.tmfDone(cmd, h[2])
		}
	case pdu.OpLogoutResp:
		c.stat(h, true)
		r, _ := pdu.ParseLogoutResponse(h)
		c.answered(h, r.ITT)
		if r.Response == pdu.LogoutSuccess {
			c.loggedOut = true
		}
	case pdu.OpReject:
		c.stat(h, true)
		if len(p.Data) < pdu.BHSLen {
			c.w.failf("%s: Reject reason %#x without the rejected header (RFC 7143 11.17.1)", c.remote, h[2])
			return
		}
		var rh pdu.BHS
		copy(rh[:], p.Data)
		if h[2] == pdu.RejectDataDigestError && rh.Opcode() == pdu.OpSCSICommand {
			// RFC 7143 7.8: of a SCSI command whose immediate data
			// was corrupted, the command counts as received; it ends
			// with its own SCSI Response (CHECK CONDITION). Any other
			// PDU is dropped, and the Reject is all it gets.
			return
		}
		switch rh.Opcode() {
		case pdu.OpSCSICommand, pdu.OpNOPOut, pdu.OpTextReq, pdu.OpTaskMgmtReq, pdu.OpLogoutReq:
			if cmd := c.cmds[rh.ITT()]; cmd != nil && !cmd.done() {
				cmd.rejects++
				if cmd.done() {
					c.scsiDone(cmd, 0xff)
				}
			}
		}
	default:
		c.w.failf("%s: unexpected %s", c.remote, h.Opcode())
	}
}

// scsiDone updates the disk model with a finished SCSI command (status
// 0xff: rejected).
func (c *fzClient) scsiDone(cmd *fzCmd, status uint8) {
	if cmd.op != pdu.OpSCSICommand {
		return
	}
	lu := c.w.luns[cmd.lun]
	if lu == nil {
		return
	}
	if cmd.countedWrite {
		cmd.countedWrite = false
		for b := cmd.lba; b < cmd.lba+cmd.nblk; b++ {
			lu.inflight[b]--
		}
		if status == 0 && cmd.modelWrite && !cmd.opaque {
			for i, b := 0, cmd.lba; b < cmd.lba+cmd.nblk; i, b = i+1, b+1 {
				if lu.inflight[b] == 0 && lu.gen[b] == cmd.gens[i] {
					for j := 0; j < fzBlock; j++ {
						lu.shadow[b*fzBlock+j] = cmd.payload(uint32(i*fzBlock + j))
					}
					lu.known[b] = true
				}
			}
		}
	}
	if status == 0 && cmd.modelRead {
		for i, b := 0, cmd.lba; b < cmd.lba+cmd.nblk && (i+1)*fzBlock <= len(cmd.dataIn); i, b = i+1, b+1 {
			if !cmd.knownAtSend[i] || !lu.known[b] || lu.gen[b] != cmd.gens[i] {
				continue
			}
			got, want := cmd.dataIn[i*fzBlock:(i+1)*fzBlock], lu.shadow[b*fzBlock:(b+1)*fzBlock]
			if !bytes.Equal(got, want) {
				c.w.failf("%s: READ of LBA %d (ITT %#x) returned other data than was written", c.remote, b, cmd.itt)
				return
			}
		}
	}
}

// tmfDone marks the commands a task management function may have ended.
func (c *fzClient) tmfDone(tmf *fzCmd, resp uint8) {
	if tmf.fn == pdu.TMFAbortTask {
		if resp == pdu.TMFComplete {
			c.abortedSN[tmf.refSN] = true
			if cmd := c.cmds[tmf.refTag]; cmd != nil && !cmd.done() && cmd.op == pdu.OpSCSICommand &&
				cmd.lun == tmf.tmfLUN && cmd.seq < tmf.seq {
				cmd.aborted = true
			}
		}
		return
	}
	var targets []*fzClient
	switch tmf.fn {
	case pdu.TMFAbortTaskSet:
		targets = []*fzClient{c}
	case pdu.TMFClearTaskSet, pdu.TMFLogicalUnitReset, pdu.TMFTargetWarmReset, pdu.TMFTargetColdReset:
		for _, o := range c.w.clients {
			if o != nil && o.phase == 1 && !o.discovery && o.target == c.target {
				targets = append(targets, o)
			}
		}
	default:
		return
	}
	for _, o := range targets {
		for _, cmd := range o.cmds {
			if cmd.op == pdu.OpSCSICommand && !cmd.done() &&
				(cmd.lun == tmf.tmfLUN || tmf.fn == pdu.TMFTargetWarmReset || tmf.fn == pdu.TMFTargetColdReset) {
				cmd.mayAbort = true
			}
		}
	}
}

// checkAnswered fails every command that was neither answered nor
// legitimately dropped, on a connection the target kept open.
func (c *fzClient) checkAnswered() {
	if c.eof() || c.loggedOut {
		return
	}
	for _, cmd := range sortedCmds(c.cmds) {
		if cmd.done() || cmd.mayAbort || cmd.aborted || cmd.mayDrop || c.rawITTs[cmd.itt] {
			continue
		}
		if !cmd.immediate && (c.w.logs.wasDropped(c.remote, cmd.cmdSN) || c.usedSN[cmd.cmdSN] > 1 || c.abortedSN[cmd.cmdSN]) {
			continue
		}
		c.w.failf("%s: %s ITT %#x (CmdSN %d, immediate %v) neither answered nor dropped (%d sent, %d answers, %d rejects)",
			c.remote, cmd.op, cmd.itt, cmd.cmdSN, cmd.immediate, cmd.sends, cmd.answers, cmd.rejects)
	}
}

func sortedCmds(m map[uint32]*fzCmd) []*fzCmd {
	out := make([]*fzCmd, 0, len(m))
	for _, c := range m {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *fzCmd) int { return a.seq - b.seq })
	return out
}

// --- Login ---

// loginPDU queues one Login Request.
func (c *fzClient) loginPDU(csg, nsg pdu.Stage, transit, cont bool, kvs []pdu.KV, mutate func(*pdu.LoginRequest)) {
	req := pdu.LoginRequest{Transit: transit, Continue: cont, CSG: csg, NSG: nsg, ISID: c.isid, TSIH: c.tsih,
		ITT: c.itt, CmdSN: c.cmdSN, ExpStatSN: c.loginStat}
	if mutate != nil {
		mutate(&req)
	}
	var p pdu.PDU
	req.Marshal(&p.BHS)
	p.Data = pdu.AppendText(nil, kvs...)
	c.pendingLogin = true
	c.queue(&p)
}

func (c *fzClient) processLogin(p *pdu.PDU) {
	r, _ := pdu.ParseLoginResponse(&p.BHS)
	if c.phase != 0 {
		c.w.failf("%s: Login Response outside the login phase", c.remote)
		return
	}
	c.lastLogin = &r
	c.loginStat = r.StatSN + 1
	if kvs, err := pdu.ParseText(p.Data); err == nil {
		for _, kv := range kvs {
			c.keys[kv.Key] = kv.Value
			if strings.HasPrefix(kv.Key, "CHAP_") {
				c.w.failIfSecret(c.remote, kv.Value)
			}
		}
		if a, ok := c.keys["CHAP_A"]; ok {
			c.chapAlg, _ = strconv.ParseUint(a, 10, 64)
		}
		if i, ok := c.keys["CHAP_I"]; ok {
			v, _ := strconv.ParseUint(i, 10, 8)
			c.chapID = byte(v)
		}
		if ch, ok := c.keys["CHAP_C"]; ok {
			c.chapChal, _ = pdu.DecodeBinaryValue(ch, chapMaxChallenge)
		}
	} else {
		c.w.failf("%s: Login Response text: %v", c.remote, err)
	}
	if r.Status != 0 {
		c.phase = 2
		return
	}
	if r.Transit && r.NSG == pdu.StageFullFeature {
		c.enterFullFeature(&r)
	}
}

// enterFullFeature takes the parameters in force from the target's
// connection, and for a clean login checks them against what the target
// answered (what it says is what it does).
func (c *fzClient) enterFullFeature(r *pdu.LoginResponse) {
	c.phase = 1
	c.tsih = r.TSIH
	c.expStatSN = r.StatSN + 1
	c.maxCmdSN = r.MaxCmdSN
	sc := c.w.serverConn(c)
	if sc == nil {
		c.w.failf("%s: login completed, but the target has no such connection", c.remote)
		return
	}
	pr := sc.params
	c.hd, c.dd = pr.HeaderDigest, pr.DataDigest
	c.immData, c.initialR2T = pr.ImmediateData, pr.InitialR2T
	c.firstBurst, c.maxBurst, c.maxR2T = pr.FirstBurstLength, pr.MaxBurstLength, pr.MaxOutstandingR2T
	c.targetMRDSL, c.ourMRDSL = pr.TargetMaxRecvDataSegmentLength, pr.MaxRecvDataSegmentLength
	c.discovery = sc.sess.discovery
	c.target = ""
	if sc.sess.target != nil {
		c.target = sc.sess.target.Name
	}
	if !c.cleanLogin {
		return
	}
	num := func(key string, def uint32) uint32 {
		v, ok := c.keys[key]
		if !ok || v == pdu.ValueIrrelevant {
			return def // FirstBurstLength without unsolicited data (13.14)
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			c.w.failf("%s: %s=%q answered", c.remote, key, v)
		}
		return uint32(n)
	}
	yes := func(key string, def bool) bool {
		v, ok := c.keys[key]
		if !ok {
			return def
		}
		return v == "Yes"
	}
	ours, _ := strconv.ParseUint(c.offered["MaxRecvDataSegmentLength"], 10, 32)
	if ours == 0 {
		ours = 8192
	}
	got := []any{c.keys["HeaderDigest"] == "CRC32C", c.keys["DataDigest"] == "CRC32C", num("MaxRecvDataSegmentLength", 8192), uint32(ours)}
	want := []any{pr.HeaderDigest, pr.DataDigest, pr.TargetMaxRecvDataSegmentLength, pr.MaxRecvDataSegmentLength}
	if !c.discovery {
		got = append(got, yes("ImmediateData", true), yes("InitialR2T", true), num("FirstBurstLength", 65536),
			num("MaxBurstLength", 262144), num("MaxOutstandingR2T", 1))
		want = append(want, pr.ImmediateData, pr.InitialR2T, pr.FirstBurstLength, pr.MaxBurstLength, pr.MaxOutstandingR2T)
	}
	if !slices.Equal(got, want) {
		c.w.failf("%s: the login answered %v (digests, MaxRecvDataSegmentLength target/initiator, ImmediateData, InitialR2T, FirstBurst, MaxBurst, MaxOutstandingR2T), the connection uses %v",
			c.remote, got, want)
	}
}

func (w *fzWorld) failIfSecret(remote, v string) {
	for _, s := range w.logs.secrets {
		if strings.Contains(v, s) {
			w.failf("%s: a secret went on the wire in a login response", remote)
		}
	}
}

// loginStep sends one Login Request and waits for the answer: nil when the
// login ended (failed, or the connection closed).
func (c *fzClient) loginStep(csg, nsg pdu.Stage, transit bool, kvs ...pdu.KV) *pdu.LoginResponse {
	c.lastLogin = nil
	c.loginPDU(csg, nsg, transit, false, kvs, nil)
	c.w.settle()
	if c.lastLogin == nil || c.lastLogin.Status != 0 {
		return nil
	}
	return c.lastLogin
}

// Flavors of a whole login.
const (
	fzIPXE = iota
	fzOpenISCSI
	fzLibISCSI
	fzDiscovery
)

// login runs a whole login the way a real initiator does. style:
// 0-1 flavor, 2 wrong CHAP secret, 3 ask for mutual CHAP, 4-5 initiator
// name {init1, init2, stranger, init1 with CmdSN about to wrap},
// 6 another ISID, 7 the second target.
func (c *fzClient) login(style byte) {
	flavor := style & 3
	c.initiator = []string{fzInit1, fzInit2, fzStranger, fzInit1}[style>>4&3]
	if style>>4&3 == 3 {
		c.cmdSN = 0xfffffffc
	}
	if style&0x40 != 0 {
		c.isid = 0x80000000dcba
	}
	c.target = fzIQN
	if style&0x80 != 0 {
		c.target = fzIQN2
	}
	c.cleanLogin = true
	c.itt = c.nextITT()
	sec := []pdu.KV{{Key: "InitiatorName", Value: c.initiator}}
	if flavor == fzDiscovery {
		c.target = ""
		sec = append(sec, pdu.KV{Key: "SessionType", Value: "Discovery"})
	} else {
		if flavor == fzOpenISCSI {
			sec = append(sec, pdu.KV{Key: "InitiatorAlias", Value: "fuzzhost"})
		}
		sec = append(sec, pdu.KV{Key: "TargetName", Value: c.target}, pdu.KV{Key: "SessionType", Value: "Normal"})
	}
	useCHAP := c.w.chap && flavor != fzDiscovery
	auth := "None"
	if useCHAP {
		auth = "CHAP,None"
	}
	sec = append(sec, pdu.KV{Key: "AuthMethod", Value: auth})
	if c.loginStep(pdu.StageSecurity, pdu.StageOperational, !useCHAP, sec...) == nil {
		return
	}
	if useCHAP {
		if c.keys["AuthMethod"] != "CHAP" {
			c.w.failf("%s: CHAP target answered AuthMethod=%q", c.remote, c.keys["AuthMethod"])
			return
		}
		algs := map[byte]string{fzIPXE: "5", fzOpenISCSI: "7,5", fzLibISCSI: "5"}[flavor]
		if c.loginStep(pdu.StageSecurity, pdu.StageOperational, false, pdu.KV{Key: "CHAP_A", Value: algs}) == nil {
			return
		}
		var alg *chapAlgorithm
		for i := range chapAlgorithms {
			if chapAlgorithms[i].id == c.chapAlg {
				alg = &chapAlgorithms[i]
			}
		}
		if alg == nil || len(c.chapChal) == 0 {
			c.w.failf("%s: CHAP challenge A=%d C=%x", c.remote, c.chapAlg, c.chapChal)
			return
		}
		secret := fzSecret
		if style&4 != 0 {
			secret = "not-the-secret!!"
		}
		kv := []pdu.KV{{Key: "CHAP_N", Value: fzUser}, {Key: "CHAP_R", Value: pdu.EncodeHexValue(chapResponse(*alg, c.chapID, secret, c.chapChal))}}
		mutual := style&8 != 0 || (flavor == fzLibISCSI && c.w.mutual)
		mchal := []byte("fuzz-mutual-challenge")
		if mutual {
			kv = append(kv, pdu.KV{Key: "CHAP_I", Value: "7"}, pdu.KV{Key: "CHAP_C", Value: pdu.EncodeHexValue(mchal)})
		}
		delete(c.keys, "CHAP_N")
		delete(c.keys, "CHAP_R")
		r := c.loginStep(pdu.StageSecurity, pdu.StageOperational, true, kv...)
		if style&4 != 0 && r != nil {
			c.w.failf("%s: wrong CHAP secret accepted", c.remote)
		}
		if r == nil {
			return
		}
		if mutual {
			want := pdu.EncodeHexValue(chapResponse(*alg, 7, fzMutualSec, mchal))
			if c.keys["CHAP_N"] != fzMutual || c.keys["CHAP_R"] != want {
				c.w.failf("%s: mutual CHAP answered N=%q R=%q", c.remote, c.keys["CHAP_N"], c.keys["CHAP_R"])
			}
		}
	}
	var ops []pdu.KV
	switch flavor {
	case fzIPXE:
		// iPXE's iscsi_build_login_request_strings.
		ops = fzKVs("HeaderDigest", "None", "DataDigest", "None", "MaxConnections", "1", "InitialR2T", "Yes",
			"ImmediateData", "No", "MaxRecvDataSegmentLength", "8192", "MaxBurstLength", "262144",
			"FirstBurstLength", "65536", "DefaultTime2Wait", "0", "DefaultTime2Retain", "0",
			"MaxOutstandingR2T", "1", "DataPDUInOrder", "Yes", "DataSequenceInOrder", "Yes", "ErrorRecoveryLevel", "0")
	case fzOpenISCSI:
		ops = fzKVs("HeaderDigest", "None", "DataDigest", "None", "MaxRecvDataSegmentLength", "262144",
			"InitialR2T", "No", "ImmediateData", "Yes", "MaxBurstLength", "16776192", "FirstBurstLength", "262144",
			"MaxConnections", "1", "DefaultTime2Wait", "2", "DefaultTime2Retain", "0", "MaxOutstandingR2T", "1",
			"IFMarker", "No", "OFMarker", "No", "ErrorRecoveryLevel", "0", "DataPDUInOrder", "Yes", "DataSequenceInOrder", "Yes")
	case fzLibISCSI:
		ops = fzKVs("HeaderDigest", "CRC32C,None", "DataDigest", "CRC32C,None", "MaxRecvDataSegmentLength", "65536",
			"InitialR2T", "No", "ImmediateData", "Yes", "MaxBurstLength", "65536", "FirstBurstLength", "16384",
			"MaxOutstandingR2T", "4", "ErrorRecoveryLevel", "0")
	case fzDiscovery:
		ops = fzKVs("HeaderDigest", "None", "DataDigest", "None", "MaxRecvDataSegmentLength", "32768")
	}
	c.offered = map[string]string{}
	for _, kv := range ops {
		c.offered[kv.Key] = kv.Value
	}
	c.loginStep(pdu.StageOperational, pdu.StageFullFeature, true, ops...)
}

func fzKVs(kv ...string) []pdu.KV {
	out := make([]pdu.KV, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, pdu.KV{Key: kv[i], Value: kv[i+1]})
	}
	return out
}

// fzLoginKeys are the keys a crafted Login Request may carry, each with the
// values the input picks from.
var fzLoginKeys = []struct {
	key    string
	values []string
}{
	{"InitiatorName", []string{fzInit1, fzInit2, fzStranger, ""}},
	{"TargetName", []string{fzIQN, fzIQN2, "iqn.2026-11.org.example:nope", ""}},
	{"SessionType", []string{"Normal", "Discovery", "Bogus"}},
	{"AuthMethod", []string{"None", "CHAP", "CHAP,None", "SRP", "None,CHAP"}},
	{"CHAP_A", []string{"5", "7", "7,5", "99", "x"}},
	{"CHAP_N", []string{fzUser, "mallory", ""}},
	{"CHAP_R", []string{"<right>", "<wrong>", "0x", "0xzz", "0b" + strings.Repeat("A", 30)}},
	{"CHAP_C", []string{"<mutual>", "0x0102", "<reflect>"}},
	{"HeaderDigest", []string{"None", "CRC32C", "CRC32C,None", "MD5"}},
	{"DataDigest", []string{"None", "CRC32C", "CRC32C,None"}},
	{"MaxRecvDataSegmentLength", []string{"512", "8192", "262144", "16777216", "0", "x"}},
	{"ImmediateData", []string{"Yes", "No", "Maybe"}},
	{"InitialR2T", []string{"Yes", "No"}},
	{"FirstBurstLength", []string{"512", "1024", "65536", "999999999"}},
	{"MaxBurstLength", []string{"512", "4096", "262144", "16776192"}},
	{"MaxOutstandingR2T", []string{"1", "2", "0", "65536"}},
}

// craftedLogin queues one Login Request built from the input: flags
// 0 T, 1 C, 2-3 CSG, 4-5 NSG, 6 VersionMin 1, 7 TSIH or ISID changed; a
// 16-bit mask of fzLoginKeys, one value byte per key.
func (c *fzClient) craftedLogin(in *fzInput) {
	flags := in.u8()
	mask := in.u16()
	c.cleanLogin = false
	var kvs []pdu.KV
	for i, k := range fzLoginKeys {
		if mask&(1<<i) == 0 {
			continue
		}
		sel := int(in.u8())
		v := k.values[sel%len(k.values)]
		alg := &chapAlgorithms[0]
		for i := range chapAlgorithms {
			if chapAlgorithms[i].id == c.chapAlg {
				alg = &chapAlgorithms[i]
			}
		}
		switch v {
		case "<right>":
			v = pdu.EncodeHexValue(chapResponse(*alg, c.chapID, fzSecret, c.chapChal))
		case "<wrong>":
			v = pdu.EncodeHexValue(chapResponse(*alg, c.chapID, "wrong", c.chapChal))
		case "<mutual>":
			kvs = append(kvs, pdu.KV{Key: "CHAP_I", Value: strconv.Itoa(sel)})
			v = pdu.EncodeHexValue([]byte("fuzz-mutual-challenge"))
		case "<reflect>":
			kvs = append(kvs, pdu.KV{Key: "CHAP_I", Value: "1"})
			v = pdu.EncodeHexValue(c.chapChal)
		}
		if k.key == "InitiatorName" && c.initiator == "" {
			c.initiator = v
		}
		if k.key == "TargetName" && c.target == "" {
			c.target = v
		}
		kvs = append(kvs, pdu.KV{Key: k.key, Value: v})
	}
	c.loginPDU(pdu.Stage(flags>>2&3), pdu.Stage(flags>>4&3), flags&1 != 0, flags&2 != 0, kvs, func(r *pdu.LoginRequest) {
		if flags&0x40 != 0 {
			r.VersionMin = 1
		}
		if flags&0x80 != 0 {
			if c.tsih == 0 {
				r.TSIH = 1
			} else {
				r.ISID ^= 1
			}
		}
	})
}
