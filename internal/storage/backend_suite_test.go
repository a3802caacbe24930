package storage

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/disk"
)

// suiteSize is the size of the suite's versions: several RBD objects.
const suiteSize = 12 << 20

// runBackendSuite checks what every Backend must do the same way, the
// local files and Ceph RBD alike: the inventory relies on it. newBackend
// returns a fresh backend (for RBD: on the shared cluster, with names of
// its own).
func runBackendSuite(t *testing.T, newBackend func(t *testing.T) Backend) {
	ctx := context.Background()
	random := func(seed uint64) []byte {
		b := make([]byte, suiteSize)
		rng := rand.New(rand.NewPCG(seed, seed))
		for i := 0; i < len(b); i += 4096 {
			if i/4096%3 != 0 { // a third stays zero: holes to skip
				for j := i; j < i+4096; j++ {
					b[j] = byte(rng.Uint32())
				}
			}
		}
		return b
	}
	version := func(t *testing.T, be Backend, ref VersionRef, data []byte) {
		t.Helper()
		var last int64
		err := be.WriteVersion(ctx, ref, int64(len(data)), bytes.NewReader(data), func(done int64) { last = done })
		if err != nil {
			t.Fatal(err)
		}
		if last != int64(len(data)) {
			t.Errorf("progress ended at %d of %d bytes", last, len(data))
		}
	}
	readAll := func(t *testing.T, d disk.Device) []byte {
		t.Helper()
		b := make([]byte, d.Size())
		if _, err := d.ReadAt(b, 0); err != nil {
			t.Fatal(err)
		}
		return b
	}
	open := func(t *testing.T, be Backend, host string, st DiskState) disk.Device {
		t.Helper()
		d, err := be.OpenDisk(host, st, nil)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	closeDisk := func(t *testing.T, be Backend, host string) {
		t.Helper()
		if err := be.CloseDisk(host); err != nil {
			t.Fatal(err)
		}
	}
	write := func(t *testing.T, d disk.Device, off int64, b byte) {
		t.Helper()
		if _, err := d.WriteAt(bytes.Repeat([]byte{b}, 8192), off); err != nil {
			t.Fatal(err)
		}
		if err := d.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	at := func(data []byte, off int64, b byte) []byte {
		out := bytes.Clone(data)
		copy(out[off:], bytes.Repeat([]byte{b}, 8192))
		return out
	}
	same := func(t *testing.T, what string, got, want []byte) {
		t.Helper()
		if !bytes.Equal(got, want) {
			i := 0
			for i < len(got) && i < len(want) && got[i] == want[i] {
				i++
			}
			t.Fatalf("%s: differs from byte %d (%d and %d bytes)", what, i, len(got), len(want))
		}
	}

	t.Run("Versions", func(t *testing.T) {
		be := newBackend(t)
		ref := VersionRef{Image: "img", Version: 1}
		data := random(1)
		version(t, be, ref, data)
		if err := be.WriteVersion(ctx, ref, suiteSize, nil, nil); err == nil {
			t.Error("a version was written twice")
		}
		v, err := be.OpenVersion(ref)
		if err != nil {
			t.Fatal(err)
		}
		same(t, "version read back", readAll(t, v), data)
		if _, err := v.WriteAt([]byte{1}, 0); err == nil {
			t.Error("a version took a write")
		}
		if err := be.DeleteVersion(ref); !errors.Is(err, ErrDiskOpen) {
			t.Errorf("delete of an open version: %v, want ErrDiskOpen", err)
		}
		v.Close()
		zero := VersionRef{Image: "img", Version: 2}
		version(t, be, zero, make([]byte, suiteSize))
		if err := be.DeleteVersion(ref); err != nil {
			t.Fatal(err)
		}
		if _, err := be.OpenVersion(ref); err == nil {
			t.Error("a deleted version opens")
		}
		if err := be.DeleteVersion(zero); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("DiskSnapshotRollbackResetPromote", func(t *testing.T) {
		be := newBackend(t)
		base := random(2)
		ref := VersionRef{Image: "img", Version: 1}
		version(t, be, ref, base)
		const host = "h1"
		st, err := be.CreateDisk(ctx, host, Persistent, ref, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		d := open(t, be, host, st)
		if _, err := be.OpenDisk(host, st, nil); !errors.Is(err, ErrDiskOpen) {
			t.Errorf("second open: %v, want ErrDiskOpen", err)
		}
		same(t, "new disk", readAll(t, d), base)
		write(t, d, 4096, 0xaa)
		stateA := at(base, 4096, 0xaa)

		// A snapshot of the running disk, committed, then more writes.
		st, err = be.Snapshot(host, st, "s1", time.Now(), false)
		if err != nil {
			t.Fatal(err)
		}
		if err := be.Sync(host, st); err != nil {
			t.Fatal(err)
		}
		if err := be.Prune(host, st); err != nil {
			t.Fatal(err)
		}
		write(t, d, 4096, 0xbb)
		write(t, d, 5<<20, 0xcc)
		stateB := at(at(base, 4096, 0xbb), 5<<20, 0xcc)
		same(t, "after the snapshot", readAll(t, d), stateB)
		if rep, err := be.Check(host, st); err != nil || !rep.OK {
			t.Errorf("check: %+v %v", rep, err)
		}
		if u, err := be.Usage(host, st); err != nil || u <= 0 {
			t.Errorf("usage %d %v, want > 0", u, err)
		}
		if _, err := be.Rollback(host, st, "s1"); !errors.Is(err, ErrDiskOpen) {
			t.Errorf("rollback of an open disk: %v, want ErrDiskOpen", err)
		}
		closeDisk(t, be, host)

		// Promote: the disk's content becomes version 2.
		v2 := VersionRef{Image: "img", Version: 2}
		if err := be.CopyDisk(ctx, host, st, "", v2, nil); err != nil {
			t.Fatal(err)
		}
		vd, err := be.OpenVersion(v2)
		if err != nil {
			t.Fatal(err)
		}
		same(t, "promoted version", readAll(t, vd), stateB)
		vd.Close()
		// And the snapshot's content, version 3.
		v3 := VersionRef{Image: "img", Version: 3}
		if err := be.CopyDisk(ctx, host, st, "s1", v3, nil); err != nil {
			t.Fatal(err)
		}
		vd, err = be.OpenVersion(v3)
		if err != nil {
			t.Fatal(err)
		}
		same(t, "version from a snapshot", readAll(t, vd), stateA)
		vd.Close()

		st, err = be.Rollback(host, st, "s1")
		if err != nil {
			t.Fatal(err)
		}
		if err := be.Prune(host, st); err != nil {
			t.Fatal(err)
		}
		d = open(t, be, host, st)
		same(t, "after rollback", readAll(t, d), stateA)
		closeDisk(t, be, host)

		// Reset: back to the version, the snapshot still there.
		st, err = be.Rebase(host, st, ref)
		if err != nil {
			t.Fatal(err)
		}
		if err := be.Prune(host, st); err != nil {
			t.Fatal(err)
		}
		d = open(t, be, host, st)
		same(t, "after reset", readAll(t, d), base)
		closeDisk(t, be, host)
		st, err = be.Rollback(host, st, "s1")
		if err != nil {
			t.Fatal(err)
		}
		d = open(t, be, host, st)
		same(t, "rollback after reset", readAll(t, d), stateA)
		closeDisk(t, be, host)

		// Onto the promoted version, then the snapshot deleted.
		st, err = be.Rebase(host, st, v2)
		if err != nil {
			t.Fatal(err)
		}
		st, err = be.DeleteSnapshot(host, st, "s1")
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := st.Snapshot("s1"); ok {
			t.Error("deleted snapshot still in the state")
		}
		if err := be.Prune(host, st); err != nil {
			t.Fatal(err)
		}
		d = open(t, be, host, st)
		same(t, "on version 2", readAll(t, d), stateB)
		closeDisk(t, be, host)
		if rep, err := be.Check(host, st); err != nil || !rep.OK {
			t.Errorf("check: %+v %v", rep, err)
		}
		if _, err := be.Rollback(host, st, "s1"); !errors.Is(err, ErrNoSnapshot) {
			t.Errorf("rollback to a deleted snapshot: %v, want ErrNoSnapshot", err)
		}

		// Removing the host frees every version.
		if err := be.Prune(host, DiskState{}); err != nil {
			t.Fatal(err)
		}
		for _, r := range []VersionRef{ref, v2, v3} {
			if err := be.DeleteVersion(r); err != nil {
				t.Errorf("delete %s after the host went: %v", r, err)
			}
		}
	})

	t.Run("Volatile", func(t *testing.T) {
		be := newBackend(t)
		base := random(3)
		ref := VersionRef{Image: "img", Version: 1}
		version(t, be, ref, base)
		st, err := be.CreateDisk(ctx, "v1", Volatile, ref, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		d := open(t, be, "v1", st)
		write(t, d, 0, 0x11)
		closeDisk(t, be, "v1")
		// The next boot: a new disk on the version.
		st, err = be.Rebase("v1", st, ref)
		if err != nil {
			t.Fatal(err)
		}
		if err := be.Prune("v1", st); err != nil {
			t.Fatal(err)
		}
		d = open(t, be, "v1", st)
		same(t, "volatile disk at the next boot", readAll(t, d), base)
		closeDisk(t, be, "v1")
	})
}

func TestLocalConformance(t *testing.T) {
	runBackendSuite(t, func(t *testing.T) Backend {
		l, err := NewLocal(t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		return l
	})
}
