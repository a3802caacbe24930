package web

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/diskless-boot/diskless/internal/boot"
	"github.com/diskless-boot/diskless/internal/httplimit"
)

// FuzzHandler sends the boot plane's handler requests built from the
// input: any method, path, query and headers, from addresses that resolve
// to one host, another or none. Requests are structured (a path kind, MAC
// spellings, Range headers, remote and local addresses), with raw bytes
// where they matter, so that most reach the handlers rather than the mux's
// 404. Checked for each request:
//   - no panic, and never a 5xx: every error a client can cause is a 4xx
//     (the only 5xx is the 503 of a host whose boot cannot start, when the
//     input makes BeginBoot fail);
//   - a CHAP secret is in an answer only when the host itself asked for
//     its own script (the request's source resolves to the script's MAC,
//     and in DHCP full mode it is the address leased to that MAC), never
//     in a header, never in the logs;
//   - a new boot starts (BeginBoot) only for the host asking itself;
//   - a host file answer is the host's kernel or initrd, byte for byte
//     (ranges included), never another file.
func FuzzHandler(f *testing.F) {
	for _, s := range fhSeeds() {
		f.Add(s)
	}
	env := newFhEnv(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, f := range env.run(data) {
			t.Error(f)
		}
	})
}

// TestFuzzHandlerDetects checks that FuzzHandler's checks can fail: a
// neighbour table that takes every address for the CHAP host's must get
// its script refused to the seed that asks from another host's address.
func TestFuzzHandlerDetects(t *testing.T) {
	e := newFhEnv(t)
	for _, s := range e.servers {
		s.cfg.Neighbors = NeighborFunc(func(netip.Addr) (net.HardwareAddr, bool) { return fhCHAP, true })
	}
	got := e.run(fhSeeds()[1]) // the CHAP host's script from 10.0.0.2
	if !slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, "holds a secret") }) {
		t.Errorf("a script with secrets served to another host went unnoticed: %q", got)
	}
}

const (
	fhSecret       = "Fuzz-CHAP-0123456789"
	fhMutualSecret = "Fuzz-Mutual-9876543210"
)

var (
	fhCHAP   = net.HardwareAddr{0x52, 0x54, 0x00, 0xfa, 0x00, 0x01}
	fhPlain  = net.HardwareAddr{0x52, 0x54, 0x00, 0xfa, 0x00, 0x02}
	fhKernel = net.HardwareAddr{0x52, 0x54, 0x00, 0xfa, 0x00, 0x03}
	fhOther  = net.HardwareAddr{0x52, 0x54, 0x00, 0xfa, 0x00, 0x09}
	// Who the neighbour table says sent a request.
	fhNeighbors = map[netip.Addr]net.HardwareAddr{
		netip.MustParseAddr("10.0.0.1"): fhCHAP,
		netip.MustParseAddr("10.0.0.2"): fhPlain,
		netip.MustParseAddr("10.0.0.3"): fhKernel,
		netip.MustParseAddr("fd00::1"):  fhCHAP,
	}
	fhRemotes = []string{"10.0.0.1:1234", "10.0.0.2:1234", "10.0.0.3:1234", "10.0.0.9:1234", "[fd00::1]:80",
		"[::ffff:10.0.0.1]:5", "[fd00::9]:1", "garbage", ""}
	fhLocals = []net.Addr{&net.TCPAddr{IP: net.IPv4(10, 0, 0, 254), Port: 8080},
		&net.TCPAddr{IP: net.ParseIP("fd00::fe"), Port: 8080}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80}}
	fhMACs = []string{fhCHAP.String(), fhPlain.String(), fhKernel.String(), fhOther.String(),
		strings.ToUpper(fhCHAP.String()), strings.ReplaceAll(fhCHAP.String(), ":", "-"), "5254.00fa.0001",
		"52:54:00:fa:00:01:00:00", "02:00:5e:10:00:00:00:01", "zz", "", "52:54:00:fa:00:01%00"}
	fhFiles    = []string{"kernel", "initrd", "image", "..", "%2e%2e", "kernel%2f..%2f..%2fetc%2fpasswd", ""}
	fhBinaries = []string{"snponly.efi", "ipxe.lkrn", "undionly.kpxe", "..%2fboot.ipxe", "snponly.efi/..", "%2e%2e/etc/passwd", ""}
	fhRanges   = []string{"", "bytes=0-15", "bytes=16-31", "bytes=-5", "bytes=100000-", "bytes=5-1", "bytes=0-1,3-4,0-100",
		"bytes=0-0,1-1,2-2,3-3,4-4,5-5,6-6,7-7,8-8,9-9,10-10", "items=0-1", "bytes=99999999999999999999-"}
	fhMethods = []string{"GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "BREW"}
)

