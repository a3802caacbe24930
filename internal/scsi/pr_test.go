package scsi

import (
	"encoding/binary"
	"testing"
)

func prOutCDB(sa, typ byte) []byte {
	c := make([]byte, 10)
	c[0], c[1], c[2] = opPROut, sa, typ
	binary.BigEndian.PutUint32(c[5:], prOutParamListLength)
	return c
}

func prOutParams(rk, sark uint64, flags byte) []byte {
	b := make([]byte, prOutParamListLength)
	binary.BigEndian.PutUint64(b, rk)
	binary.BigEndian.PutUint64(b[8:], sark)
	b[20] = flags
	return b
}

func (tl *testLU) prOut(n Nexus, sa, typ byte, rk, sark uint64) Result {
	return tl.run(n, prOutCDB(sa, typ), prOutParams(rk, sark, 0), 0)
}

func (tl *testLU) prIn(n Nexus, sa byte) []byte {
	tl.t.Helper()
	c := []byte{opPRIn, sa, 0, 0, 0, 0, 0, 0x40, 0x00, 0}
	expectGood(tl.t, "PERSISTENT RESERVE IN", tl.run(n, c, nil, 0x4000))
	return tl.lastIn
}

func (tl *testLU) keys(n Nexus) (gen uint32, keys []uint64) {
	d := tl.prIn(n, prInReadKeys)
	for p := d[8 : 8+binary.BigEndian.Uint32(d[4:])]; len(p) >= 8; p = p[8:] {
		keys = append(keys, binary.BigEndian.Uint64(p))
	}
	return binary.BigEndian.Uint32(d), keys
}

func readCmd() []byte  { return cdb10(opRead10, 0, 1, 1) }
func writeCmd() []byte { return cdb10(opWrite10, 0, 1, 1) }

// TestPRAccessMatrix checks SPC-4 table 48 / SBC-3 table 13 for reads and
// writes from a registered and an unregistered non-holder, for each type.
func TestPRAccessMatrix(t *testing.T) {
	cases := []struct {
		name                                     string
		typ                                      byte
		regRead, regWrite, unregRead, unregWrite bool
	}{
		{"Write Exclusive", prWriteExclusive, true, false, true, false},
		{"Exclusive Access", prExclusiveAccess, false, false, false, false},
		{"Write Exclusive Registrants Only", prWriteExclusiveRO, true, true, true, false},
		{"Exclusive Access Registrants Only", prExclusiveAccessRO, true, true, false, false},
		{"Write Exclusive All Registrants", prWriteExclusiveAR, true, true, true, false},
		{"Exclusive Access All Registrants", prExclusiveAccessAR, true, true, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tl := newMemLU(t, LUConfig{})
			expectGood(t, "register A", tl.prOut(nexusA, prOutRegisterIgnore, 0, 0, 0xa))
			expectGood(t, "register B", tl.prOut(nexusB, prOutRegisterIgnore, 0, 0, 0xb))
			expectGood(t, "reserve", tl.prOut(nexusA, prOutReserve, c.typ, 0xa, 0))
			expectGood(t, "holder reads", tl.run(nexusA, readCmd(), nil, 512))
			expectGood(t, "holder writes", tl.run(nexusA, writeCmd(), fill(512, 0), 0))
			access := func(what string, cdb, out []byte, allowed bool) {
				t.Helper()
				r := tl.run(nexusB, cdb, out, 512)
				if allowed != (r.Status == StatusGood) || (!allowed && r.Status != StatusReservationConflict) {
					t.Errorf("%s: status %#x, allowed %v", what, r.Status, allowed)
				}
			}
			access("registered read", readCmd(), nil, c.regRead)
			access("registered write", writeCmd(), fill(512, 0), c.regWrite)
			expectGood(t, "unregister B", tl.prOut(nexusB, prOutRegister, 0, 0xb, 0))
			access("unregistered read", readCmd(), nil, c.unregRead)
			access("unregistered write", writeCmd(), fill(512, 0), c.unregWrite)
			// Always allowed: INQUIRY, TUR, READ CAPACITY, PR IN.
			for _, cdb := range [][]byte{inquiryCDB(false, 0, 96), {opTestUnitReady, 0, 0, 0, 0, 0},
				cdb10(opReadCapacity10, 0, 0, 0)} {
				if r := tl.run(nexusB, cdb, nil, 96); r.Status != StatusGood {
					t.Errorf("op %#x: status %#x under reservation", cdb[0], r.Status)
				}
			}
			expectGood(t, "release", tl.prOut(nexusA, prOutRelease, c.typ, 0xa, 0))
			expectGood(t, "write after release", tl.run(nexusB, writeCmd(), fill(512, 0), 0))
		})
	}
}

