// Package storage owns where the bytes of images and host disks live: image
// versions (read-only, shared by every host on them) and host disks
// (copy-on-write layers on a version, or a private raw file), with the
// operations the host model needs - snapshot, rollback, rebase (reset and
// moving to a new version), delete, check, and copying a disk out as a new
// version (promote).
//
// A Backend is stateless about hosts: what a host disk is made of is a
// DiskState value that the caller (internal/inventory) keeps in the store,
// so the store stays the one truth. Operations that make new parts create
// them before returning the new state; operations never delete what the old
// state still names: after the caller has committed a new state it calls
// Prune, which removes the parts no state names any more (and at start,
// the leftovers of an interrupted operation). The Ceph RBD backend
// (internal/storage/rbd, built with -tags ceph) implements the same
// interface with RBD snapshots and clones.
//
// Local is the default backend: files under data_dir, overlays in the
// format of docs/overlay-format.md (internal/disk).
package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"time"

	"github.com/diskless-boot/diskless/internal/disk"
)

// VersionRef names one version of an image.
type VersionRef struct {
	Image   string `json:"image"`
	Version int    `json:"version"`
}

func (v VersionRef) String() string { return fmt.Sprintf("%s@v%d", v.Image, v.Version) }

// IsZero reports an unset reference.
func (v VersionRef) IsZero() bool { return v.Image == "" }

// DiskMode says what happens to a host's writes.
type DiskMode string

const (
	// Persistent: a copy-on-write overlay on the image version, kept
	// across boots and restarts.
	Persistent DiskMode = "persistent"
	// Volatile: the overlay is discarded when the host starts a new boot.
	Volatile DiskMode = "volatile"
	// Raw: a private full disk file, shared with nothing.
	Raw DiskMode = "raw"
)

// ParseDiskMode checks a mode name.
func ParseDiskMode(s string) (DiskMode, error) {
	switch m := DiskMode(s); m {
	case Persistent, Volatile, Raw:
		return m, nil
	}
	return "", fmt.Errorf("disk mode %q: want persistent, volatile or raw", s)
}

// DiskState is what a host disk is made of. It is a plain value the
// caller stores; the backend reads and returns it.
type DiskState struct {
	Mode DiskMode `json:"mode"`
	// Overlay modes: Top is the writable layer; Layers holds every layer
	// of the host (the current chain and the ones snapshots keep), each
	// naming its parent ("" = it lies on Base).
	Top       string           `json:"top,omitempty"`
	Layers    map[string]Layer `json:"layers,omitempty"`
	Snapshots []Snapshot       `json:"snapshots,omitempty"`
	// NextID numbers new layers (ids are never reused).
	NextID int `json:"next_id,omitempty"`
	// Raw mode: the disk file; Owned when diskless made it (and deletes
	// it with the host), false for a file the admin named.
	RawPath string `json:"raw_path,omitempty"`
	Owned   bool   `json:"owned,omitempty"`
	// DirID (Local backend, overlay modes) names the disk's directory: a
	// directory without it was lost and the disk is refused (localdir.go).
	DirID string `json:"dir_id,omitempty"`
}

// Layer is one copy-on-write layer of a host disk.
type Layer struct {
	Parent string     `json:"parent,omitempty"`
	Base   VersionRef `json:"base"` // the image version at the bottom of its chain
}

// Snapshot is a named, frozen state of a host disk: the chain ending at
// Layer (read-only from the moment the snapshot was taken).
type Snapshot struct {
	Name    string     `json:"name"`
	Created time.Time  `json:"created"`
	Layer   string     `json:"layer"`
	Base    VersionRef `json:"base"`
	// Auto is set on the snapshots diskless takes itself before it moves a
	// persistent disk to a new image version.
	Auto bool `json:"auto,omitempty"`
}

// Base is the image version the disk's current chain lies on (zero for a
// raw disk).
func (s *DiskState) Base() VersionRef {
	if s.Mode == Raw || s.Top == "" {
		return VersionRef{}
	}
	return s.Layers[s.Top].Base
}

