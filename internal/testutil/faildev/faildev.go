// Package faildev gives tests storage that really fails, through the
// kernel: a small file system that fills up, and block devices that start
// failing writes and can be mended. Tests need root; they skip with the
// reason when something is missing (root, loop devices, device-mapper or
// one of its targets, mkfs.ext4). Every mount, loop device and
// device-mapper device is undone by t.Cleanup, on every path.
//
// The failing block devices:
//   - Loop: a loop device over a sparse file on a tmpfs, which Break fills
//     up. Write-back of a block of the device never written before then
//     fails (the kernel logs "lost async page write"), as on a thin volume
//     that ran out of space; reads work. Needs loop devices only.
//   - DM "error": device-mapper's error target replaces the device's
//     table: every I/O fails, reads of what is not cached included.
//   - DM "flakey": dm-flakey with error_writes: every write fails, reads
//     work.
package faildev

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Tmpfs mounts a tmpfs of size bytes on a new directory.
func Tmpfs(t testing.TB, size int64) string {
	t.Helper()
	needRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		t.Skipf("faildev: cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { unmount(t, dir) })
	return dir
}

// Ext4 makes an ext4 file system of size bytes in a file and loop-mounts
// it on a new directory.
func Ext4(t testing.TB, size int64) string {
	t.Helper()
	img := filepath.Join(Tmpfs(t, size+size/8+1<<20), "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	return MountExt4(t, attachLoop(t, img))
}

// MountExt4 makes an ext4 file system on the block device dev and mounts
// it on a new directory.
func MountExt4(t testing.TB, dev string) string {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("faildev: mkfs.ext4 not in PATH (Debian package e2fsprogs)")
	}
	// No discard: on a Loop device that would allocate nothing anyway,
	// and it is slow on some kernels.
	run(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", dev)
	dir := t.TempDir()
	// No periodic journal commit: the test's own flushes are the first
	// to meet a broken device, not a timer that happens to fire.
	if err := unix.Mount(dev, dir, "ext4", 0, "commit=3600"); err != nil {
		t.Fatalf("faildev: mount %s: %v", dev, err)
	}
	t.Cleanup(func() { unmount(t, dir) })
	return dir
}

// Device is a block device that works until Break and again after Fix.
type Device struct {
	Path string // the block device
	Kind string // "loop", "dm-error" or "dm-flakey"
	t    testing.TB
	brk  func() error
	fix  func() error
}

// Break makes the device fail as its Kind says.
func (d *Device) Break() {
	d.t.Helper()
	if err := d.brk(); err != nil {
		d.t.Fatalf("faildev: break %s: %v", d.Path, err)
	}
}

// Fix mends the device: what the operator does to the storage.
func (d *Device) Fix() {
	d.t.Helper()
	if err := d.fix(); err != nil {
		d.t.Fatalf("faildev: fix %s: %v", d.Path, err)
	}
}

// Loop returns a loop device of size bytes over a sparse file on a tmpfs
// with room for the whole device; Break fills the tmpfs, so writing back
// blocks never written before fails, and Fix empties it again.
func Loop(t testing.TB, size int64) *Device {
	t.Helper()
	dir := Tmpfs(t, size+1<<20)
	back := filepath.Join(dir, "back")
	if err := os.WriteFile(back, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(back, size); err != nil {
		t.Fatal(err)
	}
	ballast := filepath.Join(dir, "ballast")
	return &Device{Path: attachLoop(t, back), Kind: "loop", t: t,
		brk: func() error { return fill(ballast) },
		fix: func() error { return os.Remove(ballast) }}
}

// fill writes path until its file system is full.
func fill(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for n := len(chunk); n > 0; {
		if _, err := f.Write(chunk[:n]); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				return err
			}
			n /= 2 // fill the last pages too
		}
	}
	return nil
}

var dmSeq atomic.Int64

// DM returns a device-mapper device of size bytes over a loop device,
// mapped linearly; Break loads the target: "error" (every I/O fails) or
// "flakey" (dm-flakey, error_writes: writes fail, reads work). It skips
// when the kernel has no device-mapper or not that target.
func DM(t testing.TB, size int64, target string) *Device {
	t.Helper()
	needRoot(t)
	if _, err := exec.LookPath("dmsetup"); err != nil {
		t.Skip("faildev: dmsetup not in PATH (Debian package dmsetup; scripts/ci-deps.sh installs it)")
	}
	if out, err := exec.Command("dmsetup", "version").CombinedOutput(); err != nil {
		t.Skipf("faildev: the kernel offers no device-mapper: %s", firstLine(out, err))
	}
	if size%512 != 0 {
		t.Fatalf("faildev: size %d is not a number of sectors", size)
	}
	dir := Tmpfs(t, size+1<<20)
	back := filepath.Join(dir, "back")
	if err := os.WriteFile(back, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(back, size); err != nil {
		t.Fatal(err)
	}
	loop := attachLoop(t, back)
	sectors := size / 512
	linear := fmt.Sprintf("0 %d linear %s 0", sectors, loop)
	var broken string
	switch target {
	case "error":
		broken = fmt.Sprintf("0 %d error", sectors)
	case "flakey":
		// Up for 0 seconds, down for a day: every write fails.
		broken = fmt.Sprintf("0 %d flakey %s 0 0 86400 1 error_writes", sectors, loop)
	default:
		t.Fatalf("faildev: unknown target %q", target)
	}
	name := fmt.Sprintf("diskless-test-%d-%d", os.Getpid(), dmSeq.Add(1))
	if out, err := exec.Command("dmsetup", "create", name, "--table", linear).CombinedOutput(); err != nil {
		t.Skipf("faildev: dmsetup create: %s", firstLine(out, err))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("dmsetup", "remove", "--retry", name).CombinedOutput(); err != nil {
			t.Errorf("faildev: dmsetup remove %s: %s", name, firstLine(out, err))
		}
	})
	path := "/dev/mapper/" + name
	if _, err := os.Stat(path); err != nil {
		// No udev to make the node: dmsetup makes it.
		exec.Command("dmsetup", "mknodes", name).Run()
		if _, err := os.Stat(path); err != nil {
			t.Skipf("faildev: %s did not appear (no udev?): %v", path, err)
		}
	}
	// Load the broken table now, inactive: a kernel without the target
	// refuses it here, and the test skips instead of failing midway.
	if out, err := exec.Command("dmsetup", "load", name, "--table", broken).CombinedOutput(); err != nil {
		t.Skipf("faildev: the kernel lacks device-mapper target %q: %s", target, firstLine(out, err))
	}
	swap := func(table string) error {
		if table != "" {
			if out, err := exec.Command("dmsetup", "load", name, "--table", table).CombinedOutput(); err != nil {
				return fmt.Errorf("dmsetup load: %s", firstLine(out, err))
			}
		}
		// resume suspends the device, swaps in the loaded table and
		// resumes it.
		if out, err := exec.Command("dmsetup", "resume", name).CombinedOutput(); err != nil {
			return fmt.Errorf("dmsetup resume: %s", firstLine(out, err))
		}
		return nil
	}
	return &Device{Path: path, Kind: "dm-" + target, t: t,
		brk: func() error { return swap("") }, // the table loaded above
		fix: func() error { return swap(linear) }}
}

// Devices returns every failing block device of size bytes this machine
// offers, by Kind; each one the test does not get is named in a log line
// with the reason. It skips when there is none.
func Devices(t *testing.T, size int64) []*Device {
	t.Helper()
	var out []*Device
	for _, mk := range []struct {
		kind string
		make func(testing.TB) *Device
	}{
		{"loop", func(t testing.TB) *Device { return Loop(t, size) }},
		{"dm-error", func(t testing.TB) *Device { return DM(t, size, "error") }},
		{"dm-flakey", func(t testing.TB) *Device { return DM(t, size, "flakey") }},
	} {
		if d, reason := probe(t, mk.make); d != nil {
			out = append(out, d)
		} else {
			t.Logf("faildev: no %s device: %s", mk.kind, reason)
		}
	}
	if len(out) == 0 {
		t.Skip("faildev: no failing block device on this machine")
	}
	return out
}

// probe runs make with t, turning its Skip into a reason.
func probe(t *testing.T, make func(testing.TB) *Device) (d *Device, reason string) {
	st := &skipTB{TB: t}
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(skipped); !ok {
				panic(r)
			}
			d, reason = nil, st.reason
		}
	}()
	d = make(st)
	d.t = t
	return d, ""
}

