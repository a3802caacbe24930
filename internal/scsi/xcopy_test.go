package scsi

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"testing"
)

func xcopyCDB(plen uint32) []byte {
	c := make([]byte, 16)
	c[0] = opExtendedCopy
	binary.BigEndian.PutUint32(c[10:], plen)
	return c
}

func rcrCDB(sa, list byte, alloc uint32) []byte {
	c := make([]byte, 16)
	c[0], c[1], c[2] = opReceiveCopy, sa, list
	binary.BigEndian.PutUint32(c[10:], alloc)
	return c
}

// cscdFor is an identification descriptor CSCD descriptor naming lu by
// its NAA designator, as libiscsi builds it from VPD page 83h.
func cscdFor(lu *LogicalUnit) []byte {
	d := make([]byte, cscdDescLen)
	d[0] = cscdIdentification
	d[4] = codeSetBinary
	d[5] = assocLU<<4 | desigNAA
	d[7] = byte(len(lu.naa))
	copy(d[8:], lu.naa)
	d[29], d[30], d[31] = byte(lu.bs>>16), byte(lu.bs>>8), byte(lu.bs)
	return d
}

func segB2B(dc bool, src, dst, n uint16, srcLBA, dstLBA uint64) []byte {
	d := make([]byte, b2bSegDescLen)
	d[0] = segBlockToBlock
	if dc {
		d[1] = 0x02
	}
	binary.BigEndian.PutUint16(d[2:], b2bSegDescLen-4)
	binary.BigEndian.PutUint16(d[4:], src)
	binary.BigEndian.PutUint16(d[6:], dst)
	binary.BigEndian.PutUint16(d[10:], n)
	binary.BigEndian.PutUint64(d[12:], srcLBA)
	binary.BigEndian.PutUint64(d[20:], dstLBA)
	return d
}

// copyParams is an EXTENDED COPY(LID1) parameter list.
func copyParams(id, usage byte, cscds, segs [][]byte) []byte {
	var tl, sl []byte
	for _, d := range cscds {
		tl = append(tl, d...)
	}
	for _, d := range segs {
		sl = append(sl, d...)
	}
	p := make([]byte, xcopyHeaderLen, xcopyHeaderLen+len(tl)+len(sl))
	p[0], p[1] = id, usage<<3
	binary.BigEndian.PutUint16(p[2:], uint16(len(tl)))
	binary.BigEndian.PutUint32(p[8:], uint32(len(sl)))
	return append(append(p, tl...), sl...)
}

func repeatDesc(d []byte, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = d
	}
	return out
}

// copySense is the COPY ABORTED sense data of an EXTENDED COPY.
type copySense struct {
	code       uint16
	seg        int
	srcOff     int
	dstOff     int
	field      int // segment pointer, -1: none
	tgtStatus  Status
	tgtKey     SenseKey
	tgtCode    uint16
	hasTgtData bool
}

func decodeCopySense(t *testing.T, r Result) copySense {
	t.Helper()
	if r.Status != StatusCheckCondition {
		t.Fatalf("status %#x, want CHECK CONDITION", r.Status)
	}
	s := r.Sense
	if k, _ := senseOf(r); k != SenseCopyAborted {
		t.Fatalf("sense key %#x, want COPY ABORTED", k)
	}
	if int(s[7])+8 != len(s) {
		t.Fatalf("ADDITIONAL SENSE LENGTH %d for %d bytes", s[7], len(s))
	}
	cs := copySense{code: uint16(s[12])<<8 | uint16(s[13]), seg: int(binary.BigEndian.Uint16(s[10:])),
		srcOff: int(s[8]), dstOff: int(s[9]), field: -1}
	if field, _, _, ok := fieldPointer(r); ok {
		cs.field = field
	}
	if off := max(cs.srcOff, cs.dstOff); off > 0 {
		if len(s) <= off {
			t.Fatalf("copy target data offset %d past %d bytes", off, len(s))
		}
		cs.hasTgtData, cs.tgtStatus = true, Status(s[off])
		if ts := s[off+1:]; len(ts) >= 14 {
			cs.tgtKey, cs.tgtCode = SenseKey(ts[2]&0x0f), uint16(ts[12])<<8|uint16(ts[13])
		}
	}
	return cs
}

