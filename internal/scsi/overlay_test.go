package scsi

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/diskless-boot/diskless/internal/disk"
	"golang.org/x/sys/unix"
)

// TestOverlayLU serves a copy-on-write overlay: a partial-cluster WRITE
// keeps the base's bytes around it, READ data sent from file ranges
// matches, UNMAP deallocates without touching the shared base, GET LBA
// STATUS sees it, and SYNCHRONIZE CACHE makes the writes survive a reopen.
func TestOverlayLU(t *testing.T) {
	const size = 4 << 20
	dir := t.TempDir()
	basePath := filepath.Join(dir, "base.img")
	if err := os.WriteFile(basePath, bytes.Repeat([]byte{0x77}, size), 0o600); err != nil {
		t.Fatal(err)
	}
	base, err := disk.OpenFile(basePath, true)
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	top := filepath.Join(dir, "host1")
	if err := disk.CreateLayer(top, disk.LayerConfig{Size: size, ID: "host1", BaseID: "test@1"}); err != nil {
		t.Fatal(err)
	}
	o, err := disk.OpenOverlay(base, nil, top, disk.OverlayOptions{Name: "host1"})
	if err != nil {
		t.Fatal(err)
	}
	tl := newTestLU(t, o, LUConfig{})

	expectGood(t, "WRITE(10)", tl.run(nexusA, cdb10(opWrite10, 0, 9, 1), fill(512, 0x11), 0))
	want := bytes.Repeat([]byte{0x77}, 16*512)
	copy(want[9*512:], fill(512, 0x11))
	r := tl.run(nexusA, cdb10(opRead10, 0, 0, 16), nil, 16*512)
	expectGood(t, "READ(10)", r)
	if !bytes.Equal(tl.lastIn, want) {
		t.Fatal("READ after a partial-cluster WRITE differs")
	}
	// READs that one file holds are sent from it: cluster 0 from the
	// base, cluster 1 (copied up) from the top's data file.
	fds := map[int]bool{}
	for _, lba := range []uint32{0, 8} {
		cmd := &Command{Nexus: nexusA, CDB: cdb10(opRead10, 0, lba, 8), DataIn: make([]byte, 8*512), FileDataIn: true}
		r := tl.tgt.Execute(cmd)
		expectGood(t, "READ(10) from file", r)
		if r.File.Len != 8*512 || r.Release == nil {
			t.Fatalf("READ at LBA %d: file range %+v, want the whole transfer", lba, r.File)
		}
		got := make([]byte, r.File.Len)
		if _, err := unix.Pread(r.File.FD, got, r.File.Off); err != nil {
			t.Fatal(err)
		}
		r.Release()
		if !bytes.Equal(got, want[lba*512:(lba+8)*512]) {
			t.Fatalf("READ at LBA %d from file: wrong data", lba)
		}
		fds[r.File.FD] = true
	}
	if len(fds) != 2 {
		t.Fatal("base and top clusters were sent from the same file")
	}

	list := unmapList([2]uint64{2048, 2048}) // 1 MiB at 1 MiB
	expectGood(t, "UNMAP", tl.run(nexusA, unmapCDB(len(list)), list, 0))
	expectGood(t, "READ unmapped", tl.run(nexusA, cdb10(opRead10, 0, 2048, 2048), nil, 1<<20))
	if !bytes.Equal(tl.lastIn, make([]byte, 1<<20)) {
		t.Fatal("unmapped blocks do not read as zeros")
	}
	if mapped, n, _ := getLBAStatus(tl, 2048); mapped || n != 2048 {
		t.Fatalf("GET LBA STATUS after UNMAP: mapped %v, %d blocks", mapped, n)
	}
	if mapped, _, _ := getLBAStatus(tl, 0); !mapped {
		t.Fatal("GET LBA STATUS: base data reported deallocated")
	}
	if b, _ := os.ReadFile(basePath); !bytes.Equal(b, bytes.Repeat([]byte{0x77}, size)) {
		t.Fatal("the shared base changed")
	}
	expectGood(t, "SYNCHRONIZE CACHE", tl.run(nexusA, cdb10(opSyncCache10, 0, 0, 0), nil, 0))
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	o, err = disk.OpenOverlay(base, nil, top, disk.OverlayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	got := make([]byte, 16*512)
	if _, err := o.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after reopening: %v, data differs", err)
	}
}
