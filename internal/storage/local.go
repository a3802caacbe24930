package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/diskless-boot/diskless/internal/disk"
)

// maxChain bounds the layers of one chain (the overlay's limit on lower
// layers, with room for the top).
const maxChain = 200

// Local keeps versions and host disks as files under a directory:
//
//	images/<image>/v<N>.img          a version, raw, mode 0444
//	images/<image>/.v<N>.img.partial a version being written
//	images/<image>/v<N>.kernel       its boot files (kernel, initrd), if any
//	hosts/<host>/layers/<id>/        an overlay layer (data, meta)
//	hosts/<host>/disk-id, made       the overlay disk's directory identity and made layers (localdir.go)
//	hosts/<host>/disk.img            a raw disk diskless made
//
// It is safe for concurrent use.
type Local struct {
	root string
	log  *slog.Logger

	mu       sync.Mutex
	versions map[VersionRef]*sharedVersion
	open     map[string]*openDisk

	failMu  sync.Mutex        // orders the failure records of disks (failure.go)
	failGen map[string]uint64 // by host: failures recorded by this process
}

// sharedVersion is one open version file and how many users hold it.
type sharedVersion struct {
	f    *disk.File
	refs int
}

// openDisk is a host disk the target uses.
type openDisk struct {
	dev     disk.Device
	overlay *disk.Overlay // nil for raw
	base    disk.Device   // version handle, nil for raw
	st      DiskState
}

// NewLocal returns the backend rooted at dir (data_dir), creating its
// directories.
func NewLocal(dir string, log *slog.Logger) (*Local, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, d := range []string{filepath.Join(dir, "images"), filepath.Join(dir, "hosts")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("storage: %w", err)
		}
	}
	return &Local{root: dir, log: log, versions: map[VersionRef]*sharedVersion{}, open: map[string]*openDisk{},
		failGen: map[string]uint64{}}, nil
}

func (l *Local) versionPath(ref VersionRef) string {
	return filepath.Join(l.root, "images", ref.Image, fmt.Sprintf("v%d.img", ref.Version))
}

func (l *Local) hostDir(host string) string { return filepath.Join(l.root, "hosts", host) }

func (l *Local) layerDir(host, id string) string {
	return filepath.Join(l.hostDir(host), "layers", id)
}

// VersionPath implements Backend.
func (l *Local) VersionPath(ref VersionRef) string { return l.versionPath(ref) }

// WriteVersion implements Backend: the version is written to a partial
// file, made durable, made read-only and then renamed into place, so a
// version file that exists is complete.
func (l *Local) WriteVersion(ctx context.Context, ref VersionRef, size int64, src Source, progress Progress) error {
	if err := CheckName("image", ref.Image); err != nil {
		return err
	}
	final := l.versionPath(ref)
	if _, err := os.Stat(final); err == nil {
		return fmt.Errorf("storage: %s exists", ref)
	}
	dir := filepath.Dir(final)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	tmp := filepath.Join(dir, "."+filepath.Base(final)+".partial")
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := copySparse(ctx, f, size, src, progress); err != nil {
		if errors.Is(err, unix.EFBIG) {
			// What the caller can act on, without the server's paths.
			return fmt.Errorf("%w (%d bytes)", ErrTooLarge, size)
		}
		return fmt.Errorf("storage: write %s: %w", ref, err)
	}
	if err := f.Chmod(0o444); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	ok = true
	return syncDir(dir)
}

// OpenVersion implements Backend.
func (l *Local) OpenVersion(ref VersionRef) (disk.Device, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.openVersionLocked(ref)
}

func (l *Local) openVersionLocked(ref VersionRef) (*versionHandle, error) {
	sv := l.versions[ref]
	if sv == nil {
		f, err := disk.OpenFile(l.versionPath(ref), true)
		if err != nil {
			return nil, fmt.Errorf("storage: version %s: %w", ref, err)
		}
		sv = &sharedVersion{f: f}
		l.versions[ref] = sv
	}
	sv.refs++
	return &versionHandle{File: sv.f, l: l, ref: ref}, nil
}

