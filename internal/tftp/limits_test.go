package tftp

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"testing/synctest"
	"time"
)

// Tests of the bounds that keep one client from starving the others
// (issue 13), on the in-memory network under synctest's clock.

// rrqFrom sends an RRQ from a new client socket at ip:port and returns the
// socket.
func rrqFrom(mn *memNet, l *memConn, ip string, port int, o ...Option) *memConn {
	c := mn.listen(ip, port)
	c.WriteTo((&Request{Op: OpRRQ, Filename: "f", Mode: "octet", Options: o}).AppendBinary(nil), l.addr)
	return c
}

// next reads c's next packet, or fails the test when none is queued:
// call it after synctest.Wait, so an empty queue means no answer at all.
func next(t *testing.T, c *memConn) ([]byte, net.Addr) {
	t.Helper()
	select {
	case p := <-c.in:
		return p.b, p.from
	default:
		t.Fatalf("%v: no packet", c.addr)
		return nil, nil
	}
}

func wantError(t *testing.T, b []byte, text string) {
	t.Helper()
	e, err := ParseError(b)
	if err != nil {
		t.Fatalf("want ERROR %q, got %x", text, b)
	}
	if e.Code != ErrCodeNotDefined || !strings.Contains(e.Message, text) {
		t.Fatalf("got ERROR %d %q, want code 0 %q", e.Code, e.Message, text)
	}
}

func silent(t *testing.T, c *memConn) {
	t.Helper()
	select {
	case p := <-c.in:
		t.Fatalf("%v: unexpected packet %x", c.addr, p.b)
	default:
	}
}

// TestPerSourceCap: one address gets MaxTransfersPerSource transfers; the
// next request from it is answered with an ERROR at once (never silence,
// whatever DropWhenBusy says) while other addresses are still served, and
// the address gets a slot again once one of its transfers ends.
func TestPerSourceCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, mn, l, stop := synctestServer(t, Config{
			FS:                    fstest.MapFS{"f": {Data: make([]byte, 5000)}},
			MaxTransfersPerSource: 2,
			DropWhenBusy:          true,
		})
		defer stop()
		a1 := rrqFrom(mn, l, "10.0.0.2", 5001)
		a2 := rrqFrom(mn, l, "10.0.0.2", 5002)
		a3 := rrqFrom(mn, l, "10.0.0.2", 5003)
		b := rrqFrom(mn, l, "10.0.0.3", 5001)
		synctest.Wait()
		_, tid1 := next(t, a1)
		next(t, a2)
		p, _ := next(t, a3)
		wantError(t, p, "too many transfers from your address")
		if p, _ := next(t, b); p[1] != byte(OpDATA) {
			t.Fatalf("other address not served: %x", p)
		}
		st := s.Stats()
		if st.SourceBusy != 1 || st.Busy != 0 || st.Active != 3 {
			t.Fatalf("%+v", st)
		}
		// a1 gives up: 10.0.0.2 may start another transfer.
		a1.WriteTo((&Error{ErrCodeNotDefined, "bye"}).AppendBinary(nil), tid1)
		synctest.Wait()
		a4 := rrqFrom(mn, l, "10.0.0.2", 5004)
		synctest.Wait()
		if p, _ := next(t, a4); p[1] != byte(OpDATA) {
			t.Fatalf("slot not given back: %x", p)
		}
	})
}

// TestPreemptUnacknowledged: with every slot taken, a transfer whose
// client never acknowledged anything gives its slot to a new request once
// it has waited Config.Timeout; a transfer whose client answers, however
// slowly, is never taken over, and a request that finds no such slot is
// refused with an ERROR.
func TestPreemptUnacknowledged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var preempted []TransferInfo
		s, mn, l, stop := synctestServer(t, Config{
			FS:           fstest.MapFS{"f": {Data: make([]byte, 5000)}},
			MaxTransfers: 2,
			Timeout:      2 * time.Second,
			OnTransfer: func(ti TransferInfo) {
				mu.Lock()
				defer mu.Unlock()
				if errors.Is(ti.Err, ErrPreempted) {
					preempted = append(preempted, ti)
				}
			},
		})
		defer stop()
		live := rrqFrom(mn, l, "10.0.0.2", 5000) // oldest, but it answers
		synctest.Wait()
		_, tid := next(t, live)
		live.WriteTo((&Ack{1}).AppendBinary(nil), tid)
		hog := rrqFrom(mn, l, "10.0.0.3", 5000, opts("timeout", "255")...)
		synctest.Wait()
		next(t, hog) // its DATA 1, never acknowledged
		next(t, live)

		// Before the hog's first timeout: nothing to take over.
		time.Sleep(time.Second)
		early := rrqFrom(mn, l, "10.0.0.4", 5000)
		synctest.Wait()
		p, _ := next(t, early)
		wantError(t, p, "server busy")

		time.Sleep(time.Second) // the hog has waited Timeout
		synctest.Wait()
		for len(hog.in) > 0 {
			next(t, hog) // its retransmission
		}
		late := rrqFrom(mn, l, "10.0.0.5", 5000)
		synctest.Wait()
		if p, _ := next(t, late); p[1] != byte(OpDATA) {
			t.Fatalf("new request not served: %x", p)
		}
		p, _ = next(t, hog)
		wantError(t, p, "slot given to another client")
		for len(live.in) > 0 {
			// Retransmissions of its DATA 2, never an ERROR.
			if p, _ := next(t, live); p[1] != byte(OpDATA) {
				t.Fatalf("answering client got %x", p)
			}
		}
		st := s.Stats()
		if st.Preempted != 1 || st.Busy != 1 || st.Active != 2 {
			t.Fatalf("%+v", st)
		}
		mu.Lock()
		if len(preempted) != 1 || preempted[0].Client.Addr().String() != "10.0.0.3" {
			t.Fatalf("reports %+v", preempted)
		}
		mu.Unlock()
		// Now both slots hold transfers younger than Timeout or answered.
		again := rrqFrom(mn, l, "10.0.0.6", 5000)
		synctest.Wait()
		p, _ = next(t, again)
		wantError(t, p, "server busy")
	})
}

