package disk

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOverlayModel runs random writes, reads, unmaps, zeroings, flushes,
// reopens, crashes, snapshots and merges against a byte-slice model of the
// disk, on stacks of 0, 1 and 3 lower layers.
func TestOverlayModel(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lower int
		cs    int
		size  int64
	}{
		{"4K/0-lower", 0, 4096, 4 << 20},
		{"4K/1-lower", 1, 4096, 4 << 20},
		{"4K/3-lower", 3, 4096, 4 << 20},
		// A size that leaves the last cluster short.
		{"64K/3-lower/short-last-cluster", 3, 64 << 10, 4<<20 + 3*512},
	} {
		t.Run(tc.name, func(t *testing.T) { runModel(t, tc.lower, tc.cs, tc.size) })
	}
}

func runModel(t *testing.T, nLower, cs int, size int64) {
	base, content := newBase(t, size, 1)
	s := newStack(t, size, cs)
	m := newModel(content, cs)
	o := s.open(t, base, OverlayOptions{})
	defer func() { o.Close() }()
	rng := rand.New(rand.NewPCG(uint64(nLower), uint64(cs)))
	seed := uint64(100)
	randRange := func() (int64, int64) {
		var off, n int64
		switch rng.IntN(3) {
		case 0: // whole 512-byte blocks, as SCSI sends them
			off, n = rng.Int64N(size/512)*512, (1+rng.Int64N(64))*512
		case 1: // any bytes
			off, n = rng.Int64N(size), 1+rng.Int64N(3*int64(cs))
		default: // whole clusters
			off, n = rng.Int64N(size/int64(cs))*int64(cs), (1+rng.Int64N(8))*int64(cs)
		}
		return off, min(n, size-off)
	}
	write := func() {
		off, n := randRange()
		seed++
		p := pattern(int(n), seed)
		if k, err := o.WriteAt(p, off); err != nil || k != len(p) {
			t.Fatalf("WriteAt(%d, %d) = %d, %v", off, n, k, err)
		}
		m.write(p, off)
	}
	for range nLower {
		for range 40 {
			write()
		}
		s.push(t, o)
	}
	m.flush()
	for step := range 700 {
		switch r := rng.IntN(100); {
		case r < 45:
			write()
		case r < 58:
			off, n := randRange()
			got := make([]byte, n)
			if k, err := o.ReadAt(got, off); err != nil || k != len(got) {
				t.Fatalf("ReadAt(%d, %d) = %d, %v", off, n, k, err)
			}
			if i := firstDiff(got, m.cur[off:off+n]); i >= 0 {
				t.Fatalf("step %d: ReadAt(%d, %d): byte %d differs", step, off, n, off+int64(i))
			}
		case r < 65:
			off, n := randRange()
			if err := o.Unmap(off, n); err != nil {
				t.Fatal(err)
			}
			m.zero(off, n)
		case r < 70:
			off, n := randRange()
			if err := o.WriteZeroes(off, n); err != nil {
				t.Fatal(err)
			}
			m.zero(off, n)
		case r < 78:
			if err := o.Flush(); err != nil {
				t.Fatal(err)
			}
			m.flush()
		case r < 82:
			if err := o.Close(); err != nil {
				t.Fatal(err)
			}
			o = s.open(t, base, OverlayOptions{})
			m.flush()
			checkAll(t, o, m.cur)
		case r < 87:
			crash(o)
			o = s.open(t, base, OverlayOptions{})
			m.afterCrash(t, o)
		case r < 89:
			if len(s.lower) < 6 {
				s.push(t, o)
				m.flush()
			}
		case r < 91:
			if len(s.lower) == 0 {
				break
			}
			i := rng.IntN(len(s.lower))
			dir := s.lower[i]
			if err := o.MergeInto(dir); err != nil {
				t.Fatal(err)
			}
			if i == len(s.lower)-1 {
				m.flush() // merging into the top flushes it
			}
			s.lower, s.top = o.Layers()
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
		case r < 96:
			checkMapped(t, o, m.cur)
		default:
			off, n := randRange()
			checkExtent(t, o, m.cur, off, n)
		}
	}
	checkAll(t, o, m.cur)
	checkMapped(t, o, m.cur)
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	o = s.open(t, base, OverlayOptions{})
	checkAll(t, o, m.cur)
}

