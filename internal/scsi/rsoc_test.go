package scsi

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func rsocCDB(rctd bool, options, op byte, sa uint16, alloc uint32) []byte {
	c := make([]byte, 12)
	c[0], c[1], c[2], c[3] = opMaintenanceIn, saReportOpcodes, options, op
	if rctd {
		c[2] |= 0x80
	}
	binary.BigEndian.PutUint16(c[4:], sa)
	binary.BigEndian.PutUint32(c[6:], alloc)
	return c
}

type rsocDesc struct {
	op       byte
	sa       uint16
	servactv bool
	ctdp     bool
	cdbLen   int
	timeout  uint32
}

func parseRSOC(t *testing.T, b []byte) []rsocDesc {
	t.Helper()
	n := int(binary.BigEndian.Uint32(b))
	if n+4 != len(b) {
		t.Fatalf("COMMAND DATA LENGTH %d for %d bytes", n, len(b))
	}
	var out []rsocDesc
	for p := b[4:]; len(p) > 0; {
		d := rsocDesc{op: p[0], sa: binary.BigEndian.Uint16(p[2:]), servactv: p[5]&1 != 0,
			ctdp: p[5]&2 != 0, cdbLen: int(binary.BigEndian.Uint16(p[6:]))}
		p = p[8:]
		if d.ctdp {
			if binary.BigEndian.Uint16(p) != 0x0a {
				t.Fatalf("timeouts descriptor length %d", binary.BigEndian.Uint16(p))
			}
			d.timeout = binary.BigEndian.Uint32(p[8:])
			p = p[12:]
		}
		out = append(out, d)
	}
	return out
}

// TestReportSupportedOpcodesMatchesTable: the list is the dispatch table,
// filtered by what the LU's device supports.
func TestReportSupportedOpcodesMatchesTable(t *testing.T) {
	for _, rctd := range []bool{false, true} {
		tl := newMemLU(t, LUConfig{})
		expectGood(t, "RSOC all", tl.run(nexusA, rsocCDB(rctd, rsocAll, 0, 0, 65535), nil, 65535))
		descs := parseRSOC(t, tl.lastIn)
		if len(descs) != len(opcodeTable) {
			t.Fatalf("%d descriptors, table has %d commands", len(descs), len(opcodeTable))
		}
		for i, d := range descs {
			e := &opcodeTable[i]
			if d.op != e.op || d.servactv != e.hasSA || (e.hasSA && d.sa != uint16(e.sa)) ||
				d.cdbLen != len(e.usage) || d.ctdp != rctd || (rctd && d.timeout != e.timeout) {
				t.Errorf("descriptor %d = %+v, table entry %s", i, d, e.name)
			}
		}
	}
	// Without Unmapper, AllocationReporter or Prefetcher those commands
	// are not listed.
	full := newTestLU(t, plainDevice{newMemDevice(1 << 20)}, LUConfig{})
	expectGood(t, "RSOC all", full.run(nexusA, rsocCDB(false, rsocAll, 0, 0, 65535), nil, 65535))
	for _, d := range parseRSOC(t, full.lastIn) {
		switch {
		case d.op == opUnmap, d.op == opPrefetch10, d.op == opPrefetch16,
			d.op == opServiceActionIn16 && d.sa == saGetLBAStatus:
			t.Errorf("fully provisioned LU lists %#x/%#x", d.op, d.sa)
		}
	}
}

func TestReportSupportedOpcodesOne(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	for i := range opcodeTable {
		e := &opcodeTable[i]
		opt := byte(rsocOpcode)
		if e.hasSA {
			opt = rsocServiceAct
		}
		r := tl.run(nexusA, rsocCDB(true, opt, e.op, uint16(e.sa), 512), nil, 512)
		expectGood(t, e.name, r)
		d := tl.lastIn
		if d[1]&0x07 != rsocSupportStd || d[1]&0x80 == 0 || int(binary.BigEndian.Uint16(d[2:])) != len(e.usage) ||
			!bytes.Equal(d[4:4+len(e.usage)], e.usage) || binary.BigEndian.Uint16(d[4+len(e.usage):]) != 0x0a {
			t.Errorf("%s: one-command data %x", e.name, d)
		}
		// Asking the other way round is an error.
		wrong := byte(rsocServiceAct)
		if e.hasSA {
			wrong = rsocOpcode
		}
		badField(e.name+" wrong reporting option", rsocCDB(false, wrong, e.op, uint16(e.sa), 512), 2, 2).check(t, tl)
	}
	expectGood(t, "unsupported opcode", tl.run(nexusA, rsocCDB(false, rsocOpcode, 0xe0, 0, 512), nil, 512))
	if !bytes.Equal(tl.lastIn, []byte{0, rsocSupportNone, 0, 0}) {
		t.Errorf("unsupported opcode data %x", tl.lastIn)
	}
	expectGood(t, "unsupported service action", tl.run(nexusA, rsocCDB(false, rsocServiceAct, opServiceActionIn16, 0x11, 512), nil, 512))
	if tl.lastIn[1] != rsocSupportNone {
		t.Errorf("unsupported service action data %x", tl.lastIn)
	}
	badField("reporting option 3", rsocCDB(false, 3, 0, 0, 512), 2, 2).check(t, tl)
	// DPO/FUA usage bits the libiscsi DpoFua tests read.
	for _, op := range []byte{opRead10, opWrite10, opCompareAndWrite, opWriteAtomic16} {
		e := opIndex[op]
		if e.usage[1]&0x18 != 0x18 {
			t.Errorf("%s: DPO/FUA not in usage data", e.name)
		}
	}
}

