package interop

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/testutil/build"
)

// Set by TestMain.
var (
	repoRoot      string // directory holding go.mod
	disklessBin   string // built ./cmd/diskless, "" when the build failed
	disklessBuild error  // why disklessBin is "", reported by every test that needs it
	raceEnabled   bool   // set in race_test.go under -race
	// buildTags are the tags diskless is built with: ceph,pacific when
	// the tests are (rbdbench_test.go), for the RBD backend.
	buildTags []string
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	if repoRoot, err = build.RepoRoot(); err != nil {
		fmt.Fprintln(os.Stderr, "interop:", err)
		return 1
	}
	if testing.Short() || targetKind() != "diskless" {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "diskless-interop-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "interop:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	disklessBin, disklessBuild = build.Diskless(repoRoot, dir, raceEnabled, buildTags...)
	return m.Run()
}

// needPeers marks t as an interop test: skipped under -short and when one of
// the named programs is not installed.
func needPeers(t *testing.T, programs ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("interop: skipped in -short mode")
	}
	for _, p := range programs {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("interop peer missing: %s not in PATH (scripts/ci-deps.sh installs it)", p)
		}
	}
}

// needFile skips t when path, part of a peer, does not exist.
func needFile(t *testing.T, path, pkg string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Skipf("interop peer missing: %s (Debian package %s; scripts/ci-deps.sh installs it)", path, pkg)
	}
}

// freePort returns a TCP port on 127.0.0.1 that nothing listens on now.

// waitTCP waits until addr accepts a TCP connection, or until exited is
// closed (the server died) or the timeout passes.
func waitTCP(addr string, exited <-chan struct{}, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("exited before accepting connections on %s", addr)
		case <-ctx.Done():
			return fmt.Errorf("%s accepts no connection after %v: %v", addr, timeout, err)
		case <-tick.C:
		}
	}
}

// sharedTool returns the path of a tool in <repo>/../shared/tools, skipping t
// when it is absent.
func sharedTool(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(repoRoot, "..", "shared", "tools", name)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("interop peer missing: %s", p)
	}
	return p
}
