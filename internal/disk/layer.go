package disk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// A layer is a directory holding data (a sparse file of the virtual size,
// each cluster at its own offset) and meta (a header and an append-only
// log of the bitmap of the clusters the layer owns); docs/overlay-format.md
// describes both. This file creates, opens, replays, appends to and
// checks them.

const (
	dataName    = "data"
	metaName    = "meta"
	metaTmpName = "meta.tmp"
)

// fdatasync and fsync are variables so tests can inject failures.
var (
	fdatasync = unix.Fdatasync
	fsync     = unix.Fsync
)

// LayerConfig describes a new layer.
type LayerConfig struct {
	// Size is the virtual disk size in bytes, a multiple of 512.
	Size int64
	// ClusterSize is the copy-on-write unit, a power of two from 4096 to
	// 65536. Default 4096.
	ClusterSize int
	// ID names this layer (1 to 64 bytes); Parent names the layer it
	// sits on, "" when that is the base image.
	ID, Parent string
	// BaseID identifies the version of the base image the stack was
	// built on (opaque, at most 256 bytes).
	BaseID string
}

// CorruptError reports layer metadata that cannot be trusted: a bad
// header, a record that is damaged although later records are intact, or
// a sequence that goes backwards. A torn tail (the last record cut short
// by a crash) is not corrupt: it is dropped.
type CorruptError struct {
	Path   string // the meta file
	Offset int64  // where the bad bytes start
	Err    error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("disk: %s: corrupt metadata at offset %d: %v", e.Path, e.Offset, e.Err)
}

func (e *CorruptError) Unwrap() error { return e.Err }

// ErrLayerInUse is returned (wrapped) when a layer is already open
// elsewhere in a way that excludes this use: a top is open for writing by
// one overlay only, and a layer is merged only when no other overlay has
// it open.
var ErrLayerInUse = errors.New("disk: layer is in use by another overlay")

// CreateLayer makes an empty layer in dir, which is created and must not
// exist or be empty. The meta file appears last (renamed into place), so a
// crash leaves either a complete layer or a directory without meta that
// the caller removes.
func CreateLayer(dir string, cfg LayerConfig) error {
	if cfg.ClusterSize == 0 {
		cfg.ClusterSize = defaultClusterSize
	}
	if err := validGeometry(cfg.Size, cfg.ClusterSize); err != nil {
		return fmt.Errorf("disk: create layer %s: %w", dir, err)
	}
	if err := validIDs(cfg.ID, cfg.Parent, cfg.BaseID); err != nil {
		return fmt.Errorf("disk: create layer %s: %w", dir, err)
	}
	if err := os.Mkdir(dir, 0o750); err != nil {
		if !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("disk: create layer: %w", err)
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("disk: create layer: %w", err)
		}
		if len(ents) > 0 {
			return fmt.Errorf("disk: create layer %s: directory is not empty", dir)
		}
	}
	data, err := os.OpenFile(filepath.Join(dir, dataName), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return fmt.Errorf("disk: create layer: %w", err)
	}
	err = data.Truncate(cfg.Size)
	if err == nil {
		err = fsync(int(data.Fd()))
	}
	if cerr := data.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("disk: create layer %s: data: %w", dir, err)
	}
	hdr := layerHeader{clusterSize: cfg.ClusterSize, size: cfg.Size, created: time.Now().UnixNano(),
		id: cfg.ID, parent: cfg.Parent, baseID: cfg.BaseID}
	meta, _, err := writeMeta(dir, hdr, nil, 0)
	if err != nil {
		return fmt.Errorf("disk: create layer: %w", err)
	}
	meta.Close()
	if err := syncDir(filepath.Dir(filepath.Clean(dir))); err != nil {
		return fmt.Errorf("disk: create layer: %w", err)
	}
	return nil
}

// writeMeta replaces dir/meta with a new file holding hdr and, unless
// words is nil, one full record of words with sequence seq: it writes
// meta.tmp, syncs it, renames it over meta and syncs dir. The new file is
// returned open for appending. committed tells whether the rename
// happened: before it a failure leaves the old meta as it was; after it
// (the directory sync failed) which one survives a crash is unknown.
func writeMeta(dir string, hdr layerHeader, words []uint64, seq uint64) (f *os.File, committed bool, err error) {
	tmp := filepath.Join(dir, metaTmpName)
	f, err = os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return nil, false, fmt.Errorf("meta: %w", err)
	}
	g := newGeometry(hdr.size, hdr.clusterSize)
	n := headerSize
	if words != nil {
		n += g.fullRecordLen()
	}
	b := appendHeader(make([]byte, 0, n), hdr)
	if words != nil {
		start := len(b)
		b = beginRecord(b, recFull, seq)
		for _, w := range words {
			b = appendFullWord(b, w)
		}
		b = finishRecord(b, start, len(words))
	}
	if err = pwriteFull(int(f.Fd()), b, 0); err == nil {
		err = fsync(int(f.Fd()))
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, metaName))
	}
	if err != nil {
		f.Close()
		os.Remove(tmp)
		return nil, false, fmt.Errorf("meta %s: %w", tmp, noSpace(err))
	}
	if err := syncDir(dir); err != nil {
		return f, true, err
	}
	return f, true, nil
}

