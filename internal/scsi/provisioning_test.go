package scsi

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/diskless-boot/diskless/internal/disk"
	"golang.org/x/sys/unix"
)

// unmapList builds UNMAP parameter data from (lba, blocks) pairs.
func unmapList(ranges ...[2]uint64) []byte {
	b := make([]byte, 8+16*len(ranges))
	binary.BigEndian.PutUint16(b[0:], uint16(len(b)-2))
	binary.BigEndian.PutUint16(b[2:], uint16(16*len(ranges)))
	for i, r := range ranges {
		binary.BigEndian.PutUint64(b[8+16*i:], r[0])
		binary.BigEndian.PutUint32(b[16+16*i:], uint32(r[1]))
	}
	return b
}

func unmapCDB(plen int) []byte { return cdb10(opUnmap, 0, 0, uint16(plen)) }

func cawCDB(lba uint64, n byte) []byte {
	c := cdb16(opCompareAndWrite, 0, lba, 0)
	c[10], c[11], c[12], c[13] = 0, 0, 0, n
	return c
}

func getLBAStatus(tl *testLU, lba uint64) (mapped bool, n uint32, start uint64) {
	tl.t.Helper()
	c := cdb16(opServiceActionIn16, saGetLBAStatus, lba, 24)
	r := tl.run(nexusA, c, nil, 24)
	expectGood(tl.t, "GET LBA STATUS", r)
	d := tl.lastIn[8:]
	return d[12] == lbaMapped, binary.BigEndian.Uint32(d[8:]), binary.BigEndian.Uint64(d)
}

func TestUnmapMemDevice(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	copy(tl.dev.data, fill(64*512, 0xee))
	tl.dev.mapped[0], tl.dev.mapped[1], tl.dev.mapped[2], tl.dev.mapped[3] = true, true, true, true
	list := unmapList([2]uint64{8, 16}, [2]uint64{0, 0})
	expectGood(t, "UNMAP", tl.run(nexusA, unmapCDB(len(list)), list, 0))
	if !bytes.Equal(tl.dev.data[8*512:24*512], make([]byte, 16*512)) || tl.dev.data[8*512-1] != 0xee {
		t.Fatal("UNMAP zeroed the wrong range")
	}
	if tl.dev.mapped[1] || tl.dev.mapped[2] || !tl.dev.mapped[0] {
		t.Fatalf("allocation after UNMAP: %v", tl.dev.mapped[:4])
	}
	mapped, n, start := getLBAStatus(tl, 8)
	if mapped || n != 16 || start != 8 {
		t.Fatalf("GET LBA STATUS(8) = mapped %v, %d blocks from %d; want deallocated 16 from 8", mapped, n, start)
	}
	mapped, n, start = getLBAStatus(tl, 24)
	if !mapped || n != 8 || start != 24 {
		t.Fatalf("GET LBA STATUS(24) = mapped %v, %d blocks from %d; want mapped 8 from 24", mapped, n, start)
	}
	for _, c := range []cmdCase{
		good("UNMAP with no parameter list", unmapCDB(0), nil, 0, 0, 0),
		good("UNMAP with no descriptors", unmapCDB(8), unmapList(), 0, 8, 0),
		good("UNMAP zero blocks at capacity", unmapCDB(24), unmapList([2]uint64{2048, 0}), 0, 24, 0),
		bad("UNMAP past the end", unmapCDB(24), unmapList([2]uint64{2047, 2}), 0,
			SenseIllegalRequest, ascLBAOutOfRange),
		bad("UNMAP LBA overflow", unmapCDB(24), unmapList([2]uint64{1<<64 - 1, 2}), 0,
			SenseIllegalRequest, ascLBAOutOfRange),
		bad("UNMAP short parameter list", unmapCDB(4), []byte{0, 2, 0, 0}, 0,
			SenseIllegalRequest, ascParamListLengthError),
		badField("UNMAP ANCHOR", cdb10(opUnmap, 0x01, 0, 24), 1, 0),
		bad("GET LBA STATUS at capacity", cdb16(opServiceActionIn16, saGetLBAStatus, 2048, 24), nil, 24,
			SenseIllegalRequest, ascLBAOutOfRange),
		bad("GET LBA STATUS at 2^64-1", cdb16(opServiceActionIn16, saGetLBAStatus, 1<<64-1, 24), nil, 24,
			SenseIllegalRequest, ascLBAOutOfRange),
	} {
		t.Run(c.name, func(t *testing.T) { c.check(t, tl) })
	}
	// Too many blocks in one command.
	var ranges [][2]uint64
	for range maxUnmapBlocks/2048 + 1 {
		ranges = append(ranges, [2]uint64{0, 2048})
	}
	big := unmapList(ranges...)
	expectSense(t, "UNMAP over MAXIMUM UNMAP LBA COUNT", tl.run(nexusA, unmapCDB(len(big)), big, 0),
		SenseIllegalRequest, ascInvalidFieldInParam)
}

