package iscsi

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"
)

// Why a connection is refused at accept (Stats, and the log's "reason").
const (
	refusedPerSource = "per_source" // the source has MaxConnectionsPerSource
	refusedTotal     = "total"      // MaxConnections, and nothing to evict
)

// errEvicted closes a login under way (or a discovery session) whose slot
// a new connection took (Config.MaxConnections).
var errEvicted = errors.New("evicted: connection limit reached, this connection was not logged in")

// source is what the server tracks per source address (sourceOf).
type source struct {
	conns int
	// pending are the source's connections not in a normal session:
	// logins under way and discovery sessions, the oldest first. Anyone
	// can open them, so they are what gives way when the table is full.
	pending []*conn
}

// sourceOf is the key connections are counted by: the address, or for
// IPv6 its /64, since a host on a SLAAC network picks its own address
// within the /64 at will.
func sourceOf(a net.Addr) netip.Prefix {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Prefix{} // not TCP/IP (a pipe in tests): one source
	}
	ip := ta.AddrPort().Addr().Unmap().WithZone("")
	if ip.Is4() {
		return netip.PrefixFrom(ip, 32)
	}
	p, _ := ip.Prefix(64)
	return p
}

// admit takes a new connection in or refuses it (Config.MaxConnections,
// Config.MaxConnectionsPerSource). It returns the conn to serve, already
// counted in s.wg, and, when the table was full, the connection it
// evicted, for the caller to close; refused says why nc was refused
// (c and victim are nil then, as they are when the server shuts down).
func (s *Server) admit(nc net.Conn) (c *conn, victim *conn, refused string) {
	key := sourceOf(nc.RemoteAddr())
	s.mu.Lock()
	defer func() {
		s.mu.Unlock()
		if refused != "" {
			s.stats.refuse(refused)
			if tc, ok := nc.(*net.TCPConn); ok {
				// A reset, not a FIN: no TIME_WAIT left behind
				// for each connection of a flood.
				tc.SetLinger(0)
			}
			s.warn.Log(s.log, slog.LevelWarn, "iscsi connection refused", "remote", nc.RemoteAddr().String(),
				"reason", refused)
		}
		if victim != nil {
			s.warn.Log(s.log, slog.LevelWarn, "iscsi connection evicted to make room", "remote",
				victim.nc.RemoteAddr().String(), "for", nc.RemoteAddr().String())
		}
	}()
	if s.closing {
		return nil, nil, ""
	}
	src := s.sources[key]
	if src != nil && src.conns >= s.cfg.MaxConnectionsPerSource {
		return nil, nil, refusedPerSource
	}
	if len(s.conns) >= s.cfg.MaxConnections {
		victim = s.evictionVictimLocked()
		if victim == nil {
			return nil, nil, refusedTotal
		}
		s.untrackLocked(victim)
		s.stats.evicted.Add(1)
	}
	if src == nil {
		src = &source{}
		s.sources[key] = src
	}
	c = newConn(s, nc)
	c.src, c.accepted, c.tracked, c.pending = key, time.Now(), true, true
	src.conns++
	src.pending = append(src.pending, c)
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.stats.accepted.Add(1)
	return c, victim, ""
}

// evictionVictimLocked picks the connection a new one replaces when the
// table is full: not in a normal session, from the source with the most
// such connections (ties: the one whose oldest is oldest), its oldest.
// A flood from a few sources thus evicts itself, and a host's login,
// which takes milliseconds, is not what gives way. Nil when every
// connection is a normal session. Called with s.mu held.
func (s *Server) evictionVictimLocked() *conn {
	var best *source
	for _, src := range s.sources {
		if len(src.pending) == 0 {
			continue
		}
		if best == nil || len(src.pending) > len(best.pending) ||
			(len(src.pending) == len(best.pending) && src.pending[0].accepted.Before(best.pending[0].accepted)) {
			best = src
		}
	}
	if best == nil {
		return nil
	}
	return best.pending[0]
}

