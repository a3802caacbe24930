// Package httplimit keeps one client of an HTTP server from starving the
// others. It bounds the connections each source address holds and holds
// in total (a net.Listener wrapper), the requests each source makes per
// second and the size of request bodies (an http.Handler middleware), and
// the log lines clients can cause. What goes over a bound is refused at
// once - a connection closed (reset) as soon as it is accepted, a request
// answered 429 or 413 - counted in Stats and logged at a bounded rate.
//
// It does not set timeouts: the http.Server's ReadHeaderTimeout is what
// ends a connection that sends its headers byte by byte (slowloris), and
// handlers extend their write deadlines for large files. This package
// decides who gets a connection slot: when every slot is taken, a new
// connection takes the one that has waited longest without a request in
// progress (one still sending its headers, or a keep-alive between
// requests); a connection in the middle of a request - a kernel being
// downloaded slowly - is never closed for another.
package httplimit

import (
	"cmp"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Config.
const (
	DefaultConnsPerSource    = 32
	DefaultConns             = 2048
	DefaultRequestsPerSecond = 50
	DefaultBurst             = 200
	DefaultMaxBodyBytes      = 1 << 20
)

// Config configures a Limiter. The zero value takes every default.
type Config struct {
	// Name starts the log lines, e.g. "http" or "api" (default "http").
	Name string
	// ConnsPerSource bounds the connections one source holds at once
	// (default 32). An IPv6 source counts per /64: one machine can pick
	// addresses from a whole prefix. A connection over it is reset at
	// once.
	ConnsPerSource int
	// Conns bounds the connections held in total (default 2048: about
	// 40 MiB of goroutines and buffers). When all are taken, the one that
	// has waited longest without a request in progress makes room for the
	// new one; when every one is in a request, the new one is reset.
	Conns int
	// RequestsPerSecond is the rate each source's requests may keep up
	// (default 50); Burst is how many it may make at once (default 200).
	// Requests beyond get 429 with Retry-After. A boot needs a handful; an
	// admin's CLI polling a job asks 20 a second.
	RequestsPerSecond float64
	Burst             int
	// MaxBodyBytes bounds a request body (default 1 MiB): a request that
	// announces more gets 413 without reaching the handler, and a handler
	// reading more gets an error.
	MaxBodyBytes int64
	// Logger receives the refusals, rate-limited (default: discard).
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	c.Name = cmp.Or(c.Name, "http")
	if c.ConnsPerSource <= 0 {
		c.ConnsPerSource = DefaultConnsPerSource
	}
	if c.Conns <= 0 {
		c.Conns = DefaultConns
	}
	if c.RequestsPerSecond <= 0 {
		c.RequestsPerSecond = DefaultRequestsPerSecond
	}
	if c.Burst <= 0 {
		c.Burst = DefaultBurst
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Stats are a Limiter's counters since New.
type Stats struct {
	Open             int    // connections open now
	Accepted         uint64 // connections let in
	RefusedPerSource uint64 // connections reset on accept: their source held ConnsPerSource
	RefusedTotal     uint64 // connections reset on accept: Conns held, every one in a request
	Evicted          uint64 // connections without a request in progress closed to make room
	RateLimited      uint64 // requests answered 429: their source went over its rate
	TooLarge         uint64 // requests answered 413: a body over MaxBodyBytes announced
	LogsSuppressed   uint64 // log lines left out by the log rate limit
}

// Limiter holds the bounds of one server: wrap its listener with Listener,
// its handler with Handler, and set its http.Server's ConnState to
// ConnState. It is safe for concurrent use.
type Limiter struct {
	cfg Config
	log *slog.Logger // rate-limited
	now func() time.Time

	mu        sync.Mutex
	perSource map[netip.Prefix]int
	conns     map[*conn]struct{}
	rates     map[netip.Prefix]*bucket
	// maxRates bounds rates; idle sources (their bucket full again) are
	// swept when it is reached.
	maxRates int

	accepted, refusedSource, refusedTotal, evicted, rateLimited, tooLarge atomic.Uint64
	logs                                                                  *LogLimiter
}

// New returns a Limiter for cfg.
func New(cfg Config) *Limiter {
	cfg = cfg.withDefaults()
	l := &Limiter{
		cfg:       cfg,
		now:       time.Now,
		perSource: map[netip.Prefix]int{},
		conns:     map[*conn]struct{}{},
		rates:     map[netip.Prefix]*bucket{},
		maxRates:  4 * cfg.Conns,
	}
	l.logs = NewLogLimiter(cfg.Logger.Handler())
	l.log = slog.New(l.logs)
	return l
}

// Stats returns a snapshot of the counters.
func (l *Limiter) Stats() Stats {
	l.mu.Lock()
	open := len(l.conns)
	l.mu.Unlock()
	return Stats{
		Open: open, Accepted: l.accepted.Load(),
		RefusedPerSource: l.refusedSource.Load(), RefusedTotal: l.refusedTotal.Load(),
		Evicted: l.evicted.Load(), RateLimited: l.rateLimited.Load(), TooLarge: l.tooLarge.Load(),
		LogsSuppressed: l.logs.Suppressed(),
	}
}

// Logger is Config.Logger with the Limiter's log rate limit (LogLimiter):
// for the server's own log lines that clients can cause, so that they and
// the Limiter's share one budget and one count.
func (l *Limiter) Logger() *slog.Logger { return l.log }

// SourceOf is the unit a source is counted in: an IPv4 address, or the /64
// of an IPv6 address.
func SourceOf(a netip.Addr) netip.Prefix {
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(64)
	return p
}

func sourceOfAddr(a net.Addr) netip.Prefix {
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return SourceOf(ip)
		}
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return SourceOf(ap.Addr())
	}
	return netip.Prefix{} // not IP: all such clients are one source
}

// Listener wraps ln: Accept returns only connections within the bounds and
// resets the others at once.
func (l *Limiter) Listener(ln net.Listener) net.Listener { return &listener{Listener: ln, l: l} }

type listener struct {
	net.Listener
	l *Limiter
}

func (ln *listener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if lc := ln.l.admit(c); lc != nil {
			return lc, nil
		}
	}
}

