package iscsi

import (
	"slices"
	"sync/atomic"

	"github.com/diskless-boot/diskless/internal/iscsi/pdu"
	"github.com/diskless-boot/diskless/internal/scsi"
)

// DefaultSendfileMin is Config.SendfileMin's default.
const DefaultSendfileMin = 64 << 10

// task is one SCSI command from receipt to response (RFC 7143 4.2.2 and
// 11.3 to 11.8).
type task struct {
	cmd   pdu.SCSICommand
	lun   uint64
	buf   []byte // Data-Out collected, or Data-In to send; from getBuf
	edtl  uint32
	write bool
	op    CommandOp // for its latency
	start int64     // monoNow when it arrived

	// Data-Out bookkeeping, on the reader goroutine.
	unsolicitedEnd  uint32 // end of the unsolicited region (immediate + unsolicited Data-Out)
	unsolicitedRecv uint32 // bytes received of it
	unsolDataSN     uint32 // next expected DataSN of unsolicited Data-Out
	nextR2TOffset   uint32 // start of the first region not yet solicited
	r2tSN           uint32
	r2ts            []*r2t // outstanding
	dataDone        bool

	memHeld   bool        // buf counted in conn.memUsed; under conn.mu
	delivered bool        // reached in CmdSN order
	executing bool        // handed to the SCSI layer
	aborted   atomic.Bool // response must not be sent
	// waiting: what the task waits for that only the initiator can
	// send (waitData, waitOrder), for Config.DataOutTimeout.
	waiting atomic.Uint32
	done    chan struct{}
}

// What a task may wait for from the initiator (task.waiting).
const (
	waitData  = 1 << iota // its Data-Out
	waitOrder             // a command before it in CmdSN order
)

// r2t is one outstanding Ready To Transfer (RFC 7143 11.8).
type r2t struct {
	ttt         uint32
	offset, len uint32
	received    uint32
	dataSN      uint32
}

// handleSCSICommand takes a SCSI Command PDU whose header has been read;
// its immediate data, if any, is still on the wire.
func (c *conn) handleSCSICommand(p *pdu.PDU) error {
	h := &p.BHS
	cmd, err := pdu.ParseSCSICommand(p)
	dsl := uint32(h.DataSegmentLength())
	if err != nil || c.sess.discovery {
		reason := uint8(pdu.RejectInvalidPDUField)
		if c.sess.discovery {
			// A discovery session carries Text, NOP and Logout only (RFC 7143 4.3).
			reason = pdu.RejectProtocolError
		}
		return c.rejectData(h, reason)
	}
	if !cmd.Immediate && !c.inCmdSNWindow(cmd.CmdSN) {
		return c.rd.DiscardData()
	}
	// Protocol checks on the data that comes with the command (RFC 7143
	// 11.3.4 and 13.10/13.11): immediate data only when negotiated, only
	// with W, never past EDTL or FirstBurstLength.
	if dsl > 0 && (!cmd.Write || !c.params.ImmediateData || dsl > cmd.ExpectedDataTransferLength || dsl > c.params.FirstBurstLength) {
		return c.rejectData(h, pdu.RejectProtocolError)
	}
	c.mu.Lock()
	_, busy := c.tasks[cmd.ITT]
	c.mu.Unlock()
	if busy || cmd.ITT == pdu.ReservedTag {
		return c.rejectData(h, pdu.RejectInvalidPDUField)
	}
	if !c.gotCommand.Load() {
		c.gotCommand.Store(true) // Config.FirstCommandTimeout
	}

	t := &task{cmd: cmd, lun: decodeLUN(cmd.LUN), edtl: cmd.ExpectedDataTransferLength, write: cmd.Write, done: make(chan struct{}),
		op: commandOps[cmd.CDB[0]], start: monoNow()}
	if cmd.Read && cmd.Write {
		// Bidirectional commands (XDWRITEREAD and friends) are not
		// implemented; the SCSI layer would not know the read length.
		return c.refuse(t, dsl, scsi.StatusCheckCondition, senseInvalidFieldInCDB)
	}
	if t.edtl > c.srv.cfg.MaxTransferLength {
		return c.refuse(t, dsl, scsi.StatusCheckCondition, senseInvalidFieldInCDB)
	}
	if t.edtl > 0 && (cmd.Read || cmd.Write) {
		c.mu.Lock()
		bound := c.srv.reserveMem(c.memTarget, c.memUsed, int64(t.edtl))
		if bound == memOK {
			c.memUsed += int64(t.edtl)
		}
		c.mu.Unlock()
		if bound != memOK {
			// SAM-5 5.3: TASK SET FULL tells the initiator to retry
			// later; the buffers of the commands in flight bound us.
			c.srv.stats.countTaskSetFull(bound)
			c.warn("iscsi command refused: memory budget", "bound", bound.String(), "bytes", t.edtl)
			return c.refuse(t, dsl, scsi.StatusTaskSetFull, nil)
		}
		t.buf = getBuf(int(t.edtl))
		t.memHeld = true
	}
	if cmd.Write {
		if err := c.rd.ReadData(t.buf[:dsl]); err != nil {
			putBuf(t.buf)
			c.mu.Lock()
			c.releaseMemLocked(t)
			c.mu.Unlock()
			if err == pdu.ErrDataDigest {
				c.reject(h, pdu.RejectDataDigestError)
				return c.sendStatus(t, scsi.StatusCheckCondition, senseProtocolCRCError)
			}
			return err
		}
		t.unsolicitedRecv = dsl
		t.unsolicitedEnd = dsl // at most EDTL and FirstBurstLength (checked above)
		if !c.params.InitialR2T && !cmd.Final {
			t.unsolicitedEnd = min(t.edtl, c.params.FirstBurstLength)
		}
		t.nextR2TOffset = t.unsolicitedEnd
	} else if err := c.rd.DiscardData(); err != nil {
		return err
	}
	c.mu.Lock()
	c.tasks[cmd.ITT] = t
	c.mu.Unlock()
	c.admit(cmd.CmdSN, cmd.Immediate, func() {
		c.mu.Lock()
		if t.aborted.Load() {
			c.mu.Unlock()
			return
		}
		t.delivered = true
		c.active++
		c.mu.Unlock()
		c.progress(t)
	}, func() { c.discardTask(t) })
	// R2Ts may go out before the command is delivered: the data is
	// needed either way.
	if !t.delivered {
		c.progress(t)
	}
	return nil
}

