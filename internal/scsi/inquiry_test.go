package scsi

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"testing"
)

func inquiryCDB(evpd bool, page byte, alloc uint16) []byte {
	c := []byte{opInquiry, 0, page, 0, 0, 0}
	if evpd {
		c[1] = 1
	}
	binary.BigEndian.PutUint16(c[3:], alloc)
	return c
}

func TestStandardInquiryGolden(t *testing.T) {
	tl := newMemLU(t, LUConfig{VendorID: "ACME", ProductID: "DISK", Revision: "12"})
	expectGood(t, "INQUIRY", tl.run(nexusA, inquiryCDB(false, 0, 255), nil, 255))
	want := "0000061 25b180002" + // PQ/PDT, RMB, VERSION 6, HISUP|RDF 2, ADDITIONAL LENGTH 91, TPGS 01b + 3PC, CMDQUE
		hex.EncodeToString([]byte("ACME    DISK            12  "))
	got := hex.EncodeToString(tl.lastIn[:36])
	want = strings.ReplaceAll(want, " ", "")
	if got != want {
		t.Fatalf("standard INQUIRY\n got %s\nwant %s", got, want)
	}
	if len(tl.lastIn) != stdInquiryLen {
		t.Fatalf("length %d, want %d", len(tl.lastIn), stdInquiryLen)
	}
	vers := []uint16{verSAM5, verISCSI, verSPC4, verSBC3}
	for i, v := range vers {
		if got := binary.BigEndian.Uint16(tl.lastIn[58+2*i:]); got != v {
			t.Errorf("version descriptor %d = %#04x, want %#04x", i, got, v)
		}
	}
	// Allocation length truncates without a residual overflow.
	r := tl.run(nexusA, inquiryCDB(false, 0, 5), nil, 5)
	if r.N != 5 || r.Wanted != 5 {
		t.Fatalf("alloc 5: N %d Wanted %d", r.N, r.Wanted)
	}
	// A 16-bit allocation length: 511 and 512 give the same data.
	a := tl.run(nexusA, inquiryCDB(false, 0, 511), nil, 511)
	b := tl.run(nexusA, inquiryCDB(false, 0, 512), nil, 512)
	if a.N != stdInquiryLen || b.N != stdInquiryLen {
		t.Fatalf("alloc 511/512: N %d/%d", a.N, b.N)
	}
	badField("INQUIRY page code without EVPD", inquiryCDB(false, 0x80, 255), 2, -1).check(t, tl)
	badField("INQUIRY unknown VPD page", inquiryCDB(true, 0x99, 255), 2, -1).check(t, tl)
	badField("INQUIRY CMDDT", []byte{opInquiry, 0x02, 0, 0, 255, 0}, 1, 1).check(t, tl)
}

