//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/diskless-boot/diskless/bench/harness"
	"github.com/diskless-boot/diskless/internal/testutil/iscsiclient"
)

// The other host's I/O: one session of host "other" (CHAP and mutual
// CHAP, ISID otherISID), 4 KiB WRITEs and READs alternating, one at a
// time, paced at -io-rate. Every write's content is remembered; every read
// of a block written before is compared, and when told to stop the role
// reads back every block it wrote. A block whose WRITE failed is not
// compared until it is written again (it was never acknowledged).

const (
	ioBlock = 4096
	// ioSlots 4 KiB blocks from block ioFirst: clear of the boot sector
	// and of the last sector (the marker) of the 4 MiB disk.
	ioFirst = 8
	ioSlots = 1000
)

// ioWindow is the I/O of one stretch of time (baseline, attack). Times
// are in seconds.
type ioWindow struct {
	Name       string  `json:"name"`
	Ops        int     `json:"ops"`
	Errors     int     `json:"errors"`
	Reconnects int     `json:"reconnects"`
	P50        float64 `json:"p50"`
	P99        float64 `json:"p99"`
	Max        float64 `json:"max"`
	// MaxGap is the longest time without a completed operation,
	// counted from the window's start to its end.
	MaxGap     float64 `json:"max_gap"`
	FirstError string  `json:"first_error,omitempty"`
}

// ioResult is the io role's result.
type ioResult struct {
	Windows []ioWindow `json:"windows"`
	// Lost counts reads (during the run and in the final check) that did
	// not return what an acknowledged write had put there.
	Lost         int      `json:"lost"`
	Verified     int      `json:"verified"`
	VerifyErrors int      `json:"verify_errors"`
	Errors       []string `json:"errors,omitempty"`
}

// window accumulates one ioWindow.
type window struct {
	w     ioWindow
	lat   []time.Duration
	start time.Time
	last  time.Time // last completion, or the start
}

func newWindow(name string) *window {
	now := time.Now()
	return &window{w: ioWindow{Name: name}, start: now, last: now}
}

func (w *window) done(d time.Duration) {
	now := time.Now()
	w.w.Ops++
	w.lat = append(w.lat, d)
	w.w.MaxGap = max(w.w.MaxGap, now.Sub(w.last).Seconds())
	w.last = now
}

func (w *window) close() ioWindow {
	w.w.MaxGap = max(w.w.MaxGap, time.Since(w.last).Seconds())
	w.w.P50 = harness.Percentile(w.lat, 50).Seconds()
	w.w.P99 = harness.Percentile(w.lat, 99).Seconds()
	w.w.Max = harness.Percentile(w.lat, 100).Seconds()
	return w.w
}

