package web

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/diskless-boot/diskless/internal/boot"
	"github.com/diskless-boot/diskless/internal/testutil/output"
)

var (
	macCHAP   = net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x00, 0x01}
	macPlain  = net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x00, 0x02}
	macKernel = net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x00, 0x03}
	macOther  = net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x00, 0x09}
)

const secret = "Abcdefgh1234XYZ9"

type env struct {
	url    string
	addr   string
	dir    string // holds the kernel host's vmlinuz and initrd
	logs   *output.Output
	srv    *Server
	booter *boot.Booter
	kernel []byte
}

func iqn(kind string, mac net.HardwareAddr) string {
	return "iqn.2026-01.boot.diskless:0a1b2c3d." + kind + "." + strings.ReplaceAll(mac.String(), ":", "")
}

// start serves a Booter with three hosts on 127.0.0.1; neighbors answers
// for 127.0.0.1.
func start(t *testing.T, policy boot.Policy, neighbors Neighbors) *env {
	t.Helper()
	return startWith(t, policy, neighbors, nil)
}

func startWith(t *testing.T, policy boot.Policy, neighbors Neighbors, beginBoot func(net.HardwareAddr, string) error) *env {
	t.Helper()
	return startConfig(t, policy, Config{Neighbors: neighbors, BeginBoot: beginBoot})
}