// versionHandle is one user's hold on a shared version file: every
// method but Close is the file's.
type versionHandle struct {
	*disk.File
	l      *Local
	ref    VersionRef
	closed bool
}

// Close releases this hold; the file closes with the last one.
func (h *versionHandle) Close() error {
	h.l.mu.Lock()
	defer h.l.mu.Unlock()
	return h.closeLocked()
}

// closeLocked is Close with l.mu held.
func (h *versionHandle) closeLocked() error {
	if h.closed {
		return nil
	}
	h.closed = true
	sv := h.l.versions[h.ref]
	if sv == nil {
		return nil
	}
	if sv.refs--; sv.refs > 0 {
		return nil
	}
	delete(h.l.versions, h.ref)
	return sv.f.Close()
}

// Flush has nothing to do: a version is read-only.
func (h *versionHandle) Flush() error { return nil }

// DeleteVersion implements Backend.
func (l *Local) DeleteVersion(ref VersionRef) error {
	l.mu.Lock()
	if sv := l.versions[ref]; sv != nil && sv.refs > 0 {
		l.mu.Unlock()
		return fmt.Errorf("%w: version %s is open", ErrDiskOpen, ref)
	}
	l.mu.Unlock()
	p := l.versionPath(ref)
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("storage: %w", err)
	}
	if err := l.removeBootFiles(ref); err != nil {
		return err
	}
	os.Remove(filepath.Dir(p)) // the image's directory, when it was the last version
	return nil
}

// CreateDisk implements Backend.
func (l *Local) CreateDisk(ctx context.Context, host string, mode DiskMode, base VersionRef, rawPath string, progress Progress) (DiskState, error) {
	if err := CheckName("host", host); err != nil {
		return DiskState{}, err
	}
	switch mode {
	case Persistent, Volatile:
		if base.IsZero() {
			return DiskState{}, errors.New("storage: an overlay disk needs an image version")
		}
		if _, err := os.Stat(l.versionPath(base)); err != nil {
			return DiskState{}, fmt.Errorf("storage: version %s: %w", base, err)
		}
		st := DiskState{Mode: mode, Layers: map[string]Layer{}, DirID: newDirID()}
		st.Top = st.newLayer("", base)
		return st, l.freshDiskDir(host, st)
	case Raw:
		if rawPath != "" {
			if err := l.foreign(rawPath); err != nil {
				return DiskState{}, err
			}
			return DiskState{Mode: Raw, RawPath: rawPath}, nil
		}
		if base.IsZero() {
			return DiskState{}, errors.New("storage: a raw disk needs an image version to copy or a file")
		}
		if err := os.MkdirAll(l.hostDir(host), 0o700); err != nil {
			return DiskState{}, fmt.Errorf("storage: %w", err)
		}
		src, err := l.OpenVersion(base)
		if err != nil {
			return DiskState{}, err
		}
		defer src.Close()
		p := filepath.Join(l.hostDir(host), "disk.img")
		tmp := p + ".partial"
		f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return DiskState{}, fmt.Errorf("storage: %w", err)
		}
		err = copySparse(ctx, f, src.Size(), src, progress)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp, p)
		}
		if err != nil {
			os.Remove(tmp)
			return DiskState{}, fmt.Errorf("storage: copy %s for %s: %w", base, host, err)
		}
		return DiskState{Mode: Raw, RawPath: p, Owned: true}, syncDir(l.hostDir(host))
	}
	return DiskState{}, fmt.Errorf("storage: disk mode %q", mode)
}

// newLayer records a new layer (made on disk when first opened) and
// returns its ID.
func (s *DiskState) newLayer(parent string, base VersionRef) string {
	s.NextID++
	id := fmt.Sprintf("l%d", s.NextID)
	if s.Layers == nil {
		s.Layers = map[string]Layer{}
	}
	s.Layers[id] = Layer{Parent: parent, Base: base}
	return id
}

