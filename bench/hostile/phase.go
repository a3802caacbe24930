//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/diskless-boot/diskless/bench/harness"
	"github.com/diskless-boot/diskless/internal/testutil/bootdisk"
	"github.com/diskless-boot/diskless/internal/testutil/netns"
	"github.com/diskless-boot/diskless/internal/testutil/output"
	"github.com/diskless-boot/diskless/internal/testutil/proc"
)

// bench is one run of the harness.
type bench struct {
	o    *options
	self string
	work string
	site *site
	net  *network
	// baseline is the phase of -baseline once.
	baseline *phaseResult
}

// run prepares the store and the network, then runs the phases.
func run(ctx context.Context, o *options) (*report, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	id := o.id
	if id == "" {
		id = netns.ID()
	}
	work := o.workDir
	if work == "" {
		work, err = os.MkdirTemp("", "diskless-hostile-")
	} else {
		err = os.Mkdir(work, 0o700)
	}
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	if o.logDir != "" {
		if err := os.MkdirAll(o.logDir, 0o755); err != nil {
			return nil, err
		}
	}
	var c harness.Cleanup
	defer c.Run()
	s, err := newSite(o.bin, work)
	if err != nil {
		return nil, err
	}
	n, err := newNetwork(&c, id)
	if err != nil {
		return nil, err
	}
	b := &bench{o: o, self: self, work: work, site: s, net: n}
	rep := newReport(o)
	if o.baseline == "once" {
		ph, err := b.phase(ctx, "", 0)
		if err != nil {
			return rep, fmt.Errorf("baseline: %w", err)
		}
		b.baseline = ph
		rep.Baseline = ph
		fmt.Printf("baseline: boot %s, other host's I/O p50 %v p99 %v\n", ph.Baseline, ph.IOWithout.P50, ph.IOWithout.P99)
	}
	for i, a := range o.attackList() {
		ph, err := b.phase(ctx, a, i+1)
		if err != nil {
			return rep, fmt.Errorf("%s: %w", a, err)
		}
		rep.Phases = append(rep.Phases, ph)
		fmt.Println(ph.summary())
	}
	return rep, nil
}

// phaseResult is what one attack (or the -baseline once phase, Attack "")
// measured.
type phaseResult struct {
	Attack      string `json:"attack"`
	Description string `json:"description"`
	// Boots without the attack (this phase's or the baseline phase's) and
	// under it.
	Baseline bootSet `json:"baseline"`
	Attacked bootSet `json:"attacked"`
	// The other host's I/O before and during the attack.
	IOWithout ioWindow `json:"io_without"`
	IOWith    ioWindow `json:"io_with"`
	IO        ioResult `json:"io"`
	// A PXE ROM's TFTP fetch of undionly.kpxe without and with the attack.
	ProbeWithout probeResult `json:"probe_without"`
	ProbeWith    probeResult `json:"probe_with"`
	// The server over the attack: peak RSS (VmHWM, whole phase), CPU
	// seconds and log lines from the attack's start to its end.
	PeakRSSKiB    int64   `json:"peak_rss_kib"`
	CPUSeconds    float64 `json:"cpu_seconds"`
	LogLines      int     `json:"log_lines"`
	LogBytes      int     `json:"log_bytes"`
	AttackSeconds float64 `json:"attack_seconds"`
	// AttackerCPU is the attacker's own CPU seconds: it shares the
	// machine with the server and QEMU.
	AttackerCPU float64 `json:"attacker_cpu_seconds"`
	// Panic is the first line of the server's output that mentions a
	// panic; Exited says the server ended before it was stopped.
	Panic  string `json:"panic,omitempty"`
	Exited string `json:"exited,omitempty"`
	// Reinstated counts log lines of a session of pc1 or other being
	// reinstated (knocked off) while the attack ran.
	Reinstated int          `json:"reinstated"`
	Result     attackResult `json:"result"`
	// Notes are what the harness saw besides the goal (a server that
	// needed SIGKILL to stop, an attacker that did not finish).
	Notes []string `json:"notes,omitempty"`
	Goals []goal   `json:"goals"`
	Pass  bool     `json:"pass"`
}

