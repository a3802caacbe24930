package storage

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/diskless-boot/diskless/internal/disk"
)

// A failed flush of a host disk (reported by the device as it fails:
// recordFailure) outlives closing the disk and a restart: the disk opens
// failed while it holds the part that failed, until ClearDiskError. A
// disk made anew without that part (a reset) starts healthy and the
// record goes. (The devices' side, with storage that really fails, is
// tested in internal/scsi and cmd/diskless.)
func TestDiskFailureRemembered(t *testing.T) {
	l, ref, _ := fixture(t)
	ctx := context.Background()
	eio := errors.New("disk: fdatasync: input/output error")
	for _, mode := range []DiskMode{Persistent, Raw} {
		t.Run(string(mode), func(t *testing.T) {
			host := "h-" + string(mode)
			st, err := l.CreateDisk(ctx, host, mode, ref, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := l.OpenDisk(host, st, nil); err != nil {
				t.Fatal(err)
			}
			l.recordFailure(host, st, eio)
			if err := l.CloseDisk(host); err != nil {
				t.Fatal(err)
			}
			l, err := NewLocal(l.root, nil) // a restart
			if err != nil {
				t.Fatal(err)
			}
			if err := l.DiskError(host, st); !errors.Is(err, disk.ErrDeviceFailed) {
				t.Fatalf("DiskError of a closed failed disk after a restart = %v", err)
			}
			d, err := l.OpenDisk(host, st, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := d.WriteAt([]byte{1}, 0); !errors.Is(err, disk.ErrDeviceFailed) {
				t.Fatalf("write to a reopened failed disk = %v", err)
			}
			if err := d.Flush(); !errors.Is(err, disk.ErrDeviceFailed) {
				t.Fatalf("flush of a reopened failed disk = %v", err)
			}
			if err := l.DiskError(host, st); !errors.Is(err, disk.ErrDeviceFailed) {
				t.Fatalf("DiskError of the open failed disk = %v", err)
			}
			if err := l.ClearDiskError(host, st); err != nil {
				t.Fatal(err)
			}
			if _, err := d.WriteAt([]byte{1}, 0); err != nil {
				t.Fatalf("write after ClearDiskError: %v", err)
			}
			if err := d.Flush(); err != nil {
				t.Fatalf("flush after ClearDiskError: %v", err)
			}
			if err := l.CloseDisk(host); err != nil {
				t.Fatal(err)
			}
			if err := l.DiskError(host, st); err != nil {
				t.Fatalf("DiskError after ClearDiskError and a close = %v", err)
			}
			if mode == Raw {
				return
			}
			// A reset: a new top that does not lie on the failed one.
			l.recordFailure(host, st, eio)
			reset, err := l.Rebase(host, st, ref)
			if err != nil {
				t.Fatal(err)
			}
			if err := l.DiskError(host, reset); err != nil {
				t.Fatalf("DiskError of a reset disk = %v", err)
			}
			d, err = l.OpenDisk(host, reset, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := d.WriteAt([]byte{1}, 0); err != nil {
				t.Fatalf("write to a reset disk: %v", err)
			}
			l.CloseDisk(host)
			if _, err := os.Stat(filepath.Join(l.hostDir(host), failedName)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("failure record of a part no disk holds kept: %v", err)
			}
		})
	}
}

func TestDiskFailureApplies(t *testing.T) {
	ref := VersionRef{Image: "i", Version: 1}
	chain := DiskState{Mode: Persistent, Top: "l3", Layers: map[string]Layer{
		"l1": {Base: ref}, "l2": {Parent: "l1", Base: ref}, "l3": {Parent: "l2", Base: ref}, "l4": {Base: ref}}}
	other := chain
	other.Top = "l4"
	raw := DiskState{Mode: Raw, RawPath: "/srv/a.img"}
	for _, c := range []struct {
		f    diskFailure
		st   DiskState
		want bool
	}{
		{diskFailure{Part: "l3"}, chain, true},  // the top that failed
		{diskFailure{Part: "l2"}, chain, true},  // a snapshot was taken on it since
		{diskFailure{Part: "l3"}, other, false}, // reset or rolled back away from it
		{diskFailure{Raw: true, Part: "/srv/a.img"}, raw, true},
		{diskFailure{Raw: true, Part: "/srv/b.img"}, raw, false},
		{diskFailure{Raw: true, Part: "/srv/a.img"}, chain, false},
		{diskFailure{Part: "l3"}, raw, false},
		{diskFailure{Error: "failure record corrupt"}, chain, true}, // unreadable: failed
		{diskFailure{Error: "failure record corrupt"}, raw, true},
	} {
		if got := c.f.applies(c.st); got != c.want {
			t.Errorf("%+v applies to %s/%s%s = %v", c.f, c.st.Mode, c.st.Top, c.st.RawPath, got)
		}
	}
}
