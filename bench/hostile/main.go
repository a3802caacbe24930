//go:build linux

// Command hostile is the hostile-load harness of issue 13 (proof item 1):
// it runs attacks against `diskless serve --dhcp full`, each for a bounded
// time, while a real QEMU machine PXE-boots through it and another host
// runs I/O, and reports per attack the legitimate boot time with and
// without the attack, the other host's I/O latency, the server's peak RSS,
// CPU time and log lines per second, and pass/fail against the issue's
// goal.
//
// The network is namespaces only (nothing on the machine's interfaces):
//
//	ns hv:  bridge ── tap (QEMU: SeaBIOS + iPXE ROM, disk-less, MAC 52:54:00:12:34:56)
//	          ├── veth ══ ns srv: 10.77.0.1/16   diskless serve (DHCP full, TFTP, HTTP, iSCSI)
//	          ├── veth ══ ns oth: 10.77.0.2/16   the other host: Go initiator, 4 KiB I/O
//	          └── veth ══ ns atk: 10.77.1.1-N/16 the attacker (N = -addrs, at most 50)
//
// The state store is made with the CLI before the server starts: image
// "golden" (the bootdisk MBR marker image), image "big" (1 GiB, empty),
// and three hosts with CHAP and mutual CHAP (the default): pc1 (the QEMU
// machine, volatile overlay of golden, reserved 10.77.0.50), other (the
// I/O host, persistent overlay) and writer (a host the attacker owns,
// on big, for the WRITE-without-Data-Out attack). Every attack gets a
// fresh server on a fresh copy of that store.
//
// The orchestrating process opens no socket: all traffic comes from
// QEMU, diskless and this program re-executed inside the namespaces with
// -role io (the other host), -role attack (one attack) or -role probe (a
// PXE ROM's TFTP fetch of undionly.kpxe: the iPXE ROM QEMU boots with
// never uses TFTP, so this probe stands for the machines that do). The
// roles are driven over their standard input and write their results as
// JSON to a file.
//
// Each run is bounded: the attack's -duration (at least until the boot
// under attack ends), -boot-timeout per boot, -timeout for everything;
// SIGINT and SIGTERM stop the run, and every path removes the namespaces
// and stops every process (which also get SIGKILL if this program dies).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/diskless-boot/diskless/bench/harness"
)

