package scsi

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// asyncDevice completes each read on a goroutine of its own once the test
// lets it (gate), as librbd completes reads on its threads
// (disk.AsyncReader); lent reads come from a buffer of its own.
type asyncDevice struct {
	*memDevice
	gate chan struct{}
	err  error
}

func (d *asyncDevice) ReadAsync(p []byte, off int64, lend bool, done func([]byte, func(), error)) {
	go func() {
		<-d.gate
		if d.err != nil {
			done(nil, nil, d.err)
			return
		}
		b := p
		if lend {
			b = make([]byte, len(p))
		}
		if _, err := d.memDevice.ReadAt(b, off); err != nil {
			done(nil, nil, err)
			return
		}
		if lend {
			done(b, func() {}, nil)
			return
		}
		done(p, nil, nil)
	}()
}

// A plain READ on a device that reads asynchronously is pending when the
// command has Done, and ends there once, with the data, the lent buffer or
// the error as sense; meanwhile COMPARE AND WRITE waits for it. READ with
// FUA, other commands, and commands without Done run as before.
func TestReadAsync(t *testing.T) {
	dev := &asyncDevice{memDevice: newMemDevice(1 << 20), gate: make(chan struct{})}
	tl := newTestLU(t, dev, LUConfig{})
	want := bytes.Repeat([]byte{0x3c, 0xc3}, 2048)
	copy(dev.data[16*512:], want)
	read10 := []byte{opRead10, 0, 0, 0, 0, 16, 0, 0, 8, 0}
	fua10 := []byte{opRead10, 0x08, 0, 0, 0, 16, 0, 0, 8, 0}
	for _, c := range []struct {
		name string
		cdb  []byte
		want bool
	}{{"READ(10)", read10, true}, {"READ(10) FUA", fua10, false}, {"WRITE(10)", []byte{opWrite10, 0, 0, 0, 0, 16, 0, 0, 8, 0}, false},
		{"INQUIRY", []byte{opInquiry, 0, 0, 0, 36, 0}, false}} {
		if got := tl.tgt.Async(0, c.cdb); got != c.want {
			t.Errorf("Async(%s) = %v, want %v", c.name, got, c.want)
		}
	}
	if tl.tgt.Async(7, read10) {
		t.Error("Async on a LUN the target lacks")
	}

	start := func(lend bool) (*Command, chan Result) {
		done := make(chan Result, 2)
		cmd := &Command{Nexus: nexusA, CDB: read10, DataIn: make([]byte, len(want)), LentDataIn: lend, Done: func(r Result) { done <- r }}
		if r := tl.tgt.Execute(cmd); !r.Pending {
			t.Fatalf("READ with Done: status %#x, not pending", r.Status)
		}
		return cmd, done
	}
	end := func(done chan Result) Result {
		t.Helper()
		select {
		case r := <-done:
			select {
			case <-done:
				t.Fatal("Done called twice")
			case <-time.After(20 * time.Millisecond):
			}
			return r
		case <-time.After(5 * time.Second):
			t.Fatal("Done never called")
		}
		return Result{}
	}

	cmd, done := start(false)
	wait := heldCompareAndWrite(t, tl, "a READ was pending on the device")
	dev.gate <- struct{}{}
	if r := end(done); r.Status != StatusGood || r.N != len(want) || r.Lent != nil || !bytes.Equal(cmd.DataIn, want) {
		t.Fatalf("READ: status %#x n %d lent %v, data equal %v", r.Status, r.N, r.Lent != nil, bytes.Equal(cmd.DataIn, want))
	}
	wait()

	_, done = start(true)
	dev.gate <- struct{}{}
	if r := end(done); r.Status != StatusGood || !bytes.Equal(r.Lent, want) || r.Release == nil {
		t.Fatalf("lent READ: status %#x lent equal %v release %v", r.Status, bytes.Equal(r.Lent, want), r.Release != nil)
	}

	dev.err = errors.New("osd down")
	_, done = start(false)
	dev.gate <- struct{}{}
	if r := end(done); r.Status != StatusCheckCondition || len(r.Sense) < 3 || SenseKey(r.Sense[2]&0xf) != SenseMediumError || r.Wanted != len(want) {
		t.Fatalf("failed READ: status %#x sense %x wanted %d, want MEDIUM ERROR", r.Status, r.Sense, r.Wanted)
	}
	dev.err = nil

	// Without Done the READ waits for the device's ReadAt, as any device's.
	if r := tl.run(nexusA, read10, nil, len(want)); r.Status != StatusGood || r.Pending || !bytes.Equal(tl.lastIn, want) {
		t.Fatalf("READ without Done: status %#x pending %v", r.Status, r.Pending)
	}
	// A READ that fails its checks is answered at once, Done never called.
	done = make(chan Result, 1)
	past := []byte{opRead10, 0, 0xff, 0xff, 0xff, 0, 0, 0, 8, 0}
	r := tl.tgt.Execute(&Command{Nexus: nexusA, CDB: past, DataIn: make([]byte, 4096), Done: func(r Result) { done <- r }})
	if r.Pending || r.Status != StatusCheckCondition {
		t.Fatalf("READ past the end: status %#x pending %v", r.Status, r.Pending)
	}
	select {
	case <-done:
		t.Fatal("Done called for a command answered at once")
	case <-time.After(20 * time.Millisecond):
	}
}
