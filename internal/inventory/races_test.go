package inventory

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/storage"
)

// A snapshot of a running disk whose switch to a new top fails (Push, after
// the commit) is reported failed and not kept: the disk goes on writing the
// layer the snapshot would have frozen.
func TestSnapshotTakenBackWhenThePushFails(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	inv := newInv(t, dir, "")
	if _, err := inv.CreateImage(ctx, NewImage{Name: "img", Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if _, err := inv.AddHost(ctx, HostSpec{Name: "pc1", Image: "img"}, nil); err != nil {
		t.Fatal(err)
	}
	h, _ := inv.HostWithSecrets("pc1")
	dev, err := inv.be.OpenDisk("pc1", h.Disk, nil) // the server serves it
	if err != nil {
		t.Fatal(err)
	}
	dev.WriteAt(bytes.Repeat([]byte{1}, 4096), 0)
	// Make Push fail (as ENOSPC would): the new layer's directory is not empty.
	junk := filepath.Join(dir, "hosts", "pc1", "layers", "l2")
	os.MkdirAll(junk, 0o700)
	os.WriteFile(filepath.Join(junk, "x"), []byte("x"), 0o600)
	_, err = inv.Snapshot("pc1", "snap")
	h, _ = inv.HostWithSecrets("pc1")
	if err == nil || len(h.Disk.Snapshots) != 0 {
		t.Errorf("failed snapshot: error %v, snapshots kept %+v", err, h.Disk.Snapshots)
	}
	// The host keeps writing...
	dev.WriteAt(bytes.Repeat([]byte{2}, 4096), 0)
	dev.Flush()
	inv.be.CloseDisk("pc1")
	os.RemoveAll(junk)
	if err == nil || len(h.Disk.Snapshots) == 0 {
		return
	}
	if _, err := inv.Rollback("pc1", "snap"); err != nil {
		t.Fatal(err)
	}
	h, _ = inv.HostWithSecrets("pc1")
	dev, err = inv.be.OpenDisk("pc1", h.Disk, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer inv.be.CloseDisk("pc1")
	b := make([]byte, 4096)
	dev.ReadAt(b, 0)
	if b[0] != 1 {
		t.Fatalf("snapshot 'snap' (reported as failed but recorded) holds a write made after it: byte %d", b[0])
	}
}

// A promoted raw host's version records the raw file's size.
func TestPromoteRawSize(t *testing.T) {
	ctx := context.Background()
	inv := newInv(t, t.TempDir(), "")
	if _, err := inv.CreateImage(ctx, NewImage{Name: "img", Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if _, err := inv.AddHost(ctx, HostSpec{Name: "r", Image: "img", Version: 1, Mode: storage.Raw}, nil); err != nil {
		t.Fatal(err)
	}
	v, _, err := inv.Promote(ctx, "r", "img", nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := inv.Version("img", v.Number)
	if got.Size != 1<<20 {
		t.Fatalf("promoted version record size %d, want %d", got.Size, 1<<20)
	}
}

// Deleting a version while it is open (an export running) is a conflict
// that leaves the version as it was: record and file.
func TestDeleteVersionWhileOpen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	inv := newInv(t, dir, "")
	inv.CreateImage(ctx, NewImage{Name: "img", Size: 1 << 20})
	inv.AddVersion(ctx, "img", 1<<20, nil, "empty", nil)
	_, _, closeFn, err := inv.OpenVersion("img", 1) // an export job
	if err != nil {
		t.Fatal(err)
	}
	err = inv.DeleteVersion("img", 1)
	closeFn()
	_, verr := inv.Version("img", 1)
	_, ferr := os.Stat(filepath.Join(dir, "images", "img", "v1.img"))
	if KindOf(err) != Conflict || verr != nil || ferr != nil {
		t.Fatalf("delete of an open version: %v (kind %d); record %v, file %v", err, KindOf(err), verr, ferr)
	}
}

type memSource struct{ b []byte }

func (m memSource) ReadAt(p []byte, off int64) (int, error) { return copy(p, m.b[off:]), nil }
func (m memSource) Size() int64                             { return int64(len(m.b)) }

// A version deleted while a host is being added on it: either the delete
// is refused (the version is in use) or the add fails; never a host on a
// version that is gone.
func TestAddHostRacingDeleteVersion(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	inv := newInv(t, dir, "")
	inv.CreateImage(ctx, NewImage{Name: "img"})
	b := make([]byte, 64<<20)
	for i := range b {
		b[i] = byte(i*7 + i>>12)
	}
	if _, _, err := inv.AddVersion(ctx, "img", 0, memSource{b}, "test", nil); err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() {
		_, err := inv.AddHost(ctx, HostSpec{Name: "r", Image: "img", Version: 1, Mode: storage.Raw}, nil)
		done <- err
	}()
	time.Sleep(30 * time.Millisecond)
	derr := inv.DeleteVersion("img", 1)
	aerr := <-done
	_, verr := inv.Version("img", 1)
	if aerr == nil && verr != nil {
		t.Errorf("host added on a version deleted meanwhile (delete: %v)", derr)
	}
}