// addLU attaches a second LU as lun, with the unit attentions that
// causes cleared for nexusA and nexusB.
func (tl *testLU) addLU(lun uint64, dev *memDevice, cfg LUConfig) *LogicalUnit {
	tl.t.Helper()
	lu, err := NewLogicalUnit(dev, cfg)
	if err != nil {
		tl.t.Fatal(err)
	}
	if err := tl.tgt.AddLU(lun, lu); err != nil {
		tl.t.Fatal(err)
	}
	for _, n := range []Nexus{nexusA, nexusB} {
		for _, l := range tl.tgt.LUNs() {
			retryUA(func() Result { return exec2(tl.tgt, n, l, []byte{opTestUnitReady, 0, 0, 0, 0, 0}, nil, nil) })
		}
	}
	return lu
}

func exec2(tgt *Target, n Nexus, lun uint64, cdb, out, in []byte) Result {
	return tgt.Execute(&Command{Nexus: n, LUN: lun, CDB: cdb, DataOut: out, DataIn: in})
}

func TestExtendedCopyParameterErrors(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	me := cscdFor(tl.lu)
	seg := segB2B(false, 0, 0, 8, 0, 64)
	one := copyParams(1, listIDHold, [][]byte{me}, [][]byte{seg})
	xc := func(p []byte) []byte { return xcopyCDB(uint32(len(p))) }

	e0 := bytes.Clone(me)
	e0[0] = 0xe0
	strm := bytes.Clone(seg)
	strm[0] = 0x03
	badLen := bytes.Clone(seg)
	badLen[3] = 0x10
	longDesig := bytes.Clone(me)
	longDesig[7] = 21
	reserved := bytes.Clone(seg)
	reserved[1] = 0x04
	inline := bytes.Clone(one)
	inline[15] = 4
	hdrRes := bytes.Clone(one)
	hdrRes[1] |= 0x80
	usage1 := copyParams(1, 1, [][]byte{me}, [][]byte{seg})
	noID := copyParams(5, listIDNone, [][]byte{me}, [][]byte{seg})
	ragged := copyParams(1, listIDHold, [][]byte{me, me[:1]}, nil)
	tooLong := copyParams(1, listIDHold, repeatDesc(me, maxCSCDDescs), repeatDesc(seg, maxSegmentDescs+1))

	pll := func(name string, cdb, out []byte) cmdCase {
		return bad(name, cdb, out, 0, SenseIllegalRequest, ascParamListLengthError)
	}
	// pllN sends the first n bytes of p with PARAMETER LIST LENGTH n.
	pllN := func(name string, p []byte, n int) cmdCase { return pll(name, xcopyCDB(uint32(n)), p[:n]) }
	field := func(c cmdCase, f, bit int) cmdCase { c.field, c.bit = f, bit; return c }
	inParam := func(name string, p []byte, f, bit int) cmdCase {
		return field(bad(name, xc(p), p, 0, SenseIllegalRequest, ascInvalidFieldInParam), f, bit)
	}
	cases := []cmdCase{
		good("parameter list length 0", xcopyCDB(0), nil, 0, 0, 0),
		good("header only", xc(one[:16]), copyParams(0, listIDHold, nil, nil), 0, 16, 0),
		pll("shorter than the header", xcopyCDB(15), one[:15]),
		pllN("truncating the CSCD descriptor", one, xcopyHeaderLen+cscdDescLen-1),
		pllN("truncating the segment descriptor", one, len(one)-1),
		pll("Data-Out shorter than the list", xc(one), one[:len(one)-1]),
		pll("above MAXIMUM DESCRIPTOR LIST LENGTH", xc(tooLong), tooLong),
		bad("too many CSCD descriptors", xc(copyParams(1, 0, repeatDesc(me, maxCSCDDescs+1), [][]byte{seg})),
			copyParams(1, 0, repeatDesc(me, maxCSCDDescs+1), [][]byte{seg}), 0,
			SenseIllegalRequest, ascTooManyTargetDescs),
		bad("too many segment descriptors", xc(copyParams(1, 0, [][]byte{me}, repeatDesc(seg, maxSegmentDescs+1))),
			copyParams(1, 0, [][]byte{me}, repeatDesc(seg, maxSegmentDescs+1)), 0,
			SenseIllegalRequest, ascTooManySegmentDescs),
		field(bad("FC N_Port_Name CSCD descriptor", xc(one), copyParams(1, 0, [][]byte{e0}, [][]byte{seg}), 0,
			SenseIllegalRequest, ascUnsupportedTargetDesc), 16, -1),
		field(bad("stream to stream segment", xc(one), copyParams(1, 0, [][]byte{me}, [][]byte{strm}), 0,
			SenseIllegalRequest, ascUnsupportedSegmentDesc), 48, -1),
		inParam("segment DESCRIPTOR LENGTH", copyParams(1, 0, [][]byte{me}, [][]byte{badLen}), 50, -1),
		inParam("segment reserved bit", copyParams(1, 0, [][]byte{me}, [][]byte{reserved}), 49, 2),
		inParam("DESIGNATOR LENGTH 21", copyParams(1, 0, [][]byte{longDesig}, nil), 23, -1),
		inParam("CSCD list ends inside a descriptor", ragged, 2, -1),
		inParam("inline data", inline, 12, -1),
		inParam("reserved header bit", hdrRes, 1, 7),
		inParam("LIST ID USAGE 01b", usage1, 1, 4),
		inParam("LIST ID USAGE 11b with a list identifier", noID, 0, -1),
		// CDB: only LID1; reserved bytes are refused.
		badField("EXTENDED COPY(LID4)", append([]byte{opExtendedCopy, 0x01}, make([]byte, 14)...), 1, 4),
		badField("reserved CDB byte", append([]byte{opExtendedCopy, 0, 1}, make([]byte, 13)...), 2, 0),
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.check(t, tl) })
	}
	// Nothing was copied by the refused lists.
	if !bytes.Equal(tl.dev.data[64*512:72*512], make([]byte, 8*512)) {
		t.Fatal("a refused EXTENDED COPY wrote")
	}
}

