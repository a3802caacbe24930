package ra

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"golang.org/x/net/ipv6"
)

// DefaultMinInterval is the default shortest time between two
// advertisements. RFC 4861 6.2.6 asks routers for 3 s between multicast
// answers (MIN_DELAY_BETWEEN_RAS) so that hosts are not flooded with state
// changes; this RA changes no state, and a booting client that solicits
// just after another must not wait 3 s, so the default is shorter. A
// solicitation inside the interval is answered when it ends, coalesced with
// every other one: whatever clients send, at most one RA per interval leaves.
const DefaultMinInterval = 200 * time.Millisecond

// allNodes is where answers go (RFC 4861 6.2.6 allows a unicast answer; the
// all-nodes group needs no neighbour resolution and reaches every PXE stack,
// whose receive filters all accept it).
var allNodes = net.ParseIP("ff02::1")

// Config configures a Server.
type Config struct {
	// Interface is the only interface answered on. Required; Listen binds
	// the socket to it and Serve drops what arrives on any other.
	Interface string
	// HardwareAddr is sent as the RA's Source Link-Layer Address option
	// (default: Interface's address).
	HardwareAddr net.HardwareAddr
	// MinInterval is the shortest time between two advertisements
	// (default DefaultMinInterval).
	MinInterval time.Duration
	// Logger receives the logs (default: discard).
	Logger *slog.Logger
}

// Server answers Router Solicitations on one interface. It is safe for
// concurrent use.
type Server struct {
	cfg     Config
	ifIndex int
	log     *slog.Logger
	ra      []byte

	mu       sync.Mutex
	conn     packetConn
	next     time.Time   // earliest time the next RA may leave
	pending  *time.Timer // a coalesced answer waiting for next
	warnNext time.Time   // send errors are logged at most every 10 s
	closed   bool
	stats    Stats

	done     chan struct{}
	shutOnce sync.Once
}

// Stats counts what the server saw and did.
type Stats struct {
	Solicitations uint64 // valid Router Solicitations received
	Dropped       uint64 // malformed, wrong hop limit or wrong interface
	Sent          uint64 // advertisements sent
	SendErrors    uint64
}

// packetConn is the part of *ipv6.PacketConn the server uses (tests fake it).
type packetConn interface {
	ReadFrom(b []byte) (int, *ipv6.ControlMessage, net.Addr, error)
	WriteTo(b []byte, cm *ipv6.ControlMessage, dst net.Addr) (int, error)
	Close() error
}

// New checks cfg and looks up the interface.
func New(cfg Config) (*Server, error) {
	if cfg.Interface == "" {
		return nil, errors.New("ra: no interface")
	}
	ifi, err := net.InterfaceByName(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("ra: %w", err)
	}
	return newServer(cfg, ifi.Index, ifi.HardwareAddr), nil
}

func newServer(cfg Config, ifIndex int, hw net.HardwareAddr) *Server {
	if cfg.HardwareAddr == nil {
		cfg.HardwareAddr = hw
	}
	if cfg.MinInterval <= 0 {
		cfg.MinInterval = DefaultMinInterval
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// No prefix, no flags, lifetime 0: the host learns that a router
	// answered and configures nothing (RFC 4861 6.3.4).
	msg := RouterAdvertisement{SourceLinkAddr: cfg.HardwareAddr}
	return &Server{cfg: cfg, ifIndex: ifIndex, log: log, ra: msg.AppendBinary(nil), done: make(chan struct{})}
}

// Listen opens a raw ICMPv6 socket bound to iface (SO_BINDTODEVICE) that
// receives only Router Solicitations sent to the all-routers group, with
// the hop limit and interface of each, and sends with hop limit 255 (RFC
// 4861 6.1.2: hosts drop NDP messages with any other). It needs
// CAP_NET_RAW.
func Listen(iface string) (*ipv6.PacketConn, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("ra: %w", err)
	}
	c, err := listenRaw(iface)
	if err != nil {
		return nil, fmt.Errorf("ra: listen on %s: %w", iface, err)
	}
	p := ipv6.NewPacketConn(c)
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeRouterSolicitation)
	steps := []func() error{
		func() error { return p.SetICMPFilter(&f) },
		func() error { return p.SetControlMessage(ipv6.FlagHopLimit|ipv6.FlagInterface, true) },
		func() error { return p.SetMulticastHopLimit(255) },
		func() error { return p.SetHopLimit(255) },
		func() error { return p.SetMulticastInterface(ifi) },
		func() error { return p.SetMulticastLoopback(false) },
		func() error { return p.JoinGroup(ifi, &net.IPAddr{IP: net.ParseIP("ff02::2")}) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			p.Close()
			return nil, fmt.Errorf("ra: set up socket on %s: %w", iface, err)
		}
	}
	return p, nil
}

