package pxe

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/api"
	"github.com/diskless-boot/diskless/internal/testutil/debimage"
	"github.com/diskless-boot/diskless/internal/testutil/etcd"
	"github.com/diskless-boot/diskless/internal/testutil/output"
	"github.com/diskless-boot/diskless/internal/testutil/proc"
)

// The site of the failover test: two servers and the storage (etcd, and
// Ceph with the rbd backend) on the test network, the clients' floating
// address beside them.
const (
	failoverVIP     = "10.77.0.50"
	failoverServerB = "10.77.0.3"
	failoverStorage = "10.77.0.9"
)

// clusterSite is a site of two diskless servers in one cluster.
type clusterSite struct {
	t           *testing.T
	n           *testNet
	dir         string
	bNS, bIf    string
	storNS      string
	cfgA, cfgB  string // their configuration files
	dataA       string
	dataB       string
	a, b        *proc.Proc
	cliA, cliB  func(args ...string) string
	storageYAML string
	storageName string // in the report: "raw files", "rbd"
}

// newClusterSite builds the network (servers A and B, storage), starts
// etcd on it and writes both servers' configuration: DHCP full on the
// floating address, the state in etcd, a cluster lease of 3 s. storage,
// when not nil, starts what the storage section both use needs in the
// storage namespace and returns that section (nil: the default).
func newClusterSite(t *testing.T, storage func(c *clusterSite) string) *clusterSite {
	t.Helper()
	n := newTestNet(t, false)
	c := &clusterSite{t: t, n: n, dir: tempDir(t), bNS: "dlpxe-b-" + n.id, bIf: "pb2" + n.id[:min(len(n.id), 8)],
		storNS: "dlpxe-c-" + n.id}
	n.attach(t, c.bNS, c.bIf, failoverServerB)
	n.attach(t, c.storNS, "pc"+n.id, failoverStorage)
	e := etcd.StartIn(t, c.storNS, failoverStorage)
	if storage != nil {
		c.storageYAML = storage(c)
	}
	c.dataA, c.dataB = filepath.Join(c.dir, "a"), filepath.Join(c.dir, "b")
	conf := func(name, iface, data string) string {
		f := filepath.Join(c.dir, name+".yaml")
		y := fmt.Sprintf(`interface: %s
data_dir: %s
dhcp: {mode: full, range: %s}
store: {backend: etcd, etcd: {endpoints: [%q]}}
cluster: {address: %s/24, name: %s, lease: 3s}
%s`, iface, data, poolRange, e.Endpoint, failoverVIP, name, c.storageYAML)
		if err := os.WriteFile(f, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	c.cfgA, c.cfgB = conf("a", n.srvIf, c.dataA), conf("b", c.bIf, c.dataB)
	c.cliA, c.cliB = cliIn(t, n.srvNS, c.dataA), cliIn(t, c.bNS, c.dataB)
	return c
}

// startA and startB start a server and wait until it serves; wantActive
// waits until it is the active one.
func (c *clusterSite) startA(wantActive bool) {
	c.a = c.start("a", c.n.srvNS, c.cfgA, wantActive)
}

func (c *clusterSite) startB(wantActive bool) {
	// The admin token is the site's: A made it; B's CLI reads it from
	// B's data_dir, where an operator would copy it.
	if err := os.MkdirAll(c.dataB, 0o700); err != nil {
		c.t.Fatal(err)
	}
	if tok, err := os.ReadFile(filepath.Join(c.dataA, api.TokenFile)); err == nil {
		os.WriteFile(filepath.Join(c.dataB, api.TokenFile), tok, 0o600)
	}
	c.b = c.start("b", c.bNS, c.cfgB, wantActive)
}

func (c *clusterSite) start(name, ns, cfg string, wantActive bool) *proc.Proc {
	c.t.Helper()
	p := startDaemonWith(c.t, proc.Config{Name: "diskless serve " + name}, ns, disklessBin, "serve", "--config", cfg)
	waitOutput(c.t, p, "msg=serving", time.Minute)
	if wantActive {
		waitOutput(c.t, p, "msg=\"cluster: active", 30*time.Second)
	}
	return p
}

// vmArgs are the end-to-end machine's arguments on tap.
func (c *clusterSite) vmArgs(mac, tap, action string) []string {
	args := e2eVMArgs(c.t, c.n, c.dir, mac, false, action)
	for i, a := range args {
		args[i] = strings.Replace(a, "ifname="+c.n.tap+",", "ifname="+tap+",", 1)
	}
	return args
}

// TestFailover is issue 14's proof on the end-to-end image: pc1 boots
// through server A (the active one) and runs its fsync'd append loop; A is
// killed (SIGKILL); B, standing by, takes the floating address over once
// A's lease ended and serves pc1's disk: the loop goes on with no I/O
// error in the guest's kernel log and a stall measured. While A is dead
// pc2 boots through B. A comes back as a standby and does not touch
// pc1's disk. A power cut of pc1 and its next boot show every
// acknowledged line on the disk.
//
// The disks are the storage section's: files both servers reach (a raw
// disk file the admin named, shared: the default) or Ceph RBD clones
// (TestFailoverRBD, with the ceph build tag, which CI runs; this one is
// manual: DISKLESS_FAILOVER=N).
func TestFailover(t *testing.T) {
	if os.Getenv("DISKLESS_FAILOVER") == "" {
		t.Skip("manual: DISKLESS_FAILOVER=N (scripts/bench-failover.sh); CI runs TestFailoverRBD, the same scenario on Ceph RBD")
	}
	need(t, []string{"ip", "qemu-system-x86_64", "etcd"}, map[string]string{ipxeROM: "ipxe-qemu"})
	im := debimage.Get(t, e2eRecipe)
	c := newClusterSite(t, nil)
	c.storageName = "raw files"
	c.startA(true)
	c.startB(false)
	c.cliA("image", "import", "debian", im.Disk, "--kernel", im.Kernel, "--initrd", im.Initrd, "--cmdline", im.Cmdline)
	// Without shared storage both servers reach the same files: a raw
	// disk the admin named, copied from the image (sparse).
	for _, h := range []struct{ name, mac string }{{"pc1", macPC1}, {"pc2", macPC2}} {
		f := filepath.Join(c.dir, h.name+".img")
		if out, err := exec.Command("cp", "--sparse=always", im.Disk, f).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, out)
		}
		c.cliA("host", "add", h.name, "--disk", "raw", "--raw-file", f, "--mac", h.mac)
	}
	failover(t, c)
}

