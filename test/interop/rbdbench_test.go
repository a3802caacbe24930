//go:build ceph

package interop

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/bench/harness"
	"github.com/diskless-boot/diskless/internal/api"
	"github.com/diskless-boot/diskless/internal/testutil/ceph"
	"github.com/diskless-boot/diskless/internal/testutil/served"
)

// The diskless binary of this package's tests is built with the RBD
// backend when the tests are built with -tags ceph.
func init() { buildTags = []string{"ceph", "pacific"} }

// TestRBDBench is issue 14's speed proof for host disks on Ceph RBD, a
// manual benchmark (DISKLESS_BENCH_RBD=1; scripts/bench-rbd.sh runs it):
//
//   - a single-node Ceph (internal/testutil/ceph) on loopback; `diskless
//     serve` with storage rbd; image golden imported from random bytes
//     (version diskless.v.golden.1@v); host rbdhost, a persistent disk
//     (the RBD clone diskless.h.rbdhost.l1), no CHAP;
//   - tgtd with Debian's tgt-rbd backing store on tgt.golden, another clone
//     of the same snapshot, opened as the same cephx user;
//   - both clones get the golden bytes written once through their own
//     target (qemu-img convert), so every object is the clone's own and
//     both sides read and overwrite the same layout: same parent, same
//     features, same objects, same cluster, same librbd and ceph.conf;
//   - `diskless target` on a raw file of the same bytes;
//   - ../shared/tools/iscsi-perf-compare, A = tgt-rbd, B = diskless-rbd,
//     then A = diskless-raw, B = diskless-rbd (QEMU's libiscsi, 4 KiB
//     QD32 and 1 MiB QD8 reads and writes, each server's CPU per GiB and
//     per 1000 I/Os);
//   - 100 persistent hosts on the image added through the API, timed, and
//     the pool's space before and after (rbd du, objects, BlueStore).
//
// Env: DISKLESS_BENCH_RBD_SIZE (image bytes, default 1G),
// DISKLESS_BENCH_RBD_ROUNDS (3), DISKLESS_BENCH_RBD_SCALE (0.5: the
// fraction of the tool's I/O counts), DISKLESS_BENCH_RBD_CLONES (100),
// DISKLESS_BENCH_RBD_HOLD (a duration: wait that long after the fill,
// printing the URLs and pids, to profile by hand).
func TestRBDBench(t *testing.T) {
	if os.Getenv("DISKLESS_BENCH_RBD") != "1" {
		t.Skip("manual benchmark: DISKLESS_BENCH_RBD=1 (scripts/bench-rbd.sh)")
	}
	needPeers(t, "tgtd", "tgtadm", "qemu-img", "python3", "rbd", "rados")
	needFile(t, "/usr/lib/tgt/backing-store/bs_rbd.so", "tgt-rbd")
	compare := sharedTool(t, "iscsi-perf-compare")
	if disklessBin == "" {
		t.Fatalf("no diskless binary: %v", disklessBuild)
	}
	size := envInt(t, "DISKLESS_BENCH_RBD_SIZE", 1<<30)
	rounds := envInt(t, "DISKLESS_BENCH_RBD_ROUNDS", 3)
	scale := os.Getenv("DISKLESS_BENCH_RBD_SCALE")
	if scale == "" {
		scale = "0.5"
	}
	nclones := envInt(t, "DISKLESS_BENCH_RBD_CLONES", 100)
	ctx := context.Background()
	began := time.Now()
	fmt.Printf("# RBD bench %s, %d cores, load average %s, image %d MiB, %d rounds, scale %s\n",
		began.UTC().Format(time.RFC3339), runtime.NumCPU(), loadavg(), size>>20, rounds, scale)

	// The version and two filled clones are three times the image; the
	// default 4 GiB OSD is full at 3 GiB of data and its RocksDB.
	cl := ceph.StartSize(t, max(16<<30, 8*int64(size)))
	golden := filepath.Join(t.TempDir(), "golden.raw")
	writeRandom(t, golden, size)

	site := served.New(t, disklessBin)
	appendFile(t, site.Config, cl.StorageConfig())
	srv := site.Start()
	t0 := time.Now()
	site.CLI("image", "import", "golden", golden)
	t.Logf("image golden imported into RBD in %v", time.Since(t0).Round(10*time.Millisecond))
	var ch api.HostChange
	if err := json.Unmarshal(site.CLI("host", "add", "rbdhost", "--image", "golden", "--disk", "persistent", "--no-chap", "--json"), &ch); err != nil {
		t.Fatal(err)
	}
	host := ch.Host
	version := cl.Pool + "/diskless.v.golden.1@v"
	if out, err := cl.RBD(ctx, "info", cl.Pool+"/diskless.h.rbdhost.l1"); err != nil || !strings.Contains(out, "parent: "+version) {
		t.Fatalf("rbdhost's disk is not a clone of %s: %v\n%s", version, err, out)
	}

	// tgt's image: another clone of the same snapshot, opened as the same
	// user. Its ceph.conf is the cluster's plus that user's keyring (the
	// cluster's names client.admin's); bs_rbd's options are
	// conf=FILE;id=USER (tgt 1.0.85 bs_rbd.c: conf, id, cluster,
	// virsecretuuid, cephx_key).
	if _, err := cl.RBD(ctx, "clone", version, cl.Pool+"/tgt.golden"); err != nil {
		t.Fatal(err)
	}
	conf, err := os.ReadFile(cl.Conf)
	if err != nil {
		t.Fatal(err)
	}
	tgtConf := filepath.Join(t.TempDir(), "ceph.conf")
	if err := os.WriteFile(tgtConf, fmt.Appendf(conf, "\n[client.%s]\nkeyring = %s\n", cl.User, cl.Keyring), 0o600); err != nil {
		t.Fatal(err)
	}
	tgt := startTgt(t, targetConfig{LUNs: []lunConfig{{Path: cl.Pool + "/tgt.golden", BSType: "rbd",
		BSOpts: fmt.Sprintf("conf=%s;id=%s", tgtConf, cl.User)}}})
	// diskless on a raw file of the same bytes (after the import: the
	// write workloads change it).
	raw := startDiskless(t, targetConfig{LUNs: []lunConfig{{Path: golden}}})

	tgtURL := tgt.URL(0, nil)
	rbdURL := fmt.Sprintf(`json:{"file":{"driver":"iscsi","transport":"tcp","portal":"%s","target":"%s","lun":0,"initiator-name":"%s"}}`,
		site.Portal(), host.TargetIQN, host.InitiatorIQN)
	rawURL := raw.URL(0, nil)

	// Every block of both clones written once, through its own target.
	for _, side := range []struct{ name, url string }{{"diskless-rbd", rbdURL}, {"tgt-rbd", tgtURL}} {
		t0 := time.Now()
		if out, err := libiscsiRun(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", golden, side.url); err != nil {
			t.Fatalf("fill %s: %v\n%s", side.name, err, out)
		}
		d := time.Since(t0)
		fmt.Printf("# filled %s's clone through its target: %d MiB in %v (%.0f MiB/s, copy-up of every object)\n",
			side.name, size>>20, d.Round(10*time.Millisecond), float64(size>>20)/d.Seconds())
	}
	du, err := cl.RBD(ctx, "du", "-p", cl.Pool)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("# rbd du after the fill:\n%s", indent(du))
	for _, img := range []string{"diskless.h.rbdhost.l1", "tgt.golden"} {
		if used := rbdUsed(t, cl, img); used < int64(size) {
			t.Fatalf("%s holds %d bytes of its own after the fill, want %d: reads would go to the parent", img, used, size)
		}
	}

	if d := os.Getenv("DISKLESS_BENCH_RBD_HOLD"); d != "" {
		// For profiling by hand (perf record -p PID, qemu-img bench URL).
		hold, err := time.ParseDuration(d)
		if err != nil {
			t.Fatalf("DISKLESS_BENCH_RBD_HOLD=%q: %v", d, err)
		}
		fmt.Printf("# holding for %v: tgt-rbd pid %d %s\n#   diskless-rbd pid %d '%s'\n#   diskless-raw pid %d %s\n#   ceph-osd pid %d\n",
			hold, tgt.Pid, tgtURL, srv.Pid(), rbdURL, raw.Pid, rawURL, cl.OSDPid())
		time.Sleep(hold)
	}

	runs := []struct {
		title, a, b, urlA, urlB string
		pidA, pidB              int
	}{
		{"tgt-rbd vs diskless-rbd", "tgt-rbd", "diskless-rbd", tgtURL, rbdURL, tgt.Pid, srv.Pid()},
		{"diskless-raw vs diskless-rbd", "diskless-raw", "diskless-rbd", rawURL, rbdURL, raw.Pid, srv.Pid()},
	}
	for _, r := range runs {
		osd0 := harness.CPUSeconds(cl.OSDPid())
		t0 := time.Now()
		out := runCompare(t, compare, r.urlA, r.urlB, "--pid-a", strconv.Itoa(r.pidA), "--pid-b", strconv.Itoa(r.pidB),
			"--rounds", strconv.Itoa(rounds), "--scale", scale, "--only", "read-4k-qd32,write-4k-qd32,read-1m-qd8,write-1m-qd8")
		fmt.Printf("\n## %s (A = %s, B = %s; load average %s)\n\n%s\n", r.title, r.a, r.b, loadavg(), indent(out))
		fmt.Printf("%s\n", compareTable(out, r.a, r.b))
		fmt.Printf("ceph-osd CPU over the run (both sides): %.1f s in %v\n", harness.CPUSeconds(cl.OSDPid())-osd0, time.Since(t0).Round(time.Second))
	}

	// The cost of a host on a golden image: nclones persistent hosts
	// through the API (each an RBD clone of the version), one after the
	// other, as an operator's script would add them.
	before := poolUsage(t, cl)
	tok := site.Token()
	durs := make([]time.Duration, nclones)
	t0 = time.Now()
	for i := range nclones {
		t1 := time.Now()
		body, _ := json.Marshal(api.AddHostRequest{Name: fmt.Sprintf("c%03d", i), Image: "golden", DiskMode: "persistent"})
		apiCall(t, site.API()+api.Prefix+"/hosts", tok, body)
		durs[i] = time.Since(t1)
	}
	total := time.Since(t0)
	after := poolUsage(t, cl)
	out, err := cl.RBD(ctx, "ls", "-l", cl.Pool)
	if err != nil {
		t.Fatal(err)
	}
	clones := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "diskless.h.c") && strings.Contains(l, version) {
			clones++
		}
	}
	if clones != nclones {
		t.Fatalf("%d clones of %s named diskless.h.cNNN.*, want %d:\n%s", clones, version, nclones, out)
	}
	sorted := slices.Clone(durs)
	slices.Sort(sorted)
	fmt.Printf("\n## %d persistent hosts on image golden (RBD clones), added through the API one after the other\n\n", nclones)
	fmt.Printf("| | |\n|---|---:|\n")
	fmt.Printf("| time for %d hosts | %v (%.1f hosts/s) |\n", nclones, total.Round(10*time.Millisecond), float64(nclones)/total.Seconds())
	fmt.Printf("| per host: p50 / p99 / max | %v / %v / %v |\n", sorted[len(sorted)/2].Round(100*time.Microsecond),
		sorted[len(sorted)*99/100].Round(100*time.Microsecond), sorted[len(sorted)-1].Round(100*time.Microsecond))
	fmt.Printf("| rbd du used, pool: before / after | %s / %s (+%s) |\n", mib(before.used), mib(after.used), mib(after.used-before.used))
	fmt.Printf("| rbd du provisioned, pool: before / after | %s / %s |\n", mib(before.provisioned), mib(after.provisioned))
	fmt.Printf("| RADOS objects in the pool: before / after | %d / %d (+%.1f per host) |\n", before.objects, after.objects,
		float64(after.objects-before.objects)/float64(nclones))
	fmt.Printf("| BlueStore allocated (data): before / after | %s / %s (+%s) |\n", mib(before.allocated), mib(after.allocated), mib(after.allocated-before.allocated))
	fmt.Printf("| BlueFS (RocksDB: omap, metadata) used: before / after | %s / %s (+%s) |\n", mib(before.bluefs), mib(after.bluefs), mib(after.bluefs-before.bluefs))
	fmt.Printf("\n# done in %v, load average %s\n", time.Since(began).Round(time.Second), loadavg())
}

