package boot

import (
	"container/list"
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"
)

// Sighting is what is known of an unknown machine.
type Sighting struct {
	MAC       net.HardwareAddr
	FirstSeen time.Time
	LastSeen  time.Time
	IP        netip.Addr // last address seen, invalid if none yet
	Arch      string     // last architecture seen ("efi-x64", "x86_64 efi"), "" if none yet
	Count     uint64     // requests seen (DHCP and HTTP)
}

// Registry records machines that asked to boot but are not configured, so
// an admin can list them and add them. It holds at most max entries,
// forgetting the least recently seen first, so a flood of fake MACs costs
// bounded memory. It is safe for concurrent use.
type Registry struct {
	mu    sync.Mutex
	gen   uint64 // bumped by every change, so a saver can tell
	max   int
	now   func() time.Time
	m     map[string]*list.Element // of *Sighting, in order
	order *list.List               // most recently seen first
}

// NewRegistry returns an empty registry of at most limit entries (min 1);
// now nil means time.Now.
func NewRegistry(limit int, now func() time.Time) *Registry {
	if now == nil {
		now = time.Now
	}
	return &Registry{max: max(limit, 1), now: now, m: map[string]*list.Element{}, order: list.New()}
}

// Observe records a request from mac. A zero ip or empty arch keeps what
// was known.
func (r *Registry) Observe(mac net.HardwareAddr, ip netip.Addr, arch string) {
	now := r.now()
	key := mac.String()
	r.mu.Lock()
	defer r.mu.Unlock()
	var s *Sighting
	if e, ok := r.m[key]; ok {
		s = e.Value.(*Sighting)
		r.order.MoveToFront(e)
	} else {
		if len(r.m) >= r.max {
			// The least recently seen, in constant time: a flood of
			// fake MACs must not make each request scan them all.
			oldest := r.order.Back()
			r.order.Remove(oldest)
			delete(r.m, oldest.Value.(*Sighting).MAC.String())
		}
		s = &Sighting{MAC: append(net.HardwareAddr(nil), mac...), FirstSeen: now}
		r.m[key] = r.order.PushFront(s)
	}
	r.gen++
	s.LastSeen = now
	s.Count++
	if ip.IsValid() {
		s.IP = ip
	}
	if arch != "" {
		s.Arch = arch
	}
}

// Gen counts the changes so far: a caller keeping the registry elsewhere
// (the state store) saves only when it moved.
func (r *Registry) Gen() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gen
}

// Restore adds sightings kept from an earlier run (oldest first wins the
// back of the queue), keeping the bound.
func (r *Registry) Restore(list []Sighting) {
	sort.Slice(list, func(i, j int) bool { return list[i].LastSeen.Before(list[j].LastSeen) })
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range list {
		if len(s.MAC) != 6 {
			continue
		}
		key := s.MAC.String()
		if _, ok := r.m[key]; ok {
			continue
		}
		if len(r.m) >= r.max {
			oldest := r.order.Back()
			r.order.Remove(oldest)
			delete(r.m, oldest.Value.(*Sighting).MAC.String())
		}
		c := s
		c.MAC = append(net.HardwareAddr(nil), s.MAC...)
		r.m[key] = r.order.PushFront(&c)
	}
}

// Forget drops the machines of macs (those that became hosts), so the list
// and what is saved of it leave them out.
func (r *Registry) Forget(macs []net.HardwareAddr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, mac := range macs {
		if e, ok := r.m[mac.String()]; ok {
			r.order.Remove(e)
			delete(r.m, mac.String())
			r.gen++
		}
	}
}

// List returns the recorded machines, most recently seen first.
func (r *Registry) List() []Sighting {
	r.mu.Lock()
	out := make([]Sighting, 0, len(r.m))
	for e := r.order.Front(); e != nil; e = e.Next() {
		out = append(out, *e.Value.(*Sighting))
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].LastSeen.Equal(out[j].LastSeen) {
			return out[i].LastSeen.After(out[j].LastSeen)
		}
		return out[i].MAC.String() < out[j].MAC.String()
	})
	return out
}