func TestVPDPages(t *testing.T) {
	tl := newMemLU(t, LUConfig{Serial: "SN-42"})
	page := func(code byte) []byte {
		t.Helper()
		expectGood(t, "INQUIRY VPD", tl.run(nexusA, inquiryCDB(true, code, 1024), nil, 1024))
		if tl.lastIn[1] != code || int(binary.BigEndian.Uint16(tl.lastIn[2:]))+4 != len(tl.lastIn) {
			t.Fatalf("page %#x: header %x, length %d", code, tl.lastIn[:4], len(tl.lastIn))
		}
		return tl.lastIn
	}
	if got := page(vpdSupported)[4:]; !bytes.Equal(got, []byte{0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2}) {
		t.Errorf("supported pages %x", got)
	}
	if got := string(page(vpdSerial)[4:]); got != "SN-42" {
		t.Errorf("serial %q", got)
	}
	id := page(vpdDeviceID)[4:]
	// NAA 6h from SHA-256("SN-42"), then relative target port 1,
	// target port group 1, and the SCSI name strings.
	if id[0] != 0x01 || id[1] != 0x03 || id[3] != 16 || id[4]>>4 != 6 {
		t.Fatalf("first designator is not a binary 16-byte NAA 6h: %x", id[:8])
	}
	if got := hex.EncodeToString(id[4:8]); !strings.HasPrefix(got, "6da1e55") {
		t.Errorf("NAA company ID: %s", got)
	}
	rest := id[20:]
	wantRTP := []byte{0x51, 0x94, 0, 4, 0, 0, 0, 1}
	wantTPG := []byte{0x51, 0x95, 0, 4, 0, 0, 0, 1}
	if !bytes.Equal(rest[:8], wantRTP) || !bytes.Equal(rest[8:16], wantTPG) {
		t.Fatalf("port designators %x", rest[:16])
	}
	name := rest[16:]
	if name[0] != 0x53 || name[1] != 0x98 || !bytes.HasPrefix(name[4:], []byte("iqn.2026-01.test:target,t,0x0001\x00")) {
		t.Fatalf("target port name designator %q", name)
	}
	if name[3]%4 != 0 {
		t.Errorf("SCSI name string length %d not a multiple of 4", name[3])
	}
	// Two LUs with different serials have different NAA designators.
	other := newMemLU(t, LUConfig{Serial: "SN-43"})
	expectGood(t, "INQUIRY 83h", other.run(nexusA, inquiryCDB(true, vpdDeviceID, 1024), nil, 1024))
	if bytes.Equal(other.lastIn[8:24], id[4:20]) {
		t.Fatal("different serials gave the same NAA")
	}

	bl := page(vpdBlockLimits)
	if len(bl) != 64 {
		t.Fatalf("Block Limits length %d", len(bl))
	}
	checks := []struct {
		name string
		got  uint64
		want uint64
	}{
		{"WSNZ", uint64(bl[4] & 1), 0},
		{"MAXIMUM COMPARE AND WRITE LENGTH", uint64(bl[5]), 255},
		{"OPTIMAL TRANSFER LENGTH GRANULARITY", uint64(binary.BigEndian.Uint16(bl[6:])), 8},
		{"MAXIMUM TRANSFER LENGTH", uint64(binary.BigEndian.Uint32(bl[8:])), 32768},
		{"MAXIMUM UNMAP LBA COUNT", uint64(binary.BigEndian.Uint32(bl[20:])), maxUnmapBlocks},
		{"MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT", uint64(binary.BigEndian.Uint32(bl[24:])), maxUnmapDescriptors},
		{"OPTIMAL UNMAP GRANULARITY", uint64(binary.BigEndian.Uint32(bl[28:])), 8},
		{"UGAVALID", uint64(bl[32] >> 7), 1},
		{"MAXIMUM WRITE SAME LENGTH", binary.BigEndian.Uint64(bl[36:]), maxWriteSameBlocks},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
	if bdc := page(vpdBlockDevChars); binary.BigEndian.Uint16(bdc[4:]) != 1 {
		t.Errorf("MEDIUM ROTATION RATE %d, want 1", binary.BigEndian.Uint16(bdc[4:]))
	}
	if lbp := page(vpdLBProvisioning); lbp[5] != 0xe4 || lbp[6] != 0x02 {
		t.Errorf("LBP page flags %#x type %#x, want LBPU|LBPWS|LBPWS10|LBPRZ and thin", lbp[5], lbp[6])
	}

	full := newTestLU(t, plainDevice{newMemDevice(1 << 20)}, LUConfig{})
	expectGood(t, "LBP page", full.run(nexusA, inquiryCDB(true, vpdLBProvisioning, 64), nil, 64))
	if full.lastIn[5] != 0 || full.lastIn[6] != 0 {
		t.Errorf("fully provisioned LU claims provisioning %x", full.lastIn[4:8])
	}
	expectGood(t, "Block Limits", full.run(nexusA, inquiryCDB(true, vpdBlockLimits, 64), nil, 64))
	if binary.BigEndian.Uint32(full.lastIn[20:]) != 0 || binary.BigEndian.Uint32(full.lastIn[24:]) != 0 {
		t.Error("fully provisioned LU reports UNMAP limits")
	}
}

func TestReadCapacity(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	expectGood(t, "READ CAPACITY(10)", tl.run(nexusA, cdb10(opReadCapacity10, 0, 0, 0), nil, 8))
	if got := hex.EncodeToString(tl.lastIn); got != "000007ff00000200" {
		t.Fatalf("READ CAPACITY(10) data %s", got)
	}
	badField("READ CAPACITY(10) LBA without PMI", cdb10(opReadCapacity10, 0, 5, 0), 2, -1).check(t, tl)
	rc16 := func(alloc uint32) []byte {
		c := cdb16(opServiceActionIn16, saReadCapacity16, 0, alloc)
		return c
	}
	expectGood(t, "READ CAPACITY(16)", tl.run(nexusA, rc16(32), nil, 32))
	want := "00000000000007ff00000200" + "0000" + "c000" + strings.Repeat("00", 16)
	if got := hex.EncodeToString(tl.lastIn); got != want {
		t.Fatalf("READ CAPACITY(16)\n got %s\nwant %s", got, want)
	}
	for alloc := range uint32(16) {
		r := tl.run(nexusA, rc16(alloc), nil, int(alloc))
		expectGood(t, "READ CAPACITY(16) short allocation", r)
		if r.N != int(alloc) || r.Wanted != int(alloc) {
			t.Fatalf("alloc %d: N %d Wanted %d", alloc, r.N, r.Wanted)
		}
	}
	full := newTestLU(t, plainDevice{newMemDevice(1 << 20)}, LUConfig{BlockSize: 4096})
	expectGood(t, "READ CAPACITY(16) 4K", full.run(nexusA, rc16(32), nil, 32))
	if got := hex.EncodeToString(full.lastIn[:16]); got != "00000000000000ff0000100000000000" {
		t.Fatalf("4K fully provisioned READ CAPACITY(16) %s", got)
	}
}

func TestMissingLUN(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	cmd := &Command{Nexus: nexusA, LUN: 7, CDB: inquiryCDB(false, 0, 96), DataIn: make([]byte, 96)}
	r := tl.tgt.Execute(cmd)
	expectGood(t, "INQUIRY to a missing LUN", r)
	if cmd.DataIn[0] != 0x7f {
		t.Fatalf("peripheral byte %#x, want 7Fh", cmd.DataIn[0])
	}
	r = tl.tgt.Execute(&Command{Nexus: nexusA, LUN: 7, CDB: cdb10(opRead10, 0, 0, 1), DataIn: make([]byte, 512)})
	expectSense(t, "READ to a missing LUN", r, SenseIllegalRequest, ascLUNotSupported)
	cmd = &Command{Nexus: nexusA, LUN: 7, CDB: []byte{opRequestSense, 0, 0, 0, 18, 0}, DataIn: make([]byte, 18)}
	expectGood(t, "REQUEST SENSE to a missing LUN", tl.tgt.Execute(cmd))
	if cmd.DataIn[2] != byte(SenseIllegalRequest) || cmd.DataIn[12] != 0x25 {
		t.Fatalf("REQUEST SENSE data %x", cmd.DataIn)
	}
	cmd = &Command{Nexus: nexusA, LUN: 7, CDB: reportLUNsCDB(0, 64), DataIn: make([]byte, 64)}
	expectGood(t, "REPORT LUNS to a missing LUN", tl.tgt.Execute(cmd))
}

func reportLUNsCDB(sel byte, alloc uint32) []byte {
	c := make([]byte, 12)
	c[0], c[2] = opReportLUNs, sel
	binary.BigEndian.PutUint32(c[6:], alloc)
	return c
}

func TestReportLUNs(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	lu2, err := NewLogicalUnit(newMemDevice(1<<20), LUConfig{Serial: "two"})
	if err != nil {
		t.Fatal(err)
	}
	if err := tl.tgt.AddLU(300, lu2); err != nil {
		t.Fatal(err)
	}
	r := tl.run(nexusA, reportLUNsCDB(0, 64), nil, 64)
	expectGood(t, "REPORT LUNS", r)
	want := "00000010" + "00000000" + "0000000000000000" + "412c000000000000"
	if got := hex.EncodeToString(tl.lastIn); got != want {
		t.Fatalf("REPORT LUNS\n got %s\nwant %s", got, want)
	}
	badField("REPORT LUNS allocation below 16", reportLUNsCDB(0, 8), 6, -1).check(t, tl)
	badField("REPORT LUNS unknown SELECT REPORT", reportLUNsCDB(0x40, 64), 2, -1).check(t, tl)
	expectGood(t, "REPORT LUNS well known", tl.run(nexusA, reportLUNsCDB(1, 64), nil, 64))
	if len(tl.lastIn) != 8 {
		t.Errorf("well-known LUN list %x, want empty", tl.lastIn)
	}
	if err := tl.tgt.AddLU(300, lu2); err == nil {
		t.Error("LUN reused")
	}
	if err := tl.tgt.AddLU(MaxLUN+1, lu2); err == nil {
		t.Error("LUN above 16383 accepted")
	}
}