// Serve answers solicitations from conn (see Listen) until ctx is done,
// Shutdown is called or conn fails, and closes conn.
func (s *Server) Serve(ctx context.Context, conn *ipv6.PacketConn) error {
	return s.serve(ctx, conn)
}

func (s *Server) serve(ctx context.Context, conn packetConn) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		conn.Close()
		return nil
	}
	s.conn = conn
	s.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { s.Shutdown(context.Background()) })
	defer stop()
	s.log.Info("ra: answering IPv6 router solicitations", "interface", s.cfg.Interface)
	buf := make([]byte, 1500)
	for {
		n, cm, src, err := conn.ReadFrom(buf)
		if err != nil {
			select {
			case <-s.done:
				return nil
			default:
			}
			s.Shutdown(context.Background())
			return fmt.Errorf("ra: read: %w", err)
		}
		s.handle(buf[:n], cm, src)
	}
}

// handle checks one solicitation (RFC 4861 6.1.1) and answers it, now or
// at the end of the current interval.
func (s *Server) handle(b []byte, cm *ipv6.ControlMessage, src net.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cm == nil || cm.HopLimit != 255 || cm.IfIndex != s.ifIndex {
		// A hop limit below 255 means it was routed here: not from this link.
		s.stats.Dropped++
		return
	}
	rs, err := ParseRouterSolicitation(b)
	if err != nil {
		s.stats.Dropped++
		return
	}
	// From the unspecified address there must be no link-layer option.
	if a, ok := src.(*net.IPAddr); ok && a.IP.IsUnspecified() && rs.SourceLinkAddr != nil {
		s.stats.Dropped++
		return
	}
	s.stats.Solicitations++
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		// Solicitations are not rate-limited: format only when logged.
		s.log.Debug("ra: router solicitation", "ip", addrString(src), "mac", rs.SourceLinkAddr.String())
	}
	if s.closed || s.pending != nil {
		return // the pending answer covers this one too
	}
	now := time.Now()
	if wait := s.next.Sub(now); wait > 0 {
		s.pending = time.AfterFunc(wait, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.pending = nil
			if !s.closed {
				s.sendLocked(time.Now())
			}
		})
		return
	}
	s.sendLocked(now)
}

func (s *Server) sendLocked(now time.Time) {
	s.next = now.Add(s.cfg.MinInterval)
	dst := &net.IPAddr{IP: allNodes, Zone: s.cfg.Interface}
	_, err := s.conn.WriteTo(s.ra, &ipv6.ControlMessage{HopLimit: 255, IfIndex: s.ifIndex}, dst)
	if err != nil {
		s.stats.SendErrors++
		// E.g. EADDRNOTAVAIL while the interface's link-local address is
		// still tentative (duplicate address detection).
		if now.After(s.warnNext) {
			s.warnNext = now.Add(10 * time.Second)
			s.log.Warn("ra: cannot send router advertisement", "interface", s.cfg.Interface, "err", err)
		}
		return
	}
	s.stats.Sent++
}

// Shutdown stops Serve and any pending answer. It is idempotent.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		if s.pending != nil {
			s.pending.Stop()
			s.pending = nil
		}
		conn := s.conn
		close(s.done)
		s.mu.Unlock()
		if conn != nil {
			conn.Close()
		}
	})
	return nil
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
