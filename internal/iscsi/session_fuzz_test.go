package iscsi

import (
	"encoding/binary"
	"maps"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/diskless-boot/diskless/internal/iscsi/pdu"
)

// FuzzSession drives whole iSCSI sessions through the target: logins
// (security and operational stages, CHAP, discovery), SCSI commands with
// immediate and unsolicited data, Data-Out and R2T, task management, Text,
// NOP-Out, logout, idle time and broken PDUs, on one or two connections.
// The input is a sequence of operations (fzInput, fzOp*), not PDUs, so that
// mutations keep most of a session valid and reach the deep states.
//
// After every operation, with the target idle: its task table, CmdSN queue
// and memory counts agree with each other, every PDU it sent is well formed
// and in sequence (StatSN, MaxCmdSN, DataSN, offsets, R2TSN), and data read
// back is what was written. At the end the fuzz initiators complete what
// they started (fill CmdSN gaps, send the data asked for) and then: every
// command was answered, unless the target was allowed to drop it or the
// connection closed; the target's tasks and buffers are gone; once the
// connections close no session, buffer byte or goroutine is left
// (synctest fails a bubble that ends with goroutines blocked); no handler
// panicked and no secret reached the logs.
func FuzzSession(f *testing.F) {
	for _, s := range fzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 4096 {
			return // more operations than a session needs to reach any state
		}
		synctest.Test(t, func(t *testing.T) {
			for _, f := range runFzSession(t, data, nil) {
				t.Error(f)
			}
		})
	})
}

// TestFuzzSessionDetects checks that the checks of FuzzSession can fail:
// a disk that returns other data than was written, and a target that
// forgets its memory accounting, must both be noticed by the seeds.
func TestFuzzSessionDetects(t *testing.T) {
	seed := fzSeeds()[0] // iPXE: writes, then reads back
	synctest.Test(t, func(t *testing.T) {
		got := runFzSession(t, seed, func(w *fzWorld) { w.devs[0].flipAt = 100*fzBlock + 7 })
		if !slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, "other data than was written") }) {
			t.Errorf("a disk returning wrong data went unnoticed: %q", got)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		got := runFzSession(t, seed, func(w *fzWorld) { w.srv.mem.total.Add(512) })
		if !slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, "buffer bytes") }) {
			t.Errorf("a leaked buffer count went unnoticed: %q", got)
		}
	})
}

// runFzSession runs one input and returns what failed; tamper, when set,
// breaks the world before the operations run.
func runFzSession(t *testing.T, data []byte, tamper func(*fzWorld)) []string {
	in := &fzInput{b: data}
	w := newFzWorld(t, in.u8(), in.u8())
	if tamper != nil {
		tamper(w)
	}
	for n := 0; !in.empty() && n < 256 && len(w.failures) == 0; n++ {
		op := in.u8()
		w.step(op, in)
		if op&fzPipeline == 0 {
			w.settle()
		}
	}
	if len(w.failures) == 0 {
		w.finish()
	} else {
		// Still end everything, so the bubble's goroutines exit.
		for _, c := range w.clients {
			if c != nil {
				c.close()
			}
		}
		w.srv.Shutdown(t.Context())
		<-w.serveDone
	}
	return w.failures
}

// fzInput decodes the fuzz input; past its end it reads zeros.
type fzInput struct{ b []byte }

func (in *fzInput) empty() bool { return len(in.b) == 0 }

func (in *fzInput) u8() byte {
	if len(in.b) == 0 {
		return 0
	}
	v := in.b[0]
	in.b = in.b[1:]
	return v
}

func (in *fzInput) u16() uint16 { return uint16(in.u8())<<8 | uint16(in.u8()) }

func (in *fzInput) bytes(n int) []byte {
	out := make([]byte, n)
	copy(out, in.b)
	in.b = in.b[min(n, len(in.b)):]
	return out
}

// Operations: the low five bits of an operation byte; bit 5 picks the
// client, bit 6 queues the PDUs without waiting for the target (they go
// out in one write with what the next operations queue), bit 7 is an
// operation-specific variant.
const (
	fzOpDial = iota
	fzOpLogin
	fzOpLoginPDU
	fzOpCommand
	fzOpDataOut
	fzOpFinishData
	fzOpTaskMgmt
	fzOpText
	fzOpNOP
	fzOpLogout
	fzOpRaw
	fzOpSleep
	fzOpClose
	fzOpAnswerPing
	fzOpCorrupt
	fzNumOps

	fzClient2  = 1 << 5
	fzPipeline = 1 << 6
	fzAlt      = 1 << 7
)

