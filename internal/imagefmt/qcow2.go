package imagefmt

// A reader for qcow2 versions 2 and 3 as QEMU writes them, after QEMU's
// docs/interop/qcow2.txt ("the spec" below). Written here because the
// qcow2 reader library we wanted could not be had; it reads only what an
// import needs: the header, the active L1/L2 tables and the clusters.
//
// Header (big endian; v2 stops at 72, v3 has header_length bytes):
//
//	 0 magic "QFI\xfb"          4 version
//	 8 backing_file_offset     16 backing_file_size
//	20 cluster_bits            24 size (virtual, bytes)
//	32 crypt_method            36 l1_size (entries)
//	40 l1_table_offset         48 refcount_table_offset
//	56 refcount_table_clusters 60 nb_snapshots
//	64 snapshots_offset
//	72 incompatible_features   80 compatible_features (v3)
//	88 autoclear_features      96 refcount_order
//	100 header_length          104 compression_type (if header_length > 104)
//
// A virtual offset splits into an L1 index, an L2 index and an offset in
// the cluster; L1 entries point at L2 tables of cluster_size/8 entries,
// L2 entries at data clusters. Refcounts and snapshots do not matter for
// reading the active image and are ignored.
//
// Refused: backing files (never followed: the path comes from an untrusted
// image), encryption, external data files, extended L2 entries, zstd
// compression, version 1, and images marked corrupt.

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

const (
	qcow2V2HeaderLen = 72
	qcow2V3HeaderLen = 104
	// qcow2ProbeLen is how much of the header newQCOW2 reads: through
	// compression_type, padded to 8 as the spec pads header_length.
	qcow2ProbeLen = 112

	// QEMU's limits (block/qcow2.h): MIN/MAX_CLUSTER_BITS, and
	// QCOW_MAX_L1_SIZE, which bounds the L1 table to 32 MiB.
	qcow2MinClusterBits = 9
	qcow2MaxClusterBits = 21
	qcow2MaxL1Bytes     = 32 << 20
	// qcow2MaxSize keeps every offset computation far from overflow.
	qcow2MaxSize = 1 << 60

	// Incompatible feature bits (spec, "incompatible_features").
	qcow2IncompatDirty        = 1 << 0
	qcow2IncompatCorrupt      = 1 << 1
	qcow2IncompatDataFile     = 1 << 2
	qcow2IncompatCompression  = 1 << 3
	qcow2IncompatExtendedL2   = 1 << 4
	qcow2IncompatKnownAndRead = qcow2IncompatDirty | qcow2IncompatCompression

	// L1 and standard L2 entries (spec, "Cluster mapping"): the host
	// offset in bits 9-55, bit 62 compressed, bit 63 COPIED, bit 0 of a
	// standard L2 entry "reads as zeros"; the rest is reserved and set
	// only in a corrupt image (QEMU's L1E/L2E_*_RESERVED_MASK).
	qcow2OffsetMask     = 0x00fffffffffffe00
	qcow2L1Reserved     = 0x7f000000000001ff
	qcow2L2StdReserved  = 0x3f000000000001fe
	qcow2L2Compressed   = 1 << 62
	qcow2L2ZeroFlag     = 1 << 0
	qcow2CompressedUnit = 512 // compressed sizes count 512-byte sectors

	// qcow2L2CacheTables is how many L2 tables a reader keeps: 8 tables
	// of at most 2 MiB each, and a sequential import needs one at a time.
	qcow2L2CacheTables = 8
)

// qcow2Header holds the header fields the reader uses.
type qcow2Header struct {
	version           uint32
	backingFileOffset uint64
	clusterBits       uint32
	size              uint64
	cryptMethod       uint32
	l1Size            uint32
	l1TableOffset     uint64
	incompatible      uint64
	headerLength      uint32
	compressionType   uint8
}

