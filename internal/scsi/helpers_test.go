package scsi

import (
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/diskless-boot/diskless/internal/disk"
)

// memDevice is an in-memory disk.Device with allocation tracking in 4 KiB
// pages, so thin provisioning can be observed. Errors can be injected.
type memDevice struct {
	mu        sync.RWMutex
	data      []byte
	mapped    []bool // per 4 KiB page
	flushes   atomic.Int64
	prefetch  atomic.Int64
	readErr   error
	writeErr  error
	flushErr  error
	readOnly  bool
	sizeBytes atomic.Int64
}

const memPage = 4096

func newMemDevice(size int) *memDevice {
	d := &memDevice{data: make([]byte, size), mapped: make([]bool, (size+memPage-1)/memPage)}
	d.sizeBytes.Store(int64(size))
	return d
}

func (d *memDevice) ReadAt(p []byte, off int64) (int, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.readErr != nil {
		return 0, d.readErr
	}
	if off < 0 || off+int64(len(p)) > int64(len(d.data)) {
		return 0, errors.New("mem: read out of range")
	}
	return copy(p, d.data[off:]), nil
}

func (d *memDevice) WriteAt(p []byte, off int64) (int, error) {
	if d.readOnly {
		return 0, disk.ErrReadOnly
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.writeErr != nil {
		return 0, d.writeErr
	}
	if off < 0 || off+int64(len(p)) > int64(len(d.data)) {
		return 0, errors.New("mem: write out of range")
	}
	for pg := off / memPage; pg*memPage < off+int64(len(p)); pg++ {
		d.mapped[pg] = true
	}
	return copy(d.data[off:], p), nil
}

func (d *memDevice) Size() int64  { return d.sizeBytes.Load() }
func (d *memDevice) Flush() error { d.flushes.Add(1); return d.flushErr }
func (d *memDevice) Close() error { return nil }

func (d *memDevice) Unmap(off, length int64) error {
	if d.readOnly {
		return disk.ErrReadOnly
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.data[off : off+length])
	// Whole pages inside the range are deallocated.
	for pg := (off + memPage - 1) / memPage; (pg+1)*memPage <= off+length; pg++ {
		d.mapped[pg] = false
	}
	return nil
}

func (d *memDevice) WriteZeroes(off, length int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.data[off : off+length])
	for pg := off / memPage; pg*memPage < off+length; pg++ {
		d.mapped[pg] = true
	}
	return nil
}

func (d *memDevice) Mapped(off int64) (bool, int64, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	pg := off / memPage
	state := d.mapped[pg]
	end := pg + 1
	for end < int64(len(d.mapped)) && d.mapped[end] == state {
		end++
	}
	return state, min(end*memPage, int64(len(d.data))) - off, nil
}

func (d *memDevice) Prefetch(off, length int64) error { d.prefetch.Add(1); return nil }

// plainDevice hides the optional interfaces of a memDevice: a fully
// provisioned device without allocation reporting or prefetch.
type plainDevice struct{ m *memDevice }

func (p plainDevice) ReadAt(b []byte, off int64) (int, error)  { return p.m.ReadAt(b, off) }
func (p plainDevice) WriteAt(b []byte, off int64) (int, error) { return p.m.WriteAt(b, off) }
func (p plainDevice) Size() int64                              { return p.m.Size() }
func (p plainDevice) Flush() error                             { return p.m.Flush() }
func (p plainDevice) Close() error                             { return nil }

var (
	nexusA = Nexus{InitiatorName: "iqn.2026-01.test:a", ISID: 0x23d000000001, RelTargetPort: 1}
	nexusB = Nexus{InitiatorName: "iqn.2026-01.test:b", ISID: 0x23d000000002, RelTargetPort: 1}
)

// testLU is an LU on a 1 MiB memDevice (2048 blocks of 512 bytes) attached
// as LUN 0 of a target; both nexuses have seen their POWER ON unit
// attention already.
type testLU struct {
	t   *testing.T
	tgt *Target
	lu  *LogicalUnit
	dev *memDevice
	// lastIn is the Data-In the last run filled.
	lastIn []byte
}

