package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/app"
	"github.com/diskless-boot/diskless/internal/config"
	"github.com/diskless-boot/diskless/internal/inventory"
	"github.com/diskless-boot/diskless/internal/testutil/ports"
)

// cli runs one command of the tree in this process and returns what it
// printed and its error.
func cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(io.Discard)
	root.SetArgs(args)
	err := root.ExecuteContext(t.Context())
	return out.String(), err
}

// Values that differ between two data directories or two runs.
var (
	// usage_bytes: a server opens (and so makes) a host's top layer.
	volatileJSON = regexp.MustCompile(`"(created|updated|since|started|finished|bytes_per_second|id|remote|isid|tsih|usage_bytes)": [^,\n]*`)
	installID    = regexp.MustCompile(`diskless:[0-9a-f]{8}`)
	secret       = regexp.MustCompile(`"secret": "[A-Za-z0-9]{16}"`)
	timeName     = regexp.MustCompile(`\d{8}-\d{6}`)
	dataDir      = regexp.MustCompile(`/tmp/\S+?/(local|server)`)
)

// seedUnknown stores two machines seen but not configured in the data
// directory dir, as a server would have.
func seedUnknown(t *testing.T, dir string) {
	t.Helper()
	site, err := app.OpenSite(t.Context(), dir, app.SiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer site.Close()
	seen := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := site.Inv.SaveUnknownHosts([]inventory.UnknownHost{
		{MAC: "52:54:00:00:00:77", Arch: "bios", FirstSeen: seen, LastSeen: seen, Count: 3},
		{MAC: "52:54:00:00:00:78", Arch: "efi-x64", FirstSeen: seen, LastSeen: seen, Count: 1},
	}); err != nil {
		t.Fatal(err)
	}
}

func normalize(s string) string {
	s = volatileJSON.ReplaceAllString(s, `"$1": X`)
	s = installID.ReplaceAllString(s, "diskless:ID")
	s = secret.ReplaceAllString(s, `"secret": "S"`)
	s = timeName.ReplaceAllString(s, "TIME")
	return dataDir.ReplaceAllString(s, "DATA")
}

// Every CLI action does the same through a running server's API as on the
// data directory with no server: the same script of commands, run both
// ways, prints the same (but for times, IDs and generated secrets).
func TestCLISameWithAndWithoutServer(t *testing.T) {
	script := [][]string{
		{"image", "create", "img", "--size", "4M", "--description", "a test image"},
		{"host", "add", "a", "--image", "img", "--mac", "52:54:00:00:00:0a", "--json"},
		{"host", "add", "b", "--image", "img", "--disk", "volatile", "--no-chap", "--json"},
		{"host", "add", "a", "--image", "img"}, // exists: 409
		{"host", "add", "c", "--image", "nope"},
		{"host", "set", "a", "--disk", "volatile", "--json"},
		{"host", "set", "a", "--disk", "persistent", "--json"},
		{"host", "snapshot", "a", "s1", "--json"},
		{"host", "snapshots", "a", "--json"},
		{"host", "reset", "b", "--json"},
		{"host", "promote", "a", "--yes", "--json"},
		{"image", "versions", "img", "--json"},
		{"host", "snapshots", "a", "--json"},
		{"host", "check", "a"},                       // outcome only: a server has made the top layer it opened
		{"image", "delete", "img", "--version", "1"}, // used by a's automatic snapshot: 409
		{"host", "show", "a", "--json"},
		{"host", "show", "a", "--config"}, // outcome only: a server knows its address
		{"host", "remove", "b"},
		{"host", "list", "--json"},
		{"image", "list", "--json"},
		{"host", "clear-error", "a", "--json"}, // a healthy disk: nothing to clear
		{"host", "rotate-secrets", "a"},        // offline: now
		{"host", "show", "a", "--secrets", "--json"},
		{"host", "add", "n", "--image", "img", "--no-chap", "--json"},
		{"host", "rotate-secrets", "n"}, // no CHAP: 409
		{"host", "rotate-secrets", "zz"},
		{"host", "set", "n", "--chap-rotation", "boot"}, // needs CHAP: 400
		{"host", "set", "a", "--chap-rotation", "boot", "--json"},
		{"host", "show", "a"},
		{"host", "rotate-secrets", "a", "--json"},
		{"host", "unknown", "--json"}, // 30: what seedUnknown stored
		{"host", "adopt", "52:54:00:00:00:77", "--image", "img", "--name", "adopted", "--json"},
		{"host", "adopt", "52:54:00:00:00:78"}, // no image, no enroll section: 400
		{"host", "adopt", "52-54-00-00-00-78", "--image", "img", "--disk", "volatile", "--json"},
		{"host", "adopt", "52:54:00:00:00:77", "--image", "img"}, // adopted: no longer in the list
		{"host", "unknown", "--json"},
		{"host", "show", "host-525400000078"},
	}
	outcomeOnly := map[int]bool{13: true, 16: true, 28: true, 36: true} // 28, 36: usage and times differ
	run := func(dir string) []string {
		var out []string
		for _, args := range script {
			got, err := cli(t, append(args, "--data-dir", dir)...)
			if err != nil {
				got += "error: " + err.Error()
			}
			out = append(out, normalize(got))
		}
		return out
	}
	base := t.TempDir()
	seedUnknown(t, filepath.Join(base, "local"))
	local := run(filepath.Join(base, "local"))

	// The same with a server on the other data directory.
	dir := filepath.Join(base, "server")
	seedUnknown(t, dir)
	port := func() int { return ports.FreeTCP(t) }
	y := fmt.Sprintf("interface: lo\nserver_ip: 127.0.0.1\ndata_dir: %s\ndhcp: {mode: off}\ntftp: {enabled: false}\n"+
		"http: {listen: \"127.0.0.1:%d\"}\niscsi: {listen: \"127.0.0.1:%d\"}\n", dir, port(), port())
	cfgPath := filepath.Join(base, "diskless.yaml")
	os.WriteFile(cfgPath, []byte(y), 0o644)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	ready, done := make(chan string, 1), make(chan error, 1)
	go func() { done <- app.RunServe(ctx, app.ServeOptions{Config: cfg, Ready: func(u string) { ready <- u }}) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatal(err)
	case <-time.After(30 * time.Second):
		t.Fatal("server not ready")
	}
	served := run(dir)
	// The commands really went through the API: the store is the
	// server's (locked), so a direct open would have failed.
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i := range script {
		if outcomeOnly[i] {
			if strings.Contains(local[i], "error:") != strings.Contains(served[i], "error:") {
				t.Errorf("diskless %s: without server %q, through the API %q", strings.Join(script[i], " "), local[i], served[i])
			}
			continue
		}
		if local[i] != served[i] {
			t.Errorf("diskless %s:\nwithout server:\n%s\nthrough the API:\n%s", strings.Join(script[i], " "), local[i], served[i])
		}
	}
	for i, want := range map[int]string{3: "exists", 4: "no image", 14: "used by host", 21: "new secrets now",
		24: "has no CHAP", 25: "no host", 26: "boot needs chap", 27: "chap_rotation boot", 28: "new secrets at every boot",
		30: "52:54:00:00:00:78", 31: `"source": "api"`, 32: "image: required", 33: `"name": "host-525400000078"`,
		34: "not in the unknown list", 36: "volatile on img@v2"} {
		if !strings.Contains(local[i], want) {
			t.Errorf("diskless %s: %q, want an error saying %q", strings.Join(script[i], " "), local[i], want)
		}
	}
}
