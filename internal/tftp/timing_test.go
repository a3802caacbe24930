package tftp

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"testing/fstest"
	"testing/synctest"
	"time"
)

// memNet is an in-memory UDP network whose conns honour read deadlines
// with timers, so that tests run under testing/synctest's fake clock.
type memNet struct {
	mu    sync.Mutex
	conns map[string]*memConn
	port  int
}

type memPacket struct {
	b    []byte
	from net.Addr
}

func newMemNet() *memNet { return &memNet{conns: map[string]*memConn{}, port: 40000} }

func (n *memNet) listen(ip string, port int) *memConn {
	n.mu.Lock()
	defer n.mu.Unlock()
	if port == 0 {
		n.port++
		port = n.port
	}
	c := &memConn{net: n, addr: &net.UDPAddr{IP: net.ParseIP(ip), Port: port},
		in: make(chan memPacket, 256), closed: make(chan struct{}), wake: make(chan struct{})}
	n.conns[c.addr.String()] = c
	return c
}

type memConn struct {
	net    *memNet
	addr   *net.UDPAddr
	in     chan memPacket
	closed chan struct{}
	once   sync.Once

	mu       sync.Mutex
	deadline time.Time
	wake     chan struct{} // closed when the deadline changes
}

func (c *memConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		c.mu.Lock()
		dl, wake := c.deadline, c.wake
		c.mu.Unlock()
		var timeout <-chan time.Time
		var tm *time.Timer
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			tm = time.NewTimer(d)
			timeout = tm.C
		}
		stop := func() {
			if tm != nil {
				tm.Stop()
			}
		}
		select {
		case pkt := <-c.in:
			stop()
			return copy(p, pkt.b), pkt.from, nil
		case <-c.closed:
			stop()
			return 0, nil, net.ErrClosed
		case <-timeout:
			return 0, nil, os.ErrDeadlineExceeded
		case <-wake:
			stop()
		}
	}
}

func (c *memConn) WriteTo(p []byte, to net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	c.net.mu.Lock()
	dst := c.net.conns[to.String()]
	c.net.mu.Unlock()
	if dst != nil {
		select {
		case dst.in <- memPacket{append([]byte(nil), p...), c.addr}:
		default: // queue full: lost, like UDP
		}
	}
	return len(p), nil
}

func (c *memConn) Close() error {
	c.once.Do(func() {
		close(c.closed)
		c.net.mu.Lock()
		delete(c.net.conns, c.addr.String())
		c.net.mu.Unlock()
	})
	return nil
}

func (c *memConn) LocalAddr() net.Addr { return c.addr }

func (c *memConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	close(c.wake)
	c.wake = make(chan struct{})
	return nil
}

func (c *memConn) SetDeadline(t time.Time) error    { return c.SetReadDeadline(t) }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

