package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/diskless-boot/diskless/internal/cluster"
	"github.com/diskless-boot/diskless/internal/config"
	"github.com/diskless-boot/diskless/internal/store"
	"github.com/diskless-boot/diskless/internal/store/etcdstore"
)

// newClusterNode makes this server a member of the site's cluster
// (cluster section): the active member holds the floating address and
// answers DHCP; a member that stops being active drops every session and
// closes every disk, so the one taking over can lock them.
func newClusterNode(cfg *config.Config, site *Site, sup *supervisor, onActive func(), log *slog.Logger) (*cluster.Node, error) {
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
	}
	return cluster.New(cluster.Config{
		Client: es.Client(), Prefix: es.Prefix(), Self: self, TTL: cfg.Cluster.Lease,
		Address: cfg.Cluster.Prefix(), Interface: cfg.Interface, Logger: log,
		OnActive:  onActive,
		OnPassive: func(why string) { sup.release("this server is no longer the site's active server: " + why) },
	})
}

// runCluster runs the node until ctx ends; the returned wait blocks until
// it stepped down (address removed, sessions released, lease revoked).
func runCluster(ctx context.Context, node *cluster.Node) (wait func()) {
	done := make(chan struct{})
	go func() { node.Run(ctx); close(done) }()
	return func() { <-done }
}

// storeLeases keeps the DHCP leases of a cluster in the shared state
// store (meta/dhcp-leases), so the server that takes over answering knows
// every lease the last one gave. etcd bounds one value to its request
// size (1.5 MiB by default): about 10000 leases.
type storeLeases struct{ st store.Store }

const metaDHCPLeases = "dhcp-leases"

func (s storeLeases) String() string { return "the state store's DHCP leases" }

func (s storeLeases) LoadLeases() (data []byte, err error) {
	err = s.st.View(func(tx store.Tx) error {
		v, err := tx.Get(store.BucketMeta, metaDHCPLeases)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		data = bytes.Clone(v)
		return err
	})
	return data, err
}

func (s storeLeases) SaveLeases(data []byte) error {
	return s.st.Update(func(tx store.Tx) error { return tx.Put(store.BucketMeta, metaDHCPLeases, data) })
}

// fencing is the policy of disks on shared storage (storage.RBDOptions):
// whose lock on a host's disk may be broken, and what a server does when
// another one broke its own. It reads node and sup through pointers: the
// site (and with it the backend) is opened before they exist.
type fencing struct {
	node **cluster.Node
	sup  **supervisor
	log  *slog.Logger
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
func (f fencing) onFenced(host string, err error) {
	sup := *f.sup
	if sup == nil {
		return
	}
	f.log.Error("host disk fenced: another server took its lock; dropping its sessions", "host", host, "err", err)
	sup.release("its disk's lock was taken by another server", host)
}