var fhTrace func(*http.Request, *httptest.ResponseRecorder)

// fhEnv is the handler under test, one per policy (unknown MACs get a
// script, a menu, or nothing), plus what the checks need.
type fhEnv struct {
	servers  map[fhKey]*Server
	logs     *fhLogs
	kernel   []byte
	initrd   []byte
	mu       sync.Mutex
	began    []string
	failBoot bool
}

type fhLogs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *fhLogs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func newFhEnv(f testing.TB) *fhEnv {
	dir := f.TempDir()
	e := &fhEnv{servers: map[fhKey]*Server{}, logs: &fhLogs{},
		kernel: bytes.Repeat([]byte("0123456789abcdef"), 512), initrd: []byte("initrd contents")}
	os.WriteFile(filepath.Join(dir, "vmlinuz"), e.kernel, 0o644)
	os.WriteFile(filepath.Join(dir, "initrd"), e.initrd, 0o644)
	hosts := []boot.Host{
		{MAC: fhCHAP, Name: "secret-host", Mode: boot.Sanboot, InitiatorIQN: "iqn.2026-01.boot.diskless:host.1",
			TargetIQN: "iqn.2026-01.boot.diskless:disk.1", CHAP: &boot.Credentials{User: "u1", Secret: fhSecret},
			MutualCHAP: &boot.Credentials{User: "t1", Secret: fhMutualSecret}},
		{MAC: fhPlain, Name: "plain-host", Mode: boot.Sanboot, InitiatorIQN: "iqn.2026-01.boot.diskless:host.2",
			TargetIQN: "iqn.2026-01.boot.diskless:disk.2"},
		{MAC: fhKernel, Name: "kernel-host", Mode: boot.Kernel, InitiatorIQN: "iqn.2026-01.boot.diskless:host.3",
			TargetIQN: "iqn.2026-01.boot.diskless:disk.3", Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd")},
	}
	neighbors := NeighborFunc(func(ip netip.Addr) (net.HardwareAddr, bool) {
		mac, ok := fhNeighbors[ip]
		return mac, ok
	})
	for _, k := range fhKeys() {
		b, err := boot.New(boot.Config{Hosts: hosts, Unknown: k.policy, HTTPPort: 8080,
			Binaries: fstest.MapFS{"snponly.efi": {Data: []byte("EFI binary")}, "ipxe.lkrn": {Data: []byte("x")}}})
		if err != nil {
			f.Fatal(err)
		}
		var leases Leases
		if k.leases != fhNoLeases {
			leases = LeaseFunc(func(mac net.HardwareAddr, ip netip.Addr) bool { return fhLeased(k.leases, mac, ip) })
		}
		s, err := New(Config{Booter: b, Neighbors: neighbors, Leases: leases, Logger: slog.New(slog.NewTextHandler(e.logs, nil)),
			// Inputs share the server: its request rate per source
			// would soon answer everything 429.
			Limits: httplimit.Config{RequestsPerSecond: 1e9, Burst: 1 << 30},
			BeginBoot: func(mac net.HardwareAddr, host string) error {
				e.mu.Lock()
				defer e.mu.Unlock()
				e.began = append(e.began, mac.String())
				if e.failBoot {
					return fmt.Errorf("busy")
				}
				return nil
			}})
		if err != nil {
			f.Fatal(err)
		}
		e.servers[k] = s
	}
	return e
}

// fhKey picks one of the servers: the unknown-host policy, and whether
// DHCP leases are checked (full mode) and agree with the neighbour table.
type fhKey struct {
	policy boot.Policy
	leases int
}

const (
	fhNoLeases     = iota // proxy mode: the neighbour table decides
	fhLeasesAgree         // full mode, the leases agree with it
	fhLeasesDiffer        // full mode, 10.0.0.1 is leased to another MAC
)

func fhKeys() []fhKey {
	var ks []fhKey
	for _, l := range []int{fhNoLeases, fhLeasesAgree, fhLeasesDiffer} {
		for _, p := range []boot.Policy{boot.PolicyLocal, boot.PolicyMenu, boot.PolicyRefuse} {
			ks = append(ks, fhKey{p, l})
		}
	}
	return ks
}

// fhLeased is the DHCP lease table of a lease mode.
func fhLeased(mode int, mac net.HardwareAddr, ip netip.Addr) bool {
	if mode == fhLeasesDiffer && ip == netip.MustParseAddr("10.0.0.1") {
		return mac.String() == fhOther.String()
	}
	got, ok := fhNeighbors[ip]
	return ok && got.String() == mac.String()
}

type fhInput struct{ b []byte }

func (in *fhInput) u8() byte {
	if len(in.b) == 0 {
		return 0
	}
	v := in.b[0]
	in.b = in.b[1:]
	return v
}

func (in *fhInput) str(max int) string {
	n := min(int(in.u8())%(max+1), len(in.b))
	s := string(in.b[:n])
	in.b = in.b[n:]
	return s
}

func pick[T any](in *fhInput, list []T) T { return list[int(in.u8())%len(list)] }

// run sends the requests the input describes, one after another:
//
//	policy, BeginBoot fails
//	then per request: method, path kind, remote, local, and what the
//	kind reads (MACs, file, binary, query extras, Range, raw strings)
func (e *fhEnv) run(data []byte) []string {
	in := &fhInput{b: data}
	var fails []string
	key := pick(in, fhKeys())
	srv := e.servers[key]
	e.mu.Lock()
	e.failBoot = in.u8()%4 == 3
	e.mu.Unlock()
	for n := 0; len(in.b) > 0 && n < 32; n++ {
		method := pick(in, fhMethods)
		kind := in.u8() % 6
		remote := pick(in, fhRemotes)
		local := pick(in, fhLocals)
		var target string
		q := url.Values{}
		var scriptMAC string
		switch kind {
		case 0, 1: // the script, the most attacked endpoint
			scriptMAC = pick(in, fhMACs)
			q.Add("mac", scriptMAC)
			if x := in.u8(); x&1 != 0 {
				q.Add("mac", pick(in, fhMACs)) // a second mac: the first counts
			} else if x&2 != 0 {
				q.Set("arch", in.str(64))
				q.Set("platform", in.str(16))
			}
			target = boot.ScriptPath + "?" + q.Encode()
		case 2:
			mac := pick(in, fhMACs)
			if in.u8()&1 != 0 {
				mac = strings.ReplaceAll(mac, ":", "-")
			}
			target = "/hosts/" + mac + "/" + pick(in, fhFiles)
		case 3:
			target = boot.BinaryPathPrefix + pick(in, fhBinaries)
		case 4:
			target = "/" + in.str(48) + "?" + in.str(32)
		case 5: // a script's failure report
			q.Set("mac", pick(in, fhMACs))
			q.Set("step", pick(in, []string{"sanboot", "kernel", "initrd", "boot", "sanhook", "", "format"}))
			q.Set("errno", in.str(12))
			target = boot.ReportPath + "?" + q.Encode()
		}
		// As net/http parses a request line: a target it cannot parse
		// never reaches the handler.
		u, err := url.ParseRequestURI(target)
		if err != nil {
			continue
		}
		r := &http.Request{Method: method, URL: u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{}, Host: "10.0.0.254:8080", RemoteAddr: remote, RequestURI: target}
		if rg := pick(in, fhRanges); rg != "" {
			r.Header.Set("Range", rg)
		}
		if x := in.u8(); x%3 == 1 {
			r.Header.Set("If-Modified-Since", "Mon, 02 Jan 2006 15:04:05 GMT")
		} else if x%3 == 2 {
			r.Header.Set("If-None-Match", `"x"`)
		}
		r = r.WithContext(context.WithValue(context.Background(), http.LocalAddrContextKey, local))
		e.mu.Lock()
		e.began = nil
		failBoot := e.failBoot
		e.mu.Unlock()
		w := httptest.NewRecorder()
		srv.Handler().ServeHTTP(w, r)
		if fhTrace != nil {
			fhTrace(r, w)
		}
		fails = append(fails, e.check(r, w, scriptMAC, failBoot, key.leases)...)
	}
	e.logs.mu.Lock()
	logs := e.logs.buf.String()
	e.logs.buf.Reset()
	e.logs.mu.Unlock()
	if strings.Contains(logs, fhSecret) || strings.Contains(logs, fhMutualSecret) {
		fails = append(fails, "a secret in the logs:\n"+logs)
	}
	return fails
}

// source is the MAC the neighbour table gives for a request's source.
func source(r *http.Request) (net.HardwareAddr, bool) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return nil, false
	}
	mac, ok := fhNeighbors[ap.Addr().Unmap()]
	return mac, ok
}

