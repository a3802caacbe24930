package imagefmt

import (
	"math"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

const mib = 1 << 20

func TestProgressRateAndETA(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	p := NewProgress(10*time.Second, clk.now)

	s := p.Snapshot()
	if s.Rate != 0 || s.ETA != -1 || s.Done != 0 {
		t.Fatalf("before any update: %+v, want no rate and unknown ETA", s)
	}

	// 10 MiB/s for 20 s, reported every 100 ms.
	const total = 1000 * mib
	var done int64
	for range 200 {
		clk.advance(100 * time.Millisecond)
		done += mib
		p.Update(done, total)
	}
	s = p.Snapshot()
	if s.Done != 200*mib || s.Total != total || s.Elapsed != 20*time.Second {
		t.Fatalf("snapshot %+v, want 200 MiB of 1000 after 20s", s)
	}
	if math.Abs(s.Rate-10*mib) > 0.01*mib {
		t.Errorf("rate %.0f B/s, want 10 MiB/s", s.Rate)
	}
	if d := s.ETA - 80*time.Second; d < -time.Second || d > time.Second {
		t.Errorf("ETA %v, want 80s", s.ETA)
	}

	// The rate follows a slowdown once a window has passed: 1 MiB/s
	// for 12 s.
	for range 120 {
		clk.advance(100 * time.Millisecond)
		done += mib / 10
		p.Update(done, total)
	}
	if s := p.Snapshot(); math.Abs(s.Rate-1*mib) > 0.05*mib {
		t.Errorf("rate after slowing down %.0f B/s, want 1 MiB/s", s.Rate)
	}

	// A stall: after a window without progress the rate is 0 and the
	// ETA unknown, not the last rate forever.
	clk.advance(11 * time.Second)
	if s := p.Snapshot(); s.Rate != 0 || s.ETA != -1 {
		t.Errorf("after a stall: rate %.0f, ETA %v; want 0 and unknown", s.Rate, s.ETA)
	}

	p.Update(total, total)
	if s := p.Snapshot(); s.ETA != 0 {
		t.Errorf("when done: ETA %v, want 0", s.ETA)
	}
}

func TestProgressStartsAgainWhenDoneGoesDown(t *testing.T) {
	clk := &fakeClock{t: time.Unix(0, 0)}
	p := NewProgress(10*time.Second, clk.now)
	clk.advance(5 * time.Second)
	p.Update(500*mib, 1000*mib)
	// A second phase reports from 0 again: a negative rate would make
	// the ETA nonsense.
	clk.advance(time.Second)
	p.Update(0, 1000*mib)
	clk.advance(time.Second)
	p.Update(2*mib, 1000*mib)
	if s := p.Snapshot(); math.Abs(s.Rate-2*mib) > 0.01*mib {
		t.Errorf("rate %.0f B/s after a restart, want 2 MiB/s", s.Rate)
	}
}

func TestProgressMemoryStaysBounded(t *testing.T) {
	clk := &fakeClock{t: time.Unix(0, 0)}
	p := NewProgress(time.Second, clk.now)
	for i := range 100_000 {
		clk.advance(time.Millisecond)
		p.Update(int64(i), 1<<40)
	}
	p.mu.Lock()
	n := len(p.samples)
	p.mu.Unlock()
	if n > progressSamples+2 {
		t.Errorf("%d samples kept, want at most %d", n, progressSamples+2)
	}
}

func TestProgressConcurrentUse(t *testing.T) {
	p := NewProgress(0, nil)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 1000 {
				if w == 0 {
					p.Snapshot()
				} else {
					p.Update(int64(i), 1000)
				}
			}
		})
	}
	wg.Wait()
	if s := p.Snapshot(); s.Total != 1000 {
		t.Errorf("total %d, want 1000", s.Total)
	}
}
