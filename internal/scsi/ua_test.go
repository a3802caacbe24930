package scsi

import (
	"testing"
)

var tur = []byte{opTestUnitReady, 0, 0, 0, 0, 0}

func TestUnitAttentions(t *testing.T) {
	dev := newMemDevice(1 << 20)
	lu, err := NewLogicalUnit(dev, LUConfig{Serial: "ua"})
	if err != nil {
		t.Fatal(err)
	}
	tgt := NewTarget(TargetConfig{Name: "iqn.2026-01.test:ua"})
	if err := tgt.AddLU(0, lu); err != nil {
		t.Fatal(err)
	}
	tl := &testLU{t: t, tgt: tgt, lu: lu, dev: dev}

	// A new nexus: INQUIRY, REPORT LUNS and REQUEST SENSE pass without
	// consuming the POWER ON unit attention; TEST UNIT READY reports it.
	expectGood(t, "INQUIRY", tl.run(nexusA, inquiryCDB(false, 0, 96), nil, 96))
	expectGood(t, "REPORT LUNS", tl.run(nexusA, reportLUNsCDB(0, 64), nil, 64))
	expectGood(t, "REQUEST SENSE", tl.run(nexusA, []byte{opRequestSense, 0, 0, 0, 18, 0}, nil, 18))
	if tl.lastIn[2] != byte(SenseNoSense) {
		t.Fatalf("REQUEST SENSE data %x", tl.lastIn)
	}
	expectSense(t, "first TUR", tl.run(nexusA, tur, nil, 0), SenseUnitAttention, ascPowerOnReset)
	expectGood(t, "second TUR", tl.run(nexusA, tur, nil, 0))
	tl.clearUA(nexusB)

	// LUN reset: every nexus is told, the issuer too (SAM-5 6.3.3).
	if err := tgt.LUNReset(0); err != nil {
		t.Fatal(err)
	}
	expectSense(t, "issuer after LUN reset", tl.run(nexusA, tur, nil, 0), SenseUnitAttention, ascBusDeviceReset)
	expectSense(t, "other after LUN reset", tl.run(nexusB, tur, nil, 0), SenseUnitAttention, ascBusDeviceReset)
	expectGood(t, "issuer after its unit attention", tl.run(nexusA, tur, nil, 0))
	if err := tgt.LUNReset(9); err != ErrNoSuchLUN {
		t.Fatalf("LUNReset(9) = %v", err)
	}

	// Target warm reset: a LUN reset of every LU, the issuer told too.
	tgt.TargetReset(false)
	expectSense(t, "issuer after warm reset", tl.run(nexusA, tur, nil, 0), SenseUnitAttention, ascBusDeviceReset)
	expectSense(t, "other after warm reset", tl.run(nexusB, tur, nil, 0), SenseUnitAttention, ascBusDeviceReset)

	// Target cold reset: POWER ON OCCURRED.
	tgt.TargetReset(true)
	expectSense(t, "issuer after cold reset", tl.run(nexusA, tur, nil, 0), SenseUnitAttention, ascPowerOnOccurred)
	expectSense(t, "other after cold reset", tl.run(nexusB, tur, nil, 0), SenseUnitAttention, ascPowerOnOccurred)

	// Capacity growth.
	dev.mu.Lock()
	dev.data = append(dev.data, make([]byte, 1<<20)...)
	dev.mapped = append(dev.mapped, make([]bool, 256)...)
	dev.mu.Unlock()
	dev.sizeBytes.Store(2 << 20)
	if blocks, changed := lu.RefreshCapacity(); !changed || blocks != 4096 {
		t.Fatalf("RefreshCapacity = %d, %v", blocks, changed)
	}
	if _, changed := lu.RefreshCapacity(); changed {
		t.Fatal("second RefreshCapacity reported a change")
	}
	expectSense(t, "after growth", tl.run(nexusA, tur, nil, 0), SenseUnitAttention, ascCapacityDataChanged)
	expectGood(t, "READ beyond the old end", tl.run(nexusA, cdb10(opRead10, 0, 4000, 1), nil, 512))

	// LUN inventory change; REPORT LUNS clears it.
	tl.clearUA(nexusB)
	other, _ := NewLogicalUnit(newMemDevice(1<<20), LUConfig{Serial: "other"})
	if err := tgt.AddLU(1, other); err != nil {
		t.Fatal(err)
	}
	expectGood(t, "REPORT LUNS", tl.run(nexusB, reportLUNsCDB(0, 64), nil, 64))
	expectGood(t, "TUR after REPORT LUNS", tl.run(nexusB, tur, nil, 0))
	if err := tgt.RemoveLU(1); err != nil {
		t.Fatal(err)
	}
	expectSense(t, "after RemoveLU", tl.run(nexusA, tur, nil, 0), SenseUnitAttention, ascReportedLUNsChanged)
	if err := tgt.RemoveLU(1); err != ErrNoSuchLUN {
		t.Fatalf("second RemoveLU = %v", err)
	}

	// CLEAR TASK SET tells the other nexuses.
	tl.clearUA(nexusA)
	tl.clearUA(nexusB)
	tgt.ClearTaskSet(nexusA, 0)
	expectGood(t, "issuer after CLEAR TASK SET", tl.run(nexusA, tur, nil, 0))
	expectSense(t, "other after CLEAR TASK SET", tl.run(nexusB, tur, nil, 0), SenseUnitAttention, ascCommandsCleared)

	// I_T nexus loss: the nexus starts afresh.
	tgt.NexusLost(nexusB)
	expectSense(t, "after nexus loss", tl.run(nexusB, tur, nil, 0), SenseUnitAttention, ascPowerOnReset)
}

