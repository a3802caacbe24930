package dhcp

import (
	"net"
	"sync"
	"time"
)

// ACKs wait for the lease file (RFC 2131 4.3.2: a binding is committed to
// persistent storage before the DHCPACK), but the workers do not: a reply
// that needs a write is parked here, at most one per client, and the first
// worker to park one when no write is under way becomes the writer. It
// writes everything changed so far in one go, sends what that write
// covered, and goes on while more is parked - the other workers meanwhile
// keep answering, so the read loop never waits for the disk. Writes are at
// least leaseWriteGap apart: a flood of changes makes a few writes a
// second, never one per packet, while a lone ACK on an idle server is
// written at once.
type committer struct {
	mu      sync.Mutex
	pending map[hwaddr]parked
	writing bool      // a worker is the writer
	last    time.Time // when the last write ended
}

// parked is a reply waiting for the lease file to reach its gen. reply
// is nil for RELEASE and DECLINE, which only need the write.
type parked struct {
	conn net.PacketConn
	r    result
}

// commitLater parks r until the lease file holds r.gen, then sends its
// reply and counts it. A reply parked earlier for the same client is
// superseded: the client asked again and the newer answer is the one it
// waits for, and one client cannot park more than one.
func (s *Server) commitLater(conn net.PacketConn, r result) {
	c := &s.commit
	c.mu.Lock()
	if c.pending == nil {
		c.pending = map[hwaddr]parked{}
	}
	if old, ok := c.pending[r.hw]; ok {
		s.stats.add(old.r.kind, outSuperseded)
	}
	c.pending[r.hw] = parked{conn: conn, r: r}
	if c.writing {
		c.mu.Unlock()
		return
	}
	c.writing = true
	c.mu.Unlock()
	s.writeParked()
}

// writeParked is the writer's loop: write, send what the write covered,
// until nothing is parked.
func (s *Server) writeParked() {
	c := &s.commit
	defer func() {
		if r := recover(); r != nil {
			// The next worker to park a reply becomes the writer.
			c.mu.Lock()
			c.writing = false
			c.mu.Unlock()
			panic(r) // on to process, which counts and logs it
		}
	}()
	for {
		c.mu.Lock()
		wait := time.Until(c.last.Add(leaseWriteGap))
		c.mu.Unlock()
		if wait > 0 {
			time.Sleep(wait) // more changes gather into this write
		}
		gen := s.leases.currentGen()
		err := s.leases.sync(gen, s.now)

		c.mu.Lock()
		c.last = time.Now()
		var ready []parked
		for k, p := range c.pending {
			if p.r.gen <= gen {
				ready = append(ready, p)
				delete(c.pending, k)
			}
		}
		done := len(c.pending) == 0
		if done {
			c.writing = false
		}
		c.mu.Unlock()

		for _, p := range ready {
			r := p.r
			if err != nil {
				s.errorf("dhcp: lease file, not acknowledging", "op", r.op, "mac", r.mac, "err", err)
				s.stats.add(r.kind, outError)
				continue
			}
			if r.reply != nil {
				r = s.send(p.conn, r)
			}
			if r.logArgs != nil && r.out == outAnswered {
				s.info("dhcp: "+r.op, r.logArgs...)
			}
			s.stats.add(r.kind, r.out)
		}
		if done {
			return
		}
	}
}
