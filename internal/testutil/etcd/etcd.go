// Package etcd runs a real one-member etcd (Debian's etcd-server) on
// loopback for tests: free client and peer ports, a temporary data
// directory, started and waited for until healthy, stopped at cleanup. A
// test that needs it skips when the etcd binary is missing. It is for
// tests only; production code must not import it.
package etcd

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/testutil/netns"
	"github.com/diskless-boot/diskless/internal/testutil/ports"
	"github.com/diskless-boot/diskless/internal/testutil/proc"
)

// Server is a running (or stopped) etcd. Its methods are not safe for
// concurrent use.
type Server struct {
	// Endpoint is the client URL, http://127.0.0.1:PORT (StartIn: http://IP:2379).
	Endpoint string
	tb       testing.TB
	argv     []string
	p        *proc.Proc
	ns       string // network namespace it runs in ("": the test's own)
}

// Start starts etcd and waits until it answers its health check. It skips
// the test when etcd is not installed.
func Start(tb testing.TB) *Server {
	tb.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		tb.Skip("etcd not in PATH (Debian package etcd-server; scripts/ci-deps.sh installs it)")
	}
	return start(tb, bin, "", fmt.Sprintf("127.0.0.1:%d", ports.FreeTCP(tb)), fmt.Sprintf("127.0.0.1:%d", ports.FreeTCP(tb)))
}

// StartIn starts etcd inside network namespace ns (which the test made),
// listening on ip:2379, for servers in other namespaces of the test's
// network to reach it there.
func StartIn(tb testing.TB, ns, ip string) *Server {
	tb.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		tb.Skip("etcd not in PATH (Debian package etcd-server; scripts/ci-deps.sh installs it)")
	}
	return start(tb, bin, ns, ip+":2379", ip+":2380")
}

func start(tb testing.TB, bin, ns, clientAddr, peerAddr string) *Server {
	client, peer := "http://"+clientAddr, "http://"+peerAddr
	argv := []string{bin}
	if ns != "" {
		argv = []string{"ip", "netns", "exec", ns, bin}
	}
	s := &Server{Endpoint: client, tb: tb, ns: ns, argv: append(argv,
		"--name", "test",
		"--data-dir", filepath.Join(tb.TempDir(), "data"), // etcd makes it 0700
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "test="+peer, "--initial-cluster-state", "new",
		"--logger", "zap", "--log-level", "warn",
	)}
	s.Restart()
	return s
}

// Stop stops etcd (SIGTERM) and waits for it to exit.
func (s *Server) Stop() {
	s.tb.Helper()
	if s.p == nil {
		return
	}
	if err := s.p.Stop(); err != nil {
		s.tb.Error(err)
	}
	s.p = nil
}

// Restart starts a stopped etcd again, on the same ports and data, and
// waits until it is healthy.
func (s *Server) Restart() {
	s.tb.Helper()
	if s.p != nil {
		s.tb.Fatal("etcd: Restart while running")
	}
	p, err := proc.Start(s.tb, proc.Config{Name: "etcd", Grace: 10 * time.Second}, s.argv...)
	if err != nil {
		s.tb.Fatal(err)
	}
	s.p = p
	if err := s.waitHealthy(15 * time.Second); err != nil {
		s.tb.Fatalf("etcd: %v\n%s", err, p.Output())
	}
}

// waitHealthy polls etcd's /health until it says true.
func (s *Server) waitHealthy(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := &http.Client{Timeout: time.Second}
	if s.ns != "" {
		c.Transport = &http.Transport{DialContext: func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
			err = netns.Run(s.ns, func() error {
				var d net.Dialer
				conn, err = d.DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		}}
	}
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.Endpoint+"/health", nil)
		resp, err := c.Do(req)
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			last = string(b)
			if resp.StatusCode == http.StatusOK && strings.Contains(last, `"health":"true"`) {
				return nil
			}
		} else {
			last = err.Error()
		}
		select {
		case <-s.p.Exited():
			return fmt.Errorf("exited (%v) before it was healthy", s.p.Wait())
		case <-ctx.Done():
			return fmt.Errorf("not healthy within %v: %s", timeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
