package disk

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"
)

// goldenHeader is the header the golden bytes below encode: 130 clusters
// of 4 KiB, so the bitmap has 3 words and the last holds 2 valid bits.
var goldenHeader = layerHeader{clusterSize: 4096, size: 130 * 4096, created: 1767225600123456789,
	id: "host1-s1", parent: "host1-s0", baseID: "debian12@v3"}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHeaderGolden pins the header layout of docs/overlay-format.md; the
// CRC32C was checked against an independent implementation.
func TestHeaderGolden(t *testing.T) {
	b := appendHeader(nil, goldenHeader)
	if len(b) != headerSize {
		t.Fatalf("header is %d bytes", len(b))
	}
	for _, g := range []struct {
		off  int
		want string
	}{
		// magic, version 1, cluster size 4096, size 532480, created, ID/parent/base lengths 8/8/11
		{0, "444c4f56524c5931" + "01000000" + "00100000" + "0020080000000000" + "15cd55f551728618" + "08" + "08" + "0b00"},
		{64, "686f7374312d7331"},  // "host1-s1"
		{128, "686f7374312d7330"}, // "host1-s0"
		{192, "64656269616e3132407633"},
		{4092, "47eceb63"}, // CRC32C, little-endian
	} {
		want := mustHex(t, g.want)
		if got := b[g.off : g.off+len(want)]; !bytes.Equal(got, want) {
			t.Errorf("bytes at %d: %x, want %x", g.off, got, want)
		}
	}
	if !allZero(b[36:64]) || !allZero(b[448:4092]) {
		t.Error("reserved bytes are not zero")
	}
	h, err := parseHeader(b)
	if err != nil || h != goldenHeader {
		t.Fatalf("parseHeader = %+v, %v", h, err)
	}
}

func TestRecordGolden(t *testing.T) {
	g := newGeometry(goldenHeader.size, goldenHeader.clusterSize)
	for _, c := range []struct {
		name  string
		hex   string
		typ   byte
		seq   uint64
		words map[int]uint64
	}{
		{"delta", "444c5243" + "02000000" + "0700000000000000" + "02000000" +
			"00000000" + "0100000000000000" + "02000000" + "0300000000000000" + "6408e364",
			recDelta, 7, map[int]uint64{0: 1, 2: 3}},
		{"full", "444c5243" + "01000000" + "0800000000000000" + "03000000" +
			"ff00000000000000" + "0000000000000000" + "0200000000000000" + "91705cfc",
			recFull, 8, map[int]uint64{0: 0xff, 1: 0, 2: 2}},
	} {
		b := mustHex(t, c.hex)
		r, n, err := parseRecord(b, &g)
		if err != nil || n != len(b) || r.typ != c.typ || r.seq != c.seq || r.count != len(c.words) {
			t.Fatalf("%s: parseRecord = %+v, %d, %v", c.name, r, n, err)
		}
		for i := 0; i < r.count; i++ {
			idx, v := r.word(i)
			if want, ok := c.words[idx]; !ok || v != want {
				t.Errorf("%s: entry %d = word %d value %#x", c.name, i, idx, v)
			}
		}
		// Re-encoding gives the same bytes.
		e := beginRecord(nil, c.typ, c.seq)
		for i := 0; i < r.count; i++ {
			idx, v := r.word(i)
			if c.typ == recFull {
				e = appendFullWord(e, v)
			} else {
				e = appendDeltaWord(e, idx, v)
			}
		}
		if e = finishRecord(e, 0, r.count); !bytes.Equal(e, b) {
			t.Errorf("%s: re-encoded %x", c.name, e)
		}
	}
}