// parseQCOW2Header decodes and checks the header at the start of b (at
// least 72 bytes; 104 or more for version 3).
func parseQCOW2Header(b []byte) (qcow2Header, error) {
	var h qcow2Header
	if len(b) < qcow2V2HeaderLen {
		return h, fmt.Errorf("qcow2: header is %d bytes, need %d: %w", len(b), qcow2V2HeaderLen, ErrMalformed)
	}
	if !bytes.HasPrefix(b, qcow2Magic) {
		return h, fmt.Errorf("qcow2: bad magic %q: %w", b[:4], ErrMalformed)
	}
	be := binary.BigEndian
	h.version = be.Uint32(b[4:])
	h.backingFileOffset = be.Uint64(b[8:])
	h.clusterBits = be.Uint32(b[20:])
	h.size = be.Uint64(b[24:])
	h.cryptMethod = be.Uint32(b[32:])
	h.l1Size = be.Uint32(b[36:])
	h.l1TableOffset = be.Uint64(b[40:])
	switch h.version {
	case 2:
		h.headerLength = qcow2V2HeaderLen
	case 3:
		if len(b) < qcow2V3HeaderLen {
			return h, fmt.Errorf("qcow2: v3 header is %d bytes, need %d: %w", len(b), qcow2V3HeaderLen, ErrMalformed)
		}
		h.incompatible = be.Uint64(b[72:])
		h.headerLength = be.Uint32(b[100:])
		// Spec: header_length is at least 104 and a multiple of 8.
		if h.headerLength < qcow2V3HeaderLen || h.headerLength%8 != 0 {
			return h, fmt.Errorf("qcow2: header_length %d: %w", h.headerLength, ErrMalformed)
		}
		if h.headerLength > qcow2V3HeaderLen && len(b) > qcow2V3HeaderLen {
			h.compressionType = b[104]
		}
	case 1:
		return h, &UnsupportedError{Format: QCOW2, Feature: "qcow version 1",
			Hint: "convert it with qemu-img convert -O qcow2 first"}
	default:
		return h, &UnsupportedError{Format: QCOW2, Feature: fmt.Sprintf("version %d", h.version)}
	}
	if h.clusterBits < qcow2MinClusterBits || h.clusterBits > qcow2MaxClusterBits {
		return h, fmt.Errorf("qcow2: cluster_bits %d outside [%d,%d]: %w",
			h.clusterBits, qcow2MinClusterBits, qcow2MaxClusterBits, ErrMalformed)
	}
	if uint64(h.headerLength) > uint64(1)<<h.clusterBits {
		return h, fmt.Errorf("qcow2: header_length %d beyond the first cluster: %w", h.headerLength, ErrMalformed)
	}
	// The refusals: each would make the image's bytes depend on
	// something other than this file, or on a key.
	if h.backingFileOffset != 0 {
		return h, &UnsupportedError{Format: QCOW2, Feature: "a backing file",
			Hint: "backing files are never opened from an uploaded image; flatten it first: qemu-img convert -O qcow2 IMAGE FLAT.qcow2"}
	}
	if h.cryptMethod != 0 {
		return h, &UnsupportedError{Format: QCOW2, Feature: fmt.Sprintf("encryption (method %d)", h.cryptMethod),
			Hint: "decrypt it first with qemu-img convert"}
	}
	if h.incompatible&qcow2IncompatCorrupt != 0 {
		return h, fmt.Errorf("qcow2: image is marked corrupt (repair it with qemu-img check -r all): %w", ErrMalformed)
	}
	if h.incompatible&qcow2IncompatDataFile != 0 {
		return h, &UnsupportedError{Format: QCOW2, Feature: "an external data file",
			Hint: "external data files are never opened from an uploaded image; convert it first: qemu-img convert -O qcow2"}
	}
	if h.incompatible&qcow2IncompatExtendedL2 != 0 {
		return h, &UnsupportedError{Format: QCOW2, Feature: "extended L2 entries (subclusters)",
			Hint: "convert it first: qemu-img convert -O qcow2"}
	}
	if unknown := h.incompatible &^ (qcow2IncompatKnownAndRead | qcow2IncompatCorrupt |
		qcow2IncompatDataFile | qcow2IncompatExtendedL2); unknown != 0 {
		return h, &UnsupportedError{Format: QCOW2, Feature: fmt.Sprintf("unknown incompatible features %#x", unknown)}
	}
	// Spec: compression_type is non-zero exactly when the incompatible
	// bit says so; 0 is deflate, 1 zstd.
	compressionBit := h.incompatible&qcow2IncompatCompression != 0
	if compressionBit != (h.compressionType != 0) {
		return h, fmt.Errorf("qcow2: compression_type %d disagrees with the incompatible feature bit: %w",
			h.compressionType, ErrMalformed)
	}
	if h.compressionType != 0 {
		return h, &UnsupportedError{Format: QCOW2, Feature: fmt.Sprintf("compression type %d (zstd)", h.compressionType),
			Hint: "recompress it with zlib: qemu-img convert -c -O qcow2 -o compression_type=zlib"}
	}
	if h.size > qcow2MaxSize {
		return h, fmt.Errorf("qcow2: virtual size %d: %w", h.size, ErrMalformed)
	}
	return h, nil
}

