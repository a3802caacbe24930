package disk

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// failSyncOnce makes the next fdatasync of fd fail with errno, as the
// kernel does with a write-back error: it reports it to one fdatasync of
// the descriptor, and the ones after it succeed although the pages are
// lost. It returns how many fdatasyncs of fd ran.
func failSyncOnce(t *testing.T, fd int, errno error) *atomic.Int64 {
	orig := fdatasync
	var calls atomic.Int64
	fdatasync = func(f int) error {
		if f != fd {
			return orig(f)
		}
		if calls.Add(1) == 1 {
			return errno
		}
		return orig(f)
	}
	t.Cleanup(func() { fdatasync = orig })
	return &calls
}

// logBuffer is a slog destination a test can read.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// modifying runs every call that changes a device and returns their errors.
func modifying(d interface {
	Device
	Unmapper
	Zeroer
}) map[string]error {
	_, werr := d.WriteAt([]byte{1}, 0)
	return map[string]error{
		"WriteAt":     werr,
		"Flush":       d.Flush(),
		"Unmap":       d.Unmap(0, 4096),
		"WriteZeroes": d.WriteZeroes(0, 4096),
	}
}

// TestFileFlushFailure: the fdatasync that fails (EIO, or ENOSPC from a
// thin device) returns its own error - never ErrNoSpace, the writes are
// lost already - and fails the File: every write and flush after it
// returns ErrDeviceFailed, though the kernel's next fdatasync would
// succeed, while reads work. It is logged once with the host. ClearError
// flushes again and returns the File to service.
func TestFileFlushFailure(t *testing.T) {
	for _, errno := range []unix.Errno{unix.EIO, unix.ENOSPC} {
		t.Run(errno.Error(), func(t *testing.T) {
			_, path := newImage(t, 1<<20, 0x33, false)
			var logs logBuffer
			var told []error
			d, err := OpenFileWith(path, FileOptions{Name: "pc7", Logger: logs.logger(),
				OnFail: func(err error) { told = append(told, err) }})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if _, err := d.WriteAt(bytes.Repeat([]byte{0x44}, 4096), 8192); err != nil {
				t.Fatal(err)
			}
			calls := failSyncOnce(t, d.fd, errno)
			err = d.Flush()
			if !errors.Is(err, errno) || errors.Is(err, ErrDeviceFailed) || errors.Is(err, ErrNoSpace) {
				t.Fatalf("failing flush = %v, want %v (not ErrDeviceFailed, not ErrNoSpace)", err, errno)
			}
			if !errors.Is(d.Err(), ErrDeviceFailed) {
				t.Fatalf("Err after a failed flush = %v", d.Err())
			}
			for range 3 {
				for name, err := range modifying(d) {
					if !errors.Is(err, ErrDeviceFailed) {
						t.Fatalf("%s after a failed flush = %v, want ErrDeviceFailed", name, err)
					}
				}
			}
			if len(told) != 1 || !errors.Is(told[0], errno) {
				t.Fatalf("OnFail told %v, want the flush's error once", told)
			}
			if n := calls.Load(); n != 1 {
				t.Fatalf("%d fdatasyncs after the failure: a failed File must not ask the kernel again", n-1)
			}
			got := make([]byte, 4096)
			if _, err := d.ReadAt(got, 8192); err != nil || got[0] != 0x44 {
				t.Fatalf("read of a failed File: %v, %#x", err, got[0])
			}
			if s := logs.String(); strings.Count(s, "a flush failed") != 1 || !strings.Contains(s, "host=pc7") ||
				!strings.Contains(s, "path="+path) {
				t.Fatalf("log of the failure, want one line with host and path:\n%s", s)
			}

			if err := d.ClearError(); err != nil {
				t.Fatalf("ClearError: %v", err)
			}
			if d.Err() != nil {
				t.Fatalf("Err after ClearError = %v", d.Err())
			}
			if _, err := d.WriteAt([]byte{9}, 0); err != nil {
				t.Fatalf("write after ClearError: %v", err)
			}
			if err := d.Flush(); err != nil {
				t.Fatalf("flush after ClearError: %v", err)
			}
			if !strings.Contains(logs.String(), "failed state cleared") {
				t.Fatalf("clearing not logged:\n%s", logs.String())
			}
		})
	}
}

// TestFileClearErrorStillFailing: ClearError on storage that still fails
// returns the error and leaves the File failed.
func TestFileClearErrorStillFailing(t *testing.T) {
	d, _ := newImage(t, 1<<20, 0, false)
	failSync(t, d.fd)
	if err := d.Flush(); !errors.Is(err, unix.EIO) {
		t.Fatalf("flush = %v", err)
	}
	if err := d.ClearError(); !errors.Is(err, unix.EIO) {
		t.Fatalf("ClearError on failing storage = %v, want EIO", err)
	}
	if _, err := d.WriteAt([]byte{1}, 0); !errors.Is(err, ErrDeviceFailed) {
		t.Fatalf("write after a ClearError that failed = %v, want ErrDeviceFailed", err)
	}
}