// bootSet is the boots of one kind in a phase.
type bootSet struct {
	Seconds  []float64 `json:"seconds"`  // of the boots that reached the marker
	Failures []string  `json:"failures"` // why the others did not
}

func (b bootSet) median() float64 {
	if len(b.Seconds) == 0 {
		return 0
	}
	s := slices.Clone(b.Seconds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (b bootSet) String() string {
	if len(b.Seconds) == 0 && len(b.Failures) == 0 {
		return "-"
	}
	s := fmt.Sprintf("%.2f s", b.median())
	if len(b.Seconds) == 0 {
		s = "failed"
	}
	if len(b.Failures) > 0 && len(b.Seconds) > 0 {
		s += fmt.Sprintf(" (%d failed)", len(b.Failures))
	}
	return s
}

// goal is one item of the goal, checked.
type goal struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// phase runs one attack (or, for "", the baseline only) on a fresh
// server; seq numbers its files.
func (b *bench) phase(ctx context.Context, attack string, seq int) (*phaseResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o, n := b.o, b.net
	name := attack
	if name == "" {
		name = "baseline"
	}
	ph := &phaseResult{Attack: attack}
	if a, ok := attacks[attack]; ok {
		ph.Description = a.describe(o.sz)
	}
	fmt.Printf("== %s: %s\n", name, ph.Description)
	var c harness.Cleanup
	defer c.Run()
	// Files of this phase: dir/..., logDir/NN-name.*
	tag := fmt.Sprintf("%02d-%s", seq, name)
	dir := filepath.Join(b.work, tag)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	var logs []*harness.Proc
	defer func() {
		if o.logDir == "" {
			return
		}
		for _, p := range logs {
			os.WriteFile(filepath.Join(o.logDir, tag+"."+p.Name()+".log"), []byte(p.Output()), 0o644)
		}
		for _, f := range []string{"io.json", "attack.json", "probe-without.json", "probe-with.json"} {
			if data, err := os.ReadFile(filepath.Join(dir, f)); err == nil {
				os.WriteFile(filepath.Join(o.logDir, tag+"."+f), data, 0o644)
			}
		}
	}()

	// The server, on a fresh copy of the store.
	data, err := b.site.dataDir(dir)
	if err != nil {
		return nil, err
	}
	cfg, err := serverConfig(dir, n.srvIf, data)
	if err != nil {
		return nil, err
	}
	srv, err := harness.Start(&c, "server", n.srvNS, o.bin, "serve", "--config", cfg)
	if err != nil {
		return nil, err
	}
	logs = append(logs, srv)
	if err := waitCtx(ctx, srv, 30*time.Second, "msg=serving"); err != nil {
		return nil, fmt.Errorf("diskless serve: %v\n%s", err, output.Tail(srv.Output(), 3000))
	}

	// The other host, logged in before anything else happens.
	io, err := startRole(&c, b.self, "io", n.othNS, filepath.Join(dir, "io.json"), "-role", "io", "-site", b.site.infoFile,
		"-io-rate", fmt.Sprint(o.ioRate), "-stall", o.stall.String())
	if err != nil {
		return nil, err
	}
	logs = append(logs, io.p)
	ready, err := io.waitReady(ctx, 30*time.Second)
	if err != nil {
		return nil, fmt.Errorf("the other host did not log in: %w", err)
	}
	otherSession := strings.TrimSpace(strings.TrimPrefix(ready, "session"))

	// Unattacked boots.
	if attack == "" || o.baseline == "each" {
		io.send("window baseline")
		for i := range o.baselineBoots {
			d, err := b.boot(ctx, &logs, fmt.Sprintf("baseline-%d", i+1))
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			ph.Baseline.add(d, err)
		}
		ph.ProbeWithout = b.probe(ctx, &c, dir, "probe-without")
	} else {
		ph.Baseline = b.baseline.Baseline
		ph.ProbeWithout = b.baseline.ProbeWithout
	}

	// The attack.
	var atk *roleProc
	pid := srv.Pid()
	cpu0 := harness.CPUSeconds(pid)
	logOff := len(srv.Output())
	t0 := time.Now()
	io.send("window attack")
	if attack != "" {
		atk, err = startRole(&c, b.self, "attack", n.atkNS, filepath.Join(dir, "attack.json"),
			append([]string{"-role", "attack", "-attack", attack, "-site", b.site.infoFile, "-iface", n.atkIf,
				"-other-session", otherSession, "-duration", o.duration.String()}, o.sz.flags()...)...)
		if err != nil {
			return nil, err
		}
		logs = append(logs, atk.p)
		if _, err := atk.waitReady(ctx, o.ramp); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			ph.Notes = append(ph.Notes, fmt.Sprintf("the attack was not in place after %v; the machine booted anyway", o.ramp))
		}
		if attacks[attack].watchSessions {
			stop := b.forwardSessions(srv, atk, logOff)
			defer stop()
		}
	}
	for i := range o.boots {
		d, err := b.boot(ctx, &logs, fmt.Sprintf("attacked-%d", i+1))
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		ph.Attacked.add(d, err)
		if err != nil {
			break // the goal failed; more boots would only take time
		}
	}
	ph.ProbeWith = b.probe(ctx, &c, dir, "probe-with")
	if attack != "" {
		select {
		case <-time.After(time.Until(t0.Add(o.duration))):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		ph.AttackerCPU = harness.CPUSeconds(atk.p.Pid())
		if err := atk.finish(60*time.Second, &ph.Result); err != nil {
			ph.Notes = append(ph.Notes, "attacker: "+err.Error())
		}
	}
	t1 := time.Now()
	ph.AttackSeconds = t1.Sub(t0).Seconds()
	ph.CPUSeconds = harness.CPUSeconds(pid) - cpu0
	ph.PeakRSSKiB, _ = harness.StatusKiB(pid, "VmHWM")
	out := srv.Output()
	window := out[min(logOff, len(out)):]
	ph.LogLines, ph.LogBytes = strings.Count(window, "\n"), len(window)
	select {
	case <-srv.Exited():
		ph.Exited = fmt.Sprintf("the server exited during the phase: %v", srv.Wait())
	default:
	}

	if err := io.finish(2*time.Minute, &ph.IO); err != nil {
		return nil, fmt.Errorf("the other host: %w", err)
	}
	for _, w := range ph.IO.Windows {
		switch w.Name {
		case "baseline":
			ph.IOWithout = w
		case "attack":
			ph.IOWith = w
		}
	}
	if attack != "" && o.baseline == "once" {
		ph.IOWithout = b.baseline.IOWithout
	}
	if ph.Exited == "" {
		if err := srv.Stop(); err != nil {
			ph.Notes = append(ph.Notes, "server: "+err.Error())
		}
	}
	out = srv.Output()
	ph.Panic = panicLine(out)
	ph.Reinstated = countReinstated(out[min(logOff, len(out)):], b.site.info.Boot.InitiatorIQN, b.site.info.Other.InitiatorIQN)
	ph.judge(o)
	return ph, nil
}

func (s *bootSet) add(d time.Duration, err error) {
	if err != nil {
		s.Failures = append(s.Failures, err.Error())
		return
	}
	s.Seconds = append(s.Seconds, d.Seconds())
}

// boot powers the QEMU machine on and waits for its disk's marker.
func (b *bench) boot(ctx context.Context, logs *[]*harness.Proc, tag string) (time.Duration, error) {
	var c harness.Cleanup
	defer c.Run()
	vm, err := harness.StartConfig(&c, proc.Config{Name: "qemu-" + tag, StopSignal: syscall.SIGKILL}, b.net.hvNS,
		"qemu-system-x86_64", "-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
		"-m", "128", "-machine", "graphics=off",
		"-netdev", "tap,id=n0,ifname="+b.net.tap+",script=no,downscript=no",
		"-device", "e1000,netdev=n0,mac="+bootMAC, "-boot", "n",
		// The boot sector ends with OUT 0xf4: QEMU exits at once.
		"-device", "isa-debug-exit,iobase=0xf4,iosize=0x04")
	if err != nil {
		return 0, err
	}
	*logs = append(*logs, vm)
	i, took, err := waitIndex(ctx, vm, b.o.bootTimeout, b.site.marker, bootdisk.ReadError, "Could not boot", "No bootable device")
	if err != nil {
		return 0, fmt.Errorf("no marker: %v; console: %s", err, lastLine(vm.Output()))
	}
	if i != 0 {
		return 0, fmt.Errorf("boot failed: %s", lastLine(vm.Output()))
	}
	return took, nil
}

var ansi = regexp.MustCompile(`\x1b(\[[0-9;?]*[A-Za-z]|c)`)

// lastLine is the console's last non-empty line, for a failure message.
func lastLine(s string) string {
	s = ansi.ReplaceAllString(s, "")
	lines := strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' })
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			return fmt.Sprintf("%.160q", l)
		}
	}
	return "(empty)"
}

