package imagefmt

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// patternSize is the virtual size of the test disk: small enough for
// t.TempDir, large enough for many 1 MiB chunks and multi-cluster runs.
const patternSize = 40 << 20

// patternDisk writes the test disk to a new sparse raw file and returns its
// path and content: a few MiB of data at odd offsets, a MiB of zeros that
// is allocated (written, not a hole) and holes everywhere else.
func patternDisk(t testing.TB) (string, []byte) {
	t.Helper()
	want := make([]byte, patternSize)
	rng := rand.New(rand.NewPCG(7, 7))
	// Half random, half text, so compressed formats have work to do
	// both ways.
	a := want[1<<20+12345 : 1<<20+12345+3<<20+777]
	for i := range a[:len(a)/2] {
		a[i] = byte(rng.Uint32())
	}
	text := []byte("diskless imports this disk image; ")
	for i := len(a) / 2; i < len(a); i++ {
		a[i] = text[i%len(text)]
	}
	for i := range want[20<<20+4095 : 20<<20+4095+513] {
		want[20<<20+4095+i] = 0xff
	}
	copy(want[patternSize-3000:], bytes.Repeat(text, 100))

	path := filepath.Join(t.TempDir(), "pattern.raw")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(patternSize); err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]int{
		{1<<20 + 12345, 3<<20 + 777}, {10 << 20, 1 << 20}, {20<<20 + 4095, 513}, {patternSize - 3000, 3000},
	} {
		if _, err := f.WriteAt(want[r[0]:r[0]+r[1]], int64(r[0])); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	return path, want
}