func TestExtendedCopySegmentErrors(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	me := cscdFor(tl.lu)
	other, err := NewLogicalUnit(newMemDevice(1<<20), LUConfig{Serial: "on another target"})
	if err != nil {
		t.Fatal(err)
	}
	devType := bytes.Clone(me)
	devType[1] = 0x01
	blockLen := bytes.Clone(me)
	blockLen[30] = 0x10 // 4096
	big := tl.addLU(1, newMemDevice(1<<20), LUConfig{Serial: "4k", BlockSize: 4096})

	for _, c := range []struct {
		name  string
		p     []byte
		code  uint16
		field int
	}{
		{"destination index past the list", copyParams(1, 0, [][]byte{me}, [][]byte{segB2B(false, 0, 1, 8, 0, 64)}),
			ascUnreachableCopyTarget, 54},
		{"source index past the list", copyParams(1, 0, [][]byte{me}, [][]byte{segB2B(false, 3, 0, 8, 0, 64)}),
			ascUnreachableCopyTarget, 52},
		{"LU of another target", copyParams(1, 0, [][]byte{me, cscdFor(other)},
			[][]byte{segB2B(false, 0, 1, 8, 0, 64)}), ascCopyTargetUnreachable, 52},
		{"not a block device", copyParams(1, 0, [][]byte{devType}, [][]byte{segB2B(false, 0, 0, 8, 0, 64)}),
			ascIncorrectCopyTarget, 17},
		{"wrong DISK BLOCK LENGTH", copyParams(1, 0, [][]byte{blockLen}, [][]byte{segB2B(false, 0, 0, 8, 0, 64)}),
			ascIncorrectCopyTarget, 45},
		{"segment ends inside a destination block", copyParams(1, 0, [][]byte{me, cscdFor(big)},
			[][]byte{segB2B(false, 0, 1, 1, 0, 0)}), ascInvalidFieldInParam, 90},
		{"above MAXIMUM SEGMENT LENGTH", copyParams(1, 0, [][]byte{cscdFor(big)},
			[][]byte{segB2B(false, 0, 0, 0xffff, 0, 0)}), ascInvalidFieldInParam, 58},
	} {
		t.Run(c.name, func(t *testing.T) {
			cs := decodeCopySense(t, tl.run(nexusA, xcopyCDB(uint32(len(c.p))), c.p, 0))
			if cs.code != c.code || cs.field != c.field || cs.seg != 0 || cs.hasTgtData {
				t.Fatalf("got %+v, want code %#04x field %d", cs, c.code, c.field)
			}
		})
	}

	// The second segment runs past the end of the medium: the first one
	// is done, and the destination's own sense data says why.
	p := copyParams(1, 0, [][]byte{me}, [][]byte{
		segB2B(false, 0, 0, 8, 0, 64),
		segB2B(false, 0, 0, 2048, 0, 2047),
	})
	tl.dev.data[0] = 0x5a
	cs := decodeCopySense(t, tl.run(nexusA, xcopyCDB(uint32(len(p))), p, 0))
	want := copySense{code: ascNoAdditionalSense, seg: 1, dstOff: fixedSenseLen, field: -1,
		tgtStatus: StatusCheckCondition, tgtKey: SenseIllegalRequest, tgtCode: ascLBAOutOfRange, hasTgtData: true}
	if cs != want {
		t.Fatalf("beyond the end: got %+v\nwant %+v", cs, want)
	}
	if tl.dev.data[64*512] != 0x5a {
		t.Fatal("segment before the failing one not copied")
	}
}

