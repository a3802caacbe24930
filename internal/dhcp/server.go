package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/diskless-boot/diskless/internal/ratelog"
)

// Well-known ports (RFC 2131 4.1, PXE 2.1 2.2.7).
const (
	ServerPort = 67
	ClientPort = 68
	PXEPort    = 4011
)

// maxPacket is the largest datagram read. DHCP messages are at most 576
// bytes unless a client raises it with option 57, bounded by the MTU;
// anything longer is cut and fails to decode.
const maxPacket = 4096

// Server is a DHCPv4 server for network boot. It is safe for concurrent
// use; Serve may run on several sockets at once.
type Server struct {
	cfg    Config
	log    *slog.Logger
	leases *leaseDB // full mode only
	now    func() time.Time
	stats  counters
	shed   atomic.Uint64 // packets dropped unread: workers saturated
	// Host names of known machines without a reservation (SetHostnames),
	// read on every reply.
	hostnames atomic.Pointer[map[hwaddr]string]
	warnL     *ratelog.Limiter
	infoL     *ratelog.Limiter
	commit    committer

	// Destinations of replies; tests on loopback move them.
	bcast      netip.Addr
	clientPort uint16
	serverPort uint16

	mu       sync.Mutex
	conns    map[net.PacketConn]struct{}
	closing  bool
	wg       sync.WaitGroup
	shutOnce sync.Once
}

// NewServer checks cfg and, in full mode, loads the lease file.
func NewServer(cfg Config) (*Server, error) {
	c, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:        c,
		log:        c.Logger,
		now:        time.Now,
		warnL:      ratelog.New(100*time.Millisecond, 50),
		infoL:      ratelog.New(5*time.Millisecond, 1000),
		bcast:      netip.AddrFrom4([4]byte{255, 255, 255, 255}),
		clientPort: ClientPort,
		serverPort: ServerPort,
		conns:      map[net.PacketConn]struct{}{},
	}
	if c.Mode == ModeFull {
		s.leases = newLeaseDB(&s.cfg)
		dropped, err := s.leases.load(s.now(), false)
		if err != nil {
			return nil, err
		}
		for _, d := range dropped {
			s.log.Warn("dhcp: lease dropped on load", "op", "load", "err", d)
		}
	}
	return s, nil
}

// ReloadLeases replaces the server's leases with those of
// Config.LeaseStore (full mode): a cluster's server that starts answering
// takes over the leases the last one gave, which are newer than anything
// it knew as a standby. An unreadable record leaves the server's leases as
// they were and returns the error.
func (s *Server) ReloadLeases() error {
	if s.leases == nil {
		return nil
	}
	dropped, err := s.leases.load(s.now(), true)
	for _, d := range dropped {
		s.log.Warn("dhcp: lease dropped on load", "op", "load", "err", d)
	}
	return err
}

// Stats returns the packet counters.
func (s *Server) Stats() Stats {
	st := s.stats.snapshot()
	if s.leases != nil {
		st.LeaseWrites = s.leases.writes.Load()
	}
	st.Shed = s.shed.Load()
	return st
}

// Serve answers DHCP on conn, the server port (67) socket, until ctx ends,
// Shutdown is called or conn fails. conn must be bound to Config.Interface
// (see Listen). Serve closes conn when it returns.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	return s.serve(ctx, conn, false)
}

// ServePXE answers boot server requests on conn, the PXE port (4011)
// socket (PXE 2.1 2.2.7), like Serve.
func (s *Server) ServePXE(ctx context.Context, conn net.PacketConn) error {
	return s.serve(ctx, conn, true)
}

// ListenAndServe opens the server port, and in proxy mode the PXE port, on
// Config.Interface and serves them until ctx ends or Shutdown.
func (s *Server) ListenAndServe(ctx context.Context) error {
	if err := checkInterfaceAddr(s.cfg.Interface, s.cfg.ServerIP); err != nil {
		return err
	}
	ports := []int{ServerPort}
	if s.cfg.Mode == ModeProxy {
		ports = append(ports, PXEPort)
	}
	var conns []net.PacketConn
	for _, p := range ports {
		c, err := Listen(s.cfg.Interface, p)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return err
		}
		conns = append(conns, c)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(conns))
	for i, c := range conns {
		go func() {
			err := s.serve(ctx, c, ports[i] == PXEPort)
			cancel()
			errs <- err
		}()
	}
	var first error
	for range conns {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// packet is one received datagram in a fixed buffer.
type packet struct {
	buf [maxPacket]byte
	n   int
	src net.Addr
}

func (s *Server) serve(ctx context.Context, conn net.PacketConn, pxePort bool) error {
	if dev, err := boundDevice(conn); err != nil {
		conn.Close()
		return fmt.Errorf("dhcp: serve: %w", err)
	} else if dev != s.cfg.Interface {
		conn.Close()
		return fmt.Errorf("dhcp: serve: socket bound to %q, not to served interface %q", dev, s.cfg.Interface)
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		conn.Close()
		return net.ErrClosed
	}
	s.conns[conn] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
		s.wg.Done()
	}()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	port := "67"
	if pxePort {
		port = "4011"
	}
	s.log.Info("dhcp: serving", "op", "listen", "mode", string(s.cfg.Mode), "interface", s.cfg.Interface, "port", port)

	// A fixed set of buffers circulates between the read loop and the
	// workers. In proxy mode, when all are busy the read loop waits and
	// the kernel's socket buffer absorbs or drops the excess. In full mode
	// that would let a flood of made-up MACs fill the kernel's buffer and
	// drop or delay the packets of the machines the server knows; so the
	// read loop never waits there: it sorts packets by client (see
	// sortPacket), the workers take those of known clients first, and a
	// packet of an unknown client that finds its queue full is dropped.
	nbuf := 2 * s.cfg.Workers
	sorting := s.leases != nil
	var prio chan *packet // known clients' packets, full mode only
	if sorting {
		nbuf = shedQueue
		prio = make(chan *packet, priorityQueue)
	}
	work := make(chan *packet, nbuf)
	// Every buffer is in free, in a queue, in a worker or in the read
	// loop: with this many the read loop never waits for one when sorting.
	total := s.cfg.Workers + nbuf + cap(prio) + 1
	free := make(chan *packet, total)
	for range total {
		free <- new(packet)
	}
	var wg sync.WaitGroup
	for range s.cfg.Workers {
		wg.Go(func() {
			for {
				p, ok := next(prio, work)
				if !ok {
					return
				}
				s.process(conn, p, pxePort)
				free <- p
			}
		})
	}
	defer func() {
		if prio != nil {
			close(prio)
		}
		close(work)
		wg.Wait()
		conn.Close()
	}()

	for {
		p := <-free
		n, src, err := conn.ReadFrom(p.buf[:])
		if err != nil {
			free <- p
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing || ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("dhcp: read: %w", err)
		}
		if s.cfg.Answering != nil && !s.cfg.Answering() {
			free <- p // a standby server of a cluster: another one answers
			continue
		}
		p.n, p.src = n, src
		if !sorting {
			work <- p
			continue
		}
		q := work
		if s.known(p.buf[:n]) {
			q = prio
		}
		select {
		case q <- p:
		default:
			free <- p
			s.shed.Add(1)
			s.warn("dhcp: workers saturated, packets dropped", "op", "read", "shed", s.shed.Load())
		}
	}
}

