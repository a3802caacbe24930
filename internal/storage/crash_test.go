package storage

import (
	"context"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/disk"
)

// A crash after DeleteSnapshot merged (on disk) but before the caller
// committed the returned state: on restart the store still has the
// snapshot; deleting it again must work.
func TestDeleteSnapshotAgainAfterCrash(t *testing.T) {
	l, ref, _ := fixture(t)
	ctx := context.Background()
	st, err := l.CreateDisk(ctx, "h", Persistent, ref, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	withDisk(t, l, "h", st, func(d disk.Device) { d.WriteAt(fill(1), 0) })
	st, err = l.Snapshot("h", st, "a", time.Now(), false)
	if err != nil {
		t.Fatal(err)
	}
	withDisk(t, l, "h", st, func(d disk.Device) { d.WriteAt(fill(2), 8192) })
	// DeleteSnapshot merges l1 into l2 on disk; "crash": the new state is never committed.
	if _, err := l.DeleteSnapshot("h", st, "a"); err != nil {
		t.Fatal(err)
	}
	// Restart: the store still says st. Open works (merged layer skipped)...
	withDisk(t, l, "h", st, func(d disk.Device) {})
	// ... but the snapshot can never be deleted now.
	if _, err := l.DeleteSnapshot("h", st, "a"); err != nil {
		t.Fatalf("delete snapshot again after the crash: %v", err)
	}
}

// Same with the disk open (the host running).
func TestDeleteSnapshotAgainAfterCrashOpen(t *testing.T) {
	l, ref, _ := fixture(t)
	ctx := context.Background()
	st, _ := l.CreateDisk(ctx, "h", Persistent, ref, "", nil)
	withDisk(t, l, "h", st, func(d disk.Device) { d.WriteAt(fill(1), 0) })
	st, _ = l.Snapshot("h", st, "a", time.Now(), false)
	withDisk(t, l, "h", st, func(d disk.Device) { d.WriteAt(fill(2), 8192) })
	if _, err := l.DeleteSnapshot("h", st, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.OpenDisk("h", st, nil); err != nil {
		t.Fatal(err)
	}
	defer l.CloseDisk("h")
	if _, err := l.DeleteSnapshot("h", st, "a"); err != nil {
		t.Fatalf("delete snapshot again (disk open) after the crash: %v", err)
	}
}
