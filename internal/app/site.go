package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/diskless-boot/diskless/internal/inventory"
	"github.com/diskless-boot/diskless/internal/storage"
	"github.com/diskless-boot/diskless/internal/store"
)

// Site is an opened data directory: its state store, the storage backend
// and the inventory on them. Both `diskless serve` and the CLI (when no
// server runs) work through one.
type Site struct {
	Dir     string
	Store   *store.Bolt
	Backend *storage.Local
	Inv     *inventory.Inventory
}

// SiteOptions configures OpenSite.
type SiteOptions struct {
	IQNBase string
	Logger  *slog.Logger
}

// Legacy files of data_dir from before the state store, migrated into it
// on first start and then renamed *.migrated.
const (
	legacyInstallID = "install-id"
	legacySecrets   = "chap-secrets.json"
)

// OpenSite opens (creating) the data directory dir: mode 0700, the store
// locked against other writers, an interrupted operation cleaned up.
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
	dbPath := filepath.Join(dir, store.FileName)
	db, err := store.OpenBolt(dbPath, store.BoltOptions{})
	if err != nil {
		return nil, err
	}
	// The store holds CHAP secrets: readable by its owner only.
	if st, err := os.Stat(dbPath); err == nil && st.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dbPath, 0o600); err != nil {
			db.Close()
			return nil, fmt.Errorf("data_dir: %w", err)
		}
		log.Warn("the state store was readable by others; made it 0600", "file", dbPath)
	}
	if err := migrateInstallID(db, dir, log); err != nil {
		db.Close()
		return nil, err
	}
	be, err := storage.NewLocal(dir, log)
	if err != nil {
		db.Close()
		return nil, err
	}
	inv, err := inventory.New(inventory.Options{Store: db, Backend: be, IQNBase: opts.IQNBase, Logger: log})
	if err != nil {
		db.Close()
		return nil, err
	}
	if err := inv.Recover(ctx); err != nil {
		log.Warn("cleaning up after an interrupted run was incomplete", "err", err)
	}
	return &Site{Dir: dir, Store: db, Backend: be, Inv: inv}, nil
}

// Close releases the store (and with it the data directory's lock).
func (s *Site) Close() error { return s.Store.Close() }

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
