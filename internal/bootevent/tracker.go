package bootevent

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/diskless-boot/diskless/internal/ratelog"
)

// Recorder keeps timelines beyond the process (the inventory's store).
type Recorder interface {
	// SaveBoots stores boots, replacing the stored boot of the same host
	// and start; it keeps a bounded number per host.
	SaveBoots(boots []Boot) error
	// Boots returns a host's stored boots, newest first.
	Boots(host string) ([]Boot, error)
}

// Config configures a Tracker.
type Config struct {
	// Recorder stores timelines (nil: kept in memory only, the current
	// boot of each host).
	Recorder Recorder
	// StuckAfter marks a boot stuck when no event came for that long
	// before the operating system logged in (default 5 min).
	StuckAfter time.Duration
	// SaveEvery is how often changed timelines go to the Recorder
	// (default 1 s): a flood of events is one write a second.
	SaveEvery time.Duration
	// Logger receives one line per event, rate-limited: clients can
	// trigger them (default: discard).
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// DefaultStuckAfter is Config.StuckAfter's default.
const DefaultStuckAfter = 5 * time.Minute

// staleBoot: an event this long after a boot's last one starts a new boot
// whatever its stage (the server may have missed the start: it restarted).
const staleBoot = 30 * time.Minute

// maxSubscribers bounds the live streams (web console tabs, API clients).
const maxSubscribers = 64

// subscriberBuffer is how many events a subscriber may lag behind; one
// that lags more is cut off (it reconnects and reloads the state).
const subscriberBuffer = 256

// DurationBuckets are the upper bounds, in seconds, of the boot duration
// histogram: a PXE boot takes from ~10 s (kernel over HTTP on fast
// hardware) to minutes (emulated machines, a busy server).
var DurationBuckets = []float64{5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600}

// Stats are the Tracker's counters since New.
type Stats struct {
	Started, Completed uint64
	// Reached counts events per stage (indexed like Stages).
	Reached []uint64
	// Failed counts failed boots by the stage they reached and why:
	// "reported" (iPXE's report), "login" (a refused iSCSI login),
	// "stuck".
	Failed map[FailKey]uint64
	// DurationCounts[i] counts completed boots that took at most
	// DurationBuckets[i] (not cumulative); the last is beyond them all.
	DurationCounts []uint64
	DurationSum    float64
	// SubscribersCut counts live streams cut off for lagging.
	SubscribersCut uint64
}

// FailKey is one row of Stats.Failed.
type FailKey struct {
	Stage  Stage
	Reason string
}

// Tracker groups events into boots and states. It is safe for concurrent
// use; Emit never blocks on the store or a subscriber.
type Tracker struct {
	cfg  Config
	log  *ratelog.Logger
	logs *slog.Logger

	mu     sync.Mutex
	cur    map[string]*Boot // the latest boot of each host that had an event
	loaded map[string]bool  // hosts whose stored latest boot was looked for
	dirty  map[string]bool
	subs   map[chan Event]struct{}
	stats  Stats
}

// New returns a Tracker; Run saves its timelines and marks stuck boots.
func New(cfg Config) *Tracker {
	if cfg.StuckAfter <= 0 {
		cfg.StuckAfter = DefaultStuckAfter
	}
	if cfg.SaveEvery <= 0 {
		cfg.SaveEvery = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	logs := cfg.Logger
	if logs == nil {
		logs = slog.New(slog.DiscardHandler)
	}
	return &Tracker{cfg: cfg, logs: logs, log: ratelog.NewLogger(10*time.Millisecond, 100),
		cur: map[string]*Boot{}, loaded: map[string]bool{}, dirty: map[string]bool{}, subs: map[chan Event]struct{}{},
		stats: Stats{Reached: make([]uint64, len(Stages)), Failed: map[FailKey]uint64{},
			DurationCounts: make([]uint64, len(DurationBuckets)+1)}}
}

// Emit takes one event: it joins its host's current boot or starts a new
// one, reaches the log and every subscriber.
func (t *Tracker) Emit(e Event) {
	if e.Time.IsZero() {
		e.Time = t.cfg.Now()
	}
	if e.Host != "" {
		t.load(e.Host)
	}
	t.mu.Lock()
	if i := e.Stage.index(); i >= 0 {
		t.stats.Reached[i]++
	}
	if e.Host != "" {
		e = t.apply(e)
	}
	t.broadcast(e)
	t.mu.Unlock()
	t.logEvent(e)
}

// broadcast hands e to every subscriber (t.mu held).
func (t *Tracker) broadcast(e Event) {
	for ch := range t.subs {
		select {
		case ch <- e:
		default:
			// Lagging: cut it off rather than block a server or grow.
			delete(t.subs, ch)
			close(ch)
			t.stats.SubscribersCut++
		}
	}
}

// load makes the host's stored latest boot its current one, once per
// host: a restarted server goes on with the boot it was following. The
// store is read without t.mu held.
func (t *Tracker) load(host string) {
	t.mu.Lock()
	done := t.loaded[host]
	t.mu.Unlock()
	if done || t.cfg.Recorder == nil {
		return
	}
	boots, err := t.cfg.Recorder.Boots(host)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.loaded[host] {
		return
	}
	t.loaded[host] = true
	if err == nil && len(boots) > 0 && t.cur[host] == nil {
		t.cur[host] = &boots[0]
	}
}

// apply adds e to its host's timeline (t.mu held). It returns e as
// recorded: the operating system's login outside a boot in progress is a
// session (a reconnect of a running system), which starts no boot.
func (t *Tracker) apply(e Event) Event {
	b := t.cur[e.Host]
	if e.Stage == StageRootLogin && e.Error == "" && (b == nil || b.Result == Completed || e.Time.Sub(b.Updated) > staleBoot) {
		e.Stage = StageSession
	}
	if e.Stage == StageSession && (b == nil || e.Time.Sub(b.Updated) > staleBoot) {
		return e
	}
	if t.startsBoot(b, e) {
		b = &Boot{Host: e.Host, Started: e.Time, Stage: e.Stage, Result: Booting}
		t.cur[e.Host] = b
		t.stats.Started++
	}
	if e.Stage == StageScript {
		b.Attempts++
		if b.Result == Failed || b.Result == Stuck {
			// iPXE asks again after a failure: the same boot goes on.
			b.Result, b.Failure = Booting, ""
		}
	}
	if e.Error == "" && e.Stage.rank() > b.Stage.rank() {
		b.Stage = e.Stage
	}
	b.Updated = e.Time
	b.add(e)
	switch {
	case e.Stage == StageRootLogin && e.Error == "":
		b.Result, b.Completed, b.Failure = Completed, e.Time, ""
		d := e.Time.Sub(b.Started).Seconds()
		b.DurationSeconds = d
		t.stats.Completed++
		t.stats.DurationSum += d
		t.stats.DurationCounts[sort.SearchFloat64s(DurationBuckets, d)]++
	case e.Stage == StageFailed && b.Result == Booting:
		b.Result, b.Failure = Failed, e.Error
		reason := "reported"
		if e.Detail == DetailLoginRefused {
			reason = "login"
		}
		t.stats.Failed[FailKey{b.Stage, reason}]++
	}
	t.dirty[e.Host] = true
	return e
}

// DetailLoginRefused is the Detail of a failed event for an iSCSI login
// the target refused (Stats.Failed's reason "login").
const DetailLoginRefused = "iSCSI login refused"

// startsBoot decides whether e begins a new boot of its host, whose
// latest boot is b (nil: none known).
func (t *Tracker) startsBoot(b *Boot, e Event) bool {
	if b == nil || e.Time.Sub(b.Updated) > staleBoot {
		return true
	}
	switch e.Stage {
	case StageDHCP:
		// The firmware starts every boot; its DISCOVER and REQUEST are
		// one exchange.
		return !(b.Result == Booting && b.Stage == StageDHCP)
	case StageIPXEDHCP:
		// After the firmware's own steps, iPXE's DHCP is the same boot;
		// an iPXE ROM starts here.
		return !(b.Result == Booting && b.Stage.rank() <= StageIPXEDHCP.rank())
	case StageScript:
		// A script fetch continues a boot before its script (or a failed
		// one: iPXE's retry); after a completed boot it is a new one
		// (no DHCP seen: dhcp off, or another DHCP server).
		return b.Result == Completed
	case StageSANLogin:
		return b.Result == Completed
	}
	return false
}

// quiet stages are logged at Debug: their servers log each step already
// (DHCP replies, scripts and files served over HTTP).
var quiet = map[Stage]bool{StageDHCP: true, StageIPXEDHCP: true, StageScript: true, StageKernel: true}

// logEvent writes e's log line (rate-limited).
func (t *Tracker) logEvent(e Event) {
	args := []any{"stage", string(e.Stage)}
	if e.Host != "" {
		args = append(args, "host", e.Host)
	}
	if e.MAC != "" {
		args = append(args, "mac", e.MAC)
	}
	if e.IP != "" {
		args = append(args, "ip", e.IP)
	}
	if e.Arch != "" {
		args = append(args, "arch", e.Arch)
	}
	if e.Detail != "" {
		args = append(args, "detail", e.Detail)
	}
	level := slog.LevelInfo
	if quiet[e.Stage] {
		level = slog.LevelDebug
	}
	if e.Error != "" {
		args = append(args, "err", e.Error)
		level = slog.LevelWarn
	}
	t.log.Log(t.logs, level, "boot: "+string(e.Stage), args...)
}

// Run saves changed timelines every SaveEvery and marks stuck boots,
// until ctx ends; then it saves once more.
func (t *Tracker) Run(ctx context.Context) {
	tick := time.NewTicker(t.cfg.SaveEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			t.Save()
			return
		case <-tick.C:
			t.markStuck()
			t.Save()
		}
	}
}

// markStuck ends the boots that made no progress for StuckAfter.
func (t *Tracker) markStuck() {
	now := t.cfg.Now()
	var stuck []Event
	t.mu.Lock()
	for _, b := range t.cur {
		if b.Result != Booting || now.Sub(b.Updated) < t.cfg.StuckAfter {
			continue
		}
		e := Event{Time: now, Host: b.Host, Stage: StageStuck, Error: stuckFailure(t.cfg.StuckAfter, b.Stage)}
		b.Result, b.Failure, b.Updated = Stuck, e.Error, now
		b.add(e)
		t.stats.Failed[FailKey{b.Stage, "stuck"}]++
		t.stats.Reached[StageStuck.index()]++
		t.dirty[b.Host] = true
		t.broadcast(e)
		stuck = append(stuck, e)
	}
	t.mu.Unlock()
	for _, e := range stuck {
		t.logEvent(e)
	}
}

// stuckFailure says why a boot is stuck.
func stuckFailure(idle time.Duration, at Stage) string {
	return fmt.Sprintf("no progress for %s after stage %s", idle, at)
}

// Save hands the changed timelines to the Recorder now.
func (t *Tracker) Save() {
	if t.cfg.Recorder == nil {
		return
	}
	t.mu.Lock()
	var boots []Boot
	for h := range t.dirty {
		if b := t.cur[h]; b != nil {
			boots = append(boots, b.clone())
		}
	}
	clear(t.dirty)
	t.mu.Unlock()
	if len(boots) == 0 {
		return
	}
	if err := t.cfg.Recorder.SaveBoots(boots); err != nil {
		t.logs.Warn("boot timelines not saved", "err", err)
		t.mu.Lock()
		for _, b := range boots {
			t.dirty[b.Host] = true
		}
		t.mu.Unlock()
	}
}

// Forget drops a host's current boot (the host was removed).
func (t *Tracker) Forget(host string) {
	t.mu.Lock()
	delete(t.cur, host)
	delete(t.loaded, host)
	delete(t.dirty, host)
	t.mu.Unlock()
}

// LastBoot is the host's latest boot: the current one, which is the
// newest stored one until an event comes (read from the Recorder once per
// host, so listings and scrapes do not read the store again).
func (t *Tracker) LastBoot(host string) (Boot, bool) {
	t.load(host)
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.cur[host]
	if b == nil {
		return Boot{}, false
	}
	return b.clone(), true
}

// Boots lists the host's boots, newest first: the stored ones with the
// current one as it is now.
func (t *Tracker) Boots(host string) ([]Boot, error) {
	var out []Boot
	if t.cfg.Recorder != nil {
		var err error
		if out, err = t.cfg.Recorder.Boots(host); err != nil {
			return nil, err
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if b := t.cur[host]; b != nil {
		if len(out) > 0 && out[0].Started.Equal(b.Started) {
			out[0] = b.clone()
		} else {
			out = append([]Boot{b.clone()}, out...)
		}
	}
	if out == nil {
		out = []Boot{}
	}
	return out, nil
}

// State says where host stands: sessions is how many iSCSI sessions it
// has now, loggedIn the start of its oldest (zero without).
func (t *Tracker) State(host string, sessions int, loggedIn time.Time) State {
	b, ok := t.LastBoot(host)
	if sessions > 0 {
		switch {
		case ok && b.Result == Booting:
			return State{State: StateBooting, Stage: b.Stage, Since: b.Started}
		case ok && b.Result == Completed:
			return State{State: StateOnline, Since: b.Completed}
		}
		// Logged in before this server knew of its boot (it restarted).
		return State{State: StateOnline, Since: loggedIn}
	}
	if !ok {
		return State{State: StateOffline}
	}
	switch b.Result {
	case Booting:
		if idle := t.cfg.Now().Sub(b.Updated); idle >= t.cfg.StuckAfter {
			// Stuck, though Run has not marked it yet (it does each
			// SaveEvery; a stored boot of a server that stopped is
			// marked at its next tick).
			return State{State: StateStuck, Stage: b.Stage, Since: b.Updated, Failure: stuckFailure(idle.Round(time.Second), b.Stage)}
		}
		return State{State: StateBooting, Stage: b.Stage, Since: b.Started}
	case Failed:
		return State{State: StateFailed, Stage: b.Stage, Since: b.Updated, Failure: b.Failure}
	case Stuck:
		return State{State: StateStuck, Stage: b.Stage, Since: b.Updated, Failure: b.Failure}
	}
	return State{State: StateOffline}
}

// ErrTooManySubscribers is Subscribe's refusal beyond its bound.
var ErrTooManySubscribers = fmt.Errorf("bootevent: more than %d live streams", maxSubscribers)

// Subscribe returns a channel of every event from now on, and a function
// that ends the subscription. The channel is closed when the subscriber
// lags too far behind (it should reload the state and subscribe again)
// or when cancel is called.
func (t *Tracker) Subscribe() (<-chan Event, func(), error) {
	ch := make(chan Event, subscriberBuffer)
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.subs) >= maxSubscribers {
		return nil, nil, ErrTooManySubscribers
	}
	t.subs[ch] = struct{}{}
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			t.mu.Lock()
			if _, ok := t.subs[ch]; ok {
				delete(t.subs, ch)
				close(ch)
			}
			t.mu.Unlock()
		})
	}, nil
}

// Stats returns a copy of the counters.
func (t *Tracker) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.stats
	s.Reached = append([]uint64(nil), t.stats.Reached...)
	s.DurationCounts = append([]uint64(nil), t.stats.DurationCounts...)
	s.Failed = make(map[FailKey]uint64, len(t.stats.Failed))
	for k, v := range t.stats.Failed {
		s.Failed[k] = v
	}
	return s
}
