package inventory

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/diskless-boot/diskless/internal/storage"
	"github.com/diskless-boot/diskless/internal/store"
)

// GenerateSecret returns GeneratedSecretLen random letters and digits
// from crypto/rand (rejection sampling: every character equally likely).
func GenerateSecret() (string, error) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	out := make([]byte, 0, GeneratedSecretLen)
	var buf [32]byte
	for len(out) < GeneratedSecretLen {
		if _, err := rand.Read(buf[:]); err != nil {
			return "", fmt.Errorf("inventory: generate secret: %w", err)
		}
		for _, b := range buf {
			if b < 248 && len(out) < GeneratedSecretLen { // 248 = 4*62
				out = append(out, alphabet[int(b)%len(alphabet)])
			}
		}
	}
	return string(out), nil
}

// Pending says what changes at a host's next boot, "" when nothing: what
// its disk becomes (see pendingDisk), and new CHAP secrets made while it
// ran.
func (inv *Inventory) Pending(h *Host) string {
	var out []string
	if d := inv.pendingDisk(h); d != "" {
		out = append(out, d)
	}
	if h.NextCHAP != nil {
		out = append(out, "new CHAP secrets")
	}
	return strings.Join(out, ", ")
}

// pendingDisk says what a host's disk will change at its next boot, ""
// when nothing: a reset asked for, a new mode, or a new image version.
func (inv *Inventory) pendingDisk(h *Host) string {
	if h.Mode == storage.Raw {
		return ""
	}
	var want storage.VersionRef
	err := inv.st.View(func(tx store.Tx) error {
		var err error
		want, err = wantedBase(tx, h)
		return err
	})
	switch {
	case err != nil:
		return "image: " + err.Error()
	case h.ResetPending:
		return "reset"
	case h.Disk.Mode != h.Mode:
		return "disk mode " + string(h.Mode)
	case want != h.Disk.Base():
		return "move to " + want.String()
	}
	return ""
}

// applyOrDefer applies a host's wanted disk now when it is offline, or
// leaves it for its next boot; the notes say which. The host's lock is
// held.
func (inv *Inventory) applyOrDefer(name string) ([]string, error) {
	h, err := inv.HostWithSecrets(name)
	if err != nil {
		return nil, err
	}
	pending := inv.pendingDisk(&h)
	if pending == "" {
		return nil, nil
	}
	if inv.rt.Online(name) {
		return []string{fmt.Sprintf("host %s is online: %s applies at its next boot", name, pending)}, nil
	}
	var notes []string
	err = inv.rt.WithDiskClosed(name, func() error {
		var err error
		notes, err = inv.reconcile(name, false)
		return err
	})
	return notes, err
}

// reconcile brings a host's disk in line with its record: mode, image
// version (a persistent disk that moves keeps its old state as an
// automatic snapshot), a pending reset, and for a volatile disk at a new
// boot (fresh) a new empty layer. The disk is closed and the host's lock
// held.
func (inv *Inventory) reconcile(name string, fresh bool) ([]string, error) {
	var notes []string
	h, err := inv.HostWithSecrets(name)
	if err != nil {
		return nil, err
	}
	if h.Mode == storage.Raw {
		return nil, nil
	}
	var want storage.VersionRef
	if err := inv.st.View(func(tx store.Tx) error {
		want, err = wantedBase(tx, &h)
		return err
	}); err != nil {
		return nil, err
	}
	d := h.Disk
	old := d.Base()
	changed := false
	if d.Mode != h.Mode {
		notes = append(notes, fmt.Sprintf("%s: disk mode %s -> %s", name, d.Mode, h.Mode))
		d.Mode, changed = h.Mode, true
	}
	switch {
	case want != old:
		if d.Mode == storage.Persistent {
			snap := fmt.Sprintf("auto-%s-%s-v%d", inv.now().UTC().Format("20060102-150405"), old.Image, old.Version)
			for i := 2; ; i++ {
				if _, taken := d.Snapshot(snap); !taken {
					break
				}
				snap = fmt.Sprintf("auto-%s-%s-v%d-%d", inv.now().UTC().Format("20060102-150405"), old.Image, old.Version, i)
			}
			if d, err = inv.be.Snapshot(name, d, snap, inv.now(), true); err != nil {
				return nil, err
			}
			notes = append(notes, fmt.Sprintf("%s: its disk on %s is kept as snapshot %s (roll back to it to return)", name, old, snap))
		}
		if d, err = inv.be.Rebase(name, d, want); err != nil {
			return nil, err
		}
		notes = append(notes, fmt.Sprintf("%s: disk now on %s, empty overlay", name, want))
		changed = true
	case h.ResetPending || fresh && d.Mode == storage.Volatile:
		if d, err = inv.be.Rebase(name, d, want); err != nil {
			return nil, err
		}
		notes = append(notes, fmt.Sprintf("%s: overlay discarded, disk is %s as published", name, want))
		changed = true
	}
	if !changed {
		return nil, nil
	}
	err = inv.st.Update(func(tx store.Tx) error {
		cur, err := getHost(tx, name)
		if err != nil {
			return err
		}
		cur.Disk, cur.ResetPending = d, false
		return putJSON(tx, store.BucketHosts, name, cur)
	})
	if err != nil {
		return nil, err
	}
	for _, n := range notes {
		inv.log.Info("disk changed", "host", name, "what", n)
	}
	return notes, inv.be.Prune(name, d)
}