// TestRecordRejects: each damage is classified as a torn write (ends the
// log) or as corruption.
func TestRecordRejects(t *testing.T) {
	g := newGeometry(goldenHeader.size, goldenHeader.clusterSize)
	delta := func(idx int, v uint64) []byte {
		b := beginRecord(nil, recDelta, 1)
		b = appendDeltaWord(b, idx, v)
		return finishRecord(b, 0, 1)
	}
	good := delta(1, 5)
	mutate := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for _, c := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, errShortRecord},
		{"cut", good[:len(good)-1], errShortRecord},
		{"magic", mutate(func(b []byte) []byte { b[0] = 'X'; return b }), errRecordMagic},
		{"type", mutate(func(b []byte) []byte { b[4] = 9; return b }), errRecordHeader},
		{"reserved", mutate(func(b []byte) []byte { b[6] = 1; return b }), errRecordHeader},
		{"count above the word count", mutate(func(b []byte) []byte { b[16] = 4; return b }), errRecordHeader},
		{"huge count", mutate(func(b []byte) []byte { b[19] = 0xff; return b }), errRecordHeader},
		{"payload bit flip", mutate(func(b []byte) []byte { b[25] ^= 1; return b }), errRecordCRC},
		{"word index out of range", delta(3, 1), errRecordBounds},
		{"bit beyond the last cluster", delta(2, 4), errRecordBounds},
		{"full record with too few words", func() []byte {
			b := beginRecord(nil, recFull, 1)
			b = appendFullWord(appendFullWord(b, 1), 2)
			return finishRecord(b, 0, 2)
		}(), errRecordHeader},
	} {
		_, _, err := parseRecord(c.b, &g)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		if torn := tornRecord(err); torn != (c.want != errRecordBounds) {
			t.Errorf("%s: torn = %v", c.name, torn)
		}
	}
}

func TestHeaderRejects(t *testing.T) {
	good := appendHeader(nil, goldenHeader)
	for _, c := range []struct {
		name string
		h    *layerHeader
		edit func(b []byte)
		want error
	}{
		{"short", nil, nil, errShortHeader},
		{"magic", nil, func(b []byte) { b[0] = 'x' }, errHeaderMagic},
		{"checksum", nil, func(b []byte) { b[100] = 1 }, errHeaderCRC},
		{"cluster size", &layerHeader{clusterSize: 1024, size: 1 << 20, id: "a"}, nil, errHeaderField},
		{"cluster size not a power of two", &layerHeader{clusterSize: 12288, size: 1 << 20, id: "a"}, nil, errHeaderField},
		{"size", &layerHeader{clusterSize: 4096, size: 1000, id: "a"}, nil, errHeaderField},
		{"too many clusters", &layerHeader{clusterSize: 4096, size: 4096*maxLayerClusters + 512, id: "a"}, nil, errHeaderField},
		{"no ID", &layerHeader{clusterSize: 4096, size: 1 << 20}, nil, errHeaderField},
		{"own parent", &layerHeader{clusterSize: 4096, size: 1 << 20, id: "a", parent: "a"}, nil, errHeaderField},
	} {
		b := bytes.Clone(good)
		switch {
		case c.h != nil:
			b = appendHeader(nil, *c.h)
		case c.edit != nil:
			c.edit(b)
		default:
			b = b[:100]
		}
		if _, err := parseHeader(b); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// Version 2 with a valid checksum: refused as a version, not damage.
	b := bytes.Clone(good)
	b[8] = 2
	binary.LittleEndian.PutUint32(b[headerSize-4:], crc32.Checksum(b[:headerSize-4], castagnoli))
	if _, err := parseHeader(b); !errors.Is(err, errHeaderVersion) {
		t.Errorf("version 2: %v", err)
	}
}

// FuzzParseHeader: never panics, and what parses re-encodes to the same
// bytes (only the canonical encoding is accepted).
func FuzzParseHeader(f *testing.F) {
	f.Add(appendHeader(nil, goldenHeader))
	f.Add(appendHeader(nil, layerHeader{clusterSize: 65536, size: 1 << 40, id: "x"}))
	f.Add(appendHeader(nil, goldenHeader)[:headerSize-1])
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseHeader(b)
		if err != nil {
			return
		}
		if e := appendHeader(nil, h); !bytes.Equal(e, b[:headerSize]) {
			t.Fatalf("header %+v re-encodes differently", h)
		}
	})
}

