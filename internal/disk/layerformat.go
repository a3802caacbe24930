package disk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/bits"
	"strings"
)

// The metadata codec of an overlay layer (docs/overlay-format.md). It is
// pure: no I/O, no logging; the layer code reads the bytes and decides.
//
// Every integer is little-endian (encoding/binary.LittleEndian): the
// bitmap is an array of uint64 words with cluster c at bit c%64 of word
// c/64, so stored little-endian its bytes are in cluster order (cluster c
// is bit c%8 of byte c/8) and the same bytes serve as the word array on
// the hosts we run on. The rest of the format follows so one file has one
// byte order.
//
// Header, 4096 bytes at offset 0 of meta:
//
//	0     8  magic "DLOVRLY1"
//	8     4  format version (1)
//	12    4  cluster size in bytes (power of two, 4096..65536)
//	16    8  virtual size in bytes (multiple of 512)
//	24    8  creation time, Unix nanoseconds
//	32    1  length of the layer ID (1..64)
//	33    1  length of the parent ID (0..64; 0 = the parent is the base)
//	34    2  length of the base identity (0..256)
//	36   28  zero
//	64   64  layer ID, zero padded
//	128  64  parent ID, zero padded
//	192 256  base identity, zero padded
//	448 3644 zero
//	4092  4  CRC32C (Castagnoli) of bytes 0..4091
//
// Record, appended after the header, 24 bytes + payload:
//
//	0     4  magic "DLRC"
//	4     1  type: 1 full bitmap, 2 delta
//	5     3  zero
//	8     8  sequence number (strictly increasing along the log)
//	16    4  entry count N
//	20    P  payload: full, N = word count, N uint64 words;
//	         delta, N <= word count, N * (uint32 word index, uint64 value)
//	20+P  4  CRC32C of bytes 0..19+P