func TestExtendedCopyData(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	second := newMemDevice(1 << 20)
	lu1 := tl.addLU(1, second, LUConfig{Serial: "second"})
	big := newMemDevice(1 << 20)
	lu4k := tl.addLU(2, big, LUConfig{Serial: "4k", BlockSize: 4096})
	for i := range tl.dev.data {
		tl.dev.data[i] = byte(i / 512)
	}
	src := bytes.Clone(tl.dev.data)
	me, b, k := cscdFor(tl.lu), cscdFor(lu1), cscdFor(lu4k)

	run := func(name string, p []byte) {
		t.Helper()
		expectGood(t, name, tl.run(nexusA, xcopyCDB(uint32(len(p))), p, 0))
	}
	// Two segments, LU 0 to LU 1, with a zero-length one between.
	run("to LU 1", copyParams(1, listIDHold, [][]byte{me, b}, [][]byte{
		segB2B(false, 0, 1, 16, 0, 100),
		segB2B(false, 0, 1, 0, 0, 0),
		segB2B(false, 1, 1, 4, 100, 200), // LU 1 to itself
	}))
	if !bytes.Equal(second.data[100*512:116*512], src[:16*512]) ||
		!bytes.Equal(second.data[200*512:204*512], src[:4*512]) {
		t.Fatal("blocks not copied to LU 1")
	}
	// 512-byte blocks to 4096-byte blocks: NUMBER OF BLOCKS counts
	// source blocks (DC=0) or destination blocks (DC=1).
	run("to 4k, DC=0", copyParams(2, listIDNoHold, [][]byte{me, k}, [][]byte{segB2B(false, 0, 1, 16, 8, 3)}))
	run("to 4k, DC=1", copyParams(2, listIDNoHold, [][]byte{me, k}, [][]byte{segB2B(true, 0, 1, 2, 40, 10)}))
	if !bytes.Equal(big.data[3*4096:5*4096], src[8*512:24*512]) ||
		!bytes.Equal(big.data[10*4096:12*4096], src[40*512:56*512]) {
		t.Fatal("blocks not copied across block sizes")
	}
	// Overlapping ranges on one LU copy as if through a buffer, both
	// ways, across several 1 MiB chunks.
	lu := newTestLU(t, newMemDevice(8<<20), LUConfig{})
	for i := range lu.dev.data {
		lu.dev.data[i] = byte(i/512) ^ byte(i/(512*256))
	}
	orig := bytes.Clone(lu.dev.data)
	const n = 5000 // blocks: 2.4 MiB
	me = cscdFor(lu.lu)
	p := copyParams(3, listIDHold, [][]byte{me}, [][]byte{segB2B(false, 0, 0, n, 100, 1100)})
	expectGood(t, "overlap forward", lu.run(nexusA, xcopyCDB(uint32(len(p))), p, 0))
	if !bytes.Equal(lu.dev.data[1100*512:(1100+n)*512], orig[100*512:(100+n)*512]) {
		t.Fatal("overlapping copy to a higher LBA corrupted the source")
	}
	copy(lu.dev.data, orig)
	p = copyParams(3, listIDHold, [][]byte{me}, [][]byte{segB2B(false, 0, 0, n, 1100, 100)})
	expectGood(t, "overlap backward", lu.run(nexusA, xcopyCDB(uint32(len(p))), p, 0))
	if !bytes.Equal(lu.dev.data[100*512:(100+n)*512], orig[1100*512:(1100+n)*512]) {
		t.Fatal("overlapping copy to a lower LBA corrupted the source")
	}
}

