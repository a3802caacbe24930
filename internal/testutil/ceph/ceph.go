// Package ceph runs a real single-node Ceph cluster (Debian's ceph-mon and
// ceph-osd, Ceph 16) on loopback for tests: one monitor, one BlueStore OSD
// on a sparse file, cephx on, its own fsid and directory, a pool of size 1
// and a cephx user for diskless. No manager daemon: nothing diskless does
// (RBD I/O, clones, snapshots, locks, blocklisting) needs one, and it
// would cost a CPU-hungry Python process on small CI machines.
//
// A start takes about 10-15 s, so the tests of one package share one
// cluster (Shared, stopped by StopShared from TestMain). A test that needs
// it skips when the daemons are missing, unless DISKLESS_REQUIRE_CEPH=1
// (CI sets it), where that is a failure. It is for tests only; production
// code must not import it.
package ceph

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/testutil/ports"
	"github.com/diskless-boot/diskless/internal/testutil/proc"
)

// Cluster is a running single-node Ceph. Its methods are safe for
// concurrent use.
type Cluster struct {
	// Conf is the cluster's ceph.conf (mon_host, admin keyring).
	Conf string
	// Pool is the RBD pool (size 1) the tests use.
	Pool string
	// User is the cephx user for diskless (without "client."), with
	// mon 'profile rbd' and osd 'profile rbd pool=<Pool>'; Keyring holds
	// its key.
	User, Keyring string

	dir     string
	prefix  []string // runs every command in a network namespace ("ip netns exec NS")
	mon     *proc.Proc
	osdArgv []string
	mu      sync.Mutex
	osd     *proc.Proc
	// poolMade: StartOSD waits for the pool to answer.
	poolMade bool
}

// StartTimeout bounds a whole start.
const StartTimeout = 60 * time.Second

var daemons = []string{"ceph-mon", "ceph-osd", "ceph-authtool", "monmaptool", "ceph", "rbd"}

// skipUnlessInstalled skips (or fails, with DISKLESS_REQUIRE_CEPH=1) when
// a daemon or tool is missing.
func skipUnlessInstalled(tb testing.TB) {
	tb.Helper()
	for _, b := range daemons {
		if _, err := exec.LookPath(b); err != nil {
			msg := fmt.Sprintf("ceph: %s not in PATH (Debian packages ceph-mon ceph-osd ceph-common; scripts/ci-deps.sh installs them)", b)
			if os.Getenv("DISKLESS_REQUIRE_CEPH") == "1" {
				tb.Fatal(msg + "; DISKLESS_REQUIRE_CEPH=1 makes that a failure")
			}
			tb.Skip(msg)
		}
	}
}

var shared struct {
	once sync.Once
	c    *Cluster
	err  error
}

// Shared returns the cluster the tests of this process share, starting it
// on first use. The package's TestMain calls StopShared after m.Run.
func Shared(tb testing.TB) *Cluster {
	tb.Helper()
	skipUnlessInstalled(tb)
	shared.once.Do(func() {
		dir, err := os.MkdirTemp("", "diskless-ceph-")
		if err != nil {
			shared.err = err
			return
		}
		shared.c, shared.err = start(tb, dir, "", "127.0.0.1", defaultOSDSize)
		if shared.err != nil {
			shared.c = nil
			os.RemoveAll(dir)
		}
	})
	if shared.err != nil {
		tb.Fatalf("ceph: %v", shared.err)
	}
	return shared.c
}

// StopShared stops the shared cluster, if one was started, and removes
// its directory.
func StopShared() {
	if shared.c != nil {
		shared.c.stop()
		os.RemoveAll(shared.c.dir)
	}
}

// Start starts a cluster of the test's own, stopped at its cleanup.
func Start(tb testing.TB) *Cluster {
	tb.Helper()
	return StartSize(tb, defaultOSDSize)
}

// defaultOSDSize is the OSD's BlueStore device (a sparse file): RocksDB
// takes about half a GiB of it, the full ratio (95 %) the last 200 MiB.
const defaultOSDSize = 4 << 30

// StartSize is Start with an OSD device of osdBytes, for benchmarks that
// store more than the default 4 GiB holds (the file is sparse: only what
// is written takes disk space).
func StartSize(tb testing.TB, osdBytes int64) *Cluster {
	tb.Helper()
	skipUnlessInstalled(tb)
	c, err := start(tb, tb.TempDir(), "", "127.0.0.1", osdBytes)
	if err != nil {
		tb.Fatalf("ceph: %v", err)
	}
	tb.Cleanup(c.stop)
	return c
}

// StartIn starts a cluster of the test's own inside network namespace ns
// (which the test made), its monitor and OSD on address ip there, for
// servers in other namespaces of the test's network to reach. Conf and
// Keyring are files any namespace can read.
func StartIn(tb testing.TB, ns, ip string) *Cluster {
	tb.Helper()
	skipUnlessInstalled(tb)
	c, err := start(tb, tb.TempDir(), ns, ip, defaultOSDSize)
	if err != nil {
		tb.Fatalf("ceph: %v", err)
	}
	tb.Cleanup(c.stop)
	return c
}

