package tftp

import (
	"errors"
	"net"
	"strings"
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
