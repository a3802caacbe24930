// Package served runs the diskless binary as `diskless serve` on loopback
// for tests and benchmarks that need a real server process: a data
// directory prepared with the CLI, a configuration that serves no DHCP or
// TFTP and listens on 127.0.0.1 only, starts and kills. It is for tests
// only; production code must not import it.
package served

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/api"
	"github.com/diskless-boot/diskless/internal/testutil/ports"
	"github.com/diskless-boot/diskless/internal/testutil/proc"
)

// Site is a data directory and the loopback configuration that serves it.
type Site struct {
	Bin       string // the diskless binary
	Data      string // data_dir
	Config    string // the YAML file
	ISCSIPort int
	HTTPPort  int
	tb        testing.TB
}

// New prepares an empty data directory and its configuration.
func New(tb testing.TB, bin string) *Site {
	tb.Helper()
	s := &Site{Bin: bin, Data: tb.TempDir(), ISCSIPort: ports.FreeTCP(tb), HTTPPort: ports.FreeTCP(tb), tb: tb}
	s.Config = filepath.Join(tb.TempDir(), "diskless.yaml")
	y := fmt.Sprintf("interface: lo\nserver_ip: 127.0.0.1\ndata_dir: %s\ndhcp: {mode: off}\ntftp: {enabled: false}\n"+
		"http: {listen: \"127.0.0.1:%d\"}\niscsi: {listen: \"127.0.0.1:%d\"}\n", s.Data, s.HTTPPort, s.ISCSIPort)
	if err := os.WriteFile(s.Config, []byte(y), 0o644); err != nil {
		tb.Fatal(err)
	}
	return s
}

// CLI runs a diskless command on the data directory (through the API when
// the server runs) and returns its output; a failure fails the test.
func (s *Site) CLI(args ...string) []byte {
	s.tb.Helper()
	out, err := exec.Command(s.Bin, append(args, "--data-dir", s.Data)...).CombinedOutput()
	if err != nil {
		s.tb.Fatalf("diskless %v: %v\n%s", args, err, out)
	}
	return out
}

// Start runs `diskless serve` and waits until it serves (its API is
// announced in data_dir), for at most 30 s.
func (s *Site) Start(extra ...string) *proc.Proc {
	s.tb.Helper()
	p, err := proc.Start(s.tb, proc.Config{Name: "diskless serve", MaxOutput: 4 << 20},
		append([]string{s.Bin, "serve", "--config", s.Config}, extra...)...)
	if err != nil {
		s.tb.Fatal(err)
	}
	if _, _, err := p.WaitFor(30*time.Second, "msg=serving"); err != nil {
		s.tb.Fatalf("diskless serve did not start: %v\n%s", err, p.Output())
	}
	return p
}

// Portal is the iSCSI portal address.
func (s *Site) Portal() string { return fmt.Sprintf("127.0.0.1:%d", s.ISCSIPort) }

// API is the base URL of the API (append api.Prefix and a path).
func (s *Site) API() string { return fmt.Sprintf("http://127.0.0.1:%d", s.HTTPPort) }

// Token is the admin token (made at the server's first start).
func (s *Site) Token() string {
	s.tb.Helper()
	tok, err := api.ReadTokenFile(s.Data)
	if err != nil {
		s.tb.Fatal(err)
	}
	return tok
}