// syncDir makes the entries of dir durable (a rename or a new file).
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	defer d.Close()
	if err := fsync(int(d.Fd())); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// logState is where a layer's log stands after replay.
type logState struct {
	end     int64  // offset after the last good record: the next append goes here
	seq     uint64 // sequence number of the last good record, 0 without any
	records int    // good records
	torn    bool   // bytes after end are a torn tail
	size    int64  // size of the file
}

// metaState is an opened meta file and what its log says.
type metaState struct {
	path string
	f    *os.File
	hdr  layerHeader
	g    geometry
	bits *bitmap
	log  logState
}

// openMeta opens dir/meta, checks its header and replays its log into a
// new bitmap (with dirty tracking when track). Writable opens read-write
// and cuts a torn tail off, durably, so appends follow the last good
// record; a read-only open leaves the file as it is.
func openMeta(dir string, writable, track bool) (*metaState, error) {
	path := filepath.Join(dir, metaName)
	flag := os.O_RDONLY
	if writable {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("disk: layer: %w", err)
	}
	m, err := readMeta(f, path, track)
	if err == nil && writable && m.log.torn {
		if err = f.Truncate(m.log.end); err == nil {
			err = fsync(int(f.Fd()))
		}
		if err != nil {
			err = fmt.Errorf("disk: %s: cut torn tail at %d: %w", path, m.log.end, err)
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return m, nil
}

// readMeta checks the header of f and replays its log.
func readMeta(f *os.File, path string, track bool) (*metaState, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("disk: stat %s: %w", path, err)
	}
	hb := make([]byte, headerSize)
	if st.Size < headerSize {
		return nil, &CorruptError{Path: path, Err: errShortHeader}
	}
	if err := preadFull(int(f.Fd()), hb, 0); err != nil {
		return nil, fmt.Errorf("disk: read %s: %w", path, err)
	}
	hdr, err := parseHeader(hb)
	if err != nil {
		return nil, &CorruptError{Path: path, Err: err}
	}
	m := &metaState{path: path, f: f, hdr: hdr, g: newGeometry(hdr.size, hdr.clusterSize)}
	m.bits = newBitmap(&m.g, track)
	m.log, err = replayLog(f, path, st.Size, &m.g, m.bits)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// tornRecord reports a decoding error that a crash in the middle of an
// append can leave behind.
func tornRecord(err error) bool {
	return errors.Is(err, errShortRecord) || errors.Is(err, errRecordMagic) ||
		errors.Is(err, errRecordHeader) || errors.Is(err, errRecordCRC)
}

// replayLog applies the records of f in order to b (empty, not dirty
// tracked while replaying). The first record that is torn ends the log,
// unless a valid record with a higher sequence number follows somewhere
// after it: then synced data would be dropped, and the log is refused as
// corrupt instead.
func replayLog(f *os.File, path string, size int64, g *geometry, b *bitmap) (logState, error) {
	st := logState{end: headerSize, size: size}
	var buf []byte
	for st.end < size {
		r, n, err := readRecordAt(f, st.end, size, g, &buf)
		if err != nil {
			if !tornRecord(err) {
				return st, &CorruptError{Path: path, Offset: st.end, Err: err}
			}
			off, seq, found, serr := scanForRecord(f, st.end+1, size, g, st.seq, &buf)
			switch {
			case serr != nil:
				return st, fmt.Errorf("disk: read %s: %w", path, serr)
			case found:
				return st, &CorruptError{Path: path, Offset: st.end, Err: fmt.Errorf(
					"%w, yet a valid record (sequence %d) follows at offset %d: damage inside the log, not a torn tail",
					err, seq, off)}
			}
			st.torn = true
			return st, nil
		}
		if r.seq <= st.seq {
			return st, &CorruptError{Path: path, Offset: st.end,
				Err: fmt.Errorf("sequence %d does not follow %d", r.seq, st.seq)}
		}
		for i := 0; i < r.count; i++ {
			idx, v := r.word(i)
			b.words[idx].Store(v)
		}
		st.seq = r.seq
		st.records++
		st.end += int64(n)
	}
	return st, nil
}

// readRecordAt reads and decodes the record at off, reading no more than
// the record header allows (at most g.maxRecordLen()) into *buf.
func readRecordAt(f *os.File, off, size int64, g *geometry, buf *[]byte) (record, int, error) {
	var hb [recHeaderSize]byte
	if size-off < recHeaderSize {
		return record{}, 0, errShortRecord
	}
	if err := preadFull(int(f.Fd()), hb[:], off); err != nil {
		return record{}, 0, err
	}
	n, err := parseRecordHeader(hb[:], g)
	if err != nil {
		return record{}, 0, err
	}
	if int64(n) > size-off {
		return record{}, 0, errShortRecord
	}
	if cap(*buf) < n {
		*buf = make([]byte, n)
	}
	b := (*buf)[:n]
	if err := preadFull(int(f.Fd()), b, off); err != nil {
		return record{}, 0, err
	}
	return parseRecord(b, g)
}

// scanForRecord looks in [from, size) for a valid record with a sequence
// number above after.
func scanForRecord(f *os.File, from, size int64, g *geometry, after uint64, buf *[]byte) (int64, uint64, bool, error) {
	const chunk = 64 << 10
	win := make([]byte, chunk+len(recordMagic)-1)
	for pos := from; pos < size; pos += chunk {
		w := win[:min(int64(len(win)), size-pos)]
		if err := preadFull(int(f.Fd()), w, pos); err != nil {
			return 0, 0, false, err
		}
		for i := 0; i < len(w) && i < chunk; {
			j := bytes.Index(w[i:], []byte(recordMagic))
			if j < 0 || i+j >= chunk {
				break
			}
			off := pos + int64(i+j)
			r, _, err := readRecordAt(f, off, size, g, buf)
			if err == nil && r.seq > after {
				return off, r.seq, true, nil
			}
			if err != nil && !tornRecord(err) && !errors.Is(err, errRecordBounds) {
				return 0, 0, false, err
			}
			i += j + 1
		}
	}
	return 0, 0, false, nil
}

// LayerInfo is what CheckLayer found in a layer.
type LayerInfo struct {
	Dir         string
	ID          string
	Parent      string // "" when the layer sits on the base
	BaseID      string
	Created     time.Time
	ClusterSize int
	Size        int64  // virtual size in bytes
	Clusters    int64  // clusters in the virtual disk
	Owned       int64  // clusters the layer owns
	Records     int    // valid records in the log
	LastSeq     uint64 // sequence number of the last valid record
	MetaBytes   int64  // size of meta, torn tail included
	DataBytes   int64  // bytes allocated to data (it is sparse)
	// TornTail is set when bytes after the last valid record are the
	// remains of an append cut short by a crash. It is not an error:
	// those writes were never acknowledged, and the next writable open
	// cuts them off.
	TornTail bool
}

// CheckLayer verifies the layer in dir: header, every record (checksum,
// bounds, sequence order), and the data file and its size. It fails on
// corruption (a *CorruptError), on a layer open for writing by an overlay
// (ErrLayerInUse: its log is moving), and on a missing or mis-sized data
// file. It changes nothing.
func CheckLayer(dir string) (LayerInfo, error) { return checkLayer(dir, true) }

// checkLayer is CheckLayer; without lock it checks a layer an overlay
// holds, which must keep its metadata still meanwhile (Overlay.Check).
func checkLayer(dir string, lock bool) (LayerInfo, error) {
	info := LayerInfo{Dir: dir}
	dpath := filepath.Join(dir, dataName)
	data, err := os.Open(dpath)
	if err != nil {
		return info, fmt.Errorf("disk: check layer: %w", err)
	}
	defer data.Close()
	if lock {
		if err := lockFile(data, false); err != nil {
			return info, fmt.Errorf("disk: check layer %s: %w", dir, err)
		}
	}
	m, err := openMeta(dir, false, false)
	if err != nil {
		return info, err
	}
	defer m.f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(data.Fd()), &st); err != nil {
		return info, fmt.Errorf("disk: stat %s: %w", dpath, err)
	}
	info.ID, info.Parent, info.BaseID = m.hdr.id, m.hdr.parent, m.hdr.baseID
	info.Created = time.Unix(0, m.hdr.created)
	info.ClusterSize, info.Size, info.Clusters = m.hdr.clusterSize, m.hdr.size, m.g.clusters
	info.Owned = m.bits.count()
	info.Records, info.LastSeq, info.TornTail = m.log.records, m.log.seq, m.log.torn
	info.MetaBytes, info.DataBytes = m.log.size, st.Blocks*512
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return info, fmt.Errorf("disk: check layer: %s is not a regular file", dpath)
	}
	if st.Size != m.hdr.size {
		return info, fmt.Errorf("disk: check layer: %s holds %d bytes, the header says %d", dpath, st.Size, m.hdr.size)
	}
	return info, nil
}

// lockFile takes a shared or exclusive flock on f without waiting: one
// writer of a top, any number of readers of a lower layer.
func lockFile(f *os.File, exclusive bool) error {
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case err == unix.EINTR:
			continue
		case err == unix.EWOULDBLOCK:
			return fmt.Errorf("%s: %w", f.Name(), ErrLayerInUse)
		}
		return fmt.Errorf("flock %s: %w", f.Name(), err)
	}
}

// preadFull reads len(b) bytes at off: a short file is io.ErrUnexpectedEOF.
// It is a bare pread(2) loop, with no allocation.
func preadFull(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pread(fd, b, off)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return err
		case n == 0:
			return io.ErrUnexpectedEOF
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// pwriteFull writes all of b at off.
func pwriteFull(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return err
		case n == 0:
			return io.ErrShortWrite
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// noSpace wraps ENOSPC and EDQUOT so they match ErrNoSpace.
func noSpace(err error) error {
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
		return fmt.Errorf("%w (%w)", ErrNoSpace, err)
	}
	return err
}
