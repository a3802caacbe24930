package scsi

import (
	"bytes"
	"encoding/binary"
	"slices"
)

// EXTENDED COPY(LID1) (SPC-4 6.4) and RECEIVE COPY RESULTS (SPC-4 6.18:
// COPY STATUS, OPERATING PARAMETERS, FAILED SEGMENT DETAILS).
//
// The LU that receives EXTENDED COPY is the copy manager. It copies
// blocks between the LUs of its own Target: the copy targets are named by
// identification descriptor CSCD descriptors (E4h) carrying an LU's NAA
// designator from VPD page 83h, and the work by block device to block
// device segment descriptors (02h). Only LUs of the same Target can be
// named, which the requesting I_T nexus reaches anyway, so a copy grants
// no access the initiator lacks (a copy manager that searched every LU of
// the host was CVE-2020-28374). Each copy target is checked as if that
// nexus read it (source) or wrote it (destination): reservations,
// readiness, write protection, LBA range.
//
// The copy runs inside the command, in 1 MiB chunks: EXTENDED COPY ends
// when its copy has. The parameter list is checked whole before a block
// moves, and what is wrong with it is ILLEGAL REQUEST, as for errors
// detected before segment processing starts (SPC-4 6.4).
// What goes wrong while segments are processed is COPY ABORTED:
// COMMAND-SPECIFIC INFORMATION gives the segment number and,
// when a copy target refused the transfer, the offset of that target's
// status byte and sense data appended to the sense data.
//
// Everything the parameter list controls is bounded by the operating
// parameters reported: descriptor counts, descriptor list length, bytes
// per segment, and copies running at once on the LU.

// Parameter list layout (SPC-4 6.4).
const (
	xcopyHeaderLen     = 16
	cscdDescLen        = 32 // identification descriptor CSCD descriptor
	b2bSegDescLen      = 28 // block device to block device segment descriptor
	cscdIdentification = 0xe4
	segBlockToBlock    = 0x02
	maxDesignatorLen   = 20 // what an E4h descriptor holds
)

// LIST ID USAGE (SPC-4 6.4).
const (
	listIDHold   = 0 // results held for RECEIVE COPY RESULTS
	listIDNoHold = 2 // nothing held; the list identifier is still unique
	listIDNone   = 3 // no list identifier (it must be zero)
)

// Operating parameters (SPC-4 6.18), reported and enforced.
const (
	maxCSCDDescs        = 16
	maxSegmentDescs     = 16
	maxDescListLen      = maxCSCDDescs*cscdDescLen + maxSegmentDescs*b2bSegDescLen
	maxSegmentBytes     = 32 << 20 // one segment; 16 of them bound a command
	maxConcurrentCopies = 8        // EXTENDED COPY commands running on one LU
	maxHeldCopies       = 16       // results held per I_T nexus
)

// COPY MANAGER STATUS values (SPC-4 6.18).
const (
	copyInProgress = 0x00
	copyDone       = 0x01
	copyFailed     = 0x02
)

type cscdDesc struct {
	off       int  // offset in the parameter list
	devType   byte // PERIPHERAL DEVICE TYPE
	codeSet   byte
	assoc     byte
	desigType byte
	desig     []byte
	blockLen  uint32 // DISK BLOCK LENGTH
}

type segmentDesc struct {
	off            int    // offset in the parameter list
	src, dst       uint16 // CSCD descriptor indexes
	dc             bool   // NUMBER OF BLOCKS counts destination blocks
	blocks         uint16 // BLOCK DEVICE NUMBER OF BLOCKS
	srcLBA, dstLBA uint64
}

type copyList struct {
	id    byte // LIST IDENTIFIER
	usage byte // LIST ID USAGE
	cscd  []cscdDesc
	segs  []segmentDesc
}

// copyRecord is an EXTENDED COPY as RECEIVE COPY RESULTS sees it. Its
// fields are guarded by the mutex of the itNexus that holds it.
type copyRecord struct {
	id       byte
	hold     bool // LIST ID USAGE 00b: kept after the command ends
	done     bool
	failed   bool
	segments uint16 // SEGMENTS PROCESSED
	bytes    uint64 // bytes written to destinations
	status   Status // of the EXTENDED COPY command, once failed
	sense    []byte
	details  bool // failed segment details not yet transferred
}

