package faildev

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// Each failing device really fails: after Break the fdatasync over a
// write to a block never written before reports an error, the next one
// (the kernel has told) does not; after Fix writes are durable again.
func TestDevicesFail(t *testing.T) {
	for _, d := range Devices(t, 16<<20) {
		t.Run(d.Kind, func(t *testing.T) {
			f, err := os.OpenFile(d.Path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			fd := int(f.Fd())
			block := bytes.Repeat([]byte{0x5a}, 64<<10)
			if _, err := unix.Pwrite(fd, block, 0); err != nil {
				t.Fatal(err)
			}
			if err := unix.Fdatasync(fd); err != nil {
				t.Fatalf("fdatasync before Break: %v", err)
			}
			d.Break()
			if _, err := unix.Pwrite(fd, block, 4<<20); err != nil {
				t.Fatalf("buffered write after Break: %v", err)
			}
			if err := unix.Fdatasync(fd); err == nil {
				t.Fatal("fdatasync after Break succeeded")
			}
			d.Fix()
			if _, err := unix.Pwrite(fd, block, 8<<20); err != nil {
				t.Fatal(err)
			}
			if err := unix.Fdatasync(fd); err != nil {
				t.Fatalf("fdatasync after Fix: %v", err)
			}
		})
	}
}

// A full file system refuses writes with ENOSPC.
func TestSmallFileSystems(t *testing.T) {
	for name, dir := range map[string]func() string{
		"tmpfs": func() string { return Tmpfs(t, 1<<20) },
		"ext4":  func() string { return Ext4(t, 4<<20) },
	} {
		t.Run(name, func(t *testing.T) {
			dir := dir()
			if err := fill(filepath.Join(dir, "x")); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "y"), make([]byte, 64<<10), 0o600); !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("write to a full %s: %v, want ENOSPC", name, err)
			}
		})
	}
}
