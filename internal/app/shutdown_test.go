package app

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/api"
)

// Shutdown is bounded: a client that never finishes its HTTP request and
// a host with a running iSCSI session do not hold the stop past
// ShutdownTimeout (what the unit's TimeoutStopSec is set above); the
// session is closed, the stuck client abandoned and said so.
func TestShutdownBounded(t *testing.T) {
	data := t.TempDir()
	cfg, httpPort, iscsiPort := writeConfig(t, data, reloadHosts)
	s := runSite(t, data, cfg, httpPort, iscsiPort, func(o *ServeOptions) { o.ShutdownTimeout = time.Second })
	var pc1 api.HostView
	s.call("GET", "/hosts/pc1", nil, &pc1)
	sess := s.login(pc1, "pc1-long-secret")
	writeAt(t, sess, 0, pattern("x", block))
	// Half a request: the HTTP server waits for the rest until the bound.
	c, err := net.Dial("tcp", strings.TrimPrefix(s.http, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("GET /boot.ipxe HTTP/1.1\r\nHost: x\r\n"))
	time.Sleep(100 * time.Millisecond) // the server has read it: the connection is active

	start := time.Now()
	s.cancel()
	s.cancel = nil
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("RunServe: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RunServe still stopping 10 s after a 1 s bound")
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("stop took %v with a 1 s bound", d)
	}
	if !strings.Contains(s.logs.String(), "shutdown incomplete") {
		t.Error("the abandoned client is not reported")
	}
	if err := sess.Read(0, make([]byte, block)); err == nil {
		t.Error("the iSCSI session still answers after the stop")
	}
}