// skipTB is t with Skip turned into a panic that probe recovers, so one
// kind of device missing does not skip the whole test.
type skipTB struct {
	testing.TB
	reason string
}

type skipped struct{}

func (s *skipTB) Skip(args ...any) { s.reason = fmt.Sprint(args...); panic(skipped{}) }
func (s *skipTB) Skipf(format string, args ...any) {
	s.reason = fmt.Sprintf(format, args...)
	panic(skipped{})
}
func (s *skipTB) Helper() {}

// attachLoop attaches a loop device to file.
func attachLoop(t testing.TB, file string) string {
	t.Helper()
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("faildev: losetup not in PATH (util-linux)")
	}
	out, err := exec.Command("losetup", "--find", "--show", file).CombinedOutput()
	if err != nil {
		t.Skipf("faildev: no loop device: %s", firstLine(out, err))
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("faildev: losetup --detach %s: %s", dev, firstLine(out, err))
		}
	})
	return dev
}

// unmount unmounts dir, waiting a little while it is busy: a process a
// test just killed (a server child) may still be releasing its files.
func unmount(t testing.TB, dir string) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := unix.Unmount(dir, 0)
		if err == nil {
			return
		}
		if err == unix.EBUSY && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		t.Errorf("faildev: unmount %s: %v (detaching it)", dir, err)
		unix.Unmount(dir, unix.MNT_DETACH)
		return
	}
}

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("faildev: needs root (mounts, loop devices, device-mapper)")
	}
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("faildev: %s %s: %s", name, strings.Join(args, " "), firstLine(out, err))
	}
}

func firstLine(out []byte, err error) string {
	if line, _, _ := bytes.Cut(bytes.TrimSpace(out), []byte("\n")); len(line) > 0 {
		return fmt.Sprintf("%s (%v)", line, err)
	}
	return err.Error()
}
