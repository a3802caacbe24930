package scsi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/diskless-boot/diskless/internal/disk"
)

// cmdCase is one golden CDB: what to send and what must come back.
type cmdCase struct {
	name   string
	cdb    []byte
	out    []byte
	inLen  int
	status Status
	key    SenseKey
	code   uint16
	wanted int // -1: not checked
	n      int // -1: not checked
	field  int // sense-key-specific field pointer, -1: not checked
	bit    int // bit pointer when field is checked, -1: none
}

func (c cmdCase) check(t *testing.T, tl *testLU) Result {
	t.Helper()
	r := tl.run(nexusA, c.cdb, c.out, c.inLen)
	if r.Status != c.status {
		k, code := senseOf(r)
		t.Fatalf("status %#x (sense %#x/%#04x), want %#x", r.Status, k, code, c.status)
	}
	if c.status == StatusCheckCondition {
		if k, code := senseOf(r); k != c.key || code != c.code {
			t.Fatalf("sense %#x/%#04x, want %#x/%#04x", k, code, c.key, c.code)
		}
	}
	if c.wanted >= 0 && r.Wanted != c.wanted {
		t.Errorf("Wanted %d, want %d", r.Wanted, c.wanted)
	}
	if c.n >= 0 && r.N != c.n {
		t.Errorf("N %d, want %d", r.N, c.n)
	}
	if c.field >= 0 {
		field, bit, _, ok := fieldPointer(r)
		if !ok || field != c.field || bit != c.bit {
			t.Errorf("field pointer %d bit %d (valid %v), want %d bit %d", field, bit, ok, c.field, c.bit)
		}
	}
	return r
}

func good(name string, cdb, out []byte, inLen, wanted, n int) cmdCase {
	return cmdCase{name: name, cdb: cdb, out: out, inLen: inLen, status: StatusGood,
		wanted: wanted, n: n, field: -1}
}

func bad(name string, cdb, out []byte, inLen int, key SenseKey, code uint16) cmdCase {
	return cmdCase{name: name, cdb: cdb, out: out, inLen: inLen, status: StatusCheckCondition,
		key: key, code: code, wanted: -1, n: -1, field: -1}
}

func badField(name string, cdb []byte, field, bit int) cmdCase {
	c := bad(name, cdb, nil, 0, SenseIllegalRequest, ascInvalidFieldInCDB)
	c.field, c.bit = field, bit
	return c
}

