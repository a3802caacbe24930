package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// FileName is the store file inside data_dir.
const FileName = "state.db"

// Bolt is the embedded Store: a bbolt file. It is safe for concurrent use.
type Bolt struct {
	db   *bolt.DB
	path string
}

// BoltOptions configures OpenBolt.
type BoltOptions struct {
	// LockTimeout is how long Open waits for another process to release
	// the file before it returns ErrLocked. Default 1 s.
	LockTimeout time.Duration
	// ReadOnly opens the store with a shared lock: several readers may
	// share it, no writer.
	ReadOnly bool
}

// OpenBolt opens (creating it with mode 0600 when absent) the store file
// at path. A file that is not a store, is truncated or fails bbolt's
// consistency check gives an error wrapping ErrCorrupt, never a panic; a
// file held by another process gives ErrLocked.
func OpenBolt(path string, opts BoltOptions) (s *Bolt, err error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = time.Second
	}
	if st, serr := os.Stat(path); serr == nil && st.Size() > 0 && st.Size() < 2*4096 {
		// Shorter than bbolt's two meta pages: bbolt itself would
		// report an unhelpful error or map beyond the end.
		return nil, fmt.Errorf("%w: %s: %d bytes, shorter than a store can be (truncated?)", ErrCorrupt, path, st.Size())
	}
	if err := preflight(path); err != nil {
		return nil, err
	}
	// bbolt panics on some corrupt pages and reads through its mmap,
	// where a page past the end of a truncated file is a SIGBUS: made a
	// panic here (SetPanicOnFault is per goroutine) and recovered, so a
	// damaged file gives the admin an error to act on, not a crash.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	var db *bolt.DB
	var file *os.File // bbolt's, to release its lock if bbolt panics
	defer func() {
		if r := recover(); r != nil {
			// db.Close may stop half way after a panic inside
			// bbolt; closing the file itself releases its lock.
			if db != nil {
				db.Close()
			}
			if file != nil {
				file.Close()
			}
			s, err = nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, r)
		}
	}()
	openFile := func(name string, flag int, perm os.FileMode) (*os.File, error) {
		f, err := os.OpenFile(name, flag, perm)
		file = f
		return f, err
	}
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout, ReadOnly: opts.ReadOnly, OpenFile: openFile})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("%w: %s (is a diskless server running? the CLI then talks to its API)", ErrLocked, path)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrVersionMismatch), errors.Is(err, berrors.ErrChecksum):
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
	case err != nil:
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	b := &Bolt{db: db, path: path}
	if err := b.check(); err != nil {
		db.Close()
		return nil, err
	}
	if !opts.ReadOnly {
		err := db.Update(func(tx *bolt.Tx) error {
			for _, name := range Buckets {
				if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("store: %s: %w", path, err)
		}
	}
	return b, nil
}

// preflight checks what bbolt.Open trusts before it maps the file: a
// valid meta page (magic, version, FNV-64a checksum) whose high-water mark
// and freelist page lie inside the file. A truncated file otherwise makes
// bbolt read past the end of its mapping (SIGBUS) before Open returns,
// with the file's lock held by a mapping nothing can release. Layout:
// bbolt's internal/common (page header of 16 bytes, then Meta).
func preflight(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil // a new store
	}
	if err != nil {
		return fmt.Errorf("store: open %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return nil
	}
	const pageHeader, metaLen = 16, 64
	read := func(off int64) (pageSize, freelist, hwm, txid uint64, ok bool) {
		b := make([]byte, pageHeader+metaLen)
		if _, err := f.ReadAt(b, off); err != nil {
			return 0, 0, 0, 0, false
		}
		m := b[pageHeader:]
		le := binary.LittleEndian
		h := fnv.New64a()
		h.Write(m[:56])
		if le.Uint32(m[0:]) != 0xED0CDAED || le.Uint32(m[4:]) != 2 || le.Uint64(m[56:]) != h.Sum64() {
			return 0, 0, 0, 0, false
		}
		return uint64(le.Uint32(m[8:])), le.Uint64(m[32:]), le.Uint64(m[40:]), le.Uint64(m[48:]), true
	}
	ps0, fl0, hwm0, tx0, ok0 := read(0)
	off1 := int64(os.Getpagesize())
	if ok0 {
		off1 = int64(ps0)
	}
	ps1, fl1, hwm1, tx1, ok1 := read(off1)
	ps, fl, hwm := ps0, fl0, hwm0
	switch {
	case ok1 && (!ok0 || tx1 > tx0):
		ps, fl, hwm = ps1, fl1, hwm1
	case !ok0:
		return fmt.Errorf("%w: %s: no valid meta page (not a store, or damaged)", ErrCorrupt, path)
	}
	if ps < 1024 || ps > 1<<20 || hwm*ps > uint64(st.Size()) || fl >= hwm && fl != ^uint64(0) {
		return fmt.Errorf("%w: %s: %d bytes, but its metadata names %d pages of %d bytes (truncated?)", ErrCorrupt, path, st.Size(), hwm, ps)
	}
	return nil
}

// check runs bbolt's page-level consistency check: every page reachable
// once, free pages not in use. The store is small (kilobytes to a few
// megabytes), so this costs milliseconds at start.
func (b *Bolt) check() error {
	return b.db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
			if len(errs) == 10 {
				break
			}
		}
		if len(errs) > 0 {
			return fmt.Errorf("%w: %s: %w", ErrCorrupt, b.path, errors.Join(errs...))
		}
		return nil
	})
}

