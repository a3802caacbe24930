//go:build ceph

package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ceph/go-ceph/rados"
	"github.com/ceph/go-ceph/rbd"
	"golang.org/x/sync/errgroup"

	"github.com/diskless-boot/diskless/internal/disk"
)

// RBD keeps versions and host disks as RBD images in one Ceph pool
// (docs/scale-out.md draws the layout):
//
//	diskless.v.<image>.<N>@v   a version: an image and its protected snapshot "v"
//	diskless.p.<image>.<N>     a version being written
//	diskless.h.<host>.<layer>  a host disk: a clone of a version's snapshot,
//	                           with the host's snapshots as RBD snapshots
//	diskless.h.<host>.raw      a raw disk diskless made (a flattened clone)
//
// Names split without ambiguity at the last dot: versions are numbers and
// layer ids never hold a dot. A host disk being served holds its image's
// exclusive lock (fencing, OpenDisk). The versions' boot files are RADOS
// objects diskless.b.<image>.<N>.<name>[.<piece>], with a copy under
// RBDOptions.DataDir on each server that serves them (rbd_bootfiles.go).
//
// It is safe for concurrent use.
type RBD struct {
	conn  *rados.Conn
	ioctx *rados.IOContext
	opts  RBDOptions
	log   *slog.Logger
	files *Local // local copies of boot files only
	boot  rbdBootFiles
	// clientID is the rados client's address (ClientID).
	clientID string

	// vmu guards versions, apart from mu: opening a version waits for
	// the cluster (up to op_timeout when it is degraded), and the open
	// disks' bookkeeping - a step-down closing every disk - must not
	// wait behind it.
	vmu      sync.Mutex
	versions map[VersionRef]*rbdShared
	mu       sync.Mutex
	open     map[string]*rbdOpen // nil value: being opened

	usage rbdUsage
}

type rbdShared struct {
	dev  *rbdDevice
	refs int
}

type rbdOpen struct {
	dev disk.Device
	rbd *rbdDevice // nil for an admin's raw file
	st  DiskState
}

const (
	rbdPrefix      = "diskless."
	rbdVersionSnap = "v"
	rbdFeatures    = rbd.FeatureLayering | rbd.FeatureExclusiveLock | rbd.FeatureObjectMap |
		rbd.FeatureFastDiff | rbd.FeatureDeepFlatten
	rbdCopyChunk = 4 << 20 // one RBD object
	rbdCopyDepth = 8       // chunks in flight while copying
)

func rbdVersionName(ref VersionRef) string {
	return fmt.Sprintf("%sv.%s.%d", rbdPrefix, ref.Image, ref.Version)
}

func rbdPartialName(ref VersionRef) string {
	return fmt.Sprintf("%sp.%s.%d", rbdPrefix, ref.Image, ref.Version)
}

func rbdDiskName(host, id string) string { return rbdPrefix + "h." + host + "." + id }

// rbdRawID names the raw disk diskless makes for a host.
const rbdRawID = "raw"