// runCompare runs iscsi-perf-compare and returns its output.
func runCompare(t *testing.T, tool string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, tool, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", tool, err, out)
	}
	return string(out)
}

var (
	speedLine = regexp.MustCompile(`^(\S+)\s+A\s+([0-9.]+)s \(\s*([0-9.]+) MiB/s,\s*([0-9]+) IOPS\)\s+B\s+([0-9.]+)s \(\s*([0-9.]+) MiB/s,\s*([0-9]+) IOPS\)\s+B/A speed\s+([0-9.]+)`)
	cpuLine   = regexp.MustCompile(`cpu A\s+([0-9.]+) s/GiB\s+([0-9.]+) ms/kIO\s+B\s+([0-9.]+) s/GiB\s+([0-9.]+) ms/kIO\s+B/A cpu\s+([0-9.inf]+)`)
)

// compareTable turns iscsi-perf-compare's lines into a Markdown table.
func compareTable(out, a, b string) string {
	var s strings.Builder
	fmt.Fprintf(&s, "| workload | %s | %s | speed B/A | CPU %s | CPU %s | CPU B/A |\n|---|---:|---:|---:|---:|---:|---:|\n", a, b, a, b)
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		m := speedLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		fig := func(mibs, iops string) string {
			if strings.Contains(m[1], "-1m-") {
				return mibs + " MiB/s"
			}
			return iops + " IOPS"
		}
		cpuA, cpuB, ratio := "", "", ""
		if i+1 < len(lines) {
			if c := cpuLine.FindStringSubmatch(lines[i+1]); c != nil {
				cpuA = c[1] + " s/GiB, " + c[2] + " ms/kIO"
				cpuB = c[3] + " s/GiB, " + c[4] + " ms/kIO"
				ratio = c[5]
			}
		}
		fmt.Fprintf(&s, "| %s | %s | %s | %s | %s | %s | %s |\n", m[1], fig(m[3], m[4]), fig(m[6], m[7]), m[8], cpuA, cpuB, ratio)
	}
	return s.String()
}