// ErrBusy is returned by BeginBoot while a long operation holds the host.
var ErrBusy = errors.New("inventory: host busy with another operation")

// BeginBoot is called when a host starts a new boot (its iPXE script is
// fetched), with its previous sessions already gone and before the script
// is rendered: new CHAP secrets become current (whatever the disk mode), a
// volatile disk starts empty, pending disk changes apply (inside
// WithDiskClosed).
func (inv *Inventory) BeginBoot(name string) ([]string, error) {
	unlock, ok := inv.tryLock(name)
	if !ok {
		return nil, ErrBusy
	}
	defer unlock()
	notes, err := inv.bootSecrets(name)
	if err != nil {
		return nil, err
	}
	h, err := inv.HostWithSecrets(name)
	if err != nil {
		return nil, err
	}
	if h.Mode == storage.Raw || h.Mode == storage.Persistent && inv.pendingDisk(&h) == "" {
		return notes, nil // the disk stays as it is: no need to close it
	}
	err = inv.rt.WithDiskClosed(name, func() error {
		n, err := inv.reconcile(name, true)
		notes = append(notes, n...)
		return err
	})
	return notes, err
}

// followersMoved applies a new newest version of image to the hosts that
// follow it and are offline; online ones move at their next boot.
func (inv *Inventory) followersMoved(image string) []string {
	hosts, err := inv.AllHostsWithSecrets()
	if err != nil {
		return nil
	}
	var notes []string
	for _, h := range hosts {
		if h.Image != image || h.Version != 0 || h.Mode == storage.Raw {
			continue
		}
		unlock := inv.lock(h.Name)
		n, err := inv.applyOrDefer(h.Name)
		unlock()
		if err != nil {
			inv.log.Warn("host did not move to the new version", "host", h.Name, "image", image, "err", err)
			notes = append(notes, fmt.Sprintf("%s: not moved: %v", h.Name, err))
		}
		notes = append(notes, n...)
	}
	return notes
}

// Snapshot takes a named snapshot of a persistent host disk; the host may
// be running (the snapshot is crash-consistent). An empty name makes one
// from the time.
func (inv *Inventory) Snapshot(host, name string) (storage.Snapshot, error) {
	unlock := inv.lock(host)
	defer unlock()
	h, err := inv.HostWithSecrets(host)
	if err != nil {
		return storage.Snapshot{}, err
	}
	if h.Disk.Mode != storage.Persistent || h.Mode != storage.Persistent {
		return storage.Snapshot{}, conflict("host %q has a %s disk; snapshots are of persistent disks", host, h.Mode)
	}
	if name == "" {
		name = "snap-" + inv.now().UTC().Format("20060102-150405")
	}
	if err := storage.CheckName("snapshot", name); err != nil {
		return storage.Snapshot{}, invalid("name", "%v", err)
	}
	if _, ok := h.Disk.Snapshot(name); ok {
		return storage.Snapshot{}, conflict("host %q already has a snapshot %q", host, name)
	}
	d, err := inv.be.Snapshot(host, h.Disk, name, inv.now(), false)
	if err != nil {
		return storage.Snapshot{}, diskErr(err)
	}
	if err := inv.saveDisk(host, d); err != nil {
		return storage.Snapshot{}, err
	}
	// Committed: now the running disk moves on to the new top. If it
	// cannot, it still writes the old top, so the snapshot must not stay.
	if err := inv.be.Sync(host, d); err != nil {
		if rerr := inv.saveDisk(host, h.Disk); rerr != nil {
			inv.log.Error("snapshot failed and could not be taken back", "host", host, "snapshot", name, "err", rerr)
		}
		return storage.Snapshot{}, err
	}
	sn, _ := d.Snapshot(name)
	return sn, nil
}