const (
	headerSize     = 4096
	headerMagic    = "DLOVRLY1"
	formatVersion  = 1
	recordMagic    = "DLRC"
	recHeaderSize  = 20
	recTrailerSize = 4
	recFull        = 1
	recDelta       = 2
	deltaEntrySize = 12

	maxIDLen     = 64
	maxBaseIDLen = 256

	defaultClusterSize = 4096
	minClusterSize     = 4096
	maxClusterSize     = 64 << 10
	// maxLayerClusters bounds the bitmap (32 MiB) and the owner index
	// (256 MiB) one layer can make us allocate: 1 TiB at 4 KiB clusters,
	// 16 TiB at 64 KiB.
	maxLayerClusters = 1 << 28
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Decoding errors. errShortRecord, errRecordMagic, errRecordHeader and
// errRecordCRC are what a write torn by a crash looks like; a record with
// a good checksum and bad contents is not torn but corrupt.
var (
	errShortHeader   = errors.New("header shorter than 4096 bytes")
	errHeaderMagic   = errors.New("bad header magic")
	errHeaderCRC     = errors.New("header checksum mismatch")
	errHeaderVersion = errors.New("unsupported format version")
	errHeaderField   = errors.New("invalid header field")

	errShortRecord  = errors.New("record cut short")
	errRecordMagic  = errors.New("bad record magic")
	errRecordHeader = errors.New("invalid record header")
	errRecordCRC    = errors.New("record checksum mismatch")
	errRecordBounds = errors.New("record entry out of bounds")
)

// layerHeader is the decoded meta header.
type layerHeader struct {
	clusterSize int
	size        int64
	created     int64 // Unix nanoseconds
	id          string
	parent      string
	baseID      string
}

// geometry is the cluster arithmetic of a virtual disk.
type geometry struct {
	size     int64
	cs       int64 // cluster size
	shift    uint  // log2(cs)
	clusters int64
	nwords   int    // bitmap words
	lastMask uint64 // valid bits of the last word
}

func newGeometry(size int64, clusterSize int) geometry {
	g := geometry{size: size, cs: int64(clusterSize), shift: uint(bits.TrailingZeros(uint(clusterSize)))}
	g.clusters = (size + g.cs - 1) >> g.shift
	g.nwords = int((g.clusters + 63) / 64)
	g.lastMask = ^uint64(0)
	if r := g.clusters % 64; r != 0 {
		g.lastMask = 1<<r - 1
	}
	return g
}

// clusterEnd is the byte end of cluster c: the last one may be short.
func (g *geometry) clusterEnd(c int64) int64 { return min((c+1)<<g.shift, g.size) }

// bitmapBytes is the size of the bitmap in memory and in a full record.
func (g *geometry) bitmapBytes() int64 { return int64(g.nwords) * 8 }

// fullRecordLen is the encoded length of a full record.
func (g *geometry) fullRecordLen() int { return recHeaderSize + 8*g.nwords + recTrailerSize }

// maxRecordLen bounds any valid record: a delta naming every word.
func (g *geometry) maxRecordLen() int {
	return recHeaderSize + deltaEntrySize*g.nwords + recTrailerSize
}

// validGeometry checks size and cluster size as found in a header or
// asked of CreateLayer, before anything is allocated from them.
func validGeometry(size int64, clusterSize int) error {
	if clusterSize < minClusterSize || clusterSize > maxClusterSize || clusterSize&(clusterSize-1) != 0 {
		return fmt.Errorf("%w: cluster size %d: want a power of two from %d to %d",
			errHeaderField, clusterSize, minClusterSize, maxClusterSize)
	}
	if size <= 0 || size%512 != 0 {
		return fmt.Errorf("%w: size %d: want a positive multiple of 512", errHeaderField, size)
	}
	if (size-1)/int64(clusterSize) >= maxLayerClusters {
		return fmt.Errorf("%w: size %d: more than %d clusters of %d bytes",
			errHeaderField, size, maxLayerClusters, clusterSize)
	}
	return nil
}

// validIDs checks the identity strings of a header.
func validIDs(id, parent, baseID string) error {
	switch {
	case id == "" || len(id) > maxIDLen:
		return fmt.Errorf("%w: layer ID %q: want 1 to %d bytes", errHeaderField, id, maxIDLen)
	case len(parent) > maxIDLen:
		return fmt.Errorf("%w: parent ID %q: want at most %d bytes", errHeaderField, parent, maxIDLen)
	case len(baseID) > maxBaseIDLen:
		return fmt.Errorf("%w: base identity of %d bytes: want at most %d", errHeaderField, len(baseID), maxBaseIDLen)
	case parent == id:
		return fmt.Errorf("%w: layer ID %q is its own parent", errHeaderField, id)
	}
	for _, s := range []string{id, parent, baseID} {
		if strings.IndexByte(s, 0) >= 0 {
			return fmt.Errorf("%w: NUL byte in %q", errHeaderField, s)
		}
	}
	return nil
}

// appendHeader appends the 4096-byte encoding of h.
func appendHeader(b []byte, h layerHeader) []byte {
	start := len(b)
	b = append(b, make([]byte, headerSize)...)
	p := b[start:]
	copy(p[0:], headerMagic)
	le := binary.LittleEndian
	le.PutUint32(p[8:], formatVersion)
	le.PutUint32(p[12:], uint32(h.clusterSize))
	le.PutUint64(p[16:], uint64(h.size))
	le.PutUint64(p[24:], uint64(h.created))
	p[32] = byte(len(h.id))
	p[33] = byte(len(h.parent))
	le.PutUint16(p[34:], uint16(len(h.baseID)))
	copy(p[64:64+maxIDLen], h.id)
	copy(p[128:128+maxIDLen], h.parent)
	copy(p[192:192+maxBaseIDLen], h.baseID)
	le.PutUint32(p[headerSize-4:], crc32.Checksum(p[:headerSize-4], castagnoli))
	return b
}

// parseHeader decodes a meta header. It accepts only the canonical
// encoding (padding and reserved bytes zero), so a header that parses
// re-encodes to the same bytes.
func parseHeader(b []byte) (layerHeader, error) {
	var h layerHeader
	if len(b) < headerSize {
		return h, errShortHeader
	}
	b = b[:headerSize]
	if string(b[:8]) != headerMagic {
		return h, errHeaderMagic
	}
	le := binary.LittleEndian
	if crc32.Checksum(b[:headerSize-4], castagnoli) != le.Uint32(b[headerSize-4:]) {
		return h, errHeaderCRC
	}
	if v := le.Uint32(b[8:]); v != formatVersion {
		return h, fmt.Errorf("%w %d (this build reads %d)", errHeaderVersion, v, formatVersion)
	}
	cs, size := le.Uint32(b[12:]), le.Uint64(b[16:])
	if cs > maxClusterSize || size > 1<<62 {
		return h, fmt.Errorf("%w: cluster size %d, size %d", errHeaderField, cs, size)
	}
	if err := validGeometry(int64(size), int(cs)); err != nil {
		return h, err
	}
	idLen, parentLen, baseLen := int(b[32]), int(b[33]), int(le.Uint16(b[34:]))
	if idLen > maxIDLen || parentLen > maxIDLen || baseLen > maxBaseIDLen {
		return h, fmt.Errorf("%w: string lengths %d, %d, %d", errHeaderField, idLen, parentLen, baseLen)
	}
	if !allZero(b[36:64]) || !allZero(b[64+idLen:128]) || !allZero(b[128+parentLen:192]) ||
		!allZero(b[192+baseLen:headerSize-4]) {
		return h, fmt.Errorf("%w: reserved bytes are not zero", errHeaderField)
	}
	h = layerHeader{
		clusterSize: int(cs),
		size:        int64(size),
		created:     int64(le.Uint64(b[24:])),
		id:          string(b[64 : 64+idLen]),
		parent:      string(b[128 : 128+parentLen]),
		baseID:      string(b[192 : 192+baseLen]),
	}
	if err := validIDs(h.id, h.parent, h.baseID); err != nil {
		return layerHeader{}, err
	}
	return h, nil
}

// record is a decoded log record; payload aliases the input.
type record struct {
	typ     byte
	seq     uint64
	count   int
	payload []byte
}

// parseRecordHeader checks the fixed part of a record against the bitmap
// of g and returns the record's encoded length, so the caller knows how
// much to read, at most g.maxRecordLen(), before it allocates.
func parseRecordHeader(b []byte, g *geometry) (int, error) {
	if len(b) < recHeaderSize {
		return 0, errShortRecord
	}
	if string(b[:4]) != recordMagic {
		return 0, errRecordMagic
	}
	count := binary.LittleEndian.Uint32(b[16:])
	if b[5]|b[6]|b[7] != 0 || uint64(count) > uint64(g.nwords) {
		return 0, errRecordHeader
	}
	switch b[4] {
	case recFull:
		if int(count) != g.nwords {
			return 0, errRecordHeader
		}
		return recHeaderSize + 8*int(count) + recTrailerSize, nil
	case recDelta:
		return recHeaderSize + deltaEntrySize*int(count) + recTrailerSize, nil
	}
	return 0, errRecordHeader
}

// parseRecord decodes the record at the start of b and returns its
// encoded length. Errors before the checksum is verified (see
// parseRecordHeader, errRecordCRC) may be a torn write; errRecordBounds
// comes with a good checksum and is corruption.
func parseRecord(b []byte, g *geometry) (record, int, error) {
	n, err := parseRecordHeader(b, g)
	if err != nil {
		return record{}, 0, err
	}
	if len(b) < n {
		return record{}, 0, errShortRecord
	}
	le := binary.LittleEndian
	if crc32.Checksum(b[:n-recTrailerSize], castagnoli) != le.Uint32(b[n-recTrailerSize:]) {
		return record{}, 0, errRecordCRC
	}
	r := record{typ: b[4], seq: le.Uint64(b[8:]), count: int(le.Uint32(b[16:])),
		payload: b[recHeaderSize : n-recTrailerSize]}
	last := g.nwords - 1
	switch r.typ {
	case recFull:
		if le.Uint64(r.payload[8*last:])&^g.lastMask != 0 {
			return record{}, 0, fmt.Errorf("%w: bit set beyond cluster %d", errRecordBounds, g.clusters)
		}
	case recDelta:
		for i := 0; i < r.count; i++ {
			e := r.payload[deltaEntrySize*i:]
			idx := int64(le.Uint32(e))
			switch {
			case idx > int64(last):
				return record{}, 0, fmt.Errorf("%w: word %d of %d", errRecordBounds, idx, g.nwords)
			case idx == int64(last) && le.Uint64(e[4:])&^g.lastMask != 0:
				return record{}, 0, fmt.Errorf("%w: bit set beyond cluster %d", errRecordBounds, g.clusters)
			}
		}
	}
	return r, n, nil
}

// word returns entry i of a parsed record: the word index and its value.
func (r *record) word(i int) (int, uint64) {
	le := binary.LittleEndian
	if r.typ == recFull {
		return i, le.Uint64(r.payload[8*i:])
	}
	e := r.payload[deltaEntrySize*i:]
	return int(le.Uint32(e)), le.Uint64(e[4:])
}

// beginRecord appends the fixed part of a record with count 0; entries
// follow (appendFullWord, appendDeltaWord) and finishRecord completes it.
func beginRecord(b []byte, typ byte, seq uint64) []byte {
	b = append(b, recordMagic...)
	b = append(b, typ, 0, 0, 0)
	b = binary.LittleEndian.AppendUint64(b, seq)
	return binary.LittleEndian.AppendUint32(b, 0)
}

func appendFullWord(b []byte, v uint64) []byte { return binary.LittleEndian.AppendUint64(b, v) }

func appendDeltaWord(b []byte, idx int, v uint64) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(idx))
	return binary.LittleEndian.AppendUint64(b, v)
}

// finishRecord sets the entry count of the record that starts at b[start:]
// and appends its checksum.
func finishRecord(b []byte, start, count int) []byte {
	binary.LittleEndian.PutUint32(b[start+16:], uint32(count))
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

// allZero reports whether b holds only zero bytes.
func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroChunk))
		if !bytes.Equal(b[:n], zeroChunk[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}