// qcow2 reads the active image of a qcow2 file. Safe for concurrent use:
// the caches are behind mu, and cached L2 tables are never written again
// once filled, so a table can be read after mu is released.
type qcow2 struct {
	r           io.ReaderAt
	fileSize    int64
	size        int64
	clusterBits uint
	clusterSize int64
	l2Bits      uint     // log2 of entries per L2 table
	l1          []uint64 // the L1 entries that cover size, checked

	mu       sync.Mutex
	l2       [qcow2L2CacheTables]qcow2Table
	l2Tick   uint64
	zbuf     []byte        // compressed bytes of one cluster
	zcluster []byte        // the last decompressed cluster
	zentry   uint64        // the L2 entry zcluster came from; 0 none
	inflate  io.ReadCloser // reused deflate reader
}

type qcow2Table struct {
	off  uint64 // host offset; 0 for a free slot
	used uint64 // l2Tick when last used
	data []byte
}

// newQCOW2 reads and checks the header and L1 table of the qcow2 image in
// the first fileSize bytes of r. It allocates nothing that the file does
// not hold: the L1 table is checked to lie inside the file first.
func newQCOW2(r io.ReaderAt, fileSize int64) (*qcow2, error) {
	hb := make([]byte, min(fileSize, qcow2ProbeLen))
	if n, err := r.ReadAt(hb, 0); n < len(hb) {
		return nil, fmt.Errorf("qcow2: read header: %w", err)
	}
	h, err := parseQCOW2Header(hb)
	if err != nil {
		return nil, err
	}
	q := &qcow2{
		r:           r,
		fileSize:    fileSize,
		size:        int64(h.size),
		clusterBits: uint(h.clusterBits),
		clusterSize: 1 << h.clusterBits,
		l2Bits:      uint(h.clusterBits) - 3,
	}
	// Spec: l1_size must cover the virtual size; QEMU refuses smaller
	// tables ("L1 table is too small") and larger than 32 MiB.
	perL1 := uint(q.clusterBits + q.l2Bits)
	need := (h.size + (1 << perL1) - 1) >> perL1
	if need*8 > qcow2MaxL1Bytes || uint64(h.l1Size)*8 > qcow2MaxL1Bytes {
		return nil, fmt.Errorf("qcow2: L1 table of %d entries (virtual size %d) exceeds %d bytes: %w",
			max(need, uint64(h.l1Size)), h.size, qcow2MaxL1Bytes, ErrMalformed)
	}
	if uint64(h.l1Size) < need {
		return nil, fmt.Errorf("qcow2: L1 table has %d entries, virtual size %d needs %d: %w",
			h.l1Size, h.size, need, ErrMalformed)
	}
	if need > 0 {
		if h.l1TableOffset%uint64(q.clusterSize) != 0 || h.l1TableOffset > uint64(fileSize) ||
			need*8 > uint64(fileSize)-h.l1TableOffset {
			return nil, fmt.Errorf("qcow2: L1 table at %#x (%d entries) is not inside the %d-byte file: %w",
				h.l1TableOffset, need, fileSize, ErrMalformed)
		}
		raw := make([]byte, need*8)
		if n, err := r.ReadAt(raw, int64(h.l1TableOffset)); n < len(raw) {
			return nil, fmt.Errorf("qcow2: read L1 table: %w", err)
		}
		q.l1 = make([]uint64, need)
		for i := range q.l1 {
			e := binary.BigEndian.Uint64(raw[i*8:])
			if err := q.checkTableOffset(e, qcow2L1Reserved); err != nil {
				return nil, fmt.Errorf("qcow2: L1 entry %d: %w", i, err)
			}
			q.l1[i] = e & qcow2OffsetMask
		}
	}
	return q, nil
}

