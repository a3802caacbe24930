package scsi

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"testing"
)

func modeSense6(dbd bool, pc, page, sub, alloc byte) []byte {
	c := []byte{opModeSense6, 0, pc<<6 | page, sub, alloc, 0}
	if dbd {
		c[1] = 0x08
	}
	return c
}

func modeSense10(llbaa, dbd bool, pc, page byte, alloc uint16) []byte {
	c := make([]byte, 10)
	c[0], c[2] = opModeSense10, pc<<6|page
	if llbaa {
		c[1] |= 0x10
	}
	if dbd {
		c[1] |= 0x08
	}
	binary.BigEndian.PutUint16(c[7:], alloc)
	return c
}

func modeSelect6(data []byte) []byte { return []byte{opModeSelect6, 0x10, 0, 0, byte(len(data)), 0} }

func TestModeSenseGolden(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	expectGood(t, "MODE SENSE(6) caching", tl.run(nexusA, modeSense6(false, 0, pageCaching, 0, 255), nil, 255))
	// Header: length 31, medium 0, DPOFUA, 8-byte block descriptor
	// (2048 blocks of 512), caching page with WCE.
	want := "1f001008" + "0000080000000200" + "0812" + "04" + "00000000000000000000000000000000000000"[:34]
	if got := hex.EncodeToString(tl.lastIn); got != want {
		t.Fatalf("MODE SENSE(6) caching\n got %s\nwant %s", got, want)
	}
	expectGood(t, "MODE SENSE(6) all pages DBD", tl.run(nexusA, modeSense6(true, 0, pageAllPages, 0, 255), nil, 255))
	if got := int(tl.lastIn[0]) + 1; got != len(tl.lastIn) || tl.lastIn[3] != 0 {
		t.Fatalf("all pages: length %d, data %d, BDL %d", got, len(tl.lastIn), tl.lastIn[3])
	}
	var codes []byte
	for p := tl.lastIn[4:]; len(p) > 0; p = p[2+int(p[1]):] {
		codes = append(codes, p[0])
	}
	if !bytes.Equal(codes, []byte{pageCaching, pageControl, pageInfoExc}) {
		t.Fatalf("pages %x", codes)
	}
	expectGood(t, "MODE SENSE(6) control", tl.run(nexusA, modeSense6(true, 0, pageControl, 0, 255), nil, 255))
	if got := hex.EncodeToString(tl.lastIn[4:]); got != "0a0a00100000000000000000" {
		t.Fatalf("control page %s", got)
	}
	expectGood(t, "MODE SENSE(6) changeable control", tl.run(nexusA, modeSense6(true, 1, pageControl, 0, 255), nil, 255))
	if tl.lastIn[4+4] != 0x08 {
		t.Fatalf("changeable control page %x: SWP not changeable", tl.lastIn)
	}
	// MODE SENSE(10) with a long LBA block descriptor.
	expectGood(t, "MODE SENSE(10) LLBAA", tl.run(nexusA, modeSense10(true, false, 0, pageInfoExc, 255), nil, 255))
	if got := hex.EncodeToString(tl.lastIn[:24]); got != "002200100100001000000000000008000000000000000200" {
		t.Fatalf("MODE SENSE(10) header and long descriptor %s", got)
	}
	// Truncation at the allocation length is no overflow.
	r := tl.run(nexusA, modeSense6(false, 0, pageAllPages, 0, 4), nil, 4)
	if r.N != 4 || r.Wanted != 4 {
		t.Fatalf("alloc 4: N %d Wanted %d", r.N, r.Wanted)
	}
	expectSense(t, "MODE SENSE saved values", tl.run(nexusA, modeSense6(false, 3, pageCaching, 0, 255), nil, 255),
		SenseIllegalRequest, ascSavingNotSupported)
	badField("MODE SENSE unknown page", modeSense6(false, 0, 0x19, 0, 255), 2, 5).check(t, tl)
	badField("MODE SENSE subpage", modeSense6(false, 0, pageCaching, 1, 255), 3, -1).check(t, tl)
}

