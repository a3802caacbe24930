package inventory

import (
	"sort"
	"time"

	"github.com/diskless-boot/diskless/internal/store"
)

// MaxUnknown bounds the machines seen but not configured that the store
// keeps (the server's registry has the same bound): a flood of made-up
// MACs costs bounded space.
const MaxUnknown = 4096

// UnknownHost is a machine that asked to boot but is not a host.
type UnknownHost struct {
	MAC       string    `json:"mac"`
	IP        string    `json:"ip,omitempty"`
	Arch      string    `json:"arch,omitempty"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	Count     uint64    `json:"count"`
}

// UnknownHosts lists the machines seen but not configured, most recently
// seen first. Machines that became hosts are left out.
func (inv *Inventory) UnknownHosts() ([]UnknownHost, error) {
	out := []UnknownHost{}
	err := inv.st.View(func(tx store.Tx) error {
		hosts := map[string]bool{}
		if err := forEachHost(tx, func(h *Host) error {
			for _, m := range h.MACs {
				hosts[m] = true
			}
			return nil
		}); err != nil {
			return err
		}
		return tx.ForEach(store.BucketUnknown, "", func(k string, _ []byte) error {
			var u UnknownHost
			if err := getJSON(tx, store.BucketUnknown, k, &u); err != nil {
				return err
			}
			if !hosts[u.MAC] {
				out = append(out, u)
			}
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].LastSeen.After(out[j].LastSeen) })
	return out, err
}

// SaveUnknownHosts replaces the stored list (the server's registry,
// saved now and then and at shutdown).
func (inv *Inventory) SaveUnknownHosts(list []UnknownHost) error {
	if len(list) > MaxUnknown {
		list = list[:MaxUnknown]
	}
	return inv.st.Update(func(tx store.Tx) error {
		keep := map[string]bool{}
		for _, u := range list {
			keep[u.MAC] = true
			if err := putJSON(tx, store.BucketUnknown, u.MAC, u); err != nil {
				return err
			}
		}
		var drop []string
		if err := tx.ForEach(store.BucketUnknown, "", func(k string, _ []byte) error {
			if !keep[k] {
				drop = append(drop, k)
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range drop {
			if err := tx.Delete(store.BucketUnknown, k); err != nil {
				return err
			}
		}
		return nil
	})
}