// probe fetches undionly.kpxe by TFTP from the other host's namespace, as
// a PXE ROM would.
func (b *bench) probe(ctx context.Context, c *harness.Cleanup, dir, name string) probeResult {
	var r probeResult
	p, err := startRole(c, b.self, name, b.net.othNS, filepath.Join(dir, name+".json"), "-role", "probe",
		"-site", b.site.infoFile, "-ipxe", b.o.ipxeDir)
	if err == nil {
		err = waitCtx(ctx, p.p, time.Minute, "done")
	}
	if err == nil {
		err = p.finish(10*time.Second, &r)
	}
	if err != nil {
		r.Err = err.Error()
	}
	return r
}

// forwardSessions tells the attacker about every session of pc1 the
// server logs in from logOff on ("session ISID TSIH"), as one who watches
// the wire would learn it. stop ends it.
func (b *bench) forwardSessions(srv *harness.Proc, atk *roleProc, logOff int) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	iqn := "iqn=" + b.site.info.Boot.InitiatorIQN + " "
	go func() {
		defer close(finished)
		seen := map[string]bool{}
		off := logOff
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			out := srv.Output()
			if off > len(out) {
				off = len(out) // output bounded: older part dropped
			}
			chunk := out[off:]
			last := strings.LastIndexByte(chunk, '\n')
			if last < 0 {
				continue
			}
			off += last + 1
			for _, l := range strings.Split(chunk[:last], "\n") {
				if !strings.Contains(l, `msg="iscsi login"`) || !strings.Contains(l, iqn) {
					continue
				}
				isid, tsih := logValue(l, "isid"), logValue(l, "tsih")
				if isid != "" && !seen[isid+"/"+tsih] {
					seen[isid+"/"+tsih] = true
					atk.send("session %s/%s", isid, tsih)
				}
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// logValue returns the value of key in a logfmt line.
func logValue(line, key string) string {
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		return ""
	}
	v := line[i+len(key)+2:]
	if e := strings.IndexByte(v, ' '); e >= 0 {
		v = v[:e]
	}
	return strings.Trim(v, `"`)
}

var panicRE = regexp.MustCompile(`(?i)\bpanic`)

// panicLine is the first line of out that mentions a panic: a crash's
// "panic:" or a recovered one the server logged.
func panicLine(out string) string {
	for _, l := range strings.Split(out, "\n") {
		if panicRE.MatchString(l) {
			return fmt.Sprintf("%.200s", l)
		}
	}
	return ""
}

// countReinstated counts log lines of a session of one of iqns being
// reinstated or knocked off by another login.
func countReinstated(out string, iqns ...string) int {
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if !strings.Contains(l, "reinstat") {
			continue
		}
		for _, q := range iqns {
			if strings.Contains(l, q) {
				n++
				break
			}
		}
	}
	return n
}

