package interop

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
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
	tool := conformanceTool(t)
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
	verdicts := map[string]map[string]string{}
	for _, d := range disks {
		verdicts[d] = conformanceAsHost(t, tool, site, hosts[d], d)
	}
	base := rawFileVerdicts
	if base == nil {
		base = verdicts["raw"]
	}
	for _, d := range []string{"persistent", "volatile"} {
		noWorseThan(t, d, verdicts[d], base)
	}
}

// conformanceTool is ../shared/tools/iscsi-conformance for a test that
// runs it on the disks of `diskless serve` (the package's binary).
func conformanceTool(t *testing.T) string {
	t.Helper()
	needPeers(t, "iscsi-test-cu", "python3")
	tool := sharedTool(t, "iscsi-conformance")
	if disklessBin == "" {
		t.Fatalf("no diskless binary: %v", disklessBuild)
	}
	return tool
}

// conformanceAsHost runs the conformance suite, with a second session, on
// host h's disk of site, logged in as h: a wrapper of iscsi-test-cu first
// in PATH adds -i and -I with its initiator name.
func conformanceAsHost(t *testing.T, tool string, site *served.Site, h api.HostView, disk string) map[string]string {
	t.Helper()
	wrap := t.TempDir()
	real, err := exec.LookPath("iscsi-test-cu")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(wrap, "iscsi-test-cu"), fmt.Appendf(nil,
		"#!/bin/sh\nexec %s -i \"$DISKLESS_INITIATOR\" -I \"$DISKLESS_INITIATOR\" \"$@\"\n", real), 0o755)
	url := fmt.Sprintf("iscsi://%s%%%s@%s/%s/0", h.CHAP.User, h.CHAP.Secret, site.Portal(), h.TargetIQN)
	if h.CHAP.User == "" {
		url = fmt.Sprintf("iscsi://%s/%s/0", site.Portal(), h.TargetIQN)
	}
	out, tests := runConformance(t, tool, url, []string{"PATH=" + wrap + ":" + os.Getenv("PATH"), "DISKLESS_INITIATOR=" + h.InitiatorIQN})
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	t.Logf("%s disk: %s", disk, lines[len(lines)-1])
	return tests
}

// noWorseThan fails every test that scored worse on disk than in base
// (raw-file verdicts); with no base, every test that failed.
func noWorseThan(t *testing.T, disk string, got, base map[string]string) {
	t.Helper()
	rank := map[string]int{"failed": 0, "skipped": 1, "passed": 2}
	if base == nil {
		for name, v := range got {
			if v == "failed" {
				t.Errorf("%s disk: %s failed", disk, name)
			}
		}
		return
	}
	worse := 0
	for name, want := range base {
		if v := got[name]; rank[v] < rank[want] {
			t.Errorf("%s disk: %s %s, %s on a raw file", disk, name, v, want)
			worse++
		}
	}
	if len(got) < len(base) {
		t.Errorf("%s disk: %d tests scored, %d on a raw file", disk, len(got), len(base))
	}
	t.Logf("%s disk: %d tests, %d worse than on a raw file", disk, len(got), worse)
}

// TestHostDisksWithLibiscsi puts three hosts on one image version - two
// persistent overlays and a volatile one - and has QEMU's libiscsi log in
// to all three at once (qemu-io, each with its host's initiator name and
// CHAP): each writes its own pattern, then each disk is copied out with
// qemu-img and must be the image with that host's pattern and nothing of
// the others'. The version file never changes; a host's initiator name on
// another host's target, or a wrong secret, cannot log in.
func TestHostDisksWithLibiscsi(t *testing.T) {
	needPeers(t, "qemu-io", "qemu-img")
	if disklessBin == "" {
		t.Fatalf("no diskless binary: %v", disklessBuild)
	}
	const size = 64 << 20
	golden := make([]byte, size)
	rand.Read(golden)
	dir := t.TempDir()
	goldenPath := filepath.Join(dir, "golden.raw")
	if err := os.WriteFile(goldenPath, golden, 0o644); err != nil {
		t.Fatal(err)
	}
	site := served.New(t, disklessBin)
	site.CLI("image", "import", "golden", goldenPath)
	hosts := make([]api.HostView, 3)
	for i, mode := range []string{"persistent", "persistent", "volatile"} {
		var ch api.HostChange
		out := site.CLI("host", "add", fmt.Sprintf("pc%d", i+1), "--image", "golden", "--disk", mode, "--no-mutual-chap", "--json")
		if err := json.Unmarshal(out, &ch); err != nil {
			t.Fatal(err)
		}
		hosts[i] = ch.Host
	}
	versionFile := filepath.Join(site.Data, "images", "golden", "v1.img")
	before := fileSum(t, versionFile)
	site.Start()
	opts := func(h api.HostView, initiator, secret string) string {
		return fmt.Sprintf("driver=iscsi,transport=tcp,portal=%s,target=%s,lun=0,user=%s,password=%s,initiator-name=%s",
			site.Portal(), h.TargetIQN, h.CHAP.User, secret, initiator)
	}
	// At the same time: each host writes 4 MiB of its own byte at 1 MiB
	// and reads it back in the same session.
	errs := make(chan error, len(hosts))
	for i, h := range hosts {
		go func() {
			pat := fmt.Sprintf("0x%x", 0x41+i)
			out, err := libiscsiRun(t, "qemu-io", "--image-opts", opts(h, h.InitiatorIQN, h.CHAP.Secret),
				"-c", "write -P "+pat+" 1M 4M", "-c", "read -P "+pat+" 1M 4M", "-c", "flush")
			if err != nil || strings.Contains(out, "Pattern verification failed") {
				err = fmt.Errorf("%s: %v\n%s", h.Name, err, out)
			}
			errs <- err
		}()
	}
	for range hosts {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for i, h := range hosts {
		out := filepath.Join(dir, h.Name+".raw")
		if o, err := libiscsiRun(t, "qemu-img", "convert", "--image-opts", opts(h, h.InitiatorIQN, h.CHAP.Secret), "-O", "raw", out); err != nil {
			t.Fatalf("copy %s out: %v\n%s", h.Name, err, o)
		}
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		want := append([]byte(nil), golden...)
		copy(want[1<<20:5<<20], bytes.Repeat([]byte{byte(0x41 + i)}, 4<<20))
		if j := firstDiff(got, want); j >= 0 {
			t.Fatalf("%s's disk differs from the image plus its own writes at byte %d", h.Name, j)
		}
	}
	if fileSum(t, versionFile) != before {
		t.Fatal("the image version changed under the hosts")
	}
	for name, o := range map[string]string{
		"pc1's initiator name on pc2's target": opts(hosts[1], hosts[0].InitiatorIQN, hosts[1].CHAP.Secret),
		"a wrong CHAP secret":                  opts(hosts[1], hosts[1].InitiatorIQN, hosts[0].CHAP.Secret),
	} {
		if out, err := libiscsiRun(t, "qemu-img", "info", "--image-opts", o); err == nil {
			t.Errorf("%s logged in:\n%s", name, out)
		}
	}
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}
