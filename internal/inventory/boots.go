package inventory

import (
	"errors"
	"fmt"

	"github.com/diskless-boot/diskless/internal/bootevent"
	"github.com/diskless-boot/diskless/internal/store"
)

// BootsPerHost bounds the boot timelines kept per host: the latest ones.
const BootsPerHost = 10

func bootKey(b *bootevent.Boot) string {
	return fmt.Sprintf("%s/%020d", b.Host, b.Started.UnixNano())
}

// SaveBoots stores boot timelines (bootevent.Recorder), replacing the
// stored boot of the same host and start, and keeps the latest
// BootsPerHost of each host. Boots of hosts that are gone are dropped.
func (inv *Inventory) SaveBoots(boots []bootevent.Boot) error {
	return inv.st.Update(func(tx store.Tx) error {
		for i := range boots {
			b := &boots[i]
			if _, err := tx.Get(store.BucketHosts, b.Host); err != nil {
				if errors.Is(err, store.ErrNotFound) {
					continue
				}
				return err
			}
			if err := putJSON(tx, store.BucketBoots, bootKey(b), b); err != nil {
				return err
			}
			keys, err := bootKeys(tx, b.Host)
			if err != nil {
				return err
			}
			for len(keys) > BootsPerHost {
				if err := tx.Delete(store.BucketBoots, keys[0]); err != nil {
					return err
				}
				keys = keys[1:]
			}
		}
		return nil
	})
}

// Boots returns a host's stored boot timelines, newest first
// (bootevent.Recorder).
func (inv *Inventory) Boots(host string) ([]bootevent.Boot, error) {
	var out []bootevent.Boot
	err := inv.st.View(func(tx store.Tx) error {
		return tx.ForEach(store.BucketBoots, host+"/", func(k string, _ []byte) error {
			var b bootevent.Boot
			if err := getJSON(tx, store.BucketBoots, k, &b); err != nil {
				return err
			}
			out = append(out, b)
			return nil
		})
	})
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, err
}

// bootKeys lists the keys of a host's stored timelines, oldest first.
func bootKeys(tx store.Tx, host string) ([]string, error) {
	var keys []string
	err := tx.ForEach(store.BucketBoots, host+"/", func(k string, _ []byte) error {
		keys = append(keys, k)
		return nil
	})
	return keys, err
}

// deleteBoots removes a host's timelines (it is being removed).
func deleteBoots(tx store.Tx, host string) error {
	keys, err := bootKeys(tx, host)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := tx.Delete(store.BucketBoots, k); err != nil {
			return err
		}
	}
	return nil
}
