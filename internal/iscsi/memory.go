package iscsi

import (
	"sync"
	"sync/atomic"
)

// memBudget counts the data buffer bytes that commands hold, in total and
// per target, against Config's memory bounds (see Config.SessionMemory).
// Sessions count their own bytes (conn.memUsed). The counters are atomic,
// as the one total was before per-target bounds: taking and giving back
// memory happens twice per command, on every connection's data path.
// Safe for concurrent use.
type memBudget struct {
	total atomic.Int64

	mu       sync.Mutex
	byTarget map[string]*atomic.Int64 // by target name: UpdateTarget keeps the name
}

func (m *memBudget) used() int64 { return m.total.Load() }

// forTarget returns the counter of the named target, which a session
// keeps for its life (conn.memTarget).
func (m *memBudget) forTarget(name string) *atomic.Int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.byTarget[name]
	if c == nil {
		c = new(atomic.Int64)
		m.byTarget[name] = c
	}
	return c
}

// forget drops the counter of a removed target; sessions still holding
// it give their bytes back to it and the total.
func (m *memBudget) forget(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.byTarget, name)
}

// What bound a command's buffer would break (TASK SET FULL, counted in
// Stats); memOK when it fits.
type memBound uint8

const (
	memOK memBound = iota
	memSession
	memTarget
	memTotal
	memReserved
)

// reserveMem takes n bytes for a command of a session that already holds
// sessionUsed bytes on the target counted by target, or says which bound
// refuses them. The reserve (the last ReservedMemory of TotalMemory) only
// goes to targets that hold little: a few hosts whose sessions hold
// buffers cannot take what every other host needs to boot. Bytes are
// added first and taken back when a bound is broken, so two commands
// racing for the last bytes may both be refused: TASK SET FULL is a
// retry, never a failure.
func (s *Server) reserveMem(target *atomic.Int64, sessionUsed, n int64) memBound {
	cfg := &s.cfg
	if sessionUsed+n > cfg.SessionMemory {
		return memSession
	}
	tu := target.Add(n)
	if tu > cfg.TargetMemory {
		target.Add(-n)
		return memTarget
	}
	total := s.mem.total.Add(n)
	bound := memOK
	switch {
	case total > cfg.TotalMemory:
		bound = memTotal
	case cfg.ReservedMemory > 0 && total > cfg.TotalMemory-cfg.ReservedMemory && tu > cfg.ReservedMemoryPerTarget:
		bound = memReserved
	}
	if bound != memOK {
		s.releaseMem(target, n)
	}
	return bound
}

// releaseMem gives back what reserveMem took.
func (s *Server) releaseMem(target *atomic.Int64, n int64) {
	target.Add(-n)
	s.mem.total.Add(-n)
}

// countTaskSetFull counts a command refused for memory.
func (c *counters) countTaskSetFull(b memBound) {
	switch b {
	case memSession:
		c.tsfSession.Add(1)
	case memTarget:
		c.tsfTarget.Add(1)
	case memTotal:
		c.tsfTotal.Add(1)
	case memReserved:
		c.tsfReserved.Add(1)
	}
}

func (b memBound) String() string {
	return [...]string{"ok", "session", "target", "total", "reserved"}[b]
}