type usage struct {
	used, provisioned, allocated, bluefs int64
	objects                              int
}

// poolUsage is what the pool takes: rbd du's totals, the number of RADOS
// objects, and the OSD's BlueStore counters (data allocated, and BlueFS,
// where RocksDB keeps omap: clone headers live there).
func poolUsage(t *testing.T, cl *ceph.Cluster) usage {
	t.Helper()
	ctx := context.Background()
	var u usage
	out, err := cl.RBD(ctx, "du", "-p", cl.Pool, "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	var du struct {
		Used        int64 `json:"total_used_size"`
		Provisioned int64 `json:"total_provisioned_size"`
	}
	if err := json.Unmarshal([]byte(out), &du); err != nil {
		t.Fatalf("rbd du: %v\n%s", err, out)
	}
	u.used, u.provisioned = du.Used, du.Provisioned
	objs, err := exec.Command("rados", "-c", cl.Conf, "-p", cl.Pool, "ls").Output()
	if err != nil {
		t.Fatalf("rados ls: %v", err)
	}
	u.objects = strings.Count(string(objs), "\n")
	socks, _ := filepath.Glob(filepath.Join(cl.Dir(), "run", "osd.*.asok"))
	if len(socks) != 1 {
		t.Fatalf("OSD admin sockets: %v", socks)
	}
	// Flush the OSD's RocksDB first so BlueFS holds what the clones wrote.
	exec.Command("ceph", "--admin-daemon", socks[0], "flush_store_cache").Run()
	perf, err := exec.Command("ceph", "--admin-daemon", socks[0], "perf", "dump").Output()
	if err != nil {
		t.Fatalf("OSD perf dump: %v", err)
	}
	var p struct {
		BlueStore struct {
			Allocated int64 `json:"bluestore_allocated"`
		} `json:"bluestore"`
		BlueFS struct {
			DBUsed   int64 `json:"db_used_bytes"`
			SlowUsed int64 `json:"slow_used_bytes"`
		} `json:"bluefs"`
	}
	if err := json.Unmarshal(perf, &p); err != nil {
		t.Fatalf("OSD perf dump: %v", err)
	}
	u.allocated, u.bluefs = p.BlueStore.Allocated, p.BlueFS.DBUsed+p.BlueFS.SlowUsed
	return u
}