func baseID(ref VersionRef) string { return ref.String() }

// ensureLayer makes layer id of st on disk if it does not exist yet: a
// layer the state names but that was never made is empty. made is the
// layers recorded as made in the disk's directory (madeLayers); one that is
// there but not recorded (a crash between making and recording) is
// recorded now.
func (l *Local) ensureLayer(host string, st DiskState, id string, size int64, made map[string]bool) error {
	dir := l.layerDir(host, id)
	if _, err := os.Stat(filepath.Join(dir, "meta")); err == nil {
		if st.DirID != "" && !made[id] {
			return l.recordMade(host, id)
		}
		return nil
	}
	if err := l.lostIfMade(host, st, id, made); err != nil {
		return err
	}
	os.RemoveAll(dir) // a half-made layer from an interrupted CreateLayer
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	if err := syncDir(l.hostDir(host)); err != nil { // layers/ may be new
		return err
	}
	ly := st.Layers[id]
	if err := disk.CreateLayer(dir, disk.LayerConfig{Size: size, ID: id, Parent: ly.Parent, BaseID: baseID(ly.Base)}); err != nil {
		return fmt.Errorf("storage: layer %s of %s: %w", id, host, err)
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return err
	}
	if st.DirID == "" {
		return nil
	}
	return l.recordMade(host, id)
}

// OpenDisk implements Backend.
func (l *Local) OpenDisk(host string, st DiskState, log *slog.Logger) (disk.Device, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.open[host]; ok {
		return nil, fmt.Errorf("%w: %s is already open", ErrDiskOpen, host)
	}
	if log == nil {
		log = l.log
	}
	gen := l.failureGen(host)
	f := l.readFailure(host)
	var failed error
	if f != nil && f.applies(st) {
		failed = f.err()
	}
	var od *openDisk
	onFail := func(err error) {
		// Called from a flush, never with l.mu held (the disk is
		// closed and pushed outside it).
		l.mu.Lock()
		st := od.st
		l.mu.Unlock()
		l.recordFailure(host, st, err)
	}
	od, err := l.openChain(host, st, st.Top, false, log, failed, onFail)
	if err != nil {
		return nil, err
	}
	switch {
	case failed != nil:
		log.Warn("host disk opened failed: a flush of it failed and nobody cleared the error since",
			"host", host, "err", failed, "since", f.Time)
	case f != nil:
		if err := l.forgetFailure(host, gen); err != nil {
			log.Warn("host disk: old failure record not removed", "host", host, "err", err)
		}
		log.Info("host disk no longer holds the part whose flush failed: it starts healthy", "host", host, "part", f.Part)
	}
	l.open[host] = od
	return od.dev, nil
}