// conn is an admitted connection. Its fields after src are guarded by
// Limiter.mu.
type conn struct {
	net.Conn
	l       *Limiter
	src     netip.Prefix
	release sync.Once

	busy  bool      // a request is in progress (or the connection was hijacked)
	since time.Time // when it last became without a request
}

// Close closes the connection and frees its slot.
func (c *conn) Close() error {
	err := c.Conn.Close()
	c.l.free(c)
	return err
}

// ReadFrom keeps the zero-copy path of the wrapped connection: net/http
// sends a kernel or initrd with sendfile(2) when its connection is an
// io.ReaderFrom, as a *net.TCPConn is.
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// admit counts c in, or resets it and returns nil.
func (l *Limiter) admit(c net.Conn) *conn {
	src := sourceOfAddr(c.RemoteAddr())
	var victim *conn
	l.mu.Lock()
	if l.perSource[src] >= l.cfg.ConnsPerSource {
		l.mu.Unlock()
		l.refusedSource.Add(1)
		reset(c)
		l.log.Warn(l.cfg.Name+": connection refused: too many from this address", "ip", c.RemoteAddr().String(), "limit", l.cfg.ConnsPerSource)
		return nil
	}
	if len(l.conns) >= l.cfg.Conns {
		victim = l.oldestWaitingLocked()
		if victim == nil {
			l.mu.Unlock()
			l.refusedTotal.Add(1)
			reset(c)
			l.log.Warn(l.cfg.Name+": connection refused: every connection is in a request", "ip", c.RemoteAddr().String(), "limit", l.cfg.Conns)
			return nil
		}
		l.forgetLocked(victim)
	}
	lc := &conn{Conn: c, l: l, src: src, since: l.now()}
	l.conns[lc] = struct{}{}
	l.perSource[src]++
	l.mu.Unlock()
	l.accepted.Add(1)
	if victim != nil {
		l.evicted.Add(1)
		reset(victim.Conn)
		l.log.Warn(l.cfg.Name+": connection without a request in progress closed to make room", "ip", victim.RemoteAddr().String(), "limit", l.cfg.Conns)
	}
	return lc
}

// oldestWaitingLocked is the connection that has waited longest without a
// request in progress, nil when every one is in a request.
func (l *Limiter) oldestWaitingLocked() *conn {
	var old *conn
	for c := range l.conns {
		if !c.busy && (old == nil || c.since.Before(old.since)) {
			old = c
		}
	}
	return old
}

// forgetLocked frees c's slot once.
func (l *Limiter) forgetLocked(c *conn) {
	c.release.Do(func() {
		delete(l.conns, c)
		if l.perSource[c.src]--; l.perSource[c.src] <= 0 {
			delete(l.perSource, c.src)
		}
	})
}

func (l *Limiter) free(c *conn) {
	l.mu.Lock()
	l.forgetLocked(c)
	l.mu.Unlock()
}

// reset closes c with an RST, freeing its kernel state at once (no
// TIME_WAIT on our side): a refused client learns it at once.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// ConnState is for http.Server.ConnState: it tells the Limiter which
// connections are in a request.
func (l *Limiter) ConnState(c net.Conn, st http.ConnState) {
	lc, ok := c.(*conn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch st {
	case http.StateActive, http.StateHijacked:
		lc.busy = true
	case http.StateNew, http.StateIdle:
		lc.busy = false
		lc.since = l.now()
	}
}

// Handler wraps h with the request rate per source and the body bound.
func (l *Limiter) Handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		src := netip.Prefix{}
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			src = SourceOf(ap.Addr())
		}
		if !l.allow(src) {
			l.rateLimited.Add(1)
			l.log.Warn(l.cfg.Name+": request refused: too many from this address", "ip", r.RemoteAddr,
				"rate", l.cfg.RequestsPerSecond, "burst", l.cfg.Burst)
			w.Header().Set("Retry-After", "1")
			http.Error(w, "too many requests from this address; try again shortly", http.StatusTooManyRequests)
			return
		}
		if r.ContentLength > l.cfg.MaxBodyBytes {
			l.tooLarge.Add(1)
			l.log.Warn(l.cfg.Name+": request refused: body too large", "ip", r.RemoteAddr, "bytes", r.ContentLength, "limit", l.cfg.MaxBodyBytes)
			w.Header().Set("Connection", "close")
			http.Error(w, "request body too large (limit "+strconv.FormatInt(l.cfg.MaxBodyBytes, 10)+" bytes)", http.StatusRequestEntityTooLarge)
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, l.cfg.MaxBodyBytes)
		}
		h.ServeHTTP(w, r)
	})
}