// saveDisk commits a host's new disk state.
func (inv *Inventory) saveDisk(host string, d storage.DiskState) error {
	return inv.st.Update(func(tx store.Tx) error {
		h, err := getHost(tx, host)
		if err != nil {
			return err
		}
		h.Disk = d
		return putJSON(tx, store.BucketHosts, host, h)
	})
}

// diskErr maps storage refusals to model errors.
func diskErr(err error) error {
	switch {
	case errors.Is(err, storage.ErrNoSnapshot):
		return &Error{Kind: NotFound, Msg: err.Error()}
	case errors.Is(err, storage.ErrSnapshotExists), errors.Is(err, storage.ErrTooManyLayers),
		errors.Is(err, storage.ErrNotOverlay), errors.Is(err, storage.ErrDiskOpen):
		return &Error{Kind: Conflict, Msg: err.Error()}
	}
	return err
}

// Snapshots lists a host's snapshots, oldest first.
func (inv *Inventory) Snapshots(host string) ([]storage.Snapshot, error) {
	h, err := inv.HostWithSecrets(host)
	if err != nil {
		return nil, err
	}
	out := append([]storage.Snapshot{}, h.Disk.Snapshots...)
	return out, nil
}

// Rollback makes a snapshot the host's disk again; the host must be
// offline. A snapshot on another version than the host would boot pins
// the host to the snapshot's version (the notes say so), or it would move
// away at its next boot.
func (inv *Inventory) Rollback(host, name string) ([]string, error) {
	unlock := inv.lock(host)
	defer unlock()
	if inv.rt.Online(host) {
		return nil, conflict("host %q is online; shut it down before rolling its disk back", host)
	}
	var notes []string
	err := inv.rt.WithDiskClosed(host, func() error {
		h, err := inv.HostWithSecrets(host)
		if err != nil {
			return err
		}
		sn, ok := h.Disk.Snapshot(name)
		if !ok {
			return notFound("host %q has no snapshot %q", host, name)
		}
		d, err := inv.be.Rollback(host, h.Disk, name)
		if err != nil {
			return diskErr(err)
		}
		var pinned string // set on every run: a store may run fn again
		err = inv.st.Update(func(tx store.Tx) error {
			pinned = ""
			cur, err := getHost(tx, host)
			if err != nil {
				return err
			}
			want, werr := wantedBase(tx, &cur)
			if werr != nil || want != sn.Base {
				if cur.Source == SourceYAML {
					return conflict("host %q is declared in the YAML configuration on %s; snapshot %s is on %s: set image %s, version %d there first",
						host, want, name, sn.Base, sn.Base.Image, sn.Base.Version)
				}
				cur.Image, cur.Version = sn.Base.Image, sn.Base.Version
				pinned = fmt.Sprintf("%s: pinned to %s, the version snapshot %s is on (set its version to follow another)", host, sn.Base, name)
			}
			cur.Disk, cur.ResetPending = d, false
			return putJSON(tx, store.BucketHosts, host, cur)
		})
		if err != nil {
			return err
		}
		if pinned != "" {
			notes = append(notes, pinned)
		}
		notes = append(notes, fmt.Sprintf("%s: disk rolled back to snapshot %s", host, name))
		return inv.be.Prune(host, d)
	})
	return notes, err
}

// DeleteSnapshot removes a snapshot; the host may be running.
func (inv *Inventory) DeleteSnapshot(host, name string) error {
	unlock := inv.lock(host)
	defer unlock()
	h, err := inv.HostWithSecrets(host)
	if err != nil {
		return err
	}
	if _, ok := h.Disk.Snapshot(name); !ok {
		return notFound("host %q has no snapshot %q", host, name)
	}
	d, err := inv.be.DeleteSnapshot(host, h.Disk, name)
	if err != nil {
		return diskErr(err)
	}
	if err := inv.saveDisk(host, d); err != nil {
		return err
	}
	return inv.be.Prune(host, d)
}