// startConfig serves the three hosts with cfg (its Booter and Logger set
// here).
func startConfig(t *testing.T, policy boot.Policy, cfg Config) *env {
	t.Helper()
	dir := t.TempDir()
	kernel := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	os.WriteFile(filepath.Join(dir, "vmlinuz"), kernel, 0o644)
	os.WriteFile(filepath.Join(dir, "initrd"), []byte("initrd"), 0o644)
	h := func(mac net.HardwareAddr) boot.Host {
		return boot.Host{MAC: mac, Mode: boot.Sanboot, InitiatorIQN: iqn("host", mac), TargetIQN: iqn("disk", mac)}
	}
	withCHAP := h(macCHAP)
	withCHAP.Name = "secret-host"
	withCHAP.CHAP = &boot.Credentials{User: "u1", Secret: secret}
	kern := h(macKernel)
	kern.Mode, kern.Kernel, kern.Initrd = boot.Kernel, filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd")
	b, err := boot.New(boot.Config{
		Hosts: []boot.Host{withCHAP, h(macPlain), kern}, Unknown: policy, HTTPPort: 8080,
		Binaries: fstest.MapFS{"snponly.efi": {Data: []byte("EFI binary")}, "ipxe.lkrn": {Data: []byte("x")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	logs := &output.Output{}
	cfg.Booter, cfg.Logger = b, slog.New(slog.NewTextHandler(logs, nil))
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after its context ended")
		}
		if strings.Contains(logs.String(), secret) {
			t.Errorf("logs show a secret:\n%s", logs)
		}
	})
	return &env{url: "http://" + l.Addr().String(), addr: l.Addr().String(), dir: dir, logs: logs, srv: s, booter: b, kernel: kernel}
}

func get(t *testing.T, url string, hdr ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func is(mac net.HardwareAddr) Neighbors {
	return NeighborFunc(func(ip netip.Addr) (net.HardwareAddr, bool) {
		if ip == netip.MustParseAddr("127.0.0.1") {
			return mac, true
		}
		return nil, false
	})
}

func TestScriptWithoutSecretsToAnyone(t *testing.T) {
	e := start(t, boot.PolicyLocal, nil)
	code, body := get(t, e.url+"/boot.ipxe?mac="+macPlain.String())
	if code != 200 || !strings.Contains(body, "sanboot iscsi:127.0.0.1::3260:0:"+iqn("disk", macPlain)) {
		t.Fatalf("%d\n%s", code, body)
	}
	if !strings.Contains(e.logs.String(), `msg="iPXE script" mac=52:54:00:00:00:02 ip=127.0.0.1`) {
		t.Errorf("no per-MAC log line:\n%s", e.logs)
	}
}

// A new boot starts only when the host itself fetches its script: another
// address asking for a script without secrets gets it, but must not end
// the host's sessions or wipe its volatile disk. A failing start is a 503.
func TestBeginBootOnlyFromTheHost(t *testing.T) {
	var began []string
	fail := false
	hook := func(mac net.HardwareAddr, host string) error {
		began = append(began, mac.String()+" "+host)
		if fail {
			return errors.New("busy")
		}
		return nil
	}
	e := startWith(t, boot.PolicyLocal, is(macCHAP), hook)
	if code, _ := get(t, e.url+"/boot.ipxe?mac="+macPlain.String()); code != 200 {
		t.Fatalf("script without secrets: %d", code)
	}
	if len(began) != 0 {
		t.Fatalf("a script fetched from another host's address began a boot: %v", began)
	}
	if code, _ := get(t, e.url+"/boot.ipxe?mac="+macCHAP.String()); code != 200 {
		t.Fatalf("own script: %d", code)
	}
	if len(began) != 1 || began[0] != macCHAP.String()+" secret-host" {
		t.Fatalf("own fetch: began %v", began)
	}
	fail = true
	if code, body := get(t, e.url+"/boot.ipxe?mac="+macCHAP.String()); code != http.StatusServiceUnavailable || strings.Contains(body, secret) {
		t.Fatalf("failed start: %d %q", code, body)
	}
}

func TestSecretOnlyToItsHost(t *testing.T) {
	url := "/boot.ipxe?mac=" + macCHAP.String()
	t.Run("own host", func(t *testing.T) {
		e := start(t, boot.PolicyLocal, is(macCHAP))
		code, body := get(t, e.url+url)
		if code != 200 || !strings.Contains(body, "set password "+secret) {
			t.Fatalf("%d\n%s", code, body)
		}
	})
	for name, n := range map[string]Neighbors{
		"other host":  is(macOther),
		"unresolved":  NeighborFunc(func(netip.Addr) (net.HardwareAddr, bool) { return nil, false }),
		"no resolver": nil,
	} {
		t.Run(name, func(t *testing.T) {
			e := start(t, boot.PolicyLocal, n)
			code, body := get(t, e.url+url)
			if code != http.StatusForbidden || strings.Contains(body, secret) {
				t.Fatalf("%d\n%s", code, body)
			}
			if !strings.Contains(e.logs.String(), "iPXE script refused") || !strings.Contains(e.logs.String(), "mac="+macCHAP.String()) {
				t.Errorf("no clear log line:\n%s", e.logs)
			}
		})
	}
	// Asking for another MAC's script with one's own MAC resolved is no
	// way around it either.
	e := start(t, boot.PolicyLocal, is(macPlain))
	if code, _ := get(t, e.url+url); code != http.StatusForbidden {
		t.Errorf("got %d", code)
	}
}

func TestUnknownHosts(t *testing.T) {
	e := start(t, boot.PolicyRefuse, nil)
	if code, _ := get(t, e.url+"/boot.ipxe?mac="+macOther.String()); code != http.StatusForbidden {
		t.Errorf("refuse: %d", code)
	}
	e = start(t, boot.PolicyMenu, nil)
	code, body := get(t, e.url+"/boot.ipxe?mac="+macOther.String()+"&arch=x86_64&platform=efi")
	if code != 200 || !strings.Contains(body, "menu diskless") {
		t.Errorf("menu: %d\n%s", code, body)
	}
	l := e.booter.Registry().List()
	if len(l) != 1 || l[0].MAC.String() != macOther.String() || l[0].IP.String() != "127.0.0.1" || l[0].Arch != "x86_64 efi" {
		t.Errorf("registry: %+v", l)
	}
	// The admin's view of it is the API's (internal/api), not the boot
	// network's.
	if code, _ = get(t, e.url+"/unknown-hosts"); code != http.StatusNotFound {
		t.Errorf("/unknown-hosts on the boot plane: %d", code)
	}
	for _, q := range []string{"", "?mac=", "?mac=zz", "?mac=52:54:00:00:00:00:00:01"} {
		if code, _ := get(t, e.url+"/boot.ipxe"+q); code != http.StatusBadRequest {
			t.Errorf("%q: %d", q, code)
		}
	}
}

func TestKernelFiles(t *testing.T) {
	e := start(t, boot.PolicyLocal, nil)
	code, body := get(t, e.url+"/boot.ipxe?mac="+macKernel.String())
	if code != 200 || !strings.Contains(body, "kernel http://127.0.0.1:8080/hosts/52-54-00-00-00-03/kernel initrd=initrd") {
		t.Fatalf("%d\n%s", code, body)
	}
	code, body = get(t, e.url+"/hosts/52-54-00-00-00-03/kernel", "Range", "bytes=16-31")
	if code != http.StatusPartialContent || body != string(e.kernel[16:32]) {
		t.Errorf("range: %d %q", code, body)
	}
	code, body = get(t, e.url+"/hosts/52-54-00-00-00-03/kernel")
	if code != 200 || body != string(e.kernel) {
		t.Errorf("whole kernel: %d, %d bytes", code, len(body))
	}
	if code, body := get(t, e.url+"/hosts/52-54-00-00-00-03/initrd"); code != 200 || body != "initrd" {
		t.Errorf("initrd: %d %q", code, body)
	}
	for _, p := range []string{"/hosts/52-54-00-00-00-02/kernel", "/hosts/52-54-00-00-00-03/image", "/hosts/x/kernel", "/hosts/52-54-00-00-00-03/..%2f..%2fetc%2fpasswd"} {
		if code, _ := get(t, e.url+p); code != http.StatusNotFound {
			t.Errorf("%s: %d", p, code)
		}
	}
}

func TestBinaries(t *testing.T) {
	e := start(t, boot.PolicyLocal, nil)
	if code, body := get(t, e.url+"/ipxe/snponly.efi"); code != 200 || body != "EFI binary" {
		t.Errorf("snponly.efi: %d %q", code, body)
	}
	for _, p := range []string{"/ipxe/ipxe.lkrn", "/ipxe/..%2fboot.ipxe", "/ipxe/%2e%2e/etc/passwd", "/ipxe/subdir/../snponly.efi.x", "/ipxe/undionly.kpxe"} {
		if code, _ := get(t, e.url+p); code != http.StatusNotFound {
			t.Errorf("%s: %d", p, code)
		}
	}
}

func TestShutdownIdempotent(t *testing.T) {
	b, _ := boot.New(boot.Config{HTTPPort: 8080})
	s, _ := New(Config{Booter: b})
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background(), l) }()
	for range 2 {
		if err := s.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestParseARP(t *testing.T) {
	table := []byte(`IP address       HW type     Flags       HW address            Mask     Device
10.77.0.100      0x1         0x2         52:54:00:12:34:56     *        br0
10.77.0.101      0x1         0x0         00:00:00:00:00:00     *        br0
10.77.0.102      0x1         0x2         52:54:00:12:34:57     *        eth1
10.77.0.103      0x1         0x6         52:54:00:12:34:58     *        br0
garbage
`)
	path := filepath.Join(t.TempDir(), "arp")
	os.WriteFile(path, table, 0o644)
	tab := ARPTable{Path: path, Interface: "br0"}
	for ip, want := range map[string]string{
		"10.77.0.100":          "52:54:00:12:34:56",
		"::ffff:10.77.0.100":   "52:54:00:12:34:56",
		"10.77.0.101":          "", // incomplete
		"10.77.0.102":          "", // other interface
		"10.77.0.103":          "52:54:00:12:34:58",
		"10.77.0.104":          "",
		"fe80::5054:ff:fe12:1": "",
	} {
		mac, ok := tab.MACOf(netip.MustParseAddr(ip))
		if got := mac.String(); ok != (want != "") || got != want {
			t.Errorf("%s: %q %v, want %q", ip, got, ok, want)
		}
	}
	if mac, ok := (ARPTable{Path: path}).MACOf(netip.MustParseAddr("10.77.0.102")); !ok || mac.String() != "52:54:00:12:34:57" {
		t.Errorf("any interface: %v %v", mac, ok)
	}
	if _, ok := (ARPTable{Path: filepath.Join(t.TempDir(), "none")}).MACOf(netip.MustParseAddr("10.77.0.100")); ok {
		t.Error("missing table resolved")
	}
	chain := AnyOf{nil, NeighborFunc(func(netip.Addr) (net.HardwareAddr, bool) { return nil, false }), tab}
	if mac, ok := chain.MACOf(netip.MustParseAddr("10.77.0.100")); !ok || mac.String() != "52:54:00:12:34:56" {
		t.Errorf("AnyOf: %v %v", mac, ok)
	}
}

// In full DHCP mode the neighbour table and the server's leases must both
// name the host: a machine that copied a host's MAC gets neither its
// secrets nor a new boot of it from an address the host was not leased.
func TestSecretBoundToLease(t *testing.T) {
	leasedAt := func(ip string) Leases {
		return LeaseFunc(func(mac net.HardwareAddr, a netip.Addr) bool {
			return bytes.Equal(mac, macCHAP) && a == netip.MustParseAddr(ip)
		})
	}
	for _, tc := range []struct {
		name      string
		neighbors Neighbors
		leases    Leases
		want      int
		why       string
	}{
		{"both agree", is(macCHAP), leasedAt("127.0.0.1"), 200, ""},
		{"leased another address", is(macCHAP), leasedAt("127.0.0.7"), 403, "not the address this server's DHCP leased to the mac"},
		{"leased, the neighbour table names another", is(macOther), leasedAt("127.0.0.1"), 403, "the neighbour table names " + macOther.String()},
		{"leased, not in the neighbour table", NeighborFunc(func(netip.Addr) (net.HardwareAddr, bool) { return nil, false }), leasedAt("127.0.0.1"), 403, "no entry"},
		{"proxy mode: the neighbour table alone", is(macCHAP), nil, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			began := 0
			e := startConfig(t, boot.PolicyLocal, Config{Neighbors: tc.neighbors, Leases: tc.leases,
				BeginBoot: func(net.HardwareAddr, string) error { began++; return nil }})
			code, body := get(t, e.url+"/boot.ipxe?mac="+macCHAP.String())
			if code != tc.want || (code == 200) != strings.Contains(body, "set password "+secret) {
				t.Fatalf("%d, want %d\n%s", code, tc.want, body)
			}
			if want := map[bool]int{true: 1, false: 0}[code == 200]; began != want {
				t.Errorf("began %d boots, want %d", began, want)
			}
			if tc.why != "" && !strings.Contains(e.logs.String(), tc.why) {
				t.Errorf("the log does not say why (%q):\n%s", tc.why, e.logs)
			}
			st := e.srv.Stats()
			if code == 200 && st.Scripts != 1 || code != 200 && st.ScriptsRefused != 1 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}