// refuse answers a command with a status without running it, dropping any
// immediate data.
func (c *conn) refuse(t *task, dsl uint32, status scsi.Status, sense []byte) error {
	if err := c.rd.DiscardData(); err != nil {
		return err
	}
	if !t.cmd.Immediate {
		// The command still consumes its CmdSN.
		c.admit(t.cmd.CmdSN, false, func() {}, nil)
	}
	return c.sendStatus(t, status, sense)
}

// sendStatus sends a SCSI Response for a task that never reached the
// SCSI layer.
func (c *conn) sendStatus(t *task, status scsi.Status, sense []byte) error {
	resp := pdu.SCSIResponse{Status: uint8(status), ITT: t.cmd.ITT}
	if t.edtl > 0 {
		resp.Underflow, resp.ResidualCount = true, t.edtl
	}
	item := &outItem{pdus: []outPDU{{sn: snAdvance}}, answered: t.answer(status, sense)}
	resp.Marshal(&item.pdus[0].bhs)
	if sense != nil {
		item.pdus[0].data = pdu.SenseData(nil, sense)
	}
	c.send(item)
	return nil
}

// progress moves a task on: solicit the data still missing, and run the
// command once it is delivered and all its data is in. Reader goroutine.
func (c *conn) progress(t *task) {
	if t.aborted.Load() || t.executing {
		return
	}
	if t.write && !t.dataDone {
		c.solicit(t)
		if t.unsolicitedRecv == t.unsolicitedEnd && len(t.r2ts) == 0 && t.nextR2TOffset >= t.edtl {
			t.dataDone = true
		}
	}
	var w uint32
	if !t.delivered {
		w |= waitOrder
	}
	if t.write && !t.dataDone {
		w |= waitData
	}
	t.waiting.Store(w)
	if w != 0 {
		return
	}
	c.mu.Lock()
	if t.aborted.Load() {
		c.mu.Unlock()
		return
	}
	t.executing = true
	c.running.Add(1)
	c.mu.Unlock()
	switch {
	case c.quick(t):
		c.execute(t, true, false)
	case c.sess.target.SCSI.Async(t.lun, t.cmd.CDB[:]):
		// Handed to the device here; the response goes out from the
		// device's completion (finish).
		c.execute(t, false, true)
	default:
		go c.execute(t, false, false)
	}
}

