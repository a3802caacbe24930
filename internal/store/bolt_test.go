package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func openTemp(t *testing.T) (*Bolt, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), FileName)
	s, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func TestSecondWriterIsLockedOut(t *testing.T) {
	_, path := openTemp(t)
	start := time.Now()
	_, err := OpenBolt(path, BoltOptions{LockTimeout: 100 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("lock wait not bounded")
	}
}

// A damaged store must give an error naming the problem, never a panic.
func TestCorruptFiles(t *testing.T) {
	s, path := openTemp(t)
	s.Update(func(tx Tx) error {
		for i := range 200 {
			tx.Put(BucketHosts, fmt.Sprintf("host-%03d", i), make([]byte, 300))
		}
		return nil
	})
	s.Close()
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{
		"empty-garbage": []byte("this is not a database at all, just some text\n"),
		"truncated":     good[:len(good)/2],
		"short":         good[:5000],
		"zeroed-meta":   append(make([]byte, 8192), good[8192:]...),
	}
	// Every page after the metas overwritten with junk.
	junk := append([]byte(nil), good...)
	for i := 8192; i < len(junk); i++ {
		junk[i] = byte(i * 7)
	}
	cases["junk-pages"] = junk
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), FileName)
			if err := os.WriteFile(p, data, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := OpenBolt(p, BoltOptions{})
			if err == nil {
				// Opened: then reading every record must not panic either.
				defer s.Close()
				s.View(func(tx Tx) error {
					return tx.ForEach(BucketHosts, "", func(string, []byte) error { return nil })
				})
				t.Fatalf("corrupt store opened without error")
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
		})
	}
}

// A store cut short anywhere is refused with ErrCorrupt, and refusing it
// leaves no lock behind: the next open of the same path works.
func TestTruncatedAnywhere(t *testing.T) {
	s, path := openTemp(t)
	s.Update(func(tx Tx) error {
		for i := range 300 {
			tx.Put(BucketHosts, fmt.Sprintf("host-%03d", i), make([]byte, 500))
		}
		return nil
	})
	s.Close()
	good, _ := os.ReadFile(path)
	p := filepath.Join(t.TempDir(), FileName)
	for n := 8192; n < len(good); n += 1536 {
		os.WriteFile(p, good[:n], 0o600)
		s, err := OpenBolt(p, BoltOptions{LockTimeout: 50 * time.Millisecond})
		if err == nil {
			s.Close()
			continue // a prefix can be a valid older store
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("cut at %d: %v", n, err)
		}
	}
	os.WriteFile(p, good, 0o600)
	s, err := OpenBolt(p, BoltOptions{LockTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatalf("the intact file after refused ones: %v", err)
	}
	s.Close()
}

// Size follows the file as it grows.
func TestSize(t *testing.T) {
	s, path := openTemp(t)
	before, err := s.Size()
	if err != nil || before < 2*4096 {
		t.Fatalf("size of a new store: %d %v", before, err)
	}
	big := make([]byte, 1<<20)
	if err := s.Update(func(tx Tx) error { return tx.Put(BucketHosts, "big", big) }); err != nil {
		t.Fatal(err)
	}
	after, err := s.Size()
	st, _ := os.Stat(path)
	if err != nil || after < before+int64(len(big)) || after != st.Size() {
		t.Errorf("after a 1 MiB value: %d (%v), before %d, file %d", after, err, before, st.Size())
	}
}