func main() {
	role := flag.String("role", "bench", "bench (orchestrate), or internal: io, attack, probe")
	var o options
	flag.StringVar(&o.bin, "diskless", "", "diskless binary (required)")
	flag.StringVar(&o.attacks, "attacks", strings.Join(attackNames(), ","), "attacks to run, comma-separated")
	flag.DurationVar(&o.duration, "duration", 60*time.Second, "how long each attack runs (at least until the boot under it ends)")
	flag.DurationVar(&o.ramp, "ramp", 15*time.Second, "longest wait for an attack to be in place before the machine boots")
	flag.DurationVar(&o.bootTimeout, "boot-timeout", 90*time.Second, "a boot without its marker by then failed")
	flag.StringVar(&o.baseline, "baseline", "each", "unattacked boots: each (before every attack, on its server) or once (one phase at the start)")
	flag.IntVar(&o.baselineBoots, "baseline-boots", 1, "unattacked boots per baseline (the median is the reference)")
	flag.IntVar(&o.boots, "boots", 3, "boots under each attack, one after the other (stops at the first that fails)")
	flag.IntVar(&o.rssLimitMiB, "rss-limit", 512, "the server's RSS bound in MiB (goal)")
	flag.DurationVar(&o.stall, "stall", 2*time.Second, "the other host's I/O stopped when no operation completes for this long (goal)")
	flag.Float64Var(&o.bootRatio, "boot-ratio", 1.5, "a boot under attack may take this many times the unattacked one (goal)")
	flag.IntVar(&o.ioRate, "io-rate", 100, "the other host's 4 KiB operations per second (alternating write and read, one at a time)")
	flag.StringVar(&o.logDir, "logdir", "", "keep every phase's server log, console, role output and results here")
	flag.StringVar(&o.jsonOut, "json", "", "write the report as JSON to this file")
	flag.StringVar(&o.workDir, "workdir", "", "put the run's files (stores, images) here (default: a new directory under $TMPDIR); removed at the end")
	flag.StringVar(&o.id, "id", "", "name tag of the namespaces (default random; scripts/bench-hostile.sh passes one so it can sweep up after a SIGKILL)")
	flag.DurationVar(&o.timeout, "timeout", 45*time.Minute, "bound on the whole run")
	flag.StringVar(&o.ipxeDir, "ipxe", "/usr/lib/ipxe", "directory with undionly.kpxe (TFTP probe)")
	// Attack sizes (issue 13's figures by default).
	flag.IntVar(&o.sz.addrs, "addrs", 50, "attacker addresses for the attacks from many addresses (1-50)")
	flag.IntVar(&o.sz.idleConns, "idle-conns", 5000, "iscsi-idle-*: idle TCP connections to the portal")
	flag.IntVar(&o.sz.heldLogins, "held-logins", 1000, "iscsi-held: logins stopped half way (half in the middle of a PDU, half after the first step)")
	flag.IntVar(&o.sz.discovery, "discovery", 1000, "iscsi-held: idle discovery sessions")
	flag.IntVar(&o.sz.tftpRequests, "tftp-requests", 1000, "tftp-hold: read requests with timeout=255 that never ACK")
	flag.IntVar(&o.sz.dhcpPackets, "dhcp-packets", 100000, "dhcp-flood: DISCOVERs and REQUESTs from random MACs over -duration")
	flag.IntVar(&o.sz.writeSessions, "write-sessions", 8, "write-no-data: sessions of the writer host")
	flag.IntVar(&o.sz.writeKiB, "write-kib", 16384, "write-no-data: ExpectedDataTransferLength of each WRITE in KiB (halved when refused as too long)")
	flag.IntVar(&o.sz.slowloris, "slowloris-conns", 500, "slowloris: HTTP connections sending their headers byte by byte")
	flag.DurationVar(&o.sz.slowlorisEvery, "slowloris-every", time.Second, "slowloris: one byte per connection this often")
	flag.IntVar(&o.sz.impersonateRate, "impersonate-rate", 20, "impersonate: attempts per second")
	// Role flags (internal).
	var ro roleOptions
	flag.StringVar(&ro.site, "site", "", "")
	flag.StringVar(&ro.result, "result", "", "")
	flag.StringVar(&ro.attack, "attack", "", "")
	flag.StringVar(&ro.iface, "iface", "", "")
	flag.StringVar(&ro.otherSession, "other-session", "", "")
	flag.Parse()

	if *role != "bench" {
		// A Ctrl-C reaches the whole process group: the roles leave
		// stopping to the orchestrator, which collects their results.
		signal.Ignore(os.Interrupt)
	}
	switch *role {
	case "io":
		exitOn(runIO(ro, o))
		return
	case "attack":
		exitOn(runAttack(ro, o))
		return
	case "probe":
		exitOn(runProbe(ro, o.ipxeDir))
		return
	case "bench":
	default:
		fmt.Fprintf(os.Stderr, "hostile: unknown -role %q\n", *role)
		os.Exit(2)
	}

	if err := harness.NeedRoot([]string{"ip", "qemu-system-x86_64"}, ipxeROM, o.ipxeDir+"/undionly.kpxe"); err != nil {
		fmt.Println("hostile: SKIP:", err)
		return
	}
	if o.bin == "" {
		fmt.Fprintln(os.Stderr, "hostile: -diskless BINARY is required")
		os.Exit(2)
	}
	if err := o.check(); err != nil {
		fmt.Fprintln(os.Stderr, "hostile:", err)
		os.Exit(2)
	}
	// SIGINT/SIGTERM cancel the run; the deferred cleanups then stop the
	// processes and remove the namespaces.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	rep, err := run(ctx, &o)
	if rep != nil {
		rep.print(os.Stdout)
		if o.jsonOut != "" {
			if werr := rep.writeJSON(o.jsonOut); werr != nil && err == nil {
				err = werr
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "hostile:", err)
		os.Exit(1)
	}
}

func exitOn(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "hostile:", err)
		os.Exit(1)
	}
}

// options are the orchestrator's flags; the roles get the sizes too.
type options struct {
	bin, attacks, baseline, logDir, jsonOut, id, ipxeDir, workDir string
	duration, ramp, bootTimeout, stall, timeout                   time.Duration
	baselineBoots, boots, rssLimitMiB, ioRate                     int
	bootRatio                                                     float64
	sz                                                            sizes
}

// sizes are the attacks' sizes.
type sizes struct {
	addrs, idleConns, heldLogins, discovery, tftpRequests, dhcpPackets int
	writeSessions, writeKiB, slowloris, impersonateRate                int
	slowlorisEvery                                                     time.Duration
}

func (o *options) check() error {
	for _, a := range o.attackList() {
		if _, ok := attacks[a]; !ok {
			return fmt.Errorf("unknown attack %q (known: %s)", a, strings.Join(attackNames(), ", "))
		}
	}
	if o.sz.addrs < 1 || o.sz.addrs > maxAddrs {
		return fmt.Errorf("-addrs %d: 1-%d", o.sz.addrs, maxAddrs)
	}
	if o.baseline != "each" && o.baseline != "once" {
		return fmt.Errorf("-baseline %q: each or once", o.baseline)
	}
	if o.baselineBoots < 1 || o.boots < 1 || o.ioRate < 1 || o.duration <= 0 || o.bootTimeout <= 0 {
		return fmt.Errorf("-baseline-boots, -boots, -io-rate, -duration and -boot-timeout must be positive")
	}
	return nil
}

func (o *options) attackList() []string {
	var l []string
	for _, a := range strings.Split(o.attacks, ",") {
		if a = strings.TrimSpace(a); a != "" {
			l = append(l, a)
		}
	}
	return l
}

// roleOptions are the flags only the roles use.
type roleOptions struct {
	site, result, attack, iface string
	// otherSession is "ISID/TSIH" of the other host's session, for the
	// impersonation attack.
	otherSession string
}