// checkTableOffset checks an L1 entry: no reserved bits, and an L2 table
// that is cluster aligned and inside the file.
func (q *qcow2) checkTableOffset(e, reserved uint64) error {
	if e&reserved != 0 {
		return fmt.Errorf("reserved bits set in %#x: %w", e, ErrMalformed)
	}
	off := e & qcow2OffsetMask
	if off == 0 {
		return nil
	}
	if off%uint64(q.clusterSize) != 0 || off > uint64(q.fileSize) || uint64(q.clusterSize) > uint64(q.fileSize)-off {
		return fmt.Errorf("L2 table at %#x is not a cluster inside the %d-byte file: %w", off, q.fileSize, ErrMalformed)
	}
	return nil
}

func (q *qcow2) Size() int64    { return q.size }
func (q *qcow2) Format() Format { return QCOW2 }

// qcow2Cluster is what an L2 entry says about one virtual cluster.
type qcow2Cluster struct {
	zero       bool   // reads as zeros: unallocated or the zero flag
	compressed bool   // host..host+csize holds deflate data
	host       uint64 // host offset of the data
	csize      int64  // compressed length in the file
	entry      uint64 // the raw L2 entry, to key the decompressed cache
}

// decodeL2 interprets one L2 entry (spec, "Standard Cluster Descriptor"
// and "Compressed Clusters Descriptor").
func (q *qcow2) decodeL2(e uint64) (qcow2Cluster, error) {
	c := qcow2Cluster{entry: e}
	if e&qcow2L2Compressed != 0 {
		// x = 62 - (cluster_bits - 8): host offset in bits 0..x-1,
		// additional 512-byte sectors in bits x..61.
		x := 62 - (q.clusterBits - 8)
		c.compressed = true
		c.host = e & (1<<x - 1)
		sectors := (e>>x)&(1<<(q.clusterBits-8)-1) + 1
		c.csize = int64(sectors)*qcow2CompressedUnit - int64(c.host%qcow2CompressedUnit)
		if c.host == 0 || c.host >= uint64(q.fileSize) {
			return c, fmt.Errorf("compressed cluster at %#x outside the %d-byte file: %w", c.host, q.fileSize, ErrMalformed)
		}
		return c, nil
	}
	if e&qcow2L2StdReserved != 0 {
		return c, fmt.Errorf("reserved bits set in L2 entry %#x: %w", e, ErrMalformed)
	}
	c.host = e & qcow2OffsetMask
	if e&qcow2L2ZeroFlag != 0 || c.host == 0 {
		// Without a backing file an unallocated cluster reads as zeros.
		c.zero = true
		return c, nil
	}
	if c.host%uint64(q.clusterSize) != 0 || c.host >= uint64(q.fileSize) {
		return c, fmt.Errorf("data cluster at %#x is not a cluster inside the %d-byte file: %w", c.host, q.fileSize, ErrMalformed)
	}
	return c, nil
}

// l2Table returns the L2 table at host offset off, from the cache or the
// file. The returned slice is never modified afterwards.
func (q *qcow2) l2Table(off uint64) ([]byte, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.l2Tick++
	victim := 0
	for i := range q.l2 {
		t := &q.l2[i]
		if t.off == off && t.data != nil {
			t.used = q.l2Tick
			return t.data, nil
		}
		if t.used < q.l2[victim].used {
			victim = i
		}
	}
	data := make([]byte, q.clusterSize) // fresh: readers may hold the evicted one
	if n, err := q.r.ReadAt(data, int64(off)); n < len(data) {
		return nil, fmt.Errorf("read L2 table at %#x: %w", off, err)
	}
	q.l2[victim] = qcow2Table{off: off, used: q.l2Tick, data: data}
	return data, nil
}

// cluster looks up virtual cluster vc.
func (q *qcow2) cluster(vc int64) (qcow2Cluster, error) {
	l1i := vc >> q.l2Bits
	if q.l1[l1i] == 0 {
		return qcow2Cluster{zero: true}, nil
	}
	t, err := q.l2Table(q.l1[l1i])
	if err != nil {
		return qcow2Cluster{}, err
	}
	l2i := vc & (1<<q.l2Bits - 1)
	return q.decodeL2(binary.BigEndian.Uint64(t[l2i*8:]))
}

