// Package inventory is the model of a diskless site and the one place that
// decides what its parts may do: images and their numbered, immutable
// versions; hosts with their MACs, names, iSCSI identities and secrets, the
// image they boot and their disk mode; snapshots, rollback, reset and
// promote. Every change goes through it; it keeps records in a
// store.Store and bytes in a storage.Backend, and tells the running server
// (through Runtime) what changed. It does not serve anything and does not
// know about the API or the CLI.
//
// Inventory is safe for concurrent use: changes to one host, and changes
// to image versions, are serialized; reads see committed state.
package inventory

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/diskless-boot/diskless/internal/storage"
	"github.com/diskless-boot/diskless/internal/store"
)

// DefaultIQNDomain starts generated IQNs; the install ID follows it.
const DefaultIQNDomain = "iqn.2026-01.boot.diskless"

// Keys of the meta bucket.
const (
	metaSchema    = "schema"
	metaInstallID = "install-id"
	schemaVersion = "1"
)

// Runtime is what the inventory needs of a running server. Without a
// server (the CLI working on the data directory) nothing is online and
// disks are closed: NoRuntime.
type Runtime interface {
	// Online reports whether the host has iSCSI sessions now.
	Online(host string) bool
	// WithDiskClosed runs fn while nothing has host's disk open, then
	// serves the disk again as the host's record then says. It fails
	// (without running fn) when the host is online.
	WithDiskClosed(host string, fn func() error) error
	// Changed is told after a host was added, changed or removed, so the
	// server serves it as its record now says (names, secrets, MACs).
	Changed(host string)
	// CheckHost refuses what the running servers cannot serve (a DHCP
	// reservation outside the served subnet) before it is saved.
	CheckHost(h *Host) error
	// MayChangeDisks refuses every change to a host's disk, open or
	// closed, on a server that must not make one (a standby of a cluster:
	// the active server has the disks open).
	MayChangeDisks() error
}

// NoRuntime is the Runtime of a data directory no server runs on: nothing
// is online, every disk is closed, changes apply at once.
type NoRuntime struct{}

func (NoRuntime) Online(string) bool                             { return false }
func (NoRuntime) WithDiskClosed(_ string, fn func() error) error { return fn() }
func (NoRuntime) Changed(string)                                 {}
func (NoRuntime) CheckHost(*Host) error                          { return nil }
func (NoRuntime) MayChangeDisks() error                          { return nil }

// StartingUp is the Runtime while a server starts, before it serves: disks
// are closed, but a host may well be running (it lost its sessions with
// the server that stopped and will log in again), so what a change does to
// a disk waits for the host's next boot, as for a host online.
type StartingUp struct{ NoRuntime }

func (StartingUp) Online(string) bool { return true }

// Options configures New.
type Options struct {
	Store   store.Store
	Backend storage.Backend
	// IQNBase is the prefix of generated IQNs (default: DefaultIQNDomain
	// ":" the install ID kept in the store).
	IQNBase string
	// Runtime is the running server (default NoRuntime).
	Runtime Runtime
	// Logger receives what the inventory does on its own (automatic
	// snapshots, disks moved to a new version). Default: discard.
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Inventory is the site model. See the package doc.
type Inventory struct {
	st      store.Store
	be      storage.Backend
	rt      Runtime
	log     *slog.Logger
	now     func() time.Time
	iqnBase string

	locksMu sync.Mutex
	locks   map[string]*sync.Mutex // per host; "" guards image versions
}

// New opens the model on a store: it checks the schema, creates the
// install ID on first use and derives the IQN base.
func New(opts Options) (*Inventory, error) {
	if opts.Store == nil || opts.Backend == nil {
		return nil, errors.New("inventory: a store and a storage backend are required")
	}
	inv := &Inventory{st: opts.Store, be: opts.Backend, rt: opts.Runtime, log: opts.Logger, now: opts.Now,
		locks: map[string]*sync.Mutex{}}
	if inv.rt == nil {
		inv.rt = NoRuntime{}
	}
	if inv.log == nil {
		inv.log = slog.New(slog.DiscardHandler)
	}
	if inv.now == nil {
		inv.now = time.Now
	}
	var id string
	err := inv.st.Update(func(tx store.Tx) error {
		switch v, err := tx.Get(store.BucketMeta, metaSchema); {
		case errors.Is(err, store.ErrNotFound):
			if err := tx.Put(store.BucketMeta, metaSchema, []byte(schemaVersion)); err != nil {
				return err
			}
		case err != nil:
			return err
		case string(v) != schemaVersion:
			return fmt.Errorf("inventory: store schema %q, this diskless knows %q: use a newer diskless", v, schemaVersion)
		}
		v, err := tx.Get(store.BucketMeta, metaInstallID)
		if errors.Is(err, store.ErrNotFound) {
			var raw [4]byte
			if _, err := rand.Read(raw[:]); err != nil {
				return err
			}
			v = []byte(hex.EncodeToString(raw[:]))
			if err := tx.Put(store.BucketMeta, metaInstallID, v); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		id = string(v)
		return nil
	})
	if err != nil {
		return nil, err
	}
	inv.iqnBase = opts.IQNBase
	if inv.iqnBase == "" {
		inv.iqnBase = DefaultIQNDomain + ":" + id
	}
	return inv, nil
}

// SetRuntime attaches the running server (after New, before serving).
func (inv *Inventory) SetRuntime(rt Runtime) { inv.rt = rt }

// Backend is the storage backend (the server opens host disks through it).
func (inv *Inventory) Backend() storage.Backend { return inv.be }

// Store is the state store.
func (inv *Inventory) Store() store.Store { return inv.st }

// IQNBase is the prefix of generated IQNs.
func (inv *Inventory) IQNBase() string { return inv.iqnBase }

// hostMutex is the mutex of one host ("" for image versions).
func (inv *Inventory) hostMutex(name string) *sync.Mutex {
	inv.locksMu.Lock()
	defer inv.locksMu.Unlock()
	m := inv.locks[name]
	if m == nil {
		m = &sync.Mutex{}
		inv.locks[name] = m
	}
	return m
}

// lock serializes changes to one host ("" for image versions).
func (inv *Inventory) lock(name string) func() {
	m := inv.hostMutex(name)
	m.Lock()
	return m.Unlock
}

// tryLock is lock for the boot path, which must not wait behind a long
// operation (a promote copying gigabytes): ok false means busy.
func (inv *Inventory) tryLock(name string) (unlock func(), ok bool) {
	m := inv.hostMutex(name)
	if !m.TryLock() {
		return nil, false
	}
	return m.Unlock, true
}

// getJSON reads one record.
func getJSON(tx store.Tx, bucket, key string, v any) error {
	b, err := tx.Get(bucket, key)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("inventory: record %s/%s: %w", bucket, key, err)
	}
	return nil
}

func putJSON(tx store.Tx, bucket, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Put(bucket, key, b)
}

func versionKey(image string, n int) string { return fmt.Sprintf("%s/%08d", image, n) }