// FuzzParseRecord decodes records for a bitmap of 1 to 4096 clusters:
// never panics, never claims more bytes than it got or than the bitmap
// allows, and what decodes re-encodes to the same bytes.
func FuzzParseRecord(f *testing.F) {
	g := newGeometry(goldenHeader.size, goldenHeader.clusterSize)
	d := beginRecord(nil, recDelta, 7)
	d = finishRecord(appendDeltaWord(appendDeltaWord(d, 0, 1), 2, 3), 0, 2)
	full := beginRecord(nil, recFull, 8)
	for _, w := range []uint64{0xff, 0, 2} {
		full = appendFullWord(full, w)
	}
	full = finishRecord(full, 0, 3)
	f.Add(d, uint16(g.clusters))
	f.Add(full, uint16(g.clusters))
	f.Add(append(bytes.Clone(d), full...), uint16(g.clusters))
	f.Add(d[:len(d)-3], uint16(64))
	f.Fuzz(func(t *testing.T, b []byte, clusters uint16) {
		g := newGeometry(int64(clusters%4096+1)*4096, 4096)
		r, n, err := parseRecord(b, &g)
		if err != nil {
			return
		}
		if n > len(b) || n > g.maxRecordLen() {
			t.Fatalf("record of %d bytes from %d (max %d)", n, len(b), g.maxRecordLen())
		}
		e := beginRecord(nil, r.typ, r.seq)
		for i := 0; i < r.count; i++ {
			idx, v := r.word(i)
			if idx >= g.nwords || (idx == g.nwords-1 && v&^g.lastMask != 0) {
				t.Fatalf("entry %d: word %d value %#x outside the bitmap", i, idx, v)
			}
			if r.typ == recFull {
				e = appendFullWord(e, v)
			} else {
				e = appendDeltaWord(e, idx, v)
			}
		}
		if e = finishRecord(e, 0, r.count); !bytes.Equal(e, b[:n]) {
			t.Fatal("record re-encodes differently")
		}
	})
}

// FuzzReplayLog feeds arbitrary bytes after a valid header to the log
// replay: it must never panic, must only report corruption or a clean
// result, and never allocate a record buffer beyond the bitmap's bound.
func FuzzReplayLog(f *testing.F) {
	g := newGeometry(goldenHeader.size, goldenHeader.clusterSize)
	d := beginRecord(nil, recDelta, 1)
	d = finishRecord(appendDeltaWord(d, 0, 1), 0, 1)
	d2 := beginRecord(nil, recDelta, 2)
	d2 = finishRecord(appendDeltaWord(d2, 2, 3), 0, 1)
	f.Add(append(bytes.Clone(d), d2...))
	f.Add(append(bytes.Clone(d), d2[:10]...))
	f.Add(append(append(bytes.Clone(d), 0xff, 0xfe), d2...))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, log []byte) {
		path := filepath.Join(dir, "meta")
		b := append(appendHeader(nil, goldenHeader), log...)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		fl, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer fl.Close()
		m, err := readMeta(fl, path, false)
		if err != nil {
			var ce *CorruptError
			if !errors.As(err, &ce) {
				t.Fatalf("replay failed with %v, not a CorruptError", err)
			}
			return
		}
		if m.log.end > int64(len(b)) || m.log.end < headerSize {
			t.Fatalf("log end %d outside the file of %d bytes", m.log.end, len(b))
		}
		if !m.log.torn && m.log.end != int64(len(b)) {
			t.Fatalf("log ends at %d of %d without a torn tail", m.log.end, len(b))
		}
		if w := m.bits.words[g.nwords-1].Load(); w&^g.lastMask != 0 {
			t.Fatalf("replay set bits beyond the last cluster: %#x", w)
		}
	})
}