func TestBlockCommandsGolden(t *testing.T) {
	const blocks = 2048 // 1 MiB of 512-byte blocks
	block := fill(512, 0xa5)
	maxLBA := uint64(1<<64 - 1)
	cases := []cmdCase{
		good("READ(10) one block", cdb10(opRead10, 0, 0, 1), nil, 512, 512, 512),
		good("READ(10) last block", cdb10(opRead10, 0, blocks-1, 1), nil, 512, 512, 512),
		good("READ(10) zero blocks at capacity", cdb10(opRead10, 0, blocks, 0), nil, 0, 0, 0),
		bad("READ(10) zero blocks past capacity", cdb10(opRead10, 0, blocks+1, 0), nil, 0,
			SenseIllegalRequest, ascLBAOutOfRange),
		bad("READ(10) crossing the end", cdb10(opRead10, 0, blocks-1, 2), nil, 1024,
			SenseIllegalRequest, ascLBAOutOfRange),
		bad("READ(16) LBA+n overflows", cdb16(opRead16, 0, maxLBA, 2), nil, 1024,
			SenseIllegalRequest, ascLBAOutOfRange),
		bad("READ(16) LBA 2^63", cdb16(opRead16, 0, 1<<63, 1), nil, 512,
			SenseIllegalRequest, ascLBAOutOfRange),
		good("READ(6) length 0 means 256 blocks", []byte{opRead6, 0, 0, 0, 0, 0}, nil, 256*512, 256*512, 256*512),
		good("READ(12) two blocks", cdb12(opRead12, 0, 10, 2), nil, 1024, 1024, 1024),
		good("READ(16) DPO FUA FUA_NV", cdb16(opRead16, 0x1a, 0, 1), nil, 512, 512, 512),
		// Residuals (RFC 7143 11.4.5.1): Data-In shorter or longer.
		good("READ(10) into 200 bytes", cdb10(opRead10, 0, 0, 1), nil, 200, 512, 200),
		good("READ(10) into 10000 bytes", cdb10(opRead10, 0, 0, 1), nil, 10000, 512, 512),
		good("READ(10) without Data-In", cdb10(opRead10, 0, 0, 1), nil, 0, 512, 0),
		badField("READ(10) RDPROTECT", cdb10(opRead10, 0x20, 0, 1), 1, 5),
		badField("READ(10) RARC", cdb10(opRead10, 0x04, 0, 1), 1, 2),
		badField("READ(10) NACA", append(cdb10(opRead10, 0, 0, 1)[:9], 0x04), 9, 2),
		badField("READ(12) over MAXIMUM TRANSFER LENGTH", cdb12(opRead12, 0, 0, 257), 6, -1),
		badField("READ(16) restricted bit in byte 14", append(cdb16(opRead16, 0, 0, 1)[:14], 0x80, 0), 14, 7),
		good("WRITE(10) one block", cdb10(opWrite10, 0, 3, 1), block, 0, 512, 0),
		good("WRITE(6)", []byte{opWrite6, 0, 0, 4, 1, 0}, block, 0, 512, 0),
		good("WRITE(16) FUA", cdb16(opWrite16, 0x08, 5, 1), block, 0, 512, 0),
		good("WRITE(10) without Data-Out", cdb10(opWrite10, 0, 6, 1), nil, 0, 512, 0),
		{name: "WRITE(10) with a partial block", cdb: cdb10(opWrite10, 0, 7, 1), out: block[:200],
			status: StatusCheckCondition, key: SenseIllegalRequest, code: ascInvalidFieldInCmdIU,
			wanted: 512, n: 0, field: -1},
		badField("WRITE(10) WRPROTECT", cdb10(opWrite10, 0x40, 0, 1), 1, 6),
		bad("WRITE(16) past the end", cdb16(opWrite16, 0, blocks, 1), block, 0,
			SenseIllegalRequest, ascLBAOutOfRange),
		good("VERIFY(10) BYTCHK=0", cdb10(opVerify10, 0x10, 0, 8), nil, 0, 0, 0),
		badField("VERIFY(10) BYTCHK=10b", cdb10(opVerify10, 0x04, 0, 1), 1, 2),
		badField("VERIFY(16) VRPROTECT", cdb16(opVerify16, 0x20, 0, 1), 1, 5),
		bad("unknown operation code", []byte{0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil, 0,
			SenseIllegalRequest, ascInvalidOpcode),
		badField("unknown SERVICE ACTION IN(16) action", cdb16(opServiceActionIn16, 0x1f, 0, 0), 1, 4),
		badField("CDB shorter than its command", []byte{opRead10, 0, 0}, 3, -1),
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tl := newMemLU(t, LUConfig{MaxTransferLength: 256})
			copy(tl.dev.data, bytes.Repeat([]byte("0123456789abcdef"), len(tl.dev.data)/16))
			r := c.check(t, tl)
			if c.status == StatusGood && c.n > 0 {
				lba, _ := lbaAndLength(c.cdb)
				if !bytes.Equal(tl.lastIn, tl.dev.data[lba*512:lba*512+uint64(c.n)]) {
					t.Error("Data-In differs from the medium")
				}
			}
			_ = r
		})
	}
}

func TestWriteResiduals(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	copy(tl.dev.data[:1024], fill(1024, 'a'))
	// Transfer length 2, one block of Data-Out: that block is written,
	// the second is left alone, the residual says what was missing.
	r := tl.run(nexusA, cdb10(opWrite10, 0, 0, 2), fill(512, 'b'), 0)
	expectGood(t, "WRITE(10) short Data-Out", r)
	if r.Wanted != 1024 {
		t.Errorf("Wanted %d, want 1024", r.Wanted)
	}
	if !bytes.Equal(tl.dev.data[:512], fill(512, 'b')) || !bytes.Equal(tl.dev.data[512:1024], fill(512, 'a')) {
		t.Error("wrong blocks written")
	}
	// Transfer length 1, two blocks of Data-Out: only one block written.
	r = tl.run(nexusA, cdb10(opWrite10, 0, 0, 1), fill(1024, 'c'), 0)
	expectGood(t, "WRITE(10) long Data-Out", r)
	if r.Wanted != 512 || tl.dev.data[512] != 'a' || tl.dev.data[0] != 'c' {
		t.Errorf("Wanted %d, block 1 %q: surplus Data-Out was written", r.Wanted, tl.dev.data[512])
	}
	// A partial block is refused before anything is written.
	r = tl.run(nexusA, cdb10(opWrite10, 0, 0, 1), fill(200, 'd'), 0)
	expectSense(t, "WRITE(10) partial block", r, SenseIllegalRequest, ascInvalidFieldInCmdIU)
	if tl.dev.data[0] != 'c' {
		t.Error("a refused write changed the medium")
	}
}

