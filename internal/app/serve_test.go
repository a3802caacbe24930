package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/config"
	"github.com/diskless-boot/diskless/internal/dhcp"
	"github.com/diskless-boot/diskless/internal/testutil/output"
	"github.com/diskless-boot/diskless/internal/testutil/ports"
)

// loadConfig writes a YAML config serving 127.0.0.1 (on "lo") with one
// host on a raw disk file and loads it.
func loadConfig(t *testing.T, extra string) (*config.Config, int, int) {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	return writeConfig(t, filepath.Join(dir, "state"), fmt.Sprintf(`hosts:
  - mac: 52:54:00:12:34:56
    name: client1
    image: %s
%s`, img, extra))
}

// writeConfig writes and loads a config serving data on 127.0.0.1 with
// free ports, no DHCP and no TFTP, plus extra YAML.
func writeConfig(t *testing.T, data, extra string) (*config.Config, int, int) {
	t.Helper()
	httpPort, iscsiPort := ports.FreeTCP(t), ports.FreeTCP(t)
	path := filepath.Join(t.TempDir(), "diskless.yaml")
	y := fmt.Sprintf(`interface: lo
server_ip: 127.0.0.1
data_dir: %s
dhcp: {mode: off}
tftp: {enabled: false}
http: {listen: "127.0.0.1:%d"}
iscsi: {listen: "127.0.0.1:%d"}
%s`, data, httpPort, iscsiPort, extra)
	if err := os.WriteFile(path, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, httpPort, iscsiPort
}

// RunServe serves a host's script over HTTP and its target over iSCSI,
// generates its CHAP secrets without printing or logging them, and stops
// cleanly on cancel.
func TestRunServeLoopback(t *testing.T) {
	cfg, httpPort, iscsiPort := loadConfig(t, "")
	var logs output.Output
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- RunServe(ctx, ServeOptions{Config: cfg,
			Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	}()
	url := fmt.Sprintf("http://127.0.0.1:%d/boot.ipxe?mac=52:54:00:12:34:56", httpPort)
	var resp *http.Response
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var err error
		if resp, err = http.Get(url); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("RunServe returned early: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("HTTP not serving: %v", err)
		}
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// CHAP is on by default, so the script holds secrets, and 127.0.0.1
	// is not in lo's neighbour table as 52:54:00:12:34:56: refused.
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("script with secrets to an unproven address: %d %s", resp.StatusCode, body)
	}
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", iscsiPort))
	if err != nil {
		t.Fatalf("iSCSI portal: %v", err)
	}
	c.Close()
	// Metrics on the API's side of the HTTP listener, behind its token.
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", httpPort)
	if resp, err := http.Get(metricsURL); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("metrics without the token: %v %v", err, resp)
	}
	tokNow, _ := os.ReadFile(filepath.Join(cfg.DataDir, "api-token"))
	req, _ := http.NewRequest("GET", metricsURL, nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tokNow)))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("metrics with the token: %v %v", err, resp)
	} else {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{"diskless_iscsi_connections_accepted_total ", `diskless_host_online{host="client1"} 0`,
			`diskless_http_scripts_total{result="refused"} 1`,
			`diskless_api_requests_refused_total{reason="unauthenticated"} 1`} { // the GET without the token
			if !strings.Contains(string(body), want) {
				t.Errorf("metrics lack %q", want)
			}
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("RunServe did not return after cancel")
	}
	site, err := OpenSite(t.Context(), cfg.DataDir, SiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h, err := site.Inv.HostWithSecrets("client1")
	site.Close()
	if err != nil || h.CHAP == nil || h.MutualCHAP == nil {
		t.Fatalf("client1: %v %+v", err, h)
	}
	tok, _ := os.ReadFile(filepath.Join(cfg.DataDir, "api-token"))
	for what, secret := range map[string]string{"chap": h.CHAP.Secret, "mutual_chap": h.MutualCHAP.Secret, "token": strings.TrimSpace(string(tok))} {
		if secret == "" || strings.Contains(logs.String(), secret) {
			t.Errorf("the %s secret reached the logs (or is empty)", what)
		}
	}
	if n := strings.Count(logs.String(), "CHAP credentials generated"); n != 2 {
		t.Errorf("%d log lines about generated credentials, want 2 (chap, mutual_chap)", n)
	}
	// A restart keeps the secrets: nothing generated again.
	cfg2, _, _ := loadConfig(t, "")
	cfg2.DataDir = cfg.DataDir
	var logs2 output.Output
	ctx2, cancel2 := context.WithCancel(t.Context())
	go func() {
		done <- RunServe(ctx2, ServeOptions{Config: cfg2, Logger: slog.New(slog.NewTextHandler(&logs2, nil))})
	}()
	time.Sleep(200 * time.Millisecond)
	cancel2()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs2.String(), "generated") {
		t.Errorf("restart generated credentials again:\n%s", logs2.String())
	}
}

// A port in use fails the start and leaves nothing serving.
func TestRunServePortInUse(t *testing.T) {
	cfg, httpPort, _ := loadConfig(t, "")
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", httpPort))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	err = RunServe(t.Context(), ServeOptions{Config: cfg})
	if err == nil || !strings.Contains(err.Error(), "http.listen") {
		t.Fatalf("got %v, want an http.listen error", err)
	}
	iscsi := fmt.Sprintf("127.0.0.1:%d", cfg.ISCSIPort())
	if c, err := net.Dial("tcp", iscsi); err == nil {
		c.Close()
		t.Errorf("iSCSI portal %s still open after the failed start", iscsi)
	}
}

func TestRunServeUnknownInterface(t *testing.T) {
	cfg, _, _ := loadConfig(t, "")
	cfg.Interface = "nonexistent0"
	cfg.ServerIP = ""
	err := RunServe(t.Context(), ServeOptions{Config: cfg})
	if err == nil || !strings.Contains(err.Error(), "interface") {
		t.Fatalf("got %v, want an interface error", err)
	}
}

func TestArchCode(t *testing.T) {
	cases := []struct {
		ci   dhcp.ClientInfo
		want uint16
	}{
		{dhcp.ClientInfo{ArchCode: 7, Arch: dhcp.ArchEFIx64}, 7},
		{dhcp.ClientInfo{ArchCode: 9, Arch: dhcp.ArchEFIx64}, 9},
		{dhcp.ClientInfo{ArchCode: -1, Arch: dhcp.ArchBIOS}, 0},
		{dhcp.ClientInfo{ArchCode: -1, Arch: dhcp.ArchEFIx64}, 7},
		{dhcp.ClientInfo{ArchCode: -1, Arch: dhcp.ArchEFIARM64HTTP}, 19},
	}
	for _, tc := range cases {
		if got := archCode(tc.ci); got != tc.want {
			t.Errorf("%+v: %d want %d", tc.ci, got, tc.want)
		}
	}
}
