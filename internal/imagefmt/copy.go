package imagefmt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

const (
	// chunkSize is the copy loop's buffer: large enough that a syscall
	// moves a lot, small enough that a cancel is seen within one.
	chunkSize = 1 << 20
	// zeroBlockSize is the granularity at which copied data is checked
	// for zeros and left as a hole: the usual file system block.
	zeroBlockSize = 4096
)

// zeros is compared against to find all-zero blocks; it is never written,
// so its pages stay the kernel's shared zero page.
var zeros = make([]byte, chunkSize)

// Copy is the import copy loop: it replaces dst's content with the virtual
// disk of src, leaving a hole wherever src has a zero extent or the data
// read is all zeros (in 4 KiB blocks), so the result is as sparse as the
// image. dst must be a regular file. Copy returns promptly once ctx is
// done, with an error wrapping ctx.Err(); the caller deletes the partial
// file. On success dst is exactly src.Size() bytes and its data is on disk
// (fdatasync). progress, if not nil, is called after each chunk with the
// bytes done (holes included) and src.Size().
func Copy(ctx context.Context, dst *os.File, src Source, progress func(done, total int64)) error {
	if err := prepareDest(dst, src.Size()); err != nil {
		return err
	}
	buf := make([]byte, chunkSize)
	if err := copyExtents(ctx, dst, src, src.Size(), src.Extents, buf, progress); err != nil {
		return fmt.Errorf("imagefmt: copy %s image to %s: %w", src.Format(), dst.Name(), err)
	}
	return finishDest(dst, src.Size())
}

// prepareDest empties the regular file dst and gives it size bytes of
// hole, so that whatever the copy skips reads as zeros.
func prepareDest(dst *os.File, size int64) error {
	fi, err := dst.Stat()
	if err != nil {
		return fmt.Errorf("imagefmt: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("imagefmt: destination %s is not a regular file", dst.Name())
	}
	if err := dst.Truncate(0); err != nil {
		return fmt.Errorf("imagefmt: %w", err)
	}
	if err := dst.Truncate(size); err != nil {
		return fmt.Errorf("imagefmt: %w", err)
	}
	return nil
}

// finishDest sets dst's exact size and makes its data durable.
func finishDest(dst *os.File, size int64) error {
	if err := dst.Truncate(size); err != nil {
		return fmt.Errorf("imagefmt: %w", err)
	}
	if err := unix.Fdatasync(int(dst.Fd())); err != nil {
		return fmt.Errorf("imagefmt: fdatasync %s: %w", dst.Name(), err)
	}
	return nil
}

// copyExtents copies size bytes from src to the same offsets of dst, which
// must read as zeros already: zero extents are skipped, data extents are
// read a chunk of len(buf) at a time and only their non-zero blocks
// written. It checks ctx before every chunk.
func copyExtents(ctx context.Context, dst io.WriterAt, src io.ReaderAt, size int64,
	extents func(func(off, n int64, zero bool) error) error, buf []byte,
	progress func(done, total int64)) error {
	var done int64
	report := func() {
		if progress != nil {
			progress(done, size)
		}
	}
	report()
	err := extents(func(off, n int64, zero bool) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if off != done || n <= 0 || n > size-off {
			return fmt.Errorf("extent %d+%d does not follow %d in a %d-byte image", off, n, done, size)
		}
		if zero {
			done += n
			report()
			return nil
		}
		for end := off + n; off < end; {
			if err := ctx.Err(); err != nil {
				return err
			}
			b := buf[:min(int64(len(buf)), end-off)]
			if k, err := src.ReadAt(b, off); k < len(b) {
				if err == nil || errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return fmt.Errorf("read at %d: %w", off, err)
			}
			if err := writeNonZero(dst, b, off); err != nil {
				return err
			}
			off += int64(len(b))
			done = off
			report()
		}
		return nil
	})
	if err != nil {
		return err
	}
	if done != size {
		return fmt.Errorf("extents end at %d in a %d-byte image", done, size)
	}
	return nil
}

// writeNonZero writes the runs of b (which belongs at off) that are not
// all-zero blocks, aligned to zeroBlockSize in the file, in one write per
// run.
func writeNonZero(dst io.WriterAt, b []byte, off int64) error {
	if bytes.Equal(b, zeros[:len(b)]) {
		return nil
	}
	runStart := -1 // start in b of the pending non-zero run
	for i := 0; i < len(b); {
		// The block ends at the next aligned file offset.
		j := min(len(b), i+zeroBlockSize-int((off+int64(i))%zeroBlockSize))
		isZero := bytes.Equal(b[i:j], zeros[:j-i])
		if !isZero && runStart < 0 {
			runStart = i
		}
		if isZero && runStart >= 0 {
			if err := writeAll(dst, b[runStart:i], off+int64(runStart)); err != nil {
				return err
			}
			runStart = -1
		}
		i = j
	}
	if runStart >= 0 {
		return writeAll(dst, b[runStart:], off+int64(runStart))
	}
	return nil
}

func writeAll(dst io.WriterAt, b []byte, off int64) error {
	if _, err := dst.WriteAt(b, off); err != nil {
		return fmt.Errorf("write at %d: %w", off, err)
	}
	return nil
}