// paramErr is ILLEGAL REQUEST with code, pointing at byte field of the
// parameter list.
func paramErr(code uint16, field int) *SenseError {
	return fieldErr(code, false, field, -1)
}

// parseCopyList checks an EXTENDED COPY(LID1) parameter list (SPC-4
// 6.4) and decodes its descriptors. Only the first len(p) bytes exist:
// descriptor lists reaching past them are a PARAMETER LIST LENGTH ERROR.
func parseCopyList(p []byte) (*copyList, error) {
	if len(p) < xcopyHeaderLen {
		return nil, paramListLengthError()
	}
	l := &copyList{id: p[0], usage: p[1] >> 3 & 3}
	if bad := p[1] & 0xc0; bad != 0 {
		return nil, invalidParam(1, highestBit(bad))
	}
	cscdLen, segLen, inlineLen := uint64(be16(p[2:])), uint64(be32(p[8:])), uint64(be32(p[12:]))
	switch {
	case cscdLen+segLen > maxDescListLen:
		// Longer than MAXIMUM DESCRIPTOR LIST LENGTH.
		return nil, paramListLengthError()
	case inlineLen != 0:
		// MAXIMUM INLINE DATA LENGTH is zero: no supported segment
		// descriptor uses inline data.
		return nil, invalidParam(12, -1)
	case xcopyHeaderLen+cscdLen+segLen > uint64(len(p)):
		return nil, paramListLengthError()
	}
	switch l.usage {
	case 1:
		return nil, invalidParam(1, 4) // reserved
	case listIDNone:
		if l.id != 0 {
			return nil, invalidParam(0, -1)
		}
	}

	end := xcopyHeaderLen + int(cscdLen)
	for off := xcopyHeaderLen; off < end; off += cscdDescLen {
		if len(l.cscd) == maxCSCDDescs {
			return nil, senseErr(SenseIllegalRequest, ascTooManyTargetDescs)
		}
		if p[off] != cscdIdentification {
			return nil, paramErr(ascUnsupportedTargetDesc, off)
		}
		if end-off < cscdDescLen {
			return nil, invalidParam(2, -1) // list ends inside a descriptor
		}
		d := p[off : off+cscdDescLen]
		// LU ID TYPE is ignored for E4h descriptors and NUL is
		// obsolete in SPC-4; RELATIVE INITIATOR PORT IDENTIFIER
		// does not matter with one target port.
		n := int(d[7])
		if n > maxDesignatorLen {
			return nil, invalidParam(off+7, -1)
		}
		l.cscd = append(l.cscd, cscdDesc{
			off: off, devType: d[1] & 0x1f,
			codeSet: d[4] & 0x0f, assoc: d[5] >> 4 & 3, desigType: d[5] & 0x0f,
			desig:    d[8 : 8+n],
			blockLen: uint32(d[29])<<16 | uint32(be16(d[30:])),
		})
	}

	segEnd := end + int(segLen)
	for off := end; off < segEnd; off += b2bSegDescLen {
		if len(l.segs) == maxSegmentDescs {
			return nil, senseErr(SenseIllegalRequest, ascTooManySegmentDescs)
		}
		if p[off] != segBlockToBlock {
			return nil, paramErr(ascUnsupportedSegmentDesc, off)
		}
		if segEnd-off < b2bSegDescLen {
			return nil, invalidParam(8, -1) // list ends inside a descriptor
		}
		d := p[off : off+b2bSegDescLen]
		if be16(d[2:]) != b2bSegDescLen-4 {
			return nil, invalidParam(off+2, -1) // DESCRIPTOR LENGTH
		}
		if bad := d[1] & 0xfc; bad != 0 {
			return nil, invalidParam(off+1, highestBit(bad))
		}
		// CAT only matters for segments that end inside a block,
		// which are refused (copySegment).
		l.segs = append(l.segs, segmentDesc{
			off: off, src: be16(d[4:]), dst: be16(d[6:]), dc: d[1]&0x02 != 0,
			blocks: be16(d[10:]), srcLBA: be64(d[12:]), dstLBA: be64(d[20:]),
		})
	}
	return l, nil
}