// TestExtendedCopyAccess checks each copy target as its own command from
// the same I_T nexus would be: reservations, readiness, write protection.
func TestExtendedCopyAccess(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	dst := tl.addLU(1, newMemDevice(1<<20), LUConfig{Serial: "dst"})
	ro := tl.addLU(2, newMemDevice(1<<20), LUConfig{Serial: "ro", ReadOnly: true})
	to := func(lu *LogicalUnit) []byte {
		return copyParams(0, listIDNone, [][]byte{cscdFor(tl.lu), cscdFor(lu)}, [][]byte{segB2B(false, 0, 1, 8, 0, 0)})
	}
	from := func(lu *LogicalUnit) []byte {
		return copyParams(0, listIDNone, [][]byte{cscdFor(lu), cscdFor(tl.lu)}, [][]byte{segB2B(false, 0, 1, 8, 0, 0)})
	}
	xc := func(p []byte) copySense {
		t.Helper()
		return decodeCopySense(t, tl.run(nexusA, xcopyCDB(uint32(len(p))), p, 0))
	}

	if cs := xc(to(ro)); cs.dstOff != fixedSenseLen || cs.tgtKey != SenseDataProtect || cs.tgtCode != ascWriteProtected {
		t.Errorf("to a read-only LU: %+v", cs)
	}
	expectGood(t, "from a read-only LU", tl.run(nexusA, xcopyCDB(uint32(len(from(ro)))), from(ro), 0))

	// RESERVE(6) on LU 1 through nexus B: nexus A may neither read nor
	// write it; the copy target reports RESERVATION CONFLICT (status
	// 18h, no sense data).
	expectGood(t, "RESERVE(6)", exec2(tl.tgt, nexusB, 1, []byte{opReserve6, 0, 0, 0, 0, 0}, nil, nil))
	if cs := xc(to(dst)); cs.dstOff != fixedSenseLen || cs.tgtStatus != StatusReservationConflict {
		t.Errorf("to a reserved LU: %+v", cs)
	}
	if cs := xc(from(dst)); cs.srcOff != fixedSenseLen || cs.dstOff != 0 || cs.tgtStatus != StatusReservationConflict {
		t.Errorf("from a reserved LU: %+v", cs)
	}
	expectGood(t, "RELEASE(6)", exec2(tl.tgt, nexusB, 1, []byte{opRelease6, 0, 0, 0, 0, 0}, nil, nil))
	expectGood(t, "after RELEASE", tl.run(nexusA, xcopyCDB(uint32(len(to(dst)))), to(dst), 0))

	// A stopped LU is NOT READY as a copy target.
	expectGood(t, "STOP", exec2(tl.tgt, nexusA, 1, []byte{opStartStopUnit, 0, 0, 0, 0, 0}, nil, nil))
	if cs := xc(to(dst)); cs.tgtKey != SenseNotReady {
		t.Errorf("to a stopped LU: %+v", cs)
	}

	// A removable medium ejected, then the unit started without loading
	// it: still no medium to copy to.
	rm := tl.addLU(3, newMemDevice(1<<20), LUConfig{Serial: "rm", Removable: true})
	expectGood(t, "eject", exec2(tl.tgt, nexusA, 3, []byte{opStartStopUnit, 0, 0, 0, 0x02, 0}, nil, nil))
	expectGood(t, "START without LOEJ", exec2(tl.tgt, nexusA, 3, []byte{opStartStopUnit, 0, 0, 0, 0x01, 0}, nil, nil))
	if cs := xc(to(rm)); cs.tgtKey != SenseNotReady || cs.tgtCode != ascMediumNotPresent {
		t.Errorf("to an ejected medium: %+v", cs)
	}
}

