// Package tftp is the read-only TFTP server of diskless (RFC 1350) with
// option negotiation (RFC 2347): blksize (RFC 2348), timeout and tsize
// (RFC 2349) and windowsize (RFC 7440). It serves the iPXE binaries that
// PXE firmware chainloads.
//
// It owns the TFTP wire format (packet.go, pure), option negotiation and
// the transfer state machine. It does not decide which file a host boots
// (DHCP and boot do) and never writes: write requests are refused.
//
// Each transfer runs in its own goroutine on its own ephemeral UDP socket
// (its transfer ID, RFC 1350 section 4). Octet transfers read blocks by
// offset and buffer one packet; only streamed transfers (netascii) buffer
// their window, at most 256 KiB.
//
// No client can hold the server: transfers are bounded in total
// (Config.MaxTransfers) and per client address (MaxTransfersPerSource), a
// transfer that stops answering is abandoned after its retransmissions
// (at most about a minute, as the timeout option is capped by MaxTimeout),
// every transfer ends after MaxTransferTime, and when every slot is taken
// a transfer whose client never acknowledged anything gives its slot to a
// new request. A request that gets no slot is answered with an ERROR,
// counted by reason in Stats and logged (rate-limited).
package tftp

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/diskless-boot/diskless/internal/ratelog"
)

// DefaultDir is the directory served by default: where Debian's ipxe
// package installs undionly.kpxe, ipxe.efi and snponly.efi.
const DefaultDir = "/usr/lib/ipxe"

// Config configures a Server. The zero value serves DefaultDir.
type Config struct {
	// Dir is the directory served (default DefaultDir). It is opened with
	// os.OpenRoot, so no request reaches outside it: not by "..", not by an
	// absolute name, not by a symlink that points out of it.
	Dir string
	// FS, when set, is served instead of Dir. Names are still checked for
	// ".." and absolute paths, but keeping symlinks inside is FS's job:
	// (*os.Root).FS() does, os.DirFS does not.
	FS fs.FS
	// MaxTransfers bounds the transfers running at once (default 256).
	// When all are taken, a new request takes the slot of the oldest
	// transfer whose client has not acknowledged anything within Timeout
	// (a live client answers within a round trip); if there is none, it
	// is refused (see DropWhenBusy) and counted in Stats.Busy.
	MaxTransfers int
	// MaxTransfersPerSource bounds the transfers running at once for one
	// client IP address (default 8). A booting machine runs one or two (a
	// tsize probe, then the file), so one address cannot take the slots
	// every other machine needs. A request beyond it gets ERROR 0 "too
	// many transfers from your address" and is counted in
	// Stats.SourceBusy.
	MaxTransfersPerSource int
	// DropWhenBusy, when true, silently drops requests beyond MaxTransfers
	// so that the client retransmits its RRQ later (PXE ROMs and iPXE do).
	// By default such a request gets ERROR 0 "server busy", which the
	// client shows and most firmware treats as fatal for that boot. It
	// never applies to MaxTransfersPerSource.
	DropWhenBusy bool
	// Timeout is the first retransmission timeout when the client does not
	// negotiate one (default 1 s). It doubles after each unanswered
	// retransmission, up to 10 s or the negotiated timeout if longer.
	Timeout time.Duration
	// MaxTimeout is the largest timeout option (RFC 2349) accepted
	// (default 10 s; at most 255 s, the option's range). A client asking
	// for more gets an OACK without the option - RFC 2349 lets a server
	// ignore it but not lower it, and EDK2 fails a transfer whose OACK
	// changes it - and the server retransmits after Timeout. A transfer
	// that stops answering then holds its slot for at most
	// (Retries+1) x max(MaxTimeout, 10 s): 1 min by default.
	// Counted in Stats.TimeoutIgnored.
	MaxTimeout time.Duration
	// MaxTransferTime bounds the lifetime of a transfer (default 5 min,
	// for files of a few MB: iPXE is about 1 MB and takes well under a
	// second on a LAN). A transfer still running then is ended with ERROR
	// 0 and counted in Stats.Expired, so a client acknowledging just often
	// enough cannot hold a slot for ever. Raise it to serve large files
	// over slow links.
	MaxTransferTime time.Duration
	// Retries is how many times a packet is retransmitted before the
	// transfer is abandoned (default 5).
	Retries int
	// MaxBlockSize caps the negotiated blksize (default 1468: a DATA packet
	// then fills a 1500-byte Ethernet frame). Set it to the path MTU minus
	// 32 (IPv4 20, UDP 8, TFTP 4) when the link allows more; IP
	// fragmentation beyond it is what firmware handles worst.
	MaxBlockSize int
	// MaxWindowSize caps the negotiated windowsize (default and at most
	// MaxWindowSize, 64).
	MaxWindowSize int
	// ListenTransfer opens the socket of one transfer. local is the address
	// of the socket the request came in on. Default: a UDP socket on
	// local's IP with an ephemeral port, so replies leave from the address
	// the client sent its request to.
	ListenTransfer func(local net.Addr) (net.PacketConn, error)
	// Logger receives the server's logs (default: discard). Logs that
	// clients can trigger at will are rate-limited.
	Logger *slog.Logger
	// OnTransfer, when set, is called once per read request that was
	// answered (served, refused, busy, failed), when it ends. It runs on
	// the server's goroutines and must not block.
	OnTransfer func(TransferInfo)
}

