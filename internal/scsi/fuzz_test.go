package scsi

import (
	"runtime"
	"testing"
)

// FuzzCDB feeds arbitrary CDBs, Data-Out and Data-In sizes to an LU. No
// input may panic, the Result must be well formed, and no command may
// allocate in proportion to what its CDB claims: lengths are capped
// before buffers are made.
func FuzzCDB(f *testing.F) {
	seeds := [][]byte{
		{opTestUnitReady, 0, 0, 0, 0, 0},
		inquiryCDB(false, 0, 96),
		inquiryCDB(true, vpdDeviceID, 255),
		cdb10(opRead10, 0, 0, 8),
		cdb16(opRead16, 0x08, 1<<64-1, 2),
		cdb10(opWrite10, 0x08, 1, 1),
		cdb16(opWriteSame16, 0x09, 0, 0),
		cdb10(opWriteSame10, 0x08, 0, 0xffff),
		cdb10(opUnmap, 0, 0, 24),
		cawCDB(0, 255),
		cdb16(opServiceActionIn16, saReadCapacity16, 0, 32),
		cdb16(opServiceActionIn16, saGetLBAStatus, 0, 0xffffffff),
		rsocCDB(true, rsocAll, 0, 0, 0xffffffff),
		reportLUNsCDB(0, 0xffffffff),
		modeSense10(true, false, 0, pageAllPages, 0xffff),
		modeSelect6([]byte{0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 2, 0}),
		prOutCDB(prOutPreemptAbort, prExclusiveAccess),
		{opPRIn, 3, 0, 0, 0, 0, 0, 0xff, 0xff, 0},
		cdb16(opVerify16, 0x06, 0, 0xffffffff),
		cdb16(opOrWrite16, 0, 0, 1),
		{opStartStopUnit, 0, 0, 0, 0, 0},
		{opRequestSense, 1, 0, 0, 255, 0},
		writeAtomicCDB(0x18, 0, 2),
		writeAtomicCDB(0, 1<<64-1, 0xffff),
		rcrCDB(saCopyOpParams, 0, 0xffffffff),
		rcrCDB(saCopyStatus, 1, 12),
		rcrCDB(saCopyFailedSeg, 1, 0),
	}
	for _, s := range seeds {
		f.Add(s, []byte{0, 0, 0, 8, 0, 0, 0, 0}, uint16(512), false)
	}
	f.Add([]byte{opUnmap, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0},
		unmapList([2]uint64{0, 1}, [2]uint64{1<<64 - 1, 1}), uint16(0), true)
	f.Add(prOutCDB(prOutRegister, 0), prOutParams(0, 7, 0), uint16(0), true)

	lu, err := NewLogicalUnit(newMemDevice(1<<20), LUConfig{Serial: "fuzz", MaxTransferLength: 512})
	if err != nil {
		f.Fatal(err)
	}
	tgt := NewTarget(TargetConfig{Name: "iqn.2026-01.test:fuzz"})
	if err := tgt.AddLU(0, lu); err != nil {
		f.Fatal(err)
	}
	// EXTENDED COPY parameter lists naming the LU (copies within it,
	// one past its end, one with a bad index) and too many descriptors.
	me := cscdFor(lu)
	for _, p := range [][]byte{
		copyParams(1, listIDHold, [][]byte{me}, [][]byte{segB2B(false, 0, 0, 8, 0, 100), segB2B(true, 0, 0, 1, 100, 1)}),
		copyParams(2, listIDNone, [][]byte{me}, [][]byte{segB2B(false, 0, 0, 0xffff, 0, 0)}),
		copyParams(0, listIDNoHold, [][]byte{me, me}, [][]byte{segB2B(false, 1, 2, 1, 0, 0)}),
		copyParams(0, listIDNone, repeatDesc(me, maxCSCDDescs+1), nil),
	} {
		f.Add(xcopyCDB(uint32(len(p))), p, uint16(0), false)
		f.Add(xcopyCDB(0xffffffff), p, uint16(0), false)
	}
	f.Add(writeAtomicCDB(0x08, 1, 3), fill(3*512, 0xa6), uint16(0), false)

	f.Fuzz(func(t *testing.T, cdb, out []byte, inLen uint16, otherLUN bool) {
		cmd := &Command{Nexus: nexusA, CDB: cdb, DataOut: out, DataIn: make([]byte, inLen)}
		if otherLUN {
			cmd.LUN = 5
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		r := tgt.Execute(cmd)
		runtime.ReadMemStats(&after)
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 4<<20 {
			t.Fatalf("command allocated %d bytes", grew)
		}
		if r.N < 0 || r.N > len(cmd.DataIn) || r.Wanted < 0 {
			t.Fatalf("N %d Wanted %d for a Data-In of %d", r.N, r.Wanted, len(cmd.DataIn))
		}
		switch r.Status {
		case StatusGood, StatusReservationConflict:
			if r.Sense != nil {
				t.Fatalf("status %#x with sense data", r.Status)
			}
		case StatusCheckCondition:
			s := r.Sense
			if len(s) < fixedSenseLen || len(s) > maxSenseLen || s[0]&0x7f != 0x70 ||
				int(s[7])+8 != len(s) || r.N != 0 {
				t.Fatalf("CHECK CONDITION: sense %x, N %d", r.Sense, r.N)
			}
		default:
			t.Fatalf("status %#x", r.Status)
		}
		// Leave the LU usable for the next input.
		if lu.stopped.Load() {
			lu.stopped.Store(false)
		}
	})
}
