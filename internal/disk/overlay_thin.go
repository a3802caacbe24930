package disk

import (
	"errors"

	"golang.org/x/sys/unix"
)

// Thin provisioning of an Overlay: deallocation, zeroing, allocation
// status, prefetch and file ranges for sendfile.

// Unmap deallocates [off, off+length): whole clusters get a hole punched
// in the top's data and become owned by the top, so they read as zeros
// without touching the layers below; partial clusters at the edges are
// written with zeros.
func (o *Overlay) Unmap(off, length int64) error { return o.zeroRange(off, length, true) }

// WriteZeroes zeroes [off, off+length) as Unmap does, but keeps the whole
// clusters allocated in the top (FALLOC_FL_ZERO_RANGE), as Zeroer asks.
func (o *Overlay) WriteZeroes(off, length int64) error { return o.zeroRange(off, length, false) }

func (o *Overlay) zeroRange(off, length int64, punch bool) error {
	if err := o.writable(); err != nil {
		return err
	}
	if err := o.checkRange(off, length); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	o.mu.RLock()
	defer o.mu.RUnlock()
	if o.closed.Load() {
		return errClosed
	}
	end := off + length
	// Whole clusters [ca, cb); the short last cluster is whole when the
	// range reaches the end of the disk.
	ca := (off + o.g.cs - 1) >> o.g.shift
	cb := end >> o.g.shift
	if end == o.g.size {
		cb = o.g.clusters
	}
	if ca >= cb {
		return o.writeZeros(off, end)
	}
	if err := o.writeZeros(off, ca<<o.g.shift); err != nil {
		return err
	}
	for c := ca; c < cb; {
		c1 := min(cb, c|(nStripes-1)+1)
		if err := o.zeroBatch(c, c1, punch); err != nil {
			o.noteNoSpace(err)
			return err
		}
		c = c1
	}
	return o.writeZeros(min(cb<<o.g.shift, o.g.size), end)
}

// writeZeros writes zeros to [from, to) through the write path (mu held).
func (o *Overlay) writeZeros(from, to int64) error {
	for from < to {
		n := min(to-from, int64(len(zeroChunk)))
		if _, err := o.write(zeroChunk[:n], from); err != nil {
			o.noteNoSpace(err)
			return err
		}
		from += n
	}
	return nil
}

// zeroBatch zeroes whole clusters [c0, c1) in the top and sets their
// bits, under their stripe locks.
func (o *Overlay) zeroBatch(c0, c1 int64, punch bool) error {
	o.lockStripes(c0, c1)
	defer o.unlockStripes(c0, c1)
	start := c0 << o.g.shift
	if err := o.deallocate(o.top, start, o.g.clusterEnd(c1-1)-start, punch); err != nil {
		return err
	}
	o.top.bits.setRange(c0, c1)
	return nil
}

