//go:build linux

// Command hosts measures many hosts reading one golden image at once (issue
// 8, item 5): it logs N hosts of a running `diskless serve` in at the same
// time (one iSCSI session each, as their initramfs would), has every one
// read the same range of its copy-on-write disk - blocks none of them wrote,
// so all reads come from the one shared version file - and reports the
// aggregate throughput, the slowest and fastest host, and the server's
// resident memory and CPU time.
//
// The hosts must exist (scripts/bench-overlay.sh adds them without CHAP);
// -hosts names them by prefix: h0, h1, ... Traffic goes to -addr only
// (loopback in the script).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/diskless-boot/diskless/bench/harness"
	"github.com/diskless-boot/diskless/internal/api"
	"github.com/diskless-boot/diskless/internal/testutil/iscsiclient"
)

func main() {
	var (
		addr    = flag.String("addr", "127.0.0.1:3260", "iSCSI portal")
		apiURL  = flag.String("api", "http://127.0.0.1:8080", "the server's API")
		token   = flag.String("token", "", "API token")
		prefix  = flag.String("prefix", "h", "host names: PREFIX0, PREFIX1, ...")
		n       = flag.Int("n", 50, "hosts")
		mib     = flag.Int("mib", 128, "MiB each host reads")
		reqKiB  = flag.Int("req", 1024, "KiB per READ")
		depth   = flag.Int("qd", 4, "READs in flight per host")
		pid     = flag.Int("pid", 0, "the server's pid (RSS, CPU)")
		timeout = flag.Duration("timeout", 10*time.Minute, "bound on the whole run")
	)
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := run(ctx, *addr, *apiURL, *token, *prefix, *n, *mib, *reqKiB, *depth, *pid); err != nil {
		fmt.Fprintln(os.Stderr, "hosts:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, addr, apiURL, token, prefix string, n, mib, reqKiB, depth, pid int) error {
	hosts := make([]api.HostView, n)
	for i := range hosts {
		if err := get(ctx, apiURL, token, fmt.Sprintf("/hosts/%s%d", prefix, i), &hosts[i]); err != nil {
			return err
		}
	}
	rss0, _ := harness.StatusKiB(pid, "VmRSS")
	sessions := make([]*iscsiclient.Session, n)
	for i, h := range hosts {
		s, err := iscsiclient.Dial(ctx, iscsiclient.Config{Addr: addr, Initiator: h.InitiatorIQN, Target: h.TargetIQN, Timeout: time.Minute,
			LocalAddr: iscsiclient.LoopbackHost(i)})
		if err != nil {
			return fmt.Errorf("login %s: %w", h.Name, err)
		}
		defer s.Close()
		sessions[i] = s
	}
	rssIdle, _ := harness.StatusKiB(pid, "VmRSS")
	cpu0 := harness.CPUSeconds(pid)
	req := reqKiB << 10
	blocks := uint64(req / 512)
	total := mib << 20 / req
	durs := make([]time.Duration, n)
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var firstErr error
	stop := make(chan struct{})
	peak := make(chan int64)
	go func() { // sample the server's RSS under load
		var peakRSS int64
		for {
			select {
			case <-stop:
				peak <- peakRSS
				return
			case <-time.After(100 * time.Millisecond):
				if v, err := harness.StatusKiB(pid, "VmRSS"); err == nil && v > peakRSS {
					peakRSS = v
				}
			}
		}
	}()
	start := time.Now()
	for i, s := range sessions {
		for q := range depth {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, req)
				for k := q; k < total; k += depth {
					if err := s.Read(uint64(k)*blocks, buf); err != nil {
						errMu.Lock()
						firstErr = fmt.Errorf("%s: %w", hosts[i].Name, err)
						errMu.Unlock()
						return
					}
				}
				errMu.Lock()
				durs[i] = max(durs[i], time.Since(start))
				errMu.Unlock()
			}()
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stop)
	peakRSS := <-peak
	if firstErr != nil {
		return firstErr
	}
	cpu := harness.CPUSeconds(pid) - cpu0
	sort.Slice(durs, func(a, b int) bool { return durs[a] < durs[b] })
	bytes := float64(n) * float64(total*req)
	hwm, _ := harness.StatusKiB(pid, "VmHWM")
	fmt.Printf("hosts=%d read_per_host=%dMiB req=%dKiB qd=%d elapsed=%.2fs aggregate=%.0fMiB/s\n",
		n, mib, reqKiB, depth, elapsed.Seconds(), bytes/elapsed.Seconds()/(1<<20))
	fmt.Printf("per-host time: fastest=%.2fs slowest=%.2fs (fairness %.2f)\n",
		durs[0].Seconds(), durs[n-1].Seconds(), durs[0].Seconds()/durs[n-1].Seconds())
	if pid > 0 {
		fmt.Printf("server: rss_before_login=%dKiB rss_%d_logged_in=%dKiB (%.0fKiB per host) rss_peak_reading=%dKiB vmhwm=%dKiB cpu=%.2fs (%.3f CPU-s per GiB)\n",
			rss0, n, rssIdle, float64(rssIdle-rss0)/float64(n), peakRSS, hwm, cpu, cpu/(bytes/(1<<30)))
	}
	return nil
}

func get(ctx context.Context, base, token, path string, out any) error {
	req, _ := http.NewRequestWithContext(ctx, "GET", base+api.Prefix+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