func start(tb testing.TB, dir, ns, ip string, osdBytes int64) (_ *Cluster, err error) {
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	c := &Cluster{Conf: filepath.Join(dir, "ceph.conf"), Pool: "rbd", User: "diskless",
		Keyring: filepath.Join(dir, "client.diskless.keyring"), dir: dir}
	if ns != "" {
		c.prefix = []string{"ip", "netns", "exec", ns}
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w%s", err, c.logTail())
			c.stop()
		}
	}()
	fsid := uuid()
	mon := fmt.Sprintf("v2:%s:%d", ip, ports.FreeTCP(tb))
	for _, d := range []string{"mon", "osd", "run", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	conf := strings.NewReplacer("FSID", fsid, "MON", mon, "DIR", dir, "PUBLIC", ip,
		"OSDBYTES", strconv.FormatInt(osdBytes, 10)).Replace(confTemplate)
	if err := os.WriteFile(c.Conf, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	kr := filepath.Join(dir, "keyring")
	steps := [][]string{
		{"ceph-authtool", "--create-keyring", kr, "--gen-key", "-n", "mon.", "--cap", "mon", "allow *"},
		{"ceph-authtool", kr, "--gen-key", "-n", "client.admin", "--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mgr", "allow *"},
		{"monmaptool", "--create", "--add", "a", mon, "--fsid", fsid, filepath.Join(dir, "monmap")},
		{"ceph-mon", "-c", c.Conf, "--mkfs", "-i", "a", "--monmap", filepath.Join(dir, "monmap"), "--keyring", kr},
	}
	for _, s := range steps {
		if _, err := c.run(ctx, nil, s...); err != nil {
			return nil, err
		}
	}
	if c.mon, err = c.daemon("ceph-mon", "-i", "a"); err != nil {
		return nil, err
	}
	if _, err := c.Ceph(ctx, "-s"); err != nil {
		return nil, fmt.Errorf("monitor not answering: %w", err)
	}
	// The OSD: registered with a key of its own, BlueStore made on a
	// sparse file (bluestore_block_create), then started.
	osdUUID := uuid()
	key, err := c.run(ctx, nil, "ceph-authtool", "--gen-print-key")
	if err != nil {
		return nil, err
	}
	key = strings.TrimSpace(key)
	secret, _ := json.Marshal(map[string]string{"cephx_secret": key})
	id, err := c.run(ctx, secret, "ceph", "-c", c.Conf, "--connect-timeout", "10", "osd", "new", osdUUID, "-i", "-")
	if err != nil {
		return nil, err
	}
	id = strings.TrimSpace(id)
	if _, err := c.run(ctx, nil, "ceph-osd", "-c", c.Conf, "-i", id, "--mkfs", "--osd-uuid", osdUUID, "--key", key); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "osd", "keyring"), fmt.Appendf(nil, "[osd.%s]\n\tkey = %s\n", id, key), 0o600); err != nil {
		return nil, err
	}
	c.osdArgv = []string{"ceph-osd", "-i", id}
	if err := c.StartOSD(); err != nil {
		return nil, err
	}
	for _, s := range [][]string{
		{"osd", "pool", "create", c.Pool, "8", "8"},
		{"osd", "pool", "set", c.Pool, "size", "1", "--yes-i-really-mean-it"},
		{"auth", "get-or-create", "client." + c.User, "mon", "profile rbd", "osd", "profile rbd pool=" + c.Pool, "-o", c.Keyring},
	} {
		if _, err := c.Ceph(ctx, s...); err != nil {
			return nil, err
		}
	}
	if _, err := c.RBD(ctx, "pool", "init", c.Pool); err != nil {
		return nil, err
	}
	c.poolMade = true
	tb.Logf("ceph: single-node cluster up in %v (%s, mon %s)", time.Since(t0).Round(100*time.Millisecond), dir, mon)
	return c, nil
}

// daemon starts a Ceph daemon in the foreground, killed if the test
// process dies.
func (c *Cluster) daemon(argv ...string) (*proc.Proc, error) {
	argv = append(append(slices.Clone(c.prefix), argv[0], "-c", c.Conf, "-f"), argv[1:]...)
	return proc.Start(nil, proc.Config{Grace: 10 * time.Second, MaxOutput: 64 << 10,
		SysProcAttr: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}}, argv...)
}

// StopOSD stops the OSD (SIGTERM, it tells the monitor it goes down): I/O
// to the pool then blocks in the cluster, as with a failed disk.
func (c *Cluster) StopOSD() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.osd == nil {
		return nil
	}
	err := c.osd.Stop()
	c.osd = nil
	return err
}

