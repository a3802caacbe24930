package iscsi

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/diskless-boot/diskless/internal/iscsi/pdu"
)

// The watchdog enforces the time bounds of a connection in the full
// feature phase (Config.DiscoveryTimeout, FirstCommandTimeout,
// DataOutTimeout, ProvenNOPInterval, NOPInterval). It is one goroutine
// per connection that wakes a few times per bound and compares counters
// the reader bumps, so the data path pays an atomic add per PDU, not a
// clock read or a timer reset. Bounds are thus kept to within a quarter.

// watchTick is how often the watchdog looks: a quarter of the smallest
// bound that applies to this connection; 0 when none does.
func (c *conn) watchTick() time.Duration {
	cfg := &c.srv.cfg
	var bounds []time.Duration
	if c.sess.discovery {
		bounds = append(bounds, cfg.DiscoveryTimeout)
	} else {
		bounds = append(bounds, cfg.FirstCommandTimeout, cfg.DataOutTimeout)
	}
	bounds = append(bounds, cfg.ProvenNOPInterval, cfg.NOPInterval)
	var least time.Duration
	for _, b := range bounds {
		if b > 0 && (least == 0 || b < least) {
			least = b
		}
	}
	if least == 0 {
		return 0
	}
	return max(least/4, time.Millisecond)
}

// watch runs until the connection closes, and closes it when a bound is
// broken.
func (c *conn) watch(tick time.Duration) {
	defer close(c.watchDone)
	cfg := &c.srv.cfg
	discovery := c.sess.discovery
	t := time.NewTicker(tick)
	defer t.Stop()
	start := time.Now()
	var (
		rx, rxAt = c.rxCount.Load(), start // last PDU seen
		// Two things commands wait for, each with its own sign of
		// progress: Data-Out arriving, and ExpCmdSN moving.
		data   = stall{seen: uint64(c.dataOutCount.Load()), at: start}
		order  = stall{seen: uint64(c.expCmdSN.Load()), at: start}
		pingAt time.Time
		ttt    uint32
		now    time.Time
	)
	for {
		select {
		case <-c.closed:
			return
		case now = <-t.C:
		}
		if n := c.rxCount.Load(); n != rx {
			rx, rxAt = n, now
		}

		if discovery {
			// No reason for a discovery session to last: SendTargets
			// is one exchange.
			if d := cfg.DiscoveryTimeout; d > 0 && now.Sub(start) >= d {
				c.expire(&c.srv.stats.discoveryTimeouts, "iscsi discovery session timed out", d)
				return
			}
		} else {
			if d := cfg.FirstCommandTimeout; d > 0 && !c.gotCommand.Load() && now.Sub(start) >= d {
				c.expire(&c.srv.stats.firstCommandTimeouts, "iscsi session closed: no command since login", d)
				return
			}
			// Commands waiting for the initiator, for their Data-Out
			// or for a CmdSN before theirs: as long as Data-Out (or
			// commands, for a gap) keep coming, the initiator is
			// working through its queue; when none comes for the
			// bound, none will. New commands do not count for
			// Data-Out: an initiator sends data as soon as it is
			// asked, and a client that pins a WRITE's buffer must not
			// keep it with a TEST UNIT READY now and then.
			if d := cfg.DataOutTimeout; d > 0 {
				waitData, waitOrder := c.waitingForInitiator()
				if data.overdue(waitData, uint64(c.dataOutCount.Load()), now, d) ||
					order.overdue(waitOrder, uint64(c.expCmdSN.Load()), now, d) {
					c.expire(&c.srv.stats.dataOutTimeouts, "iscsi connection closed: Data-Out overdue", d)
					return
				}
			}
		}

		// NOP-In pings (RFC 7143 11.19), to initiators known to answer.
		iv := cfg.NOPInterval
		if iv <= 0 && c.nopProven.Load() {
			iv = cfg.ProvenNOPInterval
		}
		if iv <= 0 {
			continue
		}
		if c.pingPending.Load() != 0 {
			if now.Sub(pingAt) >= iv {
				c.expire(&c.srv.stats.nopTimeouts, "iscsi connection closed: NOP-In ping unanswered", iv)
				return
			}
			continue
		}
		if now.Sub(rxAt) < iv {
			continue
		}
		ttt++
		if ttt == pdu.ReservedTag || ttt == 0 {
			ttt = 1
		}
		c.pingPending.Store(ttt)
		pingAt = now
		m := pdu.NOPIn{ITT: pdu.ReservedTag, TTT: ttt}
		item := &outItem{pdus: []outPDU{{sn: snPeek}}}
		m.Marshal(&item.pdus[0].bhs)
		c.send(item)
	}
}

// expire closes the connection for a broken bound, counted and logged.
func (c *conn) expire(counter *atomic.Uint64, msg string, bound time.Duration) {
	counter.Add(1)
	c.warn(msg, "tsih", c.sess.tsih, "after", bound)
	c.abort(fmt.Errorf("%s (%v)", msg, bound))
}

// stall tracks one thing commands may wait for: since when they have
// waited, and when the counter that shows progress on it last moved.
type stall struct {
	seen  uint64    // the counter when last looked at
	at    time.Time // when it last moved
	since time.Time // when the current wait began; zero when none
}

// overdue reports whether commands have waited, with the counter
// standing still, for d.
func (s *stall) overdue(waiting bool, counter uint64, now time.Time, d time.Duration) bool {
	if counter != s.seen {
		s.seen, s.at = counter, now
	}
	if !waiting {
		s.since = time.Time{}
		return false
	}
	if s.since.IsZero() {
		s.since = now
	}
	from := s.since
	if s.at.After(from) {
		from = s.at
	}
	return now.Sub(from) >= d
}

// waitingForInitiator reports whether a command waits for its Data-Out,
// and whether one waits for a command before it in CmdSN order.
func (c *conn) waitingForInitiator() (data, order bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.tasks {
		w := t.waiting.Load()
		data = data || w&waitData != 0
		order = order || w&waitOrder != 0
	}
	return data, order
}
