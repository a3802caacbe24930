package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/diskless-boot/diskless/internal/cluster"
	"github.com/diskless-boot/diskless/internal/config"
	"github.com/diskless-boot/diskless/internal/dhcp"
	"github.com/diskless-boot/diskless/internal/store"
	"github.com/diskless-boot/diskless/internal/store/etcdstore"
)

// newClusterNode makes this server a member of the site's cluster
// (cluster section): the active member holds the floating address and
// answers DHCP; a member that stops being active drops every session and
// closes every disk, so the one taking over can lock them.
func newClusterNode(cfg *config.Config, site *Site, sup *supervisor, cdhcp *clusterDHCP, log *slog.Logger) (*cluster.Node, error) {
	es, ok := site.Store.(*etcdstore.Store)
	if !ok {
		return nil, fmt.Errorf("cluster: needs store.backend etcd")
	}
	name := cfg.Cluster.Name
	if name == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("cluster.name: not set, and no host name: %w", err)
		}
		name = h
	}
	self := cluster.Member{Name: name}
	if ownAddr, _, err := net.SplitHostPort(cfg.API.Listen); err == nil {
		self.Address = ownAddr
	}
	if id, ok := site.Backend.(interface{ ClientID() string }); ok {
		self.StorageID = id.ClientID()
	} else {
		log.Warn("cluster with storage.backend local: each server serves the disks in its own data_dir, " +
			"so a host's disk moves with no failover unless it is a raw file on storage every server mounts; use storage.backend rbd")
	}
	return cluster.New(cluster.Config{
		Client: es.Client(), Prefix: es.Prefix(), Self: self, TTL: cfg.Cluster.Lease,
		Address: cfg.Cluster.Prefix(), Interface: cfg.Interface, Logger: log,
		OnActive: cdhcp.takeOver,
		OnPassive: func(why string) {
			cdhcp.stepDown()
			sup.release("this server is no longer the site's active server: " + why)
		},
	})
}

// runCluster runs the node until ctx ends; the returned wait blocks until
// it stepped down (address removed, sessions released, lease revoked).
func runCluster(ctx context.Context, node *cluster.Node) (wait func()) {
	done := make(chan struct{})
	go func() { node.Run(ctx); close(done) }()
	return func() { <-done }
}

// clusterDHCP makes the active server answer DHCP from the leases its
// predecessor gave: a server that takes over answers only once it has
// replaced its table with the store's (a standby's table is as old as the
// process), and retries until it could.
type clusterDHCP struct {
	node  *cluster.Node
	srv   *dhcp.Server // nil: DHCP off
	ready atomic.Bool  // the table is the store's since this term began
	log   *slog.Logger
}

func (c *clusterDHCP) answering() bool { return c.ready.Load() && c.node.Active() }

// takeOver is the node's OnActive.
func (c *clusterDHCP) takeOver() {
	if c.srv == nil {
		return
	}
	go func() {
		for c.node.Active() {
			err := c.srv.ReloadLeases()
			if err == nil {
				c.ready.Store(true)
				return
			}
			c.log.Error("cluster: the DHCP leases of the state store could not be read; not answering DHCP until they are", "err", err)
			time.Sleep(time.Second)
		}
	}()
}

// stepDown is the node's OnPassive.
func (c *clusterDHCP) stepDown() { c.ready.Store(false) }

// storeLeases keeps the DHCP leases of a cluster in the shared state
// store (meta/dhcp-leases). Only the active server writes, and only while
// it is: each write is an etcd transaction conditioned on its election key
// (guard), so a server deposed meanwhile cannot overwrite its heir's
// table. etcd bounds one value to its request size (1.5 MiB by default):
// about 10000 leases (config checks the pool).
type storeLeases struct {
	store *etcdstore.Store
	guard func() (clientv3.Cmp, bool)
}

const metaDHCPLeases = "dhcp-leases"

func (s storeLeases) String() string { return "the state store's DHCP leases" }

func (s storeLeases) key() string { return s.store.Key(store.BucketMeta, metaDHCPLeases) }

func (s storeLeases) LoadLeases() ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := s.store.Client().Get(ctx, s.key())
	if err != nil || len(r.Kvs) == 0 {
		return nil, err
	}
	return r.Kvs[0].Value, nil
}

func (s storeLeases) SaveLeases(data []byte) error {
	cmp, ok := s.guard()
	if !ok {
		return errors.New("this server is no longer the cluster's active server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := s.store.Client().Txn(ctx).If(cmp).Then(clientv3.OpPut(s.key(), string(data))).Commit()
	if err != nil {
		return err
	}
	if !r.Succeeded {
		return errors.New("this server lost the cluster's election: its leases are not the site's any more")
	}
	return nil
}

// fencing is the policy of disks on shared storage (storage.RBDOptions):
// whose lock on a host's disk may be broken, and what a server does when
// another one broke its own. It reads node and sup through pointers: the
// site (and with it the backend) is opened before they exist.
type fencing struct {
	node **cluster.Node
	sup  **supervisor
	log  *slog.Logger
	// fatal ends the server: a fenced server's storage client is
	// blocklisted for every disk, and only a new process gets a new one.
	fatal chan error
}

// mayBreakLock breaks a lock only when its owner is no live member of the
// cluster: a server whose lease ended has stopped serving (it fences
// itself before etcd can expire the lease) or is dead. Without a cluster
// nothing here can tell a dead owner from a live one: never (librbd
// breaks the lock of an owner whose watch expired, ~30 s after its death).
func (f fencing) mayBreakLock(host, owner string) (bool, string) {
	node := *f.node
	if node == nil {
		return false, "no cluster section: the owner's liveness is unknown"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if alive, who := node.StorageOwnerAlive(ctx, owner); alive {
		return false, "held by the live server " + who
	}
	return true, "no live server of the cluster holds it"
}

// onFenced drops the host's sessions and closes its disk: another server
// broke the disk's lock (this one was taken for dead) and serves it now.
// Breaking the lock blocklisted this server's storage client, for every
// disk, version and boot file: nothing it serves from the cluster works
// any more, and a standby with that client would be elected to serve
// nothing. So the server ends (a service manager starts it again, with a
// new client, as a standby).
func (f fencing) onFenced(host string, err error) {
	f.log.Error("host disk fenced: another server took its lock; dropping its sessions", "host", host, "err", err)
	if sup := *f.sup; sup != nil {
		sup.release("its disk's lock was taken by another server", host)
	}
	select {
	case f.fatal <- fmt.Errorf("fenced: another server broke this server's lock on %s's disk, and the storage cluster refuses this server's client: restart to serve again (%w)", host, err):
	default:
	}
}

// leaderName names the active server and its address, for a standby's
// refusals ("" when unknown).
func leaderName(ctx context.Context, node *cluster.Node) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	m, ok, err := node.Leader(ctx)
	if err != nil || !ok {
		return ""
	}
	if m.Address != "" {
		return m.Name + " at " + m.Address
	}
	return m.Name
}
