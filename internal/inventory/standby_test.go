package inventory

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/diskless-boot/diskless/internal/storage"
	"github.com/diskless-boot/diskless/internal/store"
)

// clearCounter is a backend that counts the disk errors it was asked to
// clear.
type clearCounter struct {
	storage.Backend
	clears atomic.Int32
}

func (b *clearCounter) ClearDiskError(host string, st storage.DiskState) error {
	b.clears.Add(1)
	return b.Backend.ClearDiskError(host, st)
}

// A server that may not change disks (a standby) refuses clear-error
// before the backend is asked: on RBD the backend would remove the
// failure record of a disk the active server holds failed.
func TestClearDiskErrorRefusedOnStandby(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.OpenBolt(filepath.Join(dir, store.FileName), store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	local, err := storage.NewLocal(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	be := &clearCounter{Backend: local}
	inv, err := New(Options{Store: st, Backend: be})
	if err != nil {
		t.Fatal(err)
	}
	rt := newFakeRuntime()
	inv.SetRuntime(rt)
	if _, err := inv.CreateImage(ctx, NewImage{Name: "img", Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if _, err := inv.AddHost(ctx, HostSpec{Name: "pc", Image: "img"}, nil); err != nil {
		t.Fatal(err)
	}

	standby := conflict("this server is a standby")
	rt.refuse = standby
	if _, err := inv.ClearDiskError("pc"); !errors.Is(err, standby) {
		t.Fatalf("clear-error on a standby: %v, want its refusal", err)
	}
	if n := be.clears.Load(); n != 0 {
		t.Fatalf("a standby asked the backend to clear %d disk errors", n)
	}
	rt.refuse = nil
	if _, err := inv.ClearDiskError("pc"); err != nil {
		t.Fatal(err)
	}
	if n := be.clears.Load(); n != 1 {
		t.Fatalf("the active server asked the backend %d times, want 1", n)
	}
}
