package disk

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// newImage creates a file of size bytes filled with fill (0 leaves it
// sparse) and opens it.
func newImage(t *testing.T, size int64, fill byte, readOnly bool) (*File, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if fill != 0 {
		if _, err := f.Write(bytes.Repeat([]byte{fill}, int(size))); err != nil {
			t.Fatal(err)
		}
	} else if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	d, err := OpenFile(path, readOnly)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, path
}

func allocatedBytes(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func TestFileReadWrite(t *testing.T) {
	d, _ := newImage(t, 1<<20, 0, false)
	if got := d.Size(); got != 1<<20 {
		t.Fatalf("Size = %d, want %d", got, 1<<20)
	}
	want := bytes.Repeat([]byte("diskless"), 512)
	if _, err := d.WriteAt(want, 4096); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if _, err := d.ReadAt(got, 4096); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("read back differs from what was written")
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	// A read crossing the end is an error, not a short read.
	if _, err := d.ReadAt(make([]byte, 8192), 1<<20-4096); err == nil {
		t.Fatal("read past the end succeeded")
	}
}

func TestFileReadOnly(t *testing.T) {
	d, _ := newImage(t, 1<<20, 0xaa, true)
	if _, err := d.WriteAt([]byte{1}, 0); !errors.Is(err, ErrReadOnly) {
		t.Errorf("WriteAt = %v, want ErrReadOnly", err)
	}
	if err := d.Unmap(0, 4096); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Unmap = %v, want ErrReadOnly", err)
	}
	if err := d.WriteZeroes(0, 4096); !errors.Is(err, ErrReadOnly) {
		t.Errorf("WriteZeroes = %v, want ErrReadOnly", err)
	}
	b := make([]byte, 16)
	if _, err := d.ReadAt(b, 0); err != nil || b[0] != 0xaa {
		t.Errorf("ReadAt = %v, %x", err, b[0])
	}
}

func TestFileUnmapPunchesHoles(t *testing.T) {
	const size = 4 << 20
	d, path := newImage(t, size, 0x5a, false)
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	before := allocatedBytes(t, path)
	if before < size {
		t.Skipf("file system did not allocate the written image (%d bytes)", before)
	}
	if err := d.Unmap(1<<20, 2<<20); err != nil {
		t.Fatal(err)
	}
	after := allocatedBytes(t, path)
	if before-after < 2<<20 {
		t.Fatalf("st_blocks went from %d to %d bytes: hole not punched", before, after)
	}
	got := make([]byte, 2<<20)
	if _, err := d.ReadAt(got, 1<<20); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, make([]byte, len(got))) {
		t.Fatal("unmapped range does not read back as zeros")
	}
	edge := make([]byte, 1)
	if _, err := d.ReadAt(edge, 1<<20-1); err != nil || edge[0] != 0x5a {
		t.Fatalf("byte before the hole = %x, %v", edge[0], err)
	}
	mapped, n, err := d.Mapped(1 << 20)
	if err != nil || mapped || n != 2<<20 {
		t.Fatalf("Mapped(hole) = %v, %d, %v; want false, %d", mapped, n, err, 2<<20)
	}
	mapped, n, err = d.Mapped(0)
	if err != nil || !mapped || n != 1<<20 {
		t.Fatalf("Mapped(0) = %v, %d, %v; want true, %d", mapped, n, err, 1<<20)
	}
	// Unaligned: partial blocks are zeroed, whole blocks deallocated.
	if err := d.Unmap(3<<20+100, 5000); err != nil {
		t.Fatal(err)
	}
	got = make([]byte, 5002)
	if _, err := d.ReadAt(got, 3<<20+99); err != nil {
		t.Fatal(err)
	}
	if got[0] != 0x5a || got[5001] != 0x5a || !bytes.Equal(got[1:5001], make([]byte, 5000)) {
		t.Fatal("unaligned unmap touched the wrong bytes")
	}
}

func TestFileWriteZeroesKeepsAllocation(t *testing.T) {
	d, path := newImage(t, 2<<20, 0x11, false)
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	before := allocatedBytes(t, path)
	if err := d.WriteZeroes(0, 1<<20); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 1<<20)
	if _, err := d.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, make([]byte, len(got))) {
		t.Fatal("zeroed range does not read back as zeros")
	}
	if after := allocatedBytes(t, path); after < before {
		t.Fatalf("WriteZeroes released blocks: %d -> %d bytes", before, after)
	}
	if mapped, _, err := d.Mapped(0); err != nil || !mapped {
		t.Fatalf("Mapped(0) after WriteZeroes = %v, %v; want mapped", mapped, err)
	}
}

func TestFileMappedSparse(t *testing.T) {
	d, _ := newImage(t, 8<<20, 0, false)
	mapped, n, err := d.Mapped(0)
	if err != nil || mapped || n != 8<<20 {
		t.Fatalf("empty sparse file: Mapped(0) = %v, %d, %v", mapped, n, err)
	}
	if _, err := d.WriteAt(make([]byte, 4096), 4<<20); err != nil {
		t.Fatal(err)
	}
	// Written zeros are still data: allocation, not content, is reported.
	if _, err := d.WriteAt([]byte{1}, 4<<20); err != nil {
		t.Fatal(err)
	}
	mapped, n, err = d.Mapped(0)
	if err != nil || mapped || n != 4<<20 {
		t.Fatalf("Mapped(0) = %v, %d, %v; want hole of %d", mapped, n, err, 4<<20)
	}
	mapped, n, err = d.Mapped(4 << 20)
	if err != nil || !mapped || n < 4096 {
		t.Fatalf("Mapped(4M) = %v, %d, %v; want data", mapped, n, err)
	}
	if _, _, err := d.Mapped(8 << 20); err == nil {
		t.Fatal("Mapped(size) succeeded")
	}
}

func TestFileSizeFollowsGrowth(t *testing.T) {
	d, path := newImage(t, 1<<20, 0, false)
	if err := os.Truncate(path, 3<<20); err != nil {
		t.Fatal(err)
	}
	if got := d.Size(); got != 3<<20 {
		t.Fatalf("Size after growth = %d, want %d", got, 3<<20)
	}
}

func TestFilePrefetch(t *testing.T) {
	d, _ := newImage(t, 1<<20, 0x22, false)
	if err := d.Prefetch(0, 1<<20); err != nil {
		t.Fatal(err)
	}
}

func TestOpenFileRejects(t *testing.T) {
	if _, err := OpenFile("/dev/null", true); err == nil {
		t.Error("character device accepted")
	}
	if _, err := OpenFile(filepath.Join(t.TempDir(), "missing"), false); err == nil {
		t.Error("missing file accepted")
	}
}

// TestFileNoSpace fills a tiny tmpfs: the write must fail with ErrNoSpace.
func TestFileNoSpace(t *testing.T) {
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Skipf("cannot mount a tmpfs to provoke ENOSPC (needs CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	path := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 16<<20); err != nil {
		t.Fatal(err)
	}
	d, err := OpenFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	_, err = d.WriteAt(bytes.Repeat([]byte{1}, 1<<20), 0)
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("write beyond the tmpfs size: %v, want ErrNoSpace", err)
	}
}
