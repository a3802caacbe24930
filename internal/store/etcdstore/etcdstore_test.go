package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/store"
	"github.com/diskless-boot/diskless/internal/store/etcdstore"
	"github.com/diskless-boot/diskless/internal/store/storetest"
	etcdtest "github.com/diskless-boot/diskless/internal/testutil/etcd"
	"github.com/diskless-boot/diskless/internal/testutil/ports"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// openEtcd opens a store on srv under a prefix of the test's own.
func openEtcd(t *testing.T, srv *etcdtest.Server, timeout time.Duration) *etcdstore.Store {
	t.Helper()
	s, err := etcdstore.Open(context.Background(), etcdstore.Options{Endpoints: []string{srv.Endpoint},
		Prefix: "/" + t.Name() + "/", DialTimeout: 5 * time.Second, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestEtcdConformance(t *testing.T) {
	srv := etcdtest.Start(t)
	storetest.Run(t, func(t *testing.T) (store.Store, func() store.Store) {
		s := openEtcd(t, srv, 10*time.Second)
		return s, func() store.Store {
			s.Close()
			return openEtcd(t, srv, 10*time.Second)
		}
	})
}

// Two servers on one etcd see each other's commits at once, and their
// Updates are serialized with each other; another prefix is another site.
func TestTwoServers(t *testing.T) {
	srv := etcdtest.Start(t)
	a, b := openEtcd(t, srv, 10*time.Second), openEtcd(t, srv, 10*time.Second)
	if err := a.Update(func(tx store.Tx) error { return tx.Put(store.BucketHosts, "pc1", []byte("v1")) }); err != nil {
		t.Fatal(err)
	}
	b.View(func(tx store.Tx) error {
		if v, err := tx.Get(store.BucketHosts, "pc1"); err != nil || string(v) != "v1" {
			t.Errorf("B reads A's commit: %q %v", v, err)
		}
		return nil
	})
	storetest.Counter(t, []store.Store{a, b}, 3, 20)

	other, err := etcdstore.Open(context.Background(), etcdstore.Options{Endpoints: []string{srv.Endpoint}, Prefix: "/other-site/"})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	other.View(func(tx store.Tx) error {
		if _, err := tx.Get(store.BucketHosts, "pc1"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("another prefix sees the site's host: %v", err)
		}
		return nil
	})
}

// A change committed through one server reaches a watch on another within
// a second, for its bucket only, and the watch survives an etcd restart.
func TestWatch(t *testing.T) {
	srv := etcdtest.Start(t)
	a, b := openEtcd(t, srv, 2*time.Second), openEtcd(t, srv, 2*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := a.Watch(ctx, store.BucketHosts)
	if err != nil {
		t.Fatal(err)
	}
	var committed time.Time
	expect := func(key string, deleted bool) {
		t.Helper()
		select {
		case c := <-ch:
			if c.Bucket != store.BucketHosts || c.Key != key || c.Deleted != deleted || c.Resync || c.Revision == 0 {
				t.Errorf("change %+v, want %s deleted=%v", c, key, deleted)
			}
			t.Logf("%s deleted=%v seen %v after its commit", key, deleted, time.Since(committed))
		case <-time.After(time.Second):
			t.Fatalf("no change for %s within a second", key)
		}
	}
	update := func(fn func(tx store.Tx) error) {
		t.Helper()
		if err := b.Update(fn); err != nil {
			t.Fatal(err)
		}
		committed = time.Now()
	}
	update(func(tx store.Tx) error {
		tx.Put(store.BucketImages, "debian", []byte("x")) // not watched
		return tx.Put(store.BucketHosts, "pc1", []byte("x"))
	})
	expect("pc1", false)
	update(func(tx store.Tx) error { return tx.Delete(store.BucketHosts, "pc1") })
	expect("pc1", true) // and not the delete marker

	srv.Stop()
	srv.Restart()
	start := time.Now()
	for {
		err := b.Update(func(tx store.Tx) error { return tx.Put(store.BucketHosts, "pc2", []byte("x")) })
		if err == nil {
			committed = time.Now()
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("no Update within 20 s of etcd's restart: %v", err)
		}
	}
	expect("pc2", false)

	cancel()
	select {
	case _, ok := <-ch:
		if ok {
			t.Error("a change after the watch's context ended")
		}
	case <-time.After(5 * time.Second):
		t.Error("the channel is not closed after the watch's context ended")
	}
}

// With etcd gone, View and Update fail within their timeout, saying so;
// when it is back, they work again.
func TestEtcdDown(t *testing.T) {
	srv := etcdtest.Start(t)
	s := openEtcd(t, srv, time.Second)
	put := func(tx store.Tx) error { return tx.Put(store.BucketHosts, "pc1", []byte("x")) }
	if err := s.Update(put); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	for name, call := range map[string]func() error{
		"update": func() error { return s.Update(put) },
		"view": func() error {
			return s.View(func(tx store.Tx) error { _, err := tx.Get(store.BucketHosts, "pc1"); return err })
		},
		"view-foreach": func() error {
			return s.View(func(tx store.Tx) error {
				return tx.ForEach(store.BucketHosts, "", func(string, []byte) error { return nil })
			})
		},
	} {
		start := time.Now()
		err := call()
		took := time.Since(start)
		if err == nil || !strings.Contains(err.Error(), "no answer in time") || !strings.Contains(err.Error(), srv.Endpoint) {
			t.Errorf("%s with etcd stopped: %v", name, err)
		}
		if took > 3*time.Second {
			t.Errorf("%s with etcd stopped took %v, timeout 1 s", name, took)
		}
		t.Logf("%s: %v after %v", name, err, took.Round(time.Millisecond))
	}
	srv.Restart()
	start := time.Now()
	for {
		err := s.Update(put)
		if err == nil {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("still failing 20 s after etcd came back: %v", err)
		}
	}
	t.Logf("working again %v after etcd's restart", time.Since(start).Round(time.Millisecond))
}

// Open gives up within DialTimeout when nothing answers.
func TestOpenUnreachable(t *testing.T) {
	start := time.Now()
	_, err := etcdstore.Open(context.Background(), etcdstore.Options{
		Endpoints: []string{fmt.Sprintf("http://127.0.0.1:%d", ports.FreeTCP(t))}, DialTimeout: 500 * time.Millisecond})
	if err == nil || time.Since(start) > 3*time.Second {
		t.Fatalf("open of nothing: %v after %v", err, time.Since(start))
	}
	t.Log(err)
}

// A transaction whose read revision is compacted away while it runs starts
// again on the newest state instead of failing.
func TestCompactedWhileReading(t *testing.T) {
	srv := etcdtest.Start(t)
	s := openEtcd(t, srv, 10*time.Second)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	put := func(k, v string) {
		if err := s.Update(func(tx store.Tx) error { return tx.Put(store.BucketHosts, k, []byte(v)) }); err != nil {
			t.Fatal(err)
		}
	}
	put("a", "1")
	put("b", "1")
	runs := 0
	err = s.View(func(tx store.Tx) error {
		runs++
		a, err := tx.Get(store.BucketHosts, "a")
		if err != nil {
			return err
		}
		if runs == 1 {
			put("b", "2")
			resp, err := cli.Get(context.Background(), "/")
			if err != nil {
				return err
			}
			if _, err := cli.Compact(context.Background(), resp.Header.Revision); err != nil {
				return err
			}
		}
		b, err := tx.Get(store.BucketHosts, "b")
		if err != nil {
			return err
		}
		if string(a) != "1" || string(b) != "2" {
			t.Errorf("run %d read a=%s b=%s, want 1 2", runs, a, b)
		}
		return nil
	})
	if err != nil || runs != 2 {
		t.Fatalf("View: %v after %d runs, want nil after 2", err, runs)
	}
}