func TestUAQueue(t *testing.T) {
	var it itNexus
	it.add(ascModeParametersChanged)
	it.add(ascModeParametersChanged)
	it.add(ascCapacityDataChanged)
	if it.pending.Load() != 2 {
		t.Fatalf("pending %d, want 2 (duplicates merged)", it.pending.Load())
	}
	it.add(ascBusDeviceReset)
	if code, _ := it.pop(); code != ascBusDeviceReset || it.pending.Load() != 0 {
		t.Fatalf("a reset did not replace the queue: %#x, %d left", code, it.pending.Load())
	}
	for i := range maxUAQueue + 5 {
		it.add(uint16(0x3000 + i))
	}
	if it.pending.Load() != maxUAQueue {
		t.Fatalf("queue grew to %d", it.pending.Load())
	}
}

func TestStartStopUnit(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	expectGood(t, "STOP", tl.run(nexusA, []byte{opStartStopUnit, 0, 0, 0, 0, 0}, nil, 0))
	if tl.dev.flushes.Load() != 1 {
		t.Fatal("STOP did not flush")
	}
	expectSense(t, "TUR stopped", tl.run(nexusA, tur, nil, 0), SenseNotReady, ascNotReadyInitRequired)
	expectSense(t, "READ stopped", tl.run(nexusA, cdb10(opRead10, 0, 0, 1), nil, 512),
		SenseNotReady, ascNotReadyInitRequired)
	expectGood(t, "INQUIRY stopped", tl.run(nexusA, inquiryCDB(false, 0, 96), nil, 96))
	expectGood(t, "REQUEST SENSE stopped", tl.run(nexusA, []byte{opRequestSense, 0x01, 0, 0, 252, 0}, nil, 252))
	if tl.lastIn[0] != 0x72 || tl.lastIn[1] != byte(SenseNotReady) || tl.lastIn[2] != 0x04 || tl.lastIn[3] != 0x02 {
		t.Fatalf("descriptor REQUEST SENSE %x", tl.lastIn)
	}
	expectGood(t, "START", tl.run(nexusA, []byte{opStartStopUnit, 1, 0, 0, 1, 0}, nil, 0))
	expectGood(t, "TUR started", tl.run(nexusA, tur, nil, 0))
	badField("LOEJ", []byte{opStartStopUnit, 0, 0, 0, 0x02, 0}, 4, 1).check(t, tl)
	badField("POWER CONDITION", []byte{opStartStopUnit, 0, 0, 0, 0x11, 0}, 4, 4).check(t, tl)

	expectGood(t, "PREVENT", tl.run(nexusA, []byte{opPreventAllow, 0, 0, 0, 1, 0}, nil, 0))
	if !tl.lu.prevents[nexusA] {
		t.Fatal("PREVENT not recorded")
	}
	tl.tgt.NexusLost(nexusA)
	if tl.lu.prevents[nexusA] {
		t.Fatal("PREVENT survived nexus loss")
	}
	tl.clearUA(nexusA)
	badField("PREVENT 10b", []byte{opPreventAllow, 0, 0, 0, 2, 0}, 4, 1).check(t, tl)
}

// TestStopUntilNewNexus: a stopped LU stays stopped for the I_T nexuses
// that know it, and a new one (a new login, e.g. iPXE after the OS
// stopped the disk at shutdown, which never sends START UNIT) finds it
// started.
func TestStopUntilNewNexus(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	stop := []byte{opStartStopUnit, 0, 0, 0, 0, 0}
	expectGood(t, "STOP", tl.run(nexusA, stop, nil, 0))
	expectSense(t, "TUR on B", tl.run(nexusB, tur, nil, 0), SenseNotReady, ascNotReadyInitRequired)

	// The same initiator logs in again after losing its nexus.
	tl.tgt.NexusLost(nexusA)
	expectSense(t, "first command of the new nexus", tl.run(nexusA, tur, nil, 0),
		SenseUnitAttention, ascPowerOnReset)
	expectGood(t, "TUR on the new nexus", tl.run(nexusA, tur, nil, 0))
	expectGood(t, "TUR on B", tl.run(nexusB, tur, nil, 0))

	// A nexus never seen before, its first command an INQUIRY.
	expectGood(t, "STOP", tl.run(nexusB, stop, nil, 0))
	nexusC := Nexus{InitiatorName: "iqn.2010-04.org.ipxe:c", ISID: 0x23d000000003, RelTargetPort: 1}
	expectGood(t, "INQUIRY on C", tl.run(nexusC, inquiryCDB(false, 0, 96), nil, 96))
	tl.clearUA(nexusC)
	expectGood(t, "READ on C", tl.run(nexusC, cdb10(opRead10, 0, 0, 1), nil, 512))
}

