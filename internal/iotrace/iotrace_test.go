package iotrace

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	var b bytes.Buffer
	start := time.Date(2026, 12, 5, 6, 30, 0, 123456000, time.UTC)
	w := NewWriter(&b, Header{Target: "iqn.2026-11.org.diskless:x.disk.pc1", Started: start, BlockSize: 512}, 0)
	s0 := w.Login(0, 0x23d000000001, 1, "iqn.2010-04.org.ipxe:pc1")
	w.IO(IO{At: 1500 * time.Microsecond, Session: s0, LBA: 0, Blocks: 1})
	w.IO(IO{At: 2 * time.Millisecond, Session: s0, LBA: 2048, Blocks: 127})
	s1 := w.Login(3*time.Second, 0x400001370000, 2, "iqn.2026-11.org.diskless:x.host.pc1")
	w.IO(IO{At: 3*time.Second + 7*time.Microsecond, Session: s1, LUN: 0, LBA: 1 << 40, Blocks: 8})
	w.IO(IO{At: 3*time.Second + 9*time.Microsecond, Session: s1, Write: true, LBA: 4096, Blocks: 8})
	w.Logout(4*time.Second, s0)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	want := `# diskless io trace v1
# target iqn.2026-11.org.diskless:x.disk.pc1
# started 2026-12-05T06:30:00.123456Z
# block-size 512
L,0,0,23d000000001,1,iqn.2010-04.org.ipxe:pc1
R,1500,0,0,0,1
R,2000,0,0,2048,127
L,3000000,1,400001370000,2,iqn.2026-11.org.diskless:x.host.pc1
R,3000007,1,0,1099511627776,8
W,3000009,1,0,4096,8
E,4000000,0
`
	if b.String() != want {
		t.Fatalf("trace:\n%s\nwant:\n%s", b.String(), want)
	}
	tr, err := Read(strings.NewReader(b.String()), 0)
	if err != nil {
		t.Fatal(err)
	}
	wantT := &Trace{
		Header: Header{Target: "iqn.2026-11.org.diskless:x.disk.pc1", Started: start, BlockSize: 512},
		Sessions: []Session{
			{Index: 0, At: 0, End: 4 * time.Second, ISID: 0x23d000000001, TSIH: 1, Initiator: "iqn.2010-04.org.ipxe:pc1"},
			{Index: 1, At: 3 * time.Second, ISID: 0x400001370000, TSIH: 2, Initiator: "iqn.2026-11.org.diskless:x.host.pc1"},
		},
		IOs: []IO{
			{At: 1500 * time.Microsecond, LBA: 0, Blocks: 1},
			{At: 2 * time.Millisecond, LBA: 2048, Blocks: 127},
			{At: 3*time.Second + 7*time.Microsecond, Session: 1, LBA: 1 << 40, Blocks: 8},
			{At: 3*time.Second + 9*time.Microsecond, Session: 1, Write: true, LBA: 4096, Blocks: 8},
		},
	}
	if !reflect.DeepEqual(tr, wantT) {
		t.Fatalf("read back %+v\nwant %+v", tr, wantT)
	}
	st := tr.Stats()
	wantS := Stats{Reads: 3, Writes: 1, ReadBytes: 136 * 512, WriteBytes: 8 * 512, DistinctReadBlocks: 136,
		Duration: 3*time.Second + 9*time.Microsecond, LargestGap: 3*time.Second + 7*time.Microsecond - 2*time.Millisecond, LargestGapAt: 2 * time.Millisecond}
	if st != wantS {
		t.Fatalf("stats %+v, want %+v", st, wantS)
	}
}

