// Package build finds the module's root and builds the diskless binary once
// for the tests that run it as a process (test/interop, test/pxe). It is for
// tests only; production code must not import it.
package build

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// RepoRoot walks up from the working directory (the package directory under
// go test) to the directory holding go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Diskless builds ./cmd/diskless of the module at root into dir, with the
// race detector when race is set and with the build tags (e.g. ceph,pacific
// for the RBD backend), and returns the binary's path. The error
// carries go build's output.
func Diskless(root, dir string, race bool, tags ...string) (string, error) {
	bin := filepath.Join(dir, "diskless")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	cmd := exec.Command("go", append(args, "./cmd/diskless")...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/diskless: %v\n%s", err, out)
	}
	return bin, nil
}
