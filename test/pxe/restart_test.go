package pxe

import (
	"cmp"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/testutil/netns"
	"github.com/diskless-boot/diskless/internal/testutil/proc"
	"github.com/diskless-boot/diskless/internal/testutil/qemu"
)

// loopWatch follows the e2e unit's fsync'd append loop on a VM's console.
type loopWatch struct {
	v    *qemu.VM
	from int // console offset after the last line read

	last       int           // the last line the guest acknowledged
	lastAt     time.Time     // when the test saw it
	maxGap     time.Duration // the longest wait between two lines since reset
	baseErrors int           // I/O error messages the kernel had when the loop began
	errors     int           // and has now
}

// next waits up to timeout for the loop's next acknowledged line.
func (w *loopWatch) next(timeout time.Duration) error {
	_, _, end, err := w.v.WaitForFrom(w.from, timeout, "DISKLESS-E2E-LOOP ")
	if err != nil {
		return err
	}
	if _, _, end, err = w.v.WaitForFrom(end, 10*time.Second, "\n"); err != nil {
		return err
	}
	m := loopLine.FindStringSubmatch(w.v.RawConsole()[w.from:end])
	if m == nil {
		return nil // a line cut by another console message: the next one counts
	}
	w.from = end
	w.last, _ = strconv.Atoi(m[1])
	w.errors, _ = strconv.Atoi(m[2])
	now := time.Now()
	if w.lastAt.IsZero() {
		w.baseErrors = w.errors
	} else {
		w.maxGap = max(w.maxGap, now.Sub(w.lastAt))
	}
	w.lastAt = now
	return nil
}

// catchUp skips the lines the guest printed while nobody read them (the
// test was booting another machine): the next line read is a fresh one,
// and the gaps measured from then on are the guest's.
func (w *loopWatch) catchUp() {
	con := w.v.RawConsole()
	ms := loopLine.FindAllStringSubmatchIndex(con[w.from:], -1)
	if len(ms) == 0 {
		return
	}
	m := ms[len(ms)-1]
	w.last, _ = strconv.Atoi(con[w.from+m[2] : w.from+m[3]])
	w.errors, _ = strconv.Atoi(con[w.from+m[4] : w.from+m[5]])
	w.from += m[1]
	w.lastAt = time.Now() // the gap to the next line is the guest's
}

// startLoop waits for the loop of a guest whose unit runs the loop action
// to acknowledge n lines.
func startLoop(t *testing.T, v *qemu.VM, from, n int) *loopWatch {
	t.Helper()
	w := &loopWatch{v: v, from: from}
	for w.last < n {
		if err := w.next(2 * time.Minute); err != nil {
			t.Fatalf("the guest's append loop: %v", err)
		}
	}
	return w
}

// restartResult is one outage of the guest's root disk under its loop.
type restartResult struct {
	survived     bool
	stall        time.Duration // the longest wait between two lines, the outage's included
	newErrors    int           // kernel messages about failed I/O since the loop began
	ackedBefore  int           // the last line acknowledged before the outage
	ackedAfter   int           // the last line acknowledged after it
	startup      time.Duration // a restart: from the new server's start to its "serving"
	reloginAfter time.Duration // a restart: from its "serving" to the guest's login
	why          string        // when it did not survive
}

// outage takes the guest's root disk away (begin) and brings it back
// (end); times, if set, reports a restart's startup and re-login.
type outage struct {
	begin, end func()
	times      func(*restartResult)
}

// serverRestart is diskless serve killed (SIGKILL) and started again with
// the same arguments (and the held sockets, if any); the new server
// replaces *srv.
func serverRestart(t *testing.T, n *testNet, srv **proc.Proc, sockets []*os.File, serveArgs []string) outage {
	return outage{
		begin: func() { (*srv).Kill() },
		end:   func() { *srv = startServeWith(t, n, sockets, serveArgs...) },
		times: func(r *restartResult) {
			out := (*srv).Output()
			serving, login := logTime(out, "msg=serving"), logTime(out, `detail="login of `)
			if !serving.IsZero() {
				r.startup = serving.Sub((*srv).Started())
				if !login.IsZero() {
					r.reloginAfter = login.Sub(serving)
				}
			}
		},
	}
}

