package httplimit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/testutil/output"
)

// clock is a settable time for token buckets.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type server struct {
	addr    string
	lim     *Limiter
	logs    *output.Output
	release chan struct{} // closing it ends every /slow request
	started chan struct{} // one value per /slow request that began
}

// serve runs an http.Server on 127.0.0.1 behind a Limiter: / answers ok,
// /slow waits for release, /body reads the body.
func serve(t *testing.T, cfg Config) *server {
	t.Helper()
	s := &server{logs: &output.Output{}, release: make(chan struct{}), started: make(chan struct{}, 100)}
	cfg.Logger = slog.New(slog.NewTextHandler(s.logs, nil))
	s.lim = New(cfg)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		s.started <- struct{}{}
		<-s.release
		io.WriteString(w, "slow ok")
	})
	mux.HandleFunc("/body", func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				http.Error(w, "too large", http.StatusRequestEntityTooLarge)
				return
			}
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		io.WriteString(w, "read")
	})
	srv := &http.Server{Handler: s.lim.Handler(mux), ConnState: s.lim.ConnState, ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() { srv.Serve(s.lim.Listener(ln)); close(done) }()
	t.Cleanup(func() {
		select {
		case <-s.release:
		default:
			close(s.release)
		}
		srv.Close()
		<-done
	})
	return s
}

// dial connects from a loopback address of its own (any of 127/8 is ours).
func (s *server) dial(t *testing.T, from string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// get sends a GET on c and returns the status and body.
func get(t *testing.T, c net.Conn, path string) (int, string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// getFrom makes one request over a new connection from the address.
func (s *server) getFrom(t *testing.T, from, path string) (int, string) {
	t.Helper()
	return get(t, s.dial(t, from), path)
}

// refused requires that the server reset c without an answer.
func refused(t *testing.T, c net.Conn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	n, err := c.Read(make([]byte, 1))
	var ne net.Error
	if n > 0 || err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: connection not refused: %d bytes, %v", what, n, err)
	}
}

// refusedFrom requires that a new connection from the address is reset
// at once: on loopback the reset can even beat connect(2) back to us.
func (s *server) refusedFrom(t *testing.T, from, what string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", s.addr)
	if errors.Is(err, syscall.ECONNRESET) {
		return
	}
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	defer c.Close()
	refused(t, c, what)
}

// open requires that c is still open: a read waits.
func open(t *testing.T, c net.Conn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("%s: connection closed: %v", what, err)
	}
	c.SetReadDeadline(time.Time{})
}

// waitOpen waits until the Limiter counts n open connections.
func (s *server) waitOpen(t *testing.T, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); s.lim.Stats().Open != n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("open connections: %d, want %d", s.lim.Stats().Open, n)
		}
	}
}

// One address holds at most ConnsPerSource connections; the next is reset
// at once, and the others are served as before.
func TestConnsPerSource(t *testing.T) {
	s := serve(t, Config{ConnsPerSource: 2})
	c1 := s.dial(t, "127.0.0.2")
	s.dial(t, "127.0.0.2")
	s.waitOpen(t, 2)
	s.refusedFrom(t, "127.0.0.2", "third from 127.0.0.2")
	if code, body := s.getFrom(t, "127.0.0.3", "/"); code != 200 || body != "ok" {
		t.Fatalf("another address: %d %q", code, body)
	}
	c1.Close()
	s.waitOpen(t, 2) // 127.0.0.2's second, 127.0.0.3's
	if code, _ := get(t, s.dial(t, "127.0.0.2"), "/"); code != 200 {
		t.Fatalf("127.0.0.2 after closing one: %d", code)
	}
	st := s.lim.Stats()
	if st.RefusedPerSource != 1 || st.Accepted != 4 || st.RefusedTotal != 0 {
		t.Errorf("stats %+v", st)
	}
	if !strings.Contains(s.logs.String(), "connection refused: too many from this address") {
		t.Errorf("no log line:\n%s", s.logs)
	}
}