func (lu *LogicalUnit) extendedCopy(c *Command, r *Result) error {
	plen := uint64(be32(c.CDB[10:]))
	r.Wanted = int(plen)
	if plen == 0 {
		return nil // not an error (SPC-4 6.4)
	}
	p := c.DataOut
	if uint64(len(p)) > plen {
		p = p[:plen]
	}
	l, err := parseCopyList(p)
	if err != nil {
		return err
	}
	if lu.copies.Add(1) > maxConcurrentCopies {
		lu.copies.Add(-1)
		return senseErr(SenseIllegalRequest, ascInsufficientResources)
	}
	defer lu.copies.Add(-1)
	it := lu.nexus(c.Nexus)
	rec, err := it.beginCopy(l)
	if err != nil {
		return err
	}
	for i := range l.segs {
		if err = lu.copySegment(c.Nexus, l, i, it, rec); err != nil {
			break
		}
		it.progress(rec, uint16(i+1), 0)
	}
	it.endCopy(rec, err)
	return err
}

// copyAborted is COPY ABORTED for segment seg, with the segment pointer
// at byte field of the parameter list unless field is negative. The
// segment number is in COMMAND-SPECIFIC INFORMATION bytes 2-3.
func copyAborted(code uint16, seg, field int) *SenseError {
	e := &SenseError{Key: SenseCopyAborted, Code: code, CmdSpecific: uint32(uint16(seg))}
	if field >= 0 {
		e.FieldValid, e.Field = true, uint16(field)
	}
	return e
}

// copyTargetFailed is COPY ABORTED for segment seg after a copy target
// (the source unless dest) refused a transfer with err: its status byte
// and sense data follow the fixed sense data, and COMMAND-SPECIFIC
// INFORMATION byte 0 (source) or 1 (destination) gives their offset.
func copyTargetFailed(seg int, err error, dest bool) *SenseError {
	var tr Result
	tr.fail(err)
	e := copyAborted(ascNoAdditionalSense, seg, -1)
	e.Extra = append([]byte{byte(tr.Status)}, tr.Sense...)
	shift := 24
	if dest {
		shift = 16
	}
	e.CmdSpecific |= uint32(fixedSenseLen) << shift
	e.Err = err
	return e
}

// copyTarget resolves CSCD descriptor idx, named at byte field of
// segment seg, to an LU of this target.
func (lu *LogicalUnit) copyTarget(l *copyList, seg, idx, field int) (*LogicalUnit, error) {
	if idx >= len(l.cscd) {
		return nil, copyAborted(ascUnreachableCopyTarget, seg, field)
	}
	d := &l.cscd[idx]
	t := lu.findLU(d)
	switch {
	case t == nil:
		// Not an LU of this target: the initiator can fall back to
		// copying itself.
		return nil, copyAborted(ascCopyTargetUnreachable, seg, d.off+4)
	case d.devType != 0:
		return nil, copyAborted(ascIncorrectCopyTarget, seg, d.off+1)
	case d.blockLen != uint32(t.bs):
		return nil, copyAborted(ascIncorrectCopyTarget, seg, d.off+29)
	}
	return t, nil
}

// findLU finds the LU of lu's target whose LU designator d carries: our
// LUs have one, binary NAA (VPD page 83h).
func (lu *LogicalUnit) findLU(d *cscdDesc) *LogicalUnit {
	if d.codeSet != codeSetBinary || d.assoc != assocLU || d.desigType != desigNAA {
		return nil
	}
	if bytes.Equal(lu.naa, d.desig) {
		return lu
	}
	if t := lu.target.Load(); t != nil {
		for _, other := range *t.lus.Load() {
			if bytes.Equal(other.naa, d.desig) {
				return other
			}
		}
	}
	return nil
}

// copyAccess checks that n may read (or write) count blocks at lba of lu
// as it could with READ (or WRITE): the checks execute makes, in its order.
func (lu *LogicalUnit) copyAccess(n Nexus, lba, count uint64, write bool) error {
	class := resvRead
	if write {
		class = resvWrite
	}
	if lu.resv.Load() && lu.conflictsAs(n, class, false) {
		return errConflict
	}
	if serr := lu.notReady(); serr != nil {
		return serr
	}
	if write {
		if err := lu.writeProtected(); err != nil {
			return err
		}
	}
	return lu.checkRange(lba, count)
}

