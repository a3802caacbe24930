package storage

import (
	"context"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/diskless-boot/diskless/internal/disk"
	"github.com/diskless-boot/diskless/internal/imagefmt"
)

// extenter is a Source that knows its zero ranges (imagefmt's sources).
type extenter interface {
	Extents(fn func(off, length int64, zero bool) error) error
}

// copySparse fills dst (a new file) with size bytes of src (nil: zeros)
// through imagefmt.Copy, which leaves holes where src is unmapped or all
// zeros and makes the file durable.
func copySparse(ctx context.Context, dst *os.File, size int64, src Source, progress Progress) error {
	if src == nil {
		if err := dst.Truncate(size); err != nil {
			return err
		}
		if progress != nil {
			progress(size)
		}
		return unix.Fdatasync(int(dst.Fd()))
	}
	if src.Size() != size {
		return fmt.Errorf("source holds %d bytes, want %d", src.Size(), size)
	}
	cs := copySource{Source: src, extents: sourceExtents(src, size)}
	return imagefmt.Copy(ctx, dst, cs, func(done, _ int64) {
		if progress != nil {
			progress(done)
		}
	})
}

// sourceExtents walks src's extents, telling zero ranges it knows of
// (imagefmt's sources, a device's unmapped ranges) from data.
func sourceExtents(src Source, size int64) func(fn func(off, length int64, zero bool) error) error {
	switch s := src.(type) {
	case extenter:
		return s.Extents
	case disk.AllocationReporter:
		return func(fn func(off, length int64, zero bool) error) error { return mappedExtents(s, size, fn) }
	}
	return func(fn func(off, length int64, zero bool) error) error { return fn(0, size, false) }
}

// copySource adapts a Source to imagefmt.Source.
type copySource struct {
	Source
	extents func(fn func(off, length int64, zero bool) error) error
}

func (c copySource) Format() imagefmt.Format { return imagefmt.Raw }
func (c copySource) Close() error            { return nil }
func (c copySource) Extents(fn func(off, length int64, zero bool) error) error {
	return c.extents(fn)
}

// mappedExtents walks a device's allocation: unmapped ranges read as
// zeros (an overlay's unmapped clusters, a file's holes).
func mappedExtents(a disk.AllocationReporter, size int64, fn func(off, length int64, zero bool) error) error {
	for off := int64(0); off < size; {
		mapped, n, err := a.Mapped(off)
		if err != nil {
			return err
		}
		n = min(max(n, 1), size-off)
		if err := fn(off, n, !mapped); err != nil {
			return err
		}
		off += n
	}
	return nil
}