// When every slot is taken, a new connection takes the place of the one
// that has waited longest without a request; a request in progress is
// never cut.
func TestFullEvictsTheLongestWaiting(t *testing.T) {
	s := serve(t, Config{Conns: 3})
	slow := s.dial(t, "127.0.0.2")
	io.WriteString(slow, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	<-s.started
	older := s.dial(t, "127.0.0.3")
	s.waitOpen(t, 2)
	newer := s.dial(t, "127.0.0.4")
	s.waitOpen(t, 3)
	if code, body := s.getFrom(t, "127.0.0.5", "/"); code != 200 || body != "ok" {
		t.Fatalf("newcomer: %d %q", code, body)
	}
	refused(t, older, "the longest waiting")
	open(t, newer, "the newer waiting")
	close(s.release)
	resp, err := http.ReadResponse(bufio.NewReader(slow), nil)
	if err != nil {
		t.Fatalf("request in progress: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "slow ok" {
		t.Fatalf("request in progress: %q", b)
	}
	if st := s.lim.Stats(); st.Evicted != 1 || st.RefusedTotal != 0 {
		t.Errorf("stats %+v", st)
	}
}

// When every connection is in a request, a new one is reset.
func TestFullOfRequestsRefuses(t *testing.T) {
	s := serve(t, Config{Conns: 2})
	var busy []net.Conn
	for _, from := range []string{"127.0.0.2", "127.0.0.3"} {
		c := s.dial(t, from)
		io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
		<-s.started
		busy = append(busy, c)
	}
	s.refusedFrom(t, "127.0.0.4", "third while two are in requests")
	close(s.release)
	for _, c := range busy {
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("request in progress: %v %v", resp, err)
		}
	}
	if st := s.lim.Stats(); st.RefusedTotal != 1 || st.Evicted != 0 {
		t.Errorf("stats %+v", st)
	}
}

func request(l *Limiter, h http.Handler, from string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = from
	w := httptest.NewRecorder()
	l.Handler(h).ServeHTTP(w, r)
	return w
}

// A source gets Burst requests at once and RequestsPerSecond after; the
// others are not slowed by it.
func TestRequestRate(t *testing.T) {
	clk := &clock{t: time.Unix(1e9, 0)}
	l := New(Config{RequestsPerSecond: 2, Burst: 3})
	l.now = clk.now
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	for i := range 3 {
		if w := request(l, ok, "10.0.0.1:1000"); w.Code != 200 {
			t.Fatalf("request %d: %d", i, w.Code)
		}
	}
	w := request(l, ok, "10.0.0.1:1001")
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "1" {
		t.Fatalf("over the burst: %d %v", w.Code, w.Header())
	}
	if w := request(l, ok, "10.0.0.2:1000"); w.Code != 200 {
		t.Fatalf("another source: %d", w.Code)
	}
	// IPv6 counts per /64: another address of the same prefix shares
	// the budget.
	for i := range 3 {
		request(l, ok, "[2001:db8::"+string(rune('1'+i))+"]:80")
	}
	if w := request(l, ok, "[2001:db8::ffff]:80"); w.Code != http.StatusTooManyRequests {
		t.Fatalf("same /64: %d", w.Code)
	}
	clk.add(500 * time.Millisecond)
	if w := request(l, ok, "10.0.0.1:1000"); w.Code != 200 {
		t.Fatalf("after a token came back: %d", w.Code)
	}
	if w := request(l, ok, "10.0.0.1:1000"); w.Code != http.StatusTooManyRequests {
		t.Fatalf("only one came back: %d", w.Code)
	}
	if st := l.Stats(); st.RateLimited != 3 {
		t.Errorf("stats %+v", st)
	}
}

// The table of sources is bounded: when full, sources idle long enough to
// be as new are forgotten; if none is, newcomers are refused.
func TestSourcesBounded(t *testing.T) {
	clk := &clock{t: time.Unix(1e9, 0)}
	l := New(Config{RequestsPerSecond: 1, Burst: 2})
	l.now, l.maxRates = clk.now, 3
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	for _, a := range []string{"10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"} {
		request(l, ok, a)
	}
	if w := request(l, ok, "10.0.0.4:1"); w.Code != http.StatusTooManyRequests {
		t.Fatalf("fourth source while the table is full: %d", w.Code)
	}
	clk.add(time.Second)
	if w := request(l, ok, "10.0.0.4:1"); w.Code != 200 {
		t.Fatalf("after the others went idle: %d", w.Code)
	}
	l.mu.Lock()
	n := len(l.rates)
	l.mu.Unlock()
	if n != 1 {
		t.Errorf("%d sources kept, want 1", n)
	}
}

// A body over the bound is refused before the handler when announced, and
// cut when streamed.
func TestBodyLimit(t *testing.T) {
	s := serve(t, Config{MaxBodyBytes: 10})
	c := s.dial(t, "127.0.0.2")
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n0123456789a")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("announced: %v %v", resp, err)
	}
	c = s.dial(t, "127.0.0.2")
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "POST /body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n14\r\n01234567890123456789\r\n0\r\n\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("streamed: %v %v", resp, err)
	}
	c = s.dial(t, "127.0.0.2")
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789")
	resp, err = http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("at the bound: %v %v", resp, err)
	}
	if st := s.lim.Stats(); st.TooLarge != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestSourceOf(t *testing.T) {
	for in, want := range map[string]string{
		"10.1.2.3":              "10.1.2.3/32",
		"::ffff:10.1.2.3":       "10.1.2.3/32",
		"2001:db8:1:2:3:4:5:6":  "2001:db8:1:2::/64",
		"fe80::1%eth0":          "fe80::/64",
		"2001:db8:1:3::1":       "2001:db8:1:3::/64",
		"2001:db8:1:2:ffff::99": "2001:db8:1:2::/64",
	} {
		if got := SourceOf(netip.MustParseAddr(in)).String(); got != want {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
	}
}

// Log lines pass at a bounded rate per level; the next one let through
// tells how many were left out.
func TestLogLimiter(t *testing.T) {
	clk := &clock{t: time.Unix(1e9, 0)}
	var buf bytes.Buffer
	h := NewLogLimiter(slog.NewTextHandler(&buf, nil))
	h.s.now = clk.now
	log := slog.New(h).With("host", "h1") // derived loggers share the budget
	for range warnLogBurst + 7 {
		log.Warn("refused")
	}
	log.Info("still informs")
	if n := strings.Count(buf.String(), "msg=refused"); n != warnLogBurst {
		t.Fatalf("%d warnings logged, want %d", n, warnLogBurst)
	}
	if !strings.Contains(buf.String(), "still informs") {
		t.Fatal("info lines share the warnings' budget")
	}
	clk.add(time.Second)
	buf.Reset()
	slog.New(h).Warn("again")
	if !strings.Contains(buf.String(), "msg=again suppressed=7") {
		t.Fatalf("no count of left out lines: %s", buf.String())
	}
	if h.Suppressed() != 7 {
		t.Errorf("Suppressed %d", h.Suppressed())
	}
	if err := h.Handle(context.Background(), slog.NewRecord(time.Time{}, slog.LevelError, "e", 0)); err != nil {
		t.Fatal(err)
	}
}

// readFromConn is a net.Conn that records a zero-copy ReadFrom.
type readFromConn struct {
	net.Conn
	got []byte
}

func (c *readFromConn) ReadFrom(r io.Reader) (int64, error) {
	b, err := io.ReadAll(r)
	c.got = append(c.got, b...)
	return int64(len(b)), err
}

// A wrapped connection still offers ReadFrom, and it reaches the wrapped
// one: net/http sends files with sendfile(2) only through it.
func TestConnKeepsReadFrom(t *testing.T) {
	inner := &readFromConn{}
	var c net.Conn = &conn{Conn: inner}
	rf, ok := c.(io.ReaderFrom)
	if !ok {
		t.Fatal("the wrapped connection hides ReadFrom")
	}
	if n, err := rf.ReadFrom(strings.NewReader("kernel")); n != 6 || err != nil || string(inner.got) != "kernel" {
		t.Fatalf("ReadFrom: %d %v %q", n, err, inner.got)
	}
}
