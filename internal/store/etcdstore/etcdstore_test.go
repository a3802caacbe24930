package etcdstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/store"
	"github.com/diskless-boot/diskless/internal/store/etcdstore"
	"github.com/diskless-boot/diskless/internal/store/storetest"
	etcdtest "github.com/diskless-boot/diskless/internal/testutil/etcd"
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
