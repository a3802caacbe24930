// Package iscsi is the iSCSI target of diskless (RFC 7143): login with
// CHAP, parameter negotiation, discovery, sessions with their CmdSN window,
// Data-In/Data-Out/R2T flow, task management and logout. It moves SCSI
// commands between the wire and internal/scsi; it knows nothing of how
// commands execute or where blocks live.
//
// Only ErrorRecoveryLevel 0 is implemented: any connection error ends the
// session, and the initiator recovers by logging in again (session
// reinstatement), as iPXE, GRUB via iPXE, and the initramfs all do.
package iscsi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/diskless-boot/diskless/internal/ratelog"
	"github.com/diskless-boot/diskless/internal/scsi"
)

// Config is the configuration of a Server. The zero value is usable, and
// safe on a LAN where anyone can plug in: every bound below is on by
// default. Durations that can be turned off say so (a negative value).
type Config struct {
	// PortalGroupTag is the TargetPortalGroupTag of every portal (default 1).
	// It must match what initiators are configured with (the initramfs'
	// ISCSI_TARGET_GROUP).
	PortalGroupTag uint16
	// Limits bound what the target accepts in negotiation (default DefaultLimits()).
	Limits *Limits
	// QueueDepth is the CmdSN window: how many commands a session may have
	// outstanding (default 64).
	QueueDepth int

	// The data buffers of commands in flight are shared so that no session
	// and no target can take what another host needs to boot (SAM-5 5.3:
	// a command that does not fit gets TASK SET FULL and is retried):
	//
	//   - SessionMemory bounds one session (default 256 MiB);
	//   - TargetMemory bounds all sessions of one target, i.e. one host
	//     (default 512 MiB);
	//   - TotalMemory bounds all sessions together (default 1 GiB);
	//   - the last ReservedMemory of TotalMemory (default 256 MiB) only
	//     goes to targets that hold at most ReservedMemoryPerTarget
	//     (default 16 MiB, one largest command) once the command is
	//     counted: however many sessions of a few hosts hold buffers (WRITEs
	//     whose Data-Out never comes), ReservedMemory/ReservedMemoryPerTarget
	//     other hosts still get theirs. A negative ReservedMemory turns the
	//     reserve off.
	SessionMemory           int64
	TargetMemory            int64
	TotalMemory             int64
	ReservedMemory          int64
	ReservedMemoryPerTarget int64

	// MaxConnections bounds concurrent connections, logged in or not
	// (default 1024). When it is reached, a new connection takes the
	// place of one not logged in to a normal session yet (a login under
	// way or a discovery session) from the source that has the most of
	// those, the oldest first; when every connection is a normal session
	// it is closed at once.
	MaxConnections int
	// MaxConnectionsPerSource bounds the connections from one source
	// address, an IPv6 /64 counting as one (default 32); more are closed
	// at once.
	MaxConnectionsPerSource int
	// MaxTransferLength caps the ExpectedDataTransferLength of one command
	// (default 16 MiB); larger commands fail with INVALID FIELD IN CDB.
	MaxTransferLength uint32

	// LoginTimeout bounds the whole login phase, however the PDUs trickle
	// in (default 30 s).
	LoginTimeout time.Duration
	// DiscoveryTimeout bounds a discovery session from its login to its
	// end, idle or not (default 60 s; negative: no bound). Initiators log
	// in, ask SendTargets and log out within a second; one that comes
	// back later logs in again.
	DiscoveryTimeout time.Duration
	// FirstCommandTimeout closes a normal session that has sent no SCSI
	// command this long after its login (default 2 min; negative: never).
	// Every initiator that boots or mounts a disk sends its first
	// commands (INQUIRY, READ CAPACITY) right after login; a session that
	// sends none only holds a connection slot.
	FirstCommandTimeout time.Duration
	// DataOutTimeout bounds how long commands may wait for the initiator:
	// when a command waits for its Data-Out (solicited by R2T or
	// unsolicited) and no Data-Out arrives on the connection for this
	// long, or waits for a command before it in CmdSN order and ExpCmdSN
	// does not move for this long, the connection is closed, freeing the
	// commands' buffers (default 30 s; negative: no bound). Other
	// commands do not count: they cannot keep a buffer pinned. At ErrorRecoveryLevel 0 a command cannot be recovered
	// within the connection (RFC 7143 7.1.4.1 and 7.1.5: recovery R2T
	// needs level 1); the initiator recovers by logging in again.
	DataOutTimeout time.Duration

	// ProvenNOPInterval pings, with NOP-In (RFC 7143 11.19), connections
	// idle this long whose initiator has shown it handles NOPs by sending
	// a NOP-Out ping of its own, and drops them when the ping goes
	// unanswered for another interval (default 30 s; negative: never).
	// open-iscsi (the Linux initiator, in the initramfs too) pings every
	// 5 s of idleness and answers pings; QEMU's libiscsi does both too.
	// iPXE never sends a NOP-Out and never answers a NOP-In ping
	// (src/net/tcp/iscsi.c, iscsi_rx_nop_in), and while GRUB or an OS
	// loader sits at a menu nothing in iPXE reads the socket at all:
	// pinging it would kill the boot. Its idle sessions are left to TCP
	// keepalive, FirstCommandTimeout and the connection limits.
	ProvenNOPInterval time.Duration
	// NOPInterval, when positive, pings every idle connection with NOP-In
	// and drops those that do not answer within another interval, iPXE's
	// included. Off by default: for sites whose initiators all answer.
	NOPInterval time.Duration
	// WriteTimeout bounds each write to a connection (default 60 s).
	WriteTimeout time.Duration
	// SendfileMin is the smallest READ whose data goes to the socket with
	// sendfile(2) straight from the disk's file (when the disk can hand
	// out a file range and data digests are off); smaller ones are copied
	// into the response's one writev, which saves sendfile's syscall per
	// PDU (default 64 KiB; negative: never sendfile, always copy).
	SendfileMin int
	// TraceDir, when set, is where every host's READs and WRITEs are
	// recorded, a file per target and boot (trace.go, package iotrace):
	// a debugging and benchmarking aid, off by default ("").
	TraceDir string
	// TraceLinger is how long a target's trace stays open after its last
	// session ended, for the next session of the same boot (default 30 s).
	TraceLinger time.Duration

	// Logger receives the target's logs (default: discard). Every line a
	// client can trigger is rate limited: a line of each kind at most
	// every few seconds, carrying how many were held back.
	Logger *slog.Logger
	// OnLogin, when set, is called after each normal session's login
	// completes, so the application can tie the session to what it knows
	// of the initiator (e.g. the host a boot belongs to).
	OnLogin func(LoginEvent)
	// Admit, when set, is asked before a normal session's login
	// completes, once the initiator proved who it is: an error refuses the
	// login with "service unavailable" (RFC 7143 11.13.5, status 0x0301),
	// which initiators retry. The application opens the target's disk
	// here when it opens disks on demand (a disk shared by several
	// servers, locked by the one serving it).
	Admit func(target, initiator string) error
	// OnLoginFailed, when set, is called when a login to a normal
	// session fails after the initiator named its target: refused CHAP,
	// a mutual CHAP answer the initiator rejected, a protocol error, the
	// connection lost. It runs on the connection's goroutine.
	OnLoginFailed func(LoginFailure)
}