// Queues of the read loop in full mode. A worker handles tens of
// thousands of packets a second, so 256 waiting packets of unknown
// clients are a few milliseconds of work: more is a flood, not a boot
// storm (new clients are limited to NewLeasesPerSecond anyway).
const (
	shedQueue     = 256
	priorityQueue = 256
)

// next takes a packet for a worker, from prio first; ok is false once
// both queues are closed and drained. prio may be nil.
func next(prio, work chan *packet) (*packet, bool) {
	for prio != nil || work != nil {
		select {
		case p, ok := <-prio:
			if ok {
				return p, true
			}
			prio = nil
			continue
		default:
		}
		select {
		case p, ok := <-prio:
			if !ok {
				prio = nil
				continue
			}
			return p, true
		case p, ok := <-work:
			if !ok {
				work = nil
				continue
			}
			return p, true
		}
	}
	return nil, false
}

// known reports, from the fixed header alone, a request of a client with
// a reservation, a lease or an offer held (RFC 2131 section 2: op 1 is a
// request, htype 1 and hlen 6 Ethernet, chaddr at offset 28). Anything
// else - other clients, undecodable packets - waits in the shed queue.
func (s *Server) known(b []byte) bool {
	if len(b) < 34 || b[0] != 1 || b[1] != 1 || b[2] != 6 {
		return false
	}
	return s.leases.known(hwaddr(b[28:34]), s.now())
}

// process handles one datagram and sends the reply, if any. A panic is
// counted and logged, never fatal.
func (s *Server) process(conn net.PacketConn, p *packet, pxePort bool) {
	kind := kindInvalid
	defer func() {
		if r := recover(); r != nil {
			s.stats.panics.Add(1)
			s.stats.add(kind, outError)
			s.errorf("dhcp: handler panic", "err", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
	}()
	src, _ := p.src.(*net.UDPAddr)
	var from netip.AddrPort
	if src != nil {
		from = src.AddrPort()
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	}
	r := s.answer(p.buf[:p.n], from, pxePort)
	kind = r.kind
	if r.gen != 0 {
		s.commitLater(conn, r) // sent and counted once the lease file holds it
		return
	}
	if r.reply != nil {
		r = s.send(conn, r)
	}
	s.stats.add(r.kind, r.out)
}

// send sends r's reply; a failure makes its outcome an error.
func (s *Server) send(conn net.PacketConn, r result) result {
	dst := net.UDPAddrFromAddrPort(r.dst)
	if _, err := conn.WriteTo(r.reply, dst); err != nil {
		r.out = outError
		s.warn("dhcp: send failed", "op", r.op, "mac", r.mac, "ip", r.dst.Addr().String(), "err", err)
		return r
	}
	if r.note != nil {
		s.cfg.OnReply(*r.note)
	}
	return r
}

// Shutdown stops every Serve and waits for them, or for ctx. Pending lease
// writes finish first. It is idempotent.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutOnce.Do(func() {
		s.mu.Lock()
		s.closing = true
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		if s.leases != nil {
			if err := s.leases.sync(s.leases.currentGen(), s.now); err != nil {
				s.log.Error("dhcp: final lease write", "op", "shutdown", "err", err)
			}
		}
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// warn logs client-triggered trouble, rate-limited.
func (s *Server) warn(msg string, args ...any) { s.limited(s.warnL, slog.LevelWarn, msg, args...) }

// errorf logs our own failures that clients can set off packet after
// packet (a failing lease file, a handler bug), rate-limited.
func (s *Server) errorf(msg string, args ...any) { s.limited(s.warnL, slog.LevelError, msg, args...) }

// info logs per-client progress (offer, ack), rate-limited against floods.
func (s *Server) info(msg string, args ...any) { s.limited(s.infoL, slog.LevelInfo, msg, args...) }

func (s *Server) limited(l *ratelog.Limiter, level slog.Level, msg string, args ...any) {
	if !s.log.Enabled(context.Background(), level) {
		return
	}
	ok, suppressed := l.Allow()
	if !ok {
		return
	}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	s.log.Log(context.Background(), level, msg, args...)
}
