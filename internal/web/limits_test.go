package web

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/boot"
	"github.com/diskless-boot/diskless/internal/httplimit"
)

// slowloris holds connections to a server from some source addresses, a
// fixed number from each, sending a request's headers one byte every
// 100 ms and never ending them. Connections the server closes are dialled
// again every second, as the attack tool does.
type slowloris struct {
	addr    string
	stopped chan struct{}
	done    chan struct{}

	mu     sync.Mutex
	dials  int // connections made
	closed int // connections the server closed or refused
}

type lorisConn struct {
	from string
	c    net.Conn
}

// The headers never end: after the request line, one header line grows
// forever (a byte per tick stays far under MaxHeaderBytes for the test).
const lorisRequest = "GET /boot.ipxe?mac=52:54:00:00:00:01 HTTP/1.1\r\nHost: diskless\r\nX-Slow: "

func startSlowloris(t *testing.T, addr string, sources []string, perSource int) *slowloris {
	t.Helper()
	s := &slowloris{addr: addr, stopped: make(chan struct{}), done: make(chan struct{})}
	var conns []*lorisConn
	for _, from := range sources {
		for range perSource {
			conns = append(conns, &lorisConn{from: from})
		}
	}
	s.redial(conns)
	go s.run(conns)
	t.Cleanup(s.stop)
	return s
}

func (s *slowloris) redial(conns []*lorisConn) {
	for _, lc := range conns {
		if lc.c != nil {
			continue
		}
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(lc.from)}, Timeout: time.Second}
		c, err := d.Dial("tcp", s.addr)
		if err != nil {
			continue
		}
		lc.c = c
		s.mu.Lock()
		s.dials++
		s.mu.Unlock()
	}
}

func (s *slowloris) run(conns []*lorisConn) {
	defer close(s.done)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	sent := make(map[*lorisConn]int)
	for round := 1; ; round++ {
		select {
		case <-s.stopped:
			for _, lc := range conns {
				if lc.c != nil {
					lc.c.Close()
				}
			}
			return
		case <-tick.C:
		}
		for _, lc := range conns {
			if lc.c == nil {
				continue
			}
			b := byte('a')
			if n := sent[lc]; n < len(lorisRequest) {
				b = lorisRequest[n]
			}
			lc.c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
			if _, err := lc.c.Write([]byte{b}); err != nil {
				lc.c.Close()
				lc.c = nil
				delete(sent, lc)
				s.mu.Lock()
				s.closed++
				s.mu.Unlock()
				continue
			}
			sent[lc]++
		}
		if round%10 == 0 {
			s.redial(conns)
		}
	}
}

func (s *slowloris) stop() {
	select {
	case <-s.stopped:
	default:
		close(s.stopped)
		<-s.done
	}
}

func (s *slowloris) counts() (dials, closed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dials, s.closed
}

// fetchScripts fetches macCHAP's script n times from 127.0.0.1, each over
// a new connection as iPXE does, and returns how long each took.
func fetchScripts(t *testing.T, e *env, n int) []time.Duration {
	t.Helper()
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var took []time.Duration
	for range n {
		start := time.Now()
		resp, err := client.Get(e.url + "/boot.ipxe?mac=" + macCHAP.String())
		if err != nil {
			t.Fatalf("legitimate script fetch: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		took = append(took, time.Since(start))
		if resp.StatusCode != 200 || !strings.Contains(string(body), "set password "+secret) {
			t.Fatalf("legitimate script fetch: %d %s", resp.StatusCode, body)
		}
	}
	return took
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// waitFor polls cond until it holds or 20 s passed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s", what)
		}
	}
}

// The bound on a slowloris's script latency: a script takes about a
// millisecond; this leaves room for a loaded CI machine and -race while
// still failing if a fetch had to wait for an attacker's slot to time out
// (HeaderTimeout, 10 s).
const maxScriptLatency = time.Second

// 500 connections from one address sending headers byte by byte hold 32
// slots (ConnsPerSource); the rest are reset at once, and the host still
// gets its script promptly.
func TestSlowlorisOneAddress(t *testing.T) {
	const n = 500
	start := time.Now()
	e := startConfig(t, boot.PolicyLocal, Config{Neighbors: is(macCHAP)})
	base := fetchScripts(t, e, 20)
	sl := startSlowloris(t, e.addr, []string{"127.0.0.2"}, n)
	waitFor(t, "the attack to fill its slots", func() bool {
		d, _ := sl.counts()
		st := e.srv.Stats().Limits
		return d >= n && st.Open == httplimit.DefaultConnsPerSource && st.RefusedPerSource >= n-httplimit.DefaultConnsPerSource
	})
	took := fetchScripts(t, e, 20)
	st := e.srv.Stats().Limits
	t.Logf("slowloris of %d connections from one address: %d held, %d refused; script latency median %v max %v (unattacked median %v max %v)",
		n, st.Open, st.RefusedPerSource, median(took), slices.Max(took), median(base), slices.Max(base))
	if slices.Max(took) > maxScriptLatency {
		t.Errorf("a script took %v under attack", slices.Max(took))
	}
	// Warnings: bursts of 50, then 10 a second.
	lines := strings.Count(e.logs.String(), "level=WARN")
	if max := 50 + 10*int(time.Since(start).Seconds()+1); lines > max || st.LogsSuppressed == 0 ||
		!strings.Contains(e.logs.String(), "suppressed=") {
		t.Errorf("%d warnings logged for %d refusals (at most %d), %d suppressed", lines, st.RefusedPerSource, max, st.LogsSuppressed)
	}
}

