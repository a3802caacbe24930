package iscsi

import (
	"bytes"
	"crypto/rand"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/disk"
	"github.com/diskless-boot/diskless/internal/iscsi/pdu"
)

// lendingFile lends every read from a buffer of its own (disk.Lender),
// counting what it lent and what came back.
type lendingFile struct {
	*disk.File
	lent, released atomic.Int32
}

func (d *lendingFile) ReadLent(p []byte, off int64) ([]byte, func(), error) {
	b := make([]byte, len(p))
	if _, err := d.File.ReadAt(b, off); err != nil {
		return nil, nil, err
	}
	d.lent.Add(1)
	return b, func() { d.released.Add(1) }, nil
}

// READ data a device lends goes out as Data-In PDUs cut from the lent
// buffer (digests on, 8 KiB segments) and every lent buffer is given back
// once sent.
func TestLentDataIn(t *testing.T) {
	dev := &lendingFile{File: newTestDisk(t)}
	_, addr := startTarget(t, func(tg *Target) { tg.SCSI = scsiTargetOf(t, testIQN, "lent0", dev) })
	in := dialInitiator(t, addr)
	ops := []pdu.KV{{Key: "HeaderDigest", Value: "CRC32C"}, {Key: "DataDigest", Value: "CRC32C"}}
	if st := in.login(loginOpts{initiator: testInitiator1, target: testIQN, ops: ops}); st != 0 {
		t.Fatalf("login 0x%04x", st)
	}
	in.clearUnitAttention()
	data := make([]byte, 256<<10)
	rand.Read(data)
	if st, sense, _ := in.command(0, rw10(0x2a, 16, 512), data, 0); st != 0 {
		t.Fatalf("WRITE: %#x %x", st, sense)
	}
	for i := range 3 {
		st, sense, got := in.command(0, rw10(0x28, 16, 512), nil, 256<<10)
		if st != 0 || !bytes.Equal(got, data) {
			t.Fatalf("READ %d: status %#x sense %x, %d bytes, equal %v", i, st, sense, len(got), bytes.Equal(got, data))
		}
	}
	if n := dev.lent.Load(); n != 3 {
		t.Fatalf("%d READs lent, want 3", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for dev.released.Load() != 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := dev.released.Load(); n != 3 {
		t.Fatalf("%d of 3 lent buffers given back", n)
	}
}
