// Package etcdstore is the store.Store of a site with several diskless
// servers: the state lives in an etcd cluster that every server talks to,
// and every server can watch it for the others' changes (store.Watcher).
// It owns the mapping of buckets and keys onto etcd keys and the
// transactions over them; like package store it knows nothing of what the
// records mean and never logs.
//
// It is a package of its own, not a file of package store, so that the
// etcd client (gRPC, protobuf, zap: about 5 MB of binary) is linked only
// into what uses it, not into every package and test that uses the store.
package etcdstore

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/diskless-boot/diskless/internal/store"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// DefaultPrefix starts every key diskless keeps in etcd.
const DefaultPrefix = "/diskless/"

// Options configures Open.
type Options struct {
	// Endpoints are the etcd members' client URLs
	// (http://10.0.0.1:2379). Required.
	Endpoints []string
	// Prefix starts every key: a record is <Prefix><bucket>/<key>.
	// Several sites can share one etcd under different prefixes.
	// Default DefaultPrefix.
	Prefix string
	// DialTimeout bounds Open's first contact. Default 5 s.
	DialTimeout time.Duration
	// Timeout bounds each View and Update, its retries included: past
	// it the call fails with an error saying etcd did not answer.
	// Default 10 s.
	Timeout time.Duration
	// TLS, when set, is used to talk to etcd (client certificates, CA).
	// Default: plain HTTP.
	TLS *tls.Config
	// Username and Password authenticate to etcd when set. Default: none.
	Username, Password string
}

// Store is the store.Store on etcd. It is safe for concurrent use.
//
// Transactions are optimistic and serializable, like etcd's
// concurrency.STM (whose Get/Put/Delete store.Tx mirrors) but with range
// reads, which STM lacks and store.Tx.ForEach needs:
//
//   - Every read of a transaction is made at one revision, the one the
//     first read saw (a linearizable read, so a View or Update sees every
//     commit that finished before it began). View is therefore one
//     consistent snapshot; it never commits anything.
//   - Writes are buffered in the transaction (and seen by its own Get and
//     ForEach). Update commits them with one etcd Txn whose conditions
//     say that nothing the transaction read has changed since its read
//     revision R; when a condition fails, fn runs again on fresh state.
//     fn must therefore be idempotent: have no effect outside the Tx
//     other than setting variables it sets on every run.
//   - A key read with Get gives the condition "its ModRevision is still
//     the one read" (0 for a key that was absent), which catches an
//     update, a delete and an insert of that key.
//   - A range read with ForEach gives one condition over the whole range,
//     "every key in it has ModRevision <= R" (an etcd Compare with a
//     range end), which catches an insert into the range and an update
//     of any key in it, whether or not fn looked at that key. A delete
//     leaves nothing behind to compare, so every transaction that deletes
//     in a bucket also rewrites that bucket's delete marker
//     (<Prefix>.deleted/<bucket>), and a range read adds the condition
//     "the marker's ModRevision <= R". A range costs two conditions
//     whatever its size; keys read inside a range read add none (etcd
//     caps the conditions of a Txn, like its operations, at
//     --max-txn-ops, default 128). Deletes in a bucket conflict with
//     every concurrent range read of that bucket: coarser than needed,
//     never wrong.
//   - A read whose revision etcd compacted away meanwhile makes the
//     transaction start again, on the newest revision.
//
// So two transactions that each count a bucket's keys and add one when
// there are fewer than N cannot both commit on the same count, which the
// inventory relies on for unique names and bounded buckets.
//
// Etcd bounds one Update: --max-txn-ops (default 128) writes, and as many
// conditions (keys read with Get outside a range read, plus two per
// range), and --max-request-bytes (default 1.5 MiB). Beyond them the
// Update fails with etcd's error saying so; a large site raises both on
// its etcd members (the inventory writes up to 4096 unknown machines in
// one Update).
//
// An Update whose commit fails on a timeout may have committed anyway
// (etcd applied it, the answer was lost): the caller cannot tell, as with
// any networked database.
//
// store.ErrCorrupt is never returned: etcd checks its own data.
// store.ErrLocked neither: any number of servers share the store.
type Store struct {
	cli       *clientv3.Client
	prefix    string
	endpoints string
	timeout   time.Duration
	ctx       context.Context // canceled by Close
	cancel    context.CancelFunc
}