func (c *Config) withDefaults() Config {
	d := *c
	if d.Dir == "" {
		d.Dir = DefaultDir
	}
	if d.MaxTransfers <= 0 {
		d.MaxTransfers = 256
	}
	if d.MaxTransfersPerSource <= 0 {
		d.MaxTransfersPerSource = 8
	}
	if d.MaxTimeout <= 0 {
		d.MaxTimeout = 10 * time.Second
	}
	d.MaxTimeout = min(d.MaxTimeout, 255*time.Second)
	if d.MaxTransferTime <= 0 {
		d.MaxTransferTime = 5 * time.Minute
	}
	if d.Timeout <= 0 {
		d.Timeout = time.Second
	}
	if d.Retries <= 0 {
		d.Retries = 5
	}
	if d.MaxBlockSize <= 0 {
		d.MaxBlockSize = 1468
	}
	d.MaxBlockSize = min(max(d.MaxBlockSize, DefaultBlockSize), MaxBlockSize)
	if d.MaxWindowSize <= 0 || d.MaxWindowSize > MaxWindowSize {
		d.MaxWindowSize = MaxWindowSize
	}
	if d.ListenTransfer == nil {
		d.ListenTransfer = listenTransfer
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	return d
}

// TransferInfo describes one read request and how it ended.
type TransferInfo struct {
	Client netip.AddrPort
	File   string // as requested
	Mode   string // as requested
	// BlockSize, WindowSize and Timeout are the values in use after
	// option negotiation; Timeout is the first retransmission timeout.
	BlockSize   int
	WindowSize  int
	Timeout     time.Duration
	Size        int64 // file size in bytes, -1 if not opened or unknown (netascii)
	Bytes       int64 // payload bytes the client acknowledged
	Retransmits int   // packets sent again after a timeout
	Start       time.Time
	Duration    time.Duration
	// Err is nil when the client acknowledged the last block. Otherwise it
	// is an *Error the server sent (refusal, busy), or wraps ErrTimeout,
	// ErrClientAbort (with the client's *Error), ErrPreempted, ErrExpired
	// or ErrShutdown.
	Err error
}

// Outcomes of a transfer that did not complete.
var (
	ErrTimeout     = errors.New("tftp: client stopped answering")
	ErrClientAbort = errors.New("tftp: client aborted the transfer")
	ErrShutdown    = errors.New("tftp: server shutting down")
	// ErrPreempted: the client had acknowledged nothing and its slot went
	// to a new request (Config.MaxTransfers).
	ErrPreempted = errors.New("tftp: slot given to another client")
	// ErrExpired: the transfer ran longer than Config.MaxTransferTime.
	ErrExpired = errors.New("tftp: transfer time limit reached")
)

// Stats are the server's counters since New. Requests turned away are
// counted by reason: Busy, SourceBusy and Refused.
type Stats struct {
	Requests       uint64 // RRQs and WRQs parsed, duplicates and busy ones included
	Duplicates     uint64 // RRQs repeated while their transfer runs: ignored
	Busy           uint64 // RRQs turned away because MaxTransfers were running
	SourceBusy     uint64 // RRQs turned away because their address ran MaxTransfersPerSource
	Refused        uint64 // requests answered with an ERROR: not found, access, mode, WRQ
	TimeoutIgnored uint64 // timeout options above MaxTimeout, left out of the OACK
	Preempted      uint64 // transfers without any ACK that gave their slot to a new request
	Expired        uint64 // transfers ended after MaxTransferTime
	Completed      uint64 // transfers whose last block was acknowledged
	Aborted        uint64 // transfers the client ended with an ERROR (e.g. a tsize probe)
	TimedOut       uint64 // transfers abandoned after Retries retransmissions
	Failed         uint64 // transfers ended by a server-side error or shutdown
	Malformed      uint64 // packets dropped: unparsable, or an opcode not expected there
	UnknownTID     uint64 // packets from a stranger on a transfer port (answered ERROR 5)
	Retransmits    uint64 // OACK and DATA packets sent again
	BytesSent      uint64 // payload bytes acknowledged by clients
	Panics         uint64 // transfers that ended in a recovered panic
	Active         int    // transfers running now
}

type counters struct {
	requests, duplicates, busy, sourceBusy, refused, timeoutIgnored, preempted, expired,
	completed, aborted, timedOut, failed, malformed, unknownTID, retransmits, bytesSent,
	panics atomic.Uint64
}

// slot is one running transfer's claim on the server's capacity. key,
// src, start and cancel never change; the other fields are guarded by
// Server.mu.
type slot struct {
	key    string     // the client's address:port, its key in Server.active
	src    netip.Addr // the client's address, its key in Server.perSource
	start  time.Time
	cancel context.CancelCauseFunc
	// waiting is its element in Server.unacked while the client has
	// acknowledged nothing; nil after.
	waiting *list.Element
	gone    bool // given back: the transfer ended or was preempted
}

// Server is a read-only TFTP server. It is safe for concurrent use; one
// Server may Serve several sockets.
type Server struct {
	cfg  Config
	log  *slog.Logger
	fsys fs.FS
	root *os.Root // nil when Config.FS is used

	// ctx is cancelled when Shutdown gives up waiting: transfers then end.
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	closing   bool
	listeners map[net.PacketConn]struct{}
	active    map[string]*slot   // running transfers by client address:port
	perSource map[netip.Addr]int // running transfers by client address
	unacked   *list.List         // of *slot without any ACK yet, oldest first

	wg           sync.WaitGroup
	shutdownOnce sync.Once
	stats        counters
	warnLimit    *ratelog.Limiter
}

// New returns a Server for cfg. It opens Config.Dir, so a missing
// directory is an error here rather than at the first request.
func New(cfg Config) (*Server, error) {
	c := cfg.withDefaults()
	s := &Server{
		cfg:       c,
		log:       c.Logger,
		listeners: make(map[net.PacketConn]struct{}),
		active:    make(map[string]*slot),
		perSource: make(map[netip.Addr]int),
		unacked:   list.New(),
		warnLimit: ratelog.New(100*time.Millisecond, 20),
	}
	if c.FS != nil {
		s.fsys = c.FS
	} else {
		root, err := os.OpenRoot(c.Dir)
		if err != nil {
			return nil, fmt.Errorf("tftp: root directory: %w", err)
		}
		s.root, s.fsys = root, root.FS()
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	active := len(s.active)
	s.mu.Unlock()
	c := &s.stats
	return Stats{
		Requests: c.requests.Load(), Duplicates: c.duplicates.Load(), Busy: c.busy.Load(),
		SourceBusy: c.sourceBusy.Load(), Refused: c.refused.Load(),
		TimeoutIgnored: c.timeoutIgnored.Load(), Preempted: c.preempted.Load(), Expired: c.expired.Load(),
		Completed: c.completed.Load(), Aborted: c.aborted.Load(),
		TimedOut: c.timedOut.Load(), Failed: c.failed.Load(), Malformed: c.malformed.Load(),
		UnknownTID: c.unknownTID.Load(), Retransmits: c.retransmits.Load(),
		BytesSent: c.bytesSent.Load(), Panics: c.panics.Load(), Active: active,
	}
}

// Serve reads requests from conn (the port 69 socket) until ctx is done,
// Shutdown is called or conn fails, and closes conn. Transfers started
// from it keep running after it returns; Shutdown ends them.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		conn.Close()
		return net.ErrClosed
	}
	s.listeners[conn] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, conn)
		s.mu.Unlock()
		conn.Close()
	}()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	s.log.Info("tftp server listening", "addr", conn.LocalAddr().String())
	buf := make([]byte, 65536) // the largest UDP payload: nothing is truncated
	for {
		n, peer, err := conn.ReadFrom(buf)
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("tftp: read %s: %w", conn.LocalAddr(), err)
		}
		s.handleRequest(conn, buf[:n], peer)
	}
}