// judge checks the goal.
func (ph *phaseResult) judge(o *options) {
	add := func(name string, ok bool, format string, args ...any) {
		ph.Goals = append(ph.Goals, goal{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
	}
	base := ph.Baseline.median()
	switch {
	case len(ph.Baseline.Seconds) == 0:
		add("boot", false, "no unattacked boot to compare with: %s", strings.Join(ph.Baseline.Failures, "; "))
	case len(ph.Attacked.Failures) > 0:
		add("boot", false, "a boot under attack failed: %s", strings.Join(ph.Attacked.Failures, "; "))
	default:
		// Every boot, not their median: the goal is that every
		// legitimate boot succeeds within the bound.
		worst := slices.Max(ph.Attacked.Seconds)
		add("boot", worst <= o.bootRatio*base, "%s under attack (slowest %.2fx), %.2f s without (at most %.2gx)",
			secondsList(ph.Attacked.Seconds), worst/base, base, o.bootRatio)
	}
	switch {
	case ph.ProbeWith.OK:
		add("pxe-tftp", true, "undionly.kpxe fetched in %.0f ms (%.0f ms without)", ph.ProbeWith.Seconds*1000, ph.ProbeWithout.Seconds*1000)
	default:
		add("pxe-tftp", false, "a PXE ROM's TFTP fetch of undionly.kpxe failed: %s", ph.ProbeWith.Err)
	}
	w := ph.IOWith
	add("io", w.Errors == 0 && w.Ops > 0 && w.MaxGap < o.stall.Seconds() && w.Reconnects == 0,
		"%d ops, %d errors, %d reconnects, longest stall %.2f s (below %v)%s", w.Ops, w.Errors, w.Reconnects, w.MaxGap, o.stall, firstErr(w.FirstError))
	limit := int64(o.rssLimitMiB) << 10
	add("rss", ph.PeakRSSKiB > 0 && ph.PeakRSSKiB <= limit, "peak %d MiB (bound %d MiB)", ph.PeakRSSKiB>>10, o.rssLimitMiB)
	add("no-panic", ph.Panic == "" && ph.Exited == "", "%s", orText(ph.Panic+ph.Exited, "none"))
	var lost []string
	if ph.IO.Lost > 0 {
		lost = append(lost, fmt.Sprintf("%d acknowledged writes of the other host read back wrong", ph.IO.Lost))
	}
	if ph.IO.VerifyErrors > 0 {
		lost = append(lost, fmt.Sprintf("%d blocks of the other host unreadable after the attack", ph.IO.VerifyErrors))
	}
	if ph.Reinstated > 0 {
		lost = append(lost, fmt.Sprintf("%d sessions of pc1/other reinstated by another login", ph.Reinstated))
	}
	lost = append(lost, ph.Result.Breaches...)
	add("nothing-lost", len(lost) == 0, "%s", orText(strings.Join(lost, "; "), fmt.Sprintf("%d blocks verified", ph.IO.Verified)))
	ph.Pass = true
	for _, g := range ph.Goals {
		ph.Pass = ph.Pass && g.OK
	}
}

func secondsList(s []float64) string {
	var l []string
	for _, x := range s {
		l = append(l, fmt.Sprintf("%.2f", x))
	}
	return strings.Join(l, ", ") + " s"
}

func firstErr(s string) string {
	if s == "" {
		return ""
	}
	return "; first error: " + s
}

func orText(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

// summary is one line per phase while the run goes on.
func (ph *phaseResult) summary() string {
	var failed []string
	for _, g := range ph.Goals {
		if !g.OK {
			failed = append(failed, g.Name+": "+g.Detail)
		}
	}
	res := "PASS"
	if !ph.Pass {
		res = "FAIL (" + strings.Join(failed, "; ") + ")"
	}
	with := "failed"
	if len(ph.Attacked.Failures) == 0 {
		with = secondsList(ph.Attacked.Seconds)
	}
	return fmt.Sprintf("   %s: boot %s -> %s, I/O p99 %.1f -> %.1f ms, RSS %d MiB, CPU %.1f s, %.0f log lines/s: %s",
		ph.Attack, ph.Baseline, with, ph.IOWithout.P99*1000, ph.IOWith.P99*1000, ph.PeakRSSKiB>>10, ph.CPUSeconds,
		float64(ph.LogLines)/max(ph.AttackSeconds, 1e-9), res)
}
