package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/diskless-boot/diskless/internal/config"
	"github.com/diskless-boot/diskless/internal/inventory"
	"github.com/diskless-boot/diskless/internal/storage"
	"github.com/diskless-boot/diskless/internal/store"
	"github.com/diskless-boot/diskless/internal/store/etcdstore"
)

// Site is an opened data directory: its state store, the storage backend
// and the inventory on them. Both `diskless serve` and the CLI (when no
// server runs) work through one.
type Site struct {
	Dir string
	// Store is data_dir/state.db (*store.Bolt) or, with store.backend
	// etcd, an *etcdstore.Store other servers share (a store.Watcher).
	Store store.Store
	// Backend is the storage the config's storage section names:
	// *storage.Local (files in Dir) or *storage.RBD (a Ceph pool).
	Backend storage.Backend
	Inv     *inventory.Inventory
}

// SiteOptions configures OpenSite.
type SiteOptions struct {
	IQNBase string
	Logger  *slog.Logger
	// Store selects the state store (the config's store section). The
	// zero value is bolt in the data directory.
	Store config.Store
	// Storage selects the storage backend (the config's storage
	// section). The zero value is local files in the data directory.
	Storage config.Storage
	// MayBreakLock and OnFenced are the fencing policy of the rbd
	// backend (storage.RBDOptions); nil: never break another server's
	// lock, and only log a fenced disk.
	MayBreakLock func(host, owner string) (bool, string)
	OnFenced     func(host string, err error)
}

// Legacy files of data_dir from before the state store, migrated into it
// on first start and then renamed *.migrated.
const (
	legacyInstallID = "install-id"
	legacySecrets   = "chap-secrets.json"
)

// OpenSite opens (creating) the data directory dir: mode 0700, the store
// locked against other writers (bolt) or connected to (etcd), an
// interrupted operation cleaned up (bolt only: see openStore).
func OpenSite(ctx context.Context, dir string, opts SiteOptions) (*Site, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	if st, err := os.Stat(dir); err == nil && st.Mode().Perm()&0o077 != 0 {
		// Host disks and secrets live here: nobody else may read them.
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("data_dir: %w", err)
		}
		log.Warn("data_dir was readable by others; made it 0700", "dir", dir, "was", st.Mode().Perm().String())
	}
	db, shared, err := openStore(ctx, dir, opts.Store, log)
	if err != nil {
		return nil, err
	}
	if err := migrateInstallID(db, dir, log); err != nil {
		db.Close()
		return nil, err
	}
	be, err := openBackend(dir, opts, log)
	if err != nil {
		db.Close()
		return nil, err
	}
	inv, err := inventory.New(inventory.Options{Store: db, Backend: be, IQNBase: opts.IQNBase, Logger: log})
	if err != nil {
		closeBackend(be)
		db.Close()
		return nil, err
	}
	if shared {
		// Recover forgets versions left "writing": in a shared store
		// another server may be writing them now.
		log.Info("not cleaning up after an interrupted run: the state store is shared with other servers")
	} else if err := inv.Recover(ctx); err != nil {
		log.Warn("cleaning up after an interrupted run was incomplete", "err", err)
	}
	return &Site{Dir: dir, Store: db, Backend: be, Inv: inv}, nil
}

// openStore opens the store sc names; shared says other servers use it
// too (etcd).
func openStore(ctx context.Context, dir string, sc config.Store, log *slog.Logger) (db store.Store, shared bool, err error) {
	if sc.Backend == config.StoreEtcd {
		db, err := etcdstore.Open(ctx, etcdstore.Options{Endpoints: sc.Etcd.Endpoints, Prefix: sc.Etcd.Prefix, Timeout: sc.Etcd.Timeout})
		if err != nil {
			return nil, false, err
		}
		log.Info("state store in etcd", "endpoints", strings.Join(sc.Etcd.Endpoints, ","), "prefix", db.Prefix())
		return db, true, nil
	}
	dbPath := filepath.Join(dir, store.FileName)
	bdb, err := store.OpenBolt(dbPath, store.BoltOptions{})
	if err != nil {
		return nil, false, err
	}
	// The store holds CHAP secrets: readable by its owner only.
	if st, err := os.Stat(dbPath); err == nil && st.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dbPath, 0o600); err != nil {
			bdb.Close()
			return nil, false, fmt.Errorf("data_dir: %w", err)
		}
		log.Warn("the state store was readable by others; made it 0600", "file", dbPath)
	}
	return bdb, false, nil
}

// openBackend opens the storage backend opts.Storage names.
func openBackend(dir string, opts SiteOptions, log *slog.Logger) (storage.Backend, error) {
	if opts.Storage.Backend != config.StorageRBD {
		return storage.NewLocal(dir, log)
	}
	r := opts.Storage.RBD
	be, err := storage.OpenRBD(storage.RBDOptions{Pool: r.Pool, CephConf: r.CephConf, User: r.User, Keyring: r.Keyring,
		OpTimeout: r.OpTimeout, DataDir: dir, MayBreakLock: opts.MayBreakLock, OnFenced: opts.OnFenced, Logger: log})
	if err != nil {
		return nil, err
	}
	log.Info("images and host disks in Ceph RBD", "pool", r.Pool, "client", be.ClientID())
	return be, nil
}

// closeBackend closes a backend that holds a connection (rbd).
func closeBackend(be storage.Backend) error {
	if c, ok := be.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// Close releases the store (and with it the data directory's lock) and
// the storage backend's connection.
func (s *Site) Close() error { return errors.Join(s.Store.Close(), closeBackend(s.Backend)) }

// migrateInstallID carries the install ID of an older data directory into
// a new store, so generated IQNs stay what the hosts were set up with.
func migrateInstallID(db store.Store, dir string, log *slog.Logger) error {
	path := filepath.Join(dir, legacyInstallID)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	id := strings.TrimSpace(string(b))
	if len(id) < 4 || len(id) > 32 || strings.Trim(id, "0123456789abcdef") != "" {
		return fmt.Errorf("data_dir: %s: %q is not an install ID", path, id)
	}
	migrated := false
	err = db.Update(func(tx store.Tx) error {
		if _, err := tx.Get(store.BucketMeta, "install-id"); err == nil {
			return nil
		}
		migrated = true
		return tx.Put(store.BucketMeta, "install-id", []byte(id))
	})
	if err != nil {
		return err
	}
	if migrated {
		log.Info("install ID moved into the state store", "id", id)
	}
	return os.Rename(path, path+".migrated")
}