// LoginFailure describes a failed login of a normal session.
type LoginFailure struct {
	Initiator string
	ISID      uint64
	Target    string
	Remote    net.Addr
	// Auth: the failure is authentication's (CHAP refused either way).
	Auth bool
	Err  error
}

// LoginEvent describes a completed login of a normal session.
type LoginEvent struct {
	Initiator string // InitiatorName
	ISID      uint64
	TSIH      uint16
	Target    string // TargetName
	Remote    net.Addr
}

// Defaults returns the Config that New fills a zero Config with, for
// callers that start from the documented defaults and change a few.
func Defaults() Config {
	var c Config
	return c.withDefaults()
}

func (c *Config) withDefaults() Config {
	d := *c
	if d.PortalGroupTag == 0 {
		d.PortalGroupTag = 1
	}
	if d.Limits == nil {
		l := DefaultLimits()
		d.Limits = &l
	}
	if d.QueueDepth <= 0 {
		d.QueueDepth = 64
	}
	if d.TraceLinger <= 0 {
		d.TraceLinger = 30 * time.Second
	}
	if d.SessionMemory <= 0 {
		d.SessionMemory = 256 << 20
	}
	if d.TargetMemory <= 0 {
		d.TargetMemory = 512 << 20
	}
	if d.TotalMemory <= 0 {
		d.TotalMemory = 1 << 30
	}
	if d.ReservedMemory == 0 {
		d.ReservedMemory = 256 << 20
	}
	// The reserve is part of the total and never all of it. Negative
	// (off) stays negative, so that resolving twice changes nothing.
	d.ReservedMemory = min(d.ReservedMemory, d.TotalMemory/2)
	if d.ReservedMemoryPerTarget <= 0 {
		d.ReservedMemoryPerTarget = 16 << 20
	}
	d.ReservedMemoryPerTarget = min(d.ReservedMemoryPerTarget, max(d.ReservedMemory, 1))
	if d.MaxConnections <= 0 {
		d.MaxConnections = 1024
	}
	if d.MaxConnectionsPerSource <= 0 {
		d.MaxConnectionsPerSource = 32
	}
	if d.MaxTransferLength == 0 {
		d.MaxTransferLength = 16 << 20
	}
	if d.LoginTimeout <= 0 {
		d.LoginTimeout = 30 * time.Second
	}
	d.DiscoveryTimeout = orDefault(d.DiscoveryTimeout, 60*time.Second)
	d.FirstCommandTimeout = orDefault(d.FirstCommandTimeout, 2*time.Minute)
	d.DataOutTimeout = orDefault(d.DataOutTimeout, 30*time.Second)
	d.ProvenNOPInterval = orDefault(d.ProvenNOPInterval, 30*time.Second)
	if d.SendfileMin == 0 {
		d.SendfileMin = DefaultSendfileMin
	}
	if d.WriteTimeout <= 0 {
		d.WriteTimeout = 60 * time.Second
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	return d
}

// orDefault gives a bound that can be turned off its default: zero means
// the default, negative means off and stays negative, so that resolving a
// resolved Config changes nothing. Users test for > 0.
func orDefault(v, def time.Duration) time.Duration {
	if v == 0 {
		return def
	}
	return v
}

// Target is one iSCSI target node exported by the Server.
type Target struct {
	Name  string // iSCSI qualified name, e.g. iqn.2026-11.org.example:disk1
	Alias string // optional TargetAlias
	SCSI  *scsi.Target
	// CHAP, when set, requires initiators to authenticate with these
	// credentials.
	CHAP *Credentials
	// MutualCHAP, when set, are the credentials the target answers the
	// initiator's challenge with (mutual CHAP). Requires CHAP.
	MutualCHAP *Credentials
	// AllowedInitiators, when not empty, lists the only initiator names
	// that may log in or discover this target.
	AllowedInitiators []string
}

func (t *Target) allows(initiator string) bool {
	return len(t.AllowedInitiators) == 0 || slices.Contains(t.AllowedInitiators, initiator)
}

// Server is an iSCSI target server. It is safe for concurrent use.
type Server struct {
	cfg Config
	log *slog.Logger
	// warn and info rate-limit the lines clients can trigger: warnings
	// (refusals, timeouts, protocol errors) at most one per kind every
	// few seconds, state changes (login, logout) with room for a room
	// full of machines booting at once.
	warn, info *ratelog.Logger

	mu        sync.Mutex
	targets   map[string]*Target
	sessions  map[sessionKey]*session
	nextTSIH  uint16
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	sources   map[netip.Prefix]*source
	closing   bool

	wg           sync.WaitGroup
	shutdownOnce sync.Once

	traceMu sync.Mutex
	traces  map[string]*traceFile // by target name, while Config.TraceDir is set
	stats   counters
	mem     memBudget
	// cmdStats are the command counters of each target, by name (under
	// mu; the counters themselves are atomic).
	cmdStats map[string]*cmdCounters
}

// sessionKey identifies a session by its I_T nexus (RFC 7143 4.4.3).
type sessionKey struct {
	initiator string
	isid      uint64
	target    string
}

// New returns a Server with no targets.
func New(cfg Config) *Server {
	c := cfg.withDefaults()
	return &Server{
		cfg:       c,
		log:       c.Logger,
		targets:   make(map[string]*Target),
		sessions:  make(map[sessionKey]*session),
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
		sources:   make(map[netip.Prefix]*source),
		warn:      ratelog.NewLogger(5*time.Second, 1),
		info:      ratelog.NewLogger(100*time.Millisecond, 100),
		mem:       memBudget{byTarget: make(map[string]*atomic.Int64)},
		cmdStats:  make(map[string]*cmdCounters),
	}
}

// AddTarget exports t. Names are unique.
func (s *Server) AddTarget(t *Target) error {
	if t.Name == "" || t.SCSI == nil {
		return errors.New("iscsi: target needs a name and a SCSI target")
	}
	if t.MutualCHAP != nil && t.CHAP == nil {
		return fmt.Errorf("iscsi: target %s: mutual CHAP needs CHAP", t.Name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.targets[t.Name]; ok {
		return fmt.Errorf("iscsi: target %s already exists", t.Name)
	}
	s.targets[t.Name] = t
	// PERSISTENT RESERVE OUT / PREEMPT AND ABORT ends the preempted
	// nexuses' tasks on the LU (SPC-4 5.12.11.2.6); they live here.
	t.SCSI.SetAbortTasks(func(lun uint64, victims []scsi.Nexus) {
		for _, ss := range s.targetSessions(t) {
			if slices.Contains(victims, ss.nexus) {
				ss.conn.abortTasks(lun, false)
			}
		}
	})
	return nil
}

// RemoveTarget stops exporting the named target and drops its sessions.
func (s *Server) RemoveTarget(name string) error {
	s.mu.Lock()
	if _, ok := s.targets[name]; !ok {
		s.mu.Unlock()
		return fmt.Errorf("iscsi: no target %s", name)
	}
	delete(s.targets, name)
	delete(s.cmdStats, name)
	s.mu.Unlock()
	s.mem.forget(name)
	s.DropSessions(name, "target removed")
	return nil
}

func (s *Server) target(name string) *Target {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.targets[name]
}

// Serve accepts connections on l until Shutdown is called or l fails.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return net.ErrClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	s.log.Info("iscsi target listening", "addr", l.Addr().String())
	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing || ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		c, victim, refused := s.admit(nc)
		if refused != "" {
			nc.Close()
			continue
		}
		if c == nil { // shutting down
			nc.Close()
			return nil
		}
		if victim != nil {
			victim.abort(errEvicted)
		}
		go func() {
			defer s.wg.Done()
			c.serve()
			s.mu.Lock()
			s.untrackLocked(c)
			s.mu.Unlock()
		}()
	}
}

// Shutdown stops accepting, closes every connection (their sessions end, as
// on connection loss) and waits for the connection goroutines, or for ctx.
// It is idempotent.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() {
		s.mu.Lock()
		s.closing = true
		for l := range s.listeners {
			l.Close()
		}
		for c := range s.conns {
			c.nc.Close()
		}
		s.mu.Unlock()
	})
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		s.closeTraces()
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Panics reports how many connection handlers recovered from a panic.
func (s *Server) Panics() int64 { return int64(s.stats.panics.Load()) }

// SessionCount reports the number of logged-in sessions.
func (s *Server) SessionCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}
