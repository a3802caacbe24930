package storage

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/diskless-boot/diskless/internal/fsutil"
)

// A Local overlay disk's layers are made lazily, when the disk first opens
// on them: a layer the state names that has no directory yet is empty. So
// that a lost directory is not taken for one never made - and the host
// served its image in place of its own writes - the disk's directory
// (hosts/<host>) carries:
//
//	disk-id  the DiskState.DirID of the disk that made the directory
//	made     the layers made in it, one ID per line (appended, fsync'd)
//
// A directory without disk-id (or with another disk's) was lost, and a
// layer "made" lists that is gone was lost: the disk is refused with
// ErrDiskLost. A reset (Rebase) starts such a disk again from its image.
// Disks made before DirID existed have none and are not checked until
// their next Rebase gives them one.

// ErrDiskLost: a host disk's data is gone from the storage (its
// directory or a layer lost); it is refused rather than served without it.
var ErrDiskLost = errors.New("storage: host disk's data is lost")

func newDirID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (l *Local) dirIDPath(host string) string { return filepath.Join(l.hostDir(host), "disk-id") }
func (l *Local) madePath(host string) string  { return filepath.Join(l.hostDir(host), "made") }

// makeDiskDir makes host's directory the one of st (st.DirID): its
// disk-id written durably, its record of made layers started anew.
func (l *Local) makeDiskDir(host string, st DiskState) error {
	dir := l.hostDir(host)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	if err := syncDir(filepath.Dir(dir)); err != nil { // hosts/<host> may be new
		return err
	}
	if err := os.Remove(l.madePath(host)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("storage: %w", err)
	}
	if err := fsutil.WriteFileAtomic(l.dirIDPath(host), []byte(st.DirID+"\n"), 0o600); err != nil {
		return fmt.Errorf("storage: disk directory of %s: %w", host, err)
	}
	return nil
}

// freshDiskDir makes host's directory st's, without the layers another
// disk of that name left there (whose IDs st's could reuse).
func (l *Local) freshDiskDir(host string, st DiskState) error {
	if err := os.RemoveAll(filepath.Join(l.hostDir(host), "layers")); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	return l.makeDiskDir(host, st)
}

// checkDiskDir returns ErrDiskLost when host's directory is not st's
// (lost, or left by another disk); nil for a disk without a DirID.
func (l *Local) checkDiskDir(host string, st DiskState) error {
	if st.DirID == "" {
		return nil
	}
	b, err := os.ReadFile(l.dirIDPath(host))
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w: %s's directory %s is gone or is not its own (no disk-id); "+
			"refusing to serve its image in place of its writes - reset the host to start it again from its image",
			ErrDiskLost, host, l.hostDir(host))
	case err != nil:
		return fmt.Errorf("storage: disk directory of %s: %w", host, err)
	case strings.TrimSpace(string(b)) != st.DirID:
		return fmt.Errorf("%w: %s's directory %s belongs to another disk (disk-id %q, the host's is %q); "+
			"reset the host to start it again from its image", ErrDiskLost, host, l.hostDir(host), strings.TrimSpace(string(b)), st.DirID)
	}
	return nil
}

// madeLayers returns the layers made in host's directory.
func (l *Local) madeLayers(host string) (map[string]bool, error) {
	f, err := os.Open(l.madePath(host))
	if errors.Is(err, os.ErrNotExist) {
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	defer f.Close()
	made := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if id := strings.TrimSpace(sc.Text()); id != "" {
			made[id] = true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("storage: %s: %w", l.madePath(host), err)
	}
	return made, nil
}

// recordMade adds layer id to the layers made in host's directory, durably.
func (l *Local) recordMade(host, id string) error {
	_, statErr := os.Stat(l.madePath(host))
	f, err := os.OpenFile(l.madePath(host), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	_, err = f.WriteString(id + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && errors.Is(statErr, os.ErrNotExist) {
		err = syncDir(l.hostDir(host)) // the file is new
	}
	if err != nil {
		return fmt.Errorf("storage: record of %s's layer %s: %w", host, id, err)
	}
	return nil
}

// layerLost returns ErrDiskLost when layer id of st, which has no
// directory, was made before.
func (l *Local) layerLost(host string, st DiskState, id string) error {
	if st.DirID == "" {
		return nil
	}
	made, err := l.madeLayers(host)
	if err != nil {
		return err
	}
	return l.lostIfMade(host, st, id, made)
}

// lostIfMade is layerLost with the made layers already read.
func (l *Local) lostIfMade(host string, st DiskState, id string, made map[string]bool) error {
	if st.DirID == "" || !made[id] {
		return nil
	}
	return fmt.Errorf("%w: layer %s of %s (%s) was made and is gone; reset the host to start it again from its image",
		ErrDiskLost, id, host, l.layerDir(host, id))
}

// compactMade rewrites the record of made layers without the ones st no
// longer names (their directories go with the next Prune).
func (l *Local) compactMade(host string, st DiskState) error {
	if st.DirID == "" {
		return nil
	}
	made, err := l.madeLayers(host)
	if err != nil {
		return err
	}
	var keep []string
	for id := range made {
		if _, ok := st.Layers[id]; ok {
			keep = append(keep, id)
		}
	}
	if len(keep) == len(made) {
		return nil
	}
	return l.writeMade(host, keep)
}

// writeMade replaces host's record of made layers with ids.
func (l *Local) writeMade(host string, ids []string) error {
	var b strings.Builder
	for _, id := range ids {
		b.WriteString(id + "\n")
	}
	if err := fsutil.WriteFileAtomic(l.madePath(host), []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("storage: record of %s's made layers: %w", host, err)
	}
	return nil
}
