// Package store keeps diskless' state: image and version records, hosts
// with their generated names and secrets, API tokens, machines seen but not
// configured, the audit log of changes. It owns persistence and transactions behind the small Store
// interface; it knows nothing of what the records mean (internal/inventory
// owns the model and its rules) and never logs.
//
// The embedded implementation is bbolt (Bolt): one file in data_dir, ACID
// transactions, pure Go, and an exclusive file lock, so two processes can
// never write the store at once (the CLI works on the store directly only
// when no server holds it). The interface is shaped like a key-value store
// with serializable transactions so that etcd (whose concurrency.STM gives
// the same Get/Put/Delete in a retried transaction) can implement it for
// sites with several servers: package etcdstore does, and
// package storetest checks both against the same suite.
package store

import (
	"context"
	"errors"
)

// Buckets: every record lives in one of these. A bucket is a flat
// namespace of keys; values are opaque bytes (the inventory stores JSON).
const (
	BucketMeta     = "meta"     // schema version, install ID
	BucketImages   = "images"   // image name -> image
	BucketVersions = "versions" // "<image>/<%08d version>" -> version
	BucketHosts    = "hosts"    // host name -> host (with its disk state and secrets)
	BucketTokens   = "tokens"   // token name -> hashed API token
	BucketUnknown  = "unknown"  // MAC -> machine seen but not configured
	BucketBoots    = "boots"    // "<host>/<%020d start, ns>" -> one boot's timeline
	// BucketAudit holds the audit log: "%020d" sequence number -> entry,
	// so ForEach walks it oldest first. Its writer keeps it bounded.
	BucketAudit = "audit"
)

// Buckets lists every bucket, in a fixed order.
var Buckets = []string{BucketMeta, BucketImages, BucketVersions, BucketHosts, BucketTokens, BucketUnknown, BucketBoots, BucketAudit}

// ErrNotFound is returned by Get for a key that is not there.
var ErrNotFound = errors.New("store: not found")

// ErrLocked is returned by Open when another process holds the store.
var ErrLocked = errors.New("store: in use by another process")

// ErrCorrupt is returned when the store file cannot be trusted: not a
// store, truncated, or failing its consistency check.
var ErrCorrupt = errors.New("store: file is corrupt")

// Store is a transactional key-value store. Implementations are safe for
// concurrent use; Update transactions are serialized.
type Store interface {
	// View runs fn in a read-only transaction that sees one consistent
	// state.
	View(fn func(Tx) error) error
	// Update runs fn in a read-write transaction: every change fn made is
	// committed (durably) if it returns nil, none if it returns an error.
	// A store with optimistic transactions (etcd) runs fn again when
	// another writer changed what it read, so fn must have no effect
	// outside the Tx but variables it sets anew on every run.
	Update(fn func(Tx) error) error
	// Close releases the store.
	Close() error
}

// Tx is one transaction. It is valid only inside the View or Update call
// that made it; values it returns must not be kept after it (copy them).
type Tx interface {
	// Get returns the value of key in bucket, ErrNotFound if there is none.
	Get(bucket, key string) ([]byte, error)
	// Put sets key in bucket (Update only).
	Put(bucket, key string, value []byte) error
	// Delete removes key from bucket; a missing key is not an error
	// (Update only).
	Delete(bucket, key string) error
	// ForEach calls fn for every key of bucket with the given prefix, in
	// ascending key order, until fn returns an error.
	ForEach(bucket, prefix string, fn func(key string, value []byte) error) error
}

// Watcher is implemented by a Store that other processes change too (the
// etcd store: several servers share it), so that a server learns of a
// change made through another one. Bolt has none: one process holds it.
type Watcher interface {
	// Watch reports every committed change to bucket from the moment
	// Watch returns, in commit order, until ctx is done; then the channel
	// is closed. A Change says which key to read again, not its value:
	// readers go through the model. To miss nothing, a reader watches
	// first, then loads what it needs, then applies changes. The error
	// is for a watch that could not be started (the store unreachable).
	Watch(ctx context.Context, bucket string) (<-chan Change, error)
}

// Change is one change a Watcher reports.
type Change struct {
	Bucket string
	// Key changed: put (Deleted false) or deleted. Empty when Resync.
	Key     string
	Deleted bool
	// Resync says the watcher lost track of some changes (they were
	// compacted away while it reconnected): read the whole bucket again.
	Resync bool
	// Revision orders changes: the store's revision of the commit.
	Revision int64
}