// handleRequest dispatches one packet that arrived on the request port.
func (s *Server) handleRequest(conn net.PacketConn, b []byte, peer net.Addr) {
	op, err := PeekOpcode(b)
	if err != nil || (op != OpRRQ && op != OpWRQ) {
		s.dropMalformed(peer, err, op)
		return
	}
	req, err := ParseRequest(b)
	if err != nil {
		s.dropMalformed(peer, err, op)
		return
	}
	s.stats.requests.Add(1)
	if req.Op == OpWRQ {
		// RFC 1350 section 7: a server that does not write answers WRQ with
		// an error. Access violation says "not allowed", not "bad packet".
		s.stats.refused.Add(1)
		s.send(conn, peer, errReadOnly.AppendBinary(nil))
		s.warn("tftp write request refused", "ip", addrString(peer), "file", req.Filename)
		return
	}

	key := peer.String()
	src := addrPort(peer).Addr()
	now := time.Now()
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	if _, dup := s.active[key]; dup {
		// The client retransmitted its RRQ before our first answer reached
		// it; the running transfer retransmits that answer itself.
		s.mu.Unlock()
		s.stats.duplicates.Add(1)
		return
	}
	if n := s.perSource[src]; n >= s.cfg.MaxTransfersPerSource {
		s.mu.Unlock()
		s.stats.sourceBusy.Add(1)
		s.warn("tftp: too many transfers from one address, request refused", "ip", src.String(),
			"file", req.Filename, "max_transfers_per_source", s.cfg.MaxTransfersPerSource)
		// Always answered: silence would only make it ask again.
		s.send(conn, peer, errSourceBusy.AppendBinary(nil))
		s.report(TransferInfo{Client: addrPort(peer), File: req.Filename, Mode: req.Mode,
			Size: -1, Start: now, Err: errSourceBusy})
		return
	}
	if len(s.active) >= s.cfg.MaxTransfers {
		victim := s.preemptibleLocked(now)
		if victim == nil {
			s.mu.Unlock()
			s.stats.busy.Add(1)
			s.warn("tftp: all transfer slots taken, request refused", "ip", src.String(), "file", req.Filename,
				"max_transfers", s.cfg.MaxTransfers)
			if !s.cfg.DropWhenBusy {
				s.send(conn, peer, errBusy.AppendBinary(nil))
			}
			s.report(TransferInfo{Client: addrPort(peer), File: req.Filename, Mode: req.Mode,
				Size: -1, Start: now, Err: errBusy})
			return
		}
		// The victim's goroutine ends at once (its read is interrupted);
		// its slot counts as free from now.
		s.releaseLocked(victim)
		victim.cancel(ErrPreempted)
	}
	ctx, cancel := context.WithCancelCause(s.ctx)
	sl := &slot{key: key, src: src, start: now, cancel: cancel}
	sl.waiting = s.unacked.PushBack(sl)
	s.active[key] = sl
	s.perSource[src]++
	s.wg.Add(1)
	s.mu.Unlock()

	go func() {
		defer s.wg.Done()
		defer func() {
			s.mu.Lock()
			s.releaseLocked(sl)
			s.mu.Unlock()
			cancel(nil)
		}()
		ctx, stop := context.WithTimeoutCause(ctx, s.cfg.MaxTransferTime, ErrExpired)
		defer stop()
		s.runTransfer(ctx, sl, conn, peer, req)
	}()
}

