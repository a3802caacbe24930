package iscsi

import (
	"errors"
	"fmt"
	"sort"
	"time"
)

// SessionInfo describes one logged-in normal session, for the admin.
type SessionInfo struct {
	Target       string    `json:"target"`
	Initiator    string    `json:"initiator"`
	ISID         string    `json:"isid"`
	TSIH         uint16    `json:"tsih"`
	Remote       string    `json:"remote"` // initiator address:port
	Since        time.Time `json:"since"`
	ReadBytes    uint64    `json:"read_bytes"`
	WrittenBytes uint64    `json:"written_bytes"`
}

// Sessions lists the logged-in normal sessions, of one target when
// target is not empty, oldest first.
func (s *Server) Sessions(target string) []SessionInfo {
	s.mu.Lock()
	out := make([]SessionInfo, 0, len(s.sessions))
	for k, ss := range s.sessions {
		if target != "" && k.target != target {
			continue
		}
		out = append(out, SessionInfo{
			Target: k.target, Initiator: k.initiator, ISID: isidString(k.isid), TSIH: ss.tsih,
			Remote: ss.conn.nc.RemoteAddr().String(), Since: ss.since,
			ReadBytes: ss.readBytes.Load(), WrittenBytes: ss.writtenBytes.Load(),
		})
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Since.Before(out[j].Since) })
	return out
}

// DropSessions ends every session of the named target (as a connection
// loss would) and waits, bounded, until their commands are done; the
// target stays exported. A host starting a new boot has no business with
// the sessions of its previous one.
func (s *Server) DropSessions(target string, reason string) int {
	s.mu.Lock()
	var drop []*session
	for k, ss := range s.sessions {
		if k.target == target {
			drop = append(drop, ss)
		}
	}
	s.mu.Unlock()
	for _, ss := range drop {
		ss.close(errors.New(reason))
	}
	return len(drop)
}

// UpdateTarget replaces the exported target of the same name: new logins
// see its credentials and allowed initiators; sessions logged in keep
// going.
func (s *Server) UpdateTarget(t *Target) error {
	if t.Name == "" || t.SCSI == nil {
		return errors.New("iscsi: target needs a name and a SCSI target")
	}
	if t.MutualCHAP != nil && t.CHAP == nil {
		return fmt.Errorf("iscsi: target %s: mutual CHAP needs CHAP", t.Name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.targets[t.Name]
	if !ok {
		return fmt.Errorf("iscsi: no target %s", t.Name)
	}
	if old.SCSI != t.SCSI {
		return fmt.Errorf("iscsi: target %s: UpdateTarget keeps the SCSI target", t.Name)
	}
	s.targets[t.Name] = t
	return nil
}
