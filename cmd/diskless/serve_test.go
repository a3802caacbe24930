package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/testutil/ports"
)

// diskless serve under a service manager: READY=1 once it serves, SIGHUP
// (systemctl reload) re-reads the file between RELOADING=1 and READY=1,
// and STOPPING=1 when it is told to stop.
func TestServeNotifiesServiceManager(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify")
	mgr, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer mgr.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	next := func() string {
		t.Helper()
		mgr.SetReadDeadline(time.Now().Add(30 * time.Second))
		b := make([]byte, 4096)
		n, err := mgr.Read(b)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		return string(b[:n])
	}
	cfgPath := filepath.Join(dir, "diskless.yaml")
	y := fmt.Sprintf("interface: lo\nserver_ip: 127.0.0.1\ndata_dir: %s\ndhcp: {mode: off}\ntftp: {enabled: false}\n"+
		"http: {listen: \"127.0.0.1:%d\"}\niscsi: {listen: \"127.0.0.1:%d\"}\n", filepath.Join(dir, "state"), ports.FreeTCP(t), ports.FreeTCP(t))
	if err := os.WriteFile(cfgPath, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		root := newRootCommand()
		root.SetArgs([]string{"serve", "--config", cfgPath, "--log-level", "error"})
		done <- root.ExecuteContext(ctx)
	}()
	if got := next(); !strings.HasPrefix(got, "READY=1\n") {
		t.Fatalf("first notification %q, want READY=1", got)
	}
	// The handler is installed before READY=1: the signal reaches it,
	// not the default action (which ends the test binary).
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if got := next(); !strings.HasPrefix(got, "RELOADING=1\n") {
		t.Errorf("after SIGHUP %q, want RELOADING=1", got)
	}
	if got := next(); got != "READY=1\nSTATUS=serving; configuration reloaded" {
		t.Errorf("after the reload %q, want READY=1 and a reloaded status", got)
	}
	cancel()
	if got := next(); !strings.HasPrefix(got, "STOPPING=1\n") {
		t.Errorf("on stop %q, want STOPPING=1", got)
	}
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
}
