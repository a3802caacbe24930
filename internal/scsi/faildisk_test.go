package scsi

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/diskless-boot/diskless/internal/disk"
	"github.com/diskless-boot/diskless/internal/testutil/faildev"
)

// Tests on storage that really fails (internal/testutil/faildev): they
// need root and skip with the reason without it, or without the kernel
// feature a device needs.

const (
	chunk       = 64 << 10 // bytes per WRITE in these tests
	chunkBlocks = chunk / 512
)

func writeCDB(lba uint64) []byte { return cdb16(opWrite16, 0, lba, chunkBlocks) }

func readCDB(lba uint64) []byte { return cdb16(opRead16, 0, lba, chunkBlocks) }

var syncCDB = cdb10(opSyncCache10, 0, 0, 0)

// newFile makes a sparse file of size bytes and opens it as a disk
// closed at cleanup.
func newFile(t *testing.T, path string, size int64) *disk.File {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	return openFile(t, path, false)
}

func openFile(t *testing.T, path string, ro bool) *disk.File {
	t.Helper()
	f, err := disk.OpenFileWith(path, disk.FileOptions{ReadOnly: ro, Name: "pc1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// newOverlay makes a base image of size bytes of 0x77 outside dir and an
// empty top layer in dir, and opens the overlay.
func newOverlay(t *testing.T, dir string, size int64) (*disk.Overlay, func() *disk.Overlay) {
	t.Helper()
	basePath := filepath.Join(t.TempDir(), "base.img")
	if err := os.WriteFile(basePath, bytes.Repeat([]byte{0x77}, int(size)), 0o600); err != nil {
		t.Fatal(err)
	}
	base := openFile(t, basePath, true)
	top := filepath.Join(dir, "top")
	if err := disk.CreateLayer(top, disk.LayerConfig{Size: size, ID: "top", BaseID: "base@1"}); err != nil {
		t.Fatal(err)
	}
	open := func() *disk.Overlay {
		o, err := disk.OpenOverlay(base, nil, top, disk.OverlayOptions{Name: "pc2"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { o.Close() })
		return o
	}
	return open(), open
}

// image is what a disk must read: its bytes as last written with GOOD.
type image []byte

func (m image) write(lba uint64, b []byte) { copy(m[lba*512:], b) }

func (m image) check(t *testing.T, what string, tl *testLU) {
	t.Helper()
	for lba := uint64(0); lba*512 < uint64(len(m)); lba += chunkBlocks {
		r := tl.run(nexusA, readCDB(lba), nil, chunk)
		expectGood(t, what+": READ", r)
		if !bytes.Equal(tl.lastIn, m[lba*512:(lba+chunkBlocks)*512]) {
			t.Fatalf("%s: LBA %d reads other data than was written", what, lba)
		}
	}
}

// A small file system (tmpfs, or a loop-mounted ext4) holds a raw disk
// file and an overlay's top layer. The raw disk's writes fill it: the
// write that finds no space answers DATA PROTECT, SPACE ALLOCATION FAILED
// WRITE PROTECT, and so does the overlay's write to a cluster it does not
// own yet, while both stay in service - SYNCHRONIZE CACHE is GOOD (nothing
// was lost: the refused write did not happen) and overwriting what they
// own works. UNMAP on the raw disk frees space for the overlay. The
// overlay closes, reopens on the full file system and reads exactly what
// was written with GOOD; so does the raw disk.
func TestFullFileSystemRefusesWrites(t *testing.T) {
	for _, fs := range []struct {
		name string
		make func(*testing.T) string
	}{
		{"tmpfs", func(t *testing.T) string { return faildev.Tmpfs(t, 3<<20) }},
		{"ext4", func(t *testing.T) string { return faildev.Ext4(t, 6<<20) }},
	} {
		t.Run(fs.name, func(t *testing.T) {
			dir := fs.make(t)
			const size = 16 << 20
			raw := newFile(t, filepath.Join(dir, "raw.img"), size)
			rawLU := newTestLU(t, raw, LUConfig{})
			rawImg := make(image, size)
			ov, reopen := newOverlay(t, dir, size)
			ovLU := newTestLU(t, ov, LUConfig{})
			ovImg := image(bytes.Repeat([]byte{0x77}, size))

			// The overlay owns a few clusters before the file system
			// fills up.
			for i := range uint64(4) {
				b := fill(chunk, byte(0x10+i))
				expectGood(t, "overlay WRITE", ovLU.run(nexusA, writeCDB(i*chunkBlocks), b, 0))
				ovImg.write(i*chunkBlocks, b)
			}
			expectGood(t, "overlay SYNCHRONIZE CACHE", ovLU.run(nexusA, syncCDB, nil, 0))

			var lba uint64
			var r Result
			for lba = 0; lba*512 < size; lba += chunkBlocks {
				b := fill(chunk, byte(lba/chunkBlocks)|1)
				if r = rawLU.run(nexusA, writeCDB(lba), b, 0); r.Status != StatusGood {
					break
				}
				rawImg.write(lba, b)
			}
			if lba*512 >= size {
				t.Fatalf("the %s never filled up", fs.name)
			}
			expectSense(t, "raw WRITE into a full file system", r, SenseDataProtect, ascSpaceAllocFailedWP)
			copy(rawImg[lba*512:(lba+chunkBlocks)*512], make([]byte, chunk)) // partly written, maybe: not checked
			full := lba
			expectSense(t, "overlay WRITE of a new cluster", ovLU.run(nexusA, writeCDB(64*chunkBlocks), fill(chunk, 0x55), 0),
				SenseDataProtect, ascSpaceAllocFailedWP)
			expectSense(t, "overlay partial WRITE of a new cluster (copy-up)", ovLU.run(nexusA, cdb10(opWrite10, 0, 70*chunkBlocks+3, 1), fill(512, 0x56), 0),
				SenseDataProtect, ascSpaceAllocFailedWP)
			for _, c := range []struct {
				name string
				tl   *testLU
				dev  disk.Failer
			}{{"raw", rawLU, raw}, {"overlay", ovLU, ov}} {
				expectGood(t, c.name+" SYNCHRONIZE CACHE on a full file system", c.tl.run(nexusA, syncCDB, nil, 0))
				if err := c.dev.Err(); err != nil {
					t.Fatalf("%s: a write refused for want of space failed the device: %v", c.name, err)
				}
			}
			b := fill(chunk, 0x99)
			expectGood(t, "raw overwrite on a full file system", rawLU.run(nexusA, writeCDB(0), b, 0))
			rawImg.write(0, b)
			expectGood(t, "overlay overwrite of an owned cluster", ovLU.run(nexusA, writeCDB(chunkBlocks), b, 0))
			ovImg.write(chunkBlocks, b)

			list := unmapList([2]uint64{chunkBlocks, 4 * chunkBlocks})
			expectGood(t, "raw UNMAP", rawLU.run(nexusA, unmapCDB(len(list)), list, 0))
			copy(rawImg[chunk:5*chunk], make([]byte, 4*chunk))
			b = fill(chunk, 0x66)
			expectGood(t, "overlay WRITE of a new cluster after UNMAP freed space", ovLU.run(nexusA, writeCDB(64*chunkBlocks), b, 0))
			ovImg.write(64*chunkBlocks, b)

			if err := ov.Close(); err != nil {
				t.Fatalf("overlay close on a full file system: %v", err)
			}
			ovLU = newTestLU(t, reopen(), LUConfig{})
			ovImg.check(t, "reopened overlay", ovLU)
			rawImg = rawImg[:full*512] // the rest was never written with GOOD
			rawImg.check(t, "raw disk", rawLU)
		})
	}
}

// A block device starts failing writes (a loop device whose backing
// tmpfs fills up, device-mapper's error target, dm-flakey error_writes),
// holding a raw disk - the device itself, or a file on an ext4 on it - or
// an overlay's top layer on an ext4 on it. A write after the break lands
// in the page cache (GOOD); the SYNCHRONIZE CACHE whose fdatasync fails
// answers MEDIUM ERROR, WRITE ERROR; from then on every write and flush
// answers DATA PROTECT, WRITE PROTECTED - never GOOD, though the kernel's
// next fdatasync would succeed - while reads are served. Once the device
// is mended, ClearError returns the disk to service. (An ext4 whose
// journal failed may stay read-only after the device is mended; on it
// ClearError may fail or writes keep failing: never GOOD over lost data.)
func TestFailingBlockDevice(t *testing.T) {
	const size = 32 << 20
	for _, holder := range []string{"raw-device", "raw-file-on-ext4", "overlay-on-ext4"} {
		t.Run(holder, func(t *testing.T) {
			for _, d := range faildev.Devices(t, size) {
				t.Run(d.Kind, func(t *testing.T) {
					var dev interface {
						disk.Device
						disk.Failer
					}
					switch holder {
					case "raw-device":
						dev = openFile(t, d.Path, false)
					case "raw-file-on-ext4":
						dev = newFile(t, filepath.Join(faildev.MountExt4(t, d.Path), "raw.img"), 16<<20)
					case "overlay-on-ext4":
						dev, _ = newOverlay(t, faildev.MountExt4(t, d.Path), 16<<20)
					}
					failAndMend(t, d, dev, holder == "raw-device" || d.Kind == "loop")
				})
			}
		})
	}
}

// failAndMend breaks d under dev and checks what the initiator sees;
// strict: ClearError must work once d is mended.
func failAndMend(t *testing.T, d *faildev.Device, dev interface {
	disk.Device
	disk.Failer
}, strict bool) {
	tl := newTestLU(t, dev, LUConfig{})
	before := fill(chunk, 0x11)
	expectGood(t, "WRITE", tl.run(nexusA, writeCDB(0), before, 0))
	expectGood(t, "SYNCHRONIZE CACHE", tl.run(nexusA, syncCDB, nil, 0))

	d.Break()
	// Blocks never written before: on the loop device they need space
	// the full tmpfs does not have.
	fresh := uint64(8 << 20 / 512)
	expectGood(t, "WRITE after the break (page cache)", tl.run(nexusA, writeCDB(fresh), fill(chunk, 0x22), 0))
	expectSense(t, "SYNCHRONIZE CACHE over the lost write", tl.run(nexusA, syncCDB, nil, 0), SenseMediumError, ascWriteError)
	if dev.Err() == nil {
		t.Fatal("the device is not failed after its flush failed")
	}
	for i := range 3 {
		lba := fresh + uint64(i+1)*chunkBlocks
		expectSense(t, "WRITE after the failed flush", tl.run(nexusA, writeCDB(lba), fill(chunk, 0x33), 0),
			SenseDataProtect, ascWriteProtected)
		expectSense(t, "WRITE FUA after the failed flush", tl.run(nexusA, cdb16(opWrite16, 0x08, lba, chunkBlocks), fill(chunk, 0x33), 0),
			SenseDataProtect, ascWriteProtected)
		expectSense(t, "SYNCHRONIZE CACHE after the failed flush", tl.run(nexusA, syncCDB, nil, 0),
			SenseDataProtect, ascWriteProtected)
	}
	r := tl.run(nexusA, readCDB(0), nil, chunk)
	expectGood(t, "READ on the failed disk", r)
	if !bytes.Equal(tl.lastIn, before) {
		t.Fatal("READ on the failed disk: not what was written")
	}

	d.Fix()
	err := dev.ClearError()
	switch {
	case err != nil && strict:
		t.Fatalf("ClearError after the device was mended: %v", err)
	case err != nil:
		t.Logf("ClearError after the device was mended: %v (the file system did not recover)", err)
		expectSense(t, "WRITE after a ClearError that failed", tl.run(nexusA, writeCDB(0), fill(chunk, 0x44), 0),
			SenseDataProtect, ascWriteProtected)
		expectSense(t, "SYNCHRONIZE CACHE after a ClearError that failed", tl.run(nexusA, syncCDB, nil, 0),
			SenseDataProtect, ascWriteProtected)
		return
	}
	after := fill(chunk, 0x44)
	w := tl.run(nexusA, writeCDB(0), after, 0)
	sc := tl.run(nexusA, syncCDB, nil, 0)
	if !strict && (w.Status != StatusGood || sc.Status != StatusGood) {
		wk, wc := senseOf(w)
		sk, scode := senseOf(sc)
		t.Logf("after ClearError: WRITE sense %#x/%#04x, SYNCHRONIZE CACHE sense %#x/%#04x (the file system did not recover)",
			wk, wc, sk, scode)
		if sc.Status != StatusGood {
			expectSense(t, "SYNCHRONIZE CACHE after the disk failed again", tl.run(nexusA, syncCDB, nil, 0),
				SenseDataProtect, ascWriteProtected)
		}
		return
	}
	expectGood(t, "WRITE after ClearError", w)
	expectGood(t, "SYNCHRONIZE CACHE after ClearError", sc)
	expectGood(t, "READ after ClearError", tl.run(nexusA, readCDB(0), nil, chunk))
	if !bytes.Equal(tl.lastIn, after) {
		t.Fatal("READ after ClearError: not what was written")
	}
}