// allow takes a token of src's bucket.
func (l *Limiter) allow(src netip.Prefix) bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.rates[src]
	if b == nil {
		if len(l.rates) >= l.maxRates {
			l.sweepLocked(now)
		}
		if len(l.rates) >= l.maxRates {
			// More sources asking at once than any site has hosts:
			// refuse the newcomers rather than grow without bound.
			return false
		}
		b = &bucket{tokens: float64(l.cfg.Burst), last: now}
		l.rates[src] = b
	}
	return b.take(now, l.cfg.RequestsPerSecond, float64(l.cfg.Burst))
}

// sweepLocked forgets the sources whose bucket is full again: they are as
// if they never came.
func (l *Limiter) sweepLocked(now time.Time) {
	for src, b := range l.rates {
		if b.level(now, l.cfg.RequestsPerSecond, float64(l.cfg.Burst)) >= float64(l.cfg.Burst) {
			delete(l.rates, src)
		}
	}
}

// bucket is a token bucket; its owner serializes access.
type bucket struct {
	tokens float64
	last   time.Time
}

func (b *bucket) level(now time.Time, rate, burst float64) float64 {
	if d := now.Sub(b.last); d > 0 {
		return min(burst, b.tokens+d.Seconds()*rate)
	}
	return b.tokens
}

func (b *bucket) take(now time.Time, rate, burst float64) bool {
	b.tokens = b.level(now, rate, burst)
	if now.After(b.last) {
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// LogLimiter is a slog.Handler that passes at most a few records per
// second per level to the handler it wraps, for log lines clients can
// cause: Debug and Info 50 a second with bursts of 500 (a boot storm's
// lines get through), Warn and Error 10 a second with bursts of 50. The
// first record let through after some were left out says how many, as
// "suppressed". Handlers derived with WithAttrs/WithGroup share the
// budget. It is safe for concurrent use.
type LogLimiter struct {
	inner slog.Handler
	s     *logState
}

type logState struct {
	now        func() time.Time
	mu         sync.Mutex
	info, warn bucket
	pending    [2]int // left out since the last line let through: info, warn
	suppressed atomic.Uint64
}

const (
	infoLogRate, infoLogBurst = 50, 500
	warnLogRate, warnLogBurst = 10, 50
)

// NewLogLimiter wraps h.
func NewLogLimiter(h slog.Handler) *LogLimiter {
	return &LogLimiter{inner: h, s: &logState{now: time.Now,
		info: bucket{tokens: infoLogBurst}, warn: bucket{tokens: warnLogBurst}}}
}

// Suppressed is the number of records left out since NewLogLimiter.
func (h *LogLimiter) Suppressed() uint64 { return h.s.suppressed.Load() }

// Enabled implements slog.Handler.
func (h *LogLimiter) Enabled(ctx context.Context, level slog.Level) bool {
	return h.inner.Enabled(ctx, level)
}

// Handle implements slog.Handler.
func (h *LogLimiter) Handle(ctx context.Context, r slog.Record) error {
	s := h.s
	now := s.now()
	s.mu.Lock()
	b, i, rate, burst := &s.info, 0, float64(infoLogRate), float64(infoLogBurst)
	if r.Level >= slog.LevelWarn {
		b, i, rate, burst = &s.warn, 1, warnLogRate, warnLogBurst
	}
	if b.last.IsZero() {
		b.last = now
	}
	if !b.take(now, rate, burst) {
		s.pending[i]++
		s.mu.Unlock()
		s.suppressed.Add(1)
		return nil
	}
	n := s.pending[i]
	s.pending[i] = 0
	s.mu.Unlock()
	if n > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed", n))
	}
	return h.inner.Handle(ctx, r)
}

// WithAttrs implements slog.Handler.
func (h *LogLimiter) WithAttrs(as []slog.Attr) slog.Handler {
	return &LogLimiter{inner: h.inner.WithAttrs(as), s: h.s}
}

// WithGroup implements slog.Handler.
func (h *LogLimiter) WithGroup(name string) slog.Handler {
	return &LogLimiter{inner: h.inner.WithGroup(name), s: h.s}
}
