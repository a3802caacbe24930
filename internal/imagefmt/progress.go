package imagefmt

import (
	"sync"
	"time"
)

// Progress turns the (done, total) reports of Copy, Export and Open into
// what a person watches: bytes, a rate over a sliding window and an ETA.
// Pass its Update method as the progress callback; a CLI progress bar and an
// API job resource read Snapshot. Safe for concurrent use.
type Progress struct {
	now    func() time.Time
	window time.Duration

	mu          sync.Mutex
	start       time.Time
	done, total int64
	// samples holds (time, done) points, oldest first, at least
	// window/progressSamples apart, so memory stays fixed however often
	// Update is called.
	samples []progressSample
}

type progressSample struct {
	t    time.Time
	done int64
}

// progressSamples bounds the points kept per window.
const progressSamples = 32

// DefaultProgressWindow is the rate's window when NewProgress gets 0.
const DefaultProgressWindow = 10 * time.Second

// NewProgress starts measuring now. window is how far back the rate looks
// (default DefaultProgressWindow); now is the clock (default time.Now), to
// be replaced in tests.
func NewProgress(window time.Duration, now func() time.Time) *Progress {
	if window <= 0 {
		window = DefaultProgressWindow
	}
	if now == nil {
		now = time.Now
	}
	p := &Progress{now: now, window: window, samples: make([]progressSample, 0, progressSamples+2)}
	p.start = now()
	p.samples = append(p.samples, progressSample{t: p.start})
	return p
}

// Update records that done of total bytes are done. done may go down (a
// restarted phase); the rate then starts again from there.
func (p *Progress) Update(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.now()
	if done < p.done {
		p.samples = append(p.samples[:0], progressSample{t: t, done: done})
	}
	p.done, p.total = done, total
	last := &p.samples[len(p.samples)-1]
	if len(p.samples) > 1 && t.Sub(p.samples[len(p.samples)-2].t) < p.window/progressSamples {
		// Too close to the previous point: move the newest one.
		*last = progressSample{t: t, done: done}
	} else {
		p.samples = append(p.samples, progressSample{t: t, done: done})
	}
	p.trim(t)
}

// trim drops the points that no rate at or after t needs: all but the
// newest one at or before t-window.
func (p *Progress) trim(t time.Time) {
	cut := t.Add(-p.window)
	i := 0
	for i+1 < len(p.samples) && !p.samples[i+1].t.After(cut) {
		i++
	}
	if i > 0 {
		p.samples = append(p.samples[:0], p.samples[i:]...)
	}
}

// ProgressSnapshot is a Progress at one instant.
type ProgressSnapshot struct {
	Done, Total int64
	// Rate is bytes per second over the last window (less at the start);
	// it falls to 0 when nothing moves for a window.
	Rate float64
	// ETA is the time left at Rate; -1 when it cannot be told (no rate
	// yet, or no total).
	ETA     time.Duration
	Elapsed time.Duration
}

// Snapshot reads the progress now.
func (p *Progress) Snapshot() ProgressSnapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.now()
	s := ProgressSnapshot{Done: p.done, Total: p.total, ETA: -1, Elapsed: t.Sub(p.start)}
	// The rate covers the window, or everything so far when that is
	// shorter. Points are window/progressSamples apart, so the done
	// count at the window's start is interpolated between the two
	// points around it rather than taken from the older one.
	cut := t.Add(-p.window)
	base := p.samples[0]
	if !base.t.After(cut) {
		for i, smp := range p.samples[1:] {
			if smp.t.After(cut) {
				prev := p.samples[i]
				frac := float64(cut.Sub(prev.t)) / float64(smp.t.Sub(prev.t))
				base = progressSample{t: cut, done: prev.done + int64(frac*float64(smp.done-prev.done))}
				break
			}
			base = progressSample{t: cut, done: smp.done}
		}
	}
	if span := t.Sub(base.t); span > 0 {
		s.Rate = float64(p.done-base.done) / span.Seconds()
	}
	if s.Rate < 0 {
		s.Rate = 0
	}
	switch {
	case p.total > 0 && p.done >= p.total:
		s.ETA = 0
	case p.total > 0 && s.Rate > 0:
		s.ETA = time.Duration(float64(p.total-p.done) / s.Rate * float64(time.Second))
	}
	return s
}
