package disk

import (
	"context"
	"os"
	"path/filepath"
)

// Changes to an Overlay's stack while it runs: snapshot (Push), snapshot
// deletion (MergeInto), and export of the merged view (CopyTo).

// Push takes an online snapshot: the current top becomes the newest lower
// layer (read-only from now on) and a new empty layer created at newTop,
// with ID id and the old top as parent, becomes the top. It is atomic
// with respect to concurrent I/O: each write lands wholly in the old top,
// made durable before Push returns, or wholly in the new one.
//
// newTop is complete on disk before it becomes the top; after a crash
// during Push the caller's stack description decides whether it is used.
func (o *Overlay) Push(newTop string, id string) error {
	o.admin.Lock()
	defer o.admin.Unlock()
	if err := o.writable(); err != nil {
		return err
	}
	if o.closed.Load() {
		return errClosed
	}
	if len(o.lower) >= maxLowerLayers {
		return o.errorf("push: already %d lower layers", len(o.lower))
	}
	old := o.top // stable: only Push and MergeInto change it, under admin
	if err := CreateLayer(newTop, LayerConfig{Size: o.g.size, ClusterSize: int(o.g.cs),
		ID: id, Parent: old.hdr.id, BaseID: old.hdr.baseID}); err != nil {
		return o.errorf("push: %w", err)
	}
	nl, m, err := openLayer(newTop, true)
	if err != nil {
		return o.errorf("push: %w", err)
	}
	nl.bits, nl.meta, nl.metaEnd, nl.seq, nl.nextCompact = m.bits, m.f, m.log.end, m.log.seq, o.compactAt
	abandon := func() {
		nl.meta.Close()
		nl.data.Close()
		os.RemoveAll(newTop) // it was empty or missing: CreateLayer checked
	}
	// Most of the old top's dirty state goes now, outside the locks.
	if err := o.Flush(); err != nil {
		abandon()
		return err
	}
	owner := o.owner
	if owner == nil {
		owner = make([]uint8, o.g.clusters)
	}
	v := uint8(len(o.lower) + 1)

	o.fmu.Lock()
	defer o.fmu.Unlock()
	if err := o.Err(); err != nil {
		abandon()
		return err
	}
	o.mu.Lock()
	old.bits.forEachSet(o.g.clusters, func(c0, c1 int64) {
		for c := c0; c < c1; c++ {
			owner[c] = v
		}
	})
	o.owner, o.lower, o.top = owner, append(o.lower, old), nl
	o.mu.Unlock()

	// No write reaches the old top any more: record what it holds, then
	// keep only its data file. A flush waiting on fmu flushes the new top.
	_, err = o.commit(old, nil)
	old.meta.Close()
	old.meta, old.bits = nil, nil
	o.reserveMeta(nl)
	o.metaBytes.Store(nl.metaEnd)
	if err != nil {
		return err
	}
	if err := lockFile(old.data, false); err != nil {
		o.log.Warn("overlay: cannot share the lock of a pushed layer", "host", o.name, "layer", old.dir, "err", err)
	}
	o.log.Info("overlay: pushed a snapshot", "host", o.name, "layer", old.dir, "top", nl.dir, "lower", len(o.lower))
	return nil
}

