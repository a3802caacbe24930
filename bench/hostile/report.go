//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"time"
)

// report is a run's outcome; its JSON form is what test/hostile asserts
// on.
type report struct {
	Date  string `json:"date"`
	Goals string `json:"goals"`
	// Options, as given.
	Duration   string         `json:"duration"`
	BootRatio  float64        `json:"boot_ratio"`
	RSSLimitMB int            `json:"rss_limit_mib"`
	Stall      string         `json:"stall"`
	Baseline   *phaseResult   `json:"baseline,omitempty"` // -baseline once
	Phases     []*phaseResult `json:"phases"`
}

func newReport(o *options) *report {
	return &report{Date: time.Now().UTC().Format("2006-01-02 15:04 UTC"), Duration: o.duration.String(),
		BootRatio: o.bootRatio, RSSLimitMB: o.rssLimitMiB, Stall: o.stall.String(),
		Goals: fmt.Sprintf("every legitimate boot reaches its marker within %.2gx its unattacked time and a PXE ROM's TFTP fetch works; "+
			"the other host's I/O has no error and no stall of %v; the server's peak RSS stays under %d MiB; no panic; "+
			"nothing lost (acknowledged writes read back, no login or reinstatement as another host, no secret leaked)",
			o.bootRatio, o.stall, o.rssLimitMiB)}
}

func (r *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// print writes the table and each attack's details.
func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "\nhostile-load harness, %s; attacks of %s each\n", r.Date, r.Duration)
	fmt.Fprintf(w, "goal: %s\n\n", r.Goals)
	fmt.Fprintln(w, "| attack | boot without (median) | boot with (slowest) | PXE TFTP with | I/O p50/p99 without | I/O p50/p99 with | I/O kept going | peak RSS | CPU | log lines/s | result |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|")
	for _, ph := range r.Phases {
		with := ph.Attacked.String()
		if b := ph.Baseline.median(); b > 0 && len(ph.Attacked.Seconds) > 0 {
			with = fmt.Sprintf("%.2f s (%.2fx)", slices.Max(ph.Attacked.Seconds), slices.Max(ph.Attacked.Seconds)/b)
			if len(ph.Attacked.Failures) > 0 {
				with = "failed"
			}
		}
		probe := "failed"
		if ph.ProbeWith.OK {
			probe = fmt.Sprintf("%.0f ms", ph.ProbeWith.Seconds*1000)
		}
		kept := "yes"
		if g := ph.goal("io"); g != nil && !g.OK {
			kept = fmt.Sprintf("no (%d errors, %d reconnects, stall %.1f s)", ph.IOWith.Errors, ph.IOWith.Reconnects, ph.IOWith.MaxGap)
		}
		res := "PASS"
		if !ph.Pass {
			var f []string
			for _, g := range ph.Goals {
				if !g.OK {
					f = append(f, g.Name)
				}
			}
			res = "FAIL: " + strings.Join(f, ", ")
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %d MiB | %.1f s | %.0f | %s |\n",
			ph.Attack, ph.Baseline, with, probe, ms(ph.IOWithout), ms(ph.IOWith), kept,
			ph.PeakRSSKiB>>10, ph.CPUSeconds, float64(ph.LogLines)/max(ph.AttackSeconds, 1e-9), res)
	}
	for _, ph := range r.Phases {
		fmt.Fprintf(w, "\n%s: %s (%.0f s, in place after %.1f s)\n", ph.Attack, ph.Description, ph.AttackSeconds, ph.Result.ReadyAfter)
		for _, g := range ph.Goals {
			mark := "ok  "
			if !g.OK {
				mark = "FAIL"
			}
			fmt.Fprintf(w, "  %s %-12s %s\n", mark, g.Name, g.Detail)
		}
		keys := make([]string, 0, len(ph.Result.Counts))
		for k := range ph.Result.Counts {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "  attacker: %s: %d\n", k, ph.Result.Counts[k])
		}
		for _, n := range ph.Result.Notes {
			fmt.Fprintf(w, "  attacker: %s\n", n)
		}
		fmt.Fprintf(w, "  server: %d log lines (%.1f MiB) during the attack; the attacker used %.1f CPU s\n",
			ph.LogLines, float64(ph.LogBytes)/(1<<20), ph.AttackerCPU)
		for _, n := range ph.Notes {
			fmt.Fprintf(w, "  note: %s\n", n)
		}
	}
}

func (ph *phaseResult) goal(name string) *goal {
	for i := range ph.Goals {
		if ph.Goals[i].Name == name {
			return &ph.Goals[i]
		}
	}
	return nil
}

func ms(w ioWindow) string {
	if w.Ops == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f/%.1f ms", w.P50*1000, w.P99*1000)
}