// ReadAt reads the virtual disk. A data cluster that lies (partly) past the
// end of the file reads as zeros there, as in QEMU.
func (q *qcow2) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("qcow2: read at negative offset %d", off)
	}
	n := 0
	for n < len(p) {
		if off >= q.size {
			return n, io.EOF
		}
		in := off & (q.clusterSize - 1)
		chunk := p[n:min(len(p), n+int(min(q.clusterSize-in, q.size-off)))]
		c, err := q.cluster(off >> q.clusterBits)
		if err != nil {
			return n, fmt.Errorf("qcow2: cluster at virtual %#x: %w", off, err)
		}
		switch {
		case c.zero:
			clear(chunk)
		case c.compressed:
			err = q.readCompressed(chunk, c, in)
		default:
			err = q.readHost(chunk, int64(c.host)+in)
		}
		if err != nil {
			return n, fmt.Errorf("qcow2: cluster at virtual %#x: %w", off, err)
		}
		n += len(chunk)
		off += int64(len(chunk))
	}
	return n, nil
}

// readHost fills p from the file at off, with zeros past its end.
func (q *qcow2) readHost(p []byte, off int64) error {
	n, err := q.r.ReadAt(p, off)
	if n < len(p) {
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		clear(p[n:])
	}
	return nil
}

// readCompressed copies the decompressed cluster c, from offset in, to p.
// The last cluster decompressed is kept, so reads smaller than a cluster
// inflate it once.
func (q *qcow2) readCompressed(p []byte, c qcow2Cluster, in int64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.zentry != c.entry || q.zcluster == nil {
		if err := q.inflateCluster(c); err != nil {
			q.zentry = 0
			return err
		}
		q.zentry = c.entry
	}
	copy(p, q.zcluster[in:])
	return nil
}

// inflateCluster decompresses c into q.zcluster. Spec: a compressed
// cluster is raw deflate (no zlib header) that must inflate to exactly one
// cluster; bytes after the stream are padding. Its sector count may reach
// past the end of the file, which reads as zeros. Called with mu held.
func (q *qcow2) inflateCluster(c qcow2Cluster) error {
	if q.zcluster == nil {
		q.zcluster = make([]byte, q.clusterSize)
		// csize is at most 2^(cluster_bits-8) sectors of 512 bytes,
		// i.e. two clusters.
		q.zbuf = make([]byte, 2*q.clusterSize)
	}
	z := q.zbuf[:c.csize]
	if err := q.readHost(z, int64(c.host)); err != nil {
		return err
	}
	if q.inflate == nil {
		q.inflate = flate.NewReader(bytes.NewReader(z))
	} else if err := q.inflate.(flate.Resetter).Reset(bytes.NewReader(z), nil); err != nil {
		return err
	}
	if _, err := io.ReadFull(q.inflate, q.zcluster); err != nil {
		return fmt.Errorf("compressed cluster at %#x does not inflate to %d bytes (%v): %w",
			c.host, q.clusterSize, err, ErrMalformed)
	}
	return nil
}

// Extents walks the L1 and L2 tables: unallocated L2 tables, unallocated
// clusters and zero-flagged clusters are zero extents. Adjacent extents of
// the same kind are merged.
func (q *qcow2) Extents(fn func(off, length int64, zero bool) error) error {
	var cur struct {
		off, n int64
		zero   bool
	}
	emit := func(off, n int64, zero bool) error {
		if cur.n > 0 && cur.zero == zero && cur.off+cur.n == off {
			cur.n += n
			return nil
		}
		if cur.n > 0 {
			if err := fn(cur.off, cur.n, cur.zero); err != nil {
				return err
			}
		}
		cur.off, cur.n, cur.zero = off, n, zero
		return nil
	}
	perL1 := int64(1) << (q.clusterBits + q.l2Bits)
	for i, l2off := range q.l1 {
		start := int64(i) * perL1
		end := min(start+perL1, q.size)
		if l2off == 0 {
			if err := emit(start, end-start, true); err != nil {
				return err
			}
			continue
		}
		t, err := q.l2Table(l2off)
		if err != nil {
			return fmt.Errorf("qcow2: L1 entry %d: %w", i, err)
		}
		for off := start; off < end; off += q.clusterSize {
			c, err := q.decodeL2(binary.BigEndian.Uint64(t[((off-start)>>q.clusterBits)*8:]))
			if err != nil {
				return fmt.Errorf("qcow2: cluster at virtual %#x: %w", off, err)
			}
			if err := emit(off, min(q.clusterSize, end-off), c.zero); err != nil {
				return err
			}
		}
	}
	if cur.n > 0 {
		return fn(cur.off, cur.n, cur.zero)
	}
	return nil
}
