package imagefmt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
)

// smallPattern is the 64 KiB disk the testdata qcow2 files hold (see
// testdata/README.md): data in clusters 8-17 and 78, zeros elsewhere.
func smallPattern() []byte {
	b := make([]byte, 64<<10)
	for i := 4096; i < 4096+5000; i++ {
		if b[i] = byte((i*7 + 3) % 251); b[i] == 0 {
			b[i] = 1
		}
	}
	for i := 40000; i < 40100; i++ {
		b[i] = 0xab
	}
	return b
}

var qcow2Testdata = []string{"pattern-v3.qcow2", "pattern-v2.qcow2", "pattern-compressed.qcow2"}

func openTestQCOW2(t *testing.T, data []byte) *qcow2 {
	t.Helper()
	q, err := newQCOW2(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// extentList collects what Extents reports, checking that it covers
// [0, size) in order.
type extent struct {
	off, n int64
	zero   bool
}

func extentsOfSource(t *testing.T, s interface {
	Extents(func(off, n int64, zero bool) error) error
	Size() int64
}) []extent {
	t.Helper()
	var list []extent
	var next int64
	err := s.Extents(func(off, n int64, zero bool) error {
		if off != next || n <= 0 {
			return fmt.Errorf("extent %d+%d, want one at %d", off, n, next)
		}
		list = append(list, extent{off, n, zero})
		next = off + n
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if next != s.Size() {
		t.Fatalf("extents end at %d, size is %d", next, s.Size())
	}
	return list
}

func TestQCOW2ReadsQemuImages(t *testing.T) {
	want := smallPattern()
	for _, name := range qcow2Testdata {
		t.Run(name, func(t *testing.T) {
			q := openTestQCOW2(t, readTestdata(t, name))
			if q.Size() != int64(len(want)) {
				t.Fatalf("Size = %d, want %d", q.Size(), len(want))
			}
			got := make([]byte, len(want))
			if n, err := q.ReadAt(got, 0); n != len(got) || err != nil {
				t.Fatalf("ReadAt = %d, %v", n, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("virtual disk differs from the pattern qemu-img was given")
			}
			// Reads that start and end inside clusters.
			for _, r := range [][2]int{{4000, 5100}, {4097, 1}, {39999, 102}, {65535, 1}} {
				b := make([]byte, r[1])
				if _, err := q.ReadAt(b, int64(r[0])); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(b, want[r[0]:r[0]+r[1]]) {
					t.Errorf("ReadAt(%d, %d) differs", r[0], r[1])
				}
			}
			if n, err := q.ReadAt(make([]byte, 10), 65530); n != 6 || err == nil {
				t.Errorf("ReadAt across the end = %d, %v; want 6, io.EOF", n, err)
			}

			var data int64
			for _, e := range extentsOfSource(t, q) {
				if e.zero {
					if !bytes.Equal(want[e.off:e.off+e.n], make([]byte, e.n)) {
						t.Errorf("zero extent %d+%d holds data", e.off, e.n)
					}
				} else {
					data += e.n
				}
			}
			// qemu-img allocated the 4 KiB blocks that hold data
			// (-S 4k): 4096..12287 and 36864..40959.
			if data > 12<<10 {
				t.Errorf("%d bytes in data extents, want at most the 12 KiB qemu-img allocated", data)
			}
		})
	}
}

func TestQCOW2ConcurrentReads(t *testing.T) {
	want := smallPattern()
	q := openTestQCOW2(t, readTestdata(t, "pattern-compressed.qcow2"))
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for range 500 {
				off := rng.IntN(len(want))
				n := rng.IntN(min(3000, len(want)-off)) + 1
				b := make([]byte, n)
				if _, err := q.ReadAt(b, int64(off)); err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(b, want[off:off+n]) {
					t.Errorf("ReadAt(%d, %d) differs", off, n)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestQCOW2RefusesHeaders(t *testing.T) {
	be := binary.BigEndian
	tests := []struct {
		name        string
		edit        func(b []byte) []byte
		unsupported string // a phrase of the UnsupportedError; "" means ErrMalformed
	}{
		{"backing file", func(b []byte) []byte { be.PutUint64(b[8:], 0x1000); be.PutUint32(b[16:], 8); return b }, "backing file"},
		{"AES encryption", func(b []byte) []byte { be.PutUint32(b[32:], 1); return b }, "encryption"},
		{"LUKS encryption", func(b []byte) []byte { be.PutUint32(b[32:], 2); return b }, "encryption"},
		{"external data file", func(b []byte) []byte { b[79] |= 4; return b }, "external data file"},
		{"extended L2", func(b []byte) []byte { b[79] |= 16; return b }, "extended L2"},
		{"unknown feature", func(b []byte) []byte { b[74] |= 1; return b }, "unknown incompatible"},
		{"zstd", func(b []byte) []byte { b[79] |= 8; b[104] = 1; return b }, "zstd"},
		{"version 1", func(b []byte) []byte { be.PutUint32(b[4:], 1); return b }, "version 1"},
		{"version 4", func(b []byte) []byte { be.PutUint32(b[4:], 4); return b }, "version 4"},
		{"marked corrupt", func(b []byte) []byte { b[79] |= 2; return b }, ""},
		{"compression type without its bit", func(b []byte) []byte { b[104] = 1; return b }, ""},
		{"bad magic", func(b []byte) []byte { b[3] = 0; return b }, ""},
		{"cluster_bits 8", func(b []byte) []byte { be.PutUint32(b[20:], 8); return b }, ""},
		{"cluster_bits 22", func(b []byte) []byte { be.PutUint32(b[20:], 22); return b }, ""},
		{"header_length 100", func(b []byte) []byte { be.PutUint32(b[100:], 100); return b }, ""},
		{"header_length unaligned", func(b []byte) []byte { be.PutUint32(b[100:], 108); return b }, ""},
		{"exabyte disk", func(b []byte) []byte { be.PutUint64(b[24:], 1<<61); return b }, ""},
		{"L1 beyond 32 MiB", func(b []byte) []byte { be.PutUint64(b[24:], 1<<50); return b }, ""},
		{"L1 too small", func(b []byte) []byte { be.PutUint32(b[36:], 1); return b }, ""},
		{"L1 outside the file", func(b []byte) []byte { be.PutUint64(b[40:], uint64(len(b))); return b }, ""},
		{"L1 unaligned", func(b []byte) []byte { be.PutUint64(b[40:], 0x608); return b }, ""},
		{"L1 entry reserved bit", func(b []byte) []byte { b[0x600+7] |= 1; return b }, ""},
		{"L2 table outside the file", func(b []byte) []byte { be.PutUint64(b[0x600:], 1<<40); return b }, ""},
		{"truncated header", func(b []byte) []byte { return b[:71] }, ""},
		{"truncated v3 header", func(b []byte) []byte { return b[:100] }, ""},
		{"truncated L1", func(b []byte) []byte { return b[:0x604] }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.edit(readTestdata(t, "pattern-v3.qcow2"))
			_, err := newQCOW2(bytes.NewReader(b), int64(len(b)))
			var ue *UnsupportedError
			switch {
			case err == nil:
				t.Fatal("opened, want an error")
			case tt.unsupported != "" && !errors.As(err, &ue):
				t.Fatalf("error %v, want an UnsupportedError", err)
			case tt.unsupported != "" && !strings.Contains(err.Error(), tt.unsupported):
				t.Fatalf("error %q does not say %q", err, tt.unsupported)
			case tt.unsupported == "" && !errors.Is(err, ErrMalformed) && !strings.Contains(err.Error(), "read"):
				t.Fatalf("error %v, want ErrMalformed or a read error", err)
			}
		})
	}
}

// l2Entry returns the offset in the file of virtual cluster vc's L2 entry
// in a testdata image (512-byte clusters, so 64 entries per table).
func l2Entry(t *testing.T, b []byte, vc int) int {
	t.Helper()
	be := binary.BigEndian
	l1 := be.Uint64(b[40:])
	l2 := be.Uint64(b[l1+uint64(vc/64)*8:]) & qcow2OffsetMask
	if l2 == 0 {
		t.Fatalf("cluster %d has no L2 table", vc)
	}
	return int(l2) + vc%64*8
}

func TestQCOW2RefusesBadClusters(t *testing.T) {
	be := binary.BigEndian
	tests := []struct {
		name  string
		image string
		edit  func(b []byte, e int)
	}{
		{"reserved bit", "pattern-v3.qcow2", func(b []byte, e int) { b[e+7] |= 2 }},
		{"unaligned data cluster", "pattern-v3.qcow2", func(b []byte, e int) { be.PutUint64(b[e:], be.Uint64(b[e:])+8) }},
		{"data cluster outside the file", "pattern-v3.qcow2", func(b []byte, e int) { be.PutUint64(b[e:], 1<<40) }},
		{"compressed cluster outside the file", "pattern-compressed.qcow2", func(b []byte, e int) {
			be.PutUint64(b[e:], be.Uint64(b[e:])|(1<<40-1)&^0xff)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := readTestdata(t, tt.image)
			tt.edit(b, l2Entry(t, b, 8))
			q := openTestQCOW2(t, b)
			if _, err := q.ReadAt(make([]byte, 512), 8*512); !errors.Is(err, ErrMalformed) {
				t.Errorf("ReadAt = %v, want ErrMalformed", err)
			}
			if err := q.Extents(func(int64, int64, bool) error { return nil }); !errors.Is(err, ErrMalformed) {
				t.Errorf("Extents = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestQCOW2RefusesBadDeflate(t *testing.T) {
	b := readTestdata(t, "pattern-compressed.qcow2")
	e := binary.BigEndian.Uint64(b[l2Entry(t, b, 8):])
	if e&qcow2L2Compressed == 0 {
		t.Fatalf("cluster 8 is not compressed (%#x)", e)
	}
	host := e & (1<<(62-(9-8)) - 1)
	for i := range 16 {
		b[host+uint64(i)] = 0xff
	}
	q := openTestQCOW2(t, b)
	if _, err := q.ReadAt(make([]byte, 512), 8*512); !errors.Is(err, ErrMalformed) {
		t.Errorf("ReadAt = %v, want ErrMalformed", err)
	}
}

// FuzzQCOW2 opens any file as qcow2: newQCOW2, Extents and ReadAt must
// return errors for malformed input, never panic, and agree with each
// other: what Extents calls zero reads as zeros.
func FuzzQCOW2(f *testing.F) {
	for _, name := range qcow2Testdata {
		f.Add(readTestdata(f, name))
	}
	errStop := errors.New("enough")
	f.Fuzz(func(t *testing.T, data []byte) {
		q, err := newQCOW2(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		const look = 256 << 10 // how much of the virtual disk to read
		var zeroes []extent
		calls := 0
		err = q.Extents(func(off, n int64, zero bool) error {
			if calls++; calls > 1<<14 {
				return errStop
			}
			if zero && off < look {
				zeroes = append(zeroes, extent{off, min(n, look-off), true})
			}
			return nil
		})
		if err != nil && !errors.Is(err, errStop) && !errors.Is(err, ErrMalformed) {
			t.Fatalf("Extents: %v, want nil or ErrMalformed", err)
		}
		buf := make([]byte, min(q.Size(), look))
		if _, err := q.ReadAt(buf, 0); err != nil {
			return
		}
		for _, z := range zeroes {
			if !bytes.Equal(buf[z.off:z.off+z.n], make([]byte, z.n)) {
				t.Fatalf("extent %d+%d is zero, reads data", z.off, z.n)
			}
		}
		if q.Size() > look {
			q.ReadAt(buf[:min(len(buf), 4096)], q.Size()-4096)
		}
	})
}