// preemptibleLocked returns the oldest transfer whose client has
// acknowledged nothing for Config.Timeout, the server's own first
// retransmission timeout: a live client answers an OACK or DATA within a
// round trip, so such a slot is most likely held by a client that went
// away or never meant to read. nil if there is none. Caller holds mu.
func (s *Server) preemptibleLocked(now time.Time) *slot {
	e := s.unacked.Front()
	if e == nil {
		return nil
	}
	if sl := e.Value.(*slot); now.Sub(sl.start) >= s.cfg.Timeout {
		return sl
	}
	return nil
}

// releaseLocked gives a slot back, once. Caller holds mu.
func (s *Server) releaseLocked(sl *slot) {
	if sl.gone {
		return
	}
	sl.gone = true
	if s.active[sl.key] == sl {
		delete(s.active, sl.key)
	}
	if s.perSource[sl.src]--; s.perSource[sl.src] <= 0 {
		delete(s.perSource, sl.src)
	}
	if sl.waiting != nil {
		s.unacked.Remove(sl.waiting)
		sl.waiting = nil
	}
}

// acknowledged records that sl's client acknowledged something: its slot
// is no longer preemptible.
func (s *Server) acknowledged(sl *slot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sl.waiting != nil {
		s.unacked.Remove(sl.waiting)
		sl.waiting = nil
	}
}

