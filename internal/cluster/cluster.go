// Package cluster makes several diskless servers of one site one service:
// each server is a member with an etcd lease, and the members elect, through
// etcd, the one that is active - that holds the site's floating address
// (the portal, script and DHCP server address every client knows) and
// answers on it. The others stand by, with every host configured, and one
// of them takes the address over when the active server's lease ends.
//
// The lease is also what the disks' fencing asks (storage's lock policy):
// a server may break another server's lock on a host disk only once that
// server is no longer a member, and a server that cannot prove its lease
// is alive stops serving before etcd can expire it (self-fencing), so the
// address, the election and the locks never disagree about who serves.
//
// It owns the membership records, the election and the address; what the
// server does when it becomes active or passive is the caller's (hooks).
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// DefaultTTL is the members' lease: how long a dead server goes unnoticed
// at most (its clients' stall is about this plus their reconnect).
const DefaultTTL = 3 * time.Second

// Member is what a server publishes about itself while it lives.
type Member struct {
	Name string `json:"name"`
	// Address is the server's own address on the served network.
	Address string `json:"address,omitempty"`
	// StorageID is the server's identity in the storage cluster (its
	// Ceph client's address, "10.0.0.2:0/1858542865", which names the
	// owner of its RBD locks), whose locks others may break once the
	// member is gone.
	StorageID string    `json:"storage_id,omitempty"`
	Since     time.Time `json:"since"`
}

// Config configures a Node.
type Config struct {
	// Client is the etcd client (the state store's); the Node does not
	// close it.
	Client *clientv3.Client
	// Prefix starts the node's keys (the store's prefix, e.g. /diskless/).
	Prefix string
	// Self is published as this server's member record; Name is required
	// and unique in the site.
	Self Member
	// TTL is the lease (whole seconds, at least 2 s; default DefaultTTL).
	TTL time.Duration
	// Address is the floating address with its prefix length, e.g.
	// 10.0.0.10/24, put on Interface while the node is active. Zero: the
	// node elects without an address (tests, or an address moved by other
	// means).
	Address   netip.Prefix
	Interface string
	// OnActive is called once the node is active, its address up.
	OnActive func()
	// OnPassive is called when the node stops being active (its lease is
	// lost or it shuts down), after its address is gone: the caller stops
	// serving (drops sessions, closes disks) before returning.
	OnPassive func(why string)
	Logger    *slog.Logger
}

// Node is one server's membership. Run it; it is safe for concurrent use.
type Node struct {
	cfg Config
	log *slog.Logger
	vip *address // nil without Address

	mu         sync.Mutex
	active     bool
	validUntil time.Time // the lease surely lives until then
	// leaderKey and leaderRev name this node's election key while active.
	leaderKey string
	leaderRev int64
}

// New checks cfg and returns the node; Run starts it.
func New(cfg Config) (*Node, error) {
	if cfg.Client == nil || cfg.Self.Name == "" {
		return nil, errors.New("cluster: an etcd client and a member name are required")
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.TTL < 2*time.Second || cfg.TTL%time.Second != 0 {
		return nil, fmt.Errorf("cluster: lease %v: want whole seconds, at least 2s", cfg.TTL)
	}
	n := &Node{cfg: cfg, log: cfg.Logger}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	if cfg.Address.IsValid() {
		a, err := newAddress(cfg.Interface, cfg.Address)
		if err != nil {
			return nil, err
		}
		n.vip = a
	}
	return n, nil
}

func (n *Node) memberKey(name string) string { return n.cfg.Prefix + "cluster/members/" + name }
func (n *Node) electionPrefix() string       { return n.cfg.Prefix + "cluster/active" }

// Active reports whether this node is the active server now.
func (n *Node) Active() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.active
}