// solicit sends R2Ts for the data not yet requested, keeping at most
// MaxOutstandingR2T outstanding, each at most MaxBurstLength (13.8, 13.17).
func (c *conn) solicit(t *task) {
	for t.nextR2TOffset < t.edtl && uint32(len(t.r2ts)) < c.params.MaxOutstandingR2T {
		n := min(t.edtl-t.nextR2TOffset, c.params.MaxBurstLength)
		c.mu.Lock()
		c.nextTTT++
		if c.nextTTT == pdu.ReservedTag {
			c.nextTTT = 1
		}
		ttt := c.nextTTT
		c.mu.Unlock()
		r := &r2t{ttt: ttt, offset: t.nextR2TOffset, len: n}
		t.r2ts = append(t.r2ts, r)
		t.nextR2TOffset += n
		m := pdu.R2T{LUN: t.cmd.LUN, ITT: t.cmd.ITT, TTT: ttt, R2TSN: t.r2tSN, BufferOffset: r.offset, DesiredDataTransferLength: n}
		t.r2tSN++
		item := &outItem{pdus: []outPDU{{sn: snPeek}}}
		m.Marshal(&item.pdus[0].bhs)
		c.send(item)
	}
}

// handleDataOut places a Data-Out PDU's data into its task's buffer
// (RFC 7143 11.7). Data for unknown or aborted tasks is dropped.
func (c *conn) handleDataOut(p *pdu.PDU) error {
	h := &p.BHS
	d, _ := pdu.ParseDataOut(h)
	dsl := uint32(h.DataSegmentLength())
	c.mu.Lock()
	t := c.tasks[d.ITT]
	c.mu.Unlock()
	if t == nil || !t.write || t.aborted.Load() || t.dataDone || t.executing {
		return c.rd.DiscardData()
	}
	var seq *r2t
	seqIdx := -1
	ok := true
	if d.TTT == pdu.ReservedTag {
		// Unsolicited data, in order (DataPDUInOrder=Yes).
		ok = d.BufferOffset == t.unsolicitedRecv && d.BufferOffset+dsl <= t.unsolicitedEnd &&
			d.BufferOffset+dsl >= d.BufferOffset && d.DataSN == t.unsolDataSN
	} else {
		for i, r := range t.r2ts {
			if r.ttt == d.TTT {
				seq, seqIdx = r, i
			}
		}
		ok = seq != nil && d.BufferOffset == seq.offset+seq.received &&
			d.BufferOffset+dsl <= seq.offset+seq.len && d.BufferOffset+dsl >= d.BufferOffset && d.DataSN == seq.dataSN
	}
	if !ok {
		// Offsets, lengths or DataSN the protocol does not allow: at
		// ErrorRecoveryLevel 0 the data cannot be recovered, so the
		// task ends with a protocol error (RFC 7143 7.1.4, 11.7.3).
		if err := c.rejectData(h, pdu.RejectProtocolError); err != nil {
			return err
		}
		c.failTask(t, senseInvalidFieldInCDB)
		return nil
	}
	if err := c.rd.ReadData(t.buf[d.BufferOffset : d.BufferOffset+dsl]); err != nil {
		if err == pdu.ErrDataDigest {
			c.reject(h, pdu.RejectDataDigestError)
			c.failTask(t, senseProtocolCRCError)
			return nil
		}
		return err
	}
	c.dataOutCount.Add(1) // for the watchdog
	if seq == nil {
		t.unsolicitedRecv += dsl
		t.unsolDataSN++
	} else {
		seq.received += dsl
		seq.dataSN++
		if seq.received == seq.len {
			t.r2ts = slices.Delete(t.r2ts, seqIdx, seqIdx+1)
		}
	}
	c.progress(t)
	return nil
}

// failTask ends a task that has not executed with CHECK CONDITION.
// Reader goroutine only.
func (c *conn) failTask(t *task, sense []byte) {
	if c.discardTask(t) {
		c.sendStatus(t, scsi.StatusCheckCondition, sense)
	}
}

