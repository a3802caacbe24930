package interop

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskless-boot/diskless/internal/api"
	"github.com/diskless-boot/diskless/internal/testutil/served"
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
	site := served.New(t, disklessBin)
	site.CLI("image", "create", "scratch", "--size", "1G")
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
		if err := json.Unmarshal(site.CLI(args...), &ch); err != nil {
			t.Fatal(err)
		}
		hosts[d] = ch.Host
	}
	site.Start()
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
		url := fmt.Sprintf("iscsi://%s%%%s@%s/%s/0", h.CHAP.User, h.CHAP.Secret, site.Portal(), h.TargetIQN)
		out, tests := runConformance(t, tool, url, []string{"PATH=" + wrap + ":" + os.Getenv("PATH"), "DISKLESS_INITIATOR=" + h.InitiatorIQN})
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		t.Logf("%s disk: %s", d, lines[len(lines)-1])
		verdicts[d] = tests
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
