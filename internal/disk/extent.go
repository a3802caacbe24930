package disk

import "fmt"

// FileRange is a byte range of a host file, named by its descriptor. It is
// valid while the Device it came from is open.
type FileRange struct {
	FD  int
	Off int64
	Len int64
}

// FileExtenter is a Device whose bytes live in host files, so a transport
// can hand a range to the kernel (sendfile) instead of copying it through
// user space: on loopback and fast NICs that copy is what limits large
// reads. FileExtent tells where the n bytes at off live; Len of the result
// is how many of them are contiguous there (at least 1 when n > 0).
type FileExtenter interface {
	FileExtent(off, n int64) (FileRange, error)
}

// FileExtent implements FileExtenter: a raw image holds every byte at its
// own offset.
func (f *File) FileExtent(off, n int64) (FileRange, error) {
	if off < 0 || n < 0 || off+n < off || off+n > f.Size() {
		return FileRange{}, fmt.Errorf("disk: range %d+%d outside %s", off, n, f.path)
	}
	return FileRange{FD: f.fd, Off: off, Len: n}, nil
}

// Lender is a Device that can lend the bytes of a read instead of copying
// them into the caller's buffer: a remote disk whose client library
// received them into buffers of its own (librbd), which a transport sends
// as they are. ReadLent reads len(p) bytes at off (all of them, or an
// error). When it has them in one buffer of its own it returns that and a
// release the caller calls once it is done with them (they stay valid
// until then, whatever happens to the device); otherwise it copies them
// into p and returns p and a nil release.
type Lender interface {
	ReadLent(p []byte, off int64) (data []byte, release func(), err error)
}

// AsyncReader is a Device that can start a read and return at once,
// reporting its end through a callback: a remote disk whose client library
// completes I/O on threads of its own (librbd). A transport that reads
// this way needs no goroutine parked per outstanding read, and no wake-up
// of one at each completion.
//
// ReadAsync reads len(p) bytes at off (all of them, or an error). done is
// called exactly once - possibly before ReadAsync returns, usually later
// on a thread of the device's - with the bytes as ReadLent gives them
// (lend false: always copied into p, release nil) or the error. done runs
// on that thread, so it must not block: whatever can wait (a socket
// write) is handed on.
type AsyncReader interface {
	ReadAsync(p []byte, off int64, lend bool, done func(data []byte, release func(), err error))
}
