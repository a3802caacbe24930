package app

import (
	"context"
	"fmt"

	"github.com/diskless-boot/diskless/internal/store"
)

// watchHosts makes the supervisor apply the changes other servers make to
// a shared store (etcd) as it applies its own: a host added, changed or
// removed through any server is synced here (target, credentials, disk)
// and the boot tables and DHCP reservations rebuilt; a Resync (the watch
// lost changes) syncs every host. Only the hosts bucket is watched: every
// change the servers serve differently after is a host's (a new image
// version reaches a host's disk at its next boot, which rewrites the host
// record; kernel-mode boot files are looked up at each request).
//
// It starts the watch before returning, so the caller starts the watch,
// then serves what the store holds (supervisor.start), then calls apply:
// nothing committed in between is missed. Stores without store.Watcher
// (bolt: one process holds it) need none of this.
func (s *supervisor) watchHosts(ctx context.Context, w store.Watcher) (apply func(), err error) {
	ch, err := w.Watch(ctx, store.BucketHosts)
	if err != nil {
		return nil, fmt.Errorf("watching the state store: %w", err)
	}
	return func() {
		for c := range ch {
			// Take what else is already there: one table rebuild for a
			// burst of changes (a declare, a bulk import).
			names, resync := map[string]bool{}, false
			for more := true; more; {
				if c.Resync {
					resync = true
				} else {
					names[c.Key] = true
				}
				select {
				case c, more = <-ch:
				default:
					more = false
				}
			}
			s.applyChanges(names, resync)
		}
	}, nil
}

// applyChanges syncs the named hosts (every host when all) and rebuilds
// the tables.
func (s *supervisor) applyChanges(names map[string]bool, all bool) {
	if all {
		hosts, err := s.inv.AllHostsWithSecrets()
		if err != nil {
			s.log.Error("hosts not re-read after the store's watch lost changes", "err", err)
			return
		}
		for _, h := range hosts {
			names[h.Name] = true
		}
		s.mu.Lock()
		for n := range s.hosts {
			names[n] = true // removed meanwhile: sync drops it
		}
		s.mu.Unlock()
		s.log.Info("state store watch resynced: every host synced again", "hosts", len(names))
	}
	for n := range names {
		s.sync(n)
	}
	if err := s.refreshTables(); err != nil {
		s.log.Error("boot tables not updated", "err", err)
	}
}
