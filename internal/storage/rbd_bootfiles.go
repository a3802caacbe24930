//go:build ceph

package storage

// This file owns the RBD backend's boot files (kernel, initrd, cmdline of
// a version): a copy in the pool that every server of the site reads, and
// each server's local copy under DataDir that it serves from.
//
// In the pool a file is RADOS objects next to the version's RBD image:
//
//	diskless.b.<image>.<N>.<name>.<i>  piece i: bytes [i*pieceSize, (i+1)*pieceSize)
//	diskless.b.<image>.<N>.<name>      its manifest (JSON), written last
//
// Pieces keep every object well under osd_max_object_size (128 MiB by
// default). A reader takes nothing but what a manifest names and checks
// every piece's SHA-256 and the whole file's, so a half-written, removed
// or damaged copy is refused, never served.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/ceph/go-ceph/rados"
	"golang.org/x/sync/singleflight"
)

const (
	// rbdBootPieceSize is the size of a boot file's pieces in the pool:
	// an initrd of a few hundred MiB is a handful of objects, and one
	// piece is what a write or a fetch holds in memory.
	rbdBootPieceSize = 32 << 20
	// rbdBootMaxPiece and rbdBootMaxManifest cap what a manifest read
	// from the pool may make a server allocate.
	rbdBootMaxPiece    = 128 << 20
	rbdBootMaxManifest = 64 << 10
)

// rbdBootFiles is the state RBD keeps about boot files: which local
// copies it has checked against the pool, and the fetches under way. It
// is safe for concurrent use.
type rbdBootFiles struct {
	pieceSize int // rbdBootPieceSize; tests make it small
	// afterPiece, when set (tests), is called after each piece is
	// stored.
	afterPiece func(object string)

	mu sync.Mutex
	// checked maps a local copy to the SHA-256 it was found to have
	// (written or fetched by this process, or hashed once): a copy
	// whose hash is the manifest's is the version's file.
	checked  map[bootKey]string
	fetching singleflight.Group
	fetches  atomic.Int64 // fetches from the pool, for tests
}

type bootKey struct {
	ref  VersionRef
	name string
}

// rbdBootManifest describes a boot file stored in the pool. SHA256 and
// Pieces are hex SHA-256 of the whole file and of each piece.
type rbdBootManifest struct {
	Size      int64    `json:"size"`
	PieceSize int      `json:"piece_size"`
	SHA256    string   `json:"sha256"`
	Pieces    []string `json:"pieces"`
}

func rbdBootObject(ref VersionRef, name string) string {
	return fmt.Sprintf("%sb.%s.%d.%s", rbdPrefix, ref.Image, ref.Version, name)
}

func rbdBootPiece(ref VersionRef, name string, i int) string {
	return fmt.Sprintf("%s.%d", rbdBootObject(ref, name), i)
}

// WriteBootFiles implements Backend: the files are copied next to the
// version on this server, then from that copy into the pool, manifest
// last; a failure removes both.
func (b *RBD) WriteBootFiles(ctx context.Context, ref VersionRef, files BootFiles) error {
	for name := range files {
		if err := checkBootName(name); err != nil {
			return err
		}
	}
	b.forgetLocalCopies(ref) // they are about to be replaced, or removed on failure
	if err := b.files.WriteBootFiles(ctx, ref, files); err != nil {
		return err
	}
	sums := map[string]string{}
	for name := range files {
		sum, err := b.storeBootFile(ctx, ref, name)
		if err != nil {
			for name := range files {
				if rerr := b.removeBootObjects(ref, name); rerr != nil {
					b.log.Warn("rbd: boot file objects left behind", "image", ref.String(), "err", rerr)
				}
			}
			return errors.Join(fmt.Errorf("storage: %s of %s into the pool: %w", name, ref, err), b.files.removeBootFiles(ref))
		}
		sums[name] = sum
	}
	b.boot.mu.Lock()
	defer b.boot.mu.Unlock()
	for name, sum := range sums {
		b.boot.checked[bootKey{ref, name}] = sum
	}
	return nil
}