// rbdUsed is the bytes image holds itself (rbd du, not its parent's).
func rbdUsed(t *testing.T, cl *ceph.Cluster, image string) int64 {
	t.Helper()
	out, err := cl.RBD(context.Background(), "du", cl.Pool+"/"+image, "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	var du struct {
		Images []struct {
			Name string `json:"name"`
			Used int64  `json:"used_size"`
		} `json:"images"`
	}
	if err := json.Unmarshal([]byte(out), &du); err != nil {
		t.Fatalf("rbd du: %v\n%s", err, out)
	}
	for _, im := range du.Images {
		if im.Name == image {
			return im.Used
		}
	}
	return 0
}

// apiCall POSTs body to url with the admin token; anything but 201 fails t.
func apiCall(t *testing.T, url, token string, body []byte) {
	t.Helper()
	req, err := http.NewRequest("POST", url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST %s: %s\n%s", url, resp.Status, b)
	}
}

func writeRandom(t *testing.T, path string, size int) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, int64(size)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func appendFile(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// envInt reads a count or a size (1G, 512M, bytes) from the environment.
func envInt(t *testing.T, key string, def int) int {
	t.Helper()
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	mul := 1
	switch {
	case strings.HasSuffix(v, "G"):
		mul, v = 1<<30, strings.TrimSuffix(v, "G")
	case strings.HasSuffix(v, "M"):
		mul, v = 1<<20, strings.TrimSuffix(v, "M")
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive number", key, os.Getenv(key))
	}
	return n * mul
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