// TestRemovableMedium: a removable LU ejects and loads its medium with
// START STOP UNIT LOEJ, refuses both while any nexus prevents removal, and
// a fixed LU refuses LOEJ.
func TestRemovableMedium(t *testing.T) {
	tl := newMemLU(t, LUConfig{Removable: true})
	tl.clearUA(nexusB)
	eject := []byte{opStartStopUnit, 0, 0, 0, 0x02, 0}
	load := []byte{opStartStopUnit, 0, 0, 0, 0x03, 0}
	prevent := []byte{opPreventAllow, 0, 0, 0, 1, 0}
	allow := []byte{opPreventAllow, 0, 0, 0, 0, 0}

	expectGood(t, "INQUIRY", tl.run(nexusA, inquiryCDB(false, 0, 96), nil, 96))
	if tl.lastIn[1]&0x80 == 0 {
		t.Fatal("RMB not set")
	}
	expectGood(t, "PREVENT on B", tl.run(nexusB, prevent, nil, 0))
	expectSense(t, "eject prevented by B", tl.run(nexusA, eject, nil, 0), SenseIllegalRequest, ascMediumRemovalPrevented)
	expectGood(t, "TUR still ready", tl.run(nexusA, tur, nil, 0))
	expectGood(t, "ALLOW on B", tl.run(nexusB, allow, nil, 0))

	writes := tl.dev.flushes.Load()
	expectGood(t, "eject", tl.run(nexusA, eject, nil, 0))
	if tl.dev.flushes.Load() != writes+1 {
		t.Fatal("eject did not write the cache back")
	}
	expectSense(t, "TUR ejected", tl.run(nexusA, tur, nil, 0), SenseNotReady, ascMediumNotPresent)
	expectSense(t, "READ ejected", tl.run(nexusB, cdb10(opRead10, 0, 0, 1), nil, 512), SenseNotReady, ascMediumNotPresent)
	expectGood(t, "eject again", tl.run(nexusA, eject, nil, 0))
	expectGood(t, "START without LOEJ", tl.run(nexusA, []byte{opStartStopUnit, 0, 0, 0, 0x01, 0}, nil, 0))
	expectSense(t, "still no medium", tl.run(nexusA, tur, nil, 0), SenseNotReady, ascMediumNotPresent)
	expectGood(t, "REQUEST SENSE", tl.run(nexusA, []byte{opRequestSense, 0, 0, 0, 18, 0}, nil, 18))
	if tl.lastIn[2] != byte(SenseNotReady) || tl.lastIn[12] != 0x3a {
		t.Fatalf("REQUEST SENSE data %x", tl.lastIn)
	}
	expectGood(t, "PREVENT with no medium", tl.run(nexusA, prevent, nil, 0))
	expectSense(t, "load prevented", tl.run(nexusA, load, nil, 0), SenseIllegalRequest, ascMediumRemovalPrevented)
	expectGood(t, "ALLOW", tl.run(nexusA, allow, nil, 0))
	expectGood(t, "load", tl.run(nexusA, load, nil, 0))
	expectGood(t, "TUR loaded", tl.run(nexusA, tur, nil, 0))

	// PREVENT ends with the nexus that set it, and with a LUN reset.
	expectGood(t, "PREVENT on B", tl.run(nexusB, prevent, nil, 0))
	tl.tgt.NexusLost(nexusB)
	expectGood(t, "eject after B's nexus loss", tl.run(nexusA, eject, nil, 0))
	expectGood(t, "load", tl.run(nexusA, load, nil, 0))
	expectGood(t, "PREVENT", tl.run(nexusA, prevent, nil, 0))
	if err := tl.tgt.LUNReset(0); err != nil {
		t.Fatal(err)
	}
	tl.clearUA(nexusA)
	expectGood(t, "eject after LUN reset", tl.run(nexusA, eject, nil, 0))

	// A new nexus (the next boot) finds the medium loaded.
	nexusC := Nexus{InitiatorName: "iqn.2010-04.org.ipxe:c", ISID: 0x23d000000003, RelTargetPort: 1}
	tl.clearUA(nexusC)
	expectGood(t, "READ on a new nexus", tl.run(nexusC, cdb10(opRead10, 0, 0, 1), nil, 512))

	fixed := newMemLU(t, LUConfig{})
	badField("LOEJ on a fixed medium", eject, 4, 1).check(t, fixed)
}
