package api

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// limitFileSize makes files of this process fail past n bytes with EFBIG,
// as a file system does past its largest file (ext4: 16 TiB), until the
// test ends. The limit is process-wide: tests of this package do not run
// in parallel.
func limitFileSize(tb testing.TB, n uint64) {
	tb.Helper()
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_FSIZE, &old); err != nil {
		tb.Skip("RLIMIT_FSIZE:", err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: min(n, old.Max), Max: old.Max}); err != nil {
		tb.Skip("RLIMIT_FSIZE:", err)
	}
	tb.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_FSIZE, &old) })
}

// An image larger than the data directory's file system holds is the
// client's to fix (ask for less): a 400 naming the size, without the
// server's paths, that leaves no image behind. It was a 500 holding the
// path of the partial file, and a retry found the name taken.
func TestImageTooLargeForTheFileSystem(t *testing.T) {
	a := newTestAPI(t)
	limitFileSize(t, 1<<30)
	code, e := a.call(t, "POST", "/images", `{"name": "big", "size": "4G"}`, nil)
	if code != 400 || e.Field != "size" || strings.Contains(e.Error, a.dir) {
		t.Fatalf("4G image on a file system of 1G files: %d %+v", code, e)
	}
	if code, _ := a.call(t, "GET", "/images/big", "", nil); code != 404 {
		t.Fatalf("the failed image is left behind: %d", code)
	}
	if code, e := a.call(t, "POST", "/images", `{"name": "big", "size": "1M"}`, nil); code != 201 {
		t.Fatalf("a size that fits, same name: %d %+v", code, e)
	}
}
