package app

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/api"
	"github.com/diskless-boot/diskless/internal/testutil/iscsiclient"
)

// A real scrape, after a host did I/O and had a command fail, passes
// `promtool check metrics` (Prometheus' own parser and linter) without a
// remark, and shows the host's latency and errors.
func TestMetricsPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (Debian package prometheus; scripts/ci-deps.sh installs it)")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "state")
	s := startSite(t, data, "hosts:\n  - {mac: '52:54:00:12:34:56', name: client1, image: "+img+", chap: false}\n")
	var h struct {
		TargetIQN    string `json:"target_iqn"`
		InitiatorIQN string `json:"initiator_iqn"`
	}
	s.call("GET", "/hosts/client1", nil, &h)

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	sess, err := iscsiclient.Dial(ctx, iscsiclient.Config{Addr: s.iscsi, Initiator: h.InitiatorIQN, Target: h.TargetIQN})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	buf := make([]byte, 64<<10)
	for lba := uint64(0); lba < 2048; lba += 128 {
		if err := sess.Write(lba, buf, false); err != nil {
			t.Fatal(err)
		}
		if err := sess.Read(lba, buf); err != nil {
			t.Fatal(err)
		}
	}
	if err := sess.SyncCache(); err != nil {
		t.Fatal(err)
	}
	// Past the end of the 1 MiB disk: CHECK CONDITION, ILLEGAL REQUEST.
	var serr *iscsiclient.SCSIError
	if err := sess.Read(4096, buf[:512]); !errors.As(err, &serr) {
		t.Fatalf("read past the end: %v", err)
	}
	// The Logout Response goes out after every response above, each
	// counted once written.
	if err := sess.Logout(); err != nil {
		t.Fatal(err)
	}

	req, _ := http.NewRequest("GET", s.api+api.MetricsPath, nil)
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	scrape, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %d %s", resp.StatusCode, scrape)
	}
	for _, want := range []string{
		`diskless_host_command_duration_seconds_count{host="client1",op="read"} 17`, // 16 READs and the failed one
		`diskless_host_command_duration_seconds_count{host="client1",op="write"} 16`,
		`diskless_host_command_duration_seconds_bucket{host="client1",op="other",le="+Inf"}`,
		`diskless_host_command_errors_total{host="client1",sense_key="ILLEGAL_REQUEST"} 1`,
		`diskless_host_read_bytes_total{host="client1"} 1.048576e+06`,
		`diskless_host_written_bytes_total{host="client1"} 1.048576e+06`,
		"diskless_store_bytes ",
	} {
		if !bytes.Contains(scrape, []byte(want)) {
			t.Errorf("scrape lacks %q", want)
		}
	}

	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(scrape)
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}