// openChain opens the disk whose top is the layer top (read-only when ro),
// or the raw file, logging to log; failed opens it failed and onFail is
// told when it fails (see disk.Failer). l.mu is held.
func (l *Local) openChain(host string, st DiskState, top string, ro bool, log *slog.Logger, failed error, onFail func(error)) (*openDisk, error) {
	if st.Mode == Raw {
		if !st.Owned {
			if err := l.foreign(st.RawPath); err != nil {
				return nil, err
			}
		}
		f, err := disk.OpenFileWith(st.RawPath, disk.FileOptions{ReadOnly: ro, Name: host, Logger: log,
			Failed: failed, OnFail: onFail})
		if err != nil {
			return nil, fmt.Errorf("storage: disk of %s: %w", host, err)
		}
		return &openDisk{dev: f, st: st}, nil
	}
	if _, ok := st.Layers[top]; !ok {
		return nil, fmt.Errorf("storage: disk of %s has no layer %q", host, top)
	}
	chain := st.chainOf(top)
	if len(chain) > maxChain {
		return nil, fmt.Errorf("%w: %s has %d layers", ErrTooManyLayers, host, len(chain))
	}
	if err := l.checkDiskDir(host, st); err != nil {
		return nil, err
	}
	ref := st.Layers[top].Base
	base, err := l.openVersionLocked(ref)
	if err != nil {
		return nil, err
	}
	made := map[string]bool{}
	if st.DirID != "" {
		if made, err = l.madeLayers(host); err != nil {
			base.closeLocked()
			return nil, err
		}
	}
	for _, id := range chain {
		if err := l.ensureLayer(host, st, id, base.Size(), made); err != nil {
			base.closeLocked()
			return nil, err
		}
	}
	dirs := make([]string, len(chain))
	for i, id := range chain {
		dirs[i] = l.layerDir(host, id)
	}
	ov, err := disk.OpenOverlay(base, dirs[:len(dirs)-1], dirs[len(dirs)-1],
		disk.OverlayOptions{ReadOnly: ro, Name: host, Logger: log, Failed: failed, OnFail: onFail})
	if err != nil {
		base.closeLocked()
		return nil, fmt.Errorf("storage: disk of %s: %w", host, err)
	}
	return &openDisk{dev: ov, overlay: ov, base: base, st: st}, nil
}

func (od *openDisk) close() error {
	err := od.dev.Close()
	if od.base != nil {
		err = errors.Join(err, od.base.Close())
	}
	return err
}

// CloseDisk implements Backend. A failed disk without a failure record
// gets one now: the storage that failed may have refused it when the
// failure happened.
func (l *Local) CloseDisk(host string) error {
	l.mu.Lock()
	od, ok := l.open[host]
	delete(l.open, host)
	l.mu.Unlock()
	if !ok {
		return nil
	}
	err := od.close()
	if f, ok := od.dev.(disk.Failer); ok && f.Err() != nil && l.readFailure(host) == nil {
		l.recordFailure(host, od.st, f.Err())
	}
	return err
}

// DiskError implements Backend.
func (l *Local) DiskError(host string, st DiskState) error {
	l.mu.Lock()
	od, open := l.open[host]
	l.mu.Unlock()
	if open {
		if f, ok := od.dev.(disk.Failer); ok {
			return f.Err()
		}
		return nil
	}
	if f := l.readFailure(host); f != nil && f.applies(st) {
		return fmt.Errorf("%w: %w", disk.ErrDeviceFailed, f.err())
	}
	return nil
}

// ClearDiskError implements Backend. The caller holds the host's lock.
func (l *Local) ClearDiskError(host string, _ DiskState) error {
	gen := l.failureGen(host)
	l.mu.Lock()
	od, open := l.open[host]
	l.mu.Unlock()
	if open {
		if f, ok := od.dev.(disk.Failer); ok {
			// A flush may take long on sick storage: not under l.mu.
			if err := f.ClearError(); err != nil {
				return fmt.Errorf("storage: disk of %s: %w", host, err)
			}
		}
	}
	return l.forgetFailure(host, gen)
}

func (l *Local) isOpen(host string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.open[host]
	return ok
}

func overlayOnly(st DiskState) error {
	if st.Mode != Persistent && st.Mode != Volatile {
		return fmt.Errorf("%w (disk mode %s)", ErrNotOverlay, st.Mode)
	}
	return nil
}

// Snapshot implements Backend.
func (l *Local) Snapshot(host string, st DiskState, name string, now time.Time, auto bool) (DiskState, error) {
	if err := overlayOnly(st); err != nil {
		return st, err
	}
	if err := CheckName("snapshot", name); err != nil {
		return st, err
	}
	if _, ok := st.Snapshot(name); ok {
		return st, fmt.Errorf("%w: %s", ErrSnapshotExists, name)
	}
	if len(st.Chain()) >= maxChain {
		return st, fmt.Errorf("%w: %d layers; delete snapshots first", ErrTooManyLayers, len(st.Chain()))
	}
	n := st.clone()
	old := n.Top
	n.Snapshots = append(n.Snapshots, Snapshot{Name: name, Created: now.UTC(), Layer: old, Base: n.Layers[old].Base, Auto: auto})
	n.Top = n.newLayer(old, n.Layers[old].Base)
	return n, nil
}