// TestUsageDataIsTheCDBCheck: a CDB using only bits of its usage data
// passes the check; each other bit is refused at its own position.
func TestUsageDataIsTheCDBCheck(t *testing.T) {
	for i := range opcodeTable {
		e := &opcodeTable[i]
		cdb := append([]byte(nil), e.usage...)
		if e.hasSA {
			cdb[1] = e.usage[1]
		}
		if err := e.checkCDB(cdb, e.usage); err != nil {
			t.Errorf("%s: all usage bits set refused: %v", e.name, err)
			continue
		}
		for b := 1; b < len(cdb); b++ {
			allowed := e.usage[b]
			if b == 1 && e.hasSA {
				allowed |= 0x1f
			}
			for bit := 0; bit < 8; bit++ {
				if allowed&(1<<bit) != 0 {
					continue
				}
				c := append([]byte(nil), cdb...)
				c[b] |= 1 << bit
				err := e.checkCDB(c, e.usage)
				if err == nil || err.Field != uint16(b) || !err.BitValid || int(err.Bit) != bit {
					t.Errorf("%s: byte %d bit %d: %+v", e.name, b, bit, err)
				}
			}
		}
	}
}

func TestReportTMFs(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	c := []byte{opMaintenanceIn, saReportTMFs, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0}
	expectGood(t, "REPORT SUPPORTED TMFs", tl.run(nexusA, c, nil, 16))
	if !bytes.Equal(tl.lastIn, []byte{0xda, 0, 0, 0}) {
		t.Fatalf("TMF data %x", tl.lastIn)
	}
	badField("allocation below 4", []byte{opMaintenanceIn, saReportTMFs, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0}, 6, -1).check(t, tl)
}

func TestReportTargetPortGroups(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	c := []byte{opMaintenanceIn, saReportTPG, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}
	expectGood(t, "RTPG", tl.run(nexusA, c, nil, 256))
	want := []byte{0, 0, 0, 12, 0x80, 0x01, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1}
	if !bytes.Equal(tl.lastIn, want) {
		t.Fatalf("RTPG %x, want %x", tl.lastIn, want)
	}
	c[1] = 0x20 | saReportTPG
	expectGood(t, "RTPG extended", tl.run(nexusA, c, nil, 256))
	if binary.BigEndian.Uint32(tl.lastIn) != 16 || tl.lastIn[4] != 0x10 {
		t.Fatalf("RTPG extended header %x", tl.lastIn[:8])
	}
}

func TestReadDefectData(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	expectGood(t, "READ DEFECT DATA(10)", tl.run(nexusA, []byte{opReadDefectData10, 0, 0x18, 0, 0, 0, 0, 0, 32, 0}, nil, 32))
	if !bytes.Equal(tl.lastIn, []byte{0, 0x18, 0, 0}) {
		t.Fatalf("READ DEFECT DATA(10) %x", tl.lastIn)
	}
	c := make([]byte, 12)
	c[0], c[1], c[9] = opReadDefectData12, 0x13, 32
	expectGood(t, "READ DEFECT DATA(12)", tl.run(nexusA, c, nil, 32))
	if !bytes.Equal(tl.lastIn, []byte{0, 0x13, 0, 0, 0, 0, 0, 0}) {
		t.Fatalf("READ DEFECT DATA(12) %x", tl.lastIn)
	}
	badField("reserved defect list format", []byte{opReadDefectData10, 0, 0x01, 0, 0, 0, 0, 0, 32, 0}, 2, 2).check(t, tl)
}

func TestCommandName(t *testing.T) {
	for _, c := range []struct {
		cdb  []byte
		want string
	}{
		{cdb10(opRead10, 0, 0, 1), "READ(10)"},
		{cdb16(opServiceActionIn16, saReadCapacity16, 0, 32), "READ CAPACITY(16)"},
		{[]byte{0xff}, "UNKNOWN"},
		{nil, "UNKNOWN"},
	} {
		if got := CommandName(c.cdb); got != c.want {
			t.Errorf("CommandName(%x) = %q, want %q", c.cdb, got, c.want)
		}
	}
}
