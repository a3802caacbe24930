package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"

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
	if id, ok := any(site.Backend).(interface{ ClientID() string }); ok {
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