// untrackLocked forgets a connection (it ended, or was evicted); once.
// Called with s.mu held.
func (s *Server) untrackLocked(c *conn) {
	if !c.tracked {
		return
	}
	c.tracked = false
	delete(s.conns, c)
	src := s.sources[c.src]
	if src == nil {
		return
	}
	src.conns--
	s.settleLocked(c, src)
	if src.conns <= 0 {
		delete(s.sources, c.src)
	}
}

// settleLocked takes c off its source's pending list: it is now a normal
// session, which is never evicted. Called with s.mu held.
func (s *Server) settleLocked(c *conn, src *source) {
	if !c.pending {
		return
	}
	c.pending = false
	if src == nil {
		src = s.sources[c.src]
	}
	if src == nil {
		return
	}
	if i := slices.Index(src.pending, c); i >= 0 {
		src.pending = slices.Delete(src.pending, i, i+1)
	}
}

// Stats are the target's counters since New, and a few gauges, for the
// operations view (diskless_iscsi_* metrics). Refusals and closes are
// split by reason; each is also logged, rate limited.
type Stats struct {
	Accepted uint64 // connections taken in
	// Connections closed at accept, by reason.
	RefusedPerSource uint64 // the source had MaxConnectionsPerSource
	RefusedTotal     uint64 // MaxConnections reached, every connection a normal session
	// Evicted counts logins under way and discovery sessions closed to
	// make room for a new connection when MaxConnections was reached.
	Evicted uint64
	// Connections closed for a time bound.
	LoginTimeouts        uint64 // LoginTimeout
	DiscoveryTimeouts    uint64 // DiscoveryTimeout
	FirstCommandTimeouts uint64 // FirstCommandTimeout
	NOPTimeouts          uint64 // a NOP-In ping unanswered
	DataOutTimeouts      uint64 // DataOutTimeout: commands waited for Data-Out or a CmdSN gap
	// Commands answered TASK SET FULL, by the memory bound they hit.
	TaskSetFullSession  uint64 // SessionMemory
	TaskSetFullTarget   uint64 // TargetMemory
	TaskSetFullTotal    uint64 // TotalMemory
	TaskSetFullReserved uint64 // only ReservedMemory was left, and the target holds more than ReservedMemoryPerTarget
	Panics              uint64 // connection handlers that recovered from a panic

	// Gauges, now.
	Connections int   // open connections
	Pending     int   // of which not in a normal session (login under way, discovery)
	Sessions    int   // normal sessions
	MemoryUsed  int64 // data buffer bytes held by commands
}

type counters struct {
	accepted, refusedPerSource, refusedTotal, evicted                   atomic.Uint64
	loginTimeouts, discoveryTimeouts, firstCommandTimeouts, nopTimeouts atomic.Uint64
	dataOutTimeouts                                                     atomic.Uint64
	tsfSession, tsfTarget, tsfTotal, tsfReserved                        atomic.Uint64
	panics                                                              atomic.Uint64
}

func (c *counters) refuse(reason string) {
	switch reason {
	case refusedPerSource:
		c.refusedPerSource.Add(1)
	case refusedTotal:
		c.refusedTotal.Add(1)
	}
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	c := &s.stats
	st := Stats{
		Accepted: c.accepted.Load(), RefusedPerSource: c.refusedPerSource.Load(), RefusedTotal: c.refusedTotal.Load(),
		Evicted: c.evicted.Load(), LoginTimeouts: c.loginTimeouts.Load(), DiscoveryTimeouts: c.discoveryTimeouts.Load(),
		FirstCommandTimeouts: c.firstCommandTimeouts.Load(), NOPTimeouts: c.nopTimeouts.Load(),
		DataOutTimeouts: c.dataOutTimeouts.Load(), TaskSetFullSession: c.tsfSession.Load(),
		TaskSetFullTarget: c.tsfTarget.Load(), TaskSetFullTotal: c.tsfTotal.Load(),
		TaskSetFullReserved: c.tsfReserved.Load(), Panics: c.panics.Load(),
		MemoryUsed: s.mem.used(),
	}
	s.mu.Lock()
	st.Connections = len(s.conns)
	for _, src := range s.sources {
		st.Pending += len(src.pending)
	}
	st.Sessions = len(s.sessions)
	s.mu.Unlock()
	return st
}