func TestPRRegistration(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	gen0, keys := tl.keys(nexusA)
	if len(keys) != 0 {
		t.Fatalf("keys %v on a new LU", keys)
	}
	expectGood(t, "REGISTER", tl.prOut(nexusA, prOutRegister, 0, 0, 0x1234))
	if r := tl.prOut(nexusA, prOutRegister, 0, 0, 0x5678); r.Status != StatusReservationConflict {
		t.Fatalf("re-REGISTER with key 0: status %#x, want RESERVATION CONFLICT", r.Status)
	}
	expectGood(t, "REGISTER replace", tl.prOut(nexusA, prOutRegister, 0, 0x1234, 0x5678))
	gen, keys := tl.keys(nexusA)
	if len(keys) != 1 || keys[0] != 0x5678 || gen != gen0+2 {
		t.Fatalf("keys %x generation %d (was %d)", keys, gen, gen0)
	}
	// Truncated READ KEYS keeps the full ADDITIONAL LENGTH.
	r := tl.run(nexusA, []byte{opPRIn, 0, 0, 0, 0, 0, 0, 0, 8, 0}, nil, 8)
	expectGood(t, "READ KEYS alloc 8", r)
	if r.N != 8 || binary.BigEndian.Uint32(tl.lastIn[4:]) != 8 {
		t.Fatalf("truncated READ KEYS: N %d ADDITIONAL LENGTH %d", r.N, binary.BigEndian.Uint32(tl.lastIn[4:]))
	}
	caps := tl.prIn(nexusA, prInReportCaps)
	if binary.BigEndian.Uint16(caps) != 8 || caps[3]&0x80 == 0 || caps[4] != 0xea || caps[5] != 0x01 {
		t.Fatalf("REPORT CAPABILITIES %x", caps)
	}
	full := tl.prIn(nexusA, prInReadFullStatus)
	if binary.BigEndian.Uint32(full[4:]) == 0 || binary.BigEndian.Uint64(full[8:]) != 0x5678 {
		t.Fatalf("READ FULL STATUS %x", full)
	}
	tid := full[8+24:]
	if tid[0] != 0x45 || string(tid[4:4+len(nexusA.InitiatorName)]) != nexusA.InitiatorName {
		t.Fatalf("TransportID %q", tid)
	}
	for sa := byte(4); sa < 0x20; sa++ {
		r := tl.run(nexusA, []byte{opPRIn, sa, 0, 0, 0, 0, 0, 0x40, 0, 0}, nil, 0x4000)
		if r.Status == StatusGood {
			t.Errorf("PR IN service action %#x succeeded", sa)
		}
	}
	// Parameter list checks.
	expectSense(t, "APTPL", tl.run(nexusA, prOutCDB(prOutRegister, 0), prOutParams(0x5678, 1, 0x01), 0),
		SenseIllegalRequest, ascInvalidFieldInParam)
	expectSense(t, "SPEC_I_PT", tl.run(nexusA, prOutCDB(prOutRegisterIgnore, 0), prOutParams(0, 1, 0x08), 0),
		SenseIllegalRequest, ascInvalidFieldInParam)
	short := prOutCDB(prOutRegister, 0)
	binary.BigEndian.PutUint32(short[5:], 20)
	expectSense(t, "parameter list of 20", tl.run(nexusA, short, make([]byte, 20), 0),
		SenseIllegalRequest, ascParamListLengthError)
	badField("RESERVE with a bad type", prOutCDB(prOutReserve, 0x02), 2, 3).check(t, tl)
	badField("RESERVE with element scope", prOutCDB(prOutReserve, 0x21), 2, 7).check(t, tl)
	badField("REGISTER AND MOVE", prOutCDB(0x07, 0), 1, 4).check(t, tl)
	if r := tl.prOut(nexusB, prOutReserve, prWriteExclusive, 0x99, 0); r.Status != StatusReservationConflict {
		t.Fatalf("RESERVE from an unregistered nexus: %#x", r.Status)
	}
}

