package store_test

import (
	"path/filepath"
	"testing"

	"github.com/diskless-boot/diskless/internal/store"
	"github.com/diskless-boot/diskless/internal/store/storetest"
)

func TestBoltConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) (store.Store, func() store.Store) {
		path := filepath.Join(t.TempDir(), store.FileName)
		open := func() store.Store {
			s, err := store.OpenBolt(path, store.BoltOptions{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
		s := open()
		return s, func() store.Store {
			s.Close()
			return open()
		}
	})
}