func (w *fzWorld) step(op byte, in *fzInput) {
	slot := 0
	if op&fzClient2 != 0 {
		slot = 1
	}
	kind := int(op&0x1f) % fzNumOps
	alt := op&fzAlt != 0
	c := w.clients[slot]
	switch kind {
	case fzOpDial:
		w.dial(slot)
		return
	case fzOpSleep:
		d := []time.Duration{100 * time.Millisecond, time.Second, 6 * time.Second, 11 * time.Second, 31 * time.Second}[in.u8()%5]
		for _, c := range w.clients {
			if c != nil {
				c.flush()
			}
		}
		time.Sleep(d)
		return
	}
	if c == nil || c.closedMe {
		c = w.dial(slot)
	}
	switch kind {
	case fzOpLogin:
		style := in.u8()
		if c.phase != 0 || c.pendingLogin {
			c = w.dial(slot)
		}
		c.login(style)
	case fzOpLoginPDU:
		c.craftedLogin(in)
	case fzOpCommand:
		c.command(in, alt)
	case fzOpDataOut:
		c.dataOut(in)
	case fzOpFinishData:
		sel := in.u8()
		for i, cmd := range c.openWrites() {
			if sel == 0xff || i == int(sel)%max(1, len(c.openWrites())) {
				c.sendRemaining(cmd)
			}
		}
	case fzOpTaskMgmt:
		c.taskMgmt(in, alt)
	case fzOpText:
		c.text(in, alt)
	case fzOpNOP:
		c.nop(in, alt)
	case fzOpLogout:
		c.logout(in, alt)
	case fzOpRaw:
		c.raw(in, alt)
	case fzOpClose:
		c.close()
	case fzOpAnswerPing:
		if c.pingTTT != 0 {
			var p pdu.PDU
			(&pdu.NOPOut{Immediate: true, ITT: pdu.ReservedTag, TTT: c.pingTTT, CmdSN: c.cmdSN, ExpStatSN: c.expStatSN}).Marshal(&p.BHS)
			c.queue(&p)
			c.pingTTT = 0
		}
	case fzOpCorrupt:
		c.corrupt()
	}
}

// --- SCSI commands ---

