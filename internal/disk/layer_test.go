package disk

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCreateLayer(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "l")
	cfg := LayerConfig{Size: 10<<20 + 512, ID: "a", BaseID: "base@1"}
	if err := CreateLayer(dir, cfg); err != nil {
		t.Fatal(err)
	}
	info, err := CheckLayer(dir)
	if err != nil {
		t.Fatal(err)
	}
	if info.ClusterSize != 4096 || info.Size != cfg.Size || info.Clusters != 2561 || info.ID != "a" ||
		info.Parent != "" || info.BaseID != "base@1" || info.Owned != 0 || info.Records != 0 ||
		info.MetaBytes != headerSize || info.DataBytes != 0 || info.TornTail || info.Created.IsZero() {
		t.Fatalf("CheckLayer of a new layer = %+v", info)
	}
	if err := CreateLayer(dir, cfg); err == nil {
		t.Error("CreateLayer over an existing layer succeeded")
	}
	empty := t.TempDir()
	if err := CreateLayer(empty, cfg); err != nil {
		t.Errorf("CreateLayer in an empty directory: %v", err)
	}
	for _, bad := range []LayerConfig{
		{Size: 1 << 20},                                             // no ID
		{Size: 1000, ID: "a"},                                       // not a multiple of 512
		{Size: 1 << 20, ID: "a", ClusterSize: 2048},                 // cluster too small
		{Size: 1 << 20, ID: strings.Repeat("x", 65)},                // ID too long
		{Size: 1 << 20, ID: "a", BaseID: string(make([]byte, 300))}, // base identity too long
	} {
		if err := CreateLayer(filepath.Join(t.TempDir(), "x"), bad); err == nil {
			t.Errorf("CreateLayer(%+v) succeeded", bad)
		}
	}
}

