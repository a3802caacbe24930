package cluster

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/diskless-boot/diskless/internal/testutil/etcd"
)

// events records a node's hooks.
type events struct {
	active  chan time.Time
	passive chan string
}

func newEvents() *events {
	return &events{active: make(chan time.Time, 4), passive: make(chan string, 4)}
}

func client(t *testing.T, endpoint string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func startNode(t *testing.T, c *clientv3.Client, name, storageID string) (*Node, *events, context.CancelFunc) {
	t.Helper()
	return startNodeTTL(t, c, name, storageID, 2*time.Second)
}

// startNodeTTL is startNode with a lease of ttl.
func startNodeTTL(t *testing.T, c *clientv3.Client, name, storageID string, ttl time.Duration) (*Node, *events, context.CancelFunc) {
	t.Helper()
	ev := newEvents()
	n, err := New(Config{Client: c, Prefix: "/t/", Self: Member{Name: name, StorageID: storageID}, TTL: ttl,
		OnActive:  func() { ev.active <- time.Now() },
		OnPassive: func(why string) { ev.passive <- why }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return n, ev, cancel
}

func wait[T any](t *testing.T, ch <-chan T, what string, d time.Duration) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("no %s within %v", what, d)
	}
	panic("unreachable")
}

// TestElectionAndTakeover: one of two members is active; when it steps
// down (shutdown) the other takes over at once; when it loses etcd (its
// client closed: a partitioned server) it stops serving on its own within
// the lease, and the other takes over once etcd expired the lease, not
// before, so the two are never active at once.
func TestElectionAndTakeover(t *testing.T) {
	e := etcd.Start(t)
	ca, cb := client(t, e.Endpoint), client(t, e.Endpoint)
	a, evA, stopA := startNode(t, ca, "a", "client.1")
	wait(t, evA.active, "a active", 10*time.Second)
	b, evB, _ := startNode(t, cb, "b", "client.2")
	if b.Active() || !a.Active() {
		t.Fatalf("active: a %v b %v", a.Active(), b.Active())
	}

	ctx := context.Background()
	if alive, who := b.StorageOwnerAlive(ctx, "client.1"); !alive || who != "a" {
		t.Errorf("client.1 alive %v as %q, want alive as a", alive, who)
	}
	if alive, _ := b.StorageOwnerAlive(ctx, "client.9"); alive {
		t.Errorf("client.9 (no member) alive")
	}

	if m, ok, err := b.Leader(ctx); err != nil || !ok || m.Name != "a" || m.StorageID != "client.1" {
		t.Errorf("leader %+v %v %v, want a", m, ok, err)
	}
	// A second server under b's name does not replace b's record: b's
	// storage client stays alive, the newcomer's is nobody's.
	_, _, stopDup := startNode(t, client(t, e.Endpoint), "b", "client.9")
	time.Sleep(500 * time.Millisecond)
	if alive, _ := a.StorageOwnerAlive(ctx, "client.2"); !alive {
		t.Errorf("b's storage client taken for dead after a second server named b started")
	}
	if alive, _ := a.StorageOwnerAlive(ctx, "client.9"); alive {
		t.Errorf("the second server named b became a member")
	}
	stopDup()

	// Clean shutdown: the lease is revoked, b takes over at once.
	stopped := time.Now()
	stopA()
	wait(t, evA.passive, "a passive", 5*time.Second)
	took := time.Since(stopped)
	wait(t, evB.active, "b active", 5*time.Second)
	t.Logf("takeover after a clean stop: %v", time.Since(stopped).Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("a stopped serving %v after its shutdown", took)
	}
	if alive, _ := b.StorageOwnerAlive(ctx, "client.1"); alive {
		t.Errorf("a's storage client still alive after a left")
	}

	// b partitioned from etcd: it fences itself; a third member takes
	// over only after b's lease expired in etcd.
	cc := client(t, e.Endpoint)
	_, evC, _ := startNode(t, cc, "c", "client.3")
	cut := time.Now()
	cb.Close()
	why := wait(t, evB.passive, "b passive", 5*time.Second)
	fenced := time.Since(cut)
	at := wait(t, evC.active, "c active", 10*time.Second)
	t.Logf("b fenced itself %v after losing etcd (%s); c active %v after", fenced.Round(time.Millisecond), why, at.Sub(cut).Round(time.Millisecond))
	if fenced > 2*time.Second {
		t.Errorf("b served %v without etcd, longer than its lease", fenced)
	}
	if at.Sub(cut) < fenced {
		t.Errorf("c active (%v) before b stopped serving (%v)", at.Sub(cut), fenced)
	}
}

// freezer relays TCP to target until frozen; then it keeps every
// connection open and passes nothing, as a network partition does: calls
// hang instead of failing.
type freezer struct {
	l      net.Listener
	frozen atomic.Bool
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{l: l}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			t.Cleanup(func() { c.Close(); u.Close() })
			go f.pipe(c, u)
			go f.pipe(u, c)
		}
	}()
	return f
}

func (f *freezer) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		if f.frozen.Load() {
			continue // lost in the partition
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

// TestStepDownBeforeExpiry: an active member cut from etcd by a partition
// (its renewals hang, they do not fail) steps down while etcd still holds
// its lease - a renewal interval before it could expire and elect
// another - so two members are never active at once.
func TestStepDownBeforeExpiry(t *testing.T) {
	e := etcd.Start(t)
	f := newFreezer(t, strings.TrimPrefix(e.Endpoint, "http://"))
	cut := client(t, "http://"+f.l.Addr().String())
	direct := client(t, e.Endpoint)
	_, ev, _ := startNodeTTL(t, cut, "a", "", 6*time.Second)
	wait(t, ev.active, "a active", 10*time.Second)
	r, err := direct.Get(context.Background(), "/t/cluster/members/a")
	if err != nil || len(r.Kvs) != 1 {
		t.Fatalf("member record: %v %v", r, err)
	}
	lease := clientv3.LeaseID(r.Kvs[0].Lease)

	f.frozen.Store(true)
	cutAt := time.Now()
	why := wait(t, ev.passive, "a passive", 10*time.Second)
	ttl, err := direct.TimeToLive(context.Background(), lease)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stepped down %v after the partition (%s); etcd's lease had %d s left", time.Since(cutAt).Round(time.Millisecond), why, ttl.TTL)
	if ttl.TTL < 1 {
		t.Errorf("stepped down with %d s left on the lease: not before etcd could expire it", ttl.TTL)
	}
}
