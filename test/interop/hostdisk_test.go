package interop

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/api"
	"github.com/diskless-boot/diskless/internal/testutil/output"
	"github.com/diskless-boot/diskless/internal/testutil/proc"
)

// TestConformanceHostDisks runs libiscsi's conformance suite, with a second
// session, on the disks of hosts of `diskless serve`: a persistent and a
// volatile copy-on-write overlay on one empty 1 GiB image version, each
// behind its host's target (only its initiator name, CHAP). No test may do
// worse than on a raw file (TestConformance's verdicts; a raw host disk of
// the same server when that test did not run). libiscsi logs in as the
// host (iscsi-test-cu -i and -I both set to its initiator name: a second
// path of the same initiator).
func TestConformanceHostDisks(t *testing.T) {
	needPeers(t, "iscsi-test-cu", "python3")
	tool := sharedTool(t, "iscsi-conformance")
	if disklessBin == "" {
		t.Fatalf("no diskless binary: %v", disklessBuild)
	}
	data := t.TempDir()
	cli := func(args ...string) []byte {
		t.Helper()
		out, err := exec.Command(disklessBin, append(args, "--data-dir", data)...).CombinedOutput()
		if err != nil {
			t.Fatalf("diskless %v: %v\n%s", args, err, out)
		}
		return out
	}
	cli("image", "create", "scratch", "--size", "1G")
	disks := []string{"persistent", "volatile"}
	if rawFileVerdicts == nil {
		disks = append(disks, "raw")
	}
	hosts := map[string]api.HostView{}
	for _, d := range disks {
		args := []string{"host", "add", d, "--image", "scratch", "--disk", d, "--no-mutual-chap", "--json"}
		if d == "raw" {
			args = append(args, "--version", "1")
		}
		var ch api.HostChange
		if err := json.Unmarshal(cli(args...), &ch); err != nil {
			t.Fatal(err)
		}
		hosts[d] = ch.Host
	}
	iscsiPort, httpPort := freePort(t), freePort(t)
	cfg := filepath.Join(t.TempDir(), "diskless.yaml")
	os.WriteFile(cfg, fmt.Appendf(nil, "interface: lo\nserver_ip: 127.0.0.1\ndata_dir: %s\ndhcp: {mode: off}\ntftp: {enabled: false}\n"+
		"http: {listen: \"127.0.0.1:%d\"}\niscsi: {listen: \"127.0.0.1:%d\"}\n", data, httpPort, iscsiPort), 0o644)
	p, err := proc.Start(t, proc.Config{Name: "diskless serve", MaxOutput: 4 << 20}, disklessBin, "serve", "--config", cfg, "--log-level", "warn")
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(data, "server.json")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("diskless serve did not start:\n%s", p.Output())
		}
	}
	// iscsi-test-cu as the host: a wrapper first in PATH adds its name.
	wrap := t.TempDir()
	real, err := exec.LookPath("iscsi-test-cu")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(wrap, "iscsi-test-cu"), fmt.Appendf(nil,
		"#!/bin/sh\nexec %s -i \"$DISKLESS_INITIATOR\" -I \"$DISKLESS_INITIATOR\" \"$@\"\n", real), 0o755)

	verdicts := map[string]map[string]string{}
	for _, d := range disks {
		h := hosts[d]
		url := fmt.Sprintf("iscsi://%s%%%s@127.0.0.1:%d/%s/0", h.CHAP.User, h.CHAP.Secret, iscsiPort, h.TargetIQN)
		report := filepath.Join(t.TempDir(), d+".json")
		cmd := exec.Command(tool, url, "--multipath", url, "--json", report, "--timeout", "1200")
		cmd.Env = append(os.Environ(), "PATH="+wrap+":"+os.Getenv("PATH"), "DISKLESS_INITIATOR="+h.InitiatorIQN)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		t.Logf("%s disk: %s (%v)", d, lines[len(lines)-1], time.Since(start).Round(time.Second))
		if err != nil {
			t.Fatalf("iscsi-conformance on the %s disk: %v\n%s", d, err, output.Tail(string(out), 3000))
		}
		b, err := os.ReadFile(report)
		if err != nil {
			t.Fatal(err)
		}
		var r struct {
			Tests map[string]string `json:"tests"`
		}
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		verdicts[d] = r.Tests
	}
	base := rawFileVerdicts
	if base == nil {
		base = verdicts["raw"]
	}
	rank := map[string]int{"failed": 0, "skipped": 1, "passed": 2}
	for _, d := range []string{"persistent", "volatile"} {
		worse := 0
		for name, want := range base {
			if got := verdicts[d][name]; rank[got] < rank[want] {
				t.Errorf("%s disk: %s %s, %s on a raw file", d, name, got, want)
				worse++
			}
		}
		if len(verdicts[d]) < len(base) {
			t.Errorf("%s disk: %d tests scored, %d on a raw file", d, len(verdicts[d]), len(base))
		}
		t.Logf("%s disk: %d tests, %d worse than on a raw file", d, len(verdicts[d]), worse)
	}
}
