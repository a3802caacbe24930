package scsi

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/disk"
)

// A READ answered with a file range (sent later by sendfile) must hold
// back COMPARE AND WRITE until the transport releases it, and READs while
// an exclusive writer waits must copy instead of handing out new ranges.
func TestFileRangeHoldsBackExclusiveWriters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	dev, err := disk.OpenFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	tl := newTestLU(t, dev, LUConfig{})
	read := func() Result {
		cmd := &Command{Nexus: nexusA, CDB: []byte{opRead10, 0, 0, 0, 0, 0, 0, 0, 128, 0},
			DataIn: make([]byte, 64<<10), FileDataIn: true}
		return tl.tgt.Execute(cmd)
	}
	r := read()
	if r.Status != StatusGood || r.File.Len != 64<<10 || r.Release == nil {
		t.Fatalf("READ with FileDataIn: status %#x file %+v release %v", r.Status, r.File, r.Release != nil)
	}
	wait := heldCompareAndWrite(t, tl, "READ data was still to be sent from the file")
	if r2 := read(); r2.Status != StatusGood || r2.File.Len != 0 || r2.Release != nil {
		t.Fatalf("READ while a writer waits handed out a file range: %+v", r2.File)
	}
	r.Release()
	wait()
}

// heldCompareAndWrite starts a COMPARE AND WRITE of LBA 0 from nexus B
// and checks it is still waiting 100 ms later (held back by what); wait
// then checks it ends GOOD once released.
func heldCompareAndWrite(t *testing.T, tl *testLU, what string) (wait func()) {
	t.Helper()
	caw := make(chan Result, 1)
	go func() {
		cdb := []byte{opCompareAndWrite, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0}
		caw <- tl.run(nexusB, cdb, make([]byte, 1024), 0)
	}()
	select {
	case <-caw:
		t.Fatalf("COMPARE AND WRITE ran while %s", what)
	case <-time.After(100 * time.Millisecond):
	}
	return func() {
		t.Helper()
		select {
		case res := <-caw:
			if res.Status != StatusGood {
				t.Fatalf("COMPARE AND WRITE: status %#x sense %x", res.Status, res.Sense)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("COMPARE AND WRITE still waiting after %s ended", what)
		}
	}
}
