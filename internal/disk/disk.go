// Package disk owns the block devices that diskless exports as SCSI logical
// units: raw image files (File), and copy-on-write overlays (Overlay) that
// give each host a writable disk over a shared read-only base image, with
// snapshots as read-only layers (docs/overlay-format.md). Other back ends
// (Ceph RBD, internal/storage/rbd) implement the same interface.
//
// It knows nothing of SCSI or networking: offsets and lengths are in bytes.
// It does not decide which layers make up a host's disk: the inventory
// passes them in and records what Push and MergeInto did.
package disk

import "errors"

// Device is a fixed-size, random-access block store.
//
// Implementations must be safe for concurrent use: the target issues many
// reads and writes at once, from several sessions.
type Device interface {
	// ReadAt and WriteAt follow io.ReaderAt / io.WriterAt. A short
	// transfer always comes with a non-nil error.
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	// Size is the capacity in bytes.
	Size() int64
	// Flush makes every write that has completed durable (fdatasync).
	Flush() error
	Close() error
}

// Unmapper is a Device that can deallocate byte ranges (thin provisioning).
// After Unmap the range reads back as zeros.
type Unmapper interface {
	Unmap(off, length int64) error
}

// Zeroer is a Device that can zero a range without transferring the zeros,
// keeping it allocated (fallocate ZERO_RANGE or an equivalent).
type Zeroer interface {
	WriteZeroes(off, length int64) error
}

// AllocationReporter is a Device that can tell mapped ranges from holes.
// Mapped reports whether the byte at off is mapped and how many bytes from
// off share that state (at least 1, at most Size()-off).
type AllocationReporter interface {
	Mapped(off int64) (mapped bool, n int64, err error)
}

// Prefetcher is a Device that can start reading a range into its cache
// ahead of use (posix_fadvise WILLNEED or an equivalent). It is a hint:
// nothing guarantees the data is still cached when it is read.
type Prefetcher interface {
	Prefetch(off, length int64) error
}

// Remote is a Device whose reads and writes each wait for another machine
// (Ceph RBD: a round trip to an OSD, a few hundred µs and more) when Remote
// returns true: none is ever served from a local page cache in
// microseconds, so a transport must not run them inline on a connection's
// reader, where each would hold up the commands queued behind it.
type Remote interface {
	Remote() bool
}

// ErrReadOnly is returned by writes to a device opened read-only.
var ErrReadOnly = errors.New("disk: device is read-only")

// ErrNoSpace is returned (wrapped) when the backing store is full.
var ErrNoSpace = errors.New("disk: no space left on backing store")

// Failer is a Device that fails for good once a flush failed: from then
// on every write and flush returns Err (wrapping ErrDeviceFailed), so no
// later flush can report success over writes the failed one may have lost
// (the kernel reports a write-back error to one fdatasync only, and may
// drop the pages it could not write). Reads keep working. Like Device,
// implementations are safe for concurrent use.
type Failer interface {
	// Err is nil while the device is healthy; after a failed flush it is
	// the error every write and flush returns.
	Err() error
	// ClearError returns a failed device to service once the operator
	// fixed its storage: it flushes once more and clears the failed
	// state when that succeeds; otherwise the device stays failed and
	// the flush's error is returned. It does not bring back what the
	// failure lost: the writes acknowledged before the failed flush may
	// be missing, so the host's file system should be checked.
	ClearError() error
}

// ErrDeviceFailed is returned (wrapped) once a flush of the device failed:
// it refuses writes and flushes until it is cleared (Failer) or reopened,
// so no later SYNCHRONIZE CACHE can report GOOD over writes the failed
// flush may have lost. Reads keep working. The failing flush itself
// returns its own error, not this one.
var ErrDeviceFailed = errors.New("disk: device failed a flush and refuses writes")

// ErrFenced is returned (wrapped) by every I/O of a device whose
// ownership was taken away (another server broke its RBD lock and the
// cluster blocklisted this one): it must stop serving the disk at once and
// never retry a write, which could land over the new owner's.
var ErrFenced = errors.New("disk: fenced: another server took over this disk")