// Sync implements Backend: an open disk whose top the committed state has
// frozen (a snapshot) moves on to the new top.
func (l *Local) Sync(host string, st DiskState) error {
	l.mu.Lock()
	od, ok := l.open[host]
	l.mu.Unlock()
	if !ok || od.overlay == nil {
		return nil
	}
	_, cur := od.overlay.Layers()
	curID := filepath.Base(cur)
	if curID != st.Top {
		if st.Layers[st.Top].Parent != curID {
			return fmt.Errorf("storage: %s: open disk on layer %s cannot move to %s", host, curID, st.Top)
		}
		// Push flushes and makes a layer: not under l.mu (the caller
		// holds the host's lock).
		if err := od.overlay.Push(l.layerDir(host, st.Top), st.Top); err != nil {
			return fmt.Errorf("storage: snapshot of %s: %w", host, err)
		}
		if err := syncDir(filepath.Dir(l.layerDir(host, st.Top))); err != nil {
			return err
		}
		if st.DirID != "" {
			// Not an error of Sync: the disk already writes to the new
			// top, and the caller would take the state naming it back.
			// The next open records it (ensureLayer).
			if err := l.recordMade(host, st.Top); err != nil {
				l.log.Warn("host disk: new layer not recorded as made yet", "host", host, "layer", st.Top, "err", err)
			}
		}
	}
	l.mu.Lock()
	od.st = st
	l.mu.Unlock()
	return nil
}

// Rebase implements Backend.
func (l *Local) Rebase(host string, st DiskState, base VersionRef) (DiskState, error) {
	if err := overlayOnly(st); err != nil {
		return st, err
	}
	if l.isOpen(host) {
		return st, fmt.Errorf("%w: close %s's disk first", ErrDiskOpen, host)
	}
	if _, err := os.Stat(l.versionPath(base)); err != nil {
		return st, fmt.Errorf("storage: version %s: %w", base, err)
	}
	n := st.clone()
	n.Top = n.newLayer("", base)
	n.gc()
	if err := l.renewDiskDir(host, &n); err != nil {
		return st, err
	}
	// A volatile disk is rebased at every boot: its record of made
	// layers keeps only the ones still named, so it does not grow.
	return n, l.compactMade(host, n)
}

// renewDiskDir, at a reset, gives a disk made before DirID existed its
// directory identity, and starts a disk whose directory was lost on a new
// one: its snapshots were in the lost directory, so they go too.
func (l *Local) renewDiskDir(host string, n *DiskState) error {
	if n.DirID != "" {
		err := l.checkDiskDir(host, *n)
		if err == nil || !errors.Is(err, ErrDiskLost) {
			return err
		}
		l.log.Warn("host disk reset on a new directory: its old one was lost, with its snapshots", "host", host, "err", err)
		n.Snapshots = nil
		n.gc()
		n.DirID = newDirID()
		return l.freshDiskDir(host, *n)
	}
	n.DirID = newDirID()
	if err := l.makeDiskDir(host, *n); err != nil {
		return err
	}
	// The layers made so far are the ones that are there.
	var made []string
	for id := range n.Layers {
		if _, err := os.Stat(filepath.Join(l.layerDir(host, id), "meta")); err == nil {
			made = append(made, id)
		}
	}
	return l.writeMade(host, made)
}