func TestPRReleaseAndClear(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	tl.prOut(nexusA, prOutRegisterIgnore, 0, 0, 0xa)
	tl.prOut(nexusB, prOutRegisterIgnore, 0, 0, 0xb)
	expectGood(t, "RESERVE WE-RO", tl.prOut(nexusA, prOutReserve, prWriteExclusiveRO, 0xa, 0))
	if r := tl.prOut(nexusB, prOutReserve, prWriteExclusiveRO, 0xb, 0); r.Status != StatusReservationConflict {
		t.Fatalf("second holder: %#x", r.Status)
	}
	expectSense(t, "RELEASE with the wrong type", tl.prOut(nexusA, prOutRelease, prExclusiveAccess, 0xa, 0),
		SenseIllegalRequest, ascInvalidReleaseOfPR)
	expectGood(t, "RELEASE", tl.prOut(nexusA, prOutRelease, prWriteExclusiveRO, 0xa, 0))
	expectSense(t, "B after a registrants-only release", tl.run(nexusB, readCmd(), nil, 512),
		SenseUnitAttention, ascReservationsReleased)

	gen, _ := tl.keys(nexusA)
	expectGood(t, "RESERVE EA", tl.prOut(nexusA, prOutReserve, prExclusiveAccess, 0xa, 0))
	expectGood(t, "CLEAR", tl.prOut(nexusA, prOutClear, 0, 0xa, 0))
	gen2, keys := tl.keys(nexusA)
	if len(keys) != 0 || gen2 != gen+1 {
		t.Fatalf("after CLEAR: keys %v generation %d (was %d)", keys, gen2, gen)
	}
	if rr := tl.prIn(nexusA, prInReadReservation); binary.BigEndian.Uint32(rr[4:]) != 0 {
		t.Fatal("reservation survived CLEAR")
	}
	expectSense(t, "B after CLEAR", tl.run(nexusB, readCmd(), nil, 512), SenseUnitAttention, ascReservationsPreempted)
}

func TestPRPreempt(t *testing.T) {
	aborted := make(chan []Nexus, 1)
	dev := newMemDevice(1 << 20)
	lu, err := NewLogicalUnit(dev, LUConfig{Serial: "p"})
	if err != nil {
		t.Fatal(err)
	}
	tgt := NewTarget(TargetConfig{AbortTasks: func(lun uint64, v []Nexus) { aborted <- v }})
	if err := tgt.AddLU(0, lu); err != nil {
		t.Fatal(err)
	}
	tl := &testLU{t: t, tgt: tgt, lu: lu, dev: dev}
	tl.clearUA(nexusA)
	tl.clearUA(nexusB)

	// Without a reservation PREEMPT removes registrations.
	tl.prOut(nexusA, prOutRegisterIgnore, 0, 0, 0xa)
	tl.prOut(nexusB, prOutRegisterIgnore, 0, 0, 0xb)
	gen, _ := tl.keys(nexusA)
	expectGood(t, "PREEMPT registration", tl.prOut(nexusB, prOutPreempt, prExclusiveAccess, 0xb, 0xa))
	gen2, keys := tl.keys(nexusB)
	if len(keys) != 1 || keys[0] != 0xb || gen2 != gen+1 {
		t.Fatalf("keys %x generation %d (was %d)", keys, gen2, gen)
	}
	expectSense(t, "A after being preempted", tl.run(nexusA, readCmd(), nil, 512),
		SenseUnitAttention, ascRegistrationsPreempted)
	if r := tl.prOut(nexusB, prOutPreempt, prExclusiveAccess, 0xb, 0xdead); r.Status != StatusReservationConflict {
		t.Fatalf("PREEMPT of an unknown key: %#x", r.Status)
	}

	// With a reservation, PREEMPT AND ABORT moves it and names the victims.
	tl.prOut(nexusA, prOutRegisterIgnore, 0, 0, 0xa)
	expectGood(t, "A reserves", tl.prOut(nexusA, prOutReserve, prWriteExclusive, 0xa, 0))
	expectGood(t, "B preempts and aborts", tl.prOut(nexusB, prOutPreemptAbort, prExclusiveAccess, 0xb, 0xa))
	if v := <-aborted; len(v) != 1 || v[0] != nexusA {
		t.Fatalf("AbortTasks victims %v", v)
	}
	rr := tl.prIn(nexusB, prInReadReservation)
	if binary.BigEndian.Uint64(rr[8:]) != 0xb || rr[21] != prExclusiveAccess {
		t.Fatalf("READ RESERVATION after preempt %x", rr)
	}
	if r := tl.run(nexusA, readCmd(), nil, 512); r.Status == StatusGood {
		t.Fatal("preempted nexus still reads under Exclusive Access")
	}
}

