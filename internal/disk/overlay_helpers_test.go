package disk

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// newBase writes a base image of size bytes: pseudo-random data with a
// hole (zeros, left sparse) in every fourth 64 KiB, opened read-only.
func newBase(t testing.TB, size int64, seed uint64) (*File, []byte) {
	t.Helper()
	content := make([]byte, size)
	rng := rand.New(rand.NewPCG(seed, 1))
	for i := range content {
		content[i] = byte(rng.Uint32())
	}
	for off := int64(0); off < size; off += 256 << 10 {
		clear(content[off:min(off+64<<10, size)])
	}
	path := filepath.Join(t.TempDir(), "base.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for off := int64(0); off < size; off += 64 << 10 {
		chunk := content[off:min(off+64<<10, size)]
		if !allZero(chunk) {
			if _, err := f.WriteAt(chunk, off); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := OpenFile(path, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, content
}

// stack names the layer directories of a test overlay.
type stack struct {
	dir   string
	cfg   LayerConfig
	lower []string
	top   string
	n     int // layers made so far
}

func newStack(t testing.TB, size int64, clusterSize int) *stack {
	t.Helper()
	s := &stack{dir: t.TempDir(), cfg: LayerConfig{Size: size, ClusterSize: clusterSize, BaseID: "test-base@1"}}
	s.top = s.nextDir()
	cfg := s.cfg
	cfg.ID = s.id(s.top)
	if err := CreateLayer(s.top, cfg); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *stack) nextDir() string {
	s.n++
	return filepath.Join(s.dir, fmt.Sprintf("layer%d", s.n))
}

func (s *stack) id(dir string) string { return "id-" + filepath.Base(dir) }

func (s *stack) open(t testing.TB, base Device, opts OverlayOptions) *Overlay {
	t.Helper()
	o, err := OpenOverlay(base, s.lower, s.top, opts)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// push snapshots o and records the new stack.
func (s *stack) push(t testing.TB, o *Overlay) {
	t.Helper()
	dir := s.nextDir()
	if err := o.Push(dir, s.id(dir)); err != nil {
		t.Fatal(err)
	}
	s.lower, s.top = o.Layers()
}

// crash drops o as a killed process would: its files are closed (which
// releases its locks) with no flush. The page cache keeps what it wrote.
func crash(o *Overlay) {
	o.mu.Lock()
	o.closed.Store(true)
	o.closeFiles()
	o.mu.Unlock()
}

// model is the reference: the disk's bytes now and as of the last flush,
// and the clusters written since.
type model struct {
	cs      int64
	cur     []byte
	flushed []byte
	touched map[int64]bool
}

func newModel(base []byte, cs int) *model {
	return &model{cs: int64(cs), cur: bytes.Clone(base), flushed: bytes.Clone(base), touched: map[int64]bool{}}
}

func (m *model) write(p []byte, off int64) {
	copy(m.cur[off:], p)
	m.touch(off, int64(len(p)))
}

func (m *model) zero(off, n int64) {
	clear(m.cur[off : off+n])
	m.touch(off, n)
}

func (m *model) touch(off, n int64) {
	for c := off / m.cs; c*m.cs < off+n; c++ {
		m.touched[c] = true
	}
}

func (m *model) flush() {
	copy(m.flushed, m.cur)
	clear(m.touched)
}

// checkAll reads the whole disk and compares it with the model.
func checkAll(t testing.TB, o *Overlay, want []byte) {
	t.Helper()
	got := make([]byte, len(want))
	if _, err := o.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if i := firstDiff(got, want); i >= 0 {
		t.Fatalf("byte %d (cluster %d) reads %#x, want %#x", i, int64(i)>>o.g.shift, got[i], want[i])
	}
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// afterCrash checks a reopened overlay against the model: clusters not
// written since the last flush read as flushed; the others read wholly as
// they were flushed or as they were last written. The model then adopts
// what the disk holds.
func (m *model) afterCrash(t testing.TB, o *Overlay) {
	t.Helper()
	got := make([]byte, len(m.cur))
	if _, err := o.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	for c := int64(0); c*m.cs < int64(len(got)); c++ {
		s, e := c*m.cs, min((c+1)*m.cs, int64(len(got)))
		g := got[s:e]
		if bytes.Equal(g, m.flushed[s:e]) {
			continue
		}
		if !m.touched[c] {
			t.Fatalf("cluster %d, not written since the last flush, lost its flushed content", c)
		}
		if !bytes.Equal(g, m.cur[s:e]) {
			t.Fatalf("cluster %d after a crash is neither its flushed nor its last written content", c)
		}
	}
	copy(m.cur, got)
	m.flush()
}

// pattern fills a buffer with bytes no base or earlier write likely has.
func pattern(n int, seed uint64) []byte {
	p := make([]byte, n)
	rng := rand.New(rand.NewPCG(seed, 7))
	for i := range p {
		p[i] = byte(rng.Uint32()) | 1
	}
	return p
}