// MergeInto copies every cluster that the lower layer in dir owns, and
// the layer directly above it does not, into that upper layer, then
// removes the lower layer from the stack (the upper layer's parent
// becomes the lower's parent), so the caller can delete its directory.
// When the upper layer is the top this runs while I/O runs, through the
// same stripe locks as copy-up. Neither layer may be open in another
// overlay (ErrLayerInUse).
//
// Order on disk: the clusters are copied and the upper layer's data
// synced; then its meta is replaced (new header with the new parent, one
// full record) by a rename. A crash before the rename leaves the upper
// layer as it was (copied clusters it does not own are ignored, or, for
// the top, owned duplicates of what the lower layer holds); after it,
// OpenOverlay recognizes the merged layer and leaves it out. The merged
// layer's files stay open until Close, as FileExtent ranges may name them.
func (o *Overlay) MergeInto(dir string) error {
	o.admin.Lock()
	defer o.admin.Unlock()
	if err := o.writable(); err != nil {
		return err
	}
	if o.closed.Load() {
		return errClosed
	}
	dir = filepath.Clean(dir)
	i := -1
	for j, l := range o.lower {
		if l.dir == dir {
			i = j
		}
	}
	if i < 0 {
		return o.errorf("merge: %s is not a lower layer of this overlay", dir)
	}
	lo := o.lower[i]
	onTop := i == len(o.lower)-1
	up := o.top
	if !onTop {
		up = o.lower[i+1]
	}
	// Exclusive locks prove no other overlay has either layer open. A
	// flock conversion is not atomic: a failed upgrade may have dropped
	// the shared lock, so it is taken again.
	if err := lockFile(lo.data, true); err != nil {
		lockFile(lo.data, false)
		return o.errorf("merge: %w", err)
	}
	defer lockFile(lo.data, false)
	if !onTop {
		if err := lockFile(up.data, true); err != nil {
			lockFile(up.data, false)
			return o.errorf("merge: %w", err)
		}
		defer lockFile(up.data, false)
	}
	lm, err := openMeta(lo.dir, false, false)
	if err != nil {
		return o.errorf("merge: %w", err)
	}
	lm.f.Close()
	hdr := up.hdr
	hdr.parent = lo.hdr.parent
	if onTop {
		err = o.mergeIntoTop(lo, lm.bits, hdr)
	} else {
		err = o.mergeIntoLower(lo, lm.bits, up, hdr)
	}
	if err != nil {
		return err
	}

	o.mu.Lock()
	o.lower = append(o.lower[:i:i], o.lower[i+1:]...)
	o.retired = append(o.retired, lo)
	if !onTop {
		up.hdr.parent = hdr.parent // the top's changed in commit, under fmu
	}
	switch {
	case len(o.lower) == 0:
		o.owner = nil
	case onTop:
		// The top now owns every cluster lo was the owner value of.
		gone := uint8(i + 1)
		for c, v := range o.owner {
			if v == gone {
				o.owner[c] = 0
			}
		}
	default:
		// lo's clusters now belong to up, which takes lo's number.
		for c, v := range o.owner {
			if v > uint8(i+1) {
				o.owner[c] = v - 1
			}
		}
	}
	o.mu.Unlock()
	o.log.Info("overlay: merged a layer", "host", o.name, "layer", lo.dir, "into", up.dir, "lower", len(o.lower))
	return nil
}

// mergeBuf is the copy unit of MergeInto and CopyTo.
const mergeBuf = 1 << 20

// mergeIntoTop copies lo's clusters into the top, a batch of clusters at
// a time under their stripe locks, then flushes the top with its new
// header.
func (o *Overlay) mergeIntoTop(lo *layer, lbits *bitmap, hdr layerHeader) error {
	buf := make([]byte, mergeBuf)
	per := int64(mergeBuf) >> o.g.shift
	n := o.g.clusters
	for c := int64(0); c < n; {
		c0 := lbits.next(c, n, false)
		if c0 == n {
			break
		}
		c1 := min(lbits.next(c0, n, true), c0|(nStripes-1)+1, c0+per)
		if err := o.mergeBatch(lo, c0, c1, buf); err != nil {
			return err
		}
		c = c1
	}
	o.fmu.Lock()
	defer o.fmu.Unlock()
	if err := o.Err(); err != nil {
		return err
	}
	rewritten, err := o.flushTop(&hdr)
	if err != nil {
		return err
	}
	if !rewritten {
		return o.errorf("merge %s: %w: the top's metadata could not be rewritten", lo.dir, errMergeAborted)
	}
	return nil
}

// mergeBatch copies the clusters of [c0, c1), all owned by lo, that the
// top does not own into the top.
func (o *Overlay) mergeBatch(lo *layer, c0, c1 int64, buf []byte) error {
	o.mu.RLock()
	defer o.mu.RUnlock()
	if o.closed.Load() {
		return errClosed
	}
	if err := o.Err(); err != nil {
		return err
	}
	top := o.top
	o.lockStripes(c0, c1)
	defer o.unlockStripes(c0, c1)
	for c := c0; c < c1; {
		a := top.bits.next(c, c1, true)
		if a == c1 {
			break
		}
		b := top.bits.next(a, c1, false)
		start, end := a<<o.g.shift, o.g.clusterEnd(b-1)
		if err := o.copyClusters(lo, top, start, end, buf); err != nil {
			return err
		}
		top.bits.setRange(a, b)
		c = b
	}
	return nil
}

// copyClusters copies [start, end) of from's data to to's, punching holes
// for clusters that read as zeros so the copy stays sparse.
func (o *Overlay) copyClusters(from, to *layer, start, end int64, buf []byte) error {
	b := buf[:end-start]
	if err := from.pread(b, start); err != nil {
		return err
	}
	return o.writeSparse(b, start, func(p []byte, off int64) error { return to.pwrite(p, off) },
		func(off, n int64) error { return o.deallocate(to, off, n, true) })
}