func TestReceiveCopyResults(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	me := cscdFor(tl.lu)

	// OPERATING PARAMETERS.
	expectGood(t, "OPERATING PARAMETERS", tl.run(nexusA, rcrCDB(saCopyOpParams, 0, 1024), nil, 1024))
	want := "0000002a 01000000 0010 0010 000003c0 02000000 00000000 00000000 00000000" +
		"0000 0008 08 09 00 00 000000 02 02e4"
	if got, w := hex.EncodeToString(tl.lastIn), stripSpaces(want); got != w {
		t.Fatalf("OPERATING PARAMETERS\n got %s\nwant %s", got, w)
	}

	// COPY STATUS of a list identifier never used, or not held.
	badField("unknown list", rcrCDB(saCopyStatus, 7, 1024), 2, -1).check(t, tl)
	p := copyParams(7, listIDNoHold, [][]byte{me}, [][]byte{segB2B(false, 0, 0, 8, 0, 64)})
	expectGood(t, "XCOPY not held", tl.run(nexusA, xcopyCDB(uint32(len(p))), p, 0))
	badField("results not held", rcrCDB(saCopyStatus, 7, 1024), 2, -1).check(t, tl)

	// Held: completed, two segments, 6 KiB.
	p = copyParams(7, listIDHold, [][]byte{me}, [][]byte{segB2B(false, 0, 0, 8, 0, 64), segB2B(false, 0, 0, 4, 0, 80)})
	expectGood(t, "XCOPY held", tl.run(nexusA, xcopyCDB(uint32(len(p))), p, 0))
	expectGood(t, "COPY STATUS", tl.run(nexusA, rcrCDB(saCopyStatus, 7, 1024), nil, 1024))
	if got := hex.EncodeToString(tl.lastIn); got != "00000008"+"01"+"0002"+"00"+"00001800" {
		t.Fatalf("COPY STATUS %s", got)
	}
	// Another I_T nexus has its own list identifiers.
	r := tl.run(nexusB, rcrCDB(saCopyStatus, 7, 1024), nil, 1024)
	expectSense(t, "other nexus", r, SenseIllegalRequest, ascInvalidFieldInCDB)
	// No failure: no failed segment details.
	expectGood(t, "FAILED SEGMENT DETAILS", tl.run(nexusA, rcrCDB(saCopyFailedSeg, 7, 1024), nil, 1024))
	if !bytes.Equal(tl.lastIn, make([]byte, 4)) {
		t.Fatalf("details of a good copy: %x", tl.lastIn)
	}

	// A failed held copy: COPY STATUS says so, the details carry the
	// command's status and sense data once.
	p = copyParams(9, listIDHold, [][]byte{me}, [][]byte{segB2B(false, 0, 1, 8, 0, 64)})
	failed := tl.run(nexusA, xcopyCDB(uint32(len(p))), p, 0)
	expectSense(t, "XCOPY failing", failed, SenseCopyAborted, ascUnreachableCopyTarget)
	expectGood(t, "COPY STATUS failed", tl.run(nexusA, rcrCDB(saCopyStatus, 9, 1024), nil, 1024))
	if got := hex.EncodeToString(tl.lastIn); got != "00000008"+"02"+"0000"+"00"+"00000000" {
		t.Fatalf("COPY STATUS of a failed copy %s", got)
	}
	expectGood(t, "FAILED SEGMENT DETAILS", tl.run(nexusA, rcrCDB(saCopyFailedSeg, 9, 1024), nil, 1024))
	d := tl.lastIn
	if len(d) != 60+len(failed.Sense) || binary.BigEndian.Uint32(d) != uint32(len(d)-4) ||
		d[56] != byte(StatusCheckCondition) || int(binary.BigEndian.Uint16(d[58:])) != len(failed.Sense) ||
		!bytes.Equal(d[60:], failed.Sense) {
		t.Fatalf("FAILED SEGMENT DETAILS %x", d)
	}
	expectGood(t, "FAILED SEGMENT DETAILS again", tl.run(nexusA, rcrCDB(saCopyFailedSeg, 9, 1024), nil, 1024))
	if !bytes.Equal(tl.lastIn, make([]byte, 4)) {
		t.Fatalf("details not discarded after transfer: %x", tl.lastIn)
	}

	// A list identifier in use by a running copy is refused.
	it := tl.lu.nexus(nexusA)
	it.mu.Lock()
	it.copies = append(it.copies, &copyRecord{id: 11, hold: true})
	it.mu.Unlock()
	expectGood(t, "COPY STATUS running", tl.run(nexusA, rcrCDB(saCopyStatus, 11, 1024), nil, 1024))
	if tl.lastIn[4] != copyInProgress {
		t.Fatalf("COPY STATUS of a running copy %x", tl.lastIn)
	}
	p = copyParams(11, listIDHold, [][]byte{me}, nil)
	expectSense(t, "list identifier in use", tl.run(nexusA, xcopyCDB(uint32(len(p))), p, 0),
		SenseIllegalRequest, ascOperationInProgress)

	// Copies running at once are bounded.
	tl.lu.copies.Store(maxConcurrentCopies)
	expectSense(t, "too many copies", tl.run(nexusB, xcopyCDB(uint32(len(p))), p, 0),
		SenseIllegalRequest, ascInsufficientResources)
	tl.lu.copies.Store(0)

	// I_T nexus loss and resets discard held results.
	tl.tgt.NexusLost(nexusA)
	tl.clearUA(nexusA)
	badField("after nexus loss", rcrCDB(saCopyStatus, 7, 1024), 2, -1).check(t, tl)
	p = copyParams(7, listIDHold, [][]byte{me}, nil)
	expectGood(t, "XCOPY held", tl.run(nexusA, xcopyCDB(uint32(len(p))), p, 0))
	if err := tl.tgt.LUNReset(0); err != nil {
		t.Fatal(err)
	}
	tl.clearUA(nexusA)
	badField("after LUN reset", rcrCDB(saCopyStatus, 7, 1024), 2, -1).check(t, tl)
}

func TestCopyStatusUnits(t *testing.T) {
	for _, c := range []struct {
		bytes uint64
		units byte
		count uint32
	}{
		{0, 0, 0},
		{0xffffffff, 0, 0xffffffff},
		{1 << 32, 1, 1 << 22},
		{5 << 40, 2, 5 << 20},
	} {
		b := (&copyRecord{bytes: c.bytes, done: true}).status12()
		if b[7] != c.units || binary.BigEndian.Uint32(b[8:]) != c.count {
			t.Errorf("%d bytes: units %d count %d, want %d %d", c.bytes, b[7], binary.BigEndian.Uint32(b[8:]), c.units, c.count)
		}
	}
}

func stripSpaces(s string) string { return string(bytes.ReplaceAll([]byte(s), []byte(" "), nil)) }