// Open connects to etcd and checks, within DialTimeout, that it
// answers. It creates nothing: buckets exist in etcd as key prefixes.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("store: etcd: no endpoints")
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 5 * time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	s := &Store{prefix: opts.Prefix, endpoints: strings.Join(opts.Endpoints, ","), timeout: opts.Timeout}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   opts.Endpoints,
		DialTimeout: opts.DialTimeout,
		TLS:         opts.TLS,
		Username:    opts.Username,
		Password:    opts.Password,
		Context:     s.ctx,
		Logger:      zap.NewNop(), // the store never logs; errors say it all
	})
	if err != nil {
		s.cancel()
		return nil, fmt.Errorf("store: etcd %s: %w", s.endpoints, err)
	}
	s.cli = cli
	pctx, cancel := context.WithTimeout(ctx, opts.DialTimeout)
	defer cancel()
	if _, err := cli.Get(pctx, s.prefix+store.BucketMeta+"/", clientv3.WithCountOnly()); err != nil {
		s.Close()
		return nil, s.wrap(pctx, "open", err)
	}
	return s, nil
}

// Prefix is the prefix of every key of the store.
func (s *Store) Prefix() string { return s.prefix }

// Client is the store's etcd client, for what else a server keeps in the
// same etcd under the same prefix (package cluster's membership). It is
// closed with the store.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Close implements store.Store.
func (s *Store) Close() error {
	s.cancel()
	return s.cli.Close()
}

// View implements store.Store.
func (s *Store) View(fn func(store.Tx) error) error { return s.run("view", false, fn) }

// Update implements store.Store.
func (s *Store) Update(fn func(store.Tx) error) error { return s.run("update", true, fn) }

// run runs fn until it commits (or, for a View, reads) without a
// conflict, within the timeout.
func (s *Store) run(op string, write bool, fn func(store.Tx) error) error {
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	defer cancel()
	for attempt := 1; ; attempt++ {
		tx := &txn{s: s, ctx: ctx, op: op, write: write}
		err := fn(tx)
		if tx.err != nil {
			// A failed read: whatever fn made of it (it may have taken
			// the error for "absent"), nothing is committed.
			if errors.Is(tx.err, rpctypes.ErrCompacted) {
				// The read revision was compacted away: start again
				// from the newest.
				if werr := s.backoff(ctx, attempt); werr != nil {
					return s.wrap(ctx, op, werr)
				}
				continue
			}
			if err != nil && errors.Is(err, tx.err) {
				return err // fn's own wrapping of it
			}
			return tx.err
		}
		if err != nil {
			return err
		}
		if !write || len(tx.writes) == 0 {
			return nil // the reads were one snapshot: nothing to check
		}
		ok, err := tx.commit()
		if err != nil {
			return s.wrap(ctx, op, err)
		}
		if ok {
			return nil
		}
		if err := s.backoff(ctx, attempt); err != nil {
			return fmt.Errorf("store: etcd %s: %s: still conflicting with other writers after %d attempts: %w", s.endpoints, op, attempt, err)
		}
	}
}

// backoff waits a little before a transaction runs again, longer after
// each attempt and with jitter, so that writers contending for the same
// keys do not meet again in lockstep.
func (s *Store) backoff(ctx context.Context, attempt int) error {
	d := time.Duration(rand.Int64N(int64(min(attempt, 20)) * int64(time.Millisecond)))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// wrap says which etcd failed, and that it did not answer in time when
// the context ran out (a stopped or unreachable etcd).
func (s *Store) wrap(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("store: etcd %s: %s: no answer in time (is etcd running and reachable?): %w", s.endpoints, op, err)
	}
	return fmt.Errorf("store: etcd %s: %s: %w", s.endpoints, op, err)
}

// Key is the etcd key of key in bucket: the store's own layout, and for
// a server's own transactions on a record of the store (the cluster's
// DHCP leases, written only under the leader's guard).
func (s *Store) Key(bucket, key string) string { return s.prefix + bucket + "/" + key }

func (s *Store) deleteMarker(bucket string) string { return s.prefix + ".deleted/" + bucket }

func checkBucket(bucket string) error {
	if !slices.Contains(store.Buckets, bucket) {
		return fmt.Errorf("store: no bucket %q", bucket)
	}
	return nil
}

