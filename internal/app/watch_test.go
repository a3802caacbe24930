package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/api"
	"github.com/diskless-boot/diskless/internal/boot"
	"github.com/diskless-boot/diskless/internal/inventory"
	"github.com/diskless-boot/diskless/internal/iscsi"
	"github.com/diskless-boot/diskless/internal/iscsi/pdu"
	"github.com/diskless-boot/diskless/internal/storage"
	"github.com/diskless-boot/diskless/internal/store"
	"github.com/diskless-boot/diskless/internal/testutil/etcd"
	"github.com/diskless-boot/diskless/internal/testutil/iscsiclient"
	"github.com/diskless-boot/diskless/internal/testutil/output"
)

// Two servers of one site share their state in etcd, each with its own
// data_dir: a host added through A's API is served by B's iSCSI target
// (its IQN and CHAP secret) within a second or two, and removed through
// B it is no longer served by A. The host's disk is a raw file outside
// both data_dirs, which both servers open: a disk made in a data_dir
// (overlay, raw copy) exists on one server only until disks move to
// shared storage (RBD).
func TestTwoServersShareEtcd(t *testing.T) {
	e := etcd.Start(t)
	extra := fmt.Sprintf("store: {backend: etcd, etcd: {endpoints: [%q], prefix: /site1/}}\n", e.Endpoint)
	disk := filepath.Join(t.TempDir(), "pc1.img")
	if err := os.WriteFile(disk, make([]byte, 4<<20), 0o600); err != nil {
		t.Fatal(err)
	}

	dataA, dataB := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	a := startSite(t, dataA, extra)
	// The admin token is the site's: A made it, B's CLI and the test use
	// the same one, from B's data_dir as an operator would copy it.
	tok, err := os.ReadFile(filepath.Join(dataA, api.TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dataB, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataB, api.TokenFile), tok, 0o600); err != nil {
		t.Fatal(err)
	}
	b := startSite(t, dataB, extra)

	var ch api.HostChange
	a.call("POST", "/hosts", api.AddHostRequest{Name: "pc1", MACs: []string{"52:54:00:00:01:01"}, DiskMode: "raw", RawPath: disk}, &ch, 201)
	h, secret := ch.Host, ch.Host.CHAP.Secret

	// B serves it: its target, with the CHAP secret A generated.
	sess, took := waitLogin(t, b, h, secret, true)
	if sess == nil {
		t.Fatalf("B does not serve pc1 2 s after it was added through A\n%s", output.Tail(b.logs.String(), 2000))
	}
	t.Logf("served by B %v after the add through A", took)
	want := pattern("through B", 8*block)
	writeAt(t, sess, 10, want)
	if err := sess.Logout(); err != nil {
		t.Fatal(err)
	}
	sess.Close()
	waitOffline(t, b, "pc1")
	// A's target takes the same credentials and sees B's write (one file).
	sa := a.login(h, secret)
	if got := readAt(t, sa, 10, 8*block); string(got) != string(want) {
		t.Error("A does not read what was written through B")
	}
	sa.Logout()
	sa.Close()
	waitOffline(t, a, "pc1")

	// Removed through B: A stops serving it.
	b.call("DELETE", "/hosts/pc1", nil, nil, 204)
	if _, took := waitLogin(t, a, h, secret, false); took < 0 {
		t.Fatalf("A still serves pc1 2 s after it was removed through B\n%s", output.Tail(a.logs.String(), 2000))
	} else {
		t.Logf("gone from A %v after the remove through B", took)
	}
}

// waitLogin logs into h's target on s every 20 ms for up to 2 s until a
// login succeeds (serving) or is refused because the target is not there
// (!serving). It returns the session (serving), and how long it took, or
// nil and -1.
func waitLogin(t *testing.T, s *site, h api.HostView, secret string, serving bool) (*iscsiclient.Session, time.Duration) {
	t.Helper()
	start := time.Now()
	for time.Since(start) < 2*time.Second {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		sess, err := iscsiclient.Dial(ctx, iscsiclient.Config{Addr: s.iscsi, Initiator: h.InitiatorIQN, Target: h.TargetIQN,
			CHAPUser: h.CHAP.User, CHAPSecret: secret})
		cancel()
		switch {
		case err == nil && serving:
			t.Cleanup(func() { sess.Close() })
			return sess, time.Since(start)
		case err == nil:
			sess.Close()
		case !serving && isLoginStatus(err, pdu.LoginTargetNotFound):
			return nil, time.Since(start)
		case !isLoginStatus(err, pdu.LoginTargetNotFound):
			t.Fatalf("login to %s: %v", s.iscsi, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, -1
}

// fakeWatcher hands the supervisor the changes a test sends.
type fakeWatcher chan store.Change

func (w fakeWatcher) Watch(ctx context.Context, bucket string) (<-chan store.Change, error) {
	out := make(chan store.Change)
	go func() {
		defer close(out)
		for {
			select {
			case c := <-w:
				select {
				case out <- c:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// A Resync (the watch lost changes) syncs every host: here two added
// behind the supervisor's back, as another server would.
func TestWatchResyncServesEveryHost(t *testing.T) {
	site, err := OpenSite(t.Context(), t.TempDir(), SiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { site.Close() })
	booter, err := boot.New(boot.Config{HTTPPort: 8080})
	if err != nil {
		t.Fatal(err)
	}
	sup := newSupervisor(site.Inv, iscsi.New(iscsi.Defaults()), booter, slog.New(slog.DiscardHandler))
	w := fakeWatcher(make(chan store.Change))
	ctx, cancel := context.WithCancel(t.Context())
	apply, err := sup.watchHosts(ctx, w)
	if err != nil {
		t.Fatal(err)
	}
	if err := sup.start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { apply(); close(done) }()
	t.Cleanup(func() { cancel(); <-done; sup.stop() })

	for i := 1; i <= 2; i++ {
		disk := filepath.Join(t.TempDir(), "disk.img")
		if err := os.WriteFile(disk, make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		// The inventory's Runtime is not the supervisor: it is not told.
		if _, err := site.Inv.AddHost(t.Context(), inventory.HostSpec{Name: fmt.Sprintf("pc%d", i), MACs: []string{fmt.Sprintf("52:54:00:00:02:0%d", i)},
			Mode: storage.Raw, RawPath: disk}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := sup.targetOf("pc1"); ok {
		t.Fatal("pc1 served before any change was applied")
	}
	w <- store.Change{Bucket: store.BucketHosts, Resync: true, Revision: 42}
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		_, ok1 := sup.targetOf("pc1")
		_, ok2 := sup.targetOf("pc2")
		_, inTable := booter.Host(net.HardwareAddr{0x52, 0x54, 0, 0, 2, 2})
		if ok1 && ok2 && inTable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a Resync: pc1 served %v, pc2 served %v, pc2 in the boot table %v", ok1, ok2, inTable)
		}
	}
}
