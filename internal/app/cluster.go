package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/diskless-boot/diskless/internal/cluster"
	"github.com/diskless-boot/diskless/internal/config"
	"github.com/diskless-boot/diskless/internal/store/etcdstore"
)

// newClusterNode makes this server a member of the site's cluster
// (cluster section): the active member holds the floating address and
// answers DHCP; a member that stops being active drops every session and
// closes every disk, so the one taking over can lock them.
func newClusterNode(cfg *config.Config, site *Site, sup *supervisor, log *slog.Logger) (*cluster.Node, error) {
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
		OnPassive: func(why string) { sup.release("this server is no longer the site's active server: " + why) },
	})
}

// activeOnly passes a socket's packets on only while the node is active:
// the standby servers' DHCP servers stay quiet, with their sockets open.
type activeOnly struct {
	net.PacketConn
	node *cluster.Node
}

func (c activeOnly) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err != nil || c.node.Active() {
			return n, addr, err
		}
	}
}

// runCluster runs the node until ctx ends; the returned wait blocks until
// it stepped down (address removed, sessions released, lease revoked).
func runCluster(ctx context.Context, node *cluster.Node) (wait func()) {
	done := make(chan struct{})
	go func() { node.Run(ctx); close(done) }()
	return func() { <-done }
}
