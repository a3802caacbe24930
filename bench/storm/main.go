//go:build linux

// Command storm is the boot-storm benchmark (issue 3, item 5): N simulated
// PXE clients boot at once against `diskless serve --dhcp full` and against
// dnsmasq (DHCP + TFTP) on the same machine, alternating, each run with a
// fresh server and lease file.
//
// Network: two namespaces joined by a veth pair, nothing on the host's
// interfaces. The server namespace has 10.77.0.1/16. The client namespace
// has 10.77.0.2/16 and a local route for the pool (10.77.128.0/20 dev lo,
// "AnyIP"): every leased address is local to it at once, answers ARP and
// can be bound, without adding addresses while the clock runs.
//
// Each client, with its own MAC and xid: DHCP DISCOVER/OFFER/REQUEST/ACK
// with the PXE options of a BIOS PXE ROM (60 PXEClient:Arch:00000, 93, 94,
// 97) and the broadcast flag, over one shared socket on :68 demultiplexed by
// xid; then TFTP of the boot file the server named (blksize 1468, tsize, like
// iPXE and PXE ROMs; retransmission after 1 s, 5 tries) from the leased
// address; then the script: for diskless an HTTP GET of
// /boot.ipxe?mac=..., for dnsmasq a TFTP read of a static boot.ipxe (the
// reference stack has no HTTP server). DHCP retransmits after 2, 4, 8 s.
// A client that has not finished within -client-timeout is lost.
//
// The clients run in a child process of this program started in the client
// namespace (-role client); it prints its results as JSON.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/diskless-boot/diskless/bench/harness"
	"github.com/diskless-boot/diskless/internal/testutil/netns"
	"github.com/diskless-boot/diskless/internal/testutil/output"
)

const (
	serverIP  = "10.77.0.1"
	clientIP  = "10.77.0.2"
	poolFirst = "10.77.128.10"
	poolLast  = "10.77.143.250"
	poolNet   = "10.77.128.0/20"
	blksize   = 1468
)

func main() {
	role := flag.String("role", "bench", "bench (orchestrate) or client (internal)")
	ns := flag.String("n", "100,500", "client counts, comma-separated")
	rounds := flag.Int("rounds", 3, "runs per server and N")
	bin := flag.String("diskless", "", "diskless binary")
	ipxeDir := flag.String("ipxe", "/usr/lib/ipxe", "directory with undionly.kpxe")
	clientTimeout := flag.Duration("client-timeout", 60*time.Second, "a client not done by then is lost")
	// client role
	count := flag.Int("count", 0, "")
	iface := flag.String("iface", "", "")
	script := flag.String("script", "", "http or tftp")
	flag.Parse()

	if *role == "client" {
		res := runClients(*count, *iface, *script, *clientTimeout)
		json.NewEncoder(os.Stdout).Encode(res)
		return
	}
	if err := harness.NeedRoot([]string{"ip", "dnsmasq"}, filepath.Join(*ipxeDir, "undionly.kpxe")); err != nil {
		fmt.Println("storm: SKIP:", err)
		os.Exit(0)
	}
	if *bin == "" {
		fmt.Fprintln(os.Stderr, "storm: -diskless BINARY is required")
		os.Exit(2)
	}
	var counts []int
	for _, s := range strings.Split(*ns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 3000 {
			fmt.Fprintf(os.Stderr, "storm: bad -n %q\n", s)
			os.Exit(2)
		}
		counts = append(counts, n)
	}
	if err := bench(counts, *rounds, *bin, *ipxeDir, *clientTimeout); err != nil {
		fmt.Fprintln(os.Stderr, "storm:", err)
		os.Exit(1)
	}
}

// result is what the client process reports.
type result struct {
	N         int             `json:"n"`
	OK        int             `json:"ok"`
	Lost      int             `json:"lost"`
	Wall      time.Duration   `json:"wall"` // storm start to the last success
	Durations []time.Duration `json:"durations"`
	// Per phase, of the clients that finished: DORA, TFTP of the boot
	// file, script.
	DHCP, TFTP, Script []time.Duration
	Errors             map[string]int `json:"errors"`
	NAKs               int64          `json:"naks"` // DHCP NAKs that sent a client back to DISCOVER
	SrvDrops           int64          `json:"-"`    // UDP RcvbufErrors in the server namespace
	CliDrops           int64          `json:"-"`    // and in the client namespace
}

type row struct {
	server string
	n      int
	res    result
}