// Reset discards a host's own writes: its disk becomes the image version
// as published (snapshots are kept). Done now when the host is offline,
// at its next boot when it runs.
func (inv *Inventory) Reset(host string) ([]string, error) {
	unlock := inv.lock(host)
	defer unlock()
	h, err := inv.HostWithSecrets(host)
	if err != nil {
		return nil, err
	}
	if h.Mode == storage.Raw {
		return nil, conflict("host %q has a raw disk: there is no image to reset it to", host)
	}
	// Recorded first: if the host is online, its next boot does it.
	err = inv.st.Update(func(tx store.Tx) error {
		cur, err := getHost(tx, host)
		if err != nil {
			return err
		}
		cur.ResetPending = true
		return putJSON(tx, store.BucketHosts, host, cur)
	})
	if err != nil {
		return nil, err
	}
	if inv.rt.Online(host) {
		return []string{fmt.Sprintf("host %s is online: its disk is reset when it next boots", host)}, nil
	}
	var notes []string
	err = inv.rt.WithDiskClosed(host, func() error {
		var err error
		notes, err = inv.reconcile(host, false)
		return err
	})
	return notes, err
}

// PromotePlan says what a promote does before it is done.
type PromotePlan struct {
	Host    string   `json:"host"`
	Image   string   `json:"image"`
	Version int      `json:"version"` // the number the new version gets
	Size    int64    `json:"size"`
	Effects []string `json:"effects"` // one line per host it changes
}

// PlanPromote tells what Promote(host, image) would do.
func (inv *Inventory) PlanPromote(host, image string) (PromotePlan, error) {
	var p PromotePlan
	h, err := inv.HostWithSecrets(host)
	if err != nil {
		return p, err
	}
	img, err := inv.Image(image)
	if err != nil {
		return p, err
	}
	if inv.rt.Online(host) {
		return p, conflict("host %q is online; shut it down cleanly before promoting its disk", host)
	}
	p = PromotePlan{Host: host, Image: image, Version: max(img.Next, 1)}
	hosts, err := inv.AllHostsWithSecrets()
	if err != nil {
		return p, err
	}
	for _, o := range hosts {
		if o.Image != image || o.Version != 0 || o.Mode == storage.Raw {
			continue
		}
		when := "now (offline)"
		if inv.rt.Online(o.Name) {
			when = "at its next boot"
		}
		switch o.Mode {
		case storage.Persistent:
			p.Effects = append(p.Effects, fmt.Sprintf("%s moves to %s@v%d %s: its overlay is reset after an automatic snapshot it can roll back to", o.Name, image, p.Version, when))
		default:
			p.Effects = append(p.Effects, fmt.Sprintf("%s moves to %s@v%d %s (a volatile disk: nothing to keep)", o.Name, image, p.Version, when))
		}
	}
	if h.Mode == storage.Raw {
		if st, err := os.Stat(h.Disk.RawPath); err == nil {
			p.Size = st.Size()
		}
	} else if v, err := inv.ResolveVersionOf(&h); err == nil {
		p.Size = v.Size
	}
	return p, nil
}

// ResolveVersionOf is the version record of a host's current disk base.
func (inv *Inventory) ResolveVersionOf(h *Host) (Version, error) {
	b := h.Disk.Base()
	if b.IsZero() {
		return Version{}, notFound("host %q has a raw disk", h.Name)
	}
	return inv.Version(b.Image, b.Version)
}

// Promote turns a host's disk (its image version and its overlay, or its
// raw disk) into the next version of image. The host must be offline; the
// shared version under it is only read. Hosts following the image's newest
// version move to the new one (see PlanPromote).
func (inv *Inventory) Promote(ctx context.Context, host, image string, progress storage.Progress) (Version, []string, error) {
	plan, err := inv.PlanPromote(host, image)
	if err != nil {
		return Version{}, nil, err
	}
	unlock := inv.lock(host)
	h, err := inv.HostWithSecrets(host)
	if err != nil {
		unlock()
		return Version{}, nil, err
	}
	size := plan.Size
	if h.Mode == storage.Raw {
		if st, err := os.Stat(h.Disk.RawPath); err == nil {
			size = st.Size()
		}
	}
	v, err := inv.reserveVersion(image, size, "promote "+host)
	if err != nil {
		unlock()
		return Version{}, nil, err
	}
	start := time.Now()
	// The copy runs with the host's disk taken from its target: a host that
	// logs in meanwhile finds no LUN instead of writing into what is being
	// published (and is refused from the start when it is online).
	err = inv.rt.WithDiskClosed(host, func() error {
		return inv.be.CopyDisk(ctx, host, h.Disk, "", v.Ref(), progress)
	})
	unlock()
	if err != nil {
		inv.dropVersionRecord(v)
		return Version{}, nil, err
	}
	if err := inv.publish(v); err != nil {
		return Version{}, nil, err
	}
	inv.log.Info("host promoted", "host", host, "image", image, "version", v.Number, "duration", time.Since(start).Round(time.Millisecond))
	notes := inv.followersMoved(image)
	v.State = VersionReady
	return v, notes, nil
}

