//go:build linux

package main

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/diskless-boot/diskless/internal/iotrace"
)

// report prints the runs as a Markdown table: one boot alone (the median
// of the -alone runs per server), then each N side by side with the goal.
func report(rows []row, servers []string, counts []int) {
	alone := map[string]time.Duration{}
	for _, s := range servers {
		var d []time.Duration
		for _, r := range rows {
			if r.server == s && r.n == 1 && r.errors == 0 {
				d = append(d, r.last)
			}
		}
		if len(d) > 0 {
			slices.Sort(d)
			alone[s] = d[len(d)/2]
		}
	}
	fmt.Println()
	for _, s := range servers {
		fmt.Printf("one boot's read time, replayed alone (median): %s %.3f s\n", s, alone[s].Seconds())
	}
	find := func(s string, n int) *row {
		for i := range rows {
			if rows[i].server == s && rows[i].n == n {
				return &rows[i]
			}
		}
		return nil
	}
	fmt.Println()
	fmt.Println("| N | diskless: last done | p50 / p99 | CPU | peak RSS | tgt: last done | p50 / p99 | CPU | peak RSS | tgt / diskless | goal: N x one boot / 10 | met |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, n := range counts {
		d, t := find("diskless", n), find("tgt", n)
		cell := func(r *row) string {
			if r == nil {
				return "- | - | - | -"
			}
			e := ""
			if r.errors > 0 {
				e = fmt.Sprintf(" (%d failed)", r.errors)
			}
			return fmt.Sprintf("%.2f s%s | %.2f / %.2f s | %.1f s | %d MiB", r.last.Seconds(), e, r.p50.Seconds(), r.p99.Seconds(), r.cpu, r.hwmKiB>>10)
		}
		goal := time.Duration(n) * alone["diskless"] / 10
		ratio, met := "-", "-"
		if t != nil && d != nil {
			ratio = fmt.Sprintf("%.2fx", t.last.Seconds()/d.last.Seconds())
		}
		if d != nil {
			ok := d.errors == 0 && d.last < goal && (t == nil || d.last < t.last)
			met = map[bool]string{true: "yes", false: "no"}[ok]
		}
		fmt.Printf("| %d | %s | %s | %s | %.2f s | %s |\n", n, cell(d), cell(t), ratio, goal.Seconds(), met)
	}
	if !slices.Contains(servers, "floor") {
		return
	}
	// The floor: could any server meet diskless' goal on this machine,
	// with the initiators sharing its cores?
	fmt.Println()
	fmt.Println("| N | floor: last done | responder CPU | client CPU | diskless: server + initiators' CPU | goal: N x diskless' one boot / 10 | floor within the goal |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, n := range counts {
		f, d := find("floor", n), find("diskless", n)
		if f == nil {
			continue
		}
		both := "-"
		if d != nil {
			both = fmt.Sprintf("%.1f s + %.1f s", d.cpu, d.clientCPU)
		}
		goal := time.Duration(n) * alone["diskless"] / 10
		e := ""
		if f.errors > 0 {
			e = fmt.Sprintf(" (%d failed)", f.errors)
		}
		fmt.Printf("| %d | %.2f s%s | %.1f s | %.1f s | %s | %.2f s | %s |\n", n, f.last.Seconds(), e, f.cpu, f.clientCPU, both, goal.Seconds(),
			map[bool]string{true: "yes", false: "no"}[f.errors == 0 && f.last < goal])
	}
}

// printSummary prints what a trace holds (-summary): the totals of
// bench/replay/testdata/README.md.
func printSummary(path string) error {
	tr, err := loadTrace(path)
	if err != nil {
		return err
	}
	st := tr.Stats()
	bs := uint64(tr.BlockSize)
	fmt.Printf("%s: target %s, started %s, block size %d\n", path, tr.Target, tr.Started.Format(time.RFC3339), bs)
	fmt.Printf("READs %d, %.1f MiB, %.1f MiB distinct; WRITEs %d, %.1f MiB; last command %v after the first login; largest gap %v at %v\n",
		st.Reads, mib(st.ReadBytes), mib(st.DistinctReadBlocks*bs), st.Writes, mib(st.WriteBytes),
		st.Duration.Round(time.Millisecond), st.LargestGap.Round(time.Millisecond), st.LargestGapAt.Round(time.Millisecond))
	type tally struct {
		reads, writes, maxBlocks int
		readBytes                uint64
	}
	per := make([]tally, len(tr.Sessions))
	for _, r := range tr.IOs {
		t := &per[r.Session]
		if r.Write {
			t.writes++
		} else {
			t.reads++
			t.readBytes += uint64(r.Blocks) * bs
		}
		t.maxBlocks = max(t.maxBlocks, int(r.Blocks))
	}
	for i, s := range tr.Sessions {
		end := "-"
		if s.End > 0 {
			end = s.End.Round(time.Millisecond).String()
		}
		fmt.Printf("session %d: ISID %012x, login %v, end %s: %d READs (%.1f MiB), %d WRITEs, largest %d blocks\n",
			i, s.ISID, s.At.Round(time.Millisecond), end, per[i].reads, mib(per[i].readBytes), per[i].writes, per[i].maxBlocks)
	}
	ios := slices.Clone(tr.IOs)
	slices.SortStableFunc(ios, func(a, b iotrace.IO) int { return cmp.Compare(a.At, b.At) })
	for i := 1; i < len(ios); i++ {
		if d := ios[i].At - ios[i-1].At; d > time.Second {
			fmt.Printf("gap %v after %v (session %d to %d)\n", d.Round(time.Millisecond), ios[i-1].At.Round(time.Millisecond), ios[i-1].Session, ios[i].Session)
		}
	}
	return nil
}
