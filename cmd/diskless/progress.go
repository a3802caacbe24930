package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/diskless-boot/diskless/internal/api"
)

// progressBar shows a job's bytes, rate and time left: redrawn in place on
// a terminal, a line every few seconds otherwise (logs, CI).
type progressBar struct {
	w     io.Writer
	what  string
	tty   bool
	last  time.Time
	drawn bool
}

func newProgressBar(w io.Writer, what string) *progressBar {
	tty := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progressBar{w: w, what: what, tty: tty}
}

func (b *progressBar) update(j api.Job) {
	now := time.Now()
	if !b.tty && now.Sub(b.last) < 5*time.Second {
		return
	}
	b.last = now
	line := b.line(j)
	if b.tty {
		fmt.Fprintf(b.w, "\r%-100s", line)
		b.drawn = true
	} else {
		fmt.Fprintln(b.w, line)
	}
}

func (b *progressBar) line(j api.Job) string {
	const width = 30
	frac := 0.0
	if j.Total > 0 {
		frac = min(float64(j.Done)/float64(j.Total), 1)
	}
	n := int(frac * width)
	s := fmt.Sprintf("%s [%s%s] %5.1f%% %s / %s", b.what, strings.Repeat("#", n), strings.Repeat(" ", width-n),
		100*frac, humanBytes(j.Done), humanBytes(j.Total))
	if j.Rate > 0 {
		s += fmt.Sprintf("  %s/s", humanBytes(int64(j.Rate)))
		if j.Total > j.Done {
			s += fmt.Sprintf("  %s left", (time.Duration(float64(j.Total-j.Done)/j.Rate) * time.Second).Round(time.Second))
		}
	}
	return s
}

func (b *progressBar) finish(j api.Job) {
	if b.drawn {
		fmt.Fprint(b.w, "\r"+strings.Repeat(" ", 100)+"\r")
	}
	d := time.Duration(0)
	if !j.Finished.IsZero() {
		d = j.Finished.Sub(j.Started).Round(time.Millisecond)
	}
	fmt.Fprintf(b.w, "%s: %s, %s in %s", b.what, j.State, humanBytes(j.Done), d)
	if j.Rate > 0 {
		fmt.Fprintf(b.w, " (%s/s)", humanBytes(int64(j.Rate)))
	}
	fmt.Fprintln(b.w)
}

// humanBytes formats a size in binary units.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
