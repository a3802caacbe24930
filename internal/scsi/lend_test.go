package scsi

import (
	"bytes"
	"errors"
	"sync/atomic"
	"testing"
)

// lendingDevice lends each read from a buffer of its own, as librbd's
// received buffers are lent (disk.Lender), or - fragmented - copies into
// the caller's buffer as a device whose bytes came in pieces does.
type lendingDevice struct {
	*memDevice
	fragmented bool
	err        error
	lent       atomic.Int32
	released   atomic.Int32
}

func (d *lendingDevice) ReadLent(p []byte, off int64) ([]byte, func(), error) {
	if d.err != nil {
		return nil, nil, d.err
	}
	if d.fragmented {
		_, err := d.memDevice.ReadAt(p, off)
		return p, nil, err
	}
	b := make([]byte, len(p))
	if _, err := d.memDevice.ReadAt(b, off); err != nil {
		return nil, nil, err
	}
	d.lent.Add(1)
	return b, func() { d.released.Add(1) }, nil
}

// A READ answers with the device's lent bytes when the transport can send
// them and the device lends them; otherwise the bytes are in DataIn.
func TestReadLent(t *testing.T) {
	dev := &lendingDevice{memDevice: newMemDevice(1 << 20)}
	tl := newTestLU(t, dev, LUConfig{})
	want := bytes.Repeat([]byte{0xa5, 0x5a}, 32<<10)
	copy(dev.data[8*512:], want)
	read := func(lent bool) (Result, []byte) {
		cmd := &Command{Nexus: nexusA, CDB: []byte{opRead10, 0, 0, 0, 0, 8, 0, 0, 128, 0},
			DataIn: make([]byte, 64<<10), LentDataIn: lent}
		return tl.tgt.Execute(cmd), cmd.DataIn
	}

	r, in := read(true)
	if r.Status != StatusGood || r.N != len(want) || !bytes.Equal(r.Lent, want) || r.Release == nil {
		t.Fatalf("READ with LentDataIn: status %#x, n %d, lent %d bytes (equal %v), release %v",
			r.Status, r.N, len(r.Lent), bytes.Equal(r.Lent, want), r.Release != nil)
	}
	if !bytes.Equal(in, make([]byte, len(in))) {
		t.Fatal("a lent READ also copied into DataIn")
	}
	r.Release()
	if dev.lent.Load() != 1 || dev.released.Load() != 1 {
		t.Fatalf("lent %d, released %d", dev.lent.Load(), dev.released.Load())
	}

	for _, c := range []struct {
		name       string
		lent       bool
		fragmented bool
	}{{"transport without LentDataIn", false, false}, {"device that copied", true, true}} {
		dev.fragmented = c.fragmented
		r, in := read(c.lent)
		if r.Status != StatusGood || r.Lent != nil || r.Release != nil || !bytes.Equal(in, want) {
			t.Fatalf("%s: status %#x, lent %v, release %v, DataIn equal %v", c.name, r.Status, r.Lent != nil, r.Release != nil, bytes.Equal(in, want))
		}
	}
	if dev.lent.Load() != 1 {
		t.Fatalf("lent %d times, want once", dev.lent.Load())
	}

	dev.err = errors.New("osd down")
	r, _ = read(true)
	if r.Status != StatusCheckCondition || len(r.Sense) < 3 || SenseKey(r.Sense[2]&0xf) != SenseMediumError || r.Release != nil {
		t.Fatalf("failed lent READ: status %#x sense %x release %v, want MEDIUM ERROR", r.Status, r.Sense, r.Release != nil)
	}
}