// Rollback implements Backend.
func (l *Local) Rollback(host string, st DiskState, name string) (DiskState, error) {
	if err := overlayOnly(st); err != nil {
		return st, err
	}
	sn, ok := st.Snapshot(name)
	if !ok {
		return st, fmt.Errorf("%w: %s", ErrNoSnapshot, name)
	}
	if l.isOpen(host) {
		return st, fmt.Errorf("%w: close %s's disk first", ErrDiskOpen, host)
	}
	n := st.clone()
	n.Top = n.newLayer(sn.Layer, sn.Base)
	n.gc()
	return n, nil
}

// DeleteSnapshot implements Backend: the snapshot's record goes; its
// layer goes with it when nothing else builds on it, and is merged into
// its one child when that is all that still needs it, so chains do not
// grow with every snapshot ever taken.
func (l *Local) DeleteSnapshot(host string, st DiskState, name string) (DiskState, error) {
	if err := overlayOnly(st); err != nil {
		return st, err
	}
	sn, ok := st.Snapshot(name)
	if !ok {
		return st, fmt.Errorf("%w: %s", ErrNoSnapshot, name)
	}
	n := st.clone()
	n.Snapshots = slices.DeleteFunc(n.Snapshots, func(s Snapshot) bool { return s.Name == name })
	n.gc()
	x := sn.Layer
	if _, kept := n.Layers[x]; !kept || n.snapshotAt(x) {
		return n, nil
	}
	var children []string
	for id, ly := range n.Layers {
		if ly.Parent == x {
			children = append(children, id)
		}
	}
	if len(children) != 1 {
		return n, nil // a branch point: every branch needs it whole
	}
	child := children[0]
	if err := l.merge(host, n, x, child); err != nil {
		return st, err
	}
	c := n.Layers[child]
	c.Parent = n.Layers[x].Parent
	n.Layers[child] = c
	delete(n.Layers, x)
	return n, nil
}

// snapshotAt reports whether a snapshot ends at layer id.
func (s *DiskState) snapshotAt(id string) bool {
	return slices.ContainsFunc(s.Snapshots, func(sn Snapshot) bool { return sn.Layer == id })
}

// merge copies what layer x holds and its child does not into the child,
// through the open disk when the child is in its chain.
func (l *Local) merge(host string, st DiskState, x, child string) error {
	dir := l.layerDir(host, x)
	l.mu.Lock()
	od, open := l.open[host]
	if open && od.overlay != nil && slices.Contains(od.st.Chain(), child) {
		// Copying may take a while: not under l.mu, which every open of
		// every host needs. The caller holds the host's own lock.
		l.mu.Unlock()
		return mergeInto(od.overlay, dir, host, x)
	}
	if _, err := os.Stat(filepath.Join(dir, "meta")); errors.Is(err, os.ErrNotExist) {
		l.mu.Unlock()
		if err := l.layerLost(host, st, x); err != nil {
			return err // merged as empty, its loss would go unseen
		}
		return nil // x was never written: nothing to merge
	}
	od, err := l.openChain(host, st, child, false, l.log, nil, nil)
	l.mu.Unlock()
	if err != nil {
		return err
	}
	err = mergeInto(od.overlay, dir, host, x)
	return errors.Join(err, od.close())
}

// mergeInto merges layer dir into the layer above it in ov. A layer a
// merge already absorbed before a crash (the store still naming it) is
// left out of the stack by OpenOverlay: that merge is done.
func mergeInto(ov *disk.Overlay, dir, host, x string) error {
	lower, _ := ov.Layers()
	if !slices.Contains(lower, filepath.Clean(dir)) {
		return nil
	}
	if err := ov.MergeInto(dir); err != nil {
		return fmt.Errorf("storage: merge layer %s of %s: %w", x, host, err)
	}
	return nil
}

// gc drops layers no chain needs: neither the current one nor a
// snapshot's.
func (s *DiskState) gc() {
	keep := map[string]bool{}
	for _, id := range s.Chain() {
		keep[id] = true
	}
	for _, sn := range s.Snapshots {
		for _, id := range s.chainOf(sn.Layer) {
			keep[id] = true
		}
	}
	for id := range s.Layers {
		if !keep[id] {
			delete(s.Layers, id)
		}
	}
}