// copySegment carries out segment i of l: a block device to block device
// copy. Source and destination may be the same LU, with
// overlapping ranges: the chunks then go in the order that reads every
// source block before it is overwritten.
func (lu *LogicalUnit) copySegment(n Nexus, l *copyList, i int, it *itNexus, rec *copyRecord) error {
	s := &l.segs[i]
	src, err := lu.copyTarget(l, i, int(s.src), s.off+4)
	if err != nil {
		return err
	}
	dst, err := lu.copyTarget(l, i, int(s.dst), s.off+6)
	if err != nil {
		return err
	}
	unit := src.bs
	if s.dc {
		unit = dst.bs
	}
	total := uint64(s.blocks) * unit
	if total%src.bs != 0 || total%dst.bs != 0 || total > maxSegmentBytes {
		// A segment ending inside a block (PAD and CAT processing)
		// is not supported, nor one above MAXIMUM SEGMENT LENGTH.
		return copyAborted(ascInvalidFieldInParam, i, s.off+10)
	}
	if err := src.copyAccess(n, s.srcLBA, total>>src.shift, false); err != nil {
		return copyTargetFailed(i, err, false)
	}
	if err := dst.copyAccess(n, s.dstLBA, total>>dst.shift, true); err != nil {
		return copyTargetFailed(i, err, true)
	}
	if total == 0 {
		return nil
	}
	srcOff, dstOff := s.srcLBA<<src.shift, s.dstLBA<<dst.shift
	backward := src == dst && dstOff > srcOff && dstOff < srcOff+total
	bp := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(bp)
	for done := uint64(0); done < total; {
		k := min(uint64(len(*bp)), total-done)
		at := done
		if backward {
			at = total - done - k
		}
		buf := (*bp)[:k]
		if err := src.readBlocks(buf, s.srcLBA+(at>>src.shift)); err != nil {
			return copyTargetFailed(i, err, false)
		}
		if err := dst.writeBlocks(buf, s.dstLBA+(at>>dst.shift)); err != nil {
			return copyTargetFailed(i, err, true)
		}
		done += k
		it.progress(rec, 0, k)
	}
	if err := dst.settle(false); err != nil {
		return copyTargetFailed(i, err, true)
	}
	return nil
}

// beginCopy registers the copy l under its list identifier. A list
// identifier still in use by a running copy of this nexus is OPERATION IN
// PROGRESS; held results of an earlier one are replaced.
// LIST ID USAGE 11b registers nothing.
func (it *itNexus) beginCopy(l *copyList) (*copyRecord, error) {
	rec := &copyRecord{id: l.id, hold: l.usage == listIDHold}
	if l.usage == listIDNone {
		return rec, nil
	}
	it.mu.Lock()
	defer it.mu.Unlock()
	for i, old := range it.copies {
		if old.id == l.id {
			if !old.done {
				return nil, senseErr(SenseIllegalRequest, ascOperationInProgress)
			}
			it.copies = slices.Delete(it.copies, i, i+1)
			break
		}
	}
	if len(it.copies) >= maxHeldCopies {
		// Make room by discarding the oldest finished results; running
		// copies are fewer than maxHeldCopies (maxConcurrentCopies).
		for i, old := range it.copies {
			if old.done {
				it.copies = slices.Delete(it.copies, i, i+1)
				break
			}
		}
	}
	it.copies = append(it.copies, rec)
	return rec, nil
}

// progress records finished segments (when segments is not zero) and
// bytes written.
func (it *itNexus) progress(rec *copyRecord, segments uint16, n uint64) {
	it.mu.Lock()
	defer it.mu.Unlock()
	if segments != 0 {
		rec.segments = segments
	}
	rec.bytes += n
}

// endCopy records how the copy ended; results not to be held go away.
func (it *itNexus) endCopy(rec *copyRecord, err error) {
	it.mu.Lock()
	defer it.mu.Unlock()
	rec.done = true
	if err != nil {
		var r Result
		r.fail(err)
		rec.failed, rec.details = true, true
		rec.status, rec.sense = r.Status, r.Sense
	}
	if !rec.hold {
		if i := slices.Index(it.copies, rec); i >= 0 {
			it.copies = slices.Delete(it.copies, i, i+1)
		}
	}
}

