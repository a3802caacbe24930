//go:build ceph

package storage

import (
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// TestUsageCache: a slow measurement (a degraded cluster) does not hold a
// Usage call up beyond usageWait; its result is served once done, and a
// new one starts only after usageFresh; forget measures anew.
func TestUsageCache(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var u rbdUsage
		var calls atomic.Int32
		measure := func(string, DiskState) (int64, error) {
			calls.Add(1)
			time.Sleep(time.Second) // the cluster takes its time
			return 42, nil
		}
		start := time.Now()
		if _, err := u.get("pc1", DiskState{}, measure); !errors.Is(err, errUsagePending) {
			t.Fatalf("first get while measuring: %v, want pending", err)
		}
		if d := time.Since(start); d != usageWait {
			t.Errorf("first get waited %v, want %v", d, usageWait)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if n, err := u.get("pc1", DiskState{}, measure); err != nil || n != 42 {
			t.Fatalf("after the measurement: %d %v", n, err)
		}
		time.Sleep(usageFresh / 2)
		u.get("pc1", DiskState{}, measure)
		if c := calls.Load(); c != 1 {
			t.Errorf("%d measurements within usageFresh, want 1", c)
		}
		time.Sleep(usageFresh)
		if n, _ := u.get("pc1", DiskState{}, measure); n != 42 {
			t.Errorf("a stale measurement is not served while the next runs: %d", n)
		}
		synctest.Wait()
		if c := calls.Load(); c != 2 {
			t.Errorf("%d measurements after usageFresh, want 2", c)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		u.forget("pc1")
		u.get("pc1", DiskState{}, measure)
		if c := calls.Load(); c != 3 {
			t.Errorf("%d measurements after forget, want 3", c)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
	})
}