// synctestServer runs a Server on a memNet inside a synctest bubble.
func synctestServer(t *testing.T, cfg Config) (*Server, *memNet, *memConn, func()) {
	mn := newMemNet()
	l := mn.listen("10.0.0.1", 69)
	cfg.ListenTransfer = func(net.Addr) (net.PacketConn, error) { return mn.listen("10.0.0.1", 0), nil }
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background(), l) }()
	return s, mn, l, func() {
		if err := s.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

// TestRetransmissionBackoff: an unanswered DATA is sent again after 1, 2,
// 4, 8 and 10 s (doubling, capped at 10 s), then the transfer is abandoned
// with ERROR 0 after Retries attempts.
func TestRetransmissionBackoff(t *testing.T) {
	for _, tt := range []struct {
		name       string
		options    []Option
		maxTimeout time.Duration
		want       []time.Duration // arrival times of DATA 1 (or OACK), then the ERROR
	}{
		{"default", nil, 0, []time.Duration{0, 1, 3, 7, 15, 25, 35}},
		{"negotiated timeout 3s", opts("timeout", "3"), 0, []time.Duration{0, 3, 9, 19, 29, 39, 49}},
		{"negotiated timeout 20s under a raised cap", opts("timeout", "20"), 20 * time.Second,
			[]time.Duration{0, 20, 40, 60, 80, 100, 120}},
		// The attack of issue 13: timeout=255 and no ACK held a slot for
		// 6 x 255 s. Above the cap the option is ignored (OACK without it)
		// and the server's own schedule frees the slot after 35 s.
		{"timeout 255 ignored", opts("timeout", "255", "tsize", "0"), 0, []time.Duration{0, 1, 3, 7, 15, 25, 35}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var info TransferInfo
				s, mn, l, stop := synctestServer(t, Config{
					FS:         fstest.MapFS{"f": {Data: make([]byte, 1000)}},
					MaxTimeout: tt.maxTimeout,
					OnTransfer: func(ti TransferInfo) { info = ti },
				})
				defer stop()
				c := mn.listen("10.0.0.2", 5000)
				start := time.Now()
				c.WriteTo((&Request{Op: OpRRQ, Filename: "f", Mode: "octet", Options: tt.options}).AppendBinary(nil), l.addr)
				var got []time.Duration
				buf := make([]byte, 2048)
				for {
					n, _, err := c.ReadFrom(buf)
					if err != nil {
						t.Fatal(err)
					}
					if op, _ := PeekOpcode(buf[:n]); op == OpOACK && len(got) == 0 {
						o, err := ParseOAck(buf[:n])
						if err != nil {
							t.Fatal(err)
						}
						for _, opt := range o.Options {
							if opt.Name == "timeout" && tt.maxTimeout == 0 && opt.Value != "3" {
								t.Errorf("OACK carries timeout %s above the cap", opt.Value)
							}
						}
					}
					got = append(got, time.Since(start)/time.Second)
					if op, _ := PeekOpcode(buf[:n]); op == OpERROR {
						break
					}
				}
				if len(got) != len(tt.want) {
					t.Fatalf("packets at %v s, want %v", got, tt.want)
				}
				for i := range got {
					if got[i] != tt.want[i] {
						t.Fatalf("packets at %v s, want %v", got, tt.want)
					}
				}
				synctest.Wait()
				st := s.Stats()
				if st.TimedOut != 1 || st.Retransmits != 5 || st.Active != 0 {
					t.Errorf("%+v", st)
				}
				if ignored := tt.name == "timeout 255 ignored"; (st.TimeoutIgnored == 1) != ignored {
					t.Errorf("TimeoutIgnored %d", st.TimeoutIgnored)
				}
				if !errors.Is(info.Err, ErrTimeout) || info.Retransmits != 5 {
					t.Errorf("info %+v", info)
				}
			})
		})
	}
}

// TestProgressResetsBackoff: each ACK that moves the window resets the
// retry count, so a slow but steady client is never abandoned.
func TestProgressResetsBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, mn, l, stop := synctestServer(t, Config{FS: fstest.MapFS{"f": {Data: make([]byte, 512*20)}}})
		defer stop()
		c := mn.listen("10.0.0.2", 5000)
		c.WriteTo((&Request{Op: OpRRQ, Filename: "f", Mode: "octet"}).AppendBinary(nil), l.addr)
		buf := make([]byte, 2048)
		var tid net.Addr
		for blk := 1; blk <= 21; blk++ {
			// Ignore the first three sends of each block: the client
			// answers only the fourth (after 1+2+4 = 7 s).
			for range 4 {
				_, from, err := c.ReadFrom(buf)
				if err != nil {
					t.Fatal(err)
				}
				d, err := ParseData(buf[:4])
				if err != nil || d.Block != uint16(blk) {
					t.Fatalf("block %d: %x %v", blk, buf[:4], err)
				}
				tid = from
			}
			c.WriteTo((&Ack{uint16(blk)}).AppendBinary(nil), tid)
		}
		synctest.Wait()
		if st := s.Stats(); st.Completed != 1 || st.Retransmits != 21*3 {
			t.Errorf("%+v", st)
		}
	})
}

// TestShutdownUnderSynctest: Shutdown's deadline ends a stalled transfer
// at that moment, not at its next retransmission.
func TestShutdownUnderSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := newMemNet()
		l := mn.listen("10.0.0.1", 69)
		s, _ := New(Config{
			FS:             fstest.MapFS{"f": {Data: make([]byte, 5000)}},
			Timeout:        time.Hour,
			ListenTransfer: func(net.Addr) (net.PacketConn, error) { return mn.listen("10.0.0.1", 0), nil },
		})
		go s.Serve(context.Background(), l)
		c := mn.listen("10.0.0.2", 5000)
		c.WriteTo((&Request{Op: OpRRQ, Filename: "f", Mode: "octet", Options: opts("windowsize", strconv.Itoa(4))}).AppendBinary(nil), l.addr)
		synctest.Wait()
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 2*time.Second {
			t.Errorf("Shutdown took %v", d)
		}
	})
}
