package disk

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// TestOverlayNoAllocs: reads and writes do no heap allocation, whatever
// file serves them.
func TestOverlayNoAllocs(t *testing.T) {
	const size = 4 << 20
	base, _ := newBase(t, size, 41)
	s := newStack(t, size, 4096)
	o := s.open(t, base, OverlayOptions{})
	defer o.Close()
	if _, err := o.WriteAt(pattern(1<<20, 1), 1<<20); err != nil { // [1M, 2M) in the lower layer
		t.Fatal(err)
	}
	s.push(t, o)
	if _, err := o.WriteAt(pattern(1<<20, 2), 2<<20); err != nil { // [2M, 3M) in the top
		t.Fatal(err)
	}
	buf4k, buf1m := make([]byte, 4096), make([]byte, 1<<20)
	next := int64(3 << 20) // fresh clusters for first writes
	for _, c := range []struct {
		name string
		f    func() error
		pool bool // goes through sync.Pool (copy-up)
	}{
		{"read 4K base", func() error { _, err := o.ReadAt(buf4k, 8192); return err }, false},
		{"read 4K lower", func() error { _, err := o.ReadAt(buf4k, 1<<20+8192); return err }, false},
		{"read 4K top", func() error { _, err := o.ReadAt(buf4k, 2<<20+8192); return err }, false},
		{"read 1M across all", func() error { _, err := o.ReadAt(buf1m, 1<<20+512<<10); return err }, false},
		{"write 4K owned", func() error { _, err := o.WriteAt(buf4k, 2<<20+8192); return err }, false},
		{"write 1M owned", func() error { _, err := o.WriteAt(buf1m, 2<<20); return err }, false},
		{"write 4K new", func() error { _, err := o.WriteAt(buf4k, next); next += 4096; return err }, false},
		{"write 512 new (copy-up)", func() error { _, err := o.WriteAt(buf4k[:512], next+512); next += 4096; return err }, true},
	} {
		if c.pool && raceEnabled {
			continue
		}
		var err error
		n := testing.AllocsPerRun(100, func() {
			if e := c.f(); e != nil {
				err = e
			}
		})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if n != 0 {
			t.Errorf("%s: %.1f allocations per call, want 0", c.name, n)
		}
	}
}

// benchSize is the region the I/O benchmarks work in.
const benchSize = 64 << 20

// benchOverlay makes an overlay on a benchSize base with the given state:
// "base" (nothing written), "top" (all written to the top) or "lower"
// (all written, then pushed into a lower layer).
func benchOverlay(b *testing.B, state string, base *File) *Overlay {
	s := newStack(b, benchSize, 4096)
	o := s.open(b, base, OverlayOptions{})
	b.Cleanup(func() { o.Close() })
	if state == "base" {
		return o
	}
	p := pattern(1<<20, 5)
	for off := int64(0); off < benchSize; off += int64(len(p)) {
		if _, err := o.WriteAt(p, off); err != nil {
			b.Fatal(err)
		}
	}
	if state == "lower" {
		s.push(b, o)
	}
	return o
}