// reserveVersion records the image's next version as being written.
func (inv *Inventory) reserveVersion(image string, size int64, origin string) (Version, error) {
	unlock := inv.lock("")
	defer unlock()
	var v Version
	err := inv.st.Update(func(tx store.Tx) error {
		var img Image
		if err := getJSON(tx, store.BucketImages, image, &img); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return notFound("no image %q", image)
			}
			return err
		}
		v = Version{Image: image, Number: max(img.Next, 1), Size: size, Created: inv.now().UTC(), State: VersionWriting, Origin: origin}
		img.Next = v.Number + 1
		if err := putJSON(tx, store.BucketImages, image, img); err != nil {
			return err
		}
		return putJSON(tx, store.BucketVersions, versionKey(image, v.Number), v)
	})
	return v, err
}

// Check verifies a host disk's metadata.
func (inv *Inventory) Check(host string) (storage.CheckReport, error) {
	unlock := inv.lock(host)
	defer unlock()
	h, err := inv.HostWithSecrets(host)
	if err != nil {
		return storage.CheckReport{}, err
	}
	return inv.be.Check(host, h.Disk)
}

// DiskError is nil while h's disk is healthy; once a flush of it failed
// (logged then with the host and image), the error its writes and flushes
// return until ClearDiskError, across restarts.
func (inv *Inventory) DiskError(h *Host) error { return inv.be.DiskError(h.Name, h.Disk) }

// ClearDiskError returns a host's failed disk to service after the
// operator fixed its storage. Nothing is cleared while the storage still
// fails a flush (Conflict).
func (inv *Inventory) ClearDiskError(host string) ([]string, error) {
	// A standby must not: on RBD it would remove the failure record of a
	// disk the active server holds failed.
	if err := inv.rt.MayChangeDisks(); err != nil {
		return nil, err
	}
	unlock := inv.lock(host)
	defer unlock()
	h, err := inv.HostWithSecrets(host)
	if err != nil {
		return nil, err
	}
	// Asked even when no error shows: a closed disk on RBD keeps its
	// failure in the cluster, where DiskError does not look.
	had := inv.be.DiskError(host, h.Disk) != nil
	if err := inv.be.ClearDiskError(host, h.Disk); err != nil {
		return nil, conflict("the disk still fails; fix its storage first: %v", err)
	}
	if !had {
		return []string{"the disk has no error to clear"}, nil
	}
	inv.log.Info("host disk error cleared", "host", host)
	return []string{"the disk accepts writes again; writes the host made before the failed flush may be lost: check its file system"}, nil
}

// Recover cleans up after an interrupted run: versions left "writing"
// are forgotten (their partial files go with the backend's own cleanup)
// and disk parts no host names are pruned. Call it at start, before
// anything else uses the inventory.
func (inv *Inventory) Recover(ctx context.Context) error {
	var stale []Version
	err := inv.st.View(func(tx store.Tx) error {
		return tx.ForEach(store.BucketVersions, "", func(k string, b []byte) error {
			var v Version
			if err := getJSON(tx, store.BucketVersions, k, &v); err != nil {
				return err
			}
			if v.State == VersionWriting {
				stale = append(stale, v)
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	for _, v := range stale {
		inv.log.Warn("forgetting a version left half written by an interrupted run", "image", v.Image, "version", v.Number)
		inv.dropVersionRecord(v)
		inv.be.DeleteVersion(v.Ref())
	}
	hosts, err := inv.AllHostsWithSecrets()
	if err != nil {
		return err
	}
	known := map[string]bool{}
	var errs []error
	for _, h := range hosts {
		known[h.Name] = true
		errs = append(errs, inv.be.Prune(h.Name, h.Disk))
	}
	if l, ok := inv.be.(interface {
		Hosts() ([]string, error)
		CleanPartial() error
	}); ok {
		errs = append(errs, l.CleanPartial())
		dirs, err := l.Hosts()
		errs = append(errs, err)
		for _, d := range dirs {
			if !known[d] {
				inv.log.Warn("removing the disk of a host the store does not have (an interrupted add or remove)", "host", d)
				errs = append(errs, inv.be.Prune(d, storage.DiskState{}))
			}
		}
	}
	return errors.Join(errs...)
}