// StartOSD starts the (stopped) OSD and waits until the monitor has it up
// and its placement groups are active.
func (c *Cluster) StartOSD() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.osd != nil {
		return nil
	}
	p, err := c.daemon(c.osdArgv...)
	if err != nil {
		return err
	}
	c.osd = p
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	for {
		out, err := c.Ceph(ctx, "osd", "stat", "-f", "json")
		if err == nil && strings.Contains(strings.ReplaceAll(out, " ", ""), `"num_up_osds":1`) {
			break
		}
		select {
		case <-p.Exited():
			return fmt.Errorf("ceph-osd exited: %v\n%s", p.Wait(), p.Output())
		case <-ctx.Done():
			return fmt.Errorf("ceph-osd not up within 45s: %s %v", out, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	if !c.poolMade {
		return nil
	}
	// Its placement groups active again: an object read answers (ENOENT)
	// instead of waiting. (ceph pg stat would need a manager.)
	for {
		_, err := c.run(ctx, nil, "rados", "-c", c.Conf, "--rados-osd-op-timeout", "2", "-p", c.Pool, "stat", "diskless-probe")
		if err != nil && strings.Contains(err.Error(), "No such file") {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pool %s not answering within 45s: %v", c.Pool, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// OSDPid is the running OSD's process id (0 when it is stopped), for
// benchmarks that count its CPU time.
func (c *Cluster) OSDPid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.osd == nil {
		return 0
	}
	return c.osd.Pid()
}

// StorageConfig is the line of diskless' config that keeps its images and
// host disks on c (storage.backend rbd, c's pool, ceph.conf and user);
// extra fields, such as "op_timeout: 4s", join the rbd section.
func (c *Cluster) StorageConfig(extra ...string) string {
	fields := append([]string{"pool: " + c.Pool, "ceph_conf: " + c.Conf, "user: " + c.User, "keyring: " + c.Keyring}, extra...)
	return "storage: {backend: rbd, rbd: {" + strings.Join(fields, ", ") + "}}\n"
}

// Dir is the cluster's directory: ceph.conf, the daemons' data, their
// admin sockets under run/ and logs under log/.
func (c *Cluster) Dir() string { return c.dir }

// Ceph runs the ceph CLI as client.admin.
func (c *Cluster) Ceph(ctx context.Context, args ...string) (string, error) {
	return c.run(ctx, nil, append([]string{"ceph", "-c", c.Conf, "--connect-timeout", "10"}, args...)...)
}

// RBD runs the rbd CLI as client.admin.
func (c *Cluster) RBD(ctx context.Context, args ...string) (string, error) {
	return c.run(ctx, nil, append([]string{"rbd", "-c", c.Conf}, args...)...)
}

// StartRBD runs a long-lived rbd CLI command (rbd bench, as a client
// that holds an image's lock) as client.admin; tb's cleanup stops it.
func (c *Cluster) StartRBD(tb testing.TB, args ...string) (*proc.Proc, error) {
	argv := append(append(slices.Clone(c.prefix), "rbd", "-c", c.Conf), args...)
	return proc.Start(tb, proc.Config{Name: "rbd " + args[0]}, argv...)
}

func (c *Cluster) stop() {
	c.StopOSD()
	if c.mon != nil {
		c.mon.Stop()
		c.mon = nil
	}
}

// logTail is the end of the daemons' logs, for a failed start.
func (c *Cluster) logTail() string {
	var b strings.Builder
	for _, f := range []string{"mon.a.log", "osd.0.log"} {
		data, err := os.ReadFile(filepath.Join(c.dir, "log", f))
		if err != nil {
			continue
		}
		if len(data) > 3000 {
			data = data[len(data)-3000:]
		}
		fmt.Fprintf(&b, "\n--- %s:\n%s", f, data)
	}
	return b.String()
}

// run runs a command with stdin (bounded by ctx, and 30 s at most), in
// the cluster's namespace, and returns its standard output.
func (c *Cluster) run(ctx context.Context, stdin []byte, argv ...string) (string, error) {
	argv = append(slices.Clone(c.prefix), argv...)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s: %w: %s", strings.Join(argv[:min(len(argv), 6)], " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func uuid() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// confTemplate is the cluster's ceph.conf: loopback, msgr2 only, cephx,
// pools of one replica, small caches, everything under DIR.
const confTemplate = `[global]
fsid = FSID
mon_host = MON
public_addr = PUBLIC
ms_bind_msgr1 = false
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
keyring = DIR/keyring
run_dir = DIR/run
admin_socket =
log_file = DIR/log/$name.log
mon_data = DIR/mon
osd_data = DIR/osd
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_autoscale_mode = off
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
mon_data_avail_warn = 1
auth_allow_insecure_global_id_reclaim = false
osd_crush_chooseleaf_type = 0
# A killed client's watch goes after 5 s, not 30: tests of a dead lock
# owner wait for it.
osd_client_watch_timeout = 5

[mon]
admin_socket = DIR/run/$name.asok

[osd]
admin_socket = DIR/run/$name.asok
keyring = DIR/osd/keyring
osd_objectstore = bluestore
bluestore_block_create = true
bluestore_block_size = OSDBYTES
bluestore_block_db_create = false
bluestore_block_wal_create = false
bluestore_cache_autotune = false
bluestore_cache_size = 67108864
osd_memory_target = 536870912
osd_op_num_shards = 1
osd_op_num_threads_per_shard = 2
`
