package iscsi

import (
	"sync/atomic"
	"time"

	"github.com/diskless-boot/diskless/internal/scsi"
)

// Per-target command counters: how long commands take and how they end,
// for the admin's view of each host (CommandStats, the diskless_host_command_*
// metrics).
//
// They are kept per target, not per session: a target is one host, and its
// counters then run for the server's life instead of starting again at
// every boot (a new session), which Prometheus would read as counter
// resets, losing what the last session did between its last scrape and its
// end. A session holds its target's counters from its login (conn.cmds).
//
// The data path pays one monotonic clock read when a command arrives, one
// per batch of responses written (shared by every response in it), and two
// or three uncontended atomic adds per command; nothing is allocated.

// CommandOp is the kind of a command for its latency: READ, WRITE, and
// everything else (INQUIRY, SYNCHRONIZE CACHE, UNMAP, ...).
type CommandOp uint8

const (
	OpRead CommandOp = iota
	OpWrite
	OpOther
	NumOps
)

func (o CommandOp) String() string { return [...]string{"read", "write", "other"}[o] }

// commandOps maps a CDB's operation code to its CommandOp: READ and WRITE
// (6, 10, 12, 16) and WRITE AND VERIFY (SBC-3 5.2x) move a host's blocks;
// the rest is other.
var commandOps = func() (m [256]CommandOp) {
	for i := range m {
		m[i] = OpOther
	}
	for _, op := range []byte{0x08, 0x28, 0xa8, 0x88} {
		m[op] = OpRead
	}
	for _, op := range []byte{0x0a, 0x2a, 0xaa, 0x8a, 0x2e, 0xae, 0x8e} {
		m[op] = OpWrite
	}
	return m
}()

// LatencyBuckets are the upper bounds of the command latency histogram:
// from a command's arrival (its SCSI Command PDU parsed) to its response
// (status, or the last Data-In carrying it) written to the socket. A
// 4 KiB READ from the page cache answers in tens of microseconds on a LAN,
// a 1 MiB one in a millisecond or two, a flush to disk in tens of
// milliseconds; seconds mean trouble.
var LatencyBuckets = [...]time.Duration{
	50 * time.Microsecond, 100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 5 * time.Second,
}

// RefusedStatus is a status with which the target declines to run a
// command (SAM-5 5.3): the initiator is to wait, retry or give up.
type RefusedStatus uint8

const (
	RefusedBusy RefusedStatus = iota
	RefusedReservationConflict
	RefusedTaskSetFull
	RefusedACAActive
	RefusedTaskAborted
	NumRefused
)

func (r RefusedStatus) String() string {
	return [...]string{"busy", "reservation_conflict", "task_set_full", "aca_active", "task_aborted"}[r]
}

// Latency is one kind of command's latency histogram.
type Latency struct {
	// Counts[i] counts the commands answered within LatencyBuckets[i] and
	// above the bucket before (not cumulative); the last, slower ones.
	Counts [len(LatencyBuckets) + 1]uint64
	Sum    time.Duration
}

// Count is the number of commands the histogram holds.
func (l *Latency) Count() uint64 {
	var n uint64
	for _, c := range l.Counts {
		n += c
	}
	return n
}

// CommandStats count a target's commands since it was added (or, with
// sessions from before, since its first login), over all its sessions,
// ended ones included. Commands aborted or lost with their connection are
// not counted: they have no response.
type CommandStats struct {
	// Bytes of the disk moved by READs and WRITEs that ended GOOD.
	ReadBytes, WrittenBytes uint64
	Latency                 [NumOps]Latency
	// Errors counts CHECK CONDITION responses by sense key.
	Errors [16]uint64
	// Refused counts the statuses with which commands were not run.
	Refused [NumRefused]uint64
}

// cmdCounters are CommandStats as the data path counts them. Safe for
// concurrent use.
type cmdCounters struct {
	readBytes, writtenBytes atomic.Uint64
	latency                 [NumOps][len(LatencyBuckets) + 1]atomic.Uint64
	sumNanos                [NumOps]atomic.Uint64
	errors                  [16]atomic.Uint64
	refused                 [NumRefused]atomic.Uint64
}

// latencyNanos is LatencyBuckets in nanoseconds, for the data path.
var latencyNanos = func() (n [len(LatencyBuckets)]int64) {
	for i, d := range LatencyBuckets {
		n[i] = int64(d)
	}
	return n
}()

// clockBase makes monoNow a single monotonic clock read (time.Since of a
// time with a monotonic reading reads nothing else).
var clockBase = time.Now()

// monoNow is a monotonic time in nanoseconds, for latencies.
func monoNow() int64 { return int64(time.Since(clockBase)) }

// answered is what the write side needs to count a command's response:
// set on the outItem that carries it.
type answered struct {
	counted bool // the item carries a command's status
	op      CommandOp
	status  scsi.Status
	key     scsi.SenseKey // with CHECK CONDITION
	start   int64         // monoNow at arrival
}

// answer returns what to count for a response of task t with status and
// sense data.
func (t *task) answer(status scsi.Status, sense []byte) answered {
	a := answered{counted: true, op: t.op, status: status, start: t.start}
	if status == scsi.StatusCheckCondition {
		a.key, _ = scsi.SenseKeyOf(sense)
	}
	return a
}

// count adds a response written at now (monoNow).
func (c *cmdCounters) count(a *answered, now int64) {
	d := now - a.start
	i := 0
	for i < len(latencyNanos) && d > latencyNanos[i] {
		i++
	}
	c.latency[a.op][i].Add(1)
	c.sumNanos[a.op].Add(uint64(max(d, 0)))
	switch a.status {
	case scsi.StatusGood, scsi.StatusConditionMet:
	case scsi.StatusCheckCondition:
		c.errors[a.key&0x0f].Add(1)
	case scsi.StatusBusy:
		c.refused[RefusedBusy].Add(1)
	case scsi.StatusReservationConflict:
		c.refused[RefusedReservationConflict].Add(1)
	case scsi.StatusTaskSetFull:
		c.refused[RefusedTaskSetFull].Add(1)
	case scsi.StatusACAActive:
		c.refused[RefusedACAActive].Add(1)
	case scsi.StatusTaskAborted:
		c.refused[RefusedTaskAborted].Add(1)
	}
}

func (c *cmdCounters) snapshot() CommandStats {
	st := CommandStats{ReadBytes: c.readBytes.Load(), WrittenBytes: c.writtenBytes.Load()}
	for op := range st.Latency {
		for i := range st.Latency[op].Counts {
			st.Latency[op].Counts[i] = c.latency[op][i].Load()
		}
		st.Latency[op].Sum = time.Duration(c.sumNanos[op].Load())
	}
	for i := range st.Errors {
		st.Errors[i] = c.errors[i].Load()
	}
	for i := range st.Refused {
		st.Refused[i] = c.refused[i].Load()
	}
	return st
}

// cmdCountersFor returns the counters of the named target, made at its
// first login; RemoveTarget forgets them.
func (s *Server) cmdCountersFor(target string) *cmdCounters {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.cmdStats[target]
	if c == nil {
		c = new(cmdCounters)
		s.cmdStats[target] = c
	}
	return c
}

// CommandStats returns the counters of the named target; ok is false when
// it has had no session yet (or was removed).
func (s *Server) CommandStats(target string) (st CommandStats, ok bool) {
	s.mu.Lock()
	c := s.cmdStats[target]
	s.mu.Unlock()
	if c == nil {
		return CommandStats{}, false
	}
	return c.snapshot(), true
}
