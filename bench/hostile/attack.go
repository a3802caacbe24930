//go:build linux

package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// attackDef is one attack the harness runs.
type attackDef struct {
	describe func(sizes) string
	run      func(ctx context.Context, a *attacker)
	// watchSessions: the orchestrator tells the attacker every session
	// of pc1 the server logs ("session ISID/TSIH" on standard input).
	watchSessions bool
}

// attacks, by name; attackNames gives the order of a full run.
var attacks = map[string]attackDef{
	"iscsi-idle-1": {
		describe: func(z sizes) string {
			return fmt.Sprintf("%d idle TCP connections to the iSCSI portal from one address", z.idleConns)
		},
		run: func(ctx context.Context, a *attacker) { idleConns(ctx, a, a.sz.idleConns, a.addrs[:1]) },
	},
	"iscsi-idle-50": {
		describe: func(z sizes) string {
			return fmt.Sprintf("%d idle TCP connections to the iSCSI portal from %d addresses", z.idleConns, z.addrs)
		},
		run: func(ctx context.Context, a *attacker) { idleConns(ctx, a, a.sz.idleConns, a.addrs) },
	},
	"iscsi-held": {
		describe: func(z sizes) string {
			return fmt.Sprintf("%d logins stopped half way (in a PDU, after the first step) and %d idle discovery sessions, from %d addresses",
				z.heldLogins, z.discovery, z.addrs)
		},
		run: heldLogins,
	},
	"tftp-hold": {
		describe: func(z sizes) string {
			return fmt.Sprintf("%d TFTP read requests (timeout=255, blksize 1468) that never ACK, from %d addresses", z.tftpRequests, z.addrs)
		},
		run: tftpHold,
	},
	"dhcp-flood": {
		describe: func(z sizes) string {
			return fmt.Sprintf("%d DHCP DISCOVERs and REQUESTs from random MACs within the attack (each OFFER requested)", z.dhcpPackets)
		},
		run: dhcpFlood,
	},
	"write-no-data": {
		describe: func(z sizes) string {
			return fmt.Sprintf("%d sessions of host writer (its CHAP) sending %d KiB WRITEs whose Data-Out never comes", z.writeSessions, z.writeKiB)
		},
		run: writeNoData,
	},
	"slowloris": {
		describe: func(z sizes) string {
			return fmt.Sprintf("%d HTTP connections sending their headers a byte every %v, from %d addresses", z.slowloris, z.slowlorisEvery, z.addrs)
		},
		run: slowloris,
	},
	"impersonate": {
		describe: func(z sizes) string {
			return fmt.Sprintf("%d attempts/s to log in as pc1 and other with their initiator names and ISIDs (no secret, wrong secret, their TSIH), and to fetch pc1's script", z.impersonateRate)
		},
		run:           impersonate,
		watchSessions: true,
	},
}

func attackNames() []string {
	return []string{"iscsi-idle-1", "iscsi-idle-50", "iscsi-held", "tftp-hold", "dhcp-flood", "write-no-data", "slowloris", "impersonate"}
}

// flags are the attack sizes as the role's command line.
func (z sizes) flags() []string {
	return []string{"-addrs", strconv.Itoa(z.addrs), "-idle-conns", strconv.Itoa(z.idleConns),
		"-held-logins", strconv.Itoa(z.heldLogins), "-discovery", strconv.Itoa(z.discovery),
		"-tftp-requests", strconv.Itoa(z.tftpRequests), "-dhcp-packets", strconv.Itoa(z.dhcpPackets),
		"-write-sessions", strconv.Itoa(z.writeSessions), "-write-kib", strconv.Itoa(z.writeKiB),
		"-slowloris-conns", strconv.Itoa(z.slowloris), "-slowloris-every", z.slowlorisEvery.String(),
		"-impersonate-rate", strconv.Itoa(z.impersonateRate)}
}

// attackResult is what the attacker saw.
type attackResult struct {
	Attack     string           `json:"attack"`
	ReadyAfter float64          `json:"ready_after"` // seconds from start to in place
	Counts     map[string]int64 `json:"counts"`
	Notes      []string         `json:"notes,omitempty"`
	// Breaches are what the attacker got that it must never get.
	Breaches []string `json:"breaches,omitempty"`
}

// attacker is the state of the attack role. Its methods are safe for
// concurrent use.
type attacker struct {
	site  siteInfo
	sz    sizes
	iface string
	addrs []netip.Addr // the addresses to attack from (-addrs of them)
	// otherSession is the other host's session, "ISID/TSIH".
	otherSession string
	// sessions delivers pc1's sessions as the orchestrator learns them.
	sessions chan string
	start    time.Time
	duration time.Duration

	mu      sync.Mutex
	res     attackResult
	ready1  sync.Once
	notes   map[string]bool
	samples map[string][]time.Duration
}