// The cap bounds what is written, and the reader learns how much was left out.
func TestWriterCap(t *testing.T) {
	var b bytes.Buffer
	w := NewWriter(&b, Header{Target: "t", Started: time.Unix(0, 0)}, 3)
	s := w.Login(0, 1, 1, "i")
	for i := range 10 {
		w.IO(IO{At: time.Duration(i) * time.Millisecond, Session: s, LBA: uint64(i), Blocks: 1})
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	tr, err := Read(&b, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.IOs) != 3 || tr.Dropped != 7 {
		t.Fatalf("%d records, %d dropped; want 3 and 7", len(tr.IOs), tr.Dropped)
	}
	// The reader has its own bound.
	var b2 bytes.Buffer
	w = NewWriter(&b2, Header{Target: "t", Started: time.Unix(0, 0)}, 0)
	s = w.Login(0, 1, 1, "i")
	for i := range 5 {
		w.IO(IO{At: time.Duration(i), Session: s, Blocks: 1})
	}
	w.Close()
	if _, err := Read(&b2, 4); !errors.Is(err, ErrFormat) {
		t.Fatalf("5 records with a bound of 4: %v", err)
	}
}

// Writing a record when tracing costs no allocation.
func TestIONoAlloc(t *testing.T) {
	var b bytes.Buffer
	w := NewWriter(&b, Header{Target: "t"}, 0)
	s := w.Login(0, 1, 1, "i")
	w.IO(IO{Session: s, LBA: 1 << 40, Blocks: 1 << 20})
	if n := testing.AllocsPerRun(100, func() { w.IO(IO{Session: s, LBA: 1 << 40, Blocks: 1 << 20}) }); n != 0 {
		t.Fatalf("%v allocations per record", n)
	}
}

func TestReadRejects(t *testing.T) {
	const head = "# diskless io trace v1\n# target t\n"
	for name, in := range map[string]string{
		"no magic":             "R,1,0,0,0,1\n",
		"no session":           head + "R,1,0,0,0,1\n",
		"session out of order": head + "L,0,1,1,1,i\n",
		"short":                head + "L,0,0,1,1,i\nR,5,0,0,0\n",
		"negative":             head + "L,0,0,1,1,i\nR,-5,0,0,0,1\n",
		"blocks overflow":      head + "L,0,0,1,1,i\nR,5,0,0,0,4294967296\n",
		"bad isid":             head + "L,0,0,xyz,1,i\n",
		"unknown":              head + "X,1\n",
		"block size":           head + "# block-size 513\n",
		"end of nothing":       head + "E,1,0\n",
		"empty":                "",
	} {
		if _, err := Read(strings.NewReader(in), 0); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: %v, want ErrFormat", name, err)
		}
	}
}

// Read takes any input without panicking, and what it accepts is written
// back as the same trace.
func FuzzRead(f *testing.F) {
	f.Add("# diskless io trace v1\n# target t\n# started 2026-12-05T06:30:00Z\n# block-size 4096\n" +
		"L,0,0,23d000000001,1,iqn.2010-04.org.ipxe:pc1\nR,1500,0,0,0,1\nW,2000,0,0,8,8\nE,3000,0\n# dropped 3 records after the cap of 2\n")
	f.Fuzz(func(t *testing.T, in string) {
		tr, err := Read(strings.NewReader(in), 1000)
		if err != nil {
			return
		}
		var b bytes.Buffer
		w := NewWriter(&b, tr.Header, 0)
		for _, s := range tr.Sessions {
			w.Login(s.At, s.ISID, s.TSIH, s.Initiator)
		}
		for _, r := range tr.IOs {
			w.IO(r)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		back, err := Read(&b, 0)
		if err != nil {
			t.Fatalf("%v\n%s", err, b.String())
		}
		if len(back.IOs) != len(tr.IOs) || len(back.Sessions) != len(tr.Sessions) {
			t.Fatalf("round trip changed the trace")
		}
		for i := range tr.IOs {
			if back.IOs[i] != tr.IOs[i] {
				t.Fatalf("record %d: %+v, want %+v", i, back.IOs[i], tr.IOs[i])
			}
		}
	})
}
