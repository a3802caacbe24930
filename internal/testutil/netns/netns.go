//go:build linux

// Package netns creates network namespaces for a test and runs code inside
// them, so tests can use real sockets and links without touching the host's
// interfaces. It is for tests only; production code must not import it.
package netns

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// IP runs the ip command (iproute2) with args; the error carries its output.
func IP(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// Need skips t when namespaces cannot be made: when not root (the skip
// message ends with why, e.g. "ip netns add") or without the ip command.
func Need(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespace test needs root (" + why + ")")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("network namespace test needs the ip command (iproute2)")
	}
}

// ID returns 6 random hex digits that keep names of namespaces and links of
// concurrent tests apart (links names stay within IFNAMSIZ).
func ID() string {
	var r [3]byte
	rand.Read(r[:])
	return hex.EncodeToString(r[:])
}

// Add creates the namespaces names and deletes them when t ends. It skips t
// when the first cannot be created and fails it for any other.
func Add(t *testing.T, names ...string) {
	t.Helper()
	for i, ns := range names {
		if err := IP("netns", "add", ns); err != nil {
			if i == 0 {
				t.Skipf("cannot create a network namespace: %v", err)
			}
			t.Fatal(err)
		}
		t.Cleanup(func() { IP("netns", "del", ns) })
	}
}

// Run runs fn on a thread moved into network namespace ns. Sockets made
// there stay in ns. The thread is never handed back to the scheduler: it
// ends with its goroutine, so no other goroutine runs in ns by accident.
func Run(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}
