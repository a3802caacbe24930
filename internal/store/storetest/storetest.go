// Package storetest is the conformance suite every store.Store
// implementation passes (bbolt, etcd): what the inventory relies on, run
// against each of them so that they cannot drift apart. It is for tests
// only; production code must not import it.
package storetest

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/store"
)

// Opener makes a new, empty store for one test. reopen closes s and opens
// the same data again (a server restarting).
type Opener func(t *testing.T) (s store.Store, reopen func() store.Store)

// Run runs the suite on the stores open makes, one per subtest.
func Run(t *testing.T, open Opener) {
	t.Run("RoundTripAndPrefix", func(t *testing.T) { testRoundTripAndPrefix(t, open) })
	t.Run("OwnWritesAndErrors", func(t *testing.T) { testOwnWritesAndErrors(t, open) })
	t.Run("Isolation", func(t *testing.T) { testIsolation(t, open) })
	t.Run("ConcurrentCounter", func(t *testing.T) { testConcurrentCounter(t, open) })
	t.Run("WriteSkew", func(t *testing.T) { testWriteSkew(t, open) })
}

func mustUpdate(t *testing.T, s store.Store, fn func(store.Tx) error) {
	t.Helper()
	if err := s.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func keysOf(t *testing.T, tx store.Tx, bucket, prefix string) []string {
	t.Helper()
	keys := []string{}
	if err := tx.ForEach(bucket, prefix, func(k string, _ []byte) error {
		keys = append(keys, k)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return keys
}

func testRoundTripAndPrefix(t *testing.T, open Opener) {
	s, reopen := open(t)
	mustUpdate(t, s, func(tx store.Tx) error {
		for _, i := range []int{3, 1, 5, 2, 4} { // stored out of order
			if err := tx.Put(store.BucketVersions, fmt.Sprintf("img/%08d", i), []byte{byte(i)}); err != nil {
				return err
			}
		}
		if err := tx.Put(store.BucketVersions, "im", []byte("shorter")); err != nil {
			return err
		}
		if err := tx.Put(store.BucketHosts, "img/00000009", []byte("other bucket")); err != nil {
			return err
		}
		return tx.Put(store.BucketVersions, "imgx/00000001", []byte("other"))
	})
	// A failing transaction leaves nothing behind.
	boom := errors.New("boom")
	if err := s.Update(func(tx store.Tx) error {
		tx.Put(store.BucketHosts, "h1", []byte("x"))
		tx.Delete(store.BucketVersions, "img/00000001")
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("update: %v", err)
	}
	s = reopen()
	err := s.View(func(tx store.Tx) error {
		if _, err := tx.Get(store.BucketHosts, "h1"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("rolled back key: %v", err)
		}
		if v, err := tx.Get(store.BucketVersions, "img/00000003"); err != nil || string(v) != "\x03" {
			t.Errorf("get: %q %v", v, err)
		}
		got := fmt.Sprint(keysOf(t, tx, store.BucketVersions, "img/"))
		if want := "[img/00000001 img/00000002 img/00000003 img/00000004 img/00000005]"; got != want {
			t.Errorf("ForEach img/: %s, want %s", got, want)
		}
		got = fmt.Sprint(keysOf(t, tx, store.BucketVersions, ""))
		if want := "[im img/00000001 img/00000002 img/00000003 img/00000004 img/00000005 imgx/00000001]"; got != want {
			t.Errorf("ForEach all: %s, want %s", got, want)
		}
		if got := keysOf(t, tx, store.BucketImages, ""); len(got) != 0 {
			t.Errorf("empty bucket: %v", got)
		}
		// fn's error stops the walk and comes back.
		n := 0
		err := tx.ForEach(store.BucketVersions, "", func(string, []byte) error {
			if n++; n == 2 {
				return boom
			}
			return nil
		})
		if !errors.Is(err, boom) || n != 2 {
			t.Errorf("stopped ForEach: %v after %d", err, n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func testOwnWritesAndErrors(t *testing.T, open Opener) {
	s, _ := open(t)
	mustUpdate(t, s, func(tx store.Tx) error {
		for _, k := range []string{"a", "c", "e"} {
			if err := tx.Put(store.BucketHosts, k, []byte(k)); err != nil {
				return err
			}
		}
		return nil
	})
	mustUpdate(t, s, func(tx store.Tx) error {
		if got := fmt.Sprint(keysOf(t, tx, store.BucketHosts, "")); got != "[a c e]" {
			t.Errorf("before: %s", got)
		}
		tx.Put(store.BucketHosts, "d", []byte("d"))
		tx.Put(store.BucketHosts, "a", []byte("A"))
		tx.Delete(store.BucketHosts, "c")
		if err := tx.Delete(store.BucketHosts, "nothing"); err != nil {
			t.Errorf("delete of a missing key: %v", err)
		}
		if v, err := tx.Get(store.BucketHosts, "a"); err != nil || string(v) != "A" {
			t.Errorf("own put: %q %v", v, err)
		}
		if _, err := tx.Get(store.BucketHosts, "c"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("own delete: %v", err)
		}
		var got []string
		tx.ForEach(store.BucketHosts, "", func(k string, v []byte) error {
			got = append(got, k+"="+string(v))
			return nil
		})
		if fmt.Sprint(got) != "[a=A d=d e=e]" {
			t.Errorf("ForEach with own writes: %v", got)
		}
		if err := tx.Put(store.BucketHosts, "", []byte("x")); err == nil {
			t.Error("empty key accepted")
		}
		if err := tx.Put("nobucket", "k", []byte("x")); err == nil {
			t.Error("unknown bucket accepted")
		}
		return tx.Put(store.BucketHosts, "empty", nil)
	})
	err := s.View(func(tx store.Tx) error {
		if v, err := tx.Get(store.BucketHosts, "empty"); err != nil || len(v) != 0 {
			t.Errorf("empty value: %q %v", v, err)
		}
		if _, err := tx.Get(store.BucketHosts, "nothing"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("missing key: %v", err)
		}
		if got := fmt.Sprint(keysOf(t, tx, store.BucketHosts, "")); got != "[a d e empty]" {
			t.Errorf("after: %s", got)
		}
		if err := tx.Put(store.BucketHosts, "x", []byte("x")); err == nil {
			t.Error("Put in a View accepted")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A transaction sees one state: not another's uncommitted writes, not a
// commit made while it runs.
func testIsolation(t *testing.T, open Opener) {
	s, _ := open(t)
	mustUpdate(t, s, func(tx store.Tx) error {
		tx.Put(store.BucketHosts, "a", []byte("1"))
		return tx.Put(store.BucketHosts, "b", []byte("1"))
	})
	get := func(tx store.Tx, k string) string {
		v, err := tx.Get(store.BucketHosts, k)
		if err != nil {
			t.Errorf("get %s: %v", k, err)
		}
		return string(v)
	}
	// Uncommitted writes are not seen.
	mustUpdate(t, s, func(tx store.Tx) error {
		tx.Put(store.BucketHosts, "a", []byte("2"))
		return s.View(func(tx store.Tx) error {
			if v := get(tx, "a"); v != "1" {
				t.Errorf("a View saw an uncommitted write: %s", v)
			}
			return nil
		})
	})
	// A commit made during a View is not seen by it.
	done := make(chan error, 1)
	err := s.View(func(tx store.Tx) error {
		a := get(tx, "a")
		go func() {
			done <- s.Update(func(tx store.Tx) error {
				tx.Put(store.BucketHosts, "a", []byte("3"))
				return tx.Put(store.BucketHosts, "b", []byte("3"))
			})
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Error(err)
			}
			done <- nil
		case <-time.After(time.Second):
			// bbolt grows its mapping at a commit, which waits
			// for open reads: the commit then comes after the View.
			t.Log("the Update waits for the View to end")
		}
		if b := get(tx, "b"); a != "2" || b != "1" {
			t.Errorf("View saw a=%s b=%s, want the state before the commit, a=2 b=1", a, b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Updates from several goroutines that read and write one key lose none
// of their increments.
func testConcurrentCounter(t *testing.T, open Opener) {
	s, _ := open(t)
	Counter(t, []store.Store{s}, 8, 25)
}

// Counter runs workers goroutines per store, each adding 1 to a counter
// n times in an Update, and checks that no increment was lost. With
// stores on the same data (several servers) it checks that they are
// serialized with each other too.
func Counter(t *testing.T, stores []store.Store, workers, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for _, s := range stores {
		for range workers {
			wg.Go(func() {
				for range n {
					err := s.Update(func(tx store.Tx) error {
						c := 0
						if v, err := tx.Get(store.BucketMeta, "counter"); err == nil {
							c, _ = strconv.Atoi(string(v))
						} else if !errors.Is(err, store.ErrNotFound) {
							return err
						}
						return tx.Put(store.BucketMeta, "counter", []byte(strconv.Itoa(c+1)))
					})
					if err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	stores[0].View(func(tx store.Tx) error {
		v, err := tx.Get(store.BucketMeta, "counter")
		if want := strconv.Itoa(len(stores) * workers * n); string(v) != want {
			t.Errorf("counter %s (%v), want %s: lost updates", v, err, want)
		}
		return nil
	})
}

// Two transactions each read a range with ForEach and change it (insert,
// update, delete) on what they read, which is only safe if the second to
// commit sees the first's change: the classic write skew, and what the
// inventory's name uniqueness and bounded buckets rely on. The first
// transaction waits, after its read, for the second to commit (a store
// that serializes writers makes the second wait instead; the wait then
// times out); if the second committed meanwhile, the first must run again
// and see it.
func testWriteSkew(t *testing.T, open Opener) {
	cases := []struct {
		name  string
		setup []string // keys in hosts "r/"
		// act is each transaction's rule: it sees the range's keys and
		// values and changes the range for owner (1 or 2).
		act   func(tx store.Tx, owner int, kv map[string]string) error
		check func(kv map[string]string) error
	}{{
		name: "insert", // at most one key in the range
		act: func(tx store.Tx, owner int, kv map[string]string) error {
			if len(kv) == 0 {
				return tx.Put(store.BucketHosts, fmt.Sprintf("r/%d", owner), []byte("x"))
			}
			return nil
		},
		check: func(kv map[string]string) error {
			if len(kv) != 1 {
				return fmt.Errorf("%d keys, want 1", len(kv))
			}
			return nil
		},
	}, {
		name:  "delete", // at least one key stays
		setup: []string{"r/1", "r/2"},
		act: func(tx store.Tx, owner int, kv map[string]string) error {
			if len(kv) > 1 {
				return tx.Delete(store.BucketHosts, fmt.Sprintf("r/%d", owner))
			}
			return nil
		},
		check: func(kv map[string]string) error {
			if len(kv) != 1 {
				return fmt.Errorf("%d keys, want 1", len(kv))
			}
			return nil
		},
	}, {
		name:  "update", // at most one key says "on"
		setup: []string{"r/1", "r/2"},
		act: func(tx store.Tx, owner int, kv map[string]string) error {
			for _, v := range kv {
				if v == "on" {
					return nil
				}
			}
			return tx.Put(store.BucketHosts, fmt.Sprintf("r/%d", owner), []byte("on"))
		},
		check: func(kv map[string]string) error {
			n := 0
			for _, v := range kv {
				if v == "on" {
					n++
				}
			}
			if n != 1 {
				return fmt.Errorf("%d keys on, want 1", n)
			}
			return nil
		},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, _ := open(t)
			mustUpdate(t, s, func(tx store.Tx) error {
				tx.Put(store.BucketHosts, "other", []byte("outside the range"))
				for _, k := range c.setup {
					tx.Put(store.BucketHosts, k, []byte("off"))
				}
				return nil
			})
			read := func(tx store.Tx) map[string]string {
				kv := map[string]string{}
				tx.ForEach(store.BucketHosts, "r/", func(k string, v []byte) error {
					kv[k] = string(v)
					return nil
				})
				return kv
			}
			firstRead := make(chan struct{})
			secondDone := make(chan error, 1)
			var runs, committedDuring atomic.Int32
			go func() {
				<-firstRead
				secondDone <- s.Update(func(tx store.Tx) error { return c.act(tx, 2, read(tx)) })
			}()
			err := s.Update(func(tx store.Tx) error {
				kv := read(tx)
				if runs.Add(1) == 1 {
					close(firstRead)
					select {
					case err := <-secondDone:
						if err != nil {
							t.Error(err)
						}
						committedDuring.Store(1)
					case <-time.After(300 * time.Millisecond):
					}
				}
				return c.act(tx, 1, kv)
			})
			if err != nil {
				t.Fatal(err)
			}
			if committedDuring.Load() == 0 {
				if err := <-secondDone; err != nil {
					t.Fatal(err)
				}
			} else if runs.Load() < 2 {
				t.Error("the first transaction committed on what it read before the second committed into its range")
			}
			s.View(func(tx store.Tx) error {
				kv := read(tx)
				if err := c.check(kv); err != nil {
					t.Errorf("%v: %v (runs %d)", err, kv, runs.Load())
				}
				return nil
			})
		})
	}
}
