package disk

import (
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// An Overlay is a writable disk on top of a read-only base image and zero
// or more read-only lower layers (docs/overlay-format.md). Each read is a
// pread from whichever file holds the clusters: the top layer when it owns
// them, else the topmost lower layer that does, else the base. Writes go
// to the top; a cluster the top does not own yet is copied up first when
// the write covers only part of it.

const (
	maxLowerLayers = 250 // the owner index holds a layer number in a byte
	nStripes       = 256 // copy-up locks, by cluster index
	srcBase        = 0   // source of a cluster: the base image
	srcTop         = -1  // source of a cluster: the top layer; i > 0 is lower layer i
)

// ErrLayerMismatch is returned (wrapped) when the layers given to
// OpenOverlay do not form one stack: sizes, cluster sizes, base identity
// or the parent chain disagree.
var ErrLayerMismatch = errors.New("disk: layers do not form a stack")

var (
	errClosed       = errors.New("disk: overlay is closed")
	errBaseNotFile  = errors.New("disk: overlay: base image is not file-backed")
	errMergeAborted = errors.New("disk: merge not committed")
)

// clusterPool holds the buffers a copy-up reads a cluster into.
var clusterPool = sync.Pool{New: func() any { b := make([]byte, maxClusterSize); return &b }}

// recordPool holds the buffers flushes encode records into.
var recordPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// OverlayOptions configures OpenOverlay.
type OverlayOptions struct {
	// ReadOnly opens the top read-only too: every write fails with
	// ErrReadOnly and Flush has nothing to do.
	ReadOnly bool
	// Name is used in errors and logs, e.g. the host name. Default: the
	// top layer directory's name.
	Name string
	// Logger receives state changes (open, push, merge, failure);
	// nothing is logged per I/O except a rate-limited note when the
	// backing store is full. Default: discard.
	Logger *slog.Logger
	// BaseID, when set, must be the base identity of every layer.
	BaseID string
	// Failed, when set, opens the overlay failed (see Failer) with this
	// error: a failure seen through an earlier open that nobody cleared.
	// What that failure lost is not in the layers, and nothing reopened
	// could tell. Default: healthy.
	Failed error
	// OnFail, when set, is called once when a flush fails the overlay,
	// with the flush's error (so the caller can remember the failure
	// across a restart). Default: none.
	OnFail func(err error)
}

// layer is an open layer directory. A lower layer holds just its data
// file; the top also holds its bitmap and, when writable, its meta log.
type layer struct {
	dir  string
	hdr  layerHeader
	data *os.File
	fd   int

	bits *bitmap // top only

	// Meta log of a writable top, used with the overlay's fmu held.
	meta        *os.File
	metaEnd     int64  // where the next record goes
	reserved    int64  // meta space preallocated up to here
	seq         uint64 // last sequence number written
	nextCompact int64  // meta size at which the next flush compacts
}

// Overlay is a copy-on-write disk.Device. It is safe for concurrent use.
//
// Besides Device it implements Unmapper, Zeroer, AllocationReporter,
// Prefetcher, FileExtenter and Failer. The base device is shared with other
// overlays: an Overlay only reads it and never closes it.
type Overlay struct {
	name     string
	log      *slog.Logger
	onFail   func(error)
	readOnly bool
	g        geometry

	base         Device
	baseExt      FileExtenter
	baseAlloc    AllocationReporter
	basePrefetch Prefetcher

	// mu guards the stack: held shared by every I/O, exclusively to
	// change the layers (Push, MergeInto) and by Close. top is changed
	// only with both fmu and mu held, so holding either one is enough to
	// read it.
	mu      sync.RWMutex
	closed  atomic.Bool
	top     *layer
	lower   []*layer // bottom first; lower[i] is owner value i+1
	owner   []uint8  // per cluster, the topmost lower layer owning it (0 = base); nil without lower layers
	retired []*layer // merged away; open until Close, as FileExtent ranges may name them

	// stripes serialize the first write of a cluster to the top: the
	// check that the top does not own it, the copy-up and setting its
	// bit. Without them a partial write copying up could overwrite a
	// whole-cluster write that completed meanwhile.
	stripes [nStripes]sync.Mutex

	// fmu serializes flushes and every change of the top's metadata.
	fmu       sync.Mutex
	snapGen   atomic.Uint64 // captures of dirty state started
	doneGen   uint64        // the last capture made durable (under fmu)
	failed    atomic.Pointer[error]
	compactAt int64 // meta size that makes a flush compact
	// fullNext makes the next commit record the whole bitmap (under
	// fmu): a failed commit took its dirty marks with it.
	fullNext bool

	admin sync.Mutex // serializes Push, MergeInto and Close

	punchOK, zeroOK atomic.Bool
	flushes         atomic.Uint64
	records         atomic.Uint64
	compactions     atomic.Uint64
	metaBytes       atomic.Int64
	noSpaceLogged   atomic.Int64 // Unix nanoseconds of the last note
}

// OpenOverlay opens a stack: base (shared, read-only, not closed by
// Close), the lower layer directories bottom first (read-only, at most
// 250) and the top layer directory (writable unless opts.ReadOnly, and
// then open for writing by this overlay only). Sizes, cluster sizes, base
// identities and the parent chain must agree (ErrLayerMismatch).
//
// A lower layer that an interrupted MergeInto already merged into the
// layer above it (that layer's parent is the merged layer's parent) is
// left out of the stack and logged; Layers tells which layers are in use,
// and the caller may delete the other one.
func OpenOverlay(base Device, lower []string, top string, opts OverlayOptions) (*Overlay, error) {
	if base == nil {
		return nil, errors.New("disk: open overlay: nil base")
	}
	if len(lower) > maxLowerLayers {
		return nil, fmt.Errorf("disk: open overlay: %d lower layers, at most %d", len(lower), maxLowerLayers)
	}
	o := &Overlay{name: opts.Name, log: opts.Logger, onFail: opts.OnFail, readOnly: opts.ReadOnly, base: base}
	if o.name == "" {
		o.name = filepath.Base(filepath.Clean(top))
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	o.baseExt, _ = base.(FileExtenter)
	o.baseAlloc, _ = base.(AllocationReporter)
	o.basePrefetch, _ = base.(Prefetcher)
	o.punchOK.Store(true)
	o.zeroOK.Store(true)
	if opts.Failed != nil && !opts.ReadOnly {
		ferr := opts.Failed
		if !errors.Is(ferr, ErrDeviceFailed) {
			ferr = o.errorf("%w: %v", ErrDeviceFailed, ferr)
		}
		o.failed.Store(&ferr)
		o.fullNext = true
	}
	ok := false
	defer func() {
		if !ok {
			o.closeFiles()
		}
	}()

	t, tm, err := openLayer(top, !opts.ReadOnly)
	if err != nil {
		return nil, o.errorf("open: %w", err)
	}
	o.top = t
	t.bits = tm.bits
	if opts.ReadOnly {
		tm.f.Close()
	} else {
		t.meta, t.metaEnd, t.seq = tm.f, tm.log.end, tm.log.seq
	}
	if tm.log.torn {
		o.log.Warn("overlay: dropped the torn tail of the top layer's log (writes never flushed)",
			"host", o.name, "layer", t.dir, "offset", tm.log.end)
	}
	o.g = tm.g
	if opts.BaseID != "" && t.hdr.baseID != opts.BaseID {
		return nil, o.errorf("open: %w: top %s is built on %q, not %q", ErrLayerMismatch, t.dir, t.hdr.baseID, opts.BaseID)
	}
	if bs := base.Size(); bs != o.g.size {
		return nil, o.errorf("open: %w: base holds %d bytes, the layers %d", ErrLayerMismatch, bs, o.g.size)
	}
	keep, err := o.chain(lower)
	if err != nil {
		return nil, err
	}
	if len(keep) > 0 {
		o.owner = make([]uint8, o.g.clusters)
	}
	for _, dir := range keep {
		l, m, err := openLayer(dir, false)
		if err != nil {
			return nil, o.errorf("open: %w", err)
		}
		m.f.Close()
		o.lower = append(o.lower, l)
		v := uint8(len(o.lower))
		m.bits.forEachSet(o.g.clusters, func(c0, c1 int64) {
			for c := c0; c < c1; c++ {
				o.owner[c] = v
			}
		})
	}
	if !o.readOnly {
		o.compactAt = max(1<<20, 4*o.g.bitmapBytes())
		t.nextCompact = o.compactAt
		o.reserveMeta(t)
		o.metaBytes.Store(t.metaEnd)
	}
	ok = true
	o.log.Info("overlay: opened", "host", o.name, "layer", t.dir, "lower", len(o.lower),
		"clusters", o.g.clusters, "owned", t.bits.count(), "records", tm.log.records)
	return o, nil
}

// chain checks the headers of the lower layers against the top's and
// returns the directories that belong in the stack, bottom first.
func (o *Overlay) chain(lower []string) ([]string, error) {
	t := o.top.hdr
	hdrs := make([]layerHeader, len(lower))
	for i, dir := range lower {
		h, err := readHeader(dir)
		if err != nil {
			return nil, o.errorf("open: %w", err)
		}
		if h.size != t.size || h.clusterSize != t.clusterSize || h.baseID != t.baseID {
			return nil, o.errorf("open: %w: %s is %d bytes in %d-byte clusters on %q; the top %d, %d, %q",
				ErrLayerMismatch, dir, h.size, h.clusterSize, h.baseID, t.size, t.clusterSize, t.baseID)
		}
		hdrs[i] = h
	}
	keep := make([]string, 0, len(lower))
	want, skipped := t.parent, false
	for i := len(lower) - 1; i >= 0; i-- {
		switch h := hdrs[i]; {
		case h.id == want:
			keep = append(keep, filepath.Clean(lower[i]))
			want = h.parent
		case h.parent == want && !skipped:
			// Merged into the layer above it by a MergeInto whose
			// caller did not get to remove it from the stack.
			skipped = true
			o.log.Warn("overlay: lower layer already merged into the layer above; left out",
				"host", o.name, "layer", lower[i])
		default:
			return nil, o.errorf("open: %w: %s has ID %q, the layer above it names parent %q",
				ErrLayerMismatch, lower[i], h.id, want)
		}
	}
	if want != "" {
		return nil, o.errorf("open: %w: the bottom layer names parent %q, not the base", ErrLayerMismatch, want)
	}
	for i, j := 0, len(keep)-1; i < j; i, j = i+1, j-1 {
		keep[i], keep[j] = keep[j], keep[i]
	}
	return keep, nil
}

// readHeader decodes the header of dir/meta.
func readHeader(dir string) (layerHeader, error) {
	path := filepath.Join(dir, metaName)
	f, err := os.Open(path)
	if err != nil {
		return layerHeader{}, fmt.Errorf("disk: layer: %w", err)
	}
	defer f.Close()
	b := make([]byte, headerSize)
	if err := preadFull(int(f.Fd()), b, 0); err != nil {
		return layerHeader{}, &CorruptError{Path: path, Err: fmt.Errorf("%w: %w", errShortHeader, err)}
	}
	h, err := parseHeader(b)
	if err != nil {
		return h, &CorruptError{Path: path, Err: err}
	}
	return h, nil
}

// openLayer opens the layer in dir: its data file, locked shared (or
// exclusive when writable), and its meta, replayed (see openMeta).
func openLayer(dir string, writable bool) (*layer, *metaState, error) {
	dir = filepath.Clean(dir)
	flag := os.O_RDONLY
	if writable {
		flag = os.O_RDWR
	}
	data, err := os.OpenFile(filepath.Join(dir, dataName), flag, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("layer: %w", err)
	}
	l := &layer{dir: dir, data: data, fd: int(data.Fd())}
	if err := lockFile(data, writable); err != nil {
		data.Close()
		return nil, nil, err
	}
	m, err := openMeta(dir, writable, writable)
	if err != nil {
		data.Close()
		return nil, nil, err
	}
	l.hdr = m.hdr
	var st unix.Stat_t
	if err := unix.Fstat(l.fd, &st); err != nil || st.Size != m.hdr.size || st.Mode&unix.S_IFMT != unix.S_IFREG {
		data.Close()
		m.f.Close()
		if err == nil {
			err = fmt.Errorf("%s: %d bytes, not a regular file of %d", data.Name(), st.Size, m.hdr.size)
		}
		return nil, nil, fmt.Errorf("layer: %w", err)
	}
	if writable {
		// A compaction that crashed before its rename.
		os.Remove(filepath.Join(dir, metaTmpName))
	}
	return l, m, nil
}

// pread reads len(b) bytes of the layer's data at off.
func (l *layer) pread(b []byte, off int64) error {
	if err := preadFull(l.fd, b, off); err != nil {
		return fmt.Errorf("disk: read %s at %d: %w", l.data.Name(), off, err)
	}
	return nil
}

// pwrite writes b to the layer's data at off; ENOSPC and EDQUOT come
// back wrapping ErrNoSpace.
func (l *layer) pwrite(b []byte, off int64) error {
	if err := pwriteFull(l.fd, b, off); err != nil {
		return fmt.Errorf("disk: write %s at %d: %w", l.data.Name(), off, noSpace(err))
	}
	return nil
}

func (o *Overlay) errorf(format string, args ...any) error {
	return fmt.Errorf("disk: overlay %s: "+format, append([]any{o.name}, args...)...)
}

// Size is the virtual disk size in bytes.
func (o *Overlay) Size() int64 { return o.g.size }

// Err implements Failer: nil while the overlay is healthy; after a failed
// flush the error (wrapping ErrDeviceFailed) every write and flush
// returns.
func (o *Overlay) Err() error {
	if p := o.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// ClearError implements Failer. Its flush records the whole bitmap of the
// top: a failed flush may have taken the marks of the clusters it did not
// record.
func (o *Overlay) ClearError() error {
	o.fmu.Lock()
	defer o.fmu.Unlock()
	p := o.failed.Load()
	if p == nil {
		return nil
	}
	if o.closed.Load() {
		return errClosed
	}
	o.fullNext = true
	if _, err := o.flushTop(nil); err != nil {
		return o.errorf("still fails: %w", err)
	}
	o.failed.Store(nil)
	o.log.Warn("overlay: failed state cleared; writes are accepted again", "host", o.name, "was", *p)
	return nil
}

// fail puts the overlay in the failed state and returns err, with
// context, for the operation that failed (not wrapping ErrDeviceFailed:
// that one reports its own error).
func (o *Overlay) fail(op string, err error) error {
	err = o.errorf("%s: %w", op, err)
	ferr := o.errorf("%w: %v", ErrDeviceFailed, err)
	if o.failed.CompareAndSwap(nil, &ferr) {
		o.log.Error("overlay: a flush failed; writes and flushes are refused until the error is cleared",
			"host", o.name, "op", op, "err", err)
		if o.onFail != nil {
			o.onFail(err)
		}
	}
	return err
}

// writable is the error of a modifying call, if any.
func (o *Overlay) writable() error {
	if o.readOnly {
		return ErrReadOnly
	}
	if p := o.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// checkRange rejects [off, off+n) outside the disk, overflow included.
func (o *Overlay) checkRange(off, n int64) error {
	if off < 0 || n < 0 || off > o.g.size-n {
		return o.errorf("range %d+%d outside %d bytes", off, n, o.g.size)
	}
	return nil
}

// source returns where cluster c is read from and the end of the run of
// clusters from c (before limit) read from the same place. O(1) per
// cluster: the top bitmap, then the owner index; never a walk down the
// stack. mu is held.
func (o *Overlay) source(c, limit int64) (int, int64) {
	top := o.top.bits
	if top.has(c) {
		return srcTop, top.next(c, limit, true)
	}
	end := top.next(c, limit, false)
	if o.owner == nil {
		return srcBase, end
	}
	s, e := o.owner[c], c+1
	for e < end && o.owner[e] == s {
		e++
	}
	return int(s), e
}

// below is the source of cluster c under the top.
func (o *Overlay) below(c int64) int {
	if o.owner == nil {
		return srcBase
	}
	return int(o.owner[c])
}

func (o *Overlay) layerOf(src int) *layer {
	if src == srcTop {
		return o.top
	}
	return o.lower[src-1]
}

func (o *Overlay) readFrom(src int, b []byte, off int64) error {
	if src == srcBase {
		_, err := o.base.ReadAt(b, off)
		return err
	}
	return o.layerOf(src).pread(b, off)
}

// ReadAt reads len(p) bytes at off: one pread per run of clusters held by
// the same file.
func (o *Overlay) ReadAt(p []byte, off int64) (int, error) {
	if err := o.checkRange(off, int64(len(p))); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	o.mu.RLock()
	defer o.mu.RUnlock()
	if o.closed.Load() {
		return 0, errClosed
	}
	end := off + int64(len(p))
	limit := (end-1)>>o.g.shift + 1
	for pos := off; pos < end; {
		src, c1 := o.source(pos>>o.g.shift, limit)
		e := min(c1<<o.g.shift, end)
		if err := o.readFrom(src, p[pos-off:e-off], pos); err != nil {
			return int(pos - off), err
		}
		pos = e
	}
	return len(p), nil
}

// WriteAt writes p at off. Out of space, it fails wrapping ErrNoSpace and
// the clusters it did not complete stay as they were.
func (o *Overlay) WriteAt(p []byte, off int64) (int, error) {
	if err := o.writable(); err != nil {
		return 0, err
	}
	if err := o.checkRange(off, int64(len(p))); err != nil {
		return 0, err
	}
	o.mu.RLock()
	defer o.mu.RUnlock()
	if o.closed.Load() {
		return 0, errClosed
	}
	n, err := o.write(p, off)
	if err != nil {
		o.noteNoSpace(err)
	}
	return n, err
}

// write writes p at off with mu held shared, in batches that never wrap
// around the stripes, so each batch takes its stripe locks in increasing
// order and two writers cannot deadlock.
func (o *Overlay) write(p []byte, off int64) (int, error) {
	end := off + int64(len(p))
	last := (end - 1) >> o.g.shift
	if o.top.bits.next(off>>o.g.shift, last+1, true) > last {
		// All owned: one pwrite, no lock.
		if err := o.top.pwrite(p, off); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	for pos := off; pos < end; {
		c0 := pos >> o.g.shift
		c1 := min(last+1, c0|(nStripes-1)+1)
		e := min(c1<<o.g.shift, end)
		if err := o.writeBatch(p[pos-off:e-off], pos, c0, c1); err != nil {
			return int(pos - off), err
		}
		pos = e
	}
	return len(p), nil
}

// writeBatch writes b at off, which covers clusters [c0, c1). Clusters
// the top owns take a plain pwrite and no lock. For the others it locks
// their stripes, copies up a partly written first or last cluster, writes,
// and only then sets their bits, so a reader never finds a bit whose data
// is not there.
func (o *Overlay) writeBatch(b []byte, off, c0, c1 int64) error {
	top := o.top
	first := top.bits.next(c0, c1, true)
	if first == c1 {
		return top.pwrite(b, off)
	}
	o.lockStripes(first, c1)
	defer o.unlockStripes(first, c1)
	lo, hi := off, off+int64(len(b))
	if !top.bits.has(c0) && (lo > c0<<o.g.shift || hi < o.g.clusterEnd(c0)) {
		if err := o.copyUp(c0, b, lo); err != nil {
			return err
		}
		n := min(o.g.clusterEnd(c0), hi) - lo
		b, lo = b[n:], lo+n
	}
	if lo < hi {
		c := (hi - 1) >> o.g.shift
		start := c << o.g.shift
		if start >= lo && hi < o.g.clusterEnd(c) && !top.bits.has(c) {
			if err := o.copyUp(c, b[start-lo:], start); err != nil {
				return err
			}
			b, hi = b[:start-lo], start
		}
	}
	if lo < hi {
		if err := top.pwrite(b, lo); err != nil {
			return err
		}
	}
	top.bits.setRange(first, c1)
	return nil
}

func (o *Overlay) lockStripes(c0, c1 int64) {
	for c := c0; c < c1; c++ {
		o.stripes[c&(nStripes-1)].Lock()
	}
}

func (o *Overlay) unlockStripes(c0, c1 int64) {
	for c := c0; c < c1; c++ {
		o.stripes[c&(nStripes-1)].Unlock()
	}
}

// copyUp writes cluster c to the top: what it holds now (lower layer or
// base) with b, which starts at byte off, merged in. Its stripe is locked.
func (o *Overlay) copyUp(c int64, b []byte, off int64) error {
	start, end := c<<o.g.shift, o.g.clusterEnd(c)
	bp := clusterPool.Get().(*[]byte)
	defer clusterPool.Put(bp)
	buf := (*bp)[:end-start]
	if err := o.readFrom(o.below(c), buf, start); err != nil {
		return o.errorf("copy-up of cluster %d: %w", c, err)
	}
	copy(buf[off-start:], b)
	return o.top.pwrite(buf, start)
}

// noteNoSpace logs, at most once a minute, that the backing store is full.
func (o *Overlay) noteNoSpace(err error) {
	if !errors.Is(err, ErrNoSpace) {
		return
	}
	now := time.Now().UnixNano()
	last := o.noSpaceLogged.Load()
	if now-last > int64(time.Minute) && o.noSpaceLogged.CompareAndSwap(last, now) {
		o.log.Warn("overlay: backing store full; writes to new clusters fail", "host", o.name, "err", err)
	}
}

// Flush returns once every write completed before the call, and the
// metadata that describes it, is durable: it captures the bitmap words
// changed since the last flush, fdatasyncs the top's data, appends one
// record with those words to meta and fdatasyncs it. Concurrent calls
// share work: a call returns early when a flush that captured after the
// call began has completed. A failure puts the overlay in the failed
// state (see Err). On a read-only overlay it does nothing.
func (o *Overlay) Flush() error {
	if o.readOnly {
		return nil
	}
	gen := o.snapGen.Load()
	o.fmu.Lock()
	defer o.fmu.Unlock()
	if o.closed.Load() {
		return errClosed
	}
	if err := o.Err(); err != nil {
		return err
	}
	if o.doneGen > gen {
		return nil
	}
	_, err := o.flushTop(nil)
	return err
}

// flushTop flushes the top (fmu held) and, with hdr, rewrites its header;
// rewritten reports whether that happened.
func (o *Overlay) flushTop(hdr *layerHeader) (rewritten bool, err error) {
	gen := o.snapGen.Add(1)
	rewritten, err = o.commit(o.top, hdr)
	if err == nil {
		o.fullNext = false
		o.doneGen = gen
		o.flushes.Add(1)
	}
	return rewritten, err
}

// commit makes what l holds durable (fmu held): capture, fdatasync data,
// record, fdatasync meta. The record is a delta of the dirty words, or a
// full bitmap when that is smaller, and a full bitmap in a new meta file
// (compaction) when meta has grown past its limit or hdr asks for a new
// header. A compaction that fails before its rename falls back to
// appending: it never costs a flush; the header then stays as it was.
func (o *Overlay) commit(l *layer, hdr *layerHeader) (rewritten bool, err error) {
	g := &o.g
	bp := recordPool.Get().(*[]byte)
	defer recordPool.Put(bp)
	rec := (*bp)[:0]
	compact := hdr != nil || l.metaEnd >= l.nextCompact
	full := compact || o.fullNext || l.bits.dirtyWords()*deltaEntrySize >= g.nwords*8
	// The dirty marks are taken before the words are read: a bit set
	// after its word was read has its mark set after the take, and goes
	// in the next record.
	var words []uint64
	count := 0
	if full {
		for i := range l.bits.dirty {
			l.bits.dirty[i].Store(0)
		}
		rec = beginRecord(rec, recFull, l.seq+1)
		words = make([]uint64, g.nwords)
		for i := range words {
			words[i] = l.bits.words[i].Load()
			rec = appendFullWord(rec, words[i])
		}
		count = g.nwords
	} else {
		rec = beginRecord(rec, recDelta, l.seq+1)
		for i := range l.bits.dirty {
			if l.bits.dirty[i].Load() == 0 {
				continue
			}
			for d := l.bits.dirty[i].Swap(0); d != 0; d &= d - 1 {
				w := i*64 + bits.TrailingZeros64(d)
				rec = appendDeltaWord(rec, w, l.bits.words[w].Load())
				count++
			}
		}
	}
	rec = finishRecord(rec, 0, count)
	*bp = rec
	if err := fdatasync(l.fd); err != nil {
		return false, o.fail("fdatasync "+l.data.Name(), err)
	}
	if count == 0 && !full {
		return false, nil
	}
	if compact {
		h := l.hdr
		if hdr != nil {
			h = *hdr
		}
		f, committed, err := writeMeta(l.dir, h, words, l.seq+1)
		if committed {
			l.meta.Close()
			l.meta, l.hdr, l.seq = f, h, l.seq+1
			l.metaEnd, l.reserved, l.nextCompact = int64(headerSize+len(rec)), 0, o.compactAt
			o.metaBytes.Store(l.metaEnd)
			if err != nil {
				return true, o.fail("compact "+l.dir, err)
			}
			o.compactions.Add(1)
			o.records.Add(1)
			o.reserveMeta(l)
			return true, nil
		}
		l.nextCompact = l.metaEnd + o.compactAt/4
		o.log.Warn("overlay: compacting metadata failed; appending instead", "host", o.name, "layer", l.dir, "err", err)
	}
	if err := pwriteFull(int(l.meta.Fd()), rec, l.metaEnd); err != nil {
		return false, o.fail("append to "+l.meta.Name(), err)
	}
	if err := fdatasync(int(l.meta.Fd())); err != nil {
		return false, o.fail("fdatasync "+l.meta.Name(), err)
	}
	l.seq++
	l.metaEnd += int64(len(rec))
	o.metaBytes.Store(l.metaEnd)
	o.records.Add(1)
	o.reserveMeta(l)
	return false, nil
}

// reserveMeta preallocates room for the next records of l's meta, so a
// flush on a full file system still finds space for its record. Best
// effort: without it the append may fail.
func (o *Overlay) reserveMeta(l *layer) {
	n := int64(o.g.fullRecordLen())
	if l.metaEnd+n <= l.reserved {
		return
	}
	if fallocate(int(l.meta.Fd()), unix.FALLOC_FL_KEEP_SIZE, l.metaEnd, 2*n) == nil {
		l.reserved = l.metaEnd + 2*n
	}
}

// Close flushes (reporting the flush's error) and closes the layers'
// files; the base is left open. Ranges from FileExtent are invalid after.
func (o *Overlay) Close() error {
	o.admin.Lock()
	defer o.admin.Unlock()
	if o.closed.Load() {
		return errClosed
	}
	err := o.Flush()
	o.fmu.Lock()
	o.mu.Lock()
	o.closed.Store(true)
	if cerr := o.closeFiles(); err == nil {
		err = cerr
	}
	o.mu.Unlock()
	o.fmu.Unlock()
	o.log.Info("overlay: closed", "host", o.name, "err", err)
	return err
}

// closeFiles closes every layer file the overlay holds.
func (o *Overlay) closeFiles() error {
	var errs []error
	for _, l := range append(append(append([]*layer(nil), o.lower...), o.retired...), o.top) {
		if l == nil {
			continue
		}
		if l.meta != nil {
			errs = append(errs, l.meta.Close())
		}
		errs = append(errs, l.data.Close())
	}
	return errors.Join(errs...)
}

// Layers returns the lower layer directories, bottom first, and the top.
func (o *Overlay) Layers() (lower []string, top string) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	for _, l := range o.lower {
		lower = append(lower, l.dir)
	}
	return lower, o.top.dir
}

// OverlayStats describes an overlay.
type OverlayStats struct {
	ClusterSize int
	Clusters    int64 // clusters in the virtual disk
	TopClusters int64 // clusters the top layer owns
	LowerLayers int
	BitmapBytes int64 // memory of the top bitmap and its dirty marks
	OwnerBytes  int64 // memory of the owner index (0 without lower layers)
	MemoryBytes int64 // all per-overlay memory: the two above and fixed state
	Flushes     uint64
	Records     uint64 // metadata records written since open
	Compactions uint64
	MetaBytes   int64 // size of the top's meta log
}

// Stats reports the overlay's state; TopClusters costs a pass over the
// bitmap.
func (o *Overlay) Stats() OverlayStats {
	o.mu.RLock()
	defer o.mu.RUnlock()
	s := OverlayStats{
		ClusterSize: int(o.g.cs),
		Clusters:    o.g.clusters,
		TopClusters: o.top.bits.count(),
		LowerLayers: len(o.lower),
		BitmapBytes: o.top.bits.memBytes(),
		OwnerBytes:  int64(len(o.owner)),
		Flushes:     o.flushes.Load(),
		Records:     o.records.Load(),
		Compactions: o.compactions.Load(),
		MetaBytes:   o.metaBytes.Load(),
	}
	// Per layer: its struct and the os.File behind it (~200 bytes).
	fixed := int64(unsafe.Sizeof(*o)) + int64(len(o.lower)+len(o.retired)+1)*(int64(unsafe.Sizeof(layer{}))+200)
	s.MemoryBytes = s.BitmapBytes + s.OwnerBytes + fixed
	return s
}

var (
	_ Device             = (*Overlay)(nil)
	_ Unmapper           = (*Overlay)(nil)
	_ Zeroer             = (*Overlay)(nil)
	_ AllocationReporter = (*Overlay)(nil)
	_ Prefetcher         = (*Overlay)(nil)
	_ FileExtenter       = (*Overlay)(nil)
	_ Failer             = (*Overlay)(nil)
)