// runTransfer serves one RRQ and reports how it ended. A panic ends only
// this transfer.
func (s *Server) runTransfer(ctx context.Context, sl *slot, reqConn net.PacketConn, peer net.Addr, req Request) {
	t := &transfer{
		s: s, slot: sl, reqConn: reqConn, peer: peer, req: req,
		info: TransferInfo{Client: addrPort(peer), File: req.Filename, Mode: req.Mode,
			Size: -1, Start: time.Now(), BlockSize: DefaultBlockSize, WindowSize: 1},
	}
	defer func() {
		if r := recover(); r != nil {
			s.stats.panics.Add(1)
			s.log.Error("tftp transfer panicked", "ip", addrString(peer), "file", req.Filename,
				"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			t.info.Err = fmt.Errorf("tftp: panic: %v", r)
			t.panicked = true
		}
		t.close()
		s.finish(t)
	}()
	t.info.Err = t.run(ctx)
}

// finish counts, logs and reports a transfer that ended.
func (s *Server) finish(t *transfer) {
	info := &t.info
	info.Duration = time.Since(info.Start)
	s.stats.bytesSent.Add(uint64(info.Bytes))
	s.stats.retransmits.Add(uint64(info.Retransmits))
	attrs := []any{"ip", info.Client.Addr().String(), "file", info.File,
		"bytes", info.Bytes, "duration", info.Duration.Round(time.Millisecond),
		"blksize", info.BlockSize, "windowsize", info.WindowSize, "retransmits", info.Retransmits}
	var refusal *Error
	switch err := info.Err; {
	case err == nil:
		s.stats.completed.Add(1)
		s.log.Info("tftp transfer done", attrs...)
	case errors.Is(err, ErrClientAbort):
		// PXE ROMs and iPXE's tftpsize ask for the OACK's tsize and then
		// abort: routine, not a failure.
		s.stats.aborted.Add(1)
		s.log.Debug("tftp transfer aborted by client", append(attrs, "err", err)...)
	case errors.As(err, &refusal) && t.refused:
		s.stats.refused.Add(1)
		s.warn("tftp request refused", append(attrs, "err", err)...)
	case errors.Is(err, ErrTimeout):
		s.stats.timedOut.Add(1)
		s.warn("tftp transfer timed out", append(attrs, "err", err)...)
	case errors.Is(err, ErrPreempted):
		s.stats.preempted.Add(1)
		s.warn("tftp transfer without any ACK ended: its slot went to a new request", append(attrs, "err", err)...)
	case errors.Is(err, ErrExpired):
		s.stats.expired.Add(1)
		s.warn("tftp transfer ended: time limit reached", append(attrs, "err", err,
			"max_transfer_time", s.cfg.MaxTransferTime)...)
	default:
		s.stats.failed.Add(1)
		if !t.panicked { // already logged with its stack
			s.warn("tftp transfer failed", append(attrs, "err", err)...)
		}
	}
	s.report(*info)
}

func (s *Server) report(info TransferInfo) {
	if s.cfg.OnTransfer != nil {
		s.cfg.OnTransfer(info)
	}
}

// Shutdown stops reading requests, lets running transfers finish until ctx
// is done, then ends them (clients get ERROR 0) and waits for them to
// return. It is idempotent.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() {
		s.mu.Lock()
		s.closing = true
		for l := range s.listeners {
			l.Close()
		}
		s.mu.Unlock()
	})
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		s.cancel()
		<-done // transfers notice the cancellation at once: their reads are interrupted
	}
	s.cancel()
	if s.root != nil {
		s.root.Close()
	}
	return err
}

