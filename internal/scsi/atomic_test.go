package scsi

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

func writeAtomicCDB(b1 byte, lba uint64, n uint16) []byte {
	c := make([]byte, 16)
	c[0], c[1] = opWriteAtomic16, b1
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint16(c[12:], n)
	return c
}

func TestWriteAtomicGolden(t *testing.T) {
	const blocks = 2048 // 1 MiB of 512-byte blocks
	tl := newMemLU(t, LUConfig{})
	if got := tl.lu.maxAtomicBlocks(); got != blocks {
		t.Fatalf("MAXIMUM ATOMIC TRANSFER LENGTH %d blocks, want %d", got, blocks)
	}
	withBoundary := writeAtomicCDB(0, 0, 1)
	binary.BigEndian.PutUint16(withBoundary[10:], 8)
	cases := []cmdCase{
		good("one block", writeAtomicCDB(0, 0, 1), fill(512, 0xa6), 0, 512, 0),
		good("DPO FUA", writeAtomicCDB(0x18, 8, 2), fill(1024, 0xa6), 0, 1024, 0),
		good("zero blocks", writeAtomicCDB(0, 0, 0), nil, 0, 0, 0),
		good("zero blocks at capacity", writeAtomicCDB(0, blocks, 0), nil, 0, 0, 0),
		good("last block", writeAtomicCDB(0, blocks-1, 1), fill(512, 1), 0, 512, 0),
		good("surplus Data-Out ignored", writeAtomicCDB(0, 0, 1), fill(1024, 2), 0, 512, 0),
		bad("zero blocks past capacity", writeAtomicCDB(0, blocks+1, 0), nil, 0,
			SenseIllegalRequest, ascLBAOutOfRange),
		bad("crossing the end", writeAtomicCDB(0, blocks-1, 2), fill(1024, 0), 0,
			SenseIllegalRequest, ascLBAOutOfRange),
		bad("LBA 2^63", writeAtomicCDB(0, 1<<63, 1), fill(512, 0), 0, SenseIllegalRequest, ascLBAOutOfRange),
		bad("LBA+n wraps", writeAtomicCDB(0, 1<<64-1, 2), fill(1024, 0), 0, SenseIllegalRequest, ascLBAOutOfRange),
		// A partial Data-Out is refused: the write is all or nothing.
		bad("short Data-Out", writeAtomicCDB(0, 16, 2), fill(512, 3), 0, SenseIllegalRequest, ascInvalidFieldInCmdIU),
		badField("WRPROTECT", writeAtomicCDB(0x20, 0, 1), 1, 5),
		badField("FUA_NV is not a field of WRITE ATOMIC", writeAtomicCDB(0x02, 0, 1), 1, 1),
		badField("ATOMIC BOUNDARY without boundary support", withBoundary, 11, 3),
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.check(t, tl) })
	}
	// The short Data-Out wrote nothing.
	if got := tl.dev.data[16*512 : 18*512]; !bytes.Equal(got, make([]byte, 1024)) {
		t.Error("refused WRITE ATOMIC changed the medium")
	}
	if got := tl.dev.data[8*512 : 10*512]; !bytes.Equal(got, fill(1024, 0xa6)) {
		t.Error("WRITE ATOMIC data not on the medium")
	}

	// Above MAXIMUM ATOMIC TRANSFER LENGTH: INVALID FIELD IN CDB at the
	// TRANSFER LENGTH, before any Data-Out is looked at.
	small := newTestLU(t, newMemDevice(4<<20), LUConfig{})
	c := badField("above maximum", writeAtomicCDB(0, 0, uint16(small.lu.maxAtomicBlocks()+1)), 12, -1)
	c.check(t, small)

	ro := newMemLU(t, LUConfig{ReadOnly: true})
	bad("read-only", writeAtomicCDB(0, 0, 1), fill(512, 0), 0, SenseDataProtect, ascWriteProtected).check(t, ro)
}

// TestWriteAtomicFUA checks that FUA (and WCE=0) make the write durable.
func TestWriteAtomicFUA(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	before := tl.dev.flushes.Load()
	expectGood(t, "no FUA", tl.run(nexusA, writeAtomicCDB(0, 0, 1), fill(512, 1), 0))
	if tl.dev.flushes.Load() != before {
		t.Fatal("WRITE ATOMIC without FUA flushed with the write cache on")
	}
	expectGood(t, "FUA", tl.run(nexusA, writeAtomicCDB(0x08, 0, 1), fill(512, 1), 0))
	if tl.dev.flushes.Load() != before+1 {
		t.Fatal("WRITE ATOMIC with FUA did not flush")
	}
}

// tornDevice writes one 512-byte block per call to the memDevice below,
// yielding in between, as a back end whose large writes are not atomic.
type tornDevice struct{ *memDevice }

func (d tornDevice) WriteAt(p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) {
		k := min(512, len(p)-done)
		if _, err := d.memDevice.WriteAt(p[done:done+k], off+int64(done)); err != nil {
			return done, err
		}
		done += k
		runtime.Gosched()
	}
	return done, nil
}

// TestWriteAtomicIndivisible writes alternating patterns with WRITE
// ATOMIC through a device whose writes tear, while other I_T nexuses
// read the range: every read must see one pattern whole.
func TestWriteAtomicIndivisible(t *testing.T) {
	tl := newTestLU(t, tornDevice{newMemDevice(1 << 20)}, LUConfig{})
	const n = 64 // blocks
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for r := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in := make([]byte, n*512)
			nx := Nexus{InitiatorName: fmt.Sprintf("iqn.2026-01.test:r%d", r), RelTargetPort: 1}
			for !stop.Load() {
				res := retryUA(func() Result { return exec(tl.tgt, nx, cdb16(opRead16, 0, 0, n), nil, in) })
				if res.Status != StatusGood {
					errs <- fmt.Errorf("READ: status %#x", res.Status)
					return
				}
				if !bytes.Equal(in, fill(len(in), in[0])) {
					errs <- fmt.Errorf("READ saw a torn WRITE ATOMIC")
					return
				}
			}
		}()
	}
	for i := range 200 {
		r := tl.run(nexusA, writeAtomicCDB(0, 0, n), fill(n*512, byte(i)), 0)
		if r.Status != StatusGood {
			stop.Store(true)
			t.Fatalf("WRITE ATOMIC: status %#x", r.Status)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestBlockLimitsAtomic(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	expectGood(t, "INQUIRY B0h", tl.run(nexusA, inquiryCDB(true, vpdBlockLimits, 255), nil, 255))
	p := tl.lastIn
	if got := binary.BigEndian.Uint32(p[44:]); got != 2048 {
		t.Errorf("MAXIMUM ATOMIC TRANSFER LENGTH %d, want 2048", got)
	}
	if mx := binary.BigEndian.Uint32(p[8:]); binary.BigEndian.Uint32(p[44:]) > mx {
		t.Errorf("MAXIMUM ATOMIC TRANSFER LENGTH above MAXIMUM TRANSFER LENGTH %d", mx)
	}
	// Alignment, granularity, boundaries: none.
	if !bytes.Equal(p[48:64], make([]byte, 16)) {
		t.Errorf("atomic alignment/granularity/boundary fields %x, want zeros", p[48:64])
	}
}
