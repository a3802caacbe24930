package iscsi

import (
	"fmt"
	"net"
	"sort"

	"github.com/diskless-boot/diskless/internal/iscsi/pdu"
)

// maxTextResponse bounds a whole Text response (all continuation PDUs).
const maxTextResponse = 1 << 20

// handleText answers a Text Request (RFC 7143 11.10) whose header is h.
// The only key served in the full feature phase is SendTargets (appendix
// C); anything else is answered NotUnderstood or Irrelevant. Long answers
// go out in several responses with the C bit, the initiator fetching the
// rest with empty requests carrying our Target Transfer Tag.
func (c *conn) handleText(m pdu.TextRequest, h *pdu.BHS, data []byte) {
	if m.TTT != pdu.ReservedTag && c.textPending != nil && m.TTT == c.textTTT {
		c.sendTextChunk(m)
		return
	}
	c.textPending = nil
	kvs, err := pdu.ParseText(data)
	if err != nil || m.Continue {
		// Multi-PDU Text requests are not needed by any SendTargets
		// initiator; refuse rather than buffer.
		c.reject(h, pdu.RejectProtocolError)
		return
	}
	var (
		out  []byte
		rest []pdu.KV
	)
	for _, kv := range kvs {
		if kv.Key == "SendTargets" {
			out = c.sendTargets(out, kv.Value)
			if len(out) > maxTextResponse {
				out = out[:0]
			}
		} else {
			rest = append(rest, kv)
		}
	}
	if len(rest) > 0 {
		// Renegotiation in the full feature phase: in practice the
		// initiator declaring a new MaxRecvDataSegmentLength.
		reply, err := c.ffpNeg.Respond(rest)
		if err != nil {
			c.reject(h, pdu.RejectProtocolError)
			return
		}
		out = pdu.AppendText(out, reply...)
		c.sendSeg.Store(c.ffpNeg.Params().MaxRecvDataSegmentLength)
	}
	c.textPending = out
	c.textTTT++
	if c.textTTT == pdu.ReservedTag {
		c.textTTT = 1
	}
	c.sendTextChunk(m)
}

func (c *conn) sendTextChunk(m pdu.TextRequest) {
	n := min(len(c.textPending), int(c.sendSeg.Load()))
	chunk := c.textPending[:n]
	c.textPending = c.textPending[n:]
	more := len(c.textPending) > 0
	r := pdu.TextResponse{Final: !more, Continue: more, LUN: m.LUN, ITT: m.ITT, TTT: pdu.ReservedTag}
	if more {
		r.TTT = c.textTTT
	} else {
		c.textPending = nil
	}
	item := &outItem{pdus: []outPDU{{data: chunk, sn: snAdvance}}}
	r.Marshal(&item.pdus[0].bhs)
	c.send(item)
}

// sendTargets lists targets and their portals (RFC 7143 appendix C):
// "All" lists every target the initiator may see (discovery sessions);
// an empty value means the session's own target; a name, that target.
func (c *conn) sendTargets(out []byte, value string) []byte {
	var names []string
	s := c.srv
	s.mu.Lock()
	switch {
	case value == "All" && c.sess.discovery:
		for name, t := range s.targets {
			if t.allows(c.sess.key.initiator) {
				names = append(names, name)
			}
		}
	case value == "" || value == "All":
		if c.sess.target != nil {
			names = append(names, c.sess.target.Name)
		}
	default:
		if t := s.targets[value]; t != nil && t.allows(c.sess.key.initiator) &&
			(c.sess.discovery || c.sess.target == t) {
			names = append(names, value)
		}
	}
	s.mu.Unlock()
	sort.Strings(names)
	addr := portalAddress(c.nc.LocalAddr())
	for _, n := range names {
		out = pdu.AppendText(out,
			pdu.KV{Key: "TargetName", Value: n},
			pdu.KV{Key: "TargetAddress", Value: fmt.Sprintf("%s,%d", addr, s.cfg.PortalGroupTag)})
	}
	return out
}

// portalAddress formats the address the initiator reached us on, IPv6 in
// brackets (RFC 7143 13.8).
func portalAddress(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	if ta.IP.To4() == nil {
		return fmt.Sprintf("[%s]:%d", ta.IP, ta.Port)
	}
	return fmt.Sprintf("%s:%d", ta.IP, ta.Port)
}