// allocated is how many bytes of path the file system has allocated.
func allocated(t testing.TB, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// importTo opens src with Open and copies it into a new file with Copy,
// returning the new file's path.
func importTo(t *testing.T, src string, opts OpenOptions) (string, Source) {
	t.Helper()
	s, err := Open(context.Background(), src, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	dst := filepath.Join(t.TempDir(), "imported.raw")
	f, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var last, total int64 = -1, -1
	err = Copy(context.Background(), f, s, func(done, tot int64) {
		if done < last {
			t.Errorf("progress went back from %d to %d", last, done)
		}
		last, total = done, tot
	})
	if err != nil {
		t.Fatal(err)
	}
	if last != s.Size() || total != s.Size() {
		t.Errorf("last progress %d/%d, want %d/%d", last, total, s.Size(), s.Size())
	}
	return dst, s
}

// checkImported compares an imported file with the disk it came from. Some
// formats round the virtual size up (vpc to its CHS geometry): the extra
// bytes must read as zeros.
func checkImported(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) < len(want) || len(got) > len(want)+4<<20 {
		t.Fatalf("imported %d bytes, want %d", len(got), len(want))
	}
	if i := firstDiff(got[:len(want)], want); i >= 0 {
		t.Fatalf("imported disk differs from the original at byte %d", i)
	}
	if !bytes.Equal(got[len(want):], make([]byte, len(got)-len(want))) {
		t.Fatal("bytes past the original size are not zero")
	}
	// The pattern holds 3.1 MiB of data; holes and the allocated
	// zero MiB must not be written.
	if a := allocated(t, path); a > 4<<20 {
		t.Errorf("imported file has %d bytes allocated for %d of data; want it sparse", a, 3<<20+4290)
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

func TestImportRaw(t *testing.T) {
	src, want := patternDisk(t)
	dst, s := importTo(t, src, OpenOptions{})
	if s.Format() != Raw || s.Size() != patternSize {
		t.Fatalf("opened as %s of %d bytes, want raw of %d", s.Format(), s.Size(), patternSize)
	}
	checkImported(t, dst, want)
	var data int64
	for _, e := range extentsOfSource(t, s) {
		if !e.zero {
			data += e.n
		}
	}
	if data > 6<<20 {
		t.Errorf("SEEK_DATA found %d bytes of data in a file with 4.1 MiB written", data)
	}
}

func TestImportQCOW2WithoutQemuImg(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // the pure Go reader needs nothing
	for _, name := range qcow2Testdata {
		t.Run(name, func(t *testing.T) {
			dst, s := importTo(t, filepath.Join("testdata", name), OpenOptions{})
			if s.Format() != QCOW2 {
				t.Errorf("Format = %s, want qcow2", s.Format())
			}
			got, err := os.ReadFile(dst)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, smallPattern()) {
				t.Error("imported disk differs from the pattern")
			}
		})
	}
}

func TestImportForcedFormat(t *testing.T) {
	// A raw disk whose first sector happens to hold a qcow2 header
	// (say, a VM disk with a qcow2 file at sector 0) imports as raw
	// when the admin says so.
	src := filepath.Join("testdata", "pattern-v3.qcow2")
	want, _ := os.ReadFile(src)
	dst, s := importTo(t, src, OpenOptions{Format: Raw})
	if s.Format() != Raw {
		t.Errorf("Format = %s, want raw", s.Format())
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, want) {
		t.Error("forced raw import is not the file itself")
	}
}

func TestImportBlockDevice(t *testing.T) {
	if _, err := exec.LookPath("losetup"); err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and losetup (util-linux) to attach a loop device")
	}
	src, want := patternDisk(t)
	out, err := exec.Command("losetup", "--find", "--show", "--read-only", src).Output()
	if err != nil {
		t.Skipf("cannot attach a loop device: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "--detach", dev).Run() })
	if f, err := Detect(dev); err != nil || f != Raw {
		t.Fatalf("Detect(%s) = %s, %v; want raw", dev, f, err)
	}
	dst, s := importTo(t, dev, OpenOptions{})
	if s.Size() != patternSize {
		t.Fatalf("block device size %d, want %d (BLKGETSIZE64)", s.Size(), patternSize)
	}
	// A block device has no holes to report: the copy loop's zero
	// check alone must keep the result sparse.
	checkImported(t, dst, want)
}

func TestCopyReplacesWhatDestinationHeld(t *testing.T) {
	src, want := patternDisk(t)
	s, err := Open(context.Background(), src, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	dst := filepath.Join(t.TempDir(), "old.raw")
	if err := os.WriteFile(dst, bytes.Repeat([]byte{0xee}, patternSize+1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(dst, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Copy(context.Background(), f, s, nil); err != nil {
		t.Fatal(err)
	}
	checkImported(t, dst, want)
}

func TestCopyRefusesNonRegularDestination(t *testing.T) {
	s, err := Open(context.Background(), filepath.Join("testdata", "pattern-v3.qcow2"), OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Copy(context.Background(), f, s, nil); err == nil {
		t.Error("Copy to /dev/null succeeded; skipping zeros needs a file that reads them back")
	}
}

// cancellingSource is a Source of non-zero bytes that cancels its context
// during the first read and counts reads.
type cancellingSource struct {
	size   int64
	cancel context.CancelFunc
	reads  atomic.Int64
}

func (s *cancellingSource) ReadAt(p []byte, off int64) (int, error) {
	if s.reads.Add(1) == 1 {
		s.cancel()
	}
	for i := range p {
		p[i] = 0x5a
	}
	return len(p), nil
}
func (s *cancellingSource) Size() int64    { return s.size }
func (s *cancellingSource) Format() Format { return Raw }
func (s *cancellingSource) Close() error   { return nil }
func (s *cancellingSource) Extents(fn func(off, n int64, zero bool) error) error {
	return fn(0, s.size, false)
}

func TestCopyStopsWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := &cancellingSource{size: 1 << 40, cancel: cancel} // a TiB: finishing is no option
	f, err := os.Create(filepath.Join(t.TempDir(), "partial.raw"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = Copy(ctx, f, src, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Copy = %v, want context.Canceled", err)
	}
	if n := src.reads.Load(); n > 1 {
		t.Errorf("%d chunks read after the cancel, want none", n-1)
	}
}

// shortSource claims more bytes than it holds.
type shortSource struct{ cancellingSource }

func (s *shortSource) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > s.size/2 {
		return 0, io.EOF
	}
	return len(p), nil
}

func TestCopyFailsOnShortSource(t *testing.T) {
	src := &shortSource{cancellingSource{size: 8 << 20}}
	f, err := os.Create(filepath.Join(t.TempDir(), "short.raw"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Copy(context.Background(), f, src, nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Copy = %v, want io.ErrUnexpectedEOF", err)
	}
}

// writeRecorder records the writes made to it.
type writeRecorder struct{ writes [][2]int64 }

func (w *writeRecorder) WriteAt(p []byte, off int64) (int, error) {
	w.writes = append(w.writes, [2]int64{off, int64(len(p))})
	return len(p), nil
}

func TestWriteNonZeroLeavesZeroBlocks(t *testing.T) {
	b := make([]byte, 6*4096)
	b[100] = 1           // block 0 (file offset 1000+100: block 0 of the file)
	b[3*4096-1000] = 2   // file block 3
	b[3*4096-1000+1] = 3 // same run
	b[len(b)-1] = 4      // the last, partial block
	var w writeRecorder
	if err := writeNonZero(&w, b, 1000); err != nil {
		t.Fatal(err)
	}
	// Runs end at 4 KiB boundaries of the file, not of b.
	want := [][2]int64{{1000, 4096 - 1000}, {3 * 4096, 4096}, {6 * 4096, 1000}}
	if len(w.writes) != len(want) {
		t.Fatalf("writes %v, want %v", w.writes, want)
	}
	for i := range want {
		if w.writes[i] != want[i] {
			t.Fatalf("writes %v, want %v", w.writes, want)
		}
	}
	w.writes = nil
	if err := writeNonZero(&w, make([]byte, chunkSize), 0); err != nil || len(w.writes) != 0 {
		t.Errorf("an all-zero chunk made writes %v", w.writes)
	}
}

func TestCopyAllocatesNothingPerChunk(t *testing.T) {
	src := &cancellingSource{size: 16 << 20, cancel: func() {}}
	f, err := os.Create(filepath.Join(t.TempDir(), "allocs.raw"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	allocs := testing.AllocsPerRun(3, func() {
		if err := Copy(context.Background(), f, src, nil); err != nil {
			t.Fatal(err)
		}
	})
	// The buffer and a few small ones per Copy; 16 chunks would add 16.
	if allocs > 8 {
		t.Errorf("%.0f allocations per 16-chunk Copy, want the buffer and a few more", allocs)
	}
}
