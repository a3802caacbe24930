package iscsi

import (
	"errors"

	"github.com/diskless-boot/diskless/internal/iscsi/pdu"
)

// handleTaskMgmt carries out a task management function (RFC 7143 11.5,
// SAM-5 7) and answers it once the affected tasks are gone: no response
// of an aborted task can follow the TMF response.
func (c *conn) handleTaskMgmt(m pdu.TaskMgmtRequest) {
	resp := uint8(pdu.TMFComplete)
	lun := decodeLUN(m.LUN)
	var wait []*task
	scsiTarget := c.sess.target.SCSI
	switch m.Function {
	case pdu.TMFAbortTask:
		c.mu.Lock()
		t := c.tasks[m.ReferencedTag]
		switch {
		case t != nil && t.lun == lun:
			c.dropTaskLocked(t)
			wait = append(wait, t)
		case snLessEq(c.expCmdSN.Load(), m.RefCmdSN) && snLess(m.RefCmdSN, m.CmdSN):
			// Not arrived yet but inside the window: it counts as
			// received and aborted (11.5.1 b).
			c.aborted[m.RefCmdSN] = struct{}{}
		default:
			resp = pdu.TMFTaskDoesNotExist
		}
		c.mu.Unlock()
	case pdu.TMFAbortTaskSet:
		wait = c.abortTasks(lun, false)
		scsiTarget.AbortTaskSet(c.sess.nexus, lun)
	case pdu.TMFClearTaskSet:
		wait = c.srv.abortTargetTasks(c.sess.target, lun, false)
		scsiTarget.ClearTaskSet(c.sess.nexus, lun)
	case pdu.TMFLogicalUnitReset:
		wait = c.srv.abortTargetTasks(c.sess.target, lun, false)
		if err := scsiTarget.LUNReset(lun); err != nil {
			resp = pdu.TMFLUNDoesNotExist
		}
	case pdu.TMFTargetWarmReset, pdu.TMFTargetColdReset:
		wait = c.srv.abortTargetTasks(c.sess.target, 0, true)
		scsiTarget.TargetReset(m.Function == pdu.TMFTargetColdReset)
	case pdu.TMFClearACA:
		// NACA is refused at command level, so ACA never exists.
		resp = pdu.TMFNotSupported
	case pdu.TMFTaskReassign:
		resp = pdu.TMFReassignNotSupp // needs ErrorRecoveryLevel 2
	default:
		resp = pdu.TMFRejected
	}
	for _, t := range wait {
		<-t.done
	}
	item := &outItem{pdus: []outPDU{{sn: snAdvance}}}
	r := pdu.TaskMgmtResponse{Response: resp, ITT: m.ITT}
	r.Marshal(&item.pdus[0].bhs)
	if m.Function == pdu.TMFTargetColdReset && resp == pdu.TMFComplete {
		// A cold reset drops every session of the target, this one
		// included, once the response is out (RFC 7143 11.5.1). This
		// runs on the reader: closing before it returns keeps it from
		// taking one more command on a connection of the old sessions.
		sent := make(chan struct{})
		item.release = func() { close(sent) }
		c.send(item)
		<-sent
		c.srv.dropTargetSessions(c.sess.target, errors.New("target cold reset"))
		return
	}
	c.send(item)
}

// abortTasks drops this connection's tasks on lun (or all with every).
func (c *conn) abortTasks(lun uint64, every bool) []*task {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*task
	for _, t := range c.tasks {
		if every || t.lun == lun {
			c.dropTaskLocked(t)
			out = append(out, t)
		}
	}
	// Commands queued ahead of ExpCmdSN belong to the task set too.
	return out
}

// abortTargetTasks drops the tasks on lun of every session of t.
func (s *Server) abortTargetTasks(t *Target, lun uint64, every bool) []*task {
	var out []*task
	for _, ss := range s.targetSessions(t) {
		out = append(out, ss.conn.abortTasks(lun, every)...)
	}
	return out
}

func (s *Server) targetSessions(t *Target) []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*session
	for _, ss := range s.sessions {
		// By name: UpdateTarget replaces the *Target of a name.
		if ss.target != nil && ss.target.Name == t.Name {
			out = append(out, ss)
		}
	}
	return out
}

func (s *Server) dropTargetSessions(t *Target, reason error) {
	for _, ss := range s.targetSessions(t) {
		ss.conn.abort(reason)
	}
}