func bench(counts []int, rounds int, bin, ipxeDir string, clientTimeout time.Duration) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var c harness.Cleanup
	defer c.Run()
	id := netns.ID()
	srvNS, cliNS := "dlstorm-s-"+id, "dlstorm-c-"+id
	srvIf, cliIf := "ss"+id, "sc"+id
	for _, ns := range []string{srvNS, cliNS} {
		if err := harness.AddNS(&c, ns); err != nil {
			return err
		}
	}
	if err := harness.Steps(
		[]string{"ip", "-n", srvNS, "link", "add", srvIf, "type", "veth", "peer", "name", cliIf, "netns", cliNS},
		[]string{"ip", "-n", srvNS, "addr", "add", serverIP + "/16", "dev", srvIf},
		[]string{"ip", "-n", srvNS, "link", "set", srvIf, "up"},
		[]string{"ip", "-n", cliNS, "addr", "add", clientIP + "/16", "dev", cliIf},
		[]string{"ip", "-n", cliNS, "link", "set", cliIf, "up"},
		[]string{"ip", "-n", cliNS, "route", "add", "local", poolNet, "dev", "lo"},
	); err != nil {
		return err
	}
	// Neighbour tables big enough for 500+ clients on one link.
	for _, ns := range []string{srvNS, cliNS} {
		harness.Sh("ip", "netns", "exec", ns, "sysctl", "-qw",
			"net.ipv4.neigh.default.gc_thresh1=4096", "net.ipv4.neigh.default.gc_thresh2=8192",
			"net.ipv4.neigh.default.gc_thresh3=16384")
	}

	work, err := os.MkdirTemp("", "diskless-storm-")
	if err != nil {
		return err
	}
	c.Add(func() { os.RemoveAll(work) })
	// dnsmasq's TFTP root: the same undionly.kpxe and a static script.
	tftpRoot := filepath.Join(work, "tftp")
	os.Mkdir(tftpRoot, 0o755)
	kpxe, err := os.ReadFile(filepath.Join(ipxeDir, "undionly.kpxe"))
	if err != nil {
		return err
	}
	os.WriteFile(filepath.Join(tftpRoot, "undionly.kpxe"), kpxe, 0o644)
	os.WriteFile(filepath.Join(tftpRoot, "boot.ipxe"), []byte("#!ipxe\nsanboot --no-describe --drive 0x80\n"), 0o644)
	img := filepath.Join(work, "disk.img")
	os.WriteFile(img, make([]byte, 1<<20), 0o644)

	var rows []row
	for _, n := range counts {
		for r := range rounds {
			order := []string{"diskless", "dnsmasq"}
			if r%2 == 1 {
				order = []string{"dnsmasq", "diskless"}
			}
			for _, server := range order {
				res, err := runOne(server, n, r, self, bin, ipxeDir, work, tftpRoot, img, srvNS, cliNS, srvIf, cliIf, clientTimeout)
				if err != nil {
					return fmt.Errorf("%s N=%d: %v", server, n, err)
				}
				fmt.Printf("run %-8s N=%-4d round %d: ok %d lost %d, %.0f clients/s, p50 %v p99 %v, NAK restarts %d, UDP rcvbuf drops server %d client %d; p50/p99 DHCP %v/%v TFTP %v/%v script %v/%v%s\n",
					server, n, r+1, res.OK, res.Lost, rate(res), harness.Percentile(res.Durations, 50).Round(time.Millisecond),
					harness.Percentile(res.Durations, 99).Round(time.Millisecond), res.NAKs, res.SrvDrops, res.CliDrops, pct(res.DHCP, 50), pct(res.DHCP, 99), pct(res.TFTP, 50), pct(res.TFTP, 99),
					pct(res.Script, 50), pct(res.Script, 99), errSummary(res.Errors))
				rows = append(rows, row{server, n, res})
			}
		}
	}
	printTable(rows, counts)
	return nil
}

func rate(r result) float64 {
	if r.Wall <= 0 {
		return 0
	}
	return float64(r.OK) / r.Wall.Seconds()
}

func errSummary(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s×%d", k, v))
	}
	slices.Sort(parts)
	return " (" + strings.Join(parts, ", ") + ")"
}