// checkMapped walks the disk with Mapped: the extents must tile it, and
// every unmapped byte must read as zero (LBPRZ).
func checkMapped(t testing.TB, o *Overlay, want []byte) {
	t.Helper()
	for off := int64(0); off < o.Size(); {
		mapped, n, err := o.Mapped(off)
		if err != nil {
			t.Fatal(err)
		}
		if n < 1 || off+n > o.Size() {
			t.Fatalf("Mapped(%d) = %v, %d: outside the disk", off, mapped, n)
		}
		if !mapped && !allZero(want[off:off+n]) {
			t.Fatalf("Mapped(%d) says %d bytes unmapped, but they hold data", off, n)
		}
		off += n
	}
}

// checkExtent checks that FileExtent names bytes that hold the disk's
// content.
func checkExtent(t testing.TB, o *Overlay, want []byte, off, n int64) {
	t.Helper()
	fr, err := o.FileExtent(off, n)
	if err != nil {
		t.Fatal(err)
	}
	if fr.Len < 1 || fr.Len > n || fr.Off != off {
		t.Fatalf("FileExtent(%d, %d) = %+v", off, n, fr)
	}
	got := make([]byte, fr.Len)
	if err := preadFull(fr.FD, got, fr.Off); err != nil {
		t.Fatal(err)
	}
	if i := firstDiff(got, want[off:off+fr.Len]); i >= 0 {
		t.Fatalf("FileExtent(%d, %d) = %+v: byte %d differs", off, n, fr, off+int64(i))
	}
}

// TestOverlayPartialWholeRace races a write of part of a new cluster
// against a write of all of it. Whatever the order, the whole write must
// survive: the cluster is either all whole-write, or whole-write with the
// partial one on top. Without the stripe lock the partial write's copy-up
// (read old cluster, merge, write) can overwrite the whole write.
func TestOverlayPartialWholeRace(t *testing.T) {
	const cs = 4096
	iters := 2000
	if testing.Short() {
		iters = 200
	}
	size := int64(iters) * cs
	base, _ := newBase(t, size, 3)
	s := newStack(t, size, cs)
	o := s.open(t, base, OverlayOptions{})
	defer o.Close()
	whole := bytes.Repeat([]byte{0xaa}, cs)
	part := bytes.Repeat([]byte{0x55}, 512)
	afterBoth := bytes.Clone(whole)
	copy(afterBoth[1024:], part)
	got := make([]byte, cs)
	for i := range iters {
		off := int64(i) * cs
		var wg sync.WaitGroup
		wg.Add(2)
		start := make(chan struct{})
		var errW, errP error
		go func() { defer wg.Done(); <-start; _, errW = o.WriteAt(whole, off) }()
		go func() { defer wg.Done(); <-start; _, errP = o.WriteAt(part, off+1024) }()
		close(start)
		wg.Wait()
		if errW != nil || errP != nil {
			t.Fatal(errW, errP)
		}
		if _, err := o.ReadAt(got, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, whole) && !bytes.Equal(got, afterBoth) {
			t.Fatalf("iteration %d: the whole-cluster write was lost (byte 0 = %#x)", i, got[0])
		}
	}
}

