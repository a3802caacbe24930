package iscsi

import (
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/scsi"
)

// A target's counters sum up its sessions, ended ones included: latency
// by kind of command, CHECK CONDITION by sense key, refusals by status,
// bytes moved.
func TestCommandStats(t *testing.T) {
	srv, addr := startTargetWith(t, Config{SessionMemory: 64 << 10}, nil)
	if _, ok := srv.CommandStats(testIQN); ok {
		t.Error("counters before any login")
	}
	began := time.Now()
	for round := 1; round <= 2; round++ {
		in := loggedIn(t, addr) // a TEST UNIT READY answered UNIT ATTENTION, then GOOD
		for range 3 {
			if st, _, _ := in.command(0, rw10(0x28, 0, 8), nil, 4096); st != 0 {
				t.Fatalf("READ: status %#x", st)
			}
		}
		if st, _, _ := in.command(0, rw10(0x2a, 8, 8), make([]byte, 4096), 0); st != 0 {
			t.Fatalf("WRITE: status %#x", st)
		}
		// Past the end of the 8 MiB disk: ILLEGAL REQUEST.
		if st, _, _ := in.command(0, rw10(0x28, 1<<14, 8), nil, 4096); st != uint8(scsi.StatusCheckCondition) {
			t.Fatalf("READ past the end: status %#x", st)
		}
		// More than SessionMemory in one buffer: TASK SET FULL.
		if st, _, _ := in.command(0, rw10(0x28, 0, 256), nil, 128<<10); st != uint8(scsi.StatusTaskSetFull) {
			t.Fatalf("READ of 128 KiB: status %#x", st)
		}
		// The Logout Response follows every response above through
		// the same writer, which counts each one it wrote.
		in.logout()
	}
	took := time.Since(began)

	st, ok := srv.CommandStats(testIQN)
	if !ok {
		t.Fatal("no counters")
	}
	for op, want := range map[CommandOp]uint64{OpRead: 2 * 5, OpWrite: 2 * 1, OpOther: 2 * 2} {
		l := st.Latency[op]
		if l.Count() != want {
			t.Errorf("%s: %d commands counted, want %d", op, l.Count(), want)
		}
		if l.Sum <= 0 || l.Sum > took {
			t.Errorf("%s: %v in all, not within the %v the commands took", op, l.Sum, took)
		}
	}
	if st.ReadBytes != 2*3*4096 || st.WrittenBytes != 2*4096 {
		t.Errorf("bytes %d read, %d written; want %d, %d", st.ReadBytes, st.WrittenBytes, 2*3*4096, 2*4096)
	}
	want := [16]uint64{scsi.SenseIllegalRequest: 2, scsi.SenseUnitAttention: 2}
	if st.Errors != want {
		t.Errorf("errors by sense key %v, want %v", st.Errors, want)
	}
	if st.Refused != [NumRefused]uint64{RefusedTaskSetFull: 2} {
		t.Errorf("refused %v, want 2 TASK SET FULL", st.Refused)
	}
	if err := srv.RemoveTarget(testIQN); err != nil {
		t.Fatal(err)
	}
	if _, ok := srv.CommandStats(testIQN); ok {
		t.Error("counters of a removed target")
	}
}

// A latency lands in the first bucket whose bound it does not exceed.
func TestLatencyBuckets(t *testing.T) {
	var c cmdCounters
	for _, d := range []time.Duration{0, 50 * time.Microsecond, 51 * time.Microsecond, 3 * time.Millisecond, 6 * time.Second} {
		c.count(&answered{counted: true, op: OpWrite, start: 1000}, 1000+int64(d))
	}
	got := c.snapshot().Latency[OpWrite]
	want := Latency{Sum: 6*time.Second + 3*time.Millisecond + 101*time.Microsecond}
	want.Counts[0], want.Counts[1], want.Counts[6], want.Counts[len(LatencyBuckets)] = 2, 1, 1, 1
	if got != want {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	for i := 1; i < len(LatencyBuckets); i++ {
		if LatencyBuckets[i] <= LatencyBuckets[i-1] {
			t.Errorf("bucket %d (%v) not above the one before", i, LatencyBuckets[i])
		}
	}
}

// The kinds of command follow the operation codes.
func TestCommandOps(t *testing.T) {
	for op, want := range map[byte]CommandOp{0x28: OpRead, 0x88: OpRead, 0x2a: OpWrite, 0x8a: OpWrite, 0x2e: OpWrite,
		0x00: OpOther, 0x12: OpOther, 0x35: OpOther, 0x42: OpOther, 0x93: OpOther} {
		if commandOps[op] != want {
			t.Errorf("opcode %#02x: %s, want %s", op, commandOps[op], want)
		}
	}
}

// What counting adds to one command on the data path: the clock read at
// arrival, the answered record, the clock read of its batch (here one per
// command, the worst case) and the counting.
func BenchmarkCommandCounting(b *testing.B) {
	var c cmdCounters
	t := &task{op: OpRead}
	b.ReportAllocs()
	for b.Loop() {
		t.start = monoNow()
		a := t.answer(scsi.StatusGood, nil)
		c.count(&a, monoNow())
	}
}