// TestModeSelectWCE turns the write cache off and on: write-through must
// really follow, and the other I_T nexus hears about the change.
func TestModeSelectWCE(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	expectGood(t, "MODE SENSE", tl.run(nexusA, modeSense6(true, 0, pageCaching, 0, 255), nil, 255))
	sel := append([]byte(nil), tl.lastIn...)
	sel[0] = 0        // MODE DATA LENGTH is reserved in MODE SELECT
	sel[2] = 0        // device-specific parameter
	sel[4+2] &^= 0x04 // WCE off
	expectGood(t, "MODE SELECT WCE=0", tl.run(nexusA, modeSelect6(sel), sel, 0))
	before := tl.dev.flushes.Load()
	expectGood(t, "WRITE", tl.run(nexusA, cdb10(opWrite10, 0, 0, 1), fill(512, 1), 0))
	if tl.dev.flushes.Load() != before+1 {
		t.Fatal("WCE=0 write was not flushed")
	}
	r := tl.run(nexusB, []byte{opTestUnitReady, 0, 0, 0, 0, 0}, nil, 0)
	expectSense(t, "other nexus after MODE SELECT", r, SenseUnitAttention, ascModeParametersChanged)
	expectGood(t, "issuer after MODE SELECT", tl.run(nexusA, []byte{opTestUnitReady, 0, 0, 0, 0, 0}, nil, 0))

	// A LUN reset restores the default (no saved pages).
	if err := tl.tgt.LUNReset(0); err != nil {
		t.Fatal(err)
	}
	if !tl.lu.wce.Load() {
		t.Fatal("LUN reset kept WCE=0")
	}
}

func TestModeSelectRefusals(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	expectGood(t, "MODE SENSE", tl.run(nexusA, modeSense6(false, 0, pageControl, 0, 255), nil, 255))
	base := append([]byte(nil), tl.lastIn...)
	base[0], base[2] = 0, 0
	mutate := func(f func(b []byte)) []byte {
		b := append([]byte(nil), base...)
		f(b)
		return b
	}
	cases := []struct {
		name  string
		cdb   []byte
		data  []byte
		code  uint16
		field int
	}{
		{"non-changeable TST", nil, mutate(func(b []byte) { b[12+2] |= 0x20 }), ascInvalidFieldInParam, 14},
		{"D_SENSE", nil, mutate(func(b []byte) { b[12+2] |= 0x04 }), ascInvalidFieldInParam, 14},
		{"PS bit", nil, mutate(func(b []byte) { b[12] |= 0x80 }), ascInvalidFieldInParam, 12},
		{"wrong page length", nil, mutate(func(b []byte) { b[13] = 9 }), ascInvalidFieldInParam, 13},
		{"wrong block length", nil, mutate(func(b []byte) { b[4+6] = 0x10 }), ascInvalidFieldInParam, 9},
		{"truncated page", nil, base[:18], ascParamListLengthError, -1},
		{"SP", []byte{opModeSelect6, 0x11, 0, 0, byte(len(base)), 0}, base, ascInvalidFieldInCDB, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cdb := c.cdb
			if cdb == nil {
				cdb = modeSelect6(c.data)
			}
			r := tl.run(nexusA, cdb, c.data, 0)
			expectSense(t, c.name, r, SenseIllegalRequest, c.code)
			if field, _, _, ok := fieldPointer(r); c.field >= 0 && (!ok || field != c.field) {
				t.Errorf("field pointer %d (valid %v), want %d", field, ok, c.field)
			}
		})
	}
	// SWP: set, writes refused, WP reported, cleared.
	swp := mutate(func(b []byte) { b[12+4] |= 0x08 })
	expectGood(t, "MODE SELECT SWP", tl.run(nexusA, modeSelect6(swp), swp, 0))
	expectSense(t, "WRITE under SWP", tl.run(nexusA, cdb10(opWrite10, 0, 0, 1), fill(512, 0), 0),
		SenseDataProtect, ascSoftwareWriteProtected)
	tl.run(nexusA, modeSense6(true, 0, pageControl, 0, 255), nil, 255)
	if tl.lastIn[2]&0x80 == 0 {
		t.Error("WP clear under SWP")
	}
	expectGood(t, "MODE SELECT SWP off", tl.run(nexusA, modeSelect6(base), base, 0))
	expectGood(t, "WRITE after SWP", tl.run(nexusA, cdb10(opWrite10, 0, 0, 1), fill(512, 0), 0))
}