func runIO(ro roleOptions, o options) error {
	si, err := readSite(ro.site)
	if err != nil {
		return err
	}
	h := si.Other
	cfg := iscsiclient.Config{Addr: si.Server + ":3260", Initiator: h.InitiatorIQN, Target: h.TargetIQN,
		CHAPUser: h.CHAPUser, CHAPSecret: h.CHAPSecret, MutualUser: h.MutualUser, MutualSecret: h.MutualSecret,
		ISID: otherISID, Timeout: 10 * time.Second}
	sess, err := iscsiclient.Dial(context.Background(), cfg)
	if err != nil {
		return err
	}
	fmt.Printf("ready session 0x%012x/%d\n", uint64(otherISID), sess.TSIH())
	cmds := readCommands()

	var res ioResult
	note := func(err error) {
		if len(res.Errors) < 20 {
			res.Errors = append(res.Errors, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
		}
	}
	expected := map[int][]byte{}
	var written []int
	cur := newWindow("start")
	interval := time.Second / time.Duration(o.ioRate)
	next := time.Now()
	timer := time.NewTimer(0)
	buf := make([]byte, ioBlock)
	for k := 0; ; k++ {
		stop := false
	wait:
		for {
			select {
			case c, ok := <-cmds:
				switch {
				case !ok || c == "stop":
					stop = true
					break wait
				case strings.HasPrefix(c, "window "):
					res.Windows = append(res.Windows, cur.close())
					cur = newWindow(strings.TrimPrefix(c, "window "))
				}
			case <-timer.C:
				break wait
			}
		}
		if stop {
			break
		}
		next = next.Add(interval)
		if now := time.Now(); next.Before(now) {
			next = now // never catch up in a burst
		}
		timer.Reset(time.Until(next))

		if sess == nil {
			if sess, err = iscsiclient.Dial(context.Background(), cfg); err != nil {
				cur.w.Errors++
				note(fmt.Errorf("log in again: %w", err))
				sess = nil
				continue
			}
			cur.w.Reconnects++
		}
		var opErr error
		start := time.Now()
		if k%2 == 0 || len(written) == 0 {
			slot := rand.IntN(ioSlots)
			data := pattern(slot, k)
			if opErr = sess.Write(uint64(ioFirst+slot*ioBlock/512), data, false); opErr == nil {
				if _, ok := expected[slot]; !ok {
					written = append(written, slot)
				}
				expected[slot] = data
			} else {
				delete(expected, slot) // unknown until written again
			}
		} else {
			slot := written[rand.IntN(len(written))]
			if opErr = sess.Read(uint64(ioFirst+slot*ioBlock/512), buf); opErr == nil {
				if want, ok := expected[slot]; ok && !bytes.Equal(buf, want) {
					res.Lost++
					note(fmt.Errorf("block slot %d read back different from its acknowledged write", slot))
				}
			}
		}
		if opErr != nil {
			cur.w.Errors++
			if cur.w.FirstError == "" {
				cur.w.FirstError = opErr.Error()
			}
			note(opErr)
			var se *iscsiclient.SCSIError
			if !errors.As(opErr, &se) {
				sess.Close() // the session ended: log in again at the next tick
				sess = nil
			}
			continue
		}
		cur.done(time.Since(start))
	}
	res.Windows = append(res.Windows, cur.close())

	// Read back every block whose last write was acknowledged.
	if sess == nil {
		for i := 0; i < 10 && sess == nil; i++ {
			if sess, err = iscsiclient.Dial(context.Background(), cfg); err != nil {
				sess = nil
				time.Sleep(time.Second)
			}
		}
	}
	for slot, want := range expected {
		if sess == nil {
			res.VerifyErrors++
			continue
		}
		if err := sess.Read(uint64(ioFirst+slot*ioBlock/512), buf); err != nil {
			res.VerifyErrors++
			note(fmt.Errorf("final check: %w", err))
			continue
		}
		res.Verified++
		if !bytes.Equal(buf, want) {
			res.Lost++
			note(fmt.Errorf("final check: slot %d differs from its acknowledged write", slot))
		}
	}
	if sess != nil {
		sess.Logout()
	}
	return writeResult(ro.result, res)
}

// pattern is the content of the k-th write, to slot: a header that names
// it, then pseudo-random bytes.
func pattern(slot, k int) []byte {
	b := make([]byte, ioBlock)
	r := rand.New(rand.NewPCG(uint64(slot), uint64(k)))
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	copy(b, fmt.Sprintf("slot %d write %d\n", slot, k))
	return b
}

// readCommands delivers the lines of standard input; the channel closes
// at EOF.
func readCommands() <-chan string {
	ch := make(chan string, 16)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			ch <- strings.TrimSpace(sc.Text())
		}
	}()
	return ch
}

func writeResult(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// probeResult is a PXE ROM's TFTP fetch of the boot file.
type probeResult struct {
	OK      bool    `json:"ok"`
	Seconds float64 `json:"seconds"`
	Bytes   int     `json:"bytes"`
	Err     string  `json:"err,omitempty"`
}

// runProbe fetches undionly.kpxe like a PXE ROM (blksize 1468, tsize, 1 s
// retransmissions, 5 tries) and compares it with the file served.
func runProbe(ro roleOptions, ipxeDir string) error {
	si, err := readSite(ro.site)
	if err != nil {
		return err
	}
	want, err := os.ReadFile(filepath.Join(ipxeDir, "undionly.kpxe"))
	if err != nil {
		return err
	}
	start := time.Now()
	data, err := harness.TFTPGet(netip.MustParseAddr(otherIP), netip.MustParseAddr(si.Server), "undionly.kpxe", 1468, start.Add(30*time.Second))
	r := probeResult{Seconds: time.Since(start).Seconds(), Bytes: len(data)}
	switch {
	case err != nil:
		r.Err = err.Error()
	case !bytes.Equal(data, want):
		r.Err = fmt.Sprintf("got %d bytes that differ from the %d of the file", len(data), len(want))
	default:
		r.OK = true
	}
	if err := writeResult(ro.result, r); err != nil {
		return err
	}
	fmt.Println("done")
	return nil
}
