package imagefmt

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// ExportOptions says how Export writes an image.
type ExportOptions struct {
	// SourcePath names a raw file or block device holding exactly the
	// bytes of src. For qcow2, qemu-img then reads it directly instead
	// of a temporary raw copy of src. Default: "" - make that copy.
	SourcePath string
	// TempDir is where that temporary raw copy goes. Default: the
	// directory of dst.
	TempDir string
	// Progress, when set, is called with the bytes done and the total.
	// When a temporary raw copy is made each byte counts twice, once
	// copied and once converted, so the total is twice the size.
	// Default: none.
	Progress func(done, total int64)
}

// Export writes the size bytes of src to a new image file dst in format f
// (Raw or QCOW2). If src also has an Extents method (as a Source has), its
// zero extents are skipped without reading them. The image is written to a
// temporary file beside dst, synced, and renamed over dst, so dst is either
// the complete image or left as it was; the new file has mode 0600. qcow2
// needs qemu-img.
func Export(ctx context.Context, src io.ReaderAt, size int64, dst string, f Format, opts ExportOptions) error {
	if fi, err := os.Stat(dst); err == nil && !fi.Mode().IsRegular() {
		return fmt.Errorf("imagefmt: export to %s: not a regular file", dst)
	}
	var err error
	switch f {
	case Raw:
		err = exportRaw(ctx, src, size, dst, opts)
	case QCOW2:
		err = exportQCOW2(ctx, src, size, dst, opts)
	default:
		return fmt.Errorf("imagefmt: export to %s: cannot write %s images (raw or qcow2)", dst, f)
	}
	if err != nil {
		return fmt.Errorf("imagefmt: export %s to %s: %w", f, dst, err)
	}
	return nil
}

// extenter is the part of Source that Export uses when src has it.
type extenter interface {
	Extents(fn func(off, length int64, zero bool) error) error
}

// extentsOf returns src's extent walker, or one that calls all of it data.
func extentsOf(src io.ReaderAt, size int64) func(func(off, n int64, zero bool) error) error {
	if e, ok := src.(extenter); ok {
		return e.Extents
	}
	return func(fn func(off, n int64, zero bool) error) error {
		if size == 0 {
			return nil
		}
		return fn(0, size, false)
	}
}

// exportRaw writes a sparse raw copy of src.
func exportRaw(ctx context.Context, src io.ReaderAt, size int64, dst string, opts ExportOptions) error {
	return replaceFile(dst, func(f *os.File) error {
		return writeRaw(ctx, f, src, size, opts.Progress, 0, size)
	})
}

// writeRaw copies src into the empty file f sparsely and syncs it;
// progress sees base+done out of total.
func writeRaw(ctx context.Context, f *os.File, src io.ReaderAt, size int64,
	progress func(done, total int64), base, total int64) error {
	if err := prepareDest(f, size); err != nil {
		return err
	}
	var report func(done, _ int64)
	if progress != nil {
		report = func(done, _ int64) { progress(base+done, total) }
	}
	if err := copyExtents(ctx, f, src, size, extentsOf(src, size), make([]byte, chunkSize), report); err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		return err
	}
	return f.Sync()
}

// exportQCOW2 converts src to qcow2 with qemu-img, from opts.SourcePath or
// from a temporary sparse raw copy.
func exportQCOW2(ctx context.Context, src io.ReaderAt, size int64, dst string, opts ExportOptions) error {
	bin, err := qemuImg("write qcow2 images")
	if err != nil {
		return err
	}
	rawPath, base, total := opts.SourcePath, int64(0), size
	if rawPath != "" {
		in, err := openInput(rawPath)
		if err != nil {
			return err
		}
		n := in.Size()
		in.Close()
		if n != size {
			return fmt.Errorf("source %s is %d bytes, not %d", rawPath, n, size)
		}
	} else {
		dir := opts.TempDir
		if dir == "" {
			dir = filepath.Dir(dst)
		}
		tmp, err := os.CreateTemp(dir, ".imagefmt-*.raw")
		if err != nil {
			return err
		}
		rawPath, base, total = tmp.Name(), size, 2*size
		defer os.Remove(rawPath)
		err = writeRaw(ctx, tmp, src, size, opts.Progress, 0, total)
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	var progress func(done, total int64)
	if opts.Progress != nil {
		progress = func(done, _ int64) { opts.Progress(base+done, total) }
	}
	return replaceFile(dst, func(f *os.File) error {
		// qemu-img creates the file again at the same path (same
		// inode); its output is not flushed, so sync it after.
		if err := runQemuImg(ctx, bin, size, progress,
			"convert", "-p", "-f", "raw", "-O", "qcow2", rawPath, f.Name()); err != nil {
			return err
		}
		return f.Sync()
	})
}

// replaceFile runs write on a new temporary file beside path, then renames
// it over path and syncs the directory; on any error the temporary file is
// removed and path is left as it was.
func replaceFile(path string, write func(f *os.File) error) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = write(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