func runOne(server string, n, round int, self, bin, ipxeDir, work, tftpRoot, img, srvNS, cliNS, srvIf, cliIf string, clientTimeout time.Duration) (result, error) {
	var c harness.Cleanup
	defer c.Run()
	dir := filepath.Join(work, fmt.Sprintf("%s-%d-%d", server, n, round))
	os.Mkdir(dir, 0o755)
	var p *harness.Proc
	var err error
	script := "http"
	switch server {
	case "diskless":
		p, err = harness.Start(&c, server, srvNS, bin, "serve", "--interface", srvIf, "--dhcp", "full",
			"--dhcp-range", poolFirst+"-"+poolLast, "--host", "02:00:00:00:00:01="+img, "--data-dir", filepath.Join(dir, "state"))
		if err == nil {
			_, _, err = p.WaitFor(30*time.Second, "msg=serving")
		}
	case "dnsmasq":
		script = "tftp"
		p, err = harness.Start(&c, server, srvNS, "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
			"--interface="+srvIf, "--bind-interfaces", "--dhcp-range="+poolFirst+","+poolLast+",1h",
			"--dhcp-leasefile="+filepath.Join(dir, "leases"), "--pid-file="+filepath.Join(dir, "pid"),
			// --no-ping: the AnyIP client namespace answers every ping, and
			// it is dnsmasq's fastest setting anyway.
			"--no-ping", "--dhcp-lease-max=10000", "--log-facility=-",
			"--enable-tftp", "--tftp-root="+tftpRoot, "--tftp-max=10000", "--dhcp-boot=undionly.kpxe,,"+serverIP)
		if err == nil {
			_, _, err = p.WaitFor(30*time.Second, "TFTP root")
		}
	}
	if err != nil {
		if p != nil {
			err = fmt.Errorf("%v\n%s", err, output.Tail(p.Output(), 3000))
		}
		return result{}, err
	}
	srvDrops0, cliDrops0 := udpRcvbufErrors(srvNS), udpRcvbufErrors(cliNS)
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout+60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", cliNS, self, "-role", "client",
		"-count", strconv.Itoa(n), "-iface", cliIf, "-script", script, "-client-timeout", clientTimeout.String())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return result{}, fmt.Errorf("client process: %v: %s", err, stderr.String())
	}
	var res result
	if err := json.Unmarshal(out, &res); err != nil {
		return result{}, fmt.Errorf("client output: %v", err)
	}
	res.SrvDrops = udpRcvbufErrors(srvNS) - srvDrops0
	res.CliDrops = udpRcvbufErrors(cliNS) - cliDrops0
	if select1(p.Exited()) {
		return result{}, fmt.Errorf("%s exited during the storm:\n%s", server, output.Tail(p.Output(), 3000))
	}
	return res, nil
}

func select1(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func printTable(rows []row, counts []int) {
	fmt.Println()
	fmt.Println("| server | N | runs | clients/s (median) | p50 (median) | p99 (median) | lost (total) | NAK restarts (total) | UDP drops server/client (total) |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	for _, n := range counts {
		for _, server := range []string{"diskless", "dnsmasq"} {
			var rates []float64
			var p50, p99 []time.Duration
			lost, runs := 0, 0
			var naks, sd, cd int64
			for _, r := range rows {
				if r.server != server || r.n != n {
					continue
				}
				runs++
				rates = append(rates, rate(r.res))
				p50 = append(p50, harness.Percentile(r.res.Durations, 50))
				p99 = append(p99, harness.Percentile(r.res.Durations, 99))
				lost += r.res.Lost
				naks += r.res.NAKs
				sd += r.res.SrvDrops
				cd += r.res.CliDrops
			}
			slices.Sort(rates)
			fmt.Printf("| %s | %d | %d | %.0f | %v | %v | %d | %d | %d/%d |\n", server, n, runs, rates[len(rates)/2],
				harness.Percentile(p50, 50).Round(time.Millisecond), harness.Percentile(p99, 50).Round(time.Millisecond), lost, naks, sd, cd)
		}
	}
}

// ---- client side ----

var nakCount atomic.Int64

func runClients(n int, iface, script string, timeout time.Duration) result {
	res := result{N: n, Errors: map[string]int{}}
	d, err := harness.ListenDHCP(iface, nil)
	if err != nil {
		res.Lost = n
		res.Errors["listen: "+err.Error()] = n
		return res
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := make(chan struct{})
	var t0 time.Time
	var last time.Time
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var rnd [4 + 16 + 3]byte
			rand.Read(rnd[:])
			xid := binary.BigEndian.Uint32(rnd[:4])
			mac := net.HardwareAddr{0x02, rnd[20], rnd[21], rnd[22], byte(i >> 8), byte(i)}
			ch := make(chan []byte, 4)
			d.Register(xid, ch)
			<-start
			began := time.Now()
			var ph phases
			err := client(d, ch, xid, mac, rnd[4:20], script, began.Add(timeout), &ph)
			end := time.Now()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.Lost++
				msg := err.Error()
				if len(msg) > 60 {
					msg = msg[:60]
				}
				res.Errors[msg]++
				return
			}
			res.OK++
			res.Durations = append(res.Durations, end.Sub(began))
			res.DHCP = append(res.DHCP, ph.dhcp.Sub(began))
			res.TFTP = append(res.TFTP, ph.tftp.Sub(ph.dhcp))
			res.Script = append(res.Script, end.Sub(ph.tftp))
			if end.After(last) {
				last = end
			}
		}()
	}
	time.Sleep(100 * time.Millisecond) // every goroutine parked at start
	t0 = time.Now()
	close(start)
	wg.Wait()
	res.NAKs = nakCount.Load()
	if res.OK > 0 {
		res.Wall = last.Sub(t0)
	}
	return res
}