// txn is one attempt at a transaction: see Store.
type txn struct {
	s     *Store
	ctx   context.Context
	op    string // "view" or "update", for errors
	write bool
	err   error // the first failed read (wrapped); the attempt then commits nothing

	rev    int64                // the read revision, 0 before the first read
	reads  map[string]etcdRead  // full key -> what was read (present keys)
	keys   map[string]int64     // full key -> ModRevision read by Get (0: absent)
	ranges []keyRange           // ranges read by ForEach
	writes map[string]etcdWrite // full key -> buffered write
	dels   map[string]bool      // buckets this transaction deletes in
	rbkts  map[string]bool      // buckets this transaction read ranges of
}

type etcdRead struct {
	value []byte
	mod   int64
}

type etcdWrite struct {
	value []byte
	del   bool
}

type keyRange struct{ start, end string }

func (r keyRange) has(k string) bool { return k >= r.start && k < r.end }

// get reads at the transaction's revision, fixing it at the first read.
func (t *txn) get(key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if t.err != nil {
		return nil, t.err
	}
	if t.rev != 0 {
		opts = append(opts, clientv3.WithRev(t.rev))
	}
	resp, err := t.s.cli.Get(t.ctx, key, opts...)
	if err != nil {
		t.err = t.s.wrap(t.ctx, t.op, err)
		return nil, t.err
	}
	if t.rev == 0 {
		t.rev = resp.Header.Revision
	}
	if t.reads == nil {
		t.reads = map[string]etcdRead{}
	}
	for _, kv := range resp.Kvs {
		t.reads[string(kv.Key)] = etcdRead{value: kv.Value, mod: kv.ModRevision}
	}
	return resp, nil
}

func (t *txn) inRange(full string) bool {
	for _, r := range t.ranges {
		if r.has(full) {
			return true
		}
	}
	return false
}

func (t *txn) Get(bucket, key string) ([]byte, error) {
	if err := checkBucket(bucket); err != nil {
		return nil, err
	}
	full := t.s.Key(bucket, key)
	if w, ok := t.writes[full]; ok {
		if w.del {
			return nil, store.ErrNotFound
		}
		return w.value, nil
	}
	if r, ok := t.reads[full]; ok {
		return r.value, nil
	}
	if _, ok := t.keys[full]; ok || t.inRange(full) {
		return nil, store.ErrNotFound // read before as absent
	}
	resp, err := t.get(full)
	if err != nil {
		return nil, err
	}
	if t.keys == nil {
		t.keys = map[string]int64{}
	}
	if len(resp.Kvs) == 0 {
		t.keys[full] = 0
		return nil, store.ErrNotFound
	}
	t.keys[full] = resp.Kvs[0].ModRevision
	return resp.Kvs[0].Value, nil
}

func (t *txn) Put(bucket, key string, value []byte) error {
	if err := t.writable(bucket, key); err != nil {
		return err
	}
	if t.writes == nil {
		t.writes = map[string]etcdWrite{}
	}
	t.writes[t.s.Key(bucket, key)] = etcdWrite{value: bytes.Clone(value)}
	return nil
}

func (t *txn) Delete(bucket, key string) error {
	if err := t.writable(bucket, key); err != nil {
		return err
	}
	if t.writes == nil {
		t.writes = map[string]etcdWrite{}
	}
	if t.dels == nil {
		t.dels = map[string]bool{}
	}
	t.writes[t.s.Key(bucket, key)] = etcdWrite{del: true}
	t.dels[bucket] = true
	return nil
}

func (t *txn) writable(bucket, key string) error {
	if !t.write {
		return errors.New("store: write in a read-only transaction")
	}
	if err := checkBucket(bucket); err != nil {
		return err
	}
	if key == "" {
		return errors.New("store: empty key")
	}
	return nil
}

