package storage

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/disk"
)

// A persistent disk whose directory was lost is refused, not served as
// its image; Check says so; a reset starts it again from its image, on a
// new directory, without the snapshots that were in the lost one.
func TestLostDiskDirectoryRefused(t *testing.T) {
	l, ref, data := fixture(t)
	st, err := l.CreateDisk(context.Background(), "pc", Persistent, ref, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	withDisk(t, l, "pc", st, func(d disk.Device) {
		if _, err := d.WriteAt(fill(7), 0); err != nil {
			t.Fatal(err)
		}
	})
	if st, err = l.Snapshot("pc", st, "before", time.Now(), false); err != nil {
		t.Fatal(err)
	}
	withDisk(t, l, "pc", st, func(disk.Device) {})

	if err := os.RemoveAll(l.hostDir("pc")); err != nil {
		t.Fatal(err)
	}
	if _, err := l.OpenDisk("pc", st, nil); !errors.Is(err, ErrDiskLost) {
		t.Fatalf("open of a disk whose directory is gone: %v, want ErrDiskLost", err)
	}
	if rep, err := l.Check("pc", st); err != nil || rep.OK {
		t.Fatalf("check of a lost disk: %+v, %v; want not OK", rep, err)
	}
	if _, err := os.Stat(l.hostDir("pc")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused open made the directory again: %v", err)
	}

	n, err := l.Rebase("pc", st, ref)
	if err != nil {
		t.Fatal(err)
	}
	if len(n.Snapshots) != 0 || len(n.Layers) != 1 || n.DirID == st.DirID {
		t.Fatalf("reset of a lost disk: %d snapshots, %d layers, dir id %q (was %q)", len(n.Snapshots), len(n.Layers), n.DirID, st.DirID)
	}
	withDisk(t, l, "pc", n, func(d disk.Device) {
		b := make([]byte, 4096)
		d.ReadAt(b, 0)
		if !bytes.Equal(b, data[:4096]) {
			t.Fatal("the reset disk does not read as its image")
		}
	})
	if rep, err := l.Check("pc", n); err != nil || !rep.OK {
		t.Fatalf("check after the reset: %+v, %v", rep, err)
	}
}

// A layer that was made and is gone is refused; a layer the state names
// but no open ever made is empty, as before.
func TestLostLayerRefused(t *testing.T) {
	l, ref, _ := fixture(t)
	st, err := l.CreateDisk(context.Background(), "pc", Persistent, ref, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Snapshot before the first open: l1 is never made.
	if st, err = l.Snapshot("pc", st, "empty", time.Now(), false); err != nil {
		t.Fatal(err)
	}
	withDisk(t, l, "pc", st, func(d disk.Device) {
		if _, err := d.WriteAt(fill(9), 0); err != nil {
			t.Fatal(err)
		}
	})
	top := st.Top
	if err := os.RemoveAll(l.layerDir("pc", top)); err != nil {
		t.Fatal(err)
	}
	if _, err := l.OpenDisk("pc", st, nil); !errors.Is(err, ErrDiskLost) {
		t.Fatalf("open with its written top layer gone: %v, want ErrDiskLost", err)
	}
	if rep, err := l.Check("pc", st); err != nil || rep.OK {
		t.Fatalf("check with a layer gone: %+v, %v; want not OK", rep, err)
	}
}

// A disk made before DirID existed (none in its state, no disk-id) opens
// as before; its next reset gives it one and records the layers it has.
func TestDiskWithoutDirID(t *testing.T) {
	l, ref, _ := fixture(t)
	st, err := l.CreateDisk(context.Background(), "pc", Persistent, ref, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	st.DirID = ""
	os.Remove(l.dirIDPath("pc"))
	withDisk(t, l, "pc", st, func(disk.Device) {})
	if st, err = l.Snapshot("pc", st, "s", time.Now(), false); err != nil {
		t.Fatal(err)
	}
	n, err := l.Rebase("pc", st, ref)
	if err != nil {
		t.Fatal(err)
	}
	if n.DirID == "" || len(n.Snapshots) != 1 {
		t.Fatalf("reset of an old disk: dir id %q, %d snapshots; want an id and its snapshot kept", n.DirID, len(n.Snapshots))
	}
	made, err := l.madeLayers("pc")
	if err != nil || !made[st.Snapshots[0].Layer] {
		t.Fatalf("made layers after the reset: %v, %v; want the snapshot's", made, err)
	}
	withDisk(t, l, "pc", n, func(disk.Device) {})
	if err := os.RemoveAll(l.layerDir("pc", st.Snapshots[0].Layer)); err != nil {
		t.Fatal(err)
	}
	rb, err := l.Rollback("pc", n, "s")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.OpenDisk("pc", rb, nil); !errors.Is(err, ErrDiskLost) {
		t.Fatalf("rollback onto a lost snapshot layer opened: %v, want ErrDiskLost", err)
	}
}

// A layer made but not recorded (a crash between the two) is recorded at
// the next open, so its later loss is caught; deleting a snapshot whose
// lost layer would be merged away as empty is refused; a volatile disk's
// record keeps only the layers its state names, however many boots.
func TestMadeRecordKeptRight(t *testing.T) {
	l, ref, _ := fixture(t)
	st, err := l.CreateDisk(context.Background(), "pc", Persistent, ref, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	withDisk(t, l, "pc", st, func(d disk.Device) { d.WriteAt(fill(3), 0) })
	os.Remove(l.madePath("pc")) // made, never recorded
	withDisk(t, l, "pc", st, func(disk.Device) {})
	if made, err := l.madeLayers("pc"); err != nil || !made[st.Top] {
		t.Fatalf("made after reopening: %v, %v; want %s recorded", made, err, st.Top)
	}

	if st, err = l.Snapshot("pc", st, "s1", time.Now(), false); err != nil {
		t.Fatal(err)
	}
	withDisk(t, l, "pc", st, func(disk.Device) {})
	lost := st.Snapshots[0].Layer
	if err := os.RemoveAll(l.layerDir("pc", lost)); err != nil {
		t.Fatal(err)
	}
	if _, err := l.DeleteSnapshot("pc", st, "s1"); !errors.Is(err, ErrDiskLost) {
		t.Fatalf("deleting a snapshot whose layer was lost: %v, want ErrDiskLost", err)
	}

	v, err := l.CreateDisk(context.Background(), "vol", Volatile, ref, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 { // five boots
		withDisk(t, l, "vol", v, func(disk.Device) {})
		if v, err = l.Rebase("vol", v, ref); err != nil {
			t.Fatal(err)
		}
		if err := l.Prune("vol", v); err != nil {
			t.Fatal(err)
		}
	}
	made, err := l.madeLayers("vol")
	if err != nil || len(made) > 1 {
		t.Fatalf("a volatile disk's made layers after 5 boots: %v, %v; want at most its top", made, err)
	}
}