// linkDown is the guest's network gone (its tap down: what it sends is
// lost, it sees no link change) while the server runs on.
func linkDown(t *testing.T, n *testNet) outage {
	set := func(state string) {
		if err := netns.IP("-n", n.vmNS, "link", "set", n.tap, state); err != nil {
			t.Error(err)
		}
	}
	return outage{begin: func() { set("down") }, end: func() { set("up") }}
}

// restartUnderLoop runs one outage of down just after the guest
// acknowledged a line and waits until the guest has acknowledged
// progress more lines.
func restartUnderLoop(t *testing.T, w *loopWatch, o outage, down time.Duration, progress int) restartResult {
	t.Helper()
	if err := w.next(time.Minute); err != nil {
		return restartResult{why: "no line before the outage: " + err.Error()}
	}
	o.begin()
	r := restartResult{ackedBefore: w.last}
	w.maxGap = 0
	// Lines the guest still acknowledges during the outage (none should
	// come: it began just after one) are read on time.
	for until := time.Now().Add(down); time.Until(until) > 0; {
		if err := w.next(time.Until(until)); err != nil {
			time.Sleep(time.Until(until))
		}
	}
	o.end()
	for w.last < r.ackedBefore+progress {
		if err := w.next(down + 2*time.Minute); err != nil {
			r.why = "the loop did not go on: " + err.Error()
			return r
		}
	}
	r.stall = w.maxGap
	if o.times != nil {
		o.times(&r)
	}
	r.ackedAfter, r.newErrors = w.last, w.errors-w.baseErrors
	r.survived = r.newErrors == 0
	if !r.survived {
		r.why = strconv.Itoa(r.newErrors) + " kernel messages about failed I/O"
	}
	return r
}

// TestRestartSurvival measures what issue 9 asks beyond CI (manual:
// DISKLESS_SURVIVAL=N, scripts/bench-survival.sh): a Debian host of the
// end-to-end image runs its fsync'd append loop while diskless serve is
// killed (SIGKILL) and started again N times for each downtime of
// DISKLESS_SURVIVAL_DOWN (default 5s,20s), plain and socket-activated, and
// while its network goes away for as long with the server running on
// (DISKLESS_SURVIVAL_MODE picks one: plain, socket-activated, link-down).
// It reports how many outages the guest survived (the loop went on, no
// I/O error in its kernel log), the longest stall of the loop, and lost
// writes: acknowledged lines that are not on the disk at the next boot
// after a power cut. Goal: N of N, stall <= downtime + 2 s, nothing lost.
func TestRestartSurvival(t *testing.T) {
	runs, _ := strconv.Atoi(os.Getenv("DISKLESS_SURVIVAL"))
	if runs <= 0 {
		t.Skip("manual: DISKLESS_SURVIVAL=N (scripts/bench-survival.sh)")
	}
	var downs []time.Duration
	for _, s := range strings.Split(cmp.Or(os.Getenv("DISKLESS_SURVIVAL_DOWN"), "5s,20s"), ",") {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			t.Fatalf("DISKLESS_SURVIVAL_DOWN: %v", err)
		}
		downs = append(downs, d)
	}
	n, dir, data, cli := e2eSite(t)
	cli("host", "add", "pc1", "--image", "debian", "--disk", "persistent", "--mac", macPC1)
	serveArgs := e2eServeArgs(n, data)
	for _, mode := range []string{"plain", "socket-activated", "link-down"} {
		if m := os.Getenv("DISKLESS_SURVIVAL_MODE"); m != "" && m != mode {
			continue
		}
		// Plain: nothing listens while the server is down, the
		// initiator's reconnects are refused and it retries every 3 s
		// (open-iscsi's ISCSI_CONN_ERR_REOPEN_DELAY). Socket-activated:
		// the iSCSI socket is held the way systemd's diskless.socket
		// holds it, so a reconnect waits in its queue for the new server.
		// Link-down: the server runs on, the guest's network is gone
		// (the HOWTO: "iSCSI doesn't really like the network going
		// away"); its old session is still open on the server when the
		// guest comes back.
		var sockets []*os.File
		if mode == "socket-activated" {
			sockets = []*os.File{heldSocket(t, n.srvNS, n.serverIP+":3260")}
		}
		srv := startServeWith(t, n, sockets, serveArgs...)
		o := serverRestart(t, n, &srv, sockets, serveArgs)
		if mode == "link-down" {
			o = linkDown(t, n)
		}
		for _, down := range downs {
			survive(t, n, dir, o, mode, down, runs)
			cli("host", "reset", "pc1") // the next run starts on a fresh loop file
		}
		srv.Stop()
	}
}

