package etcdstore_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/inventory"
	"github.com/diskless-boot/diskless/internal/storage"
	etcdtest "github.com/diskless-boot/diskless/internal/testutil/etcd"
)

// The inventory works on etcd as on bolt, and two servers' inventories on
// one etcd are one site: what one adds the other serves with the same
// identity, and the model's rules hold across them (one MAC, one host).
// The storage backend is one local directory here; on a real site it is
// shared storage (RBD).
func TestInventoryOnEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	dir := t.TempDir()
	newInv := func() *inventory.Inventory {
		be, err := storage.NewLocal(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		inv, err := inventory.New(inventory.Options{Store: openEtcd(t, srv, 10*time.Second), Backend: be})
		if err != nil {
			t.Fatal(err)
		}
		return inv
	}
	ctx := context.Background()
	a, b := newInv(), newInv()
	if a.IQNBase() != b.IQNBase() {
		t.Errorf("two servers of one site have different install IDs: %s %s", a.IQNBase(), b.IQNBase())
	}
	if _, err := a.CreateImage(ctx, inventory.NewImage{Name: "img", Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	ha, err := a.AddHost(ctx, inventory.HostSpec{Name: "pc1", MACs: []string{"52:54:00:00:00:01"}, Image: "img", Version: 1, Mode: storage.Raw}, nil)
	if err != nil {
		t.Fatal(err)
	}
	hb, err := b.HostWithSecrets("pc1")
	if err != nil {
		t.Fatal(err)
	}
	if hb.TargetIQN != ha.TargetIQN || hb.CHAP == nil || ha.CHAP == nil || hb.CHAP.Secret != ha.CHAP.Secret {
		t.Errorf("server B sees pc1 as %s %+v, A made %s %+v", hb.TargetIQN, hb.CHAP, ha.TargetIQN, ha.CHAP)
	}
	if info, err := b.Image("img"); err != nil || len(info.Versions) != 1 {
		t.Errorf("server B sees image img: %+v %v", info, err)
	}

	// Both servers add a host with one MAC at once: one wins.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, inv := range []*inventory.Inventory{a, b} {
		wg.Go(func() {
			_, errs[i] = inv.AddHost(ctx, inventory.HostSpec{Name: fmt.Sprintf("pc%d", i+2), MACs: []string{"52:54:00:00:00:99"},
				Image: "img", Version: 1, Mode: storage.Raw}, nil)
		})
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) {
		t.Errorf("two servers adding hosts with one MAC: %v, %v; want exactly one to succeed", errs[0], errs[1])
	}
	hosts, err := a.Hosts()
	if err != nil || len(hosts) != 2 {
		t.Errorf("hosts after the race: %d %v, want 2", len(hosts), err)
	}
}