// TestOverlayConcurrent runs writers on disjoint regions while readers
// check a region no one writes (written before, so held by the top, then
// by lower layers as they are pushed and merged), and the stack changes
// under them: flushes, snapshots, merges into a lower layer and into the
// top. At the end the disk must equal the model, before and after a
// reopen.
func TestOverlayConcurrent(t *testing.T) {
	const (
		cs      = 4096
		writers = 3
		region  = 256 << 10
		stable  = writers * region // [stable, size) is written once, first
		size    = stable + region
	)
	base, content := newBase(t, size, 5)
	s := newStack(t, size, cs)
	o := s.open(t, base, OverlayOptions{})
	defer func() { o.Close() }()
	m := newModel(content, cs)
	for off := int64(stable); off+cs+100 <= size; off += 3 * cs {
		p := pattern(cs, uint64(off))
		if _, err := o.WriteAt(p, off+100); err != nil {
			t.Fatal(err)
		}
		m.write(p, off+100)
	}
	want := bytes.Clone(m.cur[stable:])
	errs := make(chan error, 16)
	var mmu sync.Mutex
	var writersDone, readersDone sync.WaitGroup
	for w := range writers {
		writersDone.Add(1)
		go func() {
			defer writersDone.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			for i := 0; i < 400; i++ {
				off := int64(w*region) + rng.Int64N(region-3*cs)
				n := 1 + rng.Int64N(2*cs)
				p := pattern(int(n), uint64(w<<20|i))
				mmu.Lock() // one writer per region: the lock only guards the model
				m.write(p, off)
				mmu.Unlock()
				if _, err := o.WriteAt(p, off); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	stop := make(chan struct{})
	for r := range 2 {
		readersDone.Add(1)
		go func() {
			defer readersDone.Done()
			buf := make([]byte, 16<<10)
			rng := rand.New(rand.NewPCG(uint64(r), 10))
			for {
				select {
				case <-stop:
					return
				default:
				}
				off := rng.Int64N(region - int64(len(buf)))
				if _, err := o.ReadAt(buf, stable+off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(buf, want[off:off+int64(len(buf))]) {
					errs <- fmt.Errorf("stable region at %d read wrong while the stack changed", off)
					return
				}
			}
		}()
	}
	for _, op := range []string{"push", "push", "push", "merge-bottom", "merge-top", "push", "merge-bottom", "merge-top"} {
		if err := o.Flush(); err != nil {
			t.Fatal(err)
		}
		lower, _ := o.Layers()
		var err error
		switch op {
		case "push":
			dir := s.nextDir()
			err = o.Push(dir, s.id(dir))
		case "merge-bottom": // into the layer above, a lower one
			err = o.MergeInto(lower[0])
		case "merge-top":
			err = o.MergeInto(lower[len(lower)-1])
		}
		if err != nil {
			t.Fatalf("%s: %v", op, err)
		}
	}
	writersDone.Wait()
	close(stop)
	readersDone.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	checkAll(t, o, m.cur)
	s.lower, s.top = o.Layers()
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	o = s.open(t, base, OverlayOptions{})
	checkAll(t, o, m.cur)
}

// TestFlushCoalescing: a Flush called while another is past its capture
// must not return before what was written before it is durable; it waits
// for the running flush and then makes its own.
func TestFlushCoalescing(t *testing.T) {
	base, _ := newBase(t, 1<<20, 6)
	s := newStack(t, 1<<20, 4096)
	o := s.open(t, base, OverlayOptions{})
	defer o.Close()
	if _, err := o.WriteAt(pattern(4096, 1), 0); err != nil {
		t.Fatal(err)
	}
	inSync, release := make(chan struct{}), make(chan struct{})
	orig, fd := fdatasync, o.top.fd
	var once sync.Once
	fdatasync = func(f int) error {
		if f == fd {
			once.Do(func() { close(inSync); <-release })
		}
		return orig(f)
	}
	defer func() { fdatasync = orig }()
	first := make(chan error)
	go func() { first <- o.Flush() }()
	select { // the first flush captured cluster 0 and is syncing data
	case <-inSync:
	case err := <-first:
		t.Fatalf("Flush returned (%v) without syncing data", err)
	}
	if _, err := o.WriteAt(pattern(4096, 2), 64*4096*2); err != nil { // cluster 128, another word
		t.Fatal(err)
	}
	second := make(chan error)
	go func() { second <- o.Flush() }()
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	m, err := openMeta(s.top, false, false)
	if err != nil {
		t.Fatal(err)
	}
	defer m.f.Close()
	if !m.bits.has(0) || !m.bits.has(128) {
		t.Fatalf("durable bitmap misses a cluster written before its Flush: 0 %v, 128 %v", m.bits.has(0), m.bits.has(128))
	}
}

// TestOverlayReadOnly: every modifying call fails with ErrReadOnly and
// reads see the layers.
func TestOverlayReadOnly(t *testing.T) {
	base, content := newBase(t, 1<<20, 2)
	s := newStack(t, 1<<20, 4096)
	o := s.open(t, base, OverlayOptions{})
	p := pattern(10000, 1)
	if _, err := o.WriteAt(p, 5000); err != nil {
		t.Fatal(err)
	}
	copy(content[5000:], p)
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	ro := s.open(t, base, OverlayOptions{ReadOnly: true})
	defer ro.Close()
	// A second reader may share the layer; a writer may not.
	ro2 := s.open(t, base, OverlayOptions{ReadOnly: true})
	ro2.Close()
	if _, err := OpenOverlay(base, nil, s.top, OverlayOptions{}); !errors.Is(err, ErrLayerInUse) {
		t.Fatalf("opening for writing a top open elsewhere: %v, want ErrLayerInUse", err)
	}
	if _, err := ro.WriteAt(p, 0); !errors.Is(err, ErrReadOnly) {
		t.Errorf("WriteAt = %v", err)
	}
	if err := ro.Unmap(0, 4096); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Unmap = %v", err)
	}
	if err := ro.WriteZeroes(0, 4096); !errors.Is(err, ErrReadOnly) {
		t.Errorf("WriteZeroes = %v", err)
	}
	if err := ro.Push(t.TempDir()+"/x", "x"); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Push = %v", err)
	}
	if err := ro.Flush(); err != nil {
		t.Errorf("Flush = %v", err)
	}
	checkAll(t, ro, content)
}

// TestOverlayOpenChecks: layers that do not stack are refused, and a
// layer merged by an interrupted MergeInto is left out.
func TestOverlayOpenChecks(t *testing.T) {
	base, _ := newBase(t, 1<<20, 2)
	s := newStack(t, 1<<20, 4096)
	o := s.open(t, base, OverlayOptions{})
	s.push(t, o)
	s.push(t, o)
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	lower := s.lower // layer1, layer2; top layer3
	for _, c := range []struct {
		name  string
		lower []string
		opts  OverlayOptions
	}{
		{"missing lower layer", lower[1:], OverlayOptions{}},
		{"wrong order", []string{lower[1], lower[0]}, OverlayOptions{}},
		{"wrong base identity", lower, OverlayOptions{BaseID: "other"}},
	} {
		if _, err := OpenOverlay(base, c.lower, s.top, c.opts); !errors.Is(err, ErrLayerMismatch) {
			t.Errorf("%s: %v, want ErrLayerMismatch", c.name, err)
		}
	}
	other, _ := newBase(t, 2<<20, 2)
	if _, err := OpenOverlay(other, lower, s.top, OverlayOptions{}); !errors.Is(err, ErrLayerMismatch) {
		t.Errorf("base of another size: %v", err)
	}
	// Simulate a merge of layer2 into layer3 whose caller crashed before
	// forgetting layer2: layer3's parent is now layer1.
	m, err := openMeta(s.top, true, false)
	if err != nil {
		t.Fatal(err)
	}
	hdr := m.hdr
	hdr.parent = s.id(lower[0])
	m.f.Close()
	f, _, err := writeMeta(s.top, hdr, make([]uint64, newGeometry(hdr.size, hdr.clusterSize).nwords), 1)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	o, err = OpenOverlay(base, lower, s.top, OverlayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if got, _ := o.Layers(); len(got) != 1 || got[0] != lower[0] {
		t.Fatalf("Layers = %v, want only %s", got, lower[0])
	}
}

// TestOverlayUnmapReleasesSpace: Unmap punches holes in the top, reads
// zeros over base data, and Mapped reports the clusters deallocated.
func TestOverlayUnmapReleasesSpace(t *testing.T) {
	const size = 4 << 20
	base, _ := newBase(t, size, 4)
	s := newStack(t, size, 4096)
	o := s.open(t, base, OverlayOptions{})
	defer o.Close()
	if _, err := o.WriteAt(pattern(2<<20, 1), 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := o.Flush(); err != nil {
		t.Fatal(err)
	}
	before := allocatedBytes(t, s.top+"/data")
	if err := o.Unmap(1<<20, 2<<20); err != nil {
		t.Fatal(err)
	}
	if after := allocatedBytes(t, s.top+"/data"); before-after < 2<<20 {
		t.Fatalf("st_blocks went from %d to %d bytes: no hole punched", before, after)
	}
	// Clusters only the base held read as zeros too.
	if err := o.Unmap(128<<10, 64<<10); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2<<20)
	for _, r := range [][2]int64{{1 << 20, 2 << 20}, {128 << 10, 64 << 10}} {
		if _, err := o.ReadAt(got[:r[1]], r[0]); err != nil {
			t.Fatal(err)
		}
		if !allZero(got[:r[1]]) {
			t.Fatalf("unmapped %d+%d does not read as zeros", r[0], r[1])
		}
		mapped, n, err := o.Mapped(r[0])
		if err != nil || mapped || n < r[1] {
			t.Fatalf("Mapped(%d) = %v, %d, %v; want a hole of at least %d", r[0], mapped, n, err, r[1])
		}
	}
	// WriteZeroes allocates the clusters (ext4 keeps them as unwritten
	// extents, which SEEK_DATA reports as holes: Mapped may say either).
	holes := allocatedBytes(t, s.top+"/data")
	if err := o.WriteZeroes(1<<20, 64<<10); err != nil {
		t.Fatal(err)
	}
	if got := allocatedBytes(t, s.top+"/data") - holes; got < 64<<10 {
		t.Fatalf("WriteZeroes allocated %d bytes, want %d", got, 64<<10)
	}
	if _, err := o.ReadAt(got[:64<<10], 1<<20); err != nil || !allZero(got[:64<<10]) {
		t.Fatalf("zeroed range reads %v, non-zero", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(s.top+"/data", &st); err != nil || st.Size != size {
		t.Fatalf("data file size %d, %v", st.Size, err)
	}
}

// TestOverlayFileExtentBase: a run in the base comes from the base's
// FileExtent; one in the top names the top's data file.
func TestOverlayFileExtentBase(t *testing.T) {
	const size = 1 << 20
	base, content := newBase(t, size, 6)
	s := newStack(t, size, 4096)
	o := s.open(t, base, OverlayOptions{})
	defer o.Close()
	p := pattern(8192, 2)
	if _, err := o.WriteAt(p, 64<<10); err != nil {
		t.Fatal(err)
	}
	copy(content[64<<10:], p)
	fr, err := o.FileExtent(0, 128<<10)
	if err != nil || fr.Len != 64<<10 || fr.FD != base.fd {
		t.Fatalf("FileExtent(0) = %+v, %v; want 64 KiB of the base", fr, err)
	}
	fr, err = o.FileExtent(64<<10, 64<<10)
	if err != nil || fr.Len != 8192 || fr.FD != o.top.fd {
		t.Fatalf("FileExtent(64K) = %+v, %v; want 8 KiB of the top", fr, err)
	}
	checkExtent(t, o, content, 60<<10, 10000)
	if err := o.Prefetch(0, size); err != nil {
		t.Fatal(err)
	}
}
