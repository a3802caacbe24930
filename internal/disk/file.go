package disk

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// File is a raw image (a regular file or a block device) used as a Device.
// Every operation is a positional system call, so File is safe for
// concurrent use.
//
// Besides Device it implements Unmapper (FALLOC_FL_PUNCH_HOLE), Zeroer
// (FALLOC_FL_ZERO_RANGE), AllocationReporter (SEEK_DATA/SEEK_HOLE),
// Prefetcher (POSIX_FADV_WILLNEED) and Failer: a failed fdatasync fails
// the device until ClearError. Where the file system lacks one of the
// fallocate modes the operation falls back to writing zeros, so its
// contract (the range reads back as zeros) always holds.
type File struct {
	f        *os.File
	fd       int
	path     string
	name     string
	log      *slog.Logger
	onFail   func(error)
	readOnly bool
	blockDev bool
	size     atomic.Int64 // last size seen; Size refreshes it

	// fmu serializes flushes and ClearError: the kernel reports a
	// write-back error to one fdatasync of the descriptor only, so two
	// at once could see a failure and a success over the same lost
	// pages.
	fmu      sync.Mutex
	flushGen atomic.Uint64 // flushes started
	doneGen  uint64        // the last flush that succeeded (under fmu)
	closed   bool          // under fmu: no fdatasync may reach a reused descriptor
	failed   atomic.Pointer[error]

	// Cleared the first time the kernel says a mode is unsupported, so
	// the fallback is taken directly from then on.
	punchOK atomic.Bool
	zeroOK  atomic.Bool
	seekOK  atomic.Bool
}

// zeroChunk is written where fallocate cannot zero a range.
var zeroChunk = make([]byte, 1<<20)

// FileOptions configures OpenFileWith.
type FileOptions struct {
	// ReadOnly opens the file O_RDONLY: every modifying call returns
	// ErrReadOnly.
	ReadOnly bool
	// Name is who uses the device, e.g. the host name, for logs.
	// Default: none (logs name the path only).
	Name string
	// Logger receives state changes: a failed flush and its clearing.
	// Nothing is logged per I/O. Default: discard.
	Logger *slog.Logger
	// Failed, when set, opens the device failed (see Failer) with this
	// error: a failure seen through an earlier open that nobody cleared.
	// The kernel reports a write-back error to the descriptors open when
	// it happened, never to a new one. Default: healthy.
	Failed error
	// OnFail, when set, is called once when a flush fails the device,
	// with the flush's error (so the caller can remember the failure
	// across a restart). Default: none.
	OnFail func(err error)
}

// OpenFile opens path as a Device. With readOnly the file is opened
// O_RDONLY and every modifying call returns ErrReadOnly.
func OpenFile(path string, readOnly bool) (*File, error) {
	return OpenFileWith(path, FileOptions{ReadOnly: readOnly})
}

// OpenFileWith opens path as a Device as opts say.
func OpenFileWith(path string, opts FileOptions) (*File, error) {
	flag := os.O_RDWR
	if opts.ReadOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("disk: open: %w", err)
	}
	d := &File{f: f, fd: int(f.Fd()), path: path, name: opts.Name, log: opts.Logger, readOnly: opts.ReadOnly,
		onFail: opts.OnFail}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if opts.Failed != nil {
		ferr := opts.Failed
		if !errors.Is(ferr, ErrDeviceFailed) {
			ferr = fmt.Errorf("%w: %v", ErrDeviceFailed, ferr)
		}
		d.failed.Store(&ferr)
	}
	var st unix.Stat_t
	if err := unix.Fstat(d.fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("disk: stat %s: %w", path, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFBLK:
		d.blockDev = true
	default:
		f.Close()
		return nil, fmt.Errorf("disk: %s: not a regular file or block device", path)
	}
	d.punchOK.Store(true)
	d.zeroOK.Store(true)
	d.seekOK.Store(!d.blockDev)
	size, err := d.stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	d.size.Store(size)
	return d, nil
}