func runAttack(ro roleOptions, o options) error {
	def, ok := attacks[ro.attack]
	if !ok {
		return fmt.Errorf("unknown attack %q", ro.attack)
	}
	si, err := readSite(ro.site)
	if err != nil {
		return err
	}
	a := &attacker{site: si, sz: o.sz, iface: ro.iface, otherSession: ro.otherSession, sessions: make(chan string, 16),
		start: time.Now(), duration: o.duration, notes: map[string]bool{}, samples: map[string][]time.Duration{}}
	a.res = attackResult{Attack: ro.attack, Counts: map[string]int64{}}
	for i := 1; i <= o.sz.addrs; i++ {
		a.addrs = append(a.addrs, netip.MustParseAddr(fmt.Sprintf("%s%d", atkPrefix, i)))
	}
	// Until "stop" or EOF on standard input; at most the duration and
	// two minutes, should the orchestrator be gone.
	ctx, cancel := context.WithTimeout(context.Background(), o.duration+2*time.Minute)
	defer cancel()
	go func() {
		for c := range readCommands() {
			if c == "stop" {
				break
			}
			if s, ok := strings.CutPrefix(c, "session "); ok {
				select {
				case a.sessions <- s:
				default:
				}
			}
		}
		cancel()
	}()
	def.run(ctx, a)
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, d := range a.samples {
		slices.Sort(d)
		a.res.Notes = append(a.res.Notes, fmt.Sprintf("%s: %d, p50 %.1f s, max %.1f s", k, len(d), d[len(d)/2].Seconds(), d[len(d)-1].Seconds()))
	}
	sort.Strings(a.res.Notes)
	return writeResult(ro.result, a.res)
}

// ready tells the orchestrator the attack is in place (once).
func (a *attacker) ready(format string, args ...any) {
	a.ready1.Do(func() {
		a.mu.Lock()
		a.res.ReadyAfter = time.Since(a.start).Seconds()
		a.mu.Unlock()
		fmt.Printf("ready "+format+"\n", args...)
	})
}

func (a *attacker) count(name string, n int64) {
	a.mu.Lock()
	a.res.Counts[name] += n
	a.mu.Unlock()
}

// gauge keeps the largest value seen under name.
func (a *attacker) gauge(name string, v int64) {
	a.mu.Lock()
	a.res.Counts[name] = max(a.res.Counts[name], v)
	a.mu.Unlock()
}

func (a *attacker) set(name string, v int64) {
	a.mu.Lock()
	a.res.Counts[name] = v
	a.mu.Unlock()
}

var addrPort = regexp.MustCompile(`\d+\.\d+\.\d+\.\d+:\d+`)

// note records a remark once; addresses and ports are left out, so that
// the same failure from many connections is one remark.
func (a *attacker) note(format string, args ...any) {
	s := addrPort.ReplaceAllString(fmt.Sprintf(format, args...), "ADDR")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	a.mu.Lock()
	if !a.notes[s] && len(a.notes) < 50 {
		a.notes[s] = true
		a.res.Notes = append(a.res.Notes, s)
	}
	a.mu.Unlock()
}

func (a *attacker) breach(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	a.mu.Lock()
	if !slices.Contains(a.res.Breaches, s) {
		a.res.Breaches = append(a.res.Breaches, s)
	}
	a.mu.Unlock()
}

// sample records a duration under name (summarized as count, p50, max).
func (a *attacker) sample(name string, d time.Duration) {
	a.mu.Lock()
	a.samples[name] = append(a.samples[name], d)
	a.mu.Unlock()
}

// portal is the iSCSI portal.
func (a *attacker) portal() string { return a.site.Server + ":3260" }

// dialTCP connects from local to addr within 5 s.
func dialTCP(ctx context.Context, local netip.Addr, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: local.AsSlice()}, Timeout: 5 * time.Second}
	return d.DialContext(ctx, "tcp", addr)
}

// sleepCtx sleeps d or until ctx ends; false when ctx ended.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// backoff is how an attacker comes back to a slot the server closed: a
// slot refused at once (the server is full, or refuses this address) is
// tried again after a random 1-3 s, so the retries of thousands of slots
// spread out evenly and a slot the server frees (a rebooting host's old
// session, ended at its new DHCP request) is taken again within
// milliseconds - a few thousand connects a second for 5000 slots, which
// the server must refuse cheaply; a slot the server held for 10 s or more
// and then closed (a timeout) is taken again at once.
type backoff struct{}

func (backoff) wait(ctx context.Context, held time.Duration) bool {
	d := time.Second + rand.N(2*time.Second)
	if held >= 10*time.Second {
		d = rand.N(100 * time.Millisecond)
	}
	return sleepCtx(ctx, d)
}

// settled calls ready once held (the connections held now) has not grown
// for 2 s, or 10 s after the start: the server has taken all it will.
func settled(ctx context.Context, held *atomic.Int64, ready func(int64)) {
	best, since := held.Load(), time.Now()
	deadline := time.Now().Add(10 * time.Second)
	for time.Since(since) < 2*time.Second && time.Now().Before(deadline) {
		if !sleepCtx(ctx, 250*time.Millisecond) {
			return
		}
		if h := held.Load(); h > best {
			best, since = h, time.Now()
		}
	}
	ready(held.Load())
}

// holdOpen reads from c until the peer closes it (true) or ctx ends
// (false, c closed), handing what arrives to data when not nil.
func holdOpen(ctx context.Context, c net.Conn, data func([]byte)) bool {
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	buf := make([]byte, 512)
	for {
		n, err := c.Read(buf)
		if n > 0 && data != nil {
			data(buf[:n])
		}
		if err != nil {
			c.Close()
			return ctx.Err() == nil
		}
	}
}

// closeKind names how long a connection lived before the server closed
// it, so the report tells "refused at once" from "timed out".
func closeKind(held time.Duration) string {
	switch {
	case held < time.Second:
		return "closed by the server within 1 s"
	case held < 10*time.Second:
		return "closed by the server after 1-10 s"
	default:
		return "closed by the server after 10 s or more"
	}
}