// discardTask ends a task that has not executed, without a response, and
// reports whether it did (a task management function may have been first).
// Reader goroutine only.
func (c *conn) discardTask(t *task) bool {
	c.mu.Lock()
	if c.tasks[t.cmd.ITT] != t || t.executing {
		c.mu.Unlock()
		return false
	}
	c.dropTaskLocked(t)
	c.mu.Unlock()
	// The reader is the only user of a task that is not executing, so
	// the buffer can go back to the pool.
	putBuf(t.buf)
	return true
}

// releaseMemLocked returns a task's buffer bytes to the session budget,
// once. Called with c.mu held.
func (c *conn) releaseMemLocked(t *task) {
	if t.memHeld {
		c.memUsed -= int64(t.edtl)
		c.srv.releaseMem(c.memTarget, int64(t.edtl))
		t.memHeld = false
	}
}

// dropTaskLocked removes a task without a response (connection teardown,
// task management, failure). Any goroutine may call it, with c.mu held.
// A task that is executing finishes in the SCSI layer, sees it was aborted
// and cleans up; one that is not is done now, but its buffer is left to
// the garbage collector since the reader may still be filling it.
func (c *conn) dropTaskLocked(t *task) {
	if c.tasks[t.cmd.ITT] != t {
		return
	}
	t.aborted.Store(true)
	delete(c.tasks, t.cmd.ITT)
	if t.delivered {
		c.active--
		c.updateMaxCmdSNLocked()
	}
	c.releaseMemLocked(t)
	if !t.executing {
		close(t.done)
	}
}

// quick reports a small command the SCSI layer serves from the page
// cache (a READ, or a WRITE with the write cache on, without FUA): it takes
// microseconds, so the reader runs it itself rather than paying for a
// goroutine and a cross-thread hand-off. A READ the device completes on
// its own thread (scsi.Target.Async) is handed to it by the reader too,
// and answered from the completion (finish). Anything else that may wait
// for the disk runs in a goroutine of its own so the connection keeps
// reading.
func (c *conn) quick(t *task) bool {
	return t.edtl <= 64<<10 && c.sess.target.SCSI.Quick(t.lun, t.cmd.CDB[:])
}

// execute runs a task in the SCSI layer and queues its response; onReader
// when it runs on the reader goroutine, which then holds the response back
// while more commands are already buffered (hold).
func (c *conn) execute(t *task, onReader, async bool) {
	sc := scsi.Command{
		Nexus: c.sess.nexus,
		LUN:   t.lun,
		CDB:   t.cmd.FullCDB(),
	}
	if t.write {
		sc.DataOut = t.buf
	} else if t.cmd.Read {
		sc.DataIn = t.buf
		// sendfile costs a syscall of its own per PDU; below this size
		// copying into the one writev is cheaper than that.
		least := c.srv.cfg.SendfileMin
		sc.FileDataIn = c.rawConn != nil && !c.params.DataDigest && least >= 0 && t.edtl >= uint32(least)
		sc.LentDataIn = true
		if async {
			cdb := sc.CDB
			sc.Done = func(res scsi.Result) { c.finish(t, cdb, res, false, true) }
		}
	}
	res := c.sess.target.SCSI.Execute(&sc)
	if res.Pending {
		return
	}
	c.finish(t, sc.CDB, res, onReader, false)
}