// 512 connections from 32 addresses fill every slot (Conns 256): each new
// legitimate connection takes the slot of the attacker that has waited
// longest, and a kernel download in progress is never cut for it.
func TestSlowlorisManyAddresses(t *testing.T) {
	const sources, perSource, slots = 32, 16, 256
	e := startConfig(t, boot.PolicyLocal, Config{Neighbors: is(macCHAP),
		Limits: httplimit.Config{Conns: slots, ConnsPerSource: perSource}})
	// A kernel larger than the socket buffers, read slowly: its
	// connection is in a request all along.
	big := bytes.Repeat([]byte("kernel-bytes...."), 1<<20) // 16 MiB
	if err := os.WriteFile(filepath.Join(e.dir, "vmlinuz"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	dl, err := http.Get(e.url + "/hosts/52-54-00-00-00-03/kernel")
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Body.Close()
	head := make([]byte, 1024)
	if _, err := io.ReadFull(dl.Body, head); err != nil {
		t.Fatal(err)
	}

	base := fetchScripts(t, e, 20)
	var from []string
	for i := range sources {
		from = append(from, fmt.Sprintf("127.0.1.%d", 10+i))
	}
	sl := startSlowloris(t, e.addr, from, perSource)
	waitFor(t, "the attack to fill every slot", func() bool {
		d, _ := sl.counts()
		return d >= sources*perSource && e.srv.Stats().Limits.Open == slots
	})
	// Each fetch meets a full table: the attackers retake the slot a fetch
	// freed only at their next redial, so wait for that, or a fetch would
	// find a free slot and there would be nothing to show.
	var took []time.Duration
	evicted := uint64(0)
	for range 5 {
		waitFor(t, "the attack to fill every slot again", func() bool { return e.srv.Stats().Limits.Open == slots })
		before := e.srv.Stats().Limits.Evicted
		took = append(took, fetchScripts(t, e, 1)...)
		if e.srv.Stats().Limits.Evicted > before {
			evicted++
		}
	}
	took = append(took, fetchScripts(t, e, 15)...)
	st := e.srv.Stats().Limits
	t.Logf("slowloris of %d connections from %d addresses, %d slots: %d evicted, %d refused; script latency median %v max %v (unattacked median %v max %v)",
		sources*perSource, sources, slots, st.Evicted, st.RefusedPerSource+st.RefusedTotal, median(took), slices.Max(took), median(base), slices.Max(base))
	if slices.Max(took) > maxScriptLatency {
		t.Errorf("a script took %v under attack", slices.Max(took))
	}
	if evicted != 5 {
		t.Errorf("%d of 5 legitimate fetches into a full table evicted an attacker, want each", evicted)
	}
	sl.stop()
	rest, err := io.ReadAll(dl.Body)
	if err != nil || !bytes.Equal(append(head, rest...), big) {
		t.Fatalf("the kernel download in progress was cut: %d of %d bytes, %v", len(head)+len(rest), len(big), err)
	}
}

// However steadily a client sends its headers byte by byte, it is cut
// once HeaderTimeout has passed.
func TestHeaderTimeoutCutsSlowloris(t *testing.T) {
	e := startConfig(t, boot.PolicyLocal, Config{HeaderTimeout: 300 * time.Millisecond})
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now() // the server's clock started at its accept, about now
	var werr error
	for i := 0; werr == nil && time.Since(start) < 10*time.Second; i++ {
		b := byte('a')
		if i < len(lorisRequest) {
			b = lorisRequest[i]
		}
		_, werr = c.Write([]byte{b})
		if werr == nil {
			// The server answers 408 or closes: either ends it.
			c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if n, rerr := c.Read(make([]byte, 512)); n > 0 || rerr == io.EOF {
				break
			}
		}
	}
	took := time.Since(start)
	if took < 200*time.Millisecond || took > 5*time.Second {
		t.Fatalf("a byte-by-byte client was cut after %v, want just after 300ms", took)
	}
	t.Logf("byte-by-byte client cut after %v", took.Round(time.Millisecond))
}