// TestUnmapPunchesFileHoles runs UNMAP and WRITE SAME with UNMAP on a real
// image file: the blocks must leave the file system.
func TestUnmapPunchesFileHoles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lu.img")
	if err := os.WriteFile(path, bytes.Repeat([]byte{0x77}, 8<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := disk.OpenFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	tl := newTestLU(t, f, LUConfig{})
	allocated := func() int64 {
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		return st.Blocks * 512
	}
	before := allocated()
	list := unmapList([2]uint64{2048, 4096}) // 2 MiB at 1 MiB
	expectGood(t, "UNMAP", tl.run(nexusA, unmapCDB(len(list)), list, 0))
	if got := before - allocated(); got < 2<<20 {
		t.Fatalf("UNMAP released %d bytes, want %d", got, 2<<20)
	}
	mapped, n, _ := getLBAStatus(tl, 2048)
	if mapped || n != 4096 {
		t.Fatalf("GET LBA STATUS after UNMAP: mapped %v, %d blocks", mapped, n)
	}
	before = allocated()
	// WRITE SAME(16) UNMAP with NDOB: 1 MiB at 4 MiB.
	expectGood(t, "WRITE SAME(16) UNMAP NDOB", tl.run(nexusA, cdb16(opWriteSame16, 0x09, 8192, 2048), nil, 0))
	if got := before - allocated(); got < 1<<20 {
		t.Fatalf("WRITE SAME UNMAP released %d bytes, want %d", got, 1<<20)
	}
	r := tl.run(nexusA, cdb16(opRead16, 0, 8192, 2048), nil, 1<<20)
	expectGood(t, "READ after WRITE SAME UNMAP", r)
	if !bytes.Equal(tl.lastIn, make([]byte, 1<<20)) {
		t.Fatal("deallocated blocks do not read as zeros (LBPRZ)")
	}
}

func TestWriteSame(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	pattern := bytes.Repeat([]byte("pattern!"), 64)
	expectGood(t, "WRITE SAME(10)", tl.run(nexusA, cdb10(opWriteSame10, 0, 10, 5), pattern, 0))
	for i := 10; i < 15; i++ {
		if !bytes.Equal(tl.dev.data[i*512:(i+1)*512], pattern) {
			t.Fatalf("block %d does not hold the pattern", i)
		}
	}
	if tl.dev.data[15*512] != 0 || tl.dev.data[10*512-1] != 0 {
		t.Fatal("WRITE SAME wrote outside its range")
	}
	// Zero blocks: up to the end of the medium.
	expectGood(t, "WRITE SAME(16) to the end", tl.run(nexusA, cdb16(opWriteSame16, 0, 2040, 0), pattern, 0))
	if !bytes.Equal(tl.dev.data[2047*512:], pattern) {
		t.Fatal("WRITE SAME with zero blocks did not reach the last block")
	}
	for _, c := range []cmdCase{
		badField("WRITE SAME(10) ANCHOR", cdb10(opWriteSame10, 0x18, 0, 1), 1, 4),
		badField("WRITE SAME(16) reserved bit", cdb16(opWriteSame16, 0x02, 0, 1), 1, 1),
		bad("WRITE SAME(10) past the end", cdb10(opWriteSame10, 0, 2048, 1), pattern, 0,
			SenseIllegalRequest, ascLBAOutOfRange),
		bad("WRITE SAME(10) zero blocks past the end", cdb10(opWriteSame10, 0, 2049, 0), pattern, 0,
			SenseIllegalRequest, ascLBAOutOfRange),
		bad("WRITE SAME(10) two blocks of Data-Out", cdb10(opWriteSame10, 0, 0, 1), fill(1024, 1), 0,
			SenseIllegalRequest, ascInvalidFieldInCmdIU),
		bad("WRITE SAME(10) half a block", cdb10(opWriteSame10, 0, 0, 1), fill(256, 1), 0,
			SenseIllegalRequest, ascInvalidFieldInCmdIU),
	} {
		t.Run(c.name, func(t *testing.T) { c.check(t, tl) })
	}
	// WRITE SAME(16) over MAXIMUM WRITE SAME LENGTH.
	big := newTestLU(t, newMemDevice(64<<20), LUConfig{})
	badField("WRITE SAME(16) over the limit", cdb16(opWriteSame16, 0, 0, maxWriteSameBlocks+1), 10, -1).check(t, big)

	// A fully provisioned device: UNMAP bits refused, UNMAP unsupported.
	full := newTestLU(t, plainDevice{newMemDevice(1 << 20)}, LUConfig{})
	badField("WRITE SAME UNMAP without thin provisioning", cdb10(opWriteSame10, 0x08, 0, 1), 1, 3).check(t, full)
	bad("UNMAP without thin provisioning", unmapCDB(24), unmapList([2]uint64{0, 1}), 0,
		SenseIllegalRequest, ascInvalidOpcode).check(t, full)
	badField("GET LBA STATUS without allocation reporting",
		cdb16(opServiceActionIn16, saGetLBAStatus, 0, 24), 1, 4).check(t, full)
}

func TestCompareAndWrite(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	copy(tl.dev.data[512:], fill(1024, 'A'))
	buf := append(fill(1024, 'A'), fill(1024, 'B')...)
	expectGood(t, "COMPARE AND WRITE", tl.run(nexusA, cawCDB(1, 2), buf, 0))
	if !bytes.Equal(tl.dev.data[512:1536], fill(1024, 'B')) {
		t.Fatal("COMPARE AND WRITE did not write")
	}
	buf = append(fill(1024, 'B'), fill(1024, 'C')...)
	buf[1000] = 'x'
	r := tl.run(nexusA, cawCDB(1, 2), buf, 0)
	expectSense(t, "COMPARE AND WRITE miscompare", r, SenseMiscompare, ascMiscompareDuringVerify)
	if binary.BigEndian.Uint32(r.Sense[3:]) != 1000 || r.Sense[0]&0x80 == 0 {
		t.Errorf("INFORMATION %d, want offset 1000", binary.BigEndian.Uint32(r.Sense[3:]))
	}
	if !bytes.Equal(tl.dev.data[512:1536], fill(1024, 'B')) {
		t.Fatal("a miscompare wrote")
	}
	for _, c := range []cmdCase{
		good("COMPARE AND WRITE zero blocks", cawCDB(0, 0), nil, 0, 0, 0),
		badField("COMPARE AND WRITE zero blocks with data", cawCDB(0, 0), 13, -1),
		bad("COMPARE AND WRITE past the end", cawCDB(2047, 2), fill(2048, 0), 0,
			SenseIllegalRequest, ascLBAOutOfRange),
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "COMPARE AND WRITE zero blocks with data" {
				c.out = fill(1024, 0)
			}
			c.check(t, tl)
		})
	}
	r = tl.run(nexusA, cawCDB(0, 1), fill(1536, 0), 0)
	expectSense(t, "COMPARE AND WRITE odd Data-Out", r, SenseIllegalRequest, ascInvalidFieldInCDB)
}

func TestSyncCacheAndPrefetch(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	expectGood(t, "SYNCHRONIZE CACHE(16)", tl.run(nexusA, cdb16(opSyncCache16, 0x02, 0, 2048), nil, 0))
	expectSense(t, "SYNCHRONIZE CACHE(16) past the end", tl.run(nexusA, cdb16(opSyncCache16, 0, 2049, 0), nil, 0),
		SenseIllegalRequest, ascLBAOutOfRange)
	expectGood(t, "PRE-FETCH(10)", tl.run(nexusA, cdb10(opPrefetch10, 0x02, 0, 16), nil, 0))
	expectGood(t, "PRE-FETCH(16) to the end", tl.run(nexusA, cdb16(opPrefetch16, 0, 100, 0), nil, 0))
	if tl.dev.prefetch.Load() != 2 {
		t.Fatalf("%d prefetches, want 2", tl.dev.prefetch.Load())
	}
	full := newTestLU(t, plainDevice{newMemDevice(1 << 20)}, LUConfig{})
	expectSense(t, "PRE-FETCH without a Prefetcher", full.run(nexusA, cdb10(opPrefetch10, 0, 0, 1), nil, 0),
		SenseIllegalRequest, ascInvalidOpcode)
}