// finish counts a task's result, queues its response and ends it: onReader
// as execute's; fromDevice when it runs in a device's completion
// (scsi.Command.Done), which must not wait for the socket.
func (c *conn) finish(t *task, cdb []byte, res scsi.Result, onReader, fromDevice bool) {
	defer c.running.Done()
	if tr := c.sess.trace; tr != nil && t.op != OpOther && res.Status == scsi.StatusGood {
		tr.record(t, cdb)
	}
	if res.Status == scsi.StatusGood {
		// The target's counters take the disk's blocks only, not
		// INQUIRY data or parameter lists.
		if t.write {
			c.sess.writtenBytes.Add(uint64(len(t.buf)))
			if t.op == OpWrite {
				c.cmds.writtenBytes.Add(uint64(len(t.buf)))
			}
		} else if res.N > 0 {
			c.sess.readBytes.Add(uint64(res.N))
			if t.op == OpRead {
				c.cmds.readBytes.Add(uint64(res.N))
			}
		}
	}

	c.mu.Lock()
	if t.aborted.Load() || c.tasks[t.cmd.ITT] != t {
		// Aborted while running: no response (TAS=0).
		c.releaseMemLocked(t)
		c.mu.Unlock()
		if res.Release != nil {
			res.Release()
		}
		putBuf(t.buf)
		close(t.done)
		return
	}
	// Remove before the response is queued: the initiator may reuse the
	// ITT as soon as it sees the status.
	delete(c.tasks, t.cmd.ITT)
	c.active--
	c.updateMaxCmdSNLocked()
	c.mu.Unlock()

	item := c.responseItem(t, &res)
	// Copies, not res itself: a closure over res would move the whole
	// Result to the heap for every command.
	buf, releaseData := t.buf, res.Release
	item.release = func() {
		if releaseData != nil {
			releaseData() // the file or lent data is on the wire (or never will be)
		}
		putBuf(buf)
		c.mu.Lock()
		c.releaseMemLocked(t)
		c.mu.Unlock()
		close(t.done)
	}
	switch {
	case onReader:
		c.hold(item)
	case fromDevice:
		c.enqueue(item)
	default:
		c.send(item)
	}
}

// responseItem builds the Data-In PDUs and the status of a finished task:
// Data-In segmented to the initiator's MaxRecvDataSegmentLength, in
// sequences of at most MaxBurstLength, with the status collapsed into the
// last Data-In when it is GOOD (RFC 7143 11.7.4); otherwise a separate SCSI
// Response with the sense data.
func (c *conn) responseItem(t *task, res *scsi.Result) *outItem {
	var (
		overflow, underflow bool
		residual            uint32
	)
	wanted := uint32(max(res.Wanted, 0))
	switch {
	case wanted > t.edtl:
		overflow, residual = true, wanted-t.edtl
	case wanted < t.edtl:
		underflow, residual = true, t.edtl-wanted
	}
	var data []byte
	fromFile := res.File.Len > 0
	if t.cmd.Read && !t.write && res.N > 0 {
		data = t.buf[:min(res.N, len(t.buf))]
		if res.Lent != nil {
			data = res.Lent[:min(res.N, len(res.Lent))]
		}
	}
	good := res.Status == scsi.StatusGood || res.Status == scsi.StatusConditionMet
	seg := int(c.sendSeg.Load())
	burst := int(c.params.MaxBurstLength)
	npdus := (len(data) + seg - 1) / seg
	if !good || len(data) == 0 {
		npdus++
	}
	item := &outItem{pdus: make([]outPDU, 0, npdus), answered: t.answer(res.Status, res.Sense)}
	var dataSN uint32
	for off, inBurst := 0, 0; off < len(data); {
		n := min(seg, len(data)-off, burst-inBurst)
		last := off+n == len(data)
		inBurst += n
		m := pdu.DataIn{
			Final: last || inBurst == burst, LUN: t.cmd.LUN, ITT: t.cmd.ITT, TTT: pdu.ReservedTag,
			DataSN: dataSN, BufferOffset: uint32(off),
		}
		sn := snNone
		if last && good {
			m.HasStatus, m.Status = true, uint8(res.Status)
			m.Overflow, m.Underflow, m.ResidualCount = overflow, underflow, residual
			sn = snAdvance
		}
		op := outPDU{data: data[off : off+n], sn: sn}
		if fromFile {
			op.data = nil
			op.file = res.File
			op.file.Off += int64(off)
			op.file.Len = int64(n)
		}
		item.pdus = append(item.pdus, op)
		m.Marshal(&item.pdus[len(item.pdus)-1].bhs)
		if inBurst == burst {
			inBurst = 0
		}
		dataSN++
		off += n
	}
	if good && len(data) > 0 {
		return item
	}
	resp := pdu.SCSIResponse{
		Status: uint8(res.Status), ITT: t.cmd.ITT, ExpDataSN: dataSN,
		Overflow: overflow, Underflow: underflow, ResidualCount: residual,
	}
	op := outPDU{sn: snAdvance}
	resp.Marshal(&op.bhs)
	if res.Status == scsi.StatusCheckCondition && len(res.Sense) > 0 {
		op.data = pdu.SenseData(nil, res.Sense)
	}
	item.pdus = append(item.pdus, op)
	return item
}