// heldCopy finds the copy with list identifier id; it.mu must be held.
func (it *itNexus) heldCopy(id byte) *copyRecord {
	for _, rec := range it.copies {
		if rec.id == id {
			return rec
		}
	}
	return nil
}

// dropCopies discards every held result (a reset).
func (it *itNexus) dropCopies() {
	it.mu.Lock()
	defer it.mu.Unlock()
	it.copies = nil
}

func (lu *LogicalUnit) receiveCopyResults(c *Command, r *Result) error {
	alloc := int(be32(c.CDB[10:]))
	var data []byte
	switch c.CDB[1] & 0x1f {
	case saCopyOpParams:
		data = copyOperatingParameters()
	case saCopyStatus:
		it := lu.nexus(c.Nexus)
		it.mu.Lock()
		rec := it.heldCopy(c.CDB[2])
		if rec != nil {
			data = rec.status12()
		}
		it.mu.Unlock()
		if rec == nil {
			return invalidCDB(2, -1) // no such list identifier
		}
	case saCopyFailedSeg:
		it := lu.nexus(c.Nexus)
		it.mu.Lock()
		rec := it.heldCopy(c.CDB[2])
		if rec != nil {
			data = rec.failureDetails(alloc)
		}
		it.mu.Unlock()
		if rec == nil {
			return invalidCDB(2, -1)
		}
	}
	putAllocated(c, r, data, alloc)
	return nil
}

// copyOperatingParameters is the RECEIVE COPY OPERATING PARAMETERS data
// (SPC-4 6.18).
func copyOperatingParameters() []byte {
	b := make([]byte, 44, 46)
	b[4] = 0x01 // SNLID: LIST ID USAGE 11b is supported
	binary.BigEndian.PutUint16(b[8:], maxCSCDDescs)
	binary.BigEndian.PutUint16(b[10:], maxSegmentDescs)
	binary.BigEndian.PutUint32(b[12:], maxDescListLen)
	binary.BigEndian.PutUint32(b[16:], maxSegmentBytes)
	// MAXIMUM INLINE DATA LENGTH, HELD DATA LIMIT and MAXIMUM STREAM
	// DEVICE TRANSFER SIZE are zero: no inline data, held data or
	// streams.
	binary.BigEndian.PutUint16(b[34:], maxConcurrentCopies) // TOTAL CONCURRENT COPIES
	b[36] = maxConcurrentCopies                             // MAXIMUM CONCURRENT COPIES
	// DATA SEGMENT GRANULARITY: segments are whole blocks, at least
	// the smallest block size.
	b[37] = 9
	b[43] = 2 // IMPLEMENTED DESCRIPTOR LIST LENGTH
	b = append(b, segBlockToBlock, cscdIdentification)
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b
}

// status12 is the COPY STATUS data (SPC-4 6.18) of rec; it.mu held.
func (rec *copyRecord) status12() []byte {
	b := make([]byte, 12)
	binary.BigEndian.PutUint32(b, 8)
	switch {
	case rec.failed:
		b[4] = copyFailed
	case rec.done:
		b[4] = copyDone
	default:
		b[4] = copyInProgress
	}
	binary.BigEndian.PutUint16(b[5:], rec.segments)
	// TRANSFER COUNT UNITS 0 (bytes) to 6 (exbibytes): the smallest
	// unit the count fits in.
	units, count := byte(0), rec.bytes
	for count > 0xffffffff {
		units, count = units+1, count>>10
	}
	b[7] = units
	binary.BigEndian.PutUint32(b[8:], uint32(count))
	return b
}

// failureDetails is the FAILED SEGMENT DETAILS data (SPC-4 6.18) of rec;
// it.mu held. Without details (a copy running or successful, or details
// already transferred) AVAILABLE DATA is zero. Details go once they have
// been transferred whole, or on request with ALLOCATION LENGTH zero.
func (rec *copyRecord) failureDetails(alloc int) []byte {
	if !rec.details {
		return make([]byte, 4)
	}
	b := make([]byte, 60, 60+len(rec.sense))
	b[56] = byte(rec.status) // COPY COMMAND STATUS
	binary.BigEndian.PutUint16(b[58:], uint16(len(rec.sense)))
	b = append(b, rec.sense...)
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	if alloc == 0 || alloc >= len(b) {
		rec.details, rec.sense = false, nil
	}
	return b
}