// stat reads the current size from the kernel.
func (d *File) stat() (int64, error) {
	if d.blockDev {
		n, err := unix.IoctlGetUint64(d.fd, unix.BLKGETSIZE64)
		if err != nil {
			return 0, fmt.Errorf("disk: BLKGETSIZE64 %s: %w", d.path, err)
		}
		return int64(n), nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(d.fd, &st); err != nil {
		return 0, fmt.Errorf("disk: stat %s: %w", d.path, err)
	}
	return st.Size, nil
}

// Path is the file the device was opened from.
func (d *File) Path() string { return d.path }

// ReadAt reads len(p) bytes at off. Reading past the end is an error
// (io.ErrUnexpectedEOF), never a silent short read.
func (d *File) ReadAt(p []byte, off int64) (int, error) {
	n, err := d.f.ReadAt(p, off)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return n, fmt.Errorf("disk: read %s at %d: %w", d.path, off, err)
	}
	return n, nil
}

// WriteAt writes p at off. ENOSPC and EDQUOT come back wrapping ErrNoSpace.
func (d *File) WriteAt(p []byte, off int64) (int, error) {
	if err := d.writable(); err != nil {
		return 0, err
	}
	n, err := d.f.WriteAt(p, off)
	if err != nil {
		return n, d.wrap("write", off, err)
	}
	return n, nil
}

// wrap adds context and maps out-of-space errnos to ErrNoSpace.
func (d *File) wrap(op string, off int64, err error) error {
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
		return fmt.Errorf("disk: %s %s at %d: %w (%w)", op, d.path, off, ErrNoSpace, err)
	}
	return fmt.Errorf("disk: %s %s at %d: %w", op, d.path, off, err)
}

// Size returns the current size in bytes. It asks the kernel each time, so
// a grown image is seen; if that fails the last known size is returned.
func (d *File) Size() int64 {
	if n, err := d.stat(); err == nil {
		d.size.Store(n)
		return n
	}
	return d.size.Load()
}