// survive is one series of TestRestartSurvival: pc1 boots into its loop,
// the outage o of down comes runs times, then pc1's power is cut and its
// next boot counts the lines on its disk.
func survive(t *testing.T, n *testNet, dir string, o outage, mode string, down time.Duration, runs int) {
	v := startVM(t, n.vmNS, e2eVMArgs(t, n, dir, macPC1, false, "loop")...)
	_, at := waitBoot(t, v, "pc1", 0)
	w := startLoop(t, v, at, 10)
	survived, stalls := 0, []time.Duration{}
	for i := 1; i <= runs; i++ {
		r := restartUnderLoop(t, w, o, down, 20)
		restart := ""
		if r.startup > 0 {
			restart = fmt.Sprintf(" (server up in %v, the guest's login %v after)", r.startup.Round(time.Millisecond), r.reloginAfter.Round(time.Millisecond))
		}
		t.Logf("%s, down %v, outage %d: survived %v, stall %v%s %s", mode, down, i, r.survived, r.stall.Round(100*time.Millisecond), restart, r.why)
		if !r.survived {
			break // the guest's disk is gone or read-only: the runs after it would measure nothing
		}
		survived++
		stalls = append(stalls, r.stall)
	}
	acked := w.last
	v.PowerCut()
	v = startVM(t, n.vmNS, e2eVMArgs(t, n, dir, macPC1, false, "poweroff")...)
	b, _ := waitBoot(t, v, "pc1", 0)
	v.Wait(3 * time.Minute)
	lost := "none"
	if kept, err := strconv.Atoi(b.loop); err != nil || kept < acked {
		lost = fmt.Sprintf("%d acknowledged lines, the disk holds %q in order", acked, b.loop)
	}
	longest := slices.Max(append(stalls, 0))
	t.Logf("SURVIVAL %s, down %v: survived %d/%d, longest stall %v, median %v, lost writes: %s",
		mode, down, survived, runs, longest.Round(100*time.Millisecond), median(stalls).Round(100*time.Millisecond), lost)
	if survived < runs || lost != "none" || longest > down+2*time.Second {
		t.Errorf("%s, down %v: below the goal (%d/%d survived, stall <= %v, nothing lost)", mode, down, runs, runs, down+2*time.Second)
	}
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

var logTimeField = regexp.MustCompile(`time=(\S+)`)

// logTime is the time of the first line of a server's log that holds s.
func logTime(log, s string) time.Time {
	i := strings.Index(log, s)
	if i < 0 {
		return time.Time{}
	}
	line := log[strings.LastIndexByte(log[:i], '\n')+1 : i]
	if m := logTimeField.FindStringSubmatch(line); m != nil {
		if at, err := time.Parse(time.RFC3339Nano, m[1]); err == nil {
			return at
		}
	}
	return time.Time{}
}
