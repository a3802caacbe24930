//go:build linux

package main

import (
	"cmp"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/diskless-boot/diskless/internal/iotrace"
	"github.com/diskless-boot/diskless/internal/testutil/iscsiclient"
)

// step is one command of a replay.
type step struct {
	at     time.Duration // when the traced boot sent it, from its first login
	write  bool
	lba    uint64
	blocks uint32
}

// plan is what every replayed boot does: the trace's READs and WRITEs in
// the order they arrived at the target, over all of its sessions (iPXE's,
// iscsistart's and iscsid's, one after the other), one at a time on LUN 0
// of one session, with LBAs in blocks of blockSize. The Linux kernel had a
// few commands in flight at times; a replay at queue depth 1 is the
// slower, simpler bound.
type plan struct {
	steps     []step
	blockSize int
	maxBytes  int    // the largest command
	endBlock  uint64 // one past the highest block touched
}

// loadTrace reads a trace file, gzipped when its name ends in .gz.
func loadTrace(path string) (*iotrace.Trace, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		defer zr.Close()
		r = zr
	}
	tr, err := iotrace.Read(r, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return tr, nil
}

// newPlan turns a trace into a plan. Commands of zero blocks move nothing
// and are left out; a trace with no command at all, or commands on more
// than one LUN (a host has one disk), is refused.
func newPlan(tr *iotrace.Trace) (*plan, error) {
	p := &plan{blockSize: tr.BlockSize}
	for _, r := range tr.IOs {
		if r.LUN != 0 {
			return nil, fmt.Errorf("trace: a command on LUN %d; a host has LUN 0 only", r.LUN)
		}
		if r.Blocks == 0 {
			continue
		}
		p.steps = append(p.steps, step{at: r.At, write: r.Write, lba: r.LBA, blocks: r.Blocks})
		p.maxBytes = max(p.maxBytes, int(r.Blocks)*p.blockSize)
		p.endBlock = max(p.endBlock, r.LBA+uint64(r.Blocks))
	}
	if len(p.steps) == 0 {
		return nil, errors.New("trace: no READ or WRITE")
	}
	// A trace is in the order commands were served; sent is the order
	// they arrived in.
	slices.SortStableFunc(p.steps, func(a, b step) int { return cmp.Compare(a.at, b.at) })
	return p, nil
}

// hostResult is one replayed boot.
type hostResult struct {
	took time.Duration // from the release to the last command's status, login included
	err  error
}

// replay runs one boot per host at once: boot(i, start) is host i's
// whole replay (login to logout), start the moment all were released. It
// returns each host's result and the time from the release to the last
// finish.
func replay(n int, boot func(i int, start time.Time) error) ([]hostResult, time.Duration) {
	res := make([]hostResult, n)
	var wg sync.WaitGroup
	release := make(chan struct{})
	var start time.Time
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-release
			res[i].err = boot(i, start)
			res[i].took = time.Since(start)
		}()
	}
	start = time.Now()
	close(release)
	wg.Wait()
	var last time.Duration
	for _, r := range res {
		last = max(last, r.took)
	}
	return res, last
}

// replayOne is one host's boot over iSCSI: it logs in and sends the plan's
// commands one at a time in order (queue depth 1, as iPXE and - by the
// trace's order - the boot as a whole); with gaps each command also waits
// for its recorded time (from start).
func replayOne(ctx context.Context, p *plan, cfg iscsiclient.Config, gaps bool, start time.Time) error {
	s, err := iscsiclient.Dial(ctx, cfg)
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	defer s.Close()
	buf := make([]byte, p.maxBytes)
	for i, st := range p.steps {
		if err := waitStep(ctx, st, gaps, start); err != nil {
			return err
		}
		b := buf[:int(st.blocks)*p.blockSize]
		if st.write {
			err = s.Write(st.lba, b, false)
		} else {
			err = s.Read(st.lba, b)
		}
		if err != nil {
			return fmt.Errorf("command %d of %d: %w", i+1, len(p.steps), err)
		}
	}
	if err := s.Logout(); err != nil {
		return fmt.Errorf("logout: %w", err)
	}
	return nil
}

// waitStep returns when st may be sent: at once without gaps, else at its
// recorded time from start; or with ctx's error once it is done.
func waitStep(ctx context.Context, st step, gaps bool, start time.Time) error {
	if gaps {
		if d := time.Until(start.Add(st.at)); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
			}
		}
	}
	return ctx.Err()
}
