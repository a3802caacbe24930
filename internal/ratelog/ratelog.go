// Package ratelog keeps log lines that clients can trigger from flooding
// the log: a token bucket per kind of line, and a count of the lines it
// held back, carried by the next line that goes out. It is a leaf package
// (standard library only) that every server shares; it decides only
// whether to log, never what.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Limiter is a token bucket: one token comes back every Every, at most
// Burst are kept. It is safe for concurrent use.
type Limiter struct {
	every time.Duration
	burst float64

	mu         sync.Mutex
	tokens     float64
	last       time.Time
	suppressed int
}

// New returns a Limiter that allows burst events at once, then one every
// every. burst below 1 counts as 1.
func New(every time.Duration, burst int) *Limiter {
	b := float64(max(burst, 1))
	return &Limiter{every: every, burst: b, tokens: b}
}

// Allow takes a token now; see AllowAt.
func (l *Limiter) Allow() (ok bool, suppressed int) { return l.AllowAt(time.Now()) }

// AllowAt takes a token at time now. It reports whether the event may be
// logged and, when it may, how many events were refused since the last
// one allowed.
func (l *Limiter) AllowAt(now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.After(l.last) {
		if l.every <= 0 {
			l.tokens = l.burst
		} else {
			l.tokens = min(l.burst, l.tokens+float64(now.Sub(l.last))/float64(l.every))
		}
	}
	if l.last.IsZero() || now.After(l.last) {
		l.last = now
	}
	if l.tokens < 1 {
		l.suppressed++
		return false, 0
	}
	l.tokens--
	n := l.suppressed
	l.suppressed = 0
	return true, n
}

// Logger logs through slog with one Limiter per message, so a flood of
// one kind of line (a refused connection) cannot hide another (a failed
// login), and each kind still shows up once per interval with how many
// of it were held back ("suppressed"). Messages must come from a fixed
// set - constants in the code - never from client data, because each one
// keeps a Limiter for the life of the Logger. It is safe for concurrent
// use.
type Logger struct {
	every time.Duration
	burst int

	mu   sync.Mutex
	keys map[string]*Limiter
}

// NewLogger returns a Logger whose messages each allow burst lines at
// once, then one every every.
func NewLogger(every time.Duration, burst int) *Logger {
	return &Logger{every: every, burst: burst, keys: make(map[string]*Limiter)}
}

func (r *Logger) limiter(msg string) *Limiter {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.keys[msg]
	if l == nil {
		l = New(r.every, r.burst)
		r.keys[msg] = l
	}
	return l
}

// Log writes msg to log at level unless msg's bucket is empty. Lines the
// logger would not print anyway (level disabled) neither take a token nor
// count as suppressed.
func (r *Logger) Log(log *slog.Logger, level slog.Level, msg string, args ...any) {
	if !log.Enabled(context.Background(), level) {
		return
	}
	ok, suppressed := r.limiter(msg).Allow()
	if !ok {
		return
	}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	log.Log(context.Background(), level, msg, args...)
}