func BenchmarkRead(b *testing.B) {
	base, _ := newBase(b, benchSize, 42)
	for _, n := range []int{4 << 10, 1 << 20} {
		for _, dev := range []string{"File", "Overlay-base", "Overlay-lower", "Overlay-top"} {
			b.Run(fmt.Sprintf("%s/%dK", dev, n>>10), func(b *testing.B) {
				var d Device = base
				if dev != "File" {
					d = benchOverlay(b, dev[len("Overlay-"):], base)
				}
				buf := make([]byte, n)
				b.SetBytes(int64(n))
				b.ReportAllocs()
				b.ResetTimer()
				for i := range b.N {
					off := int64(i*n*7) % (benchSize - int64(n)) &^ 4095
					if _, err := d.ReadAt(buf, off); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkWrite(b *testing.B) {
	base, _ := newBase(b, benchSize, 43)
	for _, n := range []int{4 << 10, 1 << 20} {
		for _, dev := range []string{"File", "Overlay-owned", "File-sparse", "Overlay-new"} {
			b.Run(fmt.Sprintf("%s/%dK", dev, n>>10), func(b *testing.B) {
				buf := pattern(n, 9)
				var d Device
				var renew func()
				switch dev {
				case "File":
					path := filepath.Join(b.TempDir(), "rw.img")
					if err := os.WriteFile(path, nil, 0o600); err != nil {
						b.Fatal(err)
					}
					if err := os.Truncate(path, benchSize); err != nil {
						b.Fatal(err)
					}
					f, err := OpenFile(path, false)
					if err != nil {
						b.Fatal(err)
					}
					b.Cleanup(func() { f.Close() })
					// Written as benchOverlay writes the top, so both
					// files are in the same state.
					p := pattern(1<<20, 5)
					for off := int64(0); off < benchSize; off += int64(len(p)) {
						if _, err := f.WriteAt(p, off); err != nil {
							b.Fatal(err)
						}
					}
					d = f
				case "Overlay-owned":
					d = benchOverlay(b, "top", base)
				case "File-sparse":
					// Writes into holes, as the first writes to an overlay.
					var path string
					renew = func() {
						if d != nil {
							d.Close()
							os.Remove(path)
						}
						path = filepath.Join(b.TempDir(), "sparse.img")
						if err := os.WriteFile(path, nil, 0o600); err != nil {
							b.Fatal(err)
						}
						if err := os.Truncate(path, benchSize); err != nil {
							b.Fatal(err)
						}
						f, err := OpenFile(path, false)
						if err != nil {
							b.Fatal(err)
						}
						d = f
					}
					renew()
					b.Cleanup(func() { d.Close() })
				case "Overlay-new":
					// A fresh top whenever the clusters run out.
					var s *stack
					renew = func() {
						if d != nil {
							d.Close()
							os.RemoveAll(s.dir)
						}
						s = newStack(b, benchSize, 4096)
						d = s.open(b, base, OverlayOptions{})
					}
					renew()
					b.Cleanup(func() { d.Close() })
				}
				b.SetBytes(int64(n))
				b.ReportAllocs()
				b.ResetTimer()
				off := int64(0)
				for range b.N {
					if off+int64(n) > benchSize {
						off = 0
						if renew != nil {
							b.StopTimer()
							renew()
							b.StartTimer()
						}
					}
					if _, err := d.WriteAt(buf, off); err != nil {
						b.Fatal(err)
					}
					off += int64(n)
				}
			})
		}
	}
}

// BenchmarkOverlayMemory opens overlays of 1 and 8 GiB and reports the
// heap each keeps (B/overlay) next to what Stats says.
func BenchmarkOverlayMemory(b *testing.B) {
	for _, size := range []int64{1 << 30, 8 << 30} {
		for _, lower := range []int{0, 1} {
			b.Run(fmt.Sprintf("%dGiB/%d-lower", size>>30, lower), func(b *testing.B) {
				base := &sizedDevice{size: size}
				s := newStack(b, size, 4096)
				if lower > 0 {
					o := s.open(b, base, OverlayOptions{})
					s.push(b, o)
					if err := o.Close(); err != nil {
						b.Fatal(err)
					}
				}
				var before, after runtime.MemStats
				var kept uint64
				var st OverlayStats
				// Two collections: objects with finalizers (the previous
				// overlay's os.Files) are freed only by the second.
				gc := func() { runtime.GC(); runtime.GC() }
				for range b.N {
					gc()
					runtime.ReadMemStats(&before)
					o := s.open(b, base, OverlayOptions{})
					gc()
					runtime.ReadMemStats(&after)
					kept += after.HeapAlloc - before.HeapAlloc
					st = o.Stats()
					o.Close()
				}
				b.ReportMetric(float64(kept)/float64(b.N), "B/overlay")
				b.ReportMetric(float64(st.MemoryBytes), "stats-B")
				b.ReportMetric(float64(st.BitmapBytes), "bitmap-B")
				b.ReportMetric(float64(st.OwnerBytes), "owner-B")
			})
		}
	}
}

// sizedDevice is a base of any size that reads as zeros, for the memory
// benchmark (no 8 GiB file needed).
type sizedDevice struct{ size int64 }

func (d *sizedDevice) ReadAt(p []byte, off int64) (int, error)  { clear(p); return len(p), nil }
func (d *sizedDevice) WriteAt(p []byte, off int64) (int, error) { return 0, ErrReadOnly }
func (d *sizedDevice) Size() int64                              { return d.size }
func (d *sizedDevice) Flush() error                             { return nil }
func (d *sizedDevice) Close() error                             { return nil }
