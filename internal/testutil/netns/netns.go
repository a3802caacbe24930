//go:build linux

// Package netns creates network namespaces for a test and runs code inside
// them, so tests can use real sockets and links without touching the host's
// interfaces. It is for tests only; production code must not import it.
package netns

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
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

// Forward relays TCP connections made to the address it returns (on
// loopback, in the test's own namespace) to addr inside namespace ns: a
// program outside the namespace (a browser) can reach a server in it.
// The listener and every relayed connection close when t ends.
func Forward(t *testing.T, ns, addr string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	track := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			track(in)
			var out net.Conn
			if err := Run(ns, func() (err error) { out, err = net.Dial("tcp", addr); return err }); err != nil {
				in.Close()
				continue
			}
			track(out)
			go func() { io.Copy(out, in); out.Close() }()
			go func() { io.Copy(in, out); in.Close() }()
		}
	}()
	return l.Addr().String()
}