func TestFUAAndWriteCache(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	block := fill(512, 1)
	tl.run(nexusA, cdb10(opWrite10, 0, 0, 1), block, 0)
	if n := tl.dev.flushes.Load(); n != 0 {
		t.Fatalf("WCE=1 write flushed %d times", n)
	}
	expectGood(t, "WRITE(10) FUA", tl.run(nexusA, cdb10(opWrite10, 0x08, 0, 1), block, 0))
	if n := tl.dev.flushes.Load(); n != 1 {
		t.Fatalf("FUA write: %d flushes, want 1", n)
	}
	expectGood(t, "WRITE(12) FUA_NV", tl.run(nexusA, cdb12(opWrite12, 0x02, 0, 1), block, 0))
	if n := tl.dev.flushes.Load(); n != 2 {
		t.Fatalf("FUA_NV write: %d flushes, want 2", n)
	}
	expectGood(t, "SYNCHRONIZE CACHE(10)", tl.run(nexusA, cdb10(opSyncCache10, 0x02, 0, 0), nil, 0))
	if n := tl.dev.flushes.Load(); n != 3 {
		t.Fatalf("SYNCHRONIZE CACHE: %d flushes, want 3", n)
	}
	// Read with FUA makes cached writes durable first.
	expectGood(t, "READ(10) FUA", tl.run(nexusA, cdb10(opRead10, 0x08, 0, 1), nil, 512))
	if n := tl.dev.flushes.Load(); n != 4 {
		t.Fatalf("FUA read: %d flushes, want 4", n)
	}

	wt := newMemLU(t, LUConfig{WriteCacheDisabled: true})
	for i := range 3 {
		expectGood(t, "write-through WRITE", wt.run(nexusA, cdb10(opWrite10, 0, uint32(i), 1), block, 0))
	}
	if n := wt.dev.flushes.Load(); n != 3 {
		t.Fatalf("WCE=0: %d flushes for 3 writes, want 3", n)
	}
}

func TestVerify(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	data := bytes.Repeat([]byte("verify me please!"), 100)[:1024]
	copy(tl.dev.data[512:], data)
	expectGood(t, "VERIFY(10) BYTCHK=1 equal", tl.run(nexusA, cdb10(opVerify10, 0x02, 1, 2), data, 0))
	bent := append([]byte(nil), data...)
	bent[700] ^= 'X'
	r := tl.run(nexusA, cdb10(opVerify10, 0x02, 1, 2), bent, 0)
	expectSense(t, "VERIFY(10) miscompare", r, SenseMiscompare, ascMiscompareDuringVerify)
	if r.Sense[0]&0x80 == 0 || binary.BigEndian.Uint32(r.Sense[3:]) != 700 {
		t.Errorf("INFORMATION %d (valid %v), want offset 700", binary.BigEndian.Uint32(r.Sense[3:]), r.Sense[0]&0x80 != 0)
	}
	// BYTCHK=11b: every block compared with the one sent.
	copy(tl.dev.data[4096:], bytes.Repeat(fill(512, 7), 3))
	expectGood(t, "VERIFY(16) BYTCHK=11b", tl.run(nexusA, cdb16(opVerify16, 0x06, 8, 3), fill(512, 7), 0))
	r = tl.run(nexusA, cdb16(opVerify16, 0x06, 8, 4), fill(512, 7), 0)
	expectSense(t, "VERIFY(16) BYTCHK=11b miscompare", r, SenseMiscompare, ascMiscompareDuringVerify)
	if got := binary.BigEndian.Uint32(r.Sense[3:]); got != 3*512 {
		t.Errorf("INFORMATION %d, want %d", got, 3*512)
	}
}

func TestWriteAndVerify(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	data := fill(1024, 0x3c)
	r := tl.run(nexusA, cdb10(opWriteVerify10, 0x02, 4, 2), data, 0)
	expectGood(t, "WRITE AND VERIFY(10)", r)
	if !bytes.Equal(tl.dev.data[2048:3072], data) {
		t.Fatal("data not written")
	}
	if tl.dev.flushes.Load() != 1 {
		t.Fatalf("WRITE AND VERIFY flushed %d times, want 1", tl.dev.flushes.Load())
	}
	expectGood(t, "WRITE AND VERIFY(16) zero blocks", tl.run(nexusA, cdb16(opWriteVerify16, 0x02, 0, 0), nil, 0))
}

