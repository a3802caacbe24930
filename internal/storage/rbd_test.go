//go:build ceph

package storage

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/disk"
	"github.com/diskless-boot/diskless/internal/scsi"
	"github.com/diskless-boot/diskless/internal/testutil/ceph"
)

func TestMain(m *testing.M) {
	code := m.Run()
	ceph.StopShared()
	os.Exit(code)
}

var rbdNS atomic.Int64

// newRBD opens an RBD backend on the shared cluster in a namespace of its
// own (so tests never see each other's images); opts' pool and
// credentials are filled in. With ns "", a new namespace is made.
func newRBD(t *testing.T, c *ceph.Cluster, ns string, opts RBDOptions) *RBD {
	t.Helper()
	if ns == "" {
		ns = fmt.Sprintf("t%d-%d", os.Getpid(), rbdNS.Add(1))
		if _, err := c.RBD(t.Context(), "namespace", "create", c.Pool+"/"+ns); err != nil {
			t.Fatal(err)
		}
	}
	opts.Pool, opts.Namespace, opts.CephConf, opts.User, opts.Keyring = c.Pool, ns, c.Conf, c.User, c.Keyring
	if opts.DataDir == "" {
		opts.DataDir = t.TempDir()
	}
	b, err := OpenRBD(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// pcSize is the size of the disks newPC makes.
const pcSize = 8 << 20

// newPC makes version image/1 of pcSize bytes, every byte fill, in b and
// the persistent host disk "pc" on it.
func newPC(t *testing.T, b *RBD, image string, fill byte) DiskState {
	t.Helper()
	const size = pcSize
	ref := VersionRef{Image: image, Version: 1}
	var src Source
	if fill != 0 {
		src = bytes.NewReader(bytes.Repeat([]byte{fill}, size))
	}
	if err := b.WriteVersion(t.Context(), ref, size, src, nil); err != nil {
		t.Fatal(err)
	}
	st, err := b.CreateDisk(t.Context(), "pc", Persistent, ref, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// openPC opens b's disk "pc"; the caller closes it.
func openPC(t *testing.T, b *RBD, st DiskState) disk.Device {
	t.Helper()
	d, err := b.OpenDisk("pc", st, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// stopOSD stops c's OSD until the returned function starts it again; a
// test that ends before that leaves it started.
func stopOSD(t *testing.T, c *ceph.Cluster) (start func()) {
	t.Helper()
	if err := c.StopOSD(); err != nil {
		t.Fatal(err)
	}
	up := false
	t.Cleanup(func() {
		if !up {
			c.StartOSD()
		}
	})
	return func() {
		t.Helper()
		if err := c.StartOSD(); err != nil {
			t.Fatal(err)
		}
		up = true
	}
}

func TestRBDConformance(t *testing.T) {
	c := ceph.Shared(t)
	runBackendSuite(t, func(t *testing.T) Backend { return newRBD(t, c, "", RBDOptions{}) })
}

// procsAtStart is GOMAXPROCS before any test opened a cluster.
var procsAtStart = runtime.GOMAXPROCS(0)

// Opening a cluster adds one Go P per librbd completion thread, once per
// process (reserveCallbackProcs), unless GOMAXPROCS is set.
func TestRBDCallbackProcs(t *testing.T) {
	if os.Getenv("GOMAXPROCS") != "" {
		t.Skip("GOMAXPROCS is set in the environment: left as it is")
	}
	if f := flag.Lookup("test.cpu"); f != nil && f.Value.String() != "" {
		t.Skip("-cpu sets GOMAXPROCS for each run")
	}
	c := ceph.Shared(t)
	b := newRBD(t, c, "", RBDOptions{})
	newRBD(t, c, "", RBDOptions{})
	threads := callbackThreads(b.conn)
	if threads < 1 {
		t.Fatalf("%d librbd completion threads", threads)
	}
	if got := runtime.GOMAXPROCS(0); got != procsAtStart+threads {
		t.Fatalf("GOMAXPROCS %d, want %d + %d completion threads", got, procsAtStart, threads)
	}
}

// rbdInfo is `rbd info` / `rbd du` of an image of b's namespace.
func rbdCLI(t *testing.T, c *ceph.Cluster, b *RBD, args ...string) string {
	t.Helper()
	args = append(args, "--namespace", b.opts.Namespace, "--pool", c.Pool)
	out, err := c.RBD(t.Context(), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A persistent host disk is a clone of the version's snapshot: it has the
// version as its parent and holds only what the host wrote, never a full
// copy; deleting the version is refused while the clone exists.
func TestRBDDiskIsClone(t *testing.T) {
	c := ceph.Shared(t)
	b := newRBD(t, c, "", RBDOptions{})
	ctx := t.Context()
	ref := VersionRef{Image: "deb", Version: 1}
	data := bytes.Repeat([]byte{7}, 32<<20)
	if err := b.WriteVersion(ctx, ref, int64(len(data)), bytes.NewReader(data), nil); err != nil {
		t.Fatal(err)
	}
	st, err := b.CreateDisk(ctx, "pc1", Persistent, ref, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := b.OpenDisk("pc1", st, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(bytes.Repeat([]byte{9}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	d.Flush()
	name := rbdDiskName("pc1", st.Top)
	info := rbdCLI(t, c, b, "info", name)
	if !strings.Contains(info, "parent: "+c.Pool+"/"+b.opts.Namespace+"/"+rbdVersionName(ref)+"@v") {
		t.Errorf("host disk is not a clone of the version:\n%s", info)
	}
	du := rbdCLI(t, c, b, "du", name, "--format", "json")
	// One 4 MiB object written, not the 32 MiB of the version.
	if !strings.Contains(du, `"used_size":4194304`) {
		t.Errorf("rbd du of the clone: %s, want 4 MiB used", du)
	}
	if u, err := b.Usage("pc1", st); err != nil || u != 4<<20 {
		t.Errorf("usage %d %v, want 4 MiB", u, err)
	}
	b.CloseDisk("pc1")
	if err := b.DeleteVersion(ref); !errors.Is(err, ErrDiskOpen) {
		t.Errorf("delete of a version a disk clones: %v, want ErrDiskOpen", err)
	}
	raw, err := b.CreateDisk(ctx, "pc2", Raw, ref, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if info := rbdCLI(t, c, b, "info", rbdDiskName("pc2", rbdRawID)); strings.Contains(info, "parent:") {
		t.Errorf("raw copy still has a parent:\n%s", info)
	}
	if err := b.Prune("pc1", DiskState{}); err != nil {
		t.Fatal(err)
	}
	if err := b.Prune("pc2", DiskState{}); err != nil {
		t.Fatal(err)
	}
	_ = raw
	if err := b.DeleteVersion(ref); err != nil {
		t.Fatal(err)
	}
}

// Random concurrent writes, reads, unmaps and write-zeroes through the
// device match a model of the disk, and survive a reopen.
func TestRBDDeviceModel(t *testing.T) {
	c := ceph.Shared(t)
	b := newRBD(t, c, "", RBDOptions{})
	ctx := t.Context()
	const size = 16 << 20
	base := make([]byte, size)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range base {
		base[i] = byte(rng.Uint32())
	}
	ref := VersionRef{Image: "m", Version: 1}
	if err := b.WriteVersion(ctx, ref, size, bytes.NewReader(base), nil); err != nil {
		t.Fatal(err)
	}
	st, err := b.CreateDisk(ctx, "m1", Persistent, ref, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := b.OpenDisk("m1", st, nil)
	if err != nil {
		t.Fatal(err)
	}
	model := bytes.Clone(base)
	// 8 workers on disjoint 2 MiB regions, so the model needs no order.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			lo := int64(w) * (size / 8)
			for range 60 {
				n := int64(r.IntN(64)+1) * 4096
				off := lo + int64(r.IntN(int(size/8-n)/4096))*4096
				switch r.IntN(6) {
				case 0, 1:
					p := make([]byte, n)
					for i := range p {
						p[i] = byte(r.Uint32())
					}
					if _, err := d.WriteAt(p, off); err != nil {
						errs <- err
						return
					}
					copy(model[off:], p)
				case 2:
					if err := d.(disk.Unmapper).Unmap(off, n); err != nil {
						errs <- err
						return
					}
					clear(model[off : off+n])
				case 3:
					p := make([]byte, n)
					if _, err := d.ReadAt(p, off); err != nil {
						errs <- err
						return
					}
					if !bytes.Equal(p, model[off:off+n]) {
						errs <- fmt.Errorf("read at %d+%d differs from the model", off, n)
						return
					}
				case 4:
					data, release, err := d.(disk.Lender).ReadLent(make([]byte, n), off)
					if err != nil {
						errs <- err
						return
					}
					same := bytes.Equal(data, model[off:off+n])
					if release != nil {
						release()
					}
					if !same {
						errs <- fmt.Errorf("lent read at %d+%d differs from the model", off, n)
						return
					}
				case 5:
					// Five reads at once - four pieces of the range, and
					// 128 KiB at the region's start, large enough to be
					// lent - each ended by one call of its done, on
					// librbd's thread (disk.AsyncReader).
					ends := make(chan error, 10)
					read := func(at, q int64, lend bool) {
						d.(disk.AsyncReader).ReadAsync(make([]byte, q), at, lend, func(data []byte, release func(), err error) {
							if err == nil && !bytes.Equal(data, model[at:at+q]) {
								err = fmt.Errorf("async read at %d+%d differs from the model", at, q)
							}
							if release != nil {
								release()
							}
							ends <- err
						})
					}
					q := n / 4
					for i := range int64(4) {
						read(off+i*q, q, i%2 == 1)
					}
					read(lo, 128<<10, true)
					for range 5 {
						if err := <-ends; err != nil {
							errs <- err
							return
						}
					}
					if len(ends) != 0 {
						errs <- errors.New("an async read's done was called twice")
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// An unmap inside one object, not 64 KiB aligned: zeros too.
	if err := d.(disk.Unmapper).Unmap(4096, 8192); err != nil {
		t.Fatal(err)
	}
	clear(model[4096 : 4096+8192])
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	check := func(what string, d disk.Device) {
		got := make([]byte, size)
		if _, err := d.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, model) {
			t.Fatalf("%s: disk differs from the model", what)
		}
	}
	check("open", d)
	if err := b.CloseDisk("m1"); err != nil {
		t.Fatal(err)
	}
	d, err = b.OpenDisk("m1", st, nil)
	if err != nil {
		t.Fatal(err)
	}
	check("reopened", d)
	// A read of an object written whole comes lent, in one of librbd's
	// buffers, and stays valid after the disk closed, until released; one
	// across objects arrives in pieces and is copied into the buffer.
	whole := make([]byte, 4<<20)
	for i := range whole {
		whole[i] = byte(rng.Uint32())
	}
	if _, err := d.WriteAt(whole, 8<<20); err != nil {
		t.Fatal(err)
	}
	copy(model[8<<20:], whole)
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 1<<20)
	lent, release, err := d.(disk.Lender).ReadLent(p, 9<<20)
	if err != nil || release == nil || &lent[0] == &p[0] || len(lent) != len(p) {
		t.Fatalf("lent read of a whole object: release %v, in the caller's buffer %v, %v", release != nil, err == nil && &lent[0] == &p[0], err)
	}
	across, rel2, err := d.(disk.Lender).ReadLent(p, 4<<20-512<<10)
	if err != nil || rel2 != nil || !bytes.Equal(across, model[4<<20-512<<10:4<<20+512<<10]) {
		t.Fatalf("lent read across objects: release %v, equal %v, %v", rel2 != nil, err == nil && bytes.Equal(across, model[4<<20-512<<10:4<<20+512<<10]), err)
	}
	b.CloseDisk("m1")
	if !bytes.Equal(lent, model[9<<20:10<<20]) {
		t.Fatal("lent bytes differ from the model after the disk closed")
	}
	release()
	if _, _, err := d.(disk.Lender).ReadLent(p, 0); err == nil {
		t.Fatal("lent read of a closed disk worked")
	}
	// Refused before it reaches librbd: done is called at once.
	called := 0
	d.(disk.AsyncReader).ReadAsync(p, 0, false, func(_ []byte, _ func(), err error) {
		called++
		if err == nil {
			t.Error("async read of a closed disk worked")
		}
	})
	if called != 1 {
		t.Fatalf("async read of a closed disk: done called %d times before it returned", called)
	}
}

// Two servers (two rados clients) on one host disk: the second cannot
// open it while the first holds it; allowed to break the lock, it takes
// the disk, the first is fenced at its next write (disk.ErrFenced, and
// OnFenced once) and never writes again.
func TestRBDLockFencing(t *testing.T) {
	c := ceph.Shared(t)
	fenced := make(chan string, 4)
	a := newRBD(t, c, "", RBDOptions{OnFenced: func(host string, err error) {
		if !errors.Is(err, disk.ErrFenced) {
			t.Errorf("OnFenced with %v, want ErrFenced", err)
		}
		fenced <- host
	}})
	st := newPC(t, a, "f", 0)
	da := openPC(t, a, st)
	if _, err := da.WriteAt(bytes.Repeat([]byte{1}, 4096), 0); err != nil {
		t.Fatal(err)
	}

	var asked []string
	b := newRBD(t, c, a.opts.Namespace, RBDOptions{MayBreakLock: func(host, owner string) (bool, string) {
		asked = append(asked, owner)
		return false, "its lease is alive"
	}})
	t.Logf("servers' client ids: %s and %s", a.ClientID(), b.ClientID())
	if a.ClientID() == b.ClientID() {
		t.Fatalf("two servers with one client id %s", a.ClientID())
	}
	_, err := b.OpenDisk("pc", st, nil)
	if !errors.Is(err, ErrDiskLocked) || !strings.Contains(err.Error(), a.ClientID()) {
		t.Fatalf("open of a disk another server holds: %v, want ErrDiskLocked naming %s", err, a.ClientID())
	}
	if len(asked) != 1 || asked[0] != a.ClientID() {
		t.Errorf("policy asked about %q, want [%s]", asked, a.ClientID())
	}
	// a still serves it.
	if _, err := da.WriteAt(bytes.Repeat([]byte{2}, 4096), 0); err != nil {
		t.Fatal(err)
	}

	b.opts.MayBreakLock = func(host, owner string) (bool, string) { return owner == a.ClientID(), "its lease expired" }
	t0 := time.Now()
	db, err := b.OpenDisk("pc", st, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("lock broken and taken in %v", time.Since(t0))
	got := make([]byte, 4096)
	if _, err := db.ReadAt(got, 0); err != nil || got[0] != 2 {
		t.Fatalf("new owner reads %d %v, want the old owner's last write (2)", got[0], err)
	}
	if _, err := db.WriteAt(bytes.Repeat([]byte{3}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}

	// The old owner's next write fails, fenced, and so does all it does after.
	_, err = da.WriteAt(bytes.Repeat([]byte{4}, 4096), 0)
	if !errors.Is(err, disk.ErrFenced) {
		t.Fatalf("write of the fenced server: %v, want ErrFenced", err)
	}
	for _, err := range []error{func() error { _, err := da.ReadAt(got, 0); return err }(), da.Flush(), a.DiskError("pc", st)} {
		if !errors.Is(err, disk.ErrFenced) {
			t.Errorf("after fencing: %v, want ErrFenced", err)
		}
	}
	select {
	case h := <-fenced:
		if h != "pc" {
			t.Errorf("OnFenced(%q)", h)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("OnFenced not called")
	}
	select {
	case <-fenced:
		t.Error("OnFenced called twice")
	case <-time.After(200 * time.Millisecond):
	}
	a.CloseDisk("pc")
	if _, err := db.ReadAt(got, 0); err != nil || got[0] != 3 {
		t.Errorf("new owner reads %d %v, want its own write (3): the fenced server wrote over it", got[0], err)
	}
	if err := b.CloseDisk("pc"); err != nil {
		t.Fatal(err)
	}
	// Released cleanly: a third server opens it without breaking anything.
	c3 := newRBD(t, c, a.opts.Namespace, RBDOptions{})
	if _, err := c3.OpenDisk("pc", st, nil); err != nil {
		t.Fatalf("open after a clean release: %v", err)
	}
	c3.CloseDisk("pc")
}

// A client that died holding a disk's lock (a crashed server; here a
// SIGKILLed `rbd bench`) keeps the lock but loses its watch once Ceph
// stops hearing from it (osd_client_watch_timeout, 5 s in the test
// cluster). With no policy that may break it, OpenDisk refuses at once
// while the owner still watches the image - no wait on a dead peer - and
// takes the disk over when it does not: librbd breaks the lock and Ceph
// blocklists the dead client. This is how a single server (no cluster)
// gets its disks back after its own crash.
func TestRBDLockOfDeadClient(t *testing.T) {
	c := ceph.Shared(t)
	b := newRBD(t, c, "", RBDOptions{})
	ctx := t.Context()
	st := newPC(t, b, "d", 0)
	spec := c.Pool + "/" + b.opts.Namespace + "/" + b.diskName("pc", st)
	bench, err := c.StartRBD(t, "bench", "--io-type", "write", "--io-size", "4096", "--io-threads", "1",
		"--io-total", "100G", "--io-pattern", "rand", spec)
	if err != nil {
		t.Fatal(err)
	}
	var owner string
	for deadline := time.Now().Add(30 * time.Second); owner == ""; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("rbd bench took no lock on %s: %s", spec, bench.Output())
		}
		out, err := c.RBD(ctx, "lock", "ls", "--format", "json", spec)
		if err != nil {
			t.Fatal(err)
		}
		var locks []struct{ Address string }
		if err := json.Unmarshal([]byte(out), &locks); err != nil {
			t.Fatalf("rbd lock ls: %v: %s", err, out)
		}
		if len(locks) == 1 {
			owner = locks[0].Address
		}
	}
	bench.Kill()
	killed := time.Now()

	_, err = b.OpenDisk("pc", st, nil)
	if since := time.Since(killed); since < 4*time.Second {
		if !errors.Is(err, ErrDiskLocked) || !strings.Contains(err.Error(), "watches the image") {
			t.Fatalf("open %v after the owner died, its watch still alive: %v, want ErrDiskLocked (it watches the image)", since, err)
		}
		t.Logf("refused %v after the owner's death, in the watch's lifetime: %v", since.Round(time.Millisecond), err)
	} else if err == nil {
		b.CloseDisk("pc")
		t.Logf("the first open came %v after the death (a slow machine): the refusal was not checked", since)
	}
	var dev disk.Device
	for dev == nil {
		if time.Since(killed) > time.Minute {
			t.Fatalf("disk of a dead owner not taken over a minute after its death: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
		if dev, err = b.OpenDisk("pc", st, nil); err != nil && !errors.Is(err, ErrDiskLocked) {
			t.Fatal(err)
		}
	}
	t.Logf("taken over %v after the owner's death", time.Since(killed).Round(100*time.Millisecond))
	if _, err := dev.WriteAt(bytes.Repeat([]byte{7}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := dev.Flush(); err != nil {
		t.Fatal(err)
	}
	out, err := c.Ceph(ctx, "osd", "blocklist", "ls")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, owner) {
		t.Errorf("the dead owner %s is not blocklisted:\n%s", owner, out)
	}
	if err := b.CloseDisk("pc"); err != nil {
		t.Fatal(err)
	}
}

// A failed flush of an RBD host disk is kept in the image's metadata: the
// record reaches the cluster once it is back (the cluster is down here
// when the flush fails, as it usually is), a reopen (a restarted server,
// another server after a failover) opens the disk failed, and only
// ClearDiskError - after one more flush that works - returns it to
// service, for this open and the next. A flush with nothing to write does
// not fail on this cluster even with its OSD down (librbd completes it
// at once), so the failure is the device's own path, flushFailed, with
// the OSD stopped; TestDegradedCluster (internal/app) sees a real
// SYNCHRONIZE CACHE fail.
func TestRBDFailedFlushKept(t *testing.T) {
	c := ceph.Shared(t)
	b := newRBD(t, c, "", RBDOptions{OpTimeout: 3 * time.Second})
	ctx := t.Context()
	st := newPC(t, b, "k", 0)
	d := openPC(t, b, st)
	block := bytes.Repeat([]byte{9}, 4096)
	if _, err := d.WriteAt(block, 0); err != nil {
		t.Fatal(err)
	}
	startOSD := stopOSD(t, c)
	d.(*rbdDevice).flushFailed(fmt.Errorf("rbd test: flush: %w", syscall.ETIMEDOUT))
	if !errors.Is(b.DiskError("pc", st), disk.ErrDeviceFailed) {
		t.Fatalf("after a failed flush: %v, want ErrDeviceFailed", b.DiskError("pc", st))
	}
	if _, err := d.WriteAt(block, 0); !errors.Is(err, disk.ErrDeviceFailed) {
		t.Fatalf("write after a failed flush: %v, want ErrDeviceFailed", err)
	}
	time.Sleep(2 * rbdKeepRetry) // the record cannot reach the cluster yet
	startOSD()
	spec := c.Pool + "/" + b.opts.Namespace + "/" + b.diskName("pc", st)
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
		out, _ := c.RBD(ctx, "image-meta", "list", spec)
		if strings.Contains(out, rbdFailedKey) {
			t.Logf("recorded in the image once the OSD was back:\n%s", out)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the failed flush is not in %s's metadata a minute after the OSD returned: %q", spec, out)
		}
	}
	if err := b.CloseDisk("pc"); err != nil && !errors.Is(err, disk.ErrDeviceFailed) {
		t.Logf("close: %v", err)
	}

	d = openPC(t, b, st)
	if _, err := d.WriteAt(block, 0); !errors.Is(err, disk.ErrDeviceFailed) {
		t.Fatalf("write after reopening a disk whose flush failed: %v, want ErrDeviceFailed", err)
	}
	if err := b.DiskError("pc", st); !errors.Is(err, disk.ErrDeviceFailed) || !strings.Contains(err.Error(), "nobody cleared") {
		t.Fatalf("DiskError after the reopen: %v", err)
	}
	if err := b.ClearDiskError("pc", st); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(block, 0); err != nil {
		t.Fatalf("write after the error was cleared: %v", err)
	}
	if out, _ := c.RBD(ctx, "image-meta", "list", spec); strings.Contains(out, rbdFailedKey) {
		t.Fatalf("the record stayed after the clear: %s", out)
	}
	if err := b.CloseDisk("pc"); err != nil {
		t.Fatal(err)
	}
	// A record nobody can parse still fails the disk, saying so.
	if _, err := c.RBD(ctx, "image-meta", "set", spec, rbdFailedKey, "garbage"); err != nil {
		t.Fatal(err)
	}
	d = openPC(t, b, st)
	if err := b.DiskError("pc", st); !errors.Is(err, disk.ErrDeviceFailed) || !strings.Contains(err.Error(), "failure record unreadable: garbage") {
		t.Fatalf("DiskError with an unreadable record: %v", err)
	}
	if err := b.CloseDisk("pc"); err != nil && !errors.Is(err, disk.ErrDeviceFailed) {
		t.Fatal(err)
	}
	// A closed disk's record (another server's, say) is cleared without
	// opening the disk.
	if _, err := c.RBD(ctx, "image-meta", "set", spec, rbdFailedKey, `{"error":"another server's flush: EIO"}`); err != nil {
		t.Fatal(err)
	}
	if err := b.ClearDiskError("pc", st); err != nil {
		t.Fatalf("clear of a closed disk: %v", err)
	}
	d = openPC(t, b, st)
	defer b.CloseDisk("pc")
	if err := b.DiskError("pc", st); err != nil {
		t.Fatalf("a cleared disk opens failed: %v", err)
	}
	if _, err := d.WriteAt(block, 0); err != nil {
		t.Fatal(err)
	}
}

// With the OSD down, a read fails within op_timeout (plus a margin)
// instead of hanging, and the disk works again when the OSD is back.
func TestRBDBoundedCall(t *testing.T) {
	c := ceph.Shared(t)
	const timeout = 3 * time.Second
	b := newRBD(t, c, "", RBDOptions{OpTimeout: timeout})
	d := openPC(t, b, newPC(t, b, "o", 5))
	defer b.CloseDisk("pc")
	p := make([]byte, 4096)
	startOSD := stopOSD(t, c)
	t0 := time.Now()
	_, err := d.ReadAt(p, 1<<20)
	took := time.Since(t0)
	t.Logf("read with the OSD down: %v after %v", err, took)
	if err == nil {
		t.Fatal("read with the OSD down succeeded")
	}
	if took > timeout+5*time.Second {
		t.Errorf("read took %v, want about op_timeout %v", took, timeout)
	}
	startOSD()
	if _, err := d.ReadAt(p, 1<<20); err != nil || p[0] != 5 {
		t.Fatalf("read after the OSD returned: %d %v", p[0], err)
	}
	if _, err := d.WriteAt(p, 0); err != nil {
		t.Fatalf("write after the OSD returned: %v", err)
	}
}

// The SCSI layer on an RBD host disk: capacity and thin provisioning from
// the image, WRITE with FUA and READ, UNMAP reading zeros, SYNCHRONIZE
// CACHE, and once another server took the disk, DATA PROTECT for writes.
func TestRBDThroughSCSI(t *testing.T) {
	c := ceph.Shared(t)
	a := newRBD(t, c, "", RBDOptions{})
	const size = pcSize
	st := newPC(t, a, "s", 0x5a)
	d := openPC(t, a, st)
	defer a.CloseDisk("pc")
	lu, err := scsi.NewLogicalUnit(d, scsi.LUConfig{Serial: "rbd"})
	if err != nil {
		t.Fatal(err)
	}
	tgt := scsi.NewTarget(scsi.TargetConfig{})
	tgt.AddLU(0, lu)
	nexus := scsi.Nexus{InitiatorName: "iqn.test", ISID: 1, RelTargetPort: 1}
	// exec runs a command; a read's data comes back with its result.
	var got []byte
	exec := func(cdb, out []byte, in int) scsi.Result {
		cmd := scsi.Command{Nexus: nexus, CDB: cdb, DataOut: out}
		if in > 0 {
			cmd.DataIn = make([]byte, in)
		}
		r := tgt.Execute(&cmd)
		got = cmd.DataIn[:r.N]
		return r
	}
	for range 3 { // unit attentions of a new nexus
		if r := exec(make([]byte, 6), nil, 0); r.Status == scsi.StatusGood {
			break
		}
	}
	cdb10 := func(op byte, flags byte, lba uint32, n uint16) []byte {
		b := []byte{op, flags, 0, 0, 0, 0, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[2:], lba)
		binary.BigEndian.PutUint16(b[7:], n)
		return b
	}
	// READ CAPACITY(16): the image's size, LBPME set (UNMAP supported).
	rc := make([]byte, 16)
	rc[0], rc[1] = 0x9e, 0x10
	binary.BigEndian.PutUint32(rc[10:], 32)
	r := exec(rc, nil, 32)
	if r.Status != scsi.StatusGood {
		t.Fatalf("READ CAPACITY(16): status %#x", r.Status)
	}
	if last := binary.BigEndian.Uint64(got); last != size/512-1 || got[14]&0x80 == 0 {
		t.Errorf("READ CAPACITY(16): last LBA %d (want %d), LBPME %v", last, size/512-1, got[14]&0x80 != 0)
	}
	// GET LBA STATUS answers (QEMU asks it before each large read of a
	// thin LU): everything mapped, in one descriptor.
	gls := make([]byte, 16)
	gls[0], gls[1] = 0x9e, 0x12
	binary.BigEndian.PutUint32(gls[10:], 24)
	if r := exec(gls, nil, 24); r.Status != scsi.StatusGood || len(got) != 24 {
		t.Errorf("GET LBA STATUS: status %#x sense %x, %d bytes", r.Status, r.Sense, len(got))
	} else if n, status := binary.BigEndian.Uint32(got[16:]), got[20]&0x0f; n != size/512 || status != 0 {
		t.Errorf("GET LBA STATUS: %d blocks of status %d, want %d mapped", n, status, size/512)
	}
	// Every READ and WRITE waits for an OSD: none runs inline on the
	// iSCSI reader.
	if tgt.Quick(0, cdb10(0x28, 0, 0, 8)) || tgt.Quick(0, cdb10(0x2a, 0, 0, 8)) {
		t.Error("a READ or WRITE of an RBD disk is quick (run inline on the connection's reader)")
	}
	data := bytes.Repeat([]byte{0xc3}, 8*512)
	if r := exec(cdb10(0x2a, 0x08, 100, 8), data, 0); r.Status != scsi.StatusGood { // WRITE(10) FUA
		t.Fatalf("WRITE FUA: status %#x", r.Status)
	}
	if r := exec(cdb10(0x28, 0, 100, 8), nil, len(data)); r.Status != scsi.StatusGood || !bytes.Equal(got, data) {
		t.Fatalf("READ after WRITE: status %#x, data equal %v", r.Status, bytes.Equal(got, data))
	}
	// UNMAP 4 blocks of it: they read zeros, the rest stays.
	param := make([]byte, 24)
	binary.BigEndian.PutUint16(param[0:], 22)
	binary.BigEndian.PutUint16(param[2:], 16)
	binary.BigEndian.PutUint64(param[8:], 102)
	binary.BigEndian.PutUint32(param[16:], 4)
	unmap := make([]byte, 10)
	unmap[0] = 0x42
	binary.BigEndian.PutUint16(unmap[7:], uint16(len(param)))
	if r := exec(unmap, param, 0); r.Status != scsi.StatusGood {
		t.Fatalf("UNMAP: status %#x sense %x", r.Status, r.Sense)
	}
	want := bytes.Clone(data)
	clear(want[2*512 : 6*512])
	if r := exec(cdb10(0x28, 0, 100, 8), nil, len(data)); r.Status != scsi.StatusGood || !bytes.Equal(got, want) {
		t.Fatalf("READ after UNMAP: status %#x, as expected %v", r.Status, bytes.Equal(got, want))
	}
	if r := exec(cdb10(0x35, 0, 0, 0), nil, 0); r.Status != scsi.StatusGood {
		t.Fatalf("SYNCHRONIZE CACHE: status %#x", r.Status)
	}
	// Another server takes the disk: writes here are DATA PROTECT.
	b := newRBD(t, c, a.opts.Namespace, RBDOptions{MayBreakLock: func(string, string) (bool, string) { return true, "test" }})
	if _, err := b.OpenDisk("pc", st, nil); err != nil {
		t.Fatal(err)
	}
	defer b.CloseDisk("pc")
	r = exec(cdb10(0x2a, 0, 100, 8), data, 0)
	if r.Status != scsi.StatusCheckCondition || len(r.Sense) < 3 || r.Sense[2]&0x0f != 0x07 {
		t.Fatalf("WRITE on a fenced disk: status %#x sense %x, want DATA PROTECT", r.Status, r.Sense)
	}
}

// TestRBDFigures measures device-level throughput (no iSCSI): 4 KiB QD32
// and 1 MiB QD8, random offsets, on an RBD host disk and on a raw file of
// the same size, each for a few seconds. BENCHMARKS.md has a run. Only
// with DISKLESS_BENCH_RBD=1.
func TestRBDFigures(t *testing.T) {
	if os.Getenv("DISKLESS_BENCH_RBD") != "1" {
		t.Skip("a measurement: DISKLESS_BENCH_RBD=1")
	}
	c := ceph.Shared(t)
	b := newRBD(t, c, "", RBDOptions{})
	const size = 1 << 30
	ref := VersionRef{Image: "bench", Version: 1}
	if err := b.WriteVersion(t.Context(), ref, size, nil, nil); err != nil {
		t.Fatal(err)
	}
	st, err := b.CreateDisk(t.Context(), "b", Persistent, ref, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	rbdDev, err := b.OpenDisk("b", st, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.CloseDisk("b")
	path := t.TempDir() + "/raw.img"
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	file, err := disk.OpenFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	// Fill both first so reads read data, not holes.
	chunk := bytes.Repeat([]byte{0xa5}, 4<<20)
	for _, d := range []disk.Device{rbdDev, file} {
		for off := int64(0); off < size; off += int64(len(chunk)) {
			if _, err := d.WriteAt(chunk, off); err != nil {
				t.Fatal(err)
			}
		}
		d.Flush()
	}
	run := func(d disk.Device, bs, qd int, write bool) float64 {
		var ops atomic.Int64
		deadline := time.Now().Add(4 * time.Second)
		var wg sync.WaitGroup
		for w := range qd {
			wg.Go(func() {
				r := rand.New(rand.NewPCG(uint64(w), 9))
				p := make([]byte, bs)
				for time.Now().Before(deadline) {
					off := int64(r.IntN(size/bs)) * int64(bs)
					var err error
					if write {
						_, err = d.WriteAt(p, off)
					} else {
						_, err = d.ReadAt(p, off)
					}
					if err != nil {
						t.Error(err)
						return
					}
					ops.Add(1)
				}
			})
		}
		wg.Wait()
		return float64(ops.Load()) / 4
	}
	for _, w := range []struct {
		name      string
		bs, qd    int
		write     bool
		inMiBPerS bool
	}{
		{"read 4 KiB QD32", 4096, 32, false, false},
		{"write 4 KiB QD32", 4096, 32, true, false},
		{"read 1 MiB QD8", 1 << 20, 8, false, true},
		{"write 1 MiB QD8", 1 << 20, 8, true, true},
	} {
		r, f := run(rbdDev, w.bs, w.qd, w.write), run(file, w.bs, w.qd, w.write)
		if w.inMiBPerS {
			t.Logf("%-17s rbd %8.0f MiB/s   raw file %8.0f MiB/s", w.name, r*float64(w.bs)/(1<<20), f*float64(w.bs)/(1<<20))
		} else {
			t.Logf("%-17s rbd %8.0f IOPS    raw file %8.0f IOPS", w.name, r, f)
		}
	}
}