func (e *fhEnv) check(r *http.Request, w *httptest.ResponseRecorder, scriptMAC string, failBoot bool, leases int) (fails []string) {
	errorf := func(format string, args ...any) { fails = append(fails, fmt.Sprintf(format, args...)) }
	desc := fmt.Sprintf("%s %s from %q", r.Method, r.URL.RequestURI(), r.RemoteAddr)
	body := w.Body.String()
	src, resolved := source(r)
	ownScript := false
	if r.URL.Path == boot.ScriptPath && (r.Method == "GET" || r.Method == "HEAD") {
		if mac, err := net.ParseMAC(scriptMAC); err == nil && resolved && mac.String() == src.String() {
			ap, _ := netip.ParseAddrPort(r.RemoteAddr)
			ownScript = leases == fhNoLeases || fhLeased(leases, mac, ap.Addr().Unmap())
		}
	}
	switch {
	case w.Code == http.StatusServiceUnavailable && failBoot && ownScript:
	case w.Code >= 500:
		errorf("%s: %d %q", desc, w.Code, body)
	}
	for _, s := range []string{fhSecret, fhMutualSecret} {
		if strings.Contains(body, s) && !(ownScript && w.Code == 200) {
			errorf("%s: answer %d holds a secret:\n%s", desc, w.Code, body)
		}
		for k, v := range w.Header() {
			if strings.Contains(strings.Join(v, " "), s) {
				errorf("%s: header %s holds a secret", desc, k)
			}
		}
	}
	e.mu.Lock()
	began := e.began
	e.mu.Unlock()
	if len(began) > 0 && (!ownScript || len(began) > 1 || began[0] != src.String()) {
		errorf("%s: began the boot of %v (own script %v)", desc, began, ownScript)
	}
	if strings.HasPrefix(r.URL.Path, "/hosts/") && (w.Code == 200 || w.Code == 206) && r.Method == "GET" {
		if !bytes.Contains(e.kernel, w.Body.Bytes()) && !bytes.Contains(e.initrd, w.Body.Bytes()) &&
			!strings.Contains(w.Header().Get("Content-Type"), "multipart/byteranges") {
			errorf("%s: %d answered %d bytes that are neither the kernel nor the initrd", desc, w.Code, w.Body.Len())
		}
	}
	return fails
}