// writable is the error of a modifying call, if any.
func (d *File) writable() error {
	if d.readOnly {
		return ErrReadOnly
	}
	if p := d.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// Flush makes completed writes durable (fdatasync(2)). Concurrent calls
// share work: a call returns at once when a flush that began after it was
// called has succeeded. A failure puts the device in the failed state
// (see Failer): the failing call returns the fdatasync error, every later
// write and flush the failed state's.
func (d *File) Flush() error {
	gen := d.flushGen.Load()
	d.fmu.Lock()
	defer d.fmu.Unlock()
	if d.closed {
		return os.ErrClosed
	}
	if p := d.failed.Load(); p != nil {
		return *p
	}
	if d.doneGen > gen {
		return nil
	}
	g := d.flushGen.Add(1)
	if err := fdatasync(d.fd); err != nil {
		return d.fail(err)
	}
	d.doneGen = g
	return nil
}

// fail puts the device in the failed state after fdatasync returned err
// (fmu held) and returns err with context. Never ErrNoSpace, even for
// ENOSPC: a write-back that failed has lost writes already acknowledged,
// which is a medium error, not a write refused for want of space.
func (d *File) fail(err error) error {
	err = fmt.Errorf("disk: fdatasync %s: %w", d.path, err)
	ferr := fmt.Errorf("%w: %v", ErrDeviceFailed, err)
	if d.failed.CompareAndSwap(nil, &ferr) {
		d.log.Error("disk: a flush failed; writes and flushes are refused until the error is cleared",
			d.attrs("err", err)...)
		if d.onFail != nil {
			d.onFail(err)
		}
	}
	return err
}

// attrs are the log attributes of the device followed by more.
func (d *File) attrs(more ...any) []any {
	a := []any{"path", d.path}
	if d.name != "" {
		a = []any{"host", d.name, "path", d.path}
	}
	return append(a, more...)
}

// Err implements Failer.
func (d *File) Err() error {
	if p := d.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// ClearError implements Failer.
func (d *File) ClearError() error {
	d.fmu.Lock()
	defer d.fmu.Unlock()
	p := d.failed.Load()
	if p == nil {
		return nil
	}
	if d.closed {
		return os.ErrClosed
	}
	g := d.flushGen.Add(1)
	if err := fdatasync(d.fd); err != nil {
		return fmt.Errorf("disk: %s still fails: fdatasync: %w", d.path, err)
	}
	d.doneGen = g
	d.failed.Store(nil)
	d.log.Warn("disk: failed state cleared; writes are accepted again", d.attrs("was", *p)...)
	return nil
}

// Close closes the file, after the flush running, if any.
func (d *File) Close() error {
	d.fmu.Lock()
	defer d.fmu.Unlock()
	d.closed = true
	return d.f.Close()
}

// Unmap deallocates [off, off+length): fallocate PUNCH_HOLE|KEEP_SIZE, so
// the range reads back as zeros and its blocks return to the file system.
// Partial file system blocks at either end are zeroed by the kernel.
func (d *File) Unmap(off, length int64) error {
	if err := d.writable(); err != nil {
		return err
	}
	if length <= 0 {
		return nil
	}
	if d.punchOK.Load() {
		err := fallocate(d.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
		if err == nil {
			return nil
		}
		if !unsupported(err) {
			return d.wrap("punch hole", off, err)
		}
		d.punchOK.Store(false)
	}
	return d.WriteZeroes(off, length)
}

// WriteZeroes zeroes [off, off+length) and keeps it allocated:
// fallocate ZERO_RANGE|KEEP_SIZE, or written zeros where that mode is
// missing.
func (d *File) WriteZeroes(off, length int64) error {
	if err := d.writable(); err != nil {
		return err
	}
	if length <= 0 {
		return nil
	}
	if d.zeroOK.Load() {
		err := fallocate(d.fd, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, length)
		if err == nil {
			return nil
		}
		if !unsupported(err) {
			return d.wrap("zero range", off, err)
		}
		d.zeroOK.Store(false)
	}
	for length > 0 {
		n := min(length, int64(len(zeroChunk)))
		if _, err := d.WriteAt(zeroChunk[:n], off); err != nil {
			return err
		}
		off += n
		length -= n
	}
	return nil
}

// Mapped reports whether the byte at off is allocated and how many bytes
// from off share that state, using SEEK_DATA/SEEK_HOLE. The answer has
// file system block granularity. Where the file system (or a block device)
// cannot tell, everything is reported mapped.
func (d *File) Mapped(off int64) (bool, int64, error) {
	size := d.Size()
	if off < 0 || off >= size {
		return false, 0, fmt.Errorf("disk: mapped %s: offset %d outside [0,%d)", d.path, off, size)
	}
	if !d.seekOK.Load() {
		return true, size - off, nil
	}
	data, err := unix.Seek(d.fd, off, unix.SEEK_DATA)
	switch {
	case errors.Is(err, unix.ENXIO):
		// No data at or after off: a hole up to the end.
		return false, size - off, nil
	case err != nil && unsupported(err):
		d.seekOK.Store(false)
		return true, size - off, nil
	case err != nil:
		return false, 0, d.wrap("seek data", off, err)
	case data > off:
		return false, min(data, size) - off, nil
	}
	hole, err := unix.Seek(d.fd, off, unix.SEEK_HOLE)
	if err != nil {
		return false, 0, d.wrap("seek hole", off, err)
	}
	return true, min(hole, size) - off, nil
}

// Prefetch asks the kernel to read [off, off+length) into the page cache.
func (d *File) Prefetch(off, length int64) error {
	if length <= 0 {
		return nil
	}
	if err := unix.Fadvise(d.fd, off, length, unix.FADV_WILLNEED); err != nil {
		return d.wrap("fadvise", off, err)
	}
	return nil
}

// fallocate retries on EINTR, which large operations can see.
func fallocate(fd int, mode uint32, off, length int64) error {
	for {
		err := unix.Fallocate(fd, mode, off, length)
		if err != unix.EINTR {
			return err
		}
	}
}

// unsupported reports an errno meaning "this file system cannot do that".
func unsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) ||
		errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY)
}

var (
	_ Device             = (*File)(nil)
	_ Unmapper           = (*File)(nil)
	_ Zeroer             = (*File)(nil)
	_ AllocationReporter = (*File)(nil)
	_ Prefetcher         = (*File)(nil)
	_ Failer             = (*File)(nil)
)