// failover runs TestFailover's scenario on a started site. With
// DISKLESS_FAILOVER=N (scripts/bench-failover.sh) the active server is
// killed N times in all, A and B in turn, each coming back as a standby
// before the next, and the series is reported: survived/N, the longest
// stall, lost writes. Goal: N of N, stall <= 10 s, nothing lost.
func failover(t *testing.T, c *clusterSite) {
	n := c.n
	rounds, _ := strconv.Atoi(os.Getenv("DISKLESS_FAILOVER"))
	rounds = max(rounds, 1)
	v := startVM(t, n.vmNS, c.vmArgs(macPC1, n.tap, "loop")...)
	b, at := waitBoot(t, v, "pc1", 0)
	t.Logf("pc1 booted through A in %v", b.took.Round(100*time.Millisecond))
	w := startLoop(t, v, at, 10)
	if strings.Contains(c.b.Output(), "msg=host host=pc1") {
		t.Errorf("the standby server B opened pc1's disk")
	}

	var stalls, takeovers []time.Duration
	for round := 1; round <= rounds; round++ {
		// The active server dies. Its namespace keeps the floating
		// address (a process died, not the machine) until the kernel
		// drops it at the end of the lease; the standby's gratuitous
		// ARPs move the clients.
		victim, heir := &c.a, &c.b
		if round%2 == 0 {
			victim, heir = &c.b, &c.a
		}
		w.catchUp()
		var killedAt time.Time
		var takeover time.Duration
		r := restartUnderLoop(t, w, outage{
			begin: func() { killedAt = time.Now(); (*victim).Kill() },
			end:   func() {},
			times: func(*restartResult) {
				if at := logTime((*heir).Output(), `msg="cluster: active`); !at.IsZero() {
					takeover = at.Sub(killedAt)
				}
			},
		}, 0, 20)
		t.Logf("failover %d: %s killed, %s active %v later; the loop stalled %v; line %d acknowledged before, %d after",
			round, (*victim).Name(), (*heir).Name(), takeover.Round(time.Millisecond), r.stall.Round(100*time.Millisecond), r.ackedBefore, r.ackedAfter)
		if !r.survived || takeover == 0 {
			t.Fatalf("failover %d: pc1 did not survive (%s), or no server took over\nheir:\n%s\nguest:\n%s", round, r.why,
				output.Tail((*heir).Output(), 3000), output.Tail(v.Console(), 3000))
		}
		stalls, takeovers = append(stalls, r.stall), append(takeovers, takeover)

		if round == 1 {
			// pc2 boots through B while A is dead, and gets an address
			// of its own: B knew the lease A gave pc1 (the DHCP leases
			// are in etcd).
			tap2 := n.addTap(t, "pu"+n.id)
			v2 := startVM(t, n.vmNS, c.vmArgs(macPC2, tap2, "poweroff")...)
			b2, _ := waitBoot(t, v2, "pc2", 0)
			t.Logf("pc2 booted through B (A dead) in %v", b2.took.Round(100*time.Millisecond))
			if ip1, ip2 := c.hostIP("pc1"), c.hostIP("pc2"); ip1 == "" || ip1 == ip2 {
				t.Errorf("pc1 has address %q, pc2 %q: the leases are not shared", ip1, ip2)
			}
			v2.Wait(3 * time.Minute)
		}

		// The dead server comes back: a standby now, it opens nothing.
		if victim == &c.a {
			c.startA(false)
		} else {
			c.startB(false)
		}
		for range 10 {
			if err := w.next(time.Minute); err != nil {
				t.Fatalf("the loop stopped after %s came back: %v", (*victim).Name(), err)
			}
		}
		if out := (*victim).Output(); strings.Contains(out, `msg="cluster: active`) || strings.Contains(out, "msg=host host=pc1") {
			t.Errorf("%s, back, took over or opened pc1's disk:\n%s", (*victim).Name(), output.Tail(out, 2000))
		}
	}
	if w.errors != w.baseErrors {
		t.Errorf("%d kernel messages about failed I/O", w.errors-w.baseErrors)
	}

	// Power cut, then pc1's next boot counts its lines.
	acked := w.last
	v.PowerCut()
	v = startVM(t, n.vmNS, c.vmArgs(macPC1, n.tap, "poweroff")...)
	b, _ = waitBoot(t, v, "pc1", 0)
	v.Wait(3 * time.Minute)
	lost := "none"
	if kept, err := strconv.Atoi(b.loop); err != nil || kept < acked {
		lost = fmt.Sprintf("%d lines acknowledged, the disk holds %q in order", acked, b.loop)
		t.Errorf("lost writes: %s", lost)
	}
	longest := slices.Max(stalls)
	t.Logf("FAILOVER %s: survived %d/%d, longest stall %v, median %v, takeover (kill to active) longest %v, median %v, lost writes: %s (%d acknowledged)",
		c.storageName, len(stalls), rounds, longest.Round(100*time.Millisecond), median(stalls).Round(100*time.Millisecond),
		slices.Max(takeovers).Round(time.Millisecond), median(takeovers).Round(time.Millisecond), lost, acked)
	if longest > 10*time.Second {
		t.Errorf("longest stall %v, want <= 10 s", longest)
	}
}

// hostIP is the address the site knows for host (its DHCP lease).
func (c *clusterSite) hostIP(host string) string {
	var h struct {
		IP string `json:"ip"`
	}
	if err := json.Unmarshal([]byte(c.cliB("host", "show", host, "--json")), &h); err != nil {
		c.t.Fatal(err)
	}
	return h.IP
}