// Prune implements Backend.
func (l *Local) Prune(host string, st DiskState) error {
	if l.isOpen(host) && st.Mode == "" {
		return fmt.Errorf("%w: %s", ErrDiskOpen, host)
	}
	dir := l.hostDir(host)
	if st.Mode == "" {
		err := os.RemoveAll(dir)
		if err != nil {
			return fmt.Errorf("storage: %w", err)
		}
		return nil
	}
	var errs []error
	ents, err := os.ReadDir(filepath.Join(dir, "layers"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("storage: %w", err)
	}
	for _, e := range ents {
		if _, ok := st.Layers[e.Name()]; ok {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, "layers", e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	if st.Mode != Raw || !st.Owned {
		for _, f := range []string{"disk.img", "disk.img.partial"} {
			if err := os.Remove(filepath.Join(dir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// CopyDisk implements Backend.
func (l *Local) CopyDisk(ctx context.Context, host string, st DiskState, snapshot string, dst VersionRef, progress Progress) error {
	if st.Mode == Raw {
		f, err := disk.OpenFile(st.RawPath, true)
		if err != nil {
			return err
		}
		defer f.Close()
		return l.WriteVersion(ctx, dst, f.Size(), f, progress)
	}
	top := st.Top
	if snapshot != "" {
		sn, ok := st.Snapshot(snapshot)
		if !ok {
			return fmt.Errorf("%w: %s", ErrNoSnapshot, snapshot)
		}
		top = sn.Layer
	}
	l.mu.Lock()
	if o, ok := l.open[host]; ok && o.st.Top == top {
		// A disk being written is never copied: the copy would mix
		// its state before and after writes made during it.
		l.mu.Unlock()
		return fmt.Errorf("%w: close %s's disk before copying it", ErrDiskOpen, host)
	}
	od, err := l.openChain(host, st, top, true, l.log, nil, nil)
	l.mu.Unlock()
	if err != nil {
		return err
	}
	defer od.close()
	return l.WriteVersion(ctx, dst, od.dev.Size(), od.dev, progress)
}

// Check implements Backend.
func (l *Local) Check(host string, st DiskState) (CheckReport, error) {
	rep := CheckReport{OK: true}
	add := func(p CheckedPart) {
		rep.Parts = append(rep.Parts, p)
		rep.OK = rep.OK && p.OK
	}
	if st.Mode == Raw {
		fi, err := os.Stat(st.RawPath)
		switch {
		case err != nil:
			add(CheckedPart{Name: st.RawPath, Detail: err.Error()})
		case !fi.Mode().IsRegular() && fi.Mode()&os.ModeDevice == 0:
			add(CheckedPart{Name: st.RawPath, Detail: "not a regular file or block device"})
		default:
			add(CheckedPart{Name: st.RawPath, OK: true, Detail: fmt.Sprintf("raw, %d bytes", fi.Size())})
		}
		return rep, nil
	}
	// The layers of a disk the target has open are checked through it
	// (its top is locked against everyone else).
	live := map[string]disk.LayerInfo{}
	l.mu.Lock()
	od := l.open[host]
	l.mu.Unlock()
	if od != nil && od.overlay != nil {
		infos, err := od.overlay.Check()
		if err != nil {
			add(CheckedPart{Name: "open disk", Detail: err.Error()})
		}
		for _, in := range infos {
			live[filepath.Clean(in.Dir)] = in
		}
	}
	if err := l.checkDiskDir(host, st); err != nil {
		add(CheckedPart{Name: "directory " + l.hostDir(host), Detail: err.Error()})
		return rep, nil
	}
	made, err := l.madeLayers(host)
	if err != nil {
		add(CheckedPart{Name: "directory " + l.hostDir(host), Detail: err.Error()})
		return rep, nil
	}
	for _, id := range slices.Sorted(maps.Keys(st.Layers)) {
		dir := l.layerDir(host, id)
		if _, err := os.Stat(filepath.Join(dir, "meta")); errors.Is(err, os.ErrNotExist) {
			if err := l.lostIfMade(host, st, id, made); err != nil {
				add(CheckedPart{Name: "layer " + id, Detail: err.Error()})
				continue
			}
			if id == st.Top || !st.written(id) {
				add(CheckedPart{Name: "layer " + id, OK: true, Detail: "not written yet"})
				continue
			}
		}
		info, ok := live[filepath.Clean(dir)]
		var err error
		if !ok {
			info, err = disk.CheckLayer(dir)
		}
		if err != nil {
			add(CheckedPart{Name: "layer " + id, Detail: err.Error()})
			continue
		}
		want := st.Layers[id]
		detail := fmt.Sprintf("%d of %d clusters of %d bytes written here, %d records", info.Owned, info.Clusters, info.ClusterSize, info.Records)
		if info.TornTail {
			detail += ", torn tail record (recovered)"
		}
		good := true
		if info.BaseID != baseID(want.Base) {
			good = false
			detail += fmt.Sprintf("; base %q, store says %q", info.BaseID, baseID(want.Base))
		}
		add(CheckedPart{Name: "layer " + id, OK: good, Detail: detail, Clusters: info.Owned})
	}
	return rep, nil
}

// written reports whether layer id may hold data: anything with a child
// or a snapshot was a top once.
func (s *DiskState) written(id string) bool {
	if s.snapshotAt(id) {
		return true
	}
	for _, ly := range s.Layers {
		if ly.Parent == id {
			return true
		}
	}
	return false
}

// Usage implements Backend: bytes allocated on the file system.
func (l *Local) Usage(host string, st DiskState) (int64, error) {
	var total int64
	add := func(p string) {
		var s unix.Stat_t
		if unix.Stat(p, &s) == nil {
			total += s.Blocks * 512
		}
	}
	if st.Mode == Raw {
		add(st.RawPath)
		return total, nil
	}
	for id := range st.Layers {
		add(filepath.Join(l.layerDir(host, id), "data"))
		add(filepath.Join(l.layerDir(host, id), "meta"))
	}
	return total, nil
}

// CleanPartial removes versions left half written by an interrupted
// WriteVersion (at start, before anything writes).
func (l *Local) CleanPartial() error {
	var errs []error
	dirs, _ := os.ReadDir(filepath.Join(l.root, "images"))
	for _, d := range dirs {
		files, _ := os.ReadDir(filepath.Join(l.root, "images", d.Name()))
		for _, f := range files {
			if strings.HasSuffix(f.Name(), ".partial") {
				errs = append(errs, os.Remove(filepath.Join(l.root, "images", d.Name(), f.Name())))
			}
		}
	}
	return errors.Join(errs...)
}

// Hosts lists the host directories present (for pruning disks of hosts
// the store no longer has).
func (l *Local) Hosts() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(l.root, "hosts"))
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	var out []string
	for _, e := range ents {
		// lost+found: hosts/ may be a file system of its own.
		if e.IsDir() && e.Name() != "lost+found" {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// foreign refuses a disk file the admin names inside the data directory:
// versions and other hosts' layers live there, and a version never changes.
func (l *Local) foreign(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	root, err := filepath.Abs(l.root)
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	if r, err := filepath.EvalSymlinks(root); err == nil {
		root = r
	}
	if rel, err := filepath.Rel(root, abs); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
		return fmt.Errorf("storage: %s is inside the data directory %s: a host cannot use a version or another disk as its raw file", path, l.root)
	}
	return nil
}

// syncDir makes a directory's entries (a rename, a new file) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("storage: fsync %s: %w", dir, err)
	}
	return nil
}

var _ Backend = (*Local)(nil)