func TestDiskErrorsBecomeSense(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	tl.dev.writeErr = fmt.Errorf("backing store: %w", disk.ErrNoSpace)
	expectSense(t, "WRITE on a full backing store", tl.run(nexusA, cdb10(opWrite10, 0, 0, 1), fill(512, 1), 0),
		SenseDataProtect, ascSpaceAllocFailedWP)
	tl.dev.writeErr = errors.New("EIO")
	expectSense(t, "WRITE with EIO", tl.run(nexusA, cdb10(opWrite10, 0, 0, 1), fill(512, 1), 0),
		SenseMediumError, ascWriteError)
	tl.dev.readErr = errors.New("EIO")
	r := tl.run(nexusA, cdb10(opRead10, 0, 42, 1), nil, 512)
	expectSense(t, "READ with EIO", r, SenseMediumError, ascUnrecoveredReadError)
	if r.N != 0 || binary.BigEndian.Uint32(r.Sense[3:]) != 42 {
		t.Errorf("N %d INFORMATION %d, want 0 and LBA 42", r.N, binary.BigEndian.Uint32(r.Sense[3:]))
	}
}

// TestFailedDeviceIsWriteProtected: the flush that fails is a MEDIUM
// ERROR, WRITE ERROR; from then on the device reports ErrDeviceFailed and
// writes and SYNCHRONIZE CACHE become DATA PROTECT, WRITE PROTECTED, so an
// initiator never gets GOOD for a cache sync over lost writes. Reads work.
func TestFailedDeviceIsWriteProtected(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	syncCache := cdb10(opSyncCache10, 0, 0, 0)
	tl.dev.flushErr = errors.New("fdatasync: EIO")
	expectSense(t, "SYNCHRONIZE CACHE whose flush fails", tl.run(nexusA, syncCache, nil, 0),
		SenseMediumError, ascWriteError)
	failed := fmt.Errorf("overlay host1: %w", disk.ErrDeviceFailed)
	tl.dev.flushErr, tl.dev.writeErr = failed, failed
	expectSense(t, "SYNCHRONIZE CACHE after a failed flush", tl.run(nexusA, syncCache, nil, 0),
		SenseDataProtect, ascWriteProtected)
	expectSense(t, "WRITE after a failed flush", tl.run(nexusA, cdb10(opWrite10, 0, 0, 1), fill(512, 1), 0),
		SenseDataProtect, ascWriteProtected)
	expectSense(t, "WRITE FUA after a failed flush", tl.run(nexusA, cdb10(opWrite10, 0x08, 0, 1), fill(512, 1), 0),
		SenseDataProtect, ascWriteProtected)
	expectGood(t, "READ after a failed flush", tl.run(nexusA, cdb10(opRead10, 0, 0, 1), nil, 512))
}

func TestReadOnlyLU(t *testing.T) {
	tl := newMemLU(t, LUConfig{ReadOnly: true})
	block := fill(512, 1)
	for _, c := range []struct {
		name string
		cdb  []byte
		out  []byte
	}{
		{"WRITE(10)", cdb10(opWrite10, 0, 0, 1), block},
		{"WRITE AND VERIFY(12)", cdb12(opWriteVerify12, 0x02, 0, 1), block},
		{"WRITE SAME(10) UNMAP without data", cdb10(opWriteSame10, 0x08, 0, 1), nil},
		{"UNMAP", cdb10(opUnmap, 0, 0, 24), unmapList([2]uint64{0, 1})},
		{"COMPARE AND WRITE", cawCDB(0, 1), fill(1024, 0)},
		{"ORWRITE(16)", cdb16(opOrWrite16, 0, 0, 1), block},
	} {
		expectSense(t, c.name, tl.run(nexusA, c.cdb, c.out, 0), SenseDataProtect, ascWriteProtected)
	}
	expectGood(t, "READ(10)", tl.run(nexusA, cdb10(opRead10, 0, 0, 1), nil, 512))
	r := tl.run(nexusA, []byte{opModeSense6, 0, pageAllPages, 0, 255, 0}, nil, 255)
	if tl.lastIn[2]&0x80 == 0 {
		t.Errorf("MODE SENSE WP bit clear on a read-only LU (%v)", r.Status)
	}
}

func TestOrWrite(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	copy(tl.dev.data, fill(1024, 0xa5))
	expectGood(t, "ORWRITE(16)", tl.run(nexusA, cdb16(opOrWrite16, 0, 0, 2), fill(1024, 0x5a), 0))
	if !bytes.Equal(tl.dev.data[:1024], fill(1024, 0xff)) || tl.dev.data[1024] != 0 {
		t.Fatal("ORWRITE did not OR exactly the two blocks")
	}
	badField("ORWRITE ORPROTECT", cdb16(opOrWrite16, 0x20, 0, 1), 1, 5).check(t, tl)
}