// storeBootFile copies the local copy of ref's file name into the pool
// and returns its SHA-256. A manifest left by an earlier, failed write
// goes first, so that no reader pairs it with the new pieces.
func (b *RBD) storeBootFile(ctx context.Context, ref VersionRef, name string) (string, error) {
	if err := b.ioctx.Delete(rbdBootObject(ref, name)); err != nil && !errors.Is(err, rados.ErrNotFound) {
		return "", fmt.Errorf("remove %s: %w", rbdBootObject(ref, name), radosErr(err))
	}
	f, err := os.Open(b.files.bootPath(ref, name))
	if err != nil {
		return "", err
	}
	defer f.Close()
	m := rbdBootManifest{PieceSize: b.boot.pieceSize}
	whole := sha256.New()
	buf := make([]byte, m.PieceSize)
	for i := 0; ; i++ {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, err := io.ReadFull(f, buf)
		if err == io.EOF {
			break
		}
		if err != nil && err != io.ErrUnexpectedEOF {
			return "", err
		}
		piece := buf[:n]
		obj := rbdBootPiece(ref, name, i)
		if err := b.ioctx.WriteFull(obj, piece); err != nil {
			return "", fmt.Errorf("write %s: %w", obj, radosErr(err))
		}
		if b.boot.afterPiece != nil {
			b.boot.afterPiece(obj)
		}
		whole.Write(piece)
		m.Size += int64(n)
		m.Pieces = append(m.Pieces, sha256Hex(piece))
	}
	m.SHA256 = hex.EncodeToString(whole.Sum(nil))
	js, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if err := b.ioctx.WriteFull(rbdBootObject(ref, name), js); err != nil {
		return "", fmt.Errorf("write %s: %w", rbdBootObject(ref, name), radosErr(err))
	}
	return m.SHA256, nil
}

// removeBootObjects removes ref's file name from the pool: the manifest
// first (no reader starts on a file going away), then the pieces up to
// the first missing one - pieces are written in order, so a failed write
// leaves a prefix of them.
func (b *RBD) removeBootObjects(ref VersionRef, name string) error {
	if err := b.ioctx.Delete(rbdBootObject(ref, name)); err != nil && !errors.Is(err, rados.ErrNotFound) {
		return fmt.Errorf("storage: remove %s: %w", rbdBootObject(ref, name), radosErr(err))
	}
	for i := 0; ; i++ {
		err := b.ioctx.Delete(rbdBootPiece(ref, name, i))
		if errors.Is(err, rados.ErrNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("storage: remove %s: %w", rbdBootPiece(ref, name, i), radosErr(err))
		}
	}
}

// deleteBootFiles removes all of ref's boot files, in the pool and here.
func (b *RBD) deleteBootFiles(ref VersionRef) error {
	var errs []error
	b.forgetLocalCopies(ref)
	for _, name := range []string{BootKernel, BootInitrd, BootCmdline} {
		errs = append(errs, b.removeBootObjects(ref, name))
	}
	return errors.Join(append(errs, b.files.DeleteVersion(ref))...)
}

// forgetLocalCopies forgets what ref's local copies were found to hold.
func (b *RBD) forgetLocalCopies(ref VersionRef) {
	b.boot.mu.Lock()
	defer b.boot.mu.Unlock()
	for _, name := range []string{BootKernel, BootInitrd, BootCmdline} {
		delete(b.boot.checked, bootKey{ref, name})
	}
}

// OpenBootFile implements Backend: the local copy when it is the pool's
// file, else the pool's file fetched into its place first (once, however
// many hosts ask at the same moment).
//
// The manifest is read at every open (one small object): a local copy
// outlives its version when another server deleted it, and an image
// deleted and made again numbers its versions from 1 again, so only the
// pool says which bytes ref names now. A boot file is of no use without
// the cluster anyway: the host's disk is in it.
func (b *RBD) OpenBootFile(ref VersionRef, name string) (*os.File, error) {
	if err := checkBootName(name); err != nil {
		return nil, err
	}
	m, err := b.readBootManifest(ref, name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("storage: version %s has no %s: %w", ref, name, os.ErrNotExist)
	}
	if err != nil {
		return nil, err
	}
	if !b.localCopyIs(ref, name, m.SHA256) {
		key := ref.String() + "/" + name + "/" + m.SHA256
		_, err, _ := b.boot.fetching.Do(key, func() (any, error) {
			return nil, b.fetchBootFile(ref, name, m)
		})
		if err != nil {
			return nil, err
		}
	}
	return b.files.OpenBootFile(ref, name)
}