// twoFlushes makes a layer whose log holds records from two flushes, the
// second one writing only clusters the first did not own (in words 1 to
// words, so with words 3 the second record is a full one). It returns the
// disk as of the first flush, and where the last record starts and ends.
func twoFlushes(t *testing.T, words int) (s *stack, base *File, first []byte, start, end int64) {
	const size = 1 << 20 // 256 clusters, 4 bitmap words
	base, content := newBase(t, size, 11)
	s = newStack(t, size, 4096)
	o := s.open(t, base, OverlayOptions{})
	p := pattern(3*4096+100, 1)
	if _, err := o.WriteAt(p, 5000); err != nil { // word 0
		t.Fatal(err)
	}
	copy(content[5000:], p)
	if err := o.Flush(); err != nil {
		t.Fatal(err)
	}
	start = o.Stats().MetaBytes
	for w := 1; w <= words; w++ {
		if _, err := o.WriteAt(pattern(4096, uint64(w)), int64(w)*64*4096+8192); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.Flush(); err != nil {
		t.Fatal(err)
	}
	end = o.Stats().MetaBytes
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	return s, base, content, start, end
}

// TestTornTailEveryOffset cuts meta at every byte of its last record, as
// a crash during the append can: the layer opens with the state of the
// record before, and the writable open cuts the torn bytes off.
func TestTornTailEveryOffset(t *testing.T) {
	for _, c := range []struct {
		name  string
		words int
		typ   byte
	}{{"delta", 2, recDelta}, {"full", 3, recFull}} {
		t.Run(c.name, func(t *testing.T) {
			s, base, first, start, end := twoFlushes(t, c.words)
			meta := filepath.Join(s.top, metaName)
			b, err := os.ReadFile(meta)
			if err != nil || int64(len(b)) != end {
				t.Fatalf("meta is %d bytes, %v; the log ends at %d", len(b), err, end)
			}
			if b[start+4] != c.typ {
				t.Fatalf("last record has type %d, want %d", b[start+4], c.typ)
			}
			for cut := start + 1; cut < end; cut++ {
				if err := os.WriteFile(meta, b[:cut], 0o600); err != nil {
					t.Fatal(err)
				}
				info, err := CheckLayer(s.top)
				if err != nil || !info.TornTail || info.Records != 1 {
					t.Fatalf("cut at %d: CheckLayer = %+v, %v; want one record and a torn tail", cut, info, err)
				}
				o, err := OpenOverlay(base, nil, s.top, OverlayOptions{})
				if err != nil {
					t.Fatalf("cut at %d: %v", cut, err)
				}
				checkAll(t, o, first)
				if fi, err := os.Stat(meta); err != nil || fi.Size() != start {
					t.Fatalf("cut at %d: meta is %d bytes after open, want %d", cut, fi.Size(), start)
				}
				// The next record follows the good one.
				if _, err := o.WriteAt([]byte{1}, 0); err != nil {
					t.Fatal(err)
				}
				if err := o.Close(); err != nil {
					t.Fatal(err)
				}
				if info, err := CheckLayer(s.top); err != nil || info.TornTail || info.Records != 2 {
					t.Fatalf("cut at %d: after a new flush CheckLayer = %+v, %v", cut, info, err)
				}
			}
		})
	}
}

// TestTornTailGarbage: junk after the last record (a torn append of a
// record whose first bytes never made it) is a torn tail too.
func TestTornTailGarbage(t *testing.T) {
	s, base, first, _, end := twoFlushes(t, 1)
	meta := filepath.Join(s.top, metaName)
	f, err := os.OpenFile(meta, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(append([]byte("DLRC\x02\x00"), pattern(50, 3)...))
	f.Close()
	o, err := OpenOverlay(base, nil, s.top, OverlayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if fi, _ := os.Stat(meta); fi.Size() != end {
		t.Fatalf("meta is %d bytes, want %d", fi.Size(), end)
	}
	if st := o.Stats(); st.TopClusters != 5 {
		t.Fatalf("top owns %d clusters after recovery, want 5", st.TopClusters)
	}
	got := make([]byte, 3*4096+100)
	if _, err := o.ReadAt(got, 5000); err != nil || firstDiff(got, first[5000:]) >= 0 {
		t.Fatalf("flushed data changed (%v)", err)
	}
}

// TestMidLogCorruption: a damaged record followed by a valid one is not a
// torn tail; the layer is refused with an error naming file and offset.
func TestMidLogCorruption(t *testing.T) {
	s, base, _, _, _ := twoFlushes(t, 2)
	meta := filepath.Join(s.top, metaName)
	b, err := os.ReadFile(meta)
	if err != nil {
		t.Fatal(err)
	}
	// The first record is at headerSize; flip a payload byte in it.
	b[headerSize+recHeaderSize+1] ^= 0x40
	if err := os.WriteFile(meta, b, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = OpenOverlay(base, nil, s.top, OverlayOptions{})
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.Path != meta || ce.Offset != headerSize {
		t.Fatalf("open = %v, want a CorruptError at %s offset %d", err, meta, headerSize)
	}
	if !strings.Contains(err.Error(), meta) || !strings.Contains(err.Error(), "offset 4096") ||
		!strings.Contains(err.Error(), "follows at offset") {
		t.Errorf("error does not say where: %v", err)
	}
	if _, err := CheckLayer(s.top); !errors.As(err, &ce) {
		t.Errorf("CheckLayer = %v, want a CorruptError", err)
	}
	// The file was left as it was.
	if b2, _ := os.ReadFile(meta); len(b2) != len(b) {
		t.Errorf("a refused open changed meta from %d to %d bytes", len(b), len(b2))
	}
}

// TestSequenceOrder: a valid record whose sequence number does not
// increase is corruption.
func TestSequenceOrder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "l")
	if err := CreateLayer(dir, LayerConfig{Size: 1 << 20, ID: "a"}); err != nil {
		t.Fatal(err)
	}
	rec := func(seq uint64) []byte {
		b := beginRecord(nil, recDelta, seq)
		return finishRecord(appendDeltaWord(b, 0, 1), 0, 1)
	}
	meta := filepath.Join(dir, metaName)
	b, _ := os.ReadFile(meta)
	b = append(append(b, rec(2)...), rec(2)...)
	if err := os.WriteFile(meta, b, 0o600); err != nil {
		t.Fatal(err)
	}
	var ce *CorruptError
	if _, err := CheckLayer(dir); !errors.As(err, &ce) || ce.Offset != headerSize+int64(len(rec(2))) {
		t.Fatalf("CheckLayer = %v, want corruption at the second record", err)
	}
}

// TestCheckLayerProblems: a live top, a short data file.
func TestCheckLayerProblems(t *testing.T) {
	base, _ := newBase(t, 1<<20, 1)
	s := newStack(t, 1<<20, 4096)
	o := s.open(t, base, OverlayOptions{})
	if _, err := CheckLayer(s.top); !errors.Is(err, ErrLayerInUse) {
		t.Errorf("CheckLayer of a live top = %v, want ErrLayerInUse", err)
	}
	if _, err := o.WriteAt(pattern(8192, 1), 4096); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	info, err := CheckLayer(s.top)
	if err != nil || info.Owned != 2 || info.Records != 1 || info.LastSeq != 1 || info.DataBytes < 8192 {
		t.Fatalf("CheckLayer = %+v, %v", info, err)
	}
	if err := os.Truncate(filepath.Join(s.top, dataName), 4096); err != nil {
		t.Fatal(err)
	}
	if _, err := CheckLayer(s.top); err == nil || !strings.Contains(err.Error(), "4096 bytes") {
		t.Errorf("CheckLayer of a short data file = %v", err)
	}
	if _, err := OpenOverlay(base, nil, s.top, OverlayOptions{}); err == nil {
		t.Error("OpenOverlay of a short data file succeeded")
	}
}

// TestCompaction: meta is rewritten as one full record when it outgrows
// its limit, and the state survives reopening and crashes.
func TestCompaction(t *testing.T) {
	const size = 4 << 20
	base, content := newBase(t, size, 12)
	s := newStack(t, size, 4096)
	o := s.open(t, base, OverlayOptions{})
	o.compactAt, o.top.nextCompact = 2048, 2048
	for i := range 200 {
		p := pattern(512, uint64(i))
		off := int64(i) * 20000 % (size - 512)
		if _, err := o.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
		copy(content[off:], p)
		if err := o.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	st := o.Stats()
	if st.Compactions < 10 || st.MetaBytes > 2048+int64(o.g.maxRecordLen())+headerSize {
		t.Fatalf("after 200 flushes: %+v", st)
	}
	crash(o)
	info, err := CheckLayer(s.top)
	if err != nil || info.MetaBytes != st.MetaBytes {
		t.Fatalf("CheckLayer = %+v, %v", info, err)
	}
	if _, err := os.Stat(filepath.Join(s.top, metaTmpName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("meta.tmp left behind: %v", err)
	}
	o = s.open(t, base, OverlayOptions{})
	defer o.Close()
	checkAll(t, o, content)
}
