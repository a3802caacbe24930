//go:build ceph

package storage

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// TestUsageCache: a slow measurement (a degraded cluster) does not hold a
// Usage call up; its result is served once done, and a new one starts
// only after usageFresh; forget measures anew.
func TestUsageCache(t *testing.T) {
	var u rbdUsage
	var calls atomic.Int32
	release := make(chan struct{})
	measure := func(string, DiskState) (int64, error) {
		calls.Add(1)
		<-release
		return 42, nil
	}
	start := time.Now()
	if _, err := u.get("pc1", DiskState{}, measure); !errors.Is(err, errUsagePending) {
		t.Fatalf("first get while measuring: %v, want pending", err)
	}
	if d := time.Since(start); d > usageWait+100*time.Millisecond {
		t.Errorf("first get waited %v", d)
	}
	close(release)
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if n, err := u.get("pc1", DiskState{}, measure); err == nil && n == 42 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("measurement never served")
		}
	}
	u.get("pc1", DiskState{}, measure)
	if c := calls.Load(); c != 1 {
		t.Errorf("%d measurements within usageFresh, want 1", c)
	}
	u.forget("pc1")
	u.get("pc1", DiskState{}, measure)
	if c := calls.Load(); c != 2 {
		t.Errorf("%d measurements after forget, want 2", c)
	}
}