// writeSparse writes b (at off) cluster by cluster with write, except
// runs of all-zero clusters, which go to hole.
func (o *Overlay) writeSparse(b []byte, off int64, write func([]byte, int64) error, hole func(off, n int64) error) error {
	cs := int(o.g.cs)
	for i := 0; i < len(b); {
		zero := allZero(b[i:min(i+cs, len(b))])
		j := i
		for j < len(b) && allZero(b[j:min(j+cs, len(b))]) == zero {
			j = min(j+cs, len(b))
		}
		var err error
		if zero {
			err = hole(off+int64(i), int64(j-i))
		} else {
			err = write(b[i:j], off+int64(i))
		}
		if err != nil {
			return err
		}
		i = j
	}
	return nil
}

// mergeIntoLower copies lo's clusters into up, a lower layer no write
// reaches, through a read-write descriptor of its own; the stack keeps
// reading lo for them until MergeInto swaps it out.
func (o *Overlay) mergeIntoLower(lo *layer, lbits *bitmap, up *layer, hdr layerHeader) error {
	um, err := openMeta(up.dir, true, false)
	if err != nil {
		return o.errorf("merge: %w", err)
	}
	defer um.f.Close()
	w, err := os.OpenFile(filepath.Join(up.dir, dataName), os.O_RDWR, 0)
	if err != nil {
		return o.errorf("merge: %w", err)
	}
	defer w.Close()
	wl := &layer{dir: up.dir, data: w, fd: int(w.Fd())}
	buf := make([]byte, mergeBuf)
	per := int64(mergeBuf) >> o.g.shift
	n := o.g.clusters
	for c := int64(0); c < n; {
		a := lbits.next(c, n, false)
		if a == n {
			break
		}
		e := lbits.next(a, n, true)
		if a = um.bits.next(a, e, true); a == e {
			c = e
			continue
		}
		b := min(um.bits.next(a, e, false), a+per)
		if err := o.copyClusters(lo, wl, a<<o.g.shift, o.g.clusterEnd(b-1), buf); err != nil {
			return o.errorf("merge: %w", err)
		}
		um.bits.setRange(a, b)
		c = b
	}
	if err := fdatasync(wl.fd); err != nil {
		return o.errorf("merge: fdatasync %s: %w", w.Name(), err)
	}
	words := make([]uint64, o.g.nwords)
	for i := range words {
		words[i] = um.bits.words[i].Load()
	}
	f, _, err := writeMeta(up.dir, hdr, words, um.log.seq+1)
	if f != nil {
		f.Close()
	}
	if err != nil {
		return o.errorf("merge %s: %w: %w", lo.dir, errMergeAborted, err)
	}
	return nil
}

// CopyTo writes the merged view of the disk into dst, which must be a
// writable File of the same size, normally a new sparse file. Clusters
// that are unmapped or read as zeros become holes in dst (punched, so any
// dst ends up equal), so dst stays sparse. progress, when not nil, is
// called with the bytes done now and then and at the end; ctx cancels.
// The view is read live: for a consistent copy no writer may run (or copy
// a stack whose top takes no writes).
func (o *Overlay) CopyTo(ctx context.Context, dst *File, progress func(done int64)) error {
	if got := dst.Size(); got != o.g.size {
		return o.errorf("copy to %s: it holds %d bytes, the disk %d", dst.Path(), got, o.g.size)
	}
	buf := make([]byte, mergeBuf)
	const every = 64 << 20
	reported := int64(0)
	for pos := int64(0); pos < o.g.size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		mapped, n, err := o.Mapped(pos)
		if err != nil {
			return err
		}
		end := pos + n
		if !mapped {
			if err := dst.Unmap(pos, n); err != nil {
				return o.errorf("copy to: %w", err)
			}
			pos = end
		}
		for pos < end {
			if err := ctx.Err(); err != nil {
				return err
			}
			b := buf[:min(int64(len(buf)), end-pos)]
			if _, err := o.ReadAt(b, pos); err != nil {
				return err
			}
			if err := o.writeSparse(b, pos, func(p []byte, off int64) error {
				_, err := dst.WriteAt(p, off)
				return err
			}, dst.Unmap); err != nil {
				return o.errorf("copy to: %w", err)
			}
			pos += int64(len(b))
			if progress != nil && pos-reported >= every {
				progress(pos)
				reported = pos
			}
		}
	}
	if err := dst.Flush(); err != nil {
		return o.errorf("copy to: %w", err)
	}
	if progress != nil {
		progress(o.g.size)
	}
	return nil
}