// OpenRBD connects to the cluster (bounded by OpTimeout) and opens the
// pool.
func OpenRBD(opts RBDOptions) (*RBD, error) {
	if opts.CephConf == "" {
		opts.CephConf = "/etc/ceph/ceph.conf"
	}
	if opts.User == "" {
		opts.User = "diskless"
	}
	if opts.OpTimeout <= 0 {
		opts.OpTimeout = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Pool == "" {
		return nil, errors.New("storage: rbd: no pool")
	}
	files, err := NewLocal(opts.DataDir, opts.Logger)
	if err != nil {
		return nil, err
	}
	conn, err := rados.NewConnWithUser(opts.User)
	if err != nil {
		return nil, fmt.Errorf("storage: rbd: %w", err)
	}
	fail := func(err error) (*RBD, error) {
		conn.Shutdown()
		return nil, fmt.Errorf("storage: rbd: %w", err)
	}
	if err := conn.ReadConfigFile(opts.CephConf); err != nil {
		return fail(fmt.Errorf("%s: %w", opts.CephConf, err))
	}
	if opts.Keyring != "" {
		if err := conn.SetConfigOption("keyring", opts.Keyring); err != nil {
			return fail(err)
		}
	}
	// Breaking a lock blocklists its owner before the new owner writes:
	// the fencing every takeover here relies on, whatever ceph.conf says.
	if err := conn.SetConfigOption("rbd_blocklist_on_break_lock", "true"); err != nil {
		return fail(err)
	}
	// A discard that does not cover whole objects zeroes what it covers
	// (librbd skips it by default), so an unmapped range reads zeros.
	if err := conn.SetConfigOption("rbd_skip_partial_discard", "false"); err != nil {
		return fail(err)
	}
	// librbd's default hands every I/O to its own work queue thread, so
	// that the caller never blocks (on a throttle, say). Here the
	// caller may wait - a goroutine per command, or a connection's reader,
	// which then stops reading as any full queue would - and the extra
	// thread hop cost ~10 % of the server's CPU on 4 KiB reads
	// (2026-12-05, six order-balanced pairs against tgt-rbd).
	if err := conn.SetConfigOption("rbd_non_blocking_aio", "false"); err != nil {
		return fail(err)
	}
	// The Objecter's in-flight throttle (by default 1024 operations,
	// 100 MiB) then waits on the submitting thread - for a READ, the
	// connection's reader, which would stop answering NOP-Outs and task
	// management for as long as a degraded cluster holds the operations
	// ahead of it (up to OpTimeout). The iSCSI target bounds what is in
	// flight itself (a CmdSN window per session, its buffer memory), so
	// this throttle is set out of its way.
	for k, v := range map[string]string{"objecter_inflight_ops": "1048576", "objecter_inflight_op_bytes": "1099511627776"} {
		if err := conn.SetConfigOption(k, v); err != nil {
			return fail(fmt.Errorf("%s: %w", k, err))
		}
	}
	secs := strconv.Itoa(int(math.Ceil(opts.OpTimeout.Seconds())))
	for _, k := range []string{"rados_osd_op_timeout", "rados_mon_op_timeout", "client_mount_timeout"} {
		if err := conn.SetConfigOption(k, secs); err != nil {
			return fail(fmt.Errorf("%s: %w", k, err))
		}
	}
	if err := conn.Connect(); err != nil {
		return fail(fmt.Errorf("connect as client.%s (%s): %w", opts.User, opts.CephConf, err))
	}
	ioctx, err := conn.OpenIOContext(opts.Pool)
	if err != nil {
		return fail(fmt.Errorf("pool %s: %w", opts.Pool, err))
	}
	ioctx.SetNamespace(opts.Namespace)
	addrs, err := conn.GetAddrs()
	if err != nil {
		ioctx.Destroy()
		return fail(fmt.Errorf("client address: %w", err))
	}
	b := &RBD{clientID: rbdClientAddr(addrs), conn: conn, ioctx: ioctx, opts: opts, log: opts.Logger, files: files,
		versions: map[VersionRef]*rbdShared{}, open: map[string]*rbdOpen{},
		boot: rbdBootFiles{pieceSize: rbdBootPieceSize, checked: map[bootKey]string{}}}
	reserveCallbackProcs(conn, opts.Logger)
	return b, nil
}

// callbackThreads is how many librbd threads complete I/O, and so call
// into Go: the rados client's io_context pool, which librbd enlarges to
// rbd_op_threads when that is more (librbd/AsioEngine.cc).
func callbackThreads(conn *rados.Conn) int {
	n := 0
	for _, k := range []string{"librados_thread_count", "rbd_op_threads"} {
		if v, err := conn.GetConfigOption(k); err == nil {
			if m, err := strconv.Atoi(v); err == nil {
				n = max(n, m)
			}
		}
	}
	return min(n, 64)
}

// callbackProcs adds Ps for librbd's completion threads once per process,
// however many clusters it connects to.
var callbackProcs sync.Once

// reserveCallbackProcs adds one Go P (scheduler slot) per librbd thread
// that completes I/O, once per process. Such a thread calls into Go for
// every completion and returns to C still holding a P; with GOMAXPROCS at
// the CPU count those are the Ps the connections' goroutines need, so
// Go's sysmon wakes every 20 µs to take them back and hand them on. With
// a P each they keep theirs between completions: 4 KiB QD32 reads cost
// a fifth to a quarter less server CPU (BENCHMARKS.md, 2026-12-06). More
// Ps than cores let more Go threads run at once than there are cores, as
// librbd's threads already do; the kernel shares the cores out. Setting
// GOMAXPROCS ends Go's own updates of it from a cgroup CPU limit; a
// GOMAXPROCS set in the environment is left as it is.
func reserveCallbackProcs(conn *rados.Conn, log *slog.Logger) {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	callbackProcs.Do(func() {
		threads := callbackThreads(conn)
		if threads < 1 {
			return
		}
		was := runtime.GOMAXPROCS(0)
		runtime.GOMAXPROCS(was + threads)
		if log != nil {
			log.Info("rbd: GOMAXPROCS raised for librbd's completion threads", "gomaxprocs", was+threads, "completion_threads", threads)
		}
	})
}

// ClientID is this server's identity as an RBD lock owner, as another
// server sees it: the address of its rados client, as librbd names lock
// owners ("10.0.0.5:0/3215774417"; the number after the slash is a nonce
// that makes every connection's unique). MayBreakLock is asked about
// these; servers publish theirs so that the others can tell a live
// owner from a dead one.
func (b *RBD) ClientID() string { return b.clientID }

// rbdClientAddr turns rados_getaddrs' "[v2:10.0.0.5:0/3215774417]" (or
// "any:" in place of "v2:") into the lock owner's form.
func rbdClientAddr(addrs string) string {
	a := strings.Trim(addrs, "[]")
	a, _, _ = strings.Cut(a, ",")
	if i := strings.IndexByte(a, ':'); i > 0 && !strings.Contains(a[:i], ".") {
		a = a[i+1:] // the "v2:" / "v1:" / "any:" type
	}
	return a
}

// Close closes the cluster connection; open disks should be closed first.
func (b *RBD) Close() error {
	b.ioctx.Destroy()
	b.conn.Shutdown()
	return nil
}

func (b *RBD) exists(name string) (bool, error) {
	img, err := rbd.OpenImageReadOnly(b.ioctx, name, rbd.NoSnapshot)
	if errors.Is(err, rbd.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("storage: rbd %s: %w", name, err)
	}
	img.Close()
	return true, nil
}

func newRBDOptions() *rbd.ImageOptions {
	o := rbd.NewRbdImageOptions()
	o.SetUint64(rbd.ImageOptionFeatures, rbdFeatures)
	return o
}

// VersionPath implements Backend: a version is no local file.
func (b *RBD) VersionPath(VersionRef) string { return "" }

// WriteVersion implements Backend: the version is written to a partial
// image (data ranges only: an RBD image reads zeros where nothing was
// written), flushed, snapshotted and the snapshot protected, then renamed
// into place, so a version image that exists is complete.
func (b *RBD) WriteVersion(ctx context.Context, ref VersionRef, size int64, src Source, progress Progress) error {
	if err := CheckName("image", ref.Image); err != nil {
		return err
	}
	final, partial := rbdVersionName(ref), rbdPartialName(ref)
	if ok, err := b.exists(final); err != nil || ok {
		return cmp(err, fmt.Errorf("storage: %s exists", ref))
	}
	if src != nil && src.Size() != size {
		return fmt.Errorf("storage: write %s: source holds %d bytes, want %d", ref, src.Size(), size)
	}
	if err := b.removeImage(partial); err != nil {
		return err
	}
	o := newRBDOptions()
	defer o.Destroy()
	if err := rbd.CreateImage(b.ioctx, partial, uint64(size), o); err != nil {
		return fmt.Errorf("storage: write %s: create %s: %w", ref, partial, err)
	}
	err := b.fill(ctx, partial, size, src, progress)
	if err == nil {
		err = b.snapProtect(partial, rbdVersionSnap)
	}
	if err == nil {
		err = rbd.GetImage(b.ioctx, partial).Rename(final)
	}
	if err != nil {
		if rerr := b.removeImage(partial); rerr != nil {
			b.log.Warn("rbd: partial version left behind", "image", partial, "err", rerr)
		}
		return fmt.Errorf("storage: write %s: %w", ref, err)
	}
	return nil
}

func cmp(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// fill writes src's data into the new image name, rbdCopyDepth chunks at
// a time, skipping zero ranges and all-zero chunks.
func (b *RBD) fill(ctx context.Context, name string, size int64, src Source, progress Progress) error {
	img, err := openRBDImage(b.ioctx, name, "", false)
	if err != nil {
		return err
	}
	dev := &rbdDevice{img: img, name: name, size: size}
	// Progress is called from one goroutine at a time, with a total that
	// only grows, as from a sequential copy.
	var mu sync.Mutex
	var done int64
	report := func(n int64) {
		mu.Lock()
		defer mu.Unlock()
		if done += n; progress != nil {
			progress(done)
		}
	}
	err = func() error {
		if src == nil {
			report(size)
			return nil
		}
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(rbdCopyDepth)
		pool := sync.Pool{New: func() any { return make([]byte, rbdCopyChunk) }}
		walk := sourceExtents(src, size)(func(off, length int64, zero bool) error {
			if zero {
				report(length)
				return nil
			}
			for end := off + length; off < end; {
				n := min(end-off, rbdCopyChunk-off%rbdCopyChunk)
				if err := gctx.Err(); err != nil {
					return err
				}
				o := off
				g.Go(func() error {
					buf := pool.Get().([]byte)[:n]
					defer pool.Put(buf[:cap(buf)])
					if _, err := src.ReadAt(buf, o); err != nil {
						return fmt.Errorf("read source at %d: %w", o, err)
					}
					if !allZero(buf) {
						if _, err := dev.WriteAt(buf, o); err != nil {
							return err
						}
					}
					report(n)
					return nil
				})
				off += n
			}
			return nil
		})
		return errors.Join(walk, g.Wait())
	}()
	if err == nil {
		err = dev.Flush()
	}
	return errors.Join(err, dev.Close())
}

func allZero(b []byte) bool {
	var zero [4096]byte
	for len(b) > 0 {
		n := min(len(b), len(zero))
		if !bytes.Equal(b[:n], zero[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// snapProtect snapshots image name as snap and protects the snapshot (a
// version's: clones are made of it).
func (b *RBD) snapProtect(name, snap string) error {
	img, err := rbd.OpenImage(b.ioctx, name, rbd.NoSnapshot)
	if err != nil {
		return err
	}
	defer img.Close()
	s, err := img.CreateSnapshot(snap)
	if err != nil {
		return fmt.Errorf("snapshot %s@%s: %w", name, snap, err)
	}
	if err := s.Protect(); err != nil {
		return fmt.Errorf("protect %s@%s: %w", name, snap, err)
	}
	return nil
}

// removeImage removes image name with its snapshots; a missing image is
// no error.
func (b *RBD) removeImage(name string) error {
	img, err := rbd.OpenImage(b.ioctx, name, rbd.NoSnapshot)
	if errors.Is(err, rbd.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("storage: rbd %s: %w", name, err)
	}
	snaps, err := img.GetSnapshotNames()
	for _, s := range snaps {
		if err != nil {
			break
		}
		sn := img.GetSnapshot(s.Name)
		if p, _ := sn.IsProtected(); p {
			err = sn.Unprotect()
		}
		if err == nil {
			err = sn.Remove()
		}
	}
	err = errors.Join(err, img.Close())
	if err == nil {
		err = rbd.RemoveImage(b.ioctx, name)
	}
	if errors.Is(err, rbd.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("storage: remove rbd %s: %w", name, err)
	}
	return nil
}

// OpenVersion implements Backend: all users share one read-only handle
// on the version's snapshot.
func (b *RBD) OpenVersion(ref VersionRef) (disk.Device, error) {
	b.vmu.Lock()
	defer b.vmu.Unlock()
	sv := b.versions[ref]
	if sv == nil {
		name := rbdVersionName(ref)
		img, err := openRBDImage(b.ioctx, name, rbdVersionSnap, true)
		if err != nil {
			return nil, fmt.Errorf("storage: version %s: %w", ref, err)
		}
		size, err := img.size()
		if err != nil {
			img.close()
			return nil, fmt.Errorf("storage: version %s: %w", ref, err)
		}
		sv = &rbdShared{dev: &rbdDevice{img: img, name: name + "@" + rbdVersionSnap, size: size, ro: true}}
		b.versions[ref] = sv
	}
	sv.refs++
	return &rbdVersionHandle{rbdDevice: sv.dev, b: b, ref: ref}, nil
}

// rbdVersionHandle is one user's hold on a shared version handle.
type rbdVersionHandle struct {
	*rbdDevice
	b      *RBD
	ref    VersionRef
	closed bool
}

func (h *rbdVersionHandle) Close() error {
	h.b.vmu.Lock()
	defer h.b.vmu.Unlock()
	if h.closed {
		return nil
	}
	h.closed = true
	sv := h.b.versions[h.ref]
	if sv == nil {
		return nil
	}
	if sv.refs--; sv.refs > 0 {
		return nil
	}
	delete(h.b.versions, h.ref)
	return sv.dev.Close()
}

// DeleteVersion implements Backend: refused while the version is open or
// a host disk is a clone of it.
func (b *RBD) DeleteVersion(ref VersionRef) error {
	b.vmu.Lock()
	if sv := b.versions[ref]; sv != nil && sv.refs > 0 {
		b.vmu.Unlock()
		return fmt.Errorf("%w: version %s is open", ErrDiskOpen, ref)
	}
	b.vmu.Unlock()
	name := rbdVersionName(ref)
	img, err := rbd.OpenImageReadOnly(b.ioctx, name, rbdVersionSnap)
	switch {
	case errors.Is(err, rbd.ErrNotFound):
	case err != nil:
		return fmt.Errorf("storage: version %s: %w", ref, err)
	default:
		_, children, err := img.ListChildren()
		img.Close()
		if err != nil {
			return fmt.Errorf("storage: version %s: children: %w", ref, err)
		}
		if len(children) > 0 {
			return fmt.Errorf("%w: version %s is the base of %s", ErrDiskOpen, ref, strings.Join(children, ", "))
		}
		if err := b.removeImage(name); err != nil {
			return err
		}
	}
	return b.deleteBootFiles(ref)
}

// CreateDisk implements Backend: an overlay disk is a clone of the
// version's snapshot (copy-on-write in the cluster), a raw copy a clone
// flattened (the cluster copies, not this server); an admin's rawPath is
// a local file or block device, used as is.
func (b *RBD) CreateDisk(ctx context.Context, host string, mode DiskMode, base VersionRef, rawPath string, progress Progress) (DiskState, error) {
	if err := CheckName("host", host); err != nil {
		return DiskState{}, err
	}
	switch mode {
	case Persistent, Volatile:
		if base.IsZero() {
			return DiskState{}, errors.New("storage: an overlay disk needs an image version")
		}
		st := DiskState{Mode: mode, Layers: map[string]Layer{}}
		st.Top = st.newLayer("", base)
		if err := b.ensureLayer(host, st, st.Top); err != nil {
			return DiskState{}, err
		}
		return st, nil
	case Raw:
		if rawPath != "" {
			return DiskState{Mode: Raw, RawPath: rawPath}, nil
		}
		if base.IsZero() {
			return DiskState{}, errors.New("storage: a raw disk needs an image version to copy or a file")
		}
		name := rbdDiskName(host, rbdRawID)
		if err := b.clone(base, name); err != nil {
			return DiskState{}, err
		}
		img, err := rbd.OpenImage(b.ioctx, name, rbd.NoSnapshot)
		if err == nil {
			err = img.Flatten()
			img.Close()
		}
		if err != nil {
			b.removeImage(name)
			return DiskState{}, fmt.Errorf("storage: copy %s for %s: %w", base, host, err)
		}
		if progress != nil {
			if size, err := b.imageSize(name); err == nil {
				progress(size)
			}
		}
		return DiskState{Mode: Raw, RawPath: "rbd:" + b.opts.Pool + "/" + name, Owned: true}, nil
	}
	return DiskState{}, fmt.Errorf("storage: disk mode %q", mode)
}

func (b *RBD) imageSize(name string) (int64, error) {
	img, err := rbd.OpenImageReadOnly(b.ioctx, name, rbd.NoSnapshot)
	if err != nil {
		return 0, err
	}
	defer img.Close()
	s, err := img.GetSize()
	return int64(s), err
}

// clone makes name a clone of version base's snapshot.
func (b *RBD) clone(base VersionRef, name string) error {
	o := newRBDOptions()
	defer o.Destroy()
	err := rbd.CloneImage(b.ioctx, rbdVersionName(base), rbdVersionSnap, b.ioctx, name, o)
	if errors.Is(err, rbd.ErrNotFound) {
		return fmt.Errorf("storage: version %s: %w", base, err)
	}
	if err != nil {
		return fmt.Errorf("storage: clone %s as %s: %w", base, name, err)
	}
	return nil
}

// ensureLayer makes layer id of host's disk (a clone of its base) unless
// it exists.
func (b *RBD) ensureLayer(host string, st DiskState, id string) error {
	name := rbdDiskName(host, id)
	ok, err := b.exists(name)
	if err != nil || ok {
		return err
	}
	return b.clone(st.Layers[id].Base, name)
}

// diskName is the image of the disk st (its top, or its raw copy).
func (b *RBD) diskName(host string, st DiskState) string { return rbdDiskName(host, diskID(st)) }

// diskID names the image of the disk st among the host's.
func diskID(st DiskState) string {
	if st.Mode == Raw {
		return rbdRawID
	}
	return st.Top
}

// OpenDisk implements Backend: the image is opened and its exclusive
// lock taken and kept. When another client holds it, MayBreakLock decides:
// if that owner is dead its lock is broken (Ceph blocklists it) and taken;
// otherwise the open fails with ErrDiskLocked naming the owner.
func (b *RBD) OpenDisk(host string, st DiskState, log *slog.Logger) (disk.Device, error) {
	b.mu.Lock()
	if _, ok := b.open[host]; ok {
		b.mu.Unlock()
		return nil, fmt.Errorf("%w: %s is already open", ErrDiskOpen, host)
	}
	b.open[host] = nil // reserved while opening, outside b.mu
	b.mu.Unlock()
	if log == nil {
		log = b.log
	}
	od, err := b.openDisk(host, st, log)
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil {
		delete(b.open, host)
		return nil, err
	}
	b.open[host] = od
	return od.dev, nil
}

func (b *RBD) openDisk(host string, st DiskState, log *slog.Logger) (*rbdOpen, error) {
	if st.Mode == Raw && !st.Owned {
		f, err := disk.OpenFileWith(st.RawPath, disk.FileOptions{Name: host, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("storage: disk of %s: %w", host, err)
		}
		return &rbdOpen{dev: f, st: st}, nil
	}
	if st.Mode != Raw {
		if err := b.ensureLayer(host, st, st.Top); err != nil {
			return nil, err
		}
	}
	name := b.diskName(host, st)
	img, err := openRBDImage(b.ioctx, name, "", false)
	if err != nil {
		return nil, fmt.Errorf("storage: disk of %s: %w", host, err)
	}
	if err := b.lock(host, name, img, log); err != nil {
		img.close()
		return nil, err
	}
	size, err := img.size()
	if err != nil {
		img.lockRelease()
		img.close()
		return nil, fmt.Errorf("storage: disk of %s: %w", host, err)
	}
	dev := &rbdDevice{img: img, name: name, size: size, locked: true, log: log}
	if err := dev.loadFailure(); err != nil {
		img.lockRelease()
		img.close()
		return nil, fmt.Errorf("storage: disk of %s: %w", host, err)
	}
	if f := dev.failed.Load(); f != nil {
		log.Warn("host disk opened failed: a flush of it failed and nobody cleared the error since", "host", host, "err", *f)
	}
	dev.onFenced = func(err error) {
		log.Error("host disk fenced: another server broke its lock; it refuses all I/O", "host", host, "err", err)
		if b.opts.OnFenced != nil {
			b.opts.OnFenced(host, err)
		}
	}
	return &rbdOpen{dev: dev, rbd: dev, st: st}, nil
}

// lock takes name's exclusive lock through img, breaking a dead owner's.
func (b *RBD) lock(host, name string, img *rbdImage, log *slog.Logger) error {
	owner, err := img.lockOwner()
	if err != nil {
		return fmt.Errorf("storage: disk of %s: lock owner of %s: %w", host, name, err)
	}
	if owner != "" {
		ok, why := false, "no policy allows breaking locks"
		if b.opts.MayBreakLock != nil {
			ok, why = b.opts.MayBreakLock(host, owner)
		}
		if ok {
			log.Warn("breaking the disk lock of a dead server; Ceph blocklists it", "host", host, "owner", owner, "why", why)
			if err := img.lockBreak(owner); err != nil && !errors.Is(err, syscall.ENOENT) {
				return fmt.Errorf("storage: disk of %s: break lock of %s: %w", host, owner, err)
			}
		} else {
			// The policy cannot tell the owner dead (no cluster, or a
			// member it takes for alive); Ceph still can: a client
			// whose watch expired stopped answering the cluster, and
			// librbd's acquisition below breaks its lock. This is how
			// a single server takes its disks back after its own
			// crash, ~30 s after it, as QEMU does with its images.
			watched, err := img.watchedBy(owner)
			if err != nil {
				return fmt.Errorf("storage: disk of %s: watchers of %s: %w", host, name, err)
			}
			if watched {
				return fmt.Errorf("%w: %s's disk %s is held by %s (%s; it is alive for Ceph: it watches the image)", ErrDiskLocked, host, name, owner, why)
			}
			log.Warn("the disk's lock is held by a client whose watch Ceph dropped (a dead server); librbd breaks it and Ceph blocklists that client",
				"host", host, "owner", owner, "why", why)
		}
	}
	if err := img.lockAcquire(); err != nil {
		if errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.EBUSY) {
			now, _ := img.lockOwner()
			return fmt.Errorf("%w: %s's disk %s is held by %s", ErrDiskLocked, host, name, now)
		}
		return fmt.Errorf("storage: disk of %s: lock %s: %w", host, name, err)
	}
	return nil
}

// CloseDisk implements Backend: flushes, releases the lock cleanly and
// closes the image.
func (b *RBD) CloseDisk(host string) error {
	b.mu.Lock()
	od := b.open[host]
	if od == nil {
		b.mu.Unlock()
		return nil
	}
	delete(b.open, host)
	b.mu.Unlock()
	return od.dev.Close()
}

func (b *RBD) opened(host string) *rbdOpen {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.open[host]
}

// DiskError implements Backend: the open disk's failure (a failed flush,
// or fenced). A failed flush is kept in the image's metadata until
// cleared (rbdFailedKey), so the disk opens failed again on any server;
// a closed disk reports it when it opens (nil until then: asking the
// cluster here would put a round trip, or a sick cluster's timeout, in
// every host listing). Fencing is this server's own: a new open takes the
// lock anew.
func (b *RBD) DiskError(host string, st DiskState) error {
	if od := b.opened(host); od != nil {
		if f, ok := od.dev.(disk.Failer); ok {
			return f.Err()
		}
	}
	return nil
}

// ClearDiskError implements Backend: an open disk must complete one more
// flush; a closed one loses its failure record (rbdFailedKey), as a
// closed local disk does, so its next open starts healthy.
func (b *RBD) ClearDiskError(host string, st DiskState) error {
	if od := b.opened(host); od != nil {
		if f, ok := od.dev.(disk.Failer); ok {
			if err := f.ClearError(); err != nil {
				return fmt.Errorf("storage: disk of %s: %w", host, err)
			}
		}
		return nil
	}
	if st.Mode == Raw && !st.Owned {
		return nil // a file outside the cluster: nothing recorded
	}
	err := b.withImage(host, diskID(st), func(img *rbdImage) error { return img.metadataRemove(rbdFailedKey) })
	if errors.Is(err, syscall.ENOENT) {
		return nil // never made: nothing recorded
	}
	if err != nil {
		return fmt.Errorf("storage: disk of %s: forget its failed flush: %w", host, err)
	}
	return nil
}

// withImage runs fn on a writable handle of host's image id: the open
// disk's when that is it (it holds the lock, so librbd runs snapshot
// operations there), else a handle of its own.
func (b *RBD) withImage(host, id string, fn func(*rbdImage) error) error {
	name := rbdDiskName(host, id)
	if od := b.opened(host); od != nil && od.rbd != nil && od.rbd.name == name {
		if err := od.rbd.begin(false); err != nil {
			return err
		}
		defer od.rbd.mu.RUnlock()
		return fn(od.rbd.img)
	}
	img, err := openRBDImage(b.ioctx, name, "", false)
	if err != nil {
		return fmt.Errorf("storage: rbd %s: %w", name, err)
	}
	return errors.Join(fn(img), img.close())
}

// Snapshot implements Backend: an RBD snapshot of the disk's image, taken
// now (librbd quiesces the open disk's I/O for it, so it is
// crash-consistent); the disk goes on writing the same image.
func (b *RBD) Snapshot(host string, st DiskState, name string, now time.Time, auto bool) (DiskState, error) {
	if err := overlayOnly(st); err != nil {
		return st, err
	}
	if err := CheckName("snapshot", name); err != nil {
		return st, err
	}
	if _, ok := st.Snapshot(name); ok {
		return st, fmt.Errorf("%w: %s", ErrSnapshotExists, name)
	}
	err := b.withImage(host, st.Top, func(img *rbdImage) error {
		err := img.snapCreate(name)
		if errors.Is(err, syscall.EEXIST) {
			// Left by a snapshot whose state was never committed, or
			// deleted and not pruned yet: no state names it.
			if err = img.snapRemove(name); err == nil {
				err = img.snapCreate(name)
			}
		}
		return err
	})
	if err != nil {
		return st, fmt.Errorf("storage: snapshot %s of %s: %w", name, host, err)
	}
	n := st.clone()
	n.Snapshots = append(n.Snapshots, Snapshot{Name: name, Created: now.UTC(), Layer: n.Top, Base: n.Layers[n.Top].Base, Auto: auto})
	return n, nil
}

// Sync implements Backend: snapshots are taken in place, nothing moves.
func (b *RBD) Sync(host string, st DiskState) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if od := b.open[host]; od != nil {
		od.st = st
	}
	return nil
}

// Rebase implements Backend: a new clone of base becomes the top; the old
// image stays while a snapshot keeps it.
func (b *RBD) Rebase(host string, st DiskState, base VersionRef) (DiskState, error) {
	if err := overlayOnly(st); err != nil {
		return st, err
	}
	if b.opened(host) != nil {
		return st, fmt.Errorf("%w: close %s's disk first", ErrDiskOpen, host)
	}
	n := st.clone()
	n.Top = n.newLayer("", base)
	n.gc()
	if err := b.ensureLayer(host, n, n.Top); err != nil {
		return st, err
	}
	return n, nil
}

// Rollback implements Backend: an RBD snapshot rollback of the image that
// holds the snapshot, which becomes the top again. It rewrites the image
// at once: the state the caller still holds loses what was written since.
func (b *RBD) Rollback(host string, st DiskState, name string) (DiskState, error) {
	if err := overlayOnly(st); err != nil {
		return st, err
	}
	sn, ok := st.Snapshot(name)
	if !ok {
		return st, fmt.Errorf("%w: %s", ErrNoSnapshot, name)
	}
	if b.opened(host) != nil {
		return st, fmt.Errorf("%w: close %s's disk first", ErrDiskOpen, host)
	}
	img, err := rbd.OpenImage(b.ioctx, rbdDiskName(host, sn.Layer), rbd.NoSnapshot)
	if err == nil {
		err = img.GetSnapshot(name).Rollback()
		if err == nil {
			// The image holds the snapshot's bytes again, not the ones a
			// failed flush may have lost: it starts healthy, as a
			// rollback of a local disk does.
			if rerr := img.RemoveMetadata(rbdFailedKey); rerr != nil && !errors.Is(rerr, rbd.ErrNotFound) {
				err = fmt.Errorf("forget its failed flush: %w", rerr)
			}
		}
		err = errors.Join(err, img.Close())
	}
	if err != nil {
		return st, fmt.Errorf("storage: rollback %s to %s: %w", host, name, err)
	}
	n := st.clone()
	n.Top = sn.Layer
	n.gc()
	return n, nil
}

// DeleteSnapshot implements Backend: the record goes now, the RBD
// snapshot (and an image only it kept) at Prune.
func (b *RBD) DeleteSnapshot(host string, st DiskState, name string) (DiskState, error) {
	if err := overlayOnly(st); err != nil {
		return st, err
	}
	if _, ok := st.Snapshot(name); !ok {
		return st, fmt.Errorf("%w: %s", ErrNoSnapshot, name)
	}
	n := st.clone()
	n.Snapshots = slices.DeleteFunc(n.Snapshots, func(s Snapshot) bool { return s.Name == name })
	n.gc()
	return n, nil
}

// hostImages lists host's images: layer id -> image name.
func (b *RBD) hostImages(host string) (map[string]string, error) {
	names, err := rbd.GetImageNames(b.ioctx)
	if err != nil {
		return nil, fmt.Errorf("storage: rbd list: %w", err)
	}
	out := map[string]string{}
	for _, n := range names {
		rest, ok := strings.CutPrefix(n, rbdPrefix+"h.")
		if !ok {
			continue
		}
		if i := strings.LastIndexByte(rest, '.'); i > 0 && rest[:i] == host {
			out[rest[i+1:]] = n
		}
	}
	return out, nil
}

// Prune implements Backend: images of host that st does not name are
// removed, and the RBD snapshots of the others that no snapshot of st
// names.
func (b *RBD) Prune(host string, st DiskState) error {
	b.usage.forget(host)
	if st.Mode == "" && b.opened(host) != nil {
		return fmt.Errorf("%w: %s", ErrDiskOpen, host)
	}
	imgs, err := b.hostImages(host)
	if err != nil {
		return err
	}
	var errs []error
	for id, name := range imgs {
		keep := false
		switch st.Mode {
		case Persistent, Volatile:
			_, keep = st.Layers[id]
		case Raw:
			keep = st.Owned && id == rbdRawID
		}
		if !keep {
			errs = append(errs, b.removeImage(name))
			continue
		}
		if st.Mode == Raw {
			continue
		}
		errs = append(errs, b.pruneSnapshots(host, st, id))
	}
	return errors.Join(errs...)
}

func (b *RBD) pruneSnapshots(host string, st DiskState, id string) error {
	img, err := rbd.OpenImageReadOnly(b.ioctx, rbdDiskName(host, id), rbd.NoSnapshot)
	if err != nil {
		return fmt.Errorf("storage: rbd %s: %w", rbdDiskName(host, id), err)
	}
	snaps, err := img.GetSnapshotNames()
	img.Close()
	if err != nil {
		return err
	}
	var gone []string
	for _, s := range snaps {
		if sn, ok := st.Snapshot(s.Name); !ok || sn.Layer != id {
			gone = append(gone, s.Name)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	return b.withImage(host, id, func(img *rbdImage) error {
		var errs []error
		for _, s := range gone {
			if err := img.snapRemove(s); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("storage: remove snapshot %s of %s: %w", s, host, err))
			}
		}
		return errors.Join(errs...)
	})
}

// CopyDisk implements Backend: the data is read from the disk's image (or
// its snapshot) and written into a new version image: promote flattens,
// the new version depends on nothing of the host's.
func (b *RBD) CopyDisk(ctx context.Context, host string, st DiskState, snapshot string, dst VersionRef, progress Progress) error {
	if st.Mode == Raw && !st.Owned {
		f, err := disk.OpenFile(st.RawPath, true)
		if err != nil {
			return err
		}
		defer f.Close()
		return b.WriteVersion(ctx, dst, f.Size(), f, progress)
	}
	name, snap := b.diskName(host, st), ""
	if snapshot != "" {
		if st.Mode == Raw {
			return fmt.Errorf("%w: %s", ErrNoSnapshot, snapshot)
		}
		sn, ok := st.Snapshot(snapshot)
		if !ok {
			return fmt.Errorf("%w: %s", ErrNoSnapshot, snapshot)
		}
		name, snap = rbdDiskName(host, sn.Layer), snapshot
	} else if b.opened(host) != nil {
		// A disk being written is never copied: the copy would mix
		// its state before and after writes made during it.
		return fmt.Errorf("%w: close %s's disk before copying it", ErrDiskOpen, host)
	}
	img, err := openRBDImage(b.ioctx, name, snap, true)
	if err != nil {
		return fmt.Errorf("storage: copy %s: %w", host, err)
	}
	size, err := img.size()
	if err != nil {
		img.close()
		return fmt.Errorf("storage: copy %s: %w", host, err)
	}
	dev := &rbdDevice{img: img, name: name, size: size, ro: true}
	defer dev.Close()
	return b.WriteVersion(ctx, dst, size, dev, progress)
}

// Check implements Backend: each image exists and is a clone of the
// version the state says, each snapshot exists, and an open disk still
// holds its lock.
func (b *RBD) Check(host string, st DiskState) (CheckReport, error) {
	rep := CheckReport{OK: true}
	add := func(p CheckedPart) {
		rep.Parts = append(rep.Parts, p)
		rep.OK = rep.OK && p.OK
	}
	if st.Mode == Raw && !st.Owned {
		fi, err := os.Stat(st.RawPath)
		if err != nil {
			add(CheckedPart{Name: st.RawPath, Detail: err.Error()})
		} else {
			add(CheckedPart{Name: st.RawPath, OK: true, Detail: fmt.Sprintf("raw, %d bytes", fi.Size())})
		}
		return rep, nil
	}
	ids := []string{rbdRawID}
	if st.Mode != Raw {
		ids = slices.Sorted(maps.Keys(st.Layers))
	}
	for _, id := range ids {
		name := rbdDiskName(host, id)
		p := CheckedPart{Name: "image " + name}
		img, err := rbd.OpenImageReadOnly(b.ioctx, name, rbd.NoSnapshot)
		if err != nil {
			p.Detail = err.Error()
			add(p)
			continue
		}
		size, _ := img.GetSize()
		p.OK, p.Detail = true, fmt.Sprintf("%d bytes", size)
		if st.Mode != Raw {
			want := rbdVersionName(st.Layers[id].Base) + "@" + rbdVersionSnap
			par, err := img.GetParent()
			got := ""
			if err == nil {
				got = par.Image.ImageName + "@" + par.Snap.SnapName
			}
			if got != want {
				p.OK = false
				p.Detail += fmt.Sprintf("; parent %q, store says %q", got, want)
			} else {
				p.Detail += ", clone of " + want
			}
			snaps, _ := img.GetSnapshotNames()
			for _, sn := range st.Snapshots {
				if sn.Layer == id && !slices.ContainsFunc(snaps, func(s rbd.SnapInfo) bool { return s.Name == sn.Name }) {
					p.OK = false
					p.Detail += fmt.Sprintf("; snapshot %s missing", sn.Name)
				}
			}
		}
		img.Close()
		if od := b.opened(host); od != nil && od.rbd != nil && od.rbd.name == name {
			owner, err := od.rbd.img.isLockOwner()
			switch {
			case err != nil:
				p.OK, p.Detail = false, p.Detail+"; lock: "+err.Error()
			case !owner:
				p.OK, p.Detail = false, p.Detail+"; open here but this server no longer holds its lock"
			default:
				p.Detail += ", open, locked by this server (" + b.ClientID() + ")"
			}
		}
		add(p)
	}
	return rep, nil
}

// Usage implements Backend: what the host's images hold themselves, not
// their parent version (rbd du: whole objects, from the object map). It
// opens every image of the host and walks its object map, so it answers
// from a cache (rbd_usage.go): a listing of many hosts, or one while the
// cluster is degraded, must not wait for the cluster.
func (b *RBD) Usage(host string, st DiskState) (int64, error) {
	return b.usage.get(host, st, b.measureUsage)
}

// measureUsage is Usage measured now.
func (b *RBD) measureUsage(host string, st DiskState) (int64, error) {
	if st.Mode == Raw && !st.Owned {
		var s syscall.Stat_t
		if err := syscall.Stat(st.RawPath, &s); err != nil {
			return 0, err
		}
		return s.Blocks * 512, nil
	}
	ids := []string{rbdRawID}
	if st.Mode != Raw {
		ids = slices.Collect(maps.Keys(st.Layers))
	}
	var total int64
	for _, id := range ids {
		img, err := rbd.OpenImageReadOnly(b.ioctx, rbdDiskName(host, id), rbd.NoSnapshot)
		if err != nil {
			return 0, fmt.Errorf("storage: usage of %s: %w", host, err)
		}
		size, err := img.GetSize()
		if err == nil {
			err = img.DiffIterate(rbd.DiffIterateConfig{Length: size, IncludeParent: rbd.ExcludeParent,
				WholeObject: rbd.EnableWholeObject, Callback: func(off, n uint64, exists int, _ any) int {
					if exists != 0 {
						total += int64(n)
					}
					return 0
				}})
		}
		img.Close()
		if err != nil {
			return 0, fmt.Errorf("storage: usage of %s: %w", host, err)
		}
	}
	return total, nil
}

var _ Backend = (*RBD)(nil)
