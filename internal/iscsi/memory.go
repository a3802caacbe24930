package iscsi

import "sync"

// memBudget counts the data buffer bytes that commands hold, in total and
// per target, against Config's memory bounds (see Config.SessionMemory).
// Sessions count their own bytes (conn.memUsed). Safe for concurrent use.
type memBudget struct {
	mu       sync.Mutex
	total    int64
	byTarget map[string]int64 // by target name: UpdateTarget keeps the name
}

func (m *memBudget) used() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.total
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

// reserveMem takes n bytes for a command of a session on target that
// already holds sessionUsed bytes, or says which bound refuses them. The
// reserve (the last ReservedMemory of TotalMemory) only goes to targets
// that hold little: a few hosts whose sessions hold buffers cannot take
// what every other host needs to boot.
func (s *Server) reserveMem(target string, sessionUsed, n int64) memBound {
	cfg := &s.cfg
	if sessionUsed+n > cfg.SessionMemory {
		return memSession
	}
	m := &s.mem
	m.mu.Lock()
	defer m.mu.Unlock()
	tu := m.byTarget[target]
	switch {
	case tu+n > cfg.TargetMemory:
		return memTarget
	case m.total+n > cfg.TotalMemory:
		return memTotal
	case cfg.ReservedMemory > 0 && m.total+n > cfg.TotalMemory-cfg.ReservedMemory && tu+n > cfg.ReservedMemoryPerTarget:
		return memReserved
	}
	m.total += n
	m.byTarget[target] = tu + n
	return memOK
}

// releaseMem gives back what reserveMem took.
func (s *Server) releaseMem(target string, n int64) {
	m := &s.mem
	m.mu.Lock()
	defer m.mu.Unlock()
	m.total -= n
	if v := m.byTarget[target] - n; v > 0 {
		m.byTarget[target] = v
	} else {
		delete(m.byTarget, target)
	}
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
