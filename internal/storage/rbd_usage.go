//go:build ceph

package storage

import (
	"errors"
	"sync"
	"time"
)

// Usage of RBD host disks is measured in the background and kept:
// measuring opens each of the host's images and walks its object map, a
// few cluster round trips per image, and while the cluster is degraded
// each one waits for op_timeout.
const (
	// usageFresh is how long a measurement is served without a new one
	// being started.
	usageFresh = time.Minute
	// usageWait is how long a first Usage waits for its measurement
	// before it answers without one.
	usageWait = 200 * time.Millisecond
	// usageParallel bounds the measurements running at once.
	usageParallel = 4
)

// rbdUsage is the cache. The zero value is ready.
type rbdUsage struct {
	mu    sync.Mutex
	hosts map[string]*usageEntry
	slots chan struct{}
}

type usageEntry struct {
	bytes   int64
	err     error
	at      time.Time     // of the last measurement; zero: none yet
	running chan struct{} // closed when the running measurement ends; nil: none runs
}

// get returns the last measurement of host, starting a new one when it is
// older than usageFresh; with none yet it waits up to usageWait for it.
// A measurement that failed is answered as its error until the next.
func (u *rbdUsage) get(host string, st DiskState, measure func(string, DiskState) (int64, error)) (int64, error) {
	u.mu.Lock()
	if u.hosts == nil {
		u.hosts = map[string]*usageEntry{}
		u.slots = make(chan struct{}, usageParallel)
	}
	e := u.hosts[host]
	if e == nil {
		e = &usageEntry{}
		u.hosts[host] = e
	}
	if e.running == nil && time.Since(e.at) > usageFresh {
		done := make(chan struct{})
		e.running = done
		go func() {
			u.slots <- struct{}{}
			n, err := measure(host, st)
			<-u.slots
			u.mu.Lock()
			e.bytes, e.err, e.at, e.running = n, err, time.Now(), nil
			u.mu.Unlock()
			close(done)
		}()
	}
	running, measured := e.running, !e.at.IsZero()
	u.mu.Unlock()
	if !measured && running != nil {
		select {
		case <-running:
		case <-time.After(usageWait):
			return 0, errUsagePending
		}
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	return e.bytes, e.err
}

// forget drops host's measurement (its disk changed or is gone); one
// still running ends in an entry nobody reads.
func (u *rbdUsage) forget(host string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.hosts, host)
}

// errUsagePending answers a Usage whose first measurement is not done.
var errUsagePending = errors.New("storage: disk usage being measured")
