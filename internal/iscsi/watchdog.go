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
		rx, rxAt     = c.rxCount.Load(), start // last PDU seen
		progress     = c.initiatorProgress()
		progressAt   = start // last Data-Out or command delivered
		waitingSince time.Time
		pingAt       time.Time
		ttt          uint32
		now          time.Time
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
		if p := c.initiatorProgress(); p != progress {
			progress, progressAt = p, now
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
			// Commands waiting for the initiator (Data-Out, or a
			// CmdSN before theirs): as long as Data-Out or commands
			// keep coming, the initiator is working through its
			// queue; when nothing comes for the bound, it never will.
			if d := cfg.DataOutTimeout; d > 0 {
				if !c.waitingForInitiator() {
					waitingSince = time.Time{}
				} else {
					if waitingSince.IsZero() {
						waitingSince = now
					}
					since := waitingSince
					if progressAt.After(since) {
						since = progressAt
					}
					if now.Sub(since) >= d {
						c.expire(&c.srv.stats.dataOutTimeouts, "iscsi connection closed: Data-Out overdue", d)
						return
					}
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

// initiatorProgress changes whenever the initiator moves its commands
// on: a Data-Out placed in a buffer, or ExpCmdSN advanced by a command.
func (c *conn) initiatorProgress() uint64 {
	return c.dataOutCount.Load() + uint64(c.expCmdSN.Load())
}

// waitingForInitiator reports whether a command waits for something only
// the initiator can send: its Data-Out, or a command before it.
func (c *conn) waitingForInitiator() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.tasks {
		if t.waiting.Load() {
			return true
		}
	}
	return false
}
