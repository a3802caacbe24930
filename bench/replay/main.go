//go:build linux

// Command replay is the boot storm that is real (issue 11, item 5): the
// I/O trace of one real Debian boot (recorded with `diskless serve
// --trace-io`, test/pxe TestRecordBootTrace) replayed by N hosts at once,
// each its own iSCSI session (CHAP and mutual CHAP) on its own host disk -
// a volatile copy-on-write overlay of one golden image - against `diskless
// serve`, and for comparison against tgt serving the same golden file as N
// LUNs of one target (no CHAP) to N sessions.
//
// Each replayed boot logs in and sends the trace's READs and WRITEs one at
// a time in the recorded order (-gaps: not before their recorded time
// either). Reported per server and N: the time from the release of all
// hosts to the last one's last command, per-host p50/p99, the server's CPU
// seconds and peak RSS over the run, and errors. N=1 is "one boot's read
// time" (the median of -alone runs); the issue's goal is N=100 finishing in
// less than 100 x that / 10, and before tgt.
//
// Everything runs in a network namespace of its own with only loopback
// (the program re-executes itself there with -role run); the servers get a
// fresh data directory per run and die with the program (Pdeathsig). The
// golden image is a sparse file of -size with random data on every block
// the trace reads (the trace says where, not what).
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/diskless-boot/diskless/bench/harness"
	"github.com/diskless-boot/diskless/internal/testutil/iscsiclient"
	"github.com/diskless-boot/diskless/internal/testutil/netns"
	"github.com/diskless-boot/diskless/internal/testutil/proc"
)

type options struct {
	trace   string
	counts  []int
	alone   int
	bin     string
	tgt     bool
	floor   bool
	gaps    bool
	size    int64
	timeout time.Duration
	work    string
}

func main() {
	role := flag.String("role", "bench", "bench (make the namespace), run (internal: inside it) or null (internal: the floor's responder)")
	trace := flag.String("trace", "bench/replay/testdata/debian-boot.trace", "the boot's I/O trace (.gz: gzipped)")
	ns := flag.String("n", "10,50,100", "numbers of hosts booting at once, comma-separated")
	alone := flag.Int("alone", 3, "runs of one boot alone per server (their median is one boot's read time)")
	bin := flag.String("diskless", "", "diskless binary (required)")
	tgt := flag.Bool("tgt", true, "compare with tgt (tgtd, tgtadm) when installed")
	floor := flag.Bool("floor", true, "also run the machine's floor: the same plan against a null responder with a minimal client (floor.go)")
	listen := flag.String("listen", "", "the null responder's address (internal: -role null)")
	maxBytes := flag.Int("max-bytes", 0, "the null responder's largest command (internal: -role null)")
	gaps := flag.Bool("gaps", false, "keep the recorded time between commands (each command not before its recorded time)")
	size := flag.String("size", "2G", "golden image size (at least what the trace touches)")
	timeout := flag.Duration("timeout", 10*time.Minute, "bound on each run")
	summary := flag.Bool("summary", false, "print the trace's totals per session and its gaps over 1 s, and exit")
	flag.Parse()
	if *role == "null" {
		if err := runNull(*listen, *maxBytes); err != nil {
			fatalf("%v", err)
		}
		return
	}
	if *summary {
		if err := printSummary(*trace); err != nil {
			fatalf("%v", err)
		}
		return
	}
	o := options{trace: *trace, alone: *alone, bin: *bin, tgt: *tgt, floor: *floor, gaps: *gaps, timeout: *timeout}
	for _, s := range strings.Split(*ns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 1000 {
			fatalf("bad -n %q", s)
		}
		o.counts = append(o.counts, n)
	}
	sz, err := parseSize(*size)
	if err != nil {
		fatalf("-size: %v", err)
	}
	o.size = sz
	if o.bin == "" {
		fatalf("-diskless BINARY is required")
	}
	if *role == "run" {
		if _, err := run(o); err != nil {
			fatalf("%v", err)
		}
		return
	}
	if err := harness.NeedRoot([]string{"ip"}); err != nil {
		fmt.Println("replay: SKIP:", err)
		return
	}
	if err := inNamespace(); err != nil {
		fatalf("%v", err)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "replay: "+format+"\n", args...)
	os.Exit(1)
}