// fzCDBs are the commands the input picks from: what iPXE, GRUB, the
// kernel and libiscsi send, plus a raw CDB.
var fzCDBs = []struct {
	name  string
	dir   byte // 'r', 'w' or 0
	model byte // 'r' READ, 'w' WRITE (checked against the shadow), 'x' may change anything
	build func(lba uint32, n uint16) ([]byte, uint32, []byte)
}{
	{"TEST UNIT READY", 0, 0, func(uint32, uint16) ([]byte, uint32, []byte) { return []byte{0}, 0, nil }},
	{"INQUIRY", 'r', 0, func(uint32, uint16) ([]byte, uint32, []byte) { return []byte{0x12, 0, 0, 0, 96, 0}, 96, nil }},
	{"INQUIRY VPD 83h", 'r', 0, func(uint32, uint16) ([]byte, uint32, []byte) { return []byte{0x12, 1, 0x83, 0, 255, 0}, 255, nil }},
	{"READ CAPACITY(10)", 'r', 0, func(uint32, uint16) ([]byte, uint32, []byte) { return []byte{0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 8, nil }},
	{"READ CAPACITY(16)", 'r', 0, func(uint32, uint16) ([]byte, uint32, []byte) {
		return []byte{0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0}, 32, nil
	}},
	{"READ(10)", 'r', 'r', func(lba uint32, n uint16) ([]byte, uint32, []byte) {
		return rw10(0x28, lba, n), uint32(n) * fzBlock, nil
	}},
	{"WRITE(10)", 'w', 'w', func(lba uint32, n uint16) ([]byte, uint32, []byte) {
		return rw10(0x2a, lba, n), uint32(n) * fzBlock, nil
	}},
	{"READ(16) FUA", 'r', 'r', func(lba uint32, n uint16) ([]byte, uint32, []byte) {
		return rw16(0x88, 0x08, lba, n), uint32(n) * fzBlock, nil
	}},
	{"WRITE(16) FUA", 'w', 'w', func(lba uint32, n uint16) ([]byte, uint32, []byte) {
		return rw16(0x8a, 0x08, lba, n), uint32(n) * fzBlock, nil
	}},
	{"SYNCHRONIZE CACHE(10)", 0, 0, func(lba uint32, n uint16) ([]byte, uint32, []byte) { return rw10(0x35, lba, n), 0, nil }},
	{"REPORT LUNS", 'r', 0, func(uint32, uint16) ([]byte, uint32, []byte) {
		return []byte{0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}, 256, nil
	}},
	{"MODE SENSE(6)", 'r', 0, func(uint32, uint16) ([]byte, uint32, []byte) { return []byte{0x1a, 0, 0x3f, 0, 255, 0}, 255, nil }},
	{"REQUEST SENSE", 'r', 0, func(uint32, uint16) ([]byte, uint32, []byte) { return []byte{0x03, 0, 0, 0, 252, 0}, 252, nil }},
	{"UNMAP", 'w', 'x', func(lba uint32, n uint16) ([]byte, uint32, []byte) {
		p := make([]byte, 24)
		binary.BigEndian.PutUint16(p[0:], 22)
		binary.BigEndian.PutUint16(p[2:], 16)
		binary.BigEndian.PutUint64(p[8:], uint64(lba))
		binary.BigEndian.PutUint32(p[16:], uint32(n))
		return []byte{0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0}, 24, p
	}},
	{"WRITE SAME(10)", 'w', 'x', func(lba uint32, n uint16) ([]byte, uint32, []byte) { return rw10(0x41, lba, n), fzBlock, nil }},
	{"COMPARE AND WRITE", 'w', 'x', func(lba uint32, n uint16) ([]byte, uint32, []byte) {
		cdb := rw16(0x89, 0, lba, 0)
		cdb[13] = 1
		return cdb, 2 * fzBlock, nil
	}},
	{"MODE SELECT(6) caching", 'w', 0, func(lba uint32, n uint16) ([]byte, uint32, []byte) {
		// Write cache on or off: the reader runs quick writes itself only
		// with it on.
		p := []byte{0, 0, 0, 0, 0x08, 0x12, byte(lba&1) << 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
		return []byte{0x15, 0x10, 0, 0, byte(len(p)), 0}, uint32(len(p)), p
	}},
	{"PERSISTENT RESERVE OUT register", 'w', 0, func(lba uint32, n uint16) ([]byte, uint32, []byte) {
		p := make([]byte, 24)
		binary.BigEndian.PutUint64(p[8:], uint64(lba)+1)
		return []byte{0x5f, 0, 0, 0, 0, 0, 0, 0, 24, 0}, 24, p
	}},
	{"VERIFY(10)", 0, 0, func(lba uint32, n uint16) ([]byte, uint32, []byte) { return rw10(0x2f, lba, n), 0, nil }},
	{"raw", 0, 'x', nil},
}

func rw16(op, flags byte, lba uint32, n uint16) []byte {
	cdb := make([]byte, 16)
	cdb[0], cdb[1] = op, flags
	binary.BigEndian.PutUint64(cdb[2:], uint64(lba))
	binary.BigEndian.PutUint32(cdb[10:], uint32(n))
	return cdb
}

// fzPattern is the content written by write id at byte off of its data.
func fzPattern(id uint32) func(uint32) byte {
	return func(off uint32) byte { return byte(id*131 + off*7 + off>>9) }
}

// command sends a SCSI Command. Input: CDB, LBA (2), blocks, flags, CmdSN,
// ITT/LUN; a raw CDB adds 16 bytes. flags: 0-1 EDTL {exact, +512, -512,
// 0}, 2-3 immediate data {all allowed, none, half, too much}, 4 F=1
// even with unsolicited data to come, 5 R and W swapped, 6 both R and W,
// 7 EDTL beyond MaxTransferLength. alt: the Immediate bit.
func (c *fzClient) command(in *fzInput, immediate bool) {
	e := fzCDBs[int(in.u8())%len(fzCDBs)]
	lba := uint32(in.u16()) % (fzBlocks + 16)
	n := uint16(in.u8()) % 129
	flags := in.u8()
	snSel := in.u8()
	ittSel := in.u8()
	var cdb, param []byte
	var edtl uint32
	dir := e.dir
	if e.build == nil {
		cdb = in.bytes(16)
		edtl = uint32(n) * fzBlock
		dir = []byte{0, 'r', 'w', 0}[flags>>5&3]
	} else {
		cdb, edtl, param = e.build(lba, n)
	}
	exact := true
	switch flags & 3 {
	case 1:
		edtl += fzBlock
		exact = false
	case 2:
		edtl = max(edtl, fzBlock) - fzBlock
		exact = false
	case 3:
		if edtl != 0 {
			exact = false
		}
		edtl = 0
	}
	if flags&0x80 != 0 {
		edtl, exact = c.w.srv.cfg.MaxTransferLength+1, false
	}
	m := pdu.SCSICommand{Immediate: immediate, Final: true, Attr: pdu.AttrSimple, ExpectedDataTransferLength: edtl,
		ExpStatSN: c.expStatSN}
	copy(m.CDB[:], cdb)
	read, write := dir == 'r', dir == 'w'
	if e.build != nil && flags&0x20 != 0 {
		read, write = write, read
		exact = false
	}
	if flags&0x40 != 0 {
		read, write, exact = true, true, false
	}
	m.Read, m.Write = read, write

	// LUN: mostly 0; then LUN 1, LUN 0 in flat addressing, a LUN no
	// target has.
	lunRaw := []uint64{encodeLUN(0), encodeLUN(0), encodeLUN(1), 0x4000 << 48, 0x00ff_0000_0001_0000}[int(ittSel>>4)%5]
	m.LUN = lunRaw
	// ITT: fresh, or one still outstanding, or the reserved tag.
	m.ITT = c.nextITT()
	reused := false
	switch ittSel & 0xf {
	case 12, 13:
		if open := c.openSCSI(); len(open) > 0 {
			m.ITT, reused = open[int(ittSel)%len(open)].itt, true
		}
	case 14:
		m.ITT = pdu.ReservedTag
	}
	var mayDrop bool
	if immediate {
		m.CmdSN = c.cmdSN
	} else {
		m.CmdSN, mayDrop = c.pickCmdSN(snSel)
	}

	c.w.writeIDs++
	id := c.w.writeIDs
	pattern := fzPattern(id)
	payload := func(off uint32) byte {
		if param != nil {
			if off < uint32(len(param)) {
				return param[off]
			}
			return 0
		}
		return pattern(off)
	}
	// Immediate data (RFC 7143 10.4): as much as FirstBurstLength and
	// the target's MaxRecvDataSegmentLength allow, when negotiated.
	var imm uint32
	if write && c.immData {
		imm = min(edtl, c.firstBurst, c.targetMRDSL)
	}
	switch flags >> 2 & 3 {
	case 1:
		imm = 0
	case 2:
		imm /= 2
	case 3:
		imm = min(edtl+4, c.targetMRDSL)
		mayDrop = true
	}
	var p pdu.PDU
	if imm > 0 {
		p.Data = make([]byte, imm)
		for i := range p.Data {
			p.Data[i] = payload(uint32(i))
		}
	}
	// F=0 announces unsolicited Data-Out (RFC 7143 11.3.1).
	unsolEnd := imm
	if write && !c.initialR2T && flags&0x10 == 0 && edtl > imm {
		m.Final = false
		unsolEnd = min(edtl, c.firstBurst)
	}
	m.Marshal(&p)
	c.queue(&p)

	cmd := c.register(m.ITT, pdu.OpSCSICommand, m.CmdSN, immediate, mayDrop || m.ITT == pdu.ReservedTag)
	if reused {
		// The target rejects the second command, or runs it if it had
		// finished the first: from here on, what comes for this ITT
		// belongs to either, and either may write.
		c.rawITTs[m.ITT] = true
		if lu := c.w.luns[decodeLUN(lunRaw)]; lu != nil {
			for b := range fzBlocks {
				lu.gen[b]++
				lu.inflight[b]++ // for good: the model cannot tell when it ends
				lu.known[b] = false
			}
		}
		return
	}
	if cmd == nil {
		return
	}
	cmd.lun, cmd.read, cmd.write, cmd.edtl, cmd.payload = decodeLUN(lunRaw), read, write, edtl, payload
	cmd.unsolEnd, cmd.unsolSent = unsolEnd, imm
	lu := c.w.luns[cmd.lun]
	if lu == nil || c.discovery || c.target != fzIQN {
		return // nothing the shadow disk knows of
	}
	cmd.lba, cmd.nblk = int(min(lba, fzBlocks)), int(min(uint32(n), fzBlocks-min(lba, fzBlocks)))
	// Whatever may change blocks makes them unknown until a WRITE the
	// model understands (exact length, W only) ends GOOD.
	switch {
	case write || e.model == 'w' || e.model == 'x':
		cmd.modelWrite = e.model == 'w' && write && !read && exact
		if !cmd.modelWrite {
			cmd.opaque = true
			cmd.lba, cmd.nblk = 0, fzBlocks
		}
		cmd.countedWrite = true
		for b := cmd.lba; b < cmd.lba+cmd.nblk; b++ {
			lu.gen[b]++
			lu.inflight[b]++
			lu.known[b] = false
			cmd.gens = append(cmd.gens, lu.gen[b])
		}
	case read && !write && e.model == 'r' && exact:
		cmd.modelRead = true
		for b := cmd.lba; b < cmd.lba+cmd.nblk; b++ {
			cmd.gens = append(cmd.gens, lu.gen[b])
			cmd.knownAtSend = append(cmd.knownAtSend, lu.known[b] && lu.inflight[b] == 0)
		}
	}
}

func (c *fzClient) openSCSI() []*fzCmd {
	var out []*fzCmd
	for _, cmd := range sortedCmds(c.cmds) {
		if cmd.op == pdu.OpSCSICommand && !cmd.done() {
			out = append(out, cmd)
		}
	}
	return out
}

func (c *fzClient) openWrites() []*fzCmd {
	var out []*fzCmd
	for _, cmd := range c.openSCSI() {
		if cmd.write {
			out = append(out, cmd)
		}
	}
	return out
}

// dataOut sends one Data-Out PDU for an open write. Input: which write,
// mode, size. mode: 0-3 the next chunk the target expects (unsolicited
// first, then the oldest R2T), 4 offset off by 512, 5 DataSN off by one,
// 6 past the end of the burst, 7 an unknown TTT, 8 an unknown ITT, 9 the
// previous chunk again, 10 empty.
func (c *fzClient) dataOut(in *fzInput) {
	sel, mode, size := in.u8(), in.u8()%11, in.u8()
	open := c.openWrites()
	if len(open) == 0 {
		return
	}
	cmd := open[int(sel)%len(open)]
	n := []uint32{c.targetMRDSL, fzBlock, 1, 1 << 20}[size%4]
	ttt, off, sn, end := pdu.ReservedTag, cmd.unsolSent, cmd.unsolDataSN, cmd.unsolEnd
	var r *fzR2T
	if cmd.unsolSent >= cmd.unsolEnd {
		for _, x := range cmd.r2ts {
			if x.sent < x.length {
				r = x
				break
			}
		}
		if r == nil && mode < 4 {
			return
		}
		if r != nil {
			ttt, off, sn, end = r.ttt, r.off+r.sent, r.dataSN, r.off+r.length
		}
	}
	n = min(n, end-min(off, end))
	itt := cmd.itt
	proper := false
	switch mode {
	case 4:
		off += fzBlock
	case 5:
		sn++
	case 6:
		n = end - min(off, end) + fzBlock
	case 7:
		ttt ^= 0x5a5a
	case 8:
		itt = c.nextITT()
	case 9:
		off -= min(off, n)
	case 10:
		n, proper = 0, off <= end
	default:
		proper = true
	}
	c.sendDataOut(cmd, itt, ttt, off, n, sn, off+n >= end)
	if proper {
		if r != nil {
			r.sent += n
			r.dataSN++
		} else {
			cmd.unsolSent += n
			cmd.unsolDataSN++
		}
	} else if mode != 8 {
		cmd.mayDrop = true // the target fails it, or it ignores a TTT it does not know
	}
}

func (c *fzClient) sendDataOut(cmd *fzCmd, itt, ttt, off, n, sn uint32, final bool) {
	d := pdu.DataOut{Final: final, LUN: encodeLUN(cmd.lun), ITT: itt, TTT: ttt, ExpStatSN: c.expStatSN, DataSN: sn, BufferOffset: off}
	var p pdu.PDU
	d.Marshal(&p.BHS)
	p.Data = make([]byte, n)
	for i := range p.Data {
		p.Data[i] = cmd.payload(off + uint32(i))
	}
	c.queue(&p)
}

// sendRemaining sends all the data a write still owes: the rest of its
// unsolicited burst and of every R2T received. It reports whether it sent
// anything.
func (c *fzClient) sendRemaining(cmd *fzCmd) bool {
	sent := false
	for cmd.unsolSent < cmd.unsolEnd {
		n := min(cmd.unsolEnd-cmd.unsolSent, c.targetMRDSL)
		c.sendDataOut(cmd, cmd.itt, pdu.ReservedTag, cmd.unsolSent, n, cmd.unsolDataSN, cmd.unsolSent+n == cmd.unsolEnd)
		cmd.unsolSent += n
		cmd.unsolDataSN++
		sent = true
	}
	for _, r := range cmd.r2ts {
		for r.sent < r.length {
			n := min(r.length-r.sent, c.targetMRDSL)
			c.sendDataOut(cmd, cmd.itt, r.ttt, r.off+r.sent, n, r.dataSN, r.sent+n == r.length)
			r.sent += n
			r.dataSN++
			sent = true
		}
	}
	return sent
}

// --- Task management, Text, NOP-Out, Logout, raw PDUs ---

// taskMgmt sends a Task Management Function Request. Input: function,
// referenced task, RefCmdSN, LUN and CmdSN. alt: not immediate.
func (c *fzClient) taskMgmt(in *fzInput, notImmediate bool) {
	fnSel, refSel, snSel, lunSel := in.u8(), in.u8(), in.u8(), in.u8()
	fn := []uint8{pdu.TMFAbortTask, pdu.TMFAbortTask, pdu.TMFAbortTaskSet, pdu.TMFClearACA, pdu.TMFClearTaskSet,
		pdu.TMFLogicalUnitReset, pdu.TMFTargetWarmReset, pdu.TMFTargetColdReset, pdu.TMFTaskReassign, 0, 15}[int(fnSel)%11]
	m := pdu.TaskMgmtRequest{Immediate: !notImmediate, Function: fn, ITT: c.nextITT(), ReferencedTag: pdu.ReservedTag,
		ExpStatSN: c.expStatSN, LUN: encodeLUN(uint64(lunSel & 1))}
	open := c.openSCSI()
	switch {
	case refSel%4 != 3 && len(open) > 0:
		ref := open[int(refSel>>2)%len(open)]
		m.ReferencedTag, m.RefCmdSN, m.LUN = ref.itt, ref.cmdSN, encodeLUN(ref.lun)
	case refSel%4 == 3:
		m.ReferencedTag = c.itt + 1000 // a task that does not exist
	}
	switch snSel % 4 {
	case 1:
		m.RefCmdSN = c.cmdSN
	case 2:
		if len(c.gaps) > 0 {
			m.RefCmdSN = c.gaps[0]
		} else {
			m.RefCmdSN = c.cmdSN - 1
		}
	case 3:
		m.RefCmdSN = uint32(snSel) << 20
	}
	var mayDrop bool
	m.CmdSN, mayDrop = c.cmdSNFor(m.Immediate, snSel>>2)
	var p pdu.PDU
	m.Marshal(&p.BHS)
	c.queue(&p)
	if cmd := c.register(m.ITT, pdu.OpTaskMgmtReq, m.CmdSN, m.Immediate, mayDrop); cmd != nil {
		cmd.fn, cmd.refTag, cmd.refSN, cmd.tmfLUN = fn, m.ReferencedTag, m.RefCmdSN, decodeLUN(m.LUN)
	}
}

// text sends a Text Request. kind: 0 SendTargets=All, 1 SendTargets=,
// 2 SendTargets=<this target>, 3 SendTargets=<another>, 4 a new
// MaxRecvDataSegmentLength, 5 an unknown key, 6 the continuation of a
// long answer, 7 C bit set, 8 garbage. alt: not immediate.
func (c *fzClient) text(in *fzInput, notImmediate bool) {
	kind, snSel := in.u8(), in.u8()
	m := pdu.TextRequest{Immediate: !notImmediate, Final: true, ITT: c.nextITT(), TTT: pdu.ReservedTag, ExpStatSN: c.expStatSN}
	var data []byte
	cont := false
	switch kind % 9 {
	case 0:
		data = pdu.AppendText(nil, pdu.KV{Key: "SendTargets", Value: "All"})
	case 1:
		data = pdu.AppendText(nil, pdu.KV{Key: "SendTargets", Value: ""})
	case 2:
		data = pdu.AppendText(nil, pdu.KV{Key: "SendTargets", Value: fzIQN})
	case 3:
		data = pdu.AppendText(nil, pdu.KV{Key: "SendTargets", Value: fzIQN2})
	case 4:
		v := []string{"512", "1024", "4096", "65536", "0"}[int(kind>>4)%5]
		data = pdu.AppendText(nil, pdu.KV{Key: "MaxRecvDataSegmentLength", Value: v})
		if n, err := pdu.ParseNumericalValue(v); err == nil && n >= 512 {
			c.ourMRDSL = max(c.ourMRDSL, uint32(n))
		}
	case 5:
		data = pdu.AppendText(nil, pdu.KV{Key: "X-org.example.fuzz", Value: "1"}, pdu.KV{Key: "HeaderDigest", Value: "CRC32C"})
	case 6:
		if c.textTTT != 0 {
			m.ITT, m.TTT, cont = c.textITT, c.textTTT, true
		}
	case 7:
		m.Final, m.Continue = false, true
		data = pdu.AppendText(nil, pdu.KV{Key: "SendTargets", Value: "All"})
	case 8:
		data = in.bytes(int(kind >> 4))
	}
	var mayDrop bool
	m.CmdSN, mayDrop = c.cmdSNFor(m.Immediate, snSel)
	var p pdu.PDU
	m.Marshal(&p.BHS)
	p.Data = data
	c.queue(&p)
	if cont {
		if mayDrop {
			c.cmds[m.ITT].mayDrop = true
		}
		return
	}
	if c.textTTT != 0 {
		// A new request ends the negotiation left pending (RFC 7143 11.10.2).
		if old := c.cmds[c.textITT]; old != nil {
			old.mayDrop = true
		}
		c.textTTT = 0
	}
	c.register(m.ITT, pdu.OpTextReq, m.CmdSN, m.Immediate, mayDrop)
}

// nop sends a NOP-Out. Input: data length {0, 16, the most the target
// takes, one more}, CmdSN, ITT {fresh, reserved}. alt: not immediate.
func (c *fzClient) nop(in *fzInput, notImmediate bool) {
	lenSel, snSel, ittSel := in.u8(), in.u8(), in.u8()
	m := pdu.NOPOut{Immediate: !notImmediate, ITT: c.nextITT(), TTT: pdu.ReservedTag, ExpStatSN: c.expStatSN}
	if ittSel%4 == 3 {
		m.ITT = pdu.ReservedTag
	}
	var mayDrop bool
	m.CmdSN, mayDrop = c.cmdSNFor(m.Immediate, snSel)
	var p pdu.PDU
	m.Marshal(&p.BHS)
	p.Data = make([]byte, []uint32{0, 16, c.ourMRDSL, c.ourMRDSL + 1}[lenSel%4])
	for i := range p.Data {
		p.Data[i] = byte(i)
	}
	c.queue(&p)
	if m.ITT != pdu.ReservedTag {
		c.register(m.ITT, pdu.OpNOPOut, m.CmdSN, m.Immediate, mayDrop)
	}
}

// logout sends a Logout Request. Input: reason (0-3 and invalid), CID
// {ours, another}, CmdSN. alt: not immediate (iPXE and open-iscsi send it
// immediate).
func (c *fzClient) logout(in *fzInput, notImmediate bool) {
	reason, cidSel, snSel := in.u8(), in.u8(), in.u8()
	m := pdu.LogoutRequest{Immediate: !notImmediate, Reason: []uint8{0, 0, 1, 2, 7}[int(reason)%5], ITT: c.nextITT(),
		CID: uint16(cidSel % 2), ExpStatSN: c.expStatSN}
	var mayDrop bool
	m.CmdSN, mayDrop = c.cmdSNFor(m.Immediate, snSel)
	var p pdu.PDU
	m.Marshal(&p.BHS)
	c.queue(&p)
	c.register(m.ITT, pdu.OpLogoutReq, m.CmdSN, m.Immediate, mayDrop)
}

// raw sends a well-framed PDU with a header from the input: opcode byte,
// data length, bytes 1-3 and 8-47 of the header, the data. alt: keep the
// CmdSN and ExpStatSN fields sensible.
func (c *fzClient) raw(in *fzInput, sensible bool) {
	var p pdu.PDU
	p.BHS[0] = in.u8()
	n := int(in.u8())
	copy(p.BHS[1:4], in.bytes(3))
	copy(p.BHS[8:], in.bytes(40))
	if sensible {
		binary.BigEndian.PutUint32(p.BHS[24:], c.cmdSN)
		binary.BigEndian.PutUint32(p.BHS[28:], c.expStatSN)
	}
	p.Data = in.bytes(n)
	c.queue(&p)
	c.rawITTs[p.BHS.ITT()] = true
	switch p.BHS.Opcode() {
	case pdu.OpSCSICommand, pdu.OpNOPOut, pdu.OpTextReq, pdu.OpTaskMgmtReq, pdu.OpLogoutReq:
		if !p.BHS.Immediate() {
			// Its CmdSN is taken: a later command with it is a
			// duplicate the target drops (RFC 7143 4.2.2.1).
			c.usedSN[binary.BigEndian.Uint32(p.BHS[24:])]++
		}
	}
}

// complete finishes what the client left open, as a well-behaved initiator
// would: it fills the gaps in the CmdSN sequence the target waits on with
// NOP-Outs, sends every byte of data the target asked for, and fetches the
// rest of a long Text answer, until the target has nothing left to wait
// for. What the target waits for is read from its connection: a write
// whose R2T never reached the client is a failure.
func (c *fzClient) complete() {
	for range 64 {
		if c.eof() || c.phase != 1 {
			return
		}
		sc := c.w.serverConn(c)
		if sc == nil {
			return
		}
		sent := false
		sc.mu.Lock()
		exp := sc.expCmdSN.Load()
		var hi uint32
		queued := map[uint32]bool{}
		for sn := range sc.queued {
			if len(queued) == 0 || snLess(hi, sn) {
				hi = sn
			}
			queued[sn] = true
		}
		type owed struct {
			itt, ttt, off, n, dataSN uint32
			seen                     bool // the client got this R2T
		}
		var debts []owed
		for _, itt := range slices.Sorted(maps.Keys(sc.tasks)) {
			t := sc.tasks[itt]
			if !t.write || t.dataDone {
				continue
			}
			if t.unsolicitedRecv < t.unsolicitedEnd {
				debts = append(debts, owed{itt, pdu.ReservedTag, t.unsolicitedRecv, t.unsolicitedEnd - t.unsolicitedRecv, t.unsolDataSN, true})
			}
			for _, r := range t.r2ts {
				seen := false
				if cmd := c.cmds[itt]; cmd != nil {
					seen = slices.ContainsFunc(cmd.r2ts, func(x *fzR2T) bool { return x.ttt == r.ttt })
				}
				debts = append(debts, owed{itt, r.ttt, r.offset + r.received, r.len - r.received, r.dataSN, seen})
			}
		}
		sc.mu.Unlock()
		if len(queued) > 0 {
			for sn := exp; snLess(sn, hi); sn++ {
				if !queued[sn] {
					var p pdu.PDU
					m := pdu.NOPOut{ITT: c.nextITT(), TTT: pdu.ReservedTag, CmdSN: sn, ExpStatSN: c.expStatSN}
					m.Marshal(&p.BHS)
					c.queue(&p)
					c.register(m.ITT, pdu.OpNOPOut, sn, false, false)
					sent = true
				}
			}
		}
		for _, d := range debts {
			if !d.seen && !c.rawITTs[d.itt] {
				c.w.failf("%s: the target waits on R2T %#x of ITT %#x, which it never sent", c.remote, d.ttt, d.itt)
			}
			payload := func(uint32) byte { return 0 }
			cmd := c.cmds[d.itt]
			if cmd != nil && cmd.payload != nil {
				payload = cmd.payload
			}
			for off, sn := d.off, d.dataSN; off < d.off+d.n; sn++ {
				n := min(d.off+d.n-off, c.targetMRDSL)
				dd := pdu.DataOut{Final: off+n == d.off+d.n, ITT: d.itt, TTT: d.ttt, ExpStatSN: c.expStatSN, DataSN: sn, BufferOffset: off}
				var p pdu.PDU
				dd.Marshal(&p.BHS)
				p.Data = make([]byte, n)
				for i := range p.Data {
					p.Data[i] = payload(off + uint32(i))
				}
				c.queue(&p)
				off += n
				sent = true
			}
			// What the client tracks of the write follows.
			if cmd != nil {
				if d.ttt == pdu.ReservedTag {
					cmd.unsolSent = max(cmd.unsolSent, d.off+d.n)
				} else {
					for _, r := range cmd.r2ts {
						if r.ttt == d.ttt {
							r.sent = r.length
						}
					}
				}
			}
		}
		if c.textTTT != 0 {
			var p pdu.PDU
			m := pdu.TextRequest{Immediate: true, Final: true, ITT: c.textITT, TTT: c.textTTT, CmdSN: c.cmdSN, ExpStatSN: c.expStatSN}
			m.Marshal(&p.BHS)
			c.queue(&p)
			c.textTTT = 0
			sent = true
		}
		if !sent || len(c.w.failures) > 0 {
			return
		}
		c.w.settle()
	}
	c.w.failf("%s: the target still waits after 64 rounds of completion", c.remote)
}