// deallocate zeroes [off, off+n) of l's data: a punched hole, or zeros
// kept allocated, or written zeros where the file system has neither.
func (o *Overlay) deallocate(l *layer, off, n int64, punch bool) error {
	if punch && o.punchOK.Load() {
		err := fallocate(l.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		if err == nil {
			return nil
		}
		if !unsupported(err) {
			return o.errorf("punch hole in %s at %d: %w", l.data.Name(), off, noSpace(err))
		}
		o.punchOK.Store(false)
	}
	if o.zeroOK.Load() {
		err := fallocate(l.fd, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		if err == nil {
			return nil
		}
		if !unsupported(err) {
			return o.errorf("zero range of %s at %d: %w", l.data.Name(), off, noSpace(err))
		}
		o.zeroOK.Store(false)
	}
	for n > 0 {
		k := min(n, int64(len(zeroChunk)))
		if err := l.pwrite(zeroChunk[:k], off); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// Mapped implements AllocationReporter with cluster granularity. A
// cluster is mapped when the layer that holds it (top or lower) has data
// there rather than a hole, or when it falls through to the base and the
// base reports it mapped (a base that cannot tell is all mapped).
func (o *Overlay) Mapped(off int64) (bool, int64, error) {
	if off < 0 || off >= o.g.size {
		return false, 0, o.errorf("mapped: offset %d outside [0,%d)", off, o.g.size)
	}
	o.mu.RLock()
	defer o.mu.RUnlock()
	if o.closed.Load() {
		return false, 0, errClosed
	}
	c := off >> o.g.shift
	src, c1 := o.source(c, o.g.clusters)
	start, end := c<<o.g.shift, min(c1<<o.g.shift, o.g.size)
	var mapped bool
	var e int64
	var err error
	switch {
	case src != srcBase:
		fd := o.layerOf(src).fd
		mapped, e, err = o.extent(func(p int64) (bool, int64, error) { return fdMapped(fd, p, o.g.size) }, start, end)
	case o.baseAlloc != nil:
		mapped, e, err = o.extent(o.baseAlloc.Mapped, start, end)
	default:
		mapped, e = true, end
	}
	if err != nil {
		return false, 0, o.errorf("mapped: %w", err)
	}
	return mapped, e - off, nil
}

// extent rounds what probe (a byte-granular Mapped) says about [start,
// end) to clusters: a cluster holding any mapped byte is mapped. It
// returns the state of the cluster at start (cluster aligned) and where
// the clusters sharing that state end, after at most 64 probes.
func (o *Overlay) extent(probe func(int64) (bool, int64, error), start, end int64) (bool, int64, error) {
	const (
		unknown = iota
		hole
		data
	)
	cs := o.g.cs
	state, cur := unknown, start
	for i := 0; i < 64 && cur < end; i++ {
		m, n, err := probe(cur)
		if err != nil {
			return false, 0, err
		}
		q := min(cur+max(n, 1), end)
		if m {
			if state == hole {
				return false, cur, nil
			}
			state, cur = data, min((q+cs-1)&^(cs-1), end)
			continue
		}
		h := q // whole hole clusters end here
		if q < end {
			h = q &^ (cs - 1)
		}
		if h > cur {
			if state == data {
				return true, cur, nil
			}
			state, cur = hole, h
			continue
		}
		// The hole ends inside cluster cur: it holds data after it.
		if state == hole {
			return false, cur, nil
		}
		state, cur = data, min(cur+cs, end)
	}
	return state == data, cur, nil
}

// fdMapped is File.Mapped for a descriptor: SEEK_DATA/SEEK_HOLE, and all
// mapped where the file system cannot tell.
func fdMapped(fd int, off, size int64) (bool, int64, error) {
	d, err := unix.Seek(fd, off, unix.SEEK_DATA)
	switch {
	case errors.Is(err, unix.ENXIO):
		return false, size - off, nil
	case err != nil && unsupported(err):
		return true, size - off, nil
	case err != nil:
		return false, 0, err
	case d > off:
		return false, min(d, size) - off, nil
	}
	h, err := unix.Seek(fd, off, unix.SEEK_HOLE)
	if err != nil {
		return false, 0, err
	}
	return true, min(h, size) - off, nil
}

// FileExtent implements FileExtenter: the run of clusters from off held
// by one file at their own offsets. A run in the base comes from the
// base's FileExtent; a base without one is not file-backed (an error: the
// caller copies instead).
func (o *Overlay) FileExtent(off, n int64) (FileRange, error) {
	if err := o.checkRange(off, n); err != nil {
		return FileRange{}, err
	}
	o.mu.RLock()
	defer o.mu.RUnlock()
	if o.closed.Load() {
		return FileRange{}, errClosed
	}
	if n == 0 {
		return FileRange{FD: o.top.fd, Off: off}, nil
	}
	src, c1 := o.source(off>>o.g.shift, (off+n-1)>>o.g.shift+1)
	run := min(c1<<o.g.shift, off+n) - off
	if src != srcBase {
		return FileRange{FD: o.layerOf(src).fd, Off: off, Len: run}, nil
	}
	if o.baseExt == nil {
		return FileRange{}, errBaseNotFile
	}
	return o.baseExt.FileExtent(off, run)
}

// Prefetch implements Prefetcher: each run is forwarded to the file that
// holds it (the base only if it is a Prefetcher).
func (o *Overlay) Prefetch(off, length int64) error {
	if err := o.checkRange(off, length); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	o.mu.RLock()
	defer o.mu.RUnlock()
	if o.closed.Load() {
		return errClosed
	}
	end := off + length
	limit := (end-1)>>o.g.shift + 1
	for pos := off; pos < end; {
		src, c1 := o.source(pos>>o.g.shift, limit)
		e := min(c1<<o.g.shift, end)
		var err error
		switch {
		case src != srcBase:
			l := o.layerOf(src)
			if err = unix.Fadvise(l.fd, pos, e-pos, unix.FADV_WILLNEED); err != nil {
				err = o.errorf("fadvise %s: %w", l.data.Name(), err)
			}
		case o.basePrefetch != nil:
			err = o.basePrefetch.Prefetch(pos, e-pos)
		}
		if err != nil {
			return err
		}
		pos = e
	}
	return nil
}