func parseSize(s string) (int64, error) {
	mul := int64(1)
	switch {
	case strings.HasSuffix(s, "G"):
		mul, s = 1<<30, strings.TrimSuffix(s, "G")
	case strings.HasSuffix(s, "M"):
		mul, s = 1<<20, strings.TrimSuffix(s, "M")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mul, nil
}

// inNamespace runs this program again with -role run in a new network
// namespace with loopback only, and removes the namespace after.
func inNamespace() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var c harness.Cleanup
	defer c.Run()
	name := "dlreplay-" + netns.ID()
	if err := harness.AddNS(&c, name); err != nil {
		return err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", name, self, "-role", "run"}, os.Args[1:]...)...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd.Run()
}

// row is one run's figures.
type row struct {
	server   string
	n        int
	last     time.Duration
	p50, p99 time.Duration
	cpu      float64 // server CPU seconds over the run
	// clientCPU is this program's (the initiators') CPU seconds over the
	// run: it shares the machine with the server.
	clientCPU float64
	hwmKiB    int64 // server peak RSS
	errors    int
	firstErr  error
}

func run(o options) ([]row, error) {
	tr, err := loadTrace(o.trace)
	if err != nil {
		return nil, err
	}
	p, err := newPlan(tr)
	if err != nil {
		return nil, err
	}
	st := tr.Stats()
	fmt.Printf("trace %s: %d READs (%.1f MiB, %.1f MiB distinct), %d WRITEs (%.1f MiB), %v recorded, largest gap %v\n",
		o.trace, st.Reads, mib(st.ReadBytes), mib(st.DistinctReadBlocks*uint64(tr.BlockSize)), st.Writes, mib(st.WriteBytes),
		st.Duration.Round(time.Millisecond), st.LargestGap.Round(time.Millisecond))
	need := int64(p.endBlock) * int64(p.blockSize)
	if o.size < need {
		o.size = (need + 1<<20 - 1) &^ (1<<20 - 1)
	}
	work, err := os.MkdirTemp("/var/tmp", "diskless-replay-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	o.work = work
	golden := filepath.Join(work, "golden.img")
	if err := makeGolden(golden, o.size, p); err != nil {
		return nil, err
	}
	haveTgt := o.tgt
	if haveTgt {
		for _, prog := range []string{"tgtd", "tgtadm"} {
			if _, err := exec.LookPath(prog); err != nil {
				fmt.Printf("replay: no tgt comparison: %s not in PATH\n", prog)
				haveTgt = false
			}
		}
	}
	servers := []string{"diskless"}
	if haveTgt {
		servers = append(servers, "tgt")
	}
	if o.floor {
		servers = append(servers, "floor")
	}
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("load average before: %s", load)

	var rows []row
	// One boot alone, -alone times per server, alternating.
	for i := 0; i < o.alone; i++ {
		for _, s := range servers {
			r, err := runOnce(o, s, golden, 1, p)
			if err != nil {
				return nil, err
			}
			rows = append(rows, r)
		}
	}
	for i, n := range o.counts {
		order := servers
		if i%2 == 1 {
			order = slices.Clone(servers)
			slices.Reverse(order)
		}
		for _, s := range order {
			r, err := runOnce(o, s, golden, n, p)
			if err != nil {
				return nil, err
			}
			rows = append(rows, r)
		}
	}
	load, _ = os.ReadFile("/proc/loadavg")
	fmt.Printf("load average after: %s\n", load)
	report(rows, servers, o.counts)
	return rows, nil
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// makeGolden writes a sparse file of size bytes with random data on every
// block the plan reads.
func makeGolden(path string, size int64, p *plan) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	type span struct{ a, b uint64 }
	var spans []span
	for _, s := range p.steps {
		if !s.write {
			spans = append(spans, span{s.lba, s.lba + uint64(s.blocks)})
		}
	}
	slices.SortFunc(spans, func(x, y span) int { return int(int64(x.a) - int64(y.a)) })
	rng := rand.NewChaCha8([32]byte{1})
	buf := make([]byte, 1<<20)
	bs := uint64(p.blockSize)
	var end uint64
	for _, sp := range spans {
		a := max(sp.a, end)
		for a < sp.b {
			n := min(sp.b-a, uint64(len(buf))/bs)
			rng.Read(buf[:n*bs])
			if _, err := f.WriteAt(buf[:n*bs], int64(a*bs)); err != nil {
				return err
			}
			a += n
		}
		end = max(end, sp.b)
	}
	return f.Sync()
}

const (
	iqnBase   = "iqn.2026-12.org.example:replay"
	chapSuf   = "-replay-secret" // CHAP secret: host name + this (>= 12 characters)
	mutualSuf = "-replay-mutual" // mutual CHAP secret
)

// runOnce starts a fresh server for n hosts, replays the plan on all of
// them at once and stops the server. Server "floor" is the null responder
// and client of floor.go.
func runOnce(o options, server, golden string, n int, p *plan) (row, error) {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	dir, err := os.MkdirTemp(o.work, server+"-")
	if err != nil {
		return row{}, err
	}
	defer os.RemoveAll(dir)
	var (
		srv  *proc.Proc
		stop func()
		boot func(i int, start time.Time) error
	)
	switch server {
	case "diskless", "tgt":
		var sessions []iscsiclient.Config
		if server == "diskless" {
			srv, sessions, err = startDiskless(o.bin, dir, golden, n)
			stop = func() { srv.Stop() }
		} else {
			srv, sessions, stop, err = startTgt(dir, golden, n)
		}
		for i := range sessions {
			sessions[i].Timeout = 60 * time.Second
			sessions[i].LocalAddr = iscsiclient.LoopbackHost(i)
		}
		boot = func(i int, start time.Time) error { return replayOne(ctx, p, sessions[i], o.gaps, start) }
	case "floor":
		var addr string
		srv, addr, err = startNull(p.maxBytes)
		stop = func() { srv.Stop() }
		boot = func(i int, start time.Time) error {
			return replayNullOne(ctx, p, addr, iscsiclient.LoopbackHost(i), o.gaps, start)
		}
	default:
		err = fmt.Errorf("no server %q", server)
	}
	if err != nil {
		return row{}, err
	}
	defer stop()
	cpu0, self0 := harness.CPUSeconds(srv.Pid()), harness.CPUSeconds(os.Getpid())
	res, last := replay(n, boot)
	r := row{server: server, n: n, last: last, cpu: harness.CPUSeconds(srv.Pid()) - cpu0, clientCPU: harness.CPUSeconds(os.Getpid()) - self0}
	r.hwmKiB, _ = harness.StatusKiB(srv.Pid(), "VmHWM")
	var took []time.Duration
	for _, h := range res {
		if h.err == nil {
			took = append(took, h.took)
		} else {
			r.errors++
			if r.firstErr == nil {
				r.firstErr = h.err
			}
		}
	}
	r.p50, r.p99 = harness.Percentile(took, 50), harness.Percentile(took, 99)
	fmt.Printf("%-8s N=%-3d last %8.3f s  p50 %8.3f s  p99 %8.3f s  CPU %6.1f s  peak RSS %4d MiB  initiators' CPU %6.1f s  errors %d",
		server, n, last.Seconds(), r.p50.Seconds(), r.p99.Seconds(), r.cpu, r.hwmKiB>>10, r.clientCPU, r.errors)
	if r.firstErr != nil {
		fmt.Printf(" (first: %v)", r.firstErr)
	}
	fmt.Println()
	return r, nil
}
