package imagefmt

import (
	"context"
	"fmt"
	"io"
	"os"
)

// Source is a disk image opened for reading as Size() bytes of virtual disk,
// whatever its file format. ReadAt and Extents are safe for concurrent use;
// Close is not, and nothing may be called after it.
type Source interface {
	// ReadAt follows io.ReaderAt over the virtual disk: reading past
	// Size returns io.EOF.
	io.ReaderAt
	// Size is the virtual disk's size in bytes.
	Size() int64
	// Format is the file format the image was read from.
	Format() Format
	// Extents calls fn for consecutive extents that cover [0, Size()) in
	// order. zero reports an extent that reads as zeros because the
	// format says so (a hole, an unallocated or zero cluster), so an
	// importer can skip it and keep the destination sparse; an extent
	// with zero false may still hold zeros. An error from fn stops the
	// walk and is returned unchanged.
	Extents(fn func(off, length int64, zero bool) error) error
	Close() error
}

// OpenOptions says how Open reads an image.
type OpenOptions struct {
	// Format is the image's format. Default: "" - Detect it. Naming it
	// skips detection, e.g. Raw for a raw disk that happens to start with
	// another format's signature.
	Format Format
	// TempDir is where formats read through qemu-img are first converted
	// to a temporary sparse raw file, as large as the virtual disk less
	// its holes: put it on the destination's file system. The file is
	// unlinked as soon as it is open, so nothing is left behind once the
	// Source is closed. Default: os.TempDir().
	TempDir string
	// Progress, when set, is called during that conversion with the bytes
	// of virtual disk converted so far and the virtual size. Open reads
	// raw and qcow2 directly and never calls it. Default: none.
	Progress func(done, total int64)
}

// Open opens the image at path for reading (see Source). ctx bounds only the
// qemu-img conversion that formats other than raw and qcow2 need; reads from
// the Source are not tied to it.
func Open(ctx context.Context, path string, opts OpenOptions) (Source, error) {
	in, err := openInput(path)
	if err != nil {
		return nil, err
	}
	format := opts.Format
	if format == "" {
		if format, err = detect(in, in.Size()); err != nil {
			in.Close()
			return nil, fmt.Errorf("imagefmt: detect %s: %w", path, err)
		}
	}
	switch format {
	case Raw:
		return in, nil
	case QCOW2:
		q, err := newQCOW2(in, in.Size())
		if err != nil {
			in.Close()
			return nil, fmt.Errorf("imagefmt: open %s: %w", path, err)
		}
		return &qcow2Source{qcow2: q, in: in}, nil
	case VMDK, VHDX, VDI, VPC:
		in.Close()
		return openConverted(ctx, path, format, opts)
	}
	in.Close()
	return nil, fmt.Errorf("imagefmt: open %s: unknown format %q", path, format)
}

// qcow2Source is a qcow2 reader over the file it owns.
type qcow2Source struct {
	*qcow2
	in *input
}

func (s *qcow2Source) Close() error { return s.in.Close() }

// tempDir returns dir, or the system's temporary directory when it is empty.
func tempDir(dir string) string {
	if dir == "" {
		return os.TempDir()
	}
	return dir
}
