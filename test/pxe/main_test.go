package pxe

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/diskless-boot/diskless/internal/testutil/build"
)

// Set by TestMain.
var (
	disklessBin   string // built ./cmd/diskless, "" when the build failed
	disklessBuild error  // why disklessBin is ""
	// buildTags are the tags the test binary was built with that the
	// diskless binary needs too (ceph: failover_rbd_test.go).
	buildTags []string
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if testing.Short() {
		return m.Run()
	}
	root, err := build.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pxe:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "diskless-pxe-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "pxe:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	disklessBin, disklessBuild = build.Diskless(root, dir, false, buildTags...)
	return m.Run()
}

// need skips t under -short, when not root, or when a program or file is
// missing.
func need(t *testing.T, programs []string, files map[string]string) {
	t.Helper()
	if testing.Short() {
		t.Skip("pxe: skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("pxe: needs root (network namespaces, tap devices)")
	}
	for _, p := range programs {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("pxe: %s not in PATH (scripts/ci-deps.sh installs it)", p)
		}
	}
	for f, pkg := range files {
		if _, err := os.Stat(f); err != nil {
			t.Skipf("pxe: %s missing (Debian package %s; scripts/ci-deps.sh installs it)", f, pkg)
		}
	}
	if disklessBin == "" {
		t.Fatal(disklessBuild)
	}
}