// TestFileConcurrentFlushesNeverLie: many flushes at once while the
// kernel reports a write-back error to one fdatasync: one flush returns
// it and none returns success - every other one ErrDeviceFailed. (With
// flushes racing into the kernel, the others would see no error over the
// same lost pages.)
func TestFileConcurrentFlushesNeverLie(t *testing.T) {
	d, _ := newImage(t, 1<<20, 0, false)
	failSyncOnce(t, d.fd, unix.EIO)
	const n = 16
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = d.Flush()
		})
	}
	close(start)
	wg.Wait()
	eio := 0
	for i, err := range errs {
		switch {
		case errors.Is(err, ErrDeviceFailed):
		case errors.Is(err, unix.EIO):
			eio++
		default:
			t.Errorf("flush %d = %v, want EIO or ErrDeviceFailed", i, err)
		}
	}
	if eio != 1 {
		t.Errorf("%d flushes returned EIO, want 1", eio)
	}
}

// TestFileOpenedFailed: a File opened with a failure nobody cleared
// refuses writes at once; ClearError returns it to service.
func TestFileOpenedFailed(t *testing.T) {
	_, path := newImage(t, 1<<20, 0, false)
	d, err := OpenFileWith(path, FileOptions{Failed: errors.New("fdatasync: input/output error")})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for name, err := range modifying(d) {
		if !errors.Is(err, ErrDeviceFailed) {
			t.Fatalf("%s on a File opened failed = %v", name, err)
		}
	}
	if err := d.ClearError(); err != nil {
		t.Fatal(err)
	}
	for name, err := range modifying(d) {
		if err != nil {
			t.Fatalf("%s after ClearError: %v", name, err)
		}
	}
}

// TestOverlayClearError: after a failed flush of data or meta, ClearError
// on storage that still fails leaves the overlay failed; once it works,
// ClearError flushes a full record - the failed flush took the dirty
// marks of the clusters it was to record - so after a clean close and a
// reopen every write made before the failure and after the clearing is
// there.
func TestOverlayClearError(t *testing.T) {
	for _, which := range []string{"data", "meta"} {
		t.Run(which, func(t *testing.T) {
			const size = 1 << 20
			base, content := newBase(t, size, 23)
			s := newStack(t, size, 4096)
			m := newModel(content, 4096)
			var logs logBuffer
			var told []error
			o := s.open(t, base, OverlayOptions{Name: "pc8", Logger: logs.logger(),
				OnFail: func(err error) { told = append(told, err) }})
			p := pattern(9000, 1)
			o.WriteAt(p, 1000)
			m.write(p, 1000)
			if err := o.Flush(); err != nil {
				t.Fatal(err)
			}
			p = pattern(5000, 2)
			o.WriteAt(p, 300000)
			m.write(p, 300000)
			fd := o.top.fd
			if which == "meta" {
				fd = int(o.top.meta.Fd())
			}
			failSync(t, fd)
			if err := o.Flush(); err == nil {
				t.Fatal("flush did not fail")
			}
			if err := o.ClearError(); err == nil || o.Err() == nil {
				t.Fatalf("ClearError on failing storage = %v, Err %v: want both errors", err, o.Err())
			}
			if len(told) != 1 || !errors.Is(told[0], unix.EIO) {
				t.Fatalf("OnFail told %v, want the failed flush's EIO once", told)
			}
			fdatasync = unix.Fdatasync
			if err := o.ClearError(); err != nil {
				t.Fatalf("ClearError: %v", err)
			}
			for name, err := range modifying(o) {
				if err != nil {
					t.Fatalf("%s after ClearError: %v", name, err)
				}
			}
			m.write([]byte{1}, 0)
			m.zero(0, 4096)
			p = pattern(4096, 3)
			o.WriteAt(p, 600000)
			m.write(p, 600000)
			if err := o.Close(); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(logs.String(), "host=pc8") || !strings.Contains(logs.String(), "failed state cleared") {
				t.Fatalf("failure and clearing not logged with the host:\n%s", logs.String())
			}
			o = s.open(t, base, OverlayOptions{})
			defer o.Close()
			checkAll(t, o, m.cur)
		})
	}
}

// TestOverlayOpenedFailed: an overlay opened with a failure nobody
// cleared refuses writes and flushes, reads what was flushed, and comes
// back with ClearError.
func TestOverlayOpenedFailed(t *testing.T) {
	const size = 1 << 20
	base, content := newBase(t, size, 24)
	s := newStack(t, size, 4096)
	o := s.open(t, base, OverlayOptions{Failed: errors.New("fdatasync: input/output error")})
	defer o.Close()
	for name, err := range modifying(o) {
		if !errors.Is(err, ErrDeviceFailed) {
			t.Fatalf("%s on an overlay opened failed = %v", name, err)
		}
	}
	checkAll(t, o, content)
	if err := o.ClearError(); err != nil {
		t.Fatal(err)
	}
	if _, err := o.WriteAt([]byte{1}, 0); err != nil {
		t.Fatalf("write after ClearError: %v", err)
	}
}

// TestFileFlushAfterClose: a closed File never hands its old descriptor
// number, maybe another file's by now, to fdatasync.
func TestFileFlushAfterClose(t *testing.T) {
	_, path := newImage(t, 1<<20, 0, false)
	d, err := OpenFileWith(path, FileOptions{Failed: errors.New("earlier")})
	if err != nil {
		t.Fatal(err)
	}
	calls := failSyncOnce(t, d.fd, unix.EIO)
	d.Close()
	if err := d.ClearError(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("ClearError after Close = %v, want os.ErrClosed", err)
	}
	if err := d.Flush(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Flush after Close = %v, want os.ErrClosed", err)
	}
	if calls.Load() != 0 {
		t.Fatal("fdatasync called on a closed File")
	}
}
