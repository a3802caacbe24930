package storage

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/disk"
)

const testSize = 1 << 20

// fixture is a Local with a version v1 of random bytes.
func fixture(t *testing.T) (*Local, VersionRef, []byte) {
	t.Helper()
	l, err := NewLocal(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, testSize)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	f := filepath.Join(t.TempDir(), "v1.raw")
	os.WriteFile(f, data, 0o644)
	src, err := os.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ref := VersionRef{Image: "img", Version: 1}
	if err := l.WriteVersion(context.Background(), ref, testSize, fileSource{src}, nil); err != nil {
		t.Fatal(err)
	}
	return l, ref, data
}

type fileSource struct{ *os.File }

func (f fileSource) Size() int64 { st, _ := f.Stat(); return st.Size() }

// withDisk opens host's disk, runs fn on it and closes it.
func withDisk(t *testing.T, l *Local, host string, st DiskState, fn func(d disk.Device)) {
	t.Helper()
	d, err := l.OpenDisk(host, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	fn(d)
	if err := l.CloseDisk(host); err != nil {
		t.Fatal(err)
	}
}

func fill(b byte) []byte { return bytes.Repeat([]byte{b}, 4096) }

// Snapshots freeze the chain, rollback returns to one exactly, and
// deleting snapshots never loses what other snapshots or the disk see,
// while merging layers so chains do not grow without end.
func TestSnapshotsRollbackDelete(t *testing.T) {
	l, ref, base := fixture(t)
	st, err := l.CreateDisk(context.Background(), "h", Persistent, ref, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	write := func(st DiskState, off int64, b byte) {
		withDisk(t, l, "h", st, func(d disk.Device) {
			if _, err := d.WriteAt(fill(b), off); err != nil {
				t.Fatal(err)
			}
		})
	}
	read := func(st DiskState, off int64) []byte {
		p := make([]byte, 4096)
		withDisk(t, l, "h", st, func(d disk.Device) {
			if _, err := d.ReadAt(p, off); err != nil {
				t.Fatal(err)
			}
		})
		return p
	}
	snap := func(st DiskState, name string) DiskState {
		n, err := l.Snapshot("h", st, name, time.Now(), false)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Prune("h", n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	write(st, 0, 'A')
	st = snap(st, "s1")
	write(st, 4096, 'B')
	st = snap(st, "s2")
	write(st, 8192, 'C')
	if len(st.Chain()) != 3 {
		t.Fatalf("chain %v", st.Chain())
	}
	// Back to s1: A stays, B and C are gone.
	if st, err = l.Rollback("h", st, "s1"); err != nil {
		t.Fatal(err)
	}
	l.Prune("h", st)
	if !bytes.Equal(read(st, 0), fill('A')) || !bytes.Equal(read(st, 4096), base[4096:8192]) || !bytes.Equal(read(st, 8192), base[8192:12288]) {
		t.Fatal("rollback to s1 is not s1")
	}
	// s2 still shows A and B (its layer is kept for it).
	if _, err := os.Stat(l.layerDir("h", st.Snapshots[1].Layer)); err != nil {
		t.Fatalf("s2's layer was pruned: %v", err)
	}
	// Deleting s2: nothing else needs its layer now.
	if st, err = l.DeleteSnapshot("h", st, "s2"); err != nil {
		t.Fatal(err)
	}
	l.Prune("h", st)
	if len(st.Layers) != 2 {
		t.Fatalf("layers after deleting s2: %v", st.Layers)
	}
	// A chain of three snapshots; deleting the middle one merges its
	// layer into the next, which still reads the same.
	write(st, 12288, 'D')
	st = snap(st, "s3")
	write(st, 16384, 'E')
	st = snap(st, "s4")
	write(st, 20480, 'F')
	before := len(st.Chain())
	if st, err = l.DeleteSnapshot("h", st, "s3"); err != nil {
		t.Fatal(err)
	}
	l.Prune("h", st)
	if len(st.Chain()) != before-1 {
		t.Fatalf("chain %d -> %d: the deleted snapshot's layer was not merged", before, len(st.Chain()))
	}
	for off, want := range map[int64][]byte{0: fill('A'), 12288: fill('D'), 16384: fill('E'), 20480: fill('F'), 4096: base[4096:8192]} {
		if !bytes.Equal(read(st, off), want) {
			t.Fatalf("after the merge, offset %d reads wrong", off)
		}
	}
	// s4 is what it was: roll back to it.
	if st, err = l.Rollback("h", st, "s4"); err != nil {
		t.Fatal(err)
	}
	l.Prune("h", st)
	if !bytes.Equal(read(st, 16384), fill('E')) || !bytes.Equal(read(st, 20480), base[20480:24576]) || !bytes.Equal(read(st, 12288), fill('D')) {
		t.Fatal("s4 changed when s3 was deleted")
	}
	rep, err := l.Check("h", st)
	if err != nil || !rep.OK {
		t.Fatalf("check: %+v %v", rep, err)
	}
	// The disk copied out as a new version reads like the disk.
	v2 := VersionRef{Image: "img", Version: 2}
	if err := l.CopyDisk(context.Background(), "h", st, "", v2, nil); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(l.VersionPath(v2))
	want := append([]byte{}, base...)
	copy(want[0:], fill('A'))
	copy(want[12288:], fill('D'))
	copy(want[16384:], fill('E'))
	if !bytes.Equal(got, want) {
		t.Fatal("copied version differs from the disk")
	}
	if fi, _ := os.Stat(l.VersionPath(v2)); fi.Mode().Perm()&0o222 != 0 {
		t.Errorf("a version file is writable: %v", fi.Mode())
	}
}

// A volatile disk's rebase gives an empty layer on the same version, and
// a disk whose version is open cannot lose it.
func TestRebaseAndVersionInUse(t *testing.T) {
	l, ref, base := fixture(t)
	st, _ := l.CreateDisk(context.Background(), "v", Volatile, ref, "", nil)
	d, err := l.OpenDisk("v", st, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.WriteAt(fill('X'), 0)
	if _, err := l.Rebase("v", st, ref); err == nil {
		t.Fatal("rebase of an open disk")
	}
	if err := l.DeleteVersion(ref); err == nil {
		t.Fatal("deleted a version a disk has open")
	}
	l.CloseDisk("v")
	st, err = l.Rebase("v", st, ref)
	if err != nil {
		t.Fatal(err)
	}
	l.Prune("v", st)
	d, _ = l.OpenDisk("v", st, nil)
	p := make([]byte, 4096)
	d.ReadAt(p, 0)
	l.CloseDisk("v")
	if !bytes.Equal(p, base[:4096]) {
		t.Fatal("rebased volatile disk kept a write")
	}
	if ents, _ := os.ReadDir(filepath.Join(l.hostDir("v"), "layers")); len(ents) != 1 {
		t.Fatalf("%d layer dirs after rebase and prune", len(ents))
	}
}
