package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/api"
	"github.com/diskless-boot/diskless/internal/app"
	"github.com/diskless-boot/diskless/internal/config"
	"github.com/diskless-boot/diskless/internal/testutil/faildev"
	"github.com/diskless-boot/diskless/internal/testutil/iscsiclient"
	"github.com/diskless-boot/diskless/internal/testutil/output"
	"github.com/diskless-boot/diskless/internal/testutil/ports"
)

// A persistent host's layers live on an ext4 whose block device starts
// failing writes (a loop device over a tmpfs that fills up). Through the
// whole server: the host's SYNCHRONIZE CACHE over a lost write answers
// MEDIUM ERROR, then its writes and flushes DATA PROTECT while its reads
// work; the server logs the failure with host and image; `host show` and
// `host list` say the disk failed. The failure outlives a restart of the
// server (the disk opens failed), and `host clear-error` returns the disk
// to service once the device is mended.
func TestHostDiskFailure(t *testing.T) {
	dev := faildev.Loop(t, 32<<20)
	hostsFS := faildev.MountExt4(t, dev.Path)
	base := t.TempDir()
	dir := filepath.Join(base, "data")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// data_dir/hosts on the failing file system (below its root, which
	// holds lost+found: not a host).
	if err := os.Mkdir(filepath.Join(hostsFS, "hosts"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(hostsFS, "hosts"), filepath.Join(dir, "hosts")); err != nil {
		t.Fatal(err)
	}
	iscsiAddr := fmt.Sprintf("127.0.0.1:%d", ports.FreeTCP(t))
	y := fmt.Sprintf("interface: lo\nserver_ip: 127.0.0.1\ndata_dir: %s\ndhcp: {mode: off}\ntftp: {enabled: false}\n"+
		"http: {listen: \"127.0.0.1:%d\"}\niscsi: {listen: %q}\n", dir, ports.FreeTCP(t), iscsiAddr)
	cfgPath := filepath.Join(base, "diskless.yaml")
	if err := os.WriteFile(cfgPath, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &output.Output{}
	stop := serve(t, cfgPath, logs)
	run := func(args ...string) string {
		t.Helper()
		out, err := cli(t, append(args, "--data-dir", dir)...)
		if err != nil {
			t.Fatalf("diskless %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	run("image", "create", "img", "--size", "4M")
	var added api.HostChange
	if err := json.Unmarshal([]byte(run("host", "add", "pc", "--image", "img", "--no-chap", "--json")), &added); err != nil {
		t.Fatal(err)
	}
	login := func() *iscsiclient.Session {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		s, err := iscsiclient.Dial(ctx, iscsiclient.Config{Addr: iscsiAddr, Initiator: added.Host.InitiatorIQN, Target: added.Host.TargetIQN})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	sense := func(what string, err error, key, asc, ascq uint8) {
		t.Helper()
		var se *iscsiclient.SCSIError
		if !errors.As(err, &se) || se.SenseKey != key || se.ASC != asc || se.ASCQ != ascq {
			t.Fatalf("%s: %v, want sense %#x %02xh/%02xh", what, err, key, asc, ascq)
		}
	}
	dataProtect := func(s *iscsiclient.Session) {
		t.Helper()
		sense("WRITE to the failed disk", s.Write(0, bytes.Repeat([]byte{0x33}, 4096), false),
			iscsiclient.SenseDataProtect, 0x27, 0x00)
		sense("SYNCHRONIZE CACHE of the failed disk", s.SyncCache(), iscsiclient.SenseDataProtect, 0x27, 0x00)
	}
	readBack := func(s *iscsiclient.Session, want []byte) {
		t.Helper()
		got := make([]byte, len(want))
		if err := s.Read(0, got); err != nil {
			t.Fatalf("READ: %v", err)
		}
		if !bytes.Equal(got, want) {
			t.Fatal("READ: not what was written")
		}
	}

	s := login()
	before := bytes.Repeat([]byte{0x11}, 64<<10)
	if err := s.Write(0, before, false); err != nil {
		t.Fatal(err)
	}
	if err := s.SyncCache(); err != nil {
		t.Fatal(err)
	}
	dev.Break()
	if err := s.Write(4096, bytes.Repeat([]byte{0x22}, 64<<10), false); err != nil {
		t.Fatalf("WRITE after the break (page cache): %v", err)
	}
	sense("SYNCHRONIZE CACHE over the lost write", s.SyncCache(), iscsiclient.SenseMediumError, 0x0c, 0x00)
	dataProtect(s)
	readBack(s, before)
	if !logLine(logs.String(), "a flush failed", "host=pc", "image=img@v1") {
		t.Fatalf("the failure is not logged with host and image:\n%s", logs)
	}
	for _, args := range [][]string{{"host", "show", "pc"}, {"host", "list"}} {
		if out := run(args...); !strings.Contains(out, "FAILED") {
			t.Fatalf("diskless %s does not say the disk failed:\n%s", strings.Join(args, " "), out)
		}
	}

	// The operator mends the device; a restart meanwhile forgets nothing.
	dev.Fix()
	s.Close()
	stop()
	stop = serve(t, cfgPath, logs)
	defer stop()
	if out := run("host", "show", "pc"); !strings.Contains(out, "FAILED") {
		t.Fatalf("the failure was forgotten in a restart:\n%s", out)
	}
	s = login()
	dataProtect(s)
	readBack(s, before)
	if out := run("host", "clear-error", "pc"); !strings.Contains(out, "accepts writes again") {
		t.Fatalf("host clear-error: %s", out)
	}
	after := bytes.Repeat([]byte{0x44}, 64<<10)
	if err := s.Write(0, after, false); err != nil {
		t.Fatalf("WRITE after clear-error: %v", err)
	}
	if err := s.SyncCache(); err != nil {
		t.Fatalf("SYNCHRONIZE CACHE after clear-error: %v", err)
	}
	readBack(s, after)
	if out := run("host", "show", "pc"); strings.Contains(out, "FAILED") {
		t.Fatalf("host show after clear-error:\n%s", out)
	}
}

// serve runs diskless serve on cfgPath, logging into logs, and returns
// what stops it.
func serve(t *testing.T, cfgPath string, logs *output.Output) (stop func()) {
	t.Helper()
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	ready, done := make(chan string, 1), make(chan error, 1)
	go func() {
		done <- app.RunServe(ctx, app.ServeOptions{Config: cfg, Ready: func(u string) { ready <- u },
			Logger: slog.New(slog.NewTextHandler(logs, nil))})
	}()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("serve: %v\n%s", err, logs)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("server not ready")
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// logLine reports whether one line of logs holds every part.
func logLine(logs string, parts ...string) bool {
	for line := range strings.SplitSeq(logs, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}