// TestTransferTimeLimit: a client that acknowledges just often enough to
// keep its transfer alive is cut off after MaxTransferTime with an ERROR.
func TestTransferTimeLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var info TransferInfo
		s, mn, l, stop := synctestServer(t, Config{
			FS:              fstest.MapFS{"f": {Data: make([]byte, 512*10)}},
			MaxTransferTime: 30 * time.Second,
			OnTransfer:      func(ti TransferInfo) { info = ti },
		})
		defer stop()
		start := time.Now()
		c := rrqFrom(mn, l, "10.0.0.2", 5000)
		buf := make([]byte, 1024)
		for blk := uint16(1); ; blk++ {
			// The server retransmits after 1, 2 and 4 s; the client answers
			// after 6 s, well before the server would give up.
			var from net.Addr
			var n int
			for time.Since(start) < time.Duration(blk)*6*time.Second {
				var err error
				n, from, err = c.ReadFrom(buf)
				if err != nil {
					t.Fatal(err)
				}
				if op, _ := PeekOpcode(buf[:n]); op == OpERROR {
					break
				}
			}
			if op, _ := PeekOpcode(buf[:n]); op == OpERROR {
				wantError(t, buf[:n], "time limit")
				break
			}
			c.WriteTo((&Ack{blk}).AppendBinary(nil), from)
		}
		if d := time.Since(start); d != 30*time.Second {
			t.Errorf("transfer ended after %v, want the 30 s limit", d)
		}
		synctest.Wait()
		if st := s.Stats(); st.Expired != 1 || st.Active != 0 {
			t.Errorf("%+v", st)
		}
		if !errors.Is(info.Err, ErrExpired) || info.Bytes == 0 {
			t.Errorf("info %+v", info)
		}
	})
}

// TestHostileFlood is the TFTP attack of issue 13: 1000 read requests
// asking for timeout=255, from 50 addresses, none ever acknowledged.
// Every one is answered (DATA, or an ERROR saying why not), a real client
// arriving a second later gets its file, and the slots are all free again
// after the server's own 35 s retransmission schedule.
func TestHostileFlood(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, mn, l, stop := synctestServer(t, Config{FS: fstest.MapFS{"f": {Data: make([]byte, 100_000)}}})
		defer stop()
		var hogs []*memConn
		for i := range 1000 {
			ip := fmt.Sprintf("10.0.1.%d", 1+i/20)
			hogs = append(hogs, rrqFrom(mn, l, ip, 6000+i, opts("timeout", "255")...))
			if i%100 == 99 {
				synctest.Wait() // the request socket's queue holds 256
			}
		}
		synctest.Wait()
		var data, sourceBusy, busy int
		for _, h := range hogs {
			p, _ := next(t, h)
			switch e, err := ParseError(p); {
			case err != nil:
				data++
			case strings.Contains(e.Message, "your address"):
				sourceBusy++
			case strings.Contains(e.Message, "busy"):
				busy++
			default:
				t.Fatalf("unexpected %q", e.Message)
			}
		}
		st := s.Stats()
		t.Logf("flood answered: %d served, %d refused per source, %d refused busy; %+v", data, sourceBusy, busy, st)
		// 32 addresses get 8 slots each; the rest is refused, per address
		// first.
		if data != 256 || st.Active != 256 || sourceBusy != 32*12 || busy != 1000-256-32*12 ||
			uint64(sourceBusy) != st.SourceBusy || uint64(busy) != st.Busy || st.TimeoutIgnored != 256 {
			t.Fatalf("%+v", st)
		}

		// A real client a second later: it takes the slot of a hog.
		time.Sleep(time.Second)
		start := time.Now()
		res := synctestGet(t, mn, l, "10.0.2.1", 7000, opts("blksize", "1468"))
		if res != 100_000 {
			t.Fatalf("legitimate client got %d bytes", res)
		}
		t.Logf("legitimate client served in %v (fake clock) during the flood", time.Since(start))
		if time.Since(start) > 0 {
			t.Errorf("legitimate client waited %v", time.Since(start))
		}
		time.Sleep(35 * time.Second)
		synctest.Wait()
		if st := s.Stats(); st.Active != 0 || st.Preempted != 1 || st.TimedOut != 255 {
			t.Fatalf("after 36 s: %+v", st)
		}
	})
}

// synctestGet downloads "f" as a well-behaved client and returns its size.
func synctestGet(t *testing.T, mn *memNet, l *memConn, ip string, port int, o []Option) int {
	t.Helper()
	c := rrqFrom(mn, l, ip, port, o...)
	defer c.Close()
	blk := DefaultBlockSize
	buf := make([]byte, 70000)
	total := 0
	for {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		switch op, _ := PeekOpcode(buf[:n]); op {
		case OpOACK:
			oa, _ := ParseOAck(buf[:n])
			for _, opt := range oa.Options {
				if opt.Name == "blksize" {
					fmt.Sscan(opt.Value, &blk)
				}
			}
			c.WriteTo((&Ack{0}).AppendBinary(nil), from)
		case OpDATA:
			d, _ := ParseData(buf[:n])
			total += len(d.Payload)
			c.WriteTo((&Ack{d.Block}).AppendBinary(nil), from)
			if len(d.Payload) < blk {
				return total
			}
		default:
			t.Fatalf("got %x", buf[:n])
		}
	}
}