// fhSeeds: iPXE asking for its script (own MAC, another's, from an
// unresolved address), the kernel with ranges, binaries, junk.
func fhSeeds() [][]byte {
	// policy, failBoot; then method, kind, remote, local, ...
	script := func(method, remote, local, mac, extra, rng, cond byte) []byte {
		return []byte{method, 0, remote, local, mac, extra, rng, cond}
	}
	return [][]byte{
		append([]byte{0, 0}, script(0, 0, 0, 0, 0, 0, 0)...),
		append(append([]byte{0, 0}, script(0, 1, 0, 0, 0, 0, 0)...), script(0, 3, 0, 0, 0, 0, 0)...),
		append(append([]byte{1, 3}, script(0, 0, 1, 0, 0, 0, 0)...), script(0, 5, 2, 4, 0, 0, 0)...),
		append([]byte{2, 0}, script(0, 8, 0, 3, 2, 0, 0)...),
		{0, 0, 0, 2, 2, 0, 2, 0, 1, 0, 0, 2, 2, 0, 1, 1, 3, 0, 0, 3, 2, 0, 1, 0, 5, 6, 1},
		{0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 3, 0, 0, 4, 0, 0, 0, 3, 0, 0, 5, 0, 0},
		{0, 0, 4, 4, 0, 0, 5, 'b', 'o', 'o', 't', '.', 0, 0, 0, 8, 4, 2, 0, 7, 0, 0},
	}
}