// Path is the store file.
func (b *Bolt) Path() string { return b.path }

// View implements Store.
func (b *Bolt) View(fn func(Tx) error) error {
	return b.db.View(func(tx *bolt.Tx) error { return fn(boltTx{tx}) })
}

// Update implements Store.
func (b *Bolt) Update(fn func(Tx) error) error {
	return b.db.Update(func(tx *bolt.Tx) error { return fn(boltTx{tx}) })
}

// Size is the store file's size in bytes: what it takes on disk, which
// bbolt grows ahead of its data (doubling while small, then in steps of
// 16 MiB) and never shrinks.
func (b *Bolt) Size() (int64, error) {
	st, err := os.Stat(b.path)
	if err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	return st.Size(), nil
}

// Close implements Store.
func (b *Bolt) Close() error { return b.db.Close() }

type boltTx struct{ tx *bolt.Tx }

func (t boltTx) bucket(name string) (*bolt.Bucket, error) {
	bk := t.tx.Bucket([]byte(name))
	if bk == nil {
		return nil, fmt.Errorf("store: no bucket %q", name)
	}
	return bk, nil
}

func (t boltTx) Get(bucket, key string) ([]byte, error) {
	bk, err := t.bucket(bucket)
	if err != nil {
		return nil, err
	}
	v := bk.Get([]byte(key))
	if v == nil {
		return nil, ErrNotFound
	}
	return v, nil
}

func (t boltTx) Put(bucket, key string, value []byte) error {
	bk, err := t.bucket(bucket)
	if err != nil {
		return err
	}
	if key == "" {
		return errors.New("store: empty key")
	}
	return bk.Put([]byte(key), value)
}

func (t boltTx) Delete(bucket, key string) error {
	bk, err := t.bucket(bucket)
	if err != nil {
		return err
	}
	return bk.Delete([]byte(key))
}

func (t boltTx) ForEach(bucket, prefix string, fn func(key string, value []byte) error) error {
	bk, err := t.bucket(bucket)
	if err != nil {
		return err
	}
	c := bk.Cursor()
	p := []byte(prefix)
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		if err := fn(string(k), v); err != nil {
			return err
		}
	}
	return nil
}

var _ Store = (*Bolt)(nil)
