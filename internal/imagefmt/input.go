package imagefmt

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// input is an image file opened read-only: a regular file or a block
// device, with its size fixed when it was opened. It is the raw Source and
// the file under every other format's reader. Safe for concurrent use: every
// read is a pread, and Extents only asks lseek where data lies.
type input struct {
	f      *os.File
	path   string
	size   int64
	block  bool
	format Format // what Format() reports
}

// openInput opens path read-only. Anything but a regular file or a block
// device is refused: O_NONBLOCK keeps a FIFO from blocking the open, and the
// fstat after it rejects the FIFO.
func openInput(path string) (*input, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("imagefmt: %w", err)
	}
	in := &input{f: f, path: path, format: Raw}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("imagefmt: stat %s: %w", path, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		in.size = st.Size
	case unix.S_IFBLK:
		n, err := unix.IoctlGetUint64(int(f.Fd()), unix.BLKGETSIZE64)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("imagefmt: BLKGETSIZE64 %s: %w", path, err)
		}
		in.size, in.block = int64(n), true
	default:
		f.Close()
		return nil, fmt.Errorf("imagefmt: %s: not a regular file or block device", path)
	}
	return in, nil
}

// ReadAt follows io.ReaderAt: reading past Size returns io.EOF with the
// bytes that were there.
func (in *input) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("imagefmt: read %s: negative offset %d", in.path, off)
	}
	if off >= in.size {
		return 0, io.EOF
	}
	want := p
	if int64(len(p)) > in.size-off {
		want = p[:in.size-off]
	}
	n, err := in.f.ReadAt(want, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return n, fmt.Errorf("imagefmt: read %s at %d: %w", in.path, off, err)
	}
	if n < len(p) {
		// Short because the image ends here, or because the file
		// shrank under us: either way the caller sees the end.
		return n, io.EOF
	}
	return n, nil
}

func (in *input) Size() int64    { return in.size }
func (in *input) Format() Format { return in.format }
func (in *input) Close() error   { return in.f.Close() }

// Extents reports holes as zero extents, found with SEEK_DATA/SEEK_HOLE.
// A block device, or a file system that cannot answer, is one data extent:
// the copy loop still skips the all-zero chunks it reads.
func (in *input) Extents(fn func(off, length int64, zero bool) error) error {
	fd := int(in.f.Fd())
	for off := int64(0); off < in.size; {
		if in.block {
			return fn(off, in.size-off, false)
		}
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		switch {
		case errors.Is(err, unix.ENXIO):
			// No data at or after off: a hole up to the end.
			return fn(off, in.size-off, true)
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.EOPNOTSUPP):
			return fn(off, in.size-off, false)
		case err != nil:
			return fmt.Errorf("imagefmt: seek data %s at %d: %w", in.path, off, err)
		}
		if data >= in.size {
			return fn(off, in.size-off, true)
		}
		if data > off {
			if err := fn(off, data-off, true); err != nil {
				return err
			}
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("imagefmt: seek hole %s at %d: %w", in.path, data, err)
		}
		hole = min(hole, in.size)
		if hole <= data {
			// The file shrank between the two seeks: call the rest
			// data, and the reader meets the short read and fails.
			hole = in.size
		}
		if err := fn(data, hole-data, false); err != nil {
			return err
		}
		off = hole
	}
	return nil
}
