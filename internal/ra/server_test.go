package ra

import (
	"context"
	"encoding/hex"
	"errors"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/net/ipv6"
)

// fakeConn feeds solicitations to the server and records its answers.
type fakeConn struct {
	in     chan []byte
	cm     *ipv6.ControlMessage
	mu     sync.Mutex
	sent   [][]byte
	dsts   []net.Addr
	closed chan struct{}
	once   sync.Once
}

func newFakeConn(ifIndex int) *fakeConn {
	return &fakeConn{in: make(chan []byte), cm: &ipv6.ControlMessage{HopLimit: 255, IfIndex: ifIndex}, closed: make(chan struct{})}
}

func (c *fakeConn) ReadFrom(b []byte) (int, *ipv6.ControlMessage, net.Addr, error) {
	select {
	case p := <-c.in:
		return copy(b, p), c.cm, &net.IPAddr{IP: net.ParseIP("fe80::5054:ff:fe12:3456")}, nil
	case <-c.closed:
		return 0, nil, nil, net.ErrClosed
	}
}

func (c *fakeConn) WriteTo(b []byte, cm *ipv6.ControlMessage, dst net.Addr) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cm == nil || cm.HopLimit != 255 {
		return 0, errors.New("hop limit not 255")
	}
	c.sent = append(c.sent, append([]byte(nil), b...))
	c.dsts = append(c.dsts, dst)
	return len(b), nil
}

func (c *fakeConn) Close() error { c.once.Do(func() { close(c.closed) }); return nil }

func (c *fakeConn) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.sent)
}

var testRS, _ = hex.DecodeString("8500000000000000" + "0101525400123456")

// A burst of solicitations from many clients gets one answer at once and
// one coalesced answer at the end of the interval: nobody waits for a
// retransmission, and the link sees at most one RA per interval.
func TestServerAnswersAndCoalesces(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hw, _ := net.ParseMAC("02:00:00:00:00:01")
		s := newServer(Config{Interface: "br0", MinInterval: time.Second}, 7, hw)
		c := newFakeConn(7)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- s.serve(ctx, c) }()

		c.in <- testRS
		synctest.Wait()
		if n := c.count(); n != 1 {
			t.Fatalf("first solicitation: %d answers, want 1", n)
		}
		for range 50 {
			c.in <- testRS
		}
		synctest.Wait()
		if n := c.count(); n != 1 {
			t.Fatalf("inside the interval: %d answers, want still 1", n)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if n := c.count(); n != 2 {
			t.Fatalf("after the interval: %d answers, want 2 (one coalesced)", n)
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if n := c.count(); n != 2 {
			t.Fatalf("no solicitation, yet %d answers", n)
		}
		st := s.Stats()
		if st.Solicitations != 51 || st.Sent != 2 {
			t.Errorf("stats %+v", st)
		}
		want := "86000000000000000000000000000000" + "0101020000000001"
		if got := hex.EncodeToString(c.sent[0]); got != want {
			t.Errorf("RA %s want %s", got, want)
		}
		if d := c.dsts[0].String(); d != "ff02::1%br0" {
			t.Errorf("sent to %s, want ff02::1%%br0", d)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
}

// Solicitations that RFC 4861 6.1.1 says to drop get no answer.
func TestServerDropsInvalid(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newServer(Config{Interface: "br0"}, 7, nil)
		cases := []struct {
			name string
			b    []byte
			cm   *ipv6.ControlMessage
			src  net.Addr
		}{
			{"routed (hop limit 254)", testRS, &ipv6.ControlMessage{HopLimit: 254, IfIndex: 7}, nil},
			{"other interface", testRS, &ipv6.ControlMessage{HopLimit: 255, IfIndex: 8}, nil},
			{"no control message", testRS, nil, nil},
			{"malformed", testRS[:5], &ipv6.ControlMessage{HopLimit: 255, IfIndex: 7}, nil},
			{"unspecified source with SLLA", testRS, &ipv6.ControlMessage{HopLimit: 255, IfIndex: 7}, &net.IPAddr{IP: net.IPv6unspecified}},
		}
		c := newFakeConn(7)
		s.conn = c
		for _, tc := range cases {
			s.handle(tc.b, tc.cm, tc.src)
		}
		if n := c.count(); n != 0 {
			t.Errorf("%d answers to invalid solicitations", n)
		}
		if st := s.Stats(); st.Dropped != uint64(len(cases)) {
			t.Errorf("dropped %d, want %d", st.Dropped, len(cases))
		}
	})
}

func TestShutdownStopsPending(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newServer(Config{Interface: "br0", MinInterval: time.Second}, 7, nil)
		c := newFakeConn(7)
		done := make(chan error)
		go func() { done <- s.serve(t.Context(), c) }()
		c.in <- testRS
		c.in <- testRS // pending
		synctest.Wait()
		s.Shutdown(context.Background())
		s.Shutdown(context.Background())
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if n := c.count(); n != 1 {
			t.Errorf("%d answers after shutdown, want the first only", n)
		}
	})
}