func (t *txn) ForEach(bucket, prefix string, fn func(key string, value []byte) error) error {
	if err := checkBucket(bucket); err != nil {
		return err
	}
	base := t.s.Key(bucket, "")
	r := keyRange{start: base + prefix, end: clientv3.GetPrefixRangeEnd(base + prefix)}
	resp, err := t.get(r.start, clientv3.WithRange(r.end), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return err
	}
	if !slices.Contains(t.ranges, r) {
		t.ranges = append(t.ranges, r)
	}
	if t.rbkts == nil {
		t.rbkts = map[string]bool{}
	}
	t.rbkts[bucket] = true
	// What etcd holds at the read revision, with this transaction's own
	// writes laid over it.
	vals := make(map[string][]byte, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		vals[string(kv.Key)] = kv.Value
	}
	for k, w := range t.writes {
		switch {
		case !r.has(k):
		case w.del:
			delete(vals, k)
		default:
			vals[k] = w.value
		}
	}
	keys := make([]string, 0, len(vals))
	for k := range vals {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if err := fn(strings.TrimPrefix(k, base), vals[k]); err != nil {
			return err
		}
	}
	return nil
}

// commit applies the buffered writes if nothing read has changed since
// the read revision: see Store. ok false means a conflict.
func (t *txn) commit() (ok bool, err error) {
	var cmps []clientv3.Cmp
	if t.rev != 0 {
		for k, mod := range t.keys {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", mod))
		}
		for _, r := range t.ranges {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(r.start), "<", t.rev+1).WithRange(r.end))
		}
		for b := range t.rbkts {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(t.s.deleteMarker(b)), "<", t.rev+1))
		}
	}
	ops := make([]clientv3.Op, 0, len(t.writes)+len(t.dels))
	for k, w := range t.writes {
		if w.del {
			ops = append(ops, clientv3.OpDelete(k))
		} else {
			ops = append(ops, clientv3.OpPut(k, string(w.value)))
		}
	}
	for b := range t.dels {
		ops = append(ops, clientv3.OpPut(t.s.deleteMarker(b), ""))
	}
	resp, err := t.s.cli.Txn(t.ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

// Watch implements store.Watcher with an etcd watch on the bucket's prefix,
// started at the revision after the store's current one, so that every
// commit after Watch returns is reported. The watch survives etcd
// restarts and leader changes (it resumes at the next revision); when the
// revisions it missed were compacted meanwhile, it reports a Resync and
// goes on from the oldest revision etcd still has.
func (s *Store) Watch(ctx context.Context, bucket string) (<-chan store.Change, error) {
	if err := checkBucket(bucket); err != nil {
		return nil, err
	}
	base := s.Key(bucket, "")
	gctx, cancel := context.WithTimeout(ctx, s.timeout)
	resp, err := s.cli.Get(gctx, base, clientv3.WithPrefix(), clientv3.WithCountOnly())
	cancel()
	if err != nil {
		return nil, s.wrap(gctx, "watch", err)
	}
	ch := make(chan store.Change)
	go s.watch(ctx, bucket, base, resp.Header.Revision+1, ch)
	return ch, nil
}

func (s *Store) watch(ctx context.Context, bucket, base string, next int64, ch chan<- store.Change) {
	defer close(ch)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { // Close ends every watch
		select {
		case <-s.ctx.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	send := func(c store.Change) bool {
		select {
		case ch <- c:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for attempt := 1; ctx.Err() == nil; attempt++ {
		// WithRequireLeader: a member cut off from the cluster ends the
		// watch instead of going silent; it is then started again.
		wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := s.cli.Watch(wctx, base, clientv3.WithPrefix(), clientv3.WithRev(next))
		for resp := range wch {
			if resp.CompactRevision != 0 {
				// What is older is gone; what follows is kept.
				next = resp.CompactRevision
				if !send(store.Change{Bucket: bucket, Resync: true, Revision: resp.CompactRevision}) {
					break
				}
				continue
			}
			if resp.Err() != nil {
				continue // the channel closes after it
			}
			attempt = 0 // working: the next pause is the shortest
			for _, ev := range resp.Events {
				c := store.Change{Bucket: bucket, Key: strings.TrimPrefix(string(ev.Kv.Key), base),
					Deleted: ev.Type == clientv3.EventTypeDelete, Revision: ev.Kv.ModRevision}
				if !send(c) {
					break
				}
				next = ev.Kv.ModRevision + 1
			}
		}
		wcancel()
		// Ended (no leader, etcd gone): again after a pause that grows
		// to 2 s, so a cluster without a leader is not asked in a loop.
		t := time.NewTimer(min(time.Duration(attempt)*100*time.Millisecond, 2*time.Second))
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

var _ store.Store = (*Store)(nil)
var _ store.Watcher = (*Store)(nil)
