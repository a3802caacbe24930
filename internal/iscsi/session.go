package iscsi

import (
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/diskless-boot/diskless/internal/iscsi/pdu"
	"github.com/diskless-boot/diskless/internal/scsi"
)

// session is one logged-in iSCSI session. diskless negotiates
// MaxConnections=1, so a session has exactly one connection; the session
// exists for the registry (TSIH, reinstatement) and outlives nothing.
type session struct {
	key       sessionKey
	tsih      uint16
	discovery bool
	target    *Target // nil for discovery sessions
	nexus     scsi.Nexus
	conn      *conn
	since     time.Time
	// Bytes moved by commands that ended GOOD, for the admin's view of
	// who is doing what (Sessions).
	readBytes, writtenBytes atomic.Uint64
	// trace, when Config.TraceDir is set, records the session's READs and
	// WRITEs; set at login, before the first command.
	trace *sessionTrace
}

// close ends the session by closing its connection, and waits (bounded)
// until the connection has cleaned up its tasks.
func (ss *session) close(reason error) {
	ss.conn.abort(reason)
	select {
	case <-ss.conn.finished:
	case <-time.After(10 * time.Second):
	}
}

// bindSession registers the session a login is about to complete
// (RFC 7143 6.3.5). With TSIH 0 it is a new session, reinstating (closing)
// any older session of the same I_T nexus. With a non-zero TSIH the
// initiator asks to add or reinstate a connection; a session has one
// connection only and ends with it (ErrorRecoveryLevel 0), so the old
// session is closed and the initiator told it does not exist, upon which
// initiators log in again with TSIH 0.
func (s *Server) bindSession(c *conn, key sessionKey, tsih uint16, discovery bool, t *Target) (*session, uint16) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil, pdu.LoginServiceUnavailable
	}
	if tsih != 0 {
		var old *session
		for _, ss := range s.sessions {
			if ss.tsih == tsih {
				old = ss
			}
		}
		s.mu.Unlock()
		if old != nil && old.key == key {
			old.close(errors.New("connection reinstated"))
		}
		return nil, pdu.LoginSessionDoesNotExist
	}
	old := s.sessions[key]
	var gone []*session
	if !discovery {
		for k, ss := range s.sessions {
			if ss != old && k.initiator == key.initiator && k.target == key.target && ss.conn.peerClosed() {
				gone = append(gone, ss)
			}
		}
	}
	s.mu.Unlock()
	// An initiator that dropped a session's connection and logs in again
	// at once (a new ISID) must not find that session's PREVENT or
	// RESERVE still holding: its connection's reader may not have run
	// since the FIN came, on a busy server. The loss of that nexus is
	// handled before the new session starts (libiscsi's
	// PreventAllow.ITNexusLoss failed on that race under load).
	for _, ss := range gone {
		ss.close(errors.New("the initiator closed the connection"))
	}
	if old != nil && !discovery {
		s.info.Log(s.log, slog.LevelInfo, "iscsi session reinstatement", "iqn", key.initiator, "isid", isidString(key.isid), "tsih", old.tsih)
		old.close(errors.New("session reinstated"))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur := s.sessions[key]; cur != nil && cur != old {
		// Two logins of the same nexus raced; the later one loses.
		return nil, pdu.LoginCantIncludeInSession
	}
	if old != nil && s.sessions[key] == old {
		delete(s.sessions, key)
	}
	ss := &session{key: key, tsih: s.allocTSIH(), discovery: discovery, target: t, conn: c, since: time.Now()}
	ss.nexus = scsi.Nexus{InitiatorName: key.initiator, ISID: key.isid, RelTargetPort: 1}
	if !discovery {
		s.sessions[key] = ss
		// A normal session is no longer a login anyone could open:
		// it is never evicted for a new connection.
		s.settleLocked(c, nil)
	}
	return ss, pdu.LoginSuccess
}

// allocTSIH returns an unused non-zero TSIH. Called with s.mu held.
func (s *Server) allocTSIH() uint16 {
	for {
		s.nextTSIH++
		if s.nextTSIH == 0 {
			continue
		}
		used := false
		for _, ss := range s.sessions {
			if ss.tsih == s.nextTSIH {
				used = true
				break
			}
		}
		if !used {
			return s.nextTSIH
		}
	}
}

// unbindSession removes ss from the registry when its connection ends.
func (s *Server) unbindSession(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions[ss.key] == ss {
		delete(s.sessions, ss.key)
	}
}