func newTestLU(t *testing.T, dev disk.Device, cfg LUConfig) *testLU {
	t.Helper()
	if cfg.Serial == "" && cfg.NAA == 0 {
		cfg.Serial = "test-serial-0"
	}
	lu, err := NewLogicalUnit(dev, cfg)
	if err != nil {
		t.Fatal(err)
	}
	tgt := NewTarget(TargetConfig{Name: "iqn.2026-01.test:target"})
	if err := tgt.AddLU(0, lu); err != nil {
		t.Fatal(err)
	}
	tl := &testLU{t: t, tgt: tgt, lu: lu}
	if m, ok := dev.(*memDevice); ok {
		tl.dev = m
	}
	for _, n := range []Nexus{nexusA, nexusB} {
		tl.clearUA(n)
	}
	return tl
}

func newMemLU(t *testing.T, cfg LUConfig) *testLU {
	return newTestLU(t, newMemDevice(1<<20), cfg)
}

// clearUA sends TEST UNIT READY until it stops reporting unit attentions.
func (tl *testLU) clearUA(n Nexus) {
	tl.t.Helper()
	for range maxUAQueue + 1 {
		r := tl.run(n, []byte{opTestUnitReady, 0, 0, 0, 0, 0}, nil, 0)
		if r.Status == StatusGood {
			return
		}
		if k, _ := senseOf(r); k != SenseUnitAttention {
			tl.t.Fatalf("TEST UNIT READY: status %#x sense %x", r.Status, r.Sense)
		}
	}
	tl.t.Fatal("unit attentions do not clear")
}

// run executes cdb from n with the given Data-Out and a Data-In buffer
// of inLen bytes; the Data-In actually filled is in Result.N.
func (tl *testLU) run(n Nexus, cdb, out []byte, inLen int) Result {
	cmd := &Command{Nexus: n, LUN: 0, CDB: cdb, DataOut: out}
	if inLen > 0 {
		cmd.DataIn = make([]byte, inLen)
	}
	r := tl.tgt.Execute(cmd)
	tl.lastIn = cmd.DataIn[:min(r.N, len(cmd.DataIn))]
	return r
}

// senseOf decodes fixed-format sense data.
func senseOf(r Result) (SenseKey, uint16) {
	if len(r.Sense) < 14 {
		return 0, 0
	}
	return SenseKey(r.Sense[2] & 0x0f), uint16(r.Sense[12])<<8 | uint16(r.Sense[13])
}

// fieldPointer decodes the sense-key-specific field pointer: byte, bit
// (-1 without BPV), in CDB; ok false when SKSV is clear.
func fieldPointer(r Result) (field int, bit int, cdb bool, ok bool) {
	s := r.Sense
	if len(s) < 18 || s[15]&0x80 == 0 {
		return 0, 0, false, false
	}
	bit = -1
	if s[15]&0x08 != 0 {
		bit = int(s[15] & 7)
	}
	return int(binary.BigEndian.Uint16(s[16:])), bit, s[15]&0x40 != 0, true
}

func expectGood(t *testing.T, what string, r Result) {
	t.Helper()
	if r.Status != StatusGood {
		k, c := senseOf(r)
		t.Fatalf("%s: status %#x sense key %#x code %#04x, want GOOD", what, r.Status, k, c)
	}
}

func expectSense(t *testing.T, what string, r Result, key SenseKey, code uint16) {
	t.Helper()
	if r.Status != StatusCheckCondition {
		t.Fatalf("%s: status %#x, want CHECK CONDITION %#x/%#04x", what, r.Status, key, code)
	}
	if k, c := senseOf(r); k != key || c != code {
		t.Fatalf("%s: sense %#x/%#04x, want %#x/%#04x", what, k, c, key, code)
	}
}

// CDB builders.

func cdb10(op byte, b1 byte, lba uint32, n uint16) []byte {
	c := make([]byte, 10)
	c[0], c[1] = op, b1
	binary.BigEndian.PutUint32(c[2:], lba)
	binary.BigEndian.PutUint16(c[7:], n)
	return c
}

func cdb12(op byte, b1 byte, lba uint32, n uint32) []byte {
	c := make([]byte, 12)
	c[0], c[1] = op, b1
	binary.BigEndian.PutUint32(c[2:], lba)
	binary.BigEndian.PutUint32(c[6:], n)
	return c
}

func cdb16(op byte, b1 byte, lba uint64, n uint32) []byte {
	c := make([]byte, 16)
	c[0], c[1] = op, b1
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], n)
	return c
}

func fill(n int, b byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = b
	}
	return p
}