// Chain is the current chain, bottom first; its last element is Top.
func (s *DiskState) Chain() []string { return s.chainOf(s.Top) }

// chainOf is the chain ending at id, bottom first.
func (s *DiskState) chainOf(id string) []string {
	var rev []string
	for id != "" && len(rev) <= len(s.Layers) {
		rev = append(rev, id)
		id = s.Layers[id].Parent
	}
	out := make([]string, len(rev))
	for i, l := range rev {
		out[len(rev)-1-i] = l
	}
	return out
}

// Snapshot returns the named snapshot.
func (s *DiskState) Snapshot(name string) (Snapshot, bool) {
	for _, sn := range s.Snapshots {
		if sn.Name == name {
			return sn, true
		}
	}
	return Snapshot{}, false
}

// Versions lists every image version the disk uses: its current base and
// the bases its snapshots keep.
func (s *DiskState) Versions() []VersionRef {
	seen := map[VersionRef]bool{}
	var out []VersionRef
	add := func(v VersionRef) {
		if !v.IsZero() && !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	add(s.Base())
	for _, sn := range s.Snapshots {
		add(sn.Base)
	}
	return out
}

// clone deep-copies s so an operation can change it freely.
func (s DiskState) clone() DiskState {
	c := s
	c.Layers = make(map[string]Layer, len(s.Layers))
	for k, v := range s.Layers {
		c.Layers[k] = v
	}
	c.Snapshots = append([]Snapshot(nil), s.Snapshots...)
	return c
}

// Errors of the operations; callers map them to their API.
var (
	ErrNoSnapshot     = errors.New("storage: no such snapshot")
	ErrSnapshotExists = errors.New("storage: snapshot exists")
	ErrNotOverlay     = errors.New("storage: not a copy-on-write disk")
	ErrDiskOpen       = errors.New("storage: disk is in use")
	ErrTooManyLayers  = errors.New("storage: too many snapshots")
	// ErrDiskLocked: another server holds the host disk's lock (RBD
	// exclusive lock) and the caller's policy said it is alive; the
	// error names the owner.
	ErrDiskLocked = errors.New("storage: disk is locked by another server")
	// ErrTooLarge: the file system of the data directory cannot hold a
	// file of the size asked for (EFBIG: ext4 stops at 16 TiB).
	ErrTooLarge = errors.New("storage: larger than the data directory's file system holds in one file")
)

// Source is what a new image version is copied from: an imported file or
// a host disk being promoted. When it also implements
// disk.AllocationReporter, unmapped ranges are skipped without reading.
type Source interface {
	io.ReaderAt
	Size() int64
}

// Progress is called now and then with the bytes done so far.
type Progress func(done int64)

// Backend stores image versions and host disks. Implementations are safe
// for concurrent use; operations on one host are serialized by the caller.
type Backend interface {
	// WriteVersion makes the new version ref of size bytes with the
	// content of src (nil: all zeros). A version is never changed after
	// WriteVersion returned; a failed or cancelled write leaves nothing.
	WriteVersion(ctx context.Context, ref VersionRef, size int64, src Source, progress Progress) error
	// OpenVersion opens a version read-only; every open shares one
	// underlying device (one page cache), released by Close.
	OpenVersion(ref VersionRef) (disk.Device, error)
	// VersionPath is a local file holding the version's bytes, for tools
	// that need a path (qemu-img); "" when the backend has none.
	VersionPath(ref VersionRef) string
	// DeleteVersion removes a version nothing uses any more, with its
	// boot files.
	DeleteVersion(ref VersionRef) error
	// WriteBootFiles keeps copies of files (a kernel, an initrd) with the
	// version ref, before it is published; a failed write leaves none.
	WriteBootFiles(ctx context.Context, ref VersionRef, files BootFiles) error
	// OpenBootFile opens one of a version's boot files (BootKernel,
	// BootInitrd); an error wrapping os.ErrNotExist when it has none.
	OpenBootFile(ref VersionRef, name string) (*os.File, error)

	// CreateDisk makes a new host disk: an empty overlay on base, or for
	// Raw a private copy of base (rawPath "" ) or the admin's file
	// rawPath (used as is, never deleted).
	CreateDisk(ctx context.Context, host string, mode DiskMode, base VersionRef, rawPath string, progress Progress) (DiskState, error)
	// OpenDisk opens a host disk for the target. At most one open per
	// host; CloseDisk releases it. log receives what happens to the open
	// disk (a failed flush), with the caller's attributes (the image); nil:
	// the backend's logger.
	OpenDisk(host string, st DiskState, log *slog.Logger) (disk.Device, error)
	CloseDisk(host string) error
	// DiskError is nil while the host's disk (made of st) is healthy;
	// once a flush of it failed, the error (wrapping disk.ErrDeviceFailed)
	// that its writes and flushes return until ClearDiskError - also
	// after CloseDisk and OpenDisk, a restart included, as long as the
	// disk still holds the part that failed.
	DiskError(host string, st DiskState) error
	// ClearDiskError returns a failed disk (made of st) to service once
	// its storage is fixed: an open disk must complete one more flush
	// (else it stays failed and the error is returned; see disk.Failer);
	// a closed one loses the record of its failure. A disk without one is
	// not an error.
	ClearDiskError(host string, st DiskState) error
	// Snapshot freezes the current chain as snapshot name and continues on
	// a new empty layer. On an open disk the switch happens in Sync, once
	// the caller has committed the new state (crash-consistent snapshot).
	Snapshot(host string, st DiskState, name string, now time.Time, auto bool) (DiskState, error)
	// Rebase starts a new empty top layer on base, leaving the old chain
	// to the snapshots that keep it (reset: base unchanged; a new version).
	// The disk must be closed. New layers are made when the disk is next
	// opened: a layer the state names but that does not exist yet is an
	// empty layer that was never written.
	Rebase(host string, st DiskState, base VersionRef) (DiskState, error)
	// Rollback makes snapshot name the current state again (a new empty
	// layer on it); the disk must be closed.
	Rollback(host string, st DiskState, name string) (DiskState, error)
	// DeleteSnapshot forgets snapshot name; layers only it kept become
	// prunable, layers still in use absorb it. Works on an open disk.
	DeleteSnapshot(host string, st DiskState, name string) (DiskState, error)
	// Sync brings an open disk in line with st after the caller committed
	// it (a snapshot taken while the host runs continues on its new top).
	Sync(host string, st DiskState) error
	// Prune removes every part of host's disk that st does not name
	// (st.Mode == "" removes the whole disk).
	Prune(host string, st DiskState) error
	// CopyDisk copies the disk's current content (or a snapshot's, when
	// snapshot is not empty) into the new version dst.
	CopyDisk(ctx context.Context, host string, st DiskState, snapshot string, dst VersionRef, progress Progress) error
	// Check verifies the disk's metadata.
	Check(host string, st DiskState) (CheckReport, error)
	// Usage is the space the host's own data takes (its layers, or its
	// raw file).
	Usage(host string, st DiskState) (int64, error)
}

// CheckReport is the result of Check: one line per part checked.
type CheckReport struct {
	OK    bool          `json:"ok"`
	Parts []CheckedPart `json:"parts"`
}

// CheckedPart is one checked layer or file.
type CheckedPart struct {
	Name     string `json:"name"`
	OK       bool   `json:"ok"`
	Detail   string `json:"detail"`
	Clusters int64  `json:"clusters,omitempty"`
}

// NamePattern is what image, host and snapshot names may be: they name
// files and appear in URLs and iSCSI names.
var NamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// CheckName checks an image, host or snapshot name.
func CheckName(what, name string) error {
	if !NamePattern.MatchString(name) || name == "." || name == ".." {
		return fmt.Errorf("%s name %q: want 1-63 of a-z 0-9 . _ -, starting with a letter or digit", what, name)
	}
	return nil
}