// Run keeps the node a member and in the election until ctx ends: it
// joins with a new lease, campaigns, serves as active until the lease is
// lost, and joins again. At the end it steps down (address removed, lease
// revoked) so another server takes over at once.
func (n *Node) Run(ctx context.Context) error {
	if n.vip != nil {
		// An address left by a process of ours that died while active:
		// nobody elected us, it must go.
		if removed, err := n.vip.remove(); err != nil {
			n.log.Warn("cluster: could not remove a leftover floating address", "addr", n.cfg.Address, "err", err)
		} else if removed {
			n.log.Info("cluster: removed the floating address a previous run left on the interface", "addr", n.cfg.Address)
		}
	}
	for ctx.Err() == nil {
		why := n.term(ctx)
		if ctx.Err() != nil {
			break
		}
		n.log.Warn("cluster: membership lost; joining again", "why", why)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

// term is one lease: join, campaign, serve; it returns why it ended.
func (n *Node) term(ctx context.Context) string {
	ttl := n.cfg.TTL
	cli := n.cfg.Client
	gctx, cancel := context.WithTimeout(ctx, ttl)
	granted := time.Now()
	g, err := cli.Grant(gctx, int64(ttl/time.Second))
	cancel()
	if err != nil {
		return "etcd did not grant a lease: " + err.Error()
	}
	self := n.cfg.Self
	self.Since = time.Now().UTC()
	rec, _ := json.Marshal(self)
	// Create, never overwrite: two servers under one name (a cloned
	// machine, the default host name) would each see the other's storage
	// client vanish from the members and take its locks for dead ones.
	key := n.memberKey(self.Name)
	pctx, cancel := context.WithTimeout(ctx, ttl)
	r, err := cli.Txn(pctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(rec), clientv3.WithLease(g.ID))).Commit()
	cancel()
	if err != nil || !r.Succeeded {
		n.revoke(g.ID)
		if err != nil {
			return "member record not written: " + err.Error()
		}
		return fmt.Sprintf("another server is a member under the name %q: give each server its own cluster.name", self.Name)
	}

	tctx, stop := context.WithCancel(ctx)
	defer stop()
	lost := make(chan string, 1)
	go func() { lost <- n.keepAlive(tctx, g.ID, granted) }()

	// The session only carries the lease into the election; keepAlive
	// decides whether the lease is still ours.
	sess, err := concurrency.NewSession(cli, concurrency.WithLease(g.ID), concurrency.WithContext(tctx))
	if err != nil {
		stop()
		n.revoke(g.ID)
		return "election session: " + err.Error()
	}
	defer sess.Orphan()
	el := concurrency.NewElection(sess, n.electionPrefix())
	elected := make(chan error, 1)
	go func() { elected <- el.Campaign(tctx, self.Name) }()

	var why string
	select {
	case why = <-lost:
	case err := <-elected:
		if err != nil {
			stop()
			// Also at shutdown: the member leaves at once, not when its
			// lease runs out.
			n.revoke(g.ID)
			return "campaign: " + err.Error()
		}
		if err := n.becomeActive(tctx, el.Key(), el.Rev()); err != nil {
			// Elected but unable to serve: leave the leadership to
			// another server rather than hold it without the address.
			why = err.Error()
			n.becomePassive(why)
			break
		}
		why = <-lost
		n.becomePassive(why)
	}
	stop()
	n.revoke(g.ID)
	return why
}

// keepAlive renews the lease every TTL/3 and returns when it can no longer
// be sure the lease lives: etcd said it is gone, or a renewal interval
// before the last answered renewal (counted from when it was sent) runs
// out - whatever the renewals in flight are doing, so a server cut from
// etcd steps down before etcd can expire its lease and elect another. It
// also returns when the floating address's lifetime cannot be renewed.
func (n *Node) keepAlive(ctx context.Context, id clientv3.LeaseID, granted time.Time) string {
	ttl := n.cfg.TTL
	every := ttl / 3
	validUntil := granted.Add(ttl)
	if err := n.setValidUntil(validUntil); err != nil {
		return err.Error()
	}
	var lastErr error
	for {
		stepDown := validUntil.Add(-every)
		wait := min(every, time.Until(stepDown))
		select {
		case <-ctx.Done():
			return "shutting down"
		case <-time.After(wait):
		}
		if !time.Now().Before(stepDown) {
			return fmt.Sprintf("lease not renewed for %v (etcd: %v)", time.Since(validUntil.Add(-ttl)).Round(time.Millisecond), lastErr)
		}
		sent := time.Now()
		// The renewal may not run past the point where the server must
		// step down.
		kctx, cancel := context.WithDeadline(ctx, stepDown)
		r, err := n.cfg.Client.KeepAliveOnce(kctx, id)
		cancel()
		lastErr = err
		switch {
		case ctx.Err() != nil:
			return "shutting down"
		case err == nil && r.TTL > 0:
			validUntil = sent.Add(time.Duration(r.TTL) * time.Second)
			if err := n.setValidUntil(validUntil); err != nil {
				return err.Error()
			}
		case errors.Is(err, rpctypes.ErrLeaseNotFound) || (err == nil && r.TTL <= 0):
			return "etcd expired the lease"
		}
	}
}

// setValidUntil records how long the lease surely lives and, while
// active, makes the address live as long.
func (n *Node) setValidUntil(t time.Time) error {
	n.mu.Lock()
	n.validUntil = t
	active := n.active
	n.mu.Unlock()
	if active && n.vip != nil {
		if err := n.vip.add(t); err != nil {
			return fmt.Errorf("the floating address's lifetime not renewed: %w", err)
		}
	}
	return nil
}

// becomeActive takes the address and serves, unless the lease is about
// to run out (the campaign took that long) or the address cannot be
// added: then it returns why, and the caller steps down.
func (n *Node) becomeActive(ctx context.Context, key string, rev int64) error {
	n.mu.Lock()
	until := n.validUntil
	n.mu.Unlock()
	if time.Until(until) < n.cfg.TTL/3 {
		return errors.New("elected with a lease about to run out")
	}
	if n.vip != nil {
		if err := n.vip.add(until); err != nil {
			return fmt.Errorf("elected, but the floating address could not be added: %w", err)
		}
	}
	n.mu.Lock()
	n.active, n.leaderKey, n.leaderRev = true, key, rev
	n.mu.Unlock()
	if n.vip != nil {
		// Until the old server's address has surely expired (its lease,
		// and the kernel's second), clients that ask ARP may still get
		// its answer: keep announcing ours that long.
		n.vip.announce(ctx, n.cfg.TTL+2*time.Second, n.Active, n.log)
	}
	n.log.Info("cluster: active: this server serves the site", "member", n.cfg.Self.Name, "addr", n.cfg.Address)
	if n.cfg.OnActive != nil {
		n.cfg.OnActive()
	}
	return nil
}

func (n *Node) becomePassive(why string) {
	n.mu.Lock()
	n.active, n.leaderKey, n.leaderRev = false, "", 0
	n.mu.Unlock()
	if n.vip != nil {
		if _, err := n.vip.remove(); err != nil {
			n.log.Error("cluster: the floating address could not be removed", "addr", n.cfg.Address, "err", err)
		}
	}
	n.log.Warn("cluster: passive: no longer serving the site", "member", n.cfg.Self.Name, "why", why)
	if n.cfg.OnPassive != nil {
		n.cfg.OnPassive(why)
	}
}

// LeaderGuard is an etcd comparison that holds while this node is the
// elected active server of its current term: writes only the active
// server may make (the shared DHCP leases) are committed under it, so a
// server that lost the election meanwhile cannot overwrite its heir's.
// ok is false while the node is not active.
func (n *Node) LeaderGuard() (cmp clientv3.Cmp, ok bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.active {
		return clientv3.Cmp{}, false
	}
	return clientv3.Compare(clientv3.CreateRevision(n.leaderKey), "=", n.leaderRev), true
}

// revoke ends the lease at once (its keys go with it), so the next server
// need not wait for it to expire. Best effort: bounded by the TTL.
func (n *Node) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.TTL)
	defer cancel()
	n.cfg.Client.Revoke(ctx, id)
}