// readBootManifest reads and checks ref's manifest of name; an error
// wrapping os.ErrNotExist when the pool has none.
func (b *RBD) readBootManifest(ref VersionRef, name string) (rbdBootManifest, error) {
	obj := rbdBootObject(ref, name)
	buf := make([]byte, rbdBootMaxManifest)
	n, err := b.ioctx.Read(obj, buf, 0)
	if errors.Is(err, rados.ErrNotFound) {
		return rbdBootManifest{}, fmt.Errorf("storage: %s: %w", obj, os.ErrNotExist)
	}
	if err != nil {
		return rbdBootManifest{}, fmt.Errorf("storage: read %s: %w", obj, radosErr(err))
	}
	var m rbdBootManifest
	if err := json.Unmarshal(buf[:n], &m); err != nil {
		return m, fmt.Errorf("storage: %s: bad manifest: %w", obj, err)
	}
	if m.PieceSize <= 0 || m.PieceSize > rbdBootMaxPiece || m.Size < 0 ||
		int64(len(m.Pieces)) != (m.Size+int64(m.PieceSize)-1)/int64(m.PieceSize) {
		return m, fmt.Errorf("storage: %s: bad manifest: %d bytes in %d pieces of %d", obj, m.Size, len(m.Pieces), m.PieceSize)
	}
	return m, nil
}

// localCopyIs reports whether the local copy of ref's file name has the
// SHA-256 sum, hashing it once per process.
func (b *RBD) localCopyIs(ref VersionRef, name, sum string) bool {
	k := bootKey{ref, name}
	b.boot.mu.Lock()
	got, ok := b.boot.checked[k]
	b.boot.mu.Unlock()
	if !ok {
		f, err := os.Open(b.files.bootPath(ref, name))
		if err != nil {
			return false
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return false
		}
		got = hex.EncodeToString(h.Sum(nil))
		b.boot.mu.Lock()
		b.boot.checked[k] = got
		b.boot.mu.Unlock()
	}
	return got == sum
}

// fetchBootFile copies the pool's file named by m into the local copy's
// place: into a temporary file, checked piece by piece and whole, made
// durable, then renamed over whatever was there. A damaged pool copy
// leaves nothing behind.
func (b *RBD) fetchBootFile(ref VersionRef, name string, m rbdBootManifest) (err error) {
	b.boot.fetches.Add(1)
	final := b.files.bootPath(ref, name)
	if err := os.MkdirAll(filepath.Dir(final), 0o700); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(final), "."+filepath.Base(final)+".fetch-*")
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			err = fmt.Errorf("storage: %s of %s from the pool: %w", name, ref, err)
		}
	}()
	whole := sha256.New()
	buf := make([]byte, m.PieceSize+1) // one more: a piece longer than the manifest says is damage too
	for i, want := range m.Pieces {
		obj := rbdBootPiece(ref, name, i)
		wantLen := min(int64(m.PieceSize), m.Size-int64(i)*int64(m.PieceSize))
		n, err := b.ioctx.Read(obj, buf, 0)
		if err != nil {
			return fmt.Errorf("read %s: %w", obj, radosErr(err))
		}
		piece := buf[:n]
		if int64(n) != wantLen {
			return fmt.Errorf("%s holds %d bytes, the manifest says %d: the pool's copy is damaged", obj, n, wantLen)
		}
		if got := sha256Hex(piece); got != want {
			return fmt.Errorf("%s has SHA-256 %s, the manifest says %s: the pool's copy is damaged", obj, got, want)
		}
		whole.Write(piece)
		if _, err := tmp.Write(piece); err != nil {
			return err
		}
	}
	if got := hex.EncodeToString(whole.Sum(nil)); got != m.SHA256 {
		return fmt.Errorf("SHA-256 %s, the manifest says %s: the pool's copy is damaged", got, m.SHA256)
	}
	if err := tmp.Chmod(0o444); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return err
	}
	b.boot.mu.Lock()
	b.boot.checked[bootKey{ref, name}] = m.SHA256
	b.boot.mu.Unlock()
	return syncDir(filepath.Dir(final))
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// radosErr names a timeout as such: librados fails a call with
// ETIMEDOUT after RBDOptions.OpTimeout.
func radosErr(err error) error {
	var e interface{ ErrorCode() int }
	if errors.As(err, &e) && e.ErrorCode() == -int(syscall.ETIMEDOUT) {
		return fmt.Errorf("the Ceph cluster did not answer within the op timeout: %w", err)
	}
	return err
}