// phases records when a client finished DHCP and the boot file.
type phases struct{ dhcp, tftp time.Time }

func client(d *harness.DHCPConn, ch chan []byte, xid uint32, mac net.HardwareAddr, uuid []byte, script string, deadline time.Time, ph *phases) error {
	var offer, ack harness.DHCPReply
	for naks := 0; ; naks++ {
		var err error
		offer, err = d.Exchange(ch, harness.BuildDHCP(harness.DHCPDiscover, xid, mac, uuid, netip.Addr{}, netip.Addr{}), harness.DHCPOffer, deadline)
		if err != nil {
			return fmt.Errorf("offer: %w", err)
		}
		ack, err = d.Exchange(ch, harness.BuildDHCP(harness.DHCPRequest, xid, mac, uuid, offer.YIAddr, offer.ServerID), harness.DHCPAck, deadline)
		if errors.Is(err, harness.ErrNAK) && naks < 3 {
			nakCount.Add(1)
			// RFC 2131 3.1: a NAK sends the client back to DISCOVER.
			continue
		}
		if err != nil {
			return fmt.Errorf("ack: %w", err)
		}
		break
	}
	if ack.File == "" {
		ack.File = offer.File
	}
	tftpServer := ack.SIAddr
	if !tftpServer.IsValid() || tftpServer.IsUnspecified() {
		tftpServer = ack.ServerID
	}
	if ack.File == "" {
		return errors.New("no boot file in the ACK")
	}
	local := ack.YIAddr
	ph.dhcp = time.Now()
	if _, err := harness.TFTPGet(local, tftpServer, ack.File, blksize, deadline); err != nil {
		return fmt.Errorf("tftp %s: %w", ack.File, err)
	}
	ph.tftp = time.Now()
	switch script {
	case "http":
		tr := &http.Transport{DisableKeepAlives: true, DialContext: (&net.Dialer{
			LocalAddr: &net.TCPAddr{IP: local.AsSlice()}}).DialContext}
		hc := &http.Client{Transport: tr, Timeout: time.Until(deadline)}
		resp, err := hc.Get(fmt.Sprintf("http://%s:8080/boot.ipxe?mac=%s", tftpServer, mac))
		if err != nil {
			return fmt.Errorf("script: %w", err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || !bytes.HasPrefix(body, []byte("#!ipxe")) {
			return fmt.Errorf("script: status %d, %v", resp.StatusCode, err)
		}
	case "tftp":
		body, err := harness.TFTPGet(local, tftpServer, "boot.ipxe", blksize, deadline)
		if err != nil {
			return fmt.Errorf("tftp script: %w", err)
		}
		if !bytes.HasPrefix(body, []byte("#!ipxe")) {
			return errors.New("tftp script: not an iPXE script")
		}
	}
	return nil
}

// udpRcvbufErrors is the UDP RcvbufErrors counter of namespace ns
// (/proc/net/snmp is per namespace): datagrams dropped on a full socket.
func udpRcvbufErrors(ns string) int64 {
	out, err := exec.Command("ip", "netns", "exec", ns, "cat", "/proc/net/snmp").Output()
	if err != nil {
		return 0
	}
	var names []string
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "RcvbufErrors" && i < len(f) {
				v, _ := strconv.ParseInt(f[i], 10, 64)
				return v
			}
		}
	}
	return 0
}

func pct(d []time.Duration, p float64) time.Duration {
	return harness.Percentile(d, p).Round(time.Millisecond)
}