func (s *Server) dropMalformed(peer net.Addr, err error, op Opcode) {
	s.stats.malformed.Add(1)
	if err == nil {
		err = fmt.Errorf("%w %v on the request port", ErrWrongOpcode, op)
	}
	s.debug("tftp packet dropped", "ip", addrString(peer), "err", err)
}

// send writes one packet, logging (rate-limited) a failure. Losing a packet
// is what UDP does anyway: the retransmission logic copes.
func (s *Server) send(conn net.PacketConn, to net.Addr, pkt []byte) bool {
	if _, err := conn.WriteTo(pkt, to); err != nil {
		if !errors.Is(err, net.ErrClosed) {
			s.warn("tftp send failed", "ip", addrString(to), "err", err)
		}
		return false
	}
	return true
}

func (s *Server) warn(msg string, args ...any) {
	if ok, suppressed := s.warnLimit.Allow(); ok {
		if suppressed > 0 {
			args = append(args, "suppressed", suppressed)
		}
		s.log.Warn(msg, args...)
	}
}

func (s *Server) debug(msg string, args ...any) {
	if !s.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	if ok, suppressed := s.warnLimit.Allow(); ok {
		if suppressed > 0 {
			args = append(args, "suppressed", suppressed)
		}
		s.log.Debug(msg, args...)
	}
}

// listenTransfer is the default Config.ListenTransfer.
func listenTransfer(local net.Addr) (net.PacketConn, error) {
	ua, ok := local.(*net.UDPAddr)
	if !ok || ua.IP == nil || ua.IP.IsUnspecified() {
		return net.ListenUDP("udp", &net.UDPAddr{})
	}
	network := "udp6"
	if ua.IP.To4() != nil {
		network = "udp4"
	}
	return net.ListenUDP(network, &net.UDPAddr{IP: ua.IP, Zone: ua.Zone})
}

func addrPort(a net.Addr) netip.AddrPort {
	if ua, ok := a.(*net.UDPAddr); ok {
		ap := ua.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	if ap := addrPort(a); ap.IsValid() {
		return ap.Addr().String()
	}
	return a.String()
}

func sameAddr(a, b net.Addr) bool {
	ua, ok1 := a.(*net.UDPAddr)
	ub, ok2 := b.(*net.UDPAddr)
	if ok1 && ok2 {
		return ua.Port == ub.Port && ua.IP.Equal(ub.IP)
	}
	return a.String() == b.String()
}