func TestSPC2Reservations(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	reserve6 := []byte{opReserve6, 0, 0, 0, 0, 0}
	release6 := []byte{opRelease6, 0, 0, 0, 0, 0}
	expectGood(t, "A RESERVE(6)", tl.run(nexusA, reserve6, nil, 0))
	expectGood(t, "A RESERVE(6) again", tl.run(nexusA, reserve6, nil, 0))
	if r := tl.run(nexusB, reserve6, nil, 0); r.Status != StatusReservationConflict {
		t.Fatalf("B RESERVE(6): %#x", r.Status)
	}
	expectGood(t, "B RELEASE(6) is a no-op", tl.run(nexusB, release6, nil, 0))
	if r := tl.run(nexusB, modeSense6(false, 0, pageAllPages, 0, 255), nil, 255); r.Status != StatusReservationConflict {
		t.Fatalf("B MODE SENSE under RESERVE: %#x", r.Status)
	}
	expectGood(t, "B INQUIRY under RESERVE", tl.run(nexusB, inquiryCDB(false, 0, 96), nil, 96))
	expectGood(t, "B REPORT LUNS under RESERVE", tl.run(nexusB, reportLUNsCDB(0, 64), nil, 64))
	if r := tl.prOut(nexusB, prOutRegisterIgnore, 0, 0, 0xb); r.Status != StatusReservationConflict {
		t.Fatalf("B PR OUT under RESERVE: %#x", r.Status)
	}
	// I_T nexus loss releases it.
	tl.tgt.NexusLost(nexusA)
	expectGood(t, "B RESERVE(10) after A's nexus loss", tl.run(nexusB, make10(opReserve10), nil, 0))
	expectGood(t, "B RELEASE(10)", tl.run(nexusB, make10(opRelease10), nil, 0))
	// A LUN reset releases it too.
	expectGood(t, "B RESERVE(6)", tl.run(nexusB, reserve6, nil, 0))
	if err := tl.tgt.LUNReset(0); err != nil {
		t.Fatal(err)
	}
	tl.clearUA(nexusA)
	expectGood(t, "A RESERVE(6) after LUN reset", tl.run(nexusA, reserve6, nil, 0))
	badField("RESERVE(10) 3RDPTY", []byte{opReserve10, 0x10, 0, 0, 0, 0, 0, 0, 0, 0}, 1, 4).check(t, tl)

	// With registrations, RESERVE/RELEASE follow SPC-4 5.9.3.
	pr := newMemLU(t, LUConfig{})
	pr.prOut(nexusA, prOutRegisterIgnore, 0, 0, 0xa)
	if r := pr.run(nexusB, reserve6, nil, 0); r.Status != StatusReservationConflict {
		t.Fatalf("RESERVE(6) by an unregistered nexus with registrations: %#x", r.Status)
	}
	if r := pr.run(nexusA, reserve6, nil, 0); r.Status != StatusReservationConflict {
		t.Fatalf("RESERVE(6) by a registrant without a reservation: %#x", r.Status)
	}
	expectGood(t, "PR RESERVE", pr.prOut(nexusA, prOutReserve, prWriteExclusive, 0xa, 0))
	expectGood(t, "RESERVE(6) by the holder is a no-op", pr.run(nexusA, reserve6, nil, 0))
	expectGood(t, "RELEASE(6) by the holder is a no-op", pr.run(nexusA, release6, nil, 0))
	if pr.lu.spc2 != nil || !pr.lu.pr.has {
		t.Fatal("RESERVE(6) established a reservation beside registrations")
	}
}

func make10(op byte) []byte { return []byte{op, 0, 0, 0, 0, 0, 0, 0, 0, 0} }