// Members lists the live members (a linearizable read).
func (n *Node) Members(ctx context.Context) ([]Member, error) {
	r, err := n.cfg.Client.Get(ctx, n.cfg.Prefix+"cluster/members/", clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := make([]Member, 0, len(r.Kvs))
	for _, kv := range r.Kvs {
		var m Member
		if json.Unmarshal(kv.Value, &m) == nil {
			out = append(out, m)
		}
	}
	return out, nil
}

// Leader is the member now elected active (a linearizable read); ok is
// false when none is.
func (n *Node) Leader(ctx context.Context) (m Member, ok bool, err error) {
	r, err := n.cfg.Client.Get(ctx, n.electionPrefix()+"/", clientv3.WithFirstCreate()...)
	if err != nil || len(r.Kvs) == 0 {
		return Member{}, false, err
	}
	name := string(r.Kvs[0].Value)
	ms, err := n.Members(ctx)
	if err != nil {
		return Member{Name: name}, true, err
	}
	for _, m := range ms {
		if m.Name == name {
			return m, true, nil
		}
	}
	return Member{Name: name}, true, nil
}

// StorageOwnerAlive answers the disks' lock policy: may a lock that
// storage client id holds be broken? Only when no live member is that
// client. An error (etcd unreachable) answers "alive": never break a lock
// on a guess.
func (n *Node) StorageOwnerAlive(ctx context.Context, id string) (alive bool, who string) {
	ms, err := n.Members(ctx)
	if err != nil {
		return true, "unknown (etcd: " + err.Error() + ")"
	}
	for _, m := range ms {
		if m.StorageID == id {
			return true, m.Name
		}
	}
	return false, ""
}
