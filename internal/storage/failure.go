package storage

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// failedName is the file in a host's directory that says its disk failed
// a flush and nobody cleared the error yet.
const failedName = "disk-failed"

// diskFailure is a failed flush of a host disk, kept in its directory
// from the moment it happens until the operator clears it, so neither a
// reopen nor a restart (kill -9 included) forgets it: the kernel reports a
// write-back error to the descriptors open when it happened, never to a
// new one. The disk opens failed again while it still holds the part that
// failed (the top layer it had then, or its raw file); a disk that no
// longer holds it (a reset, a rollback, another version) starts healthy.
type diskFailure struct {
	Raw   bool      `json:"raw,omitempty"`
	Part  string    `json:"part"` // the raw file, or the layer that was the top
	Error string    `json:"error"`
	Time  time.Time `json:"time"`
}

// applies reports whether a disk made of st still holds the failed part.
// A record that cannot be read names no part: it applies to any disk.
func (f *diskFailure) applies(st DiskState) bool {
	if f.Part == "" {
		return true
	}
	if f.Raw || st.Mode == Raw {
		return f.Raw && st.Mode == Raw && st.RawPath == f.Part
	}
	return slices.Contains(st.Chain(), f.Part)
}

func (f *diskFailure) err() error { return errors.New(f.Error) }

// readFailure returns the recorded failure of host's disk, nil for none.
func (l *Local) readFailure(host string) *diskFailure {
	b, err := os.ReadFile(filepath.Join(l.hostDir(host), failedName))
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			l.log.Error("host disk: failure record unreadable; taken as failed", "host", host, "err", err)
			return &diskFailure{Error: "failure record unreadable: " + err.Error()}
		}
		return nil
	}
	var f diskFailure
	if err := json.Unmarshal(b, &f); err != nil {
		l.log.Error("host disk: failure record corrupt; taken as failed", "host", host, "err", err)
		return &diskFailure{Error: "failure record corrupt: " + err.Error()}
	}
	return &f
}

// recordFailure keeps err, the failed flush of host's disk made of st.
// It is called by the device as it fails, from its flush.
func (l *Local) recordFailure(host string, st DiskState, err error) {
	f := diskFailure{Raw: st.Mode == Raw, Part: st.Top, Error: err.Error(), Time: time.Now().UTC()}
	if f.Raw {
		f.Part = st.RawPath
	}
	b, _ := json.Marshal(f)
	l.failMu.Lock()
	defer l.failMu.Unlock()
	l.failGen[host]++
	dir := l.hostDir(host)
	tmp := filepath.Join(dir, failedName+".tmp")
	werr := os.MkdirAll(dir, 0o700)
	if werr == nil {
		werr = writeSynced(tmp, b)
	}
	if werr == nil {
		werr = os.Rename(tmp, filepath.Join(dir, failedName))
	}
	if werr == nil {
		werr = syncDir(dir)
	}
	if werr != nil {
		// The data directory may sit on the storage that failed.
		l.log.Error("host disk: failure not recorded: a restart would forget it", "host", host, "err", werr)
	}
}

// forgetFailure removes host's failure record unless a new failure was
// recorded since gen (failureGen).
func (l *Local) forgetFailure(host string, gen uint64) error {
	l.failMu.Lock()
	defer l.failMu.Unlock()
	if l.failGen[host] != gen {
		return nil
	}
	err := os.Remove(filepath.Join(l.hostDir(host), failedName))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("storage: %w", err)
	}
	return nil
}

// failureGen counts the failures recorded for host by this process.
func (l *Local) failureGen(host string) uint64 {
	l.failMu.Lock()
	defer l.failMu.Unlock()
	return l.failGen[host]
}

// writeSynced writes b to a new file at path and makes it durable.
func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if serr := f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
