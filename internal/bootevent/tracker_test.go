package bootevent

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// clock is a settable time source.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock                   { return &clock{t: time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)} }
func (c *clock) event(s Stage, d string) Event {
	return Event{Time: c.t, Host: "pc1", Stage: s, Detail: d}
}

// memRecorder keeps the latest boots per host in memory, as the store does.
type memRecorder struct {
	mu    sync.Mutex
	boots map[string][]Boot // newest first
	saves int
}

func (m *memRecorder) SaveBoots(bs []Boot) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.saves++
	if m.boots == nil {
		m.boots = map[string][]Boot{}
	}
	for _, b := range bs {
		list := m.boots[b.Host]
		if len(list) > 0 && list[0].Started.Equal(b.Started) {
			list[0] = b
		} else {
			list = append([]Boot{b}, list...)
		}
		m.boots[b.Host] = list
	}
	return nil
}

func (m *memRecorder) Boots(host string) ([]Boot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Boot(nil), m.boots[host]...), nil
}

// biosBoot feeds the steps of one PXE ROM -> iPXE -> sanboot -> initramfs
// boot, 1 s apart.
func biosBoot(tr *Tracker, c *clock) {
	for _, e := range []struct {
		s Stage
		d string
	}{
		{StageDHCP, "DISCOVER -> offer"}, {StageDHCP, "REQUEST -> ack"}, {StageTFTP, "undionly.kpxe"},
		{StageIPXEDHCP, "DISCOVER -> offer"}, {StageIPXEDHCP, "REQUEST -> ack"}, {StageScript, "iPXE script"},
		{StageSANLogin, "iPXE login"}, {StageRootLogin, "login"},
	} {
		tr.Emit(c.event(e.s, e.d))
		c.advance(time.Second)
	}
}

func TestBootCompletes(t *testing.T) {
	c := newClock()
	tr := New(Config{Now: c.now})
	if st := tr.State("pc1", 0, time.Time{}); st.State != StateOffline {
		t.Fatalf("before any event: %+v", st)
	}
	tr.Emit(c.event(StageDHCP, "DISCOVER -> offer"))
	if st := tr.State("pc1", 0, time.Time{}); st.State != StateBooting || st.Stage != StageDHCP {
		t.Fatalf("after DHCP: %+v", st)
	}
	c.advance(time.Second)
	tr.Emit(c.event(StageDHCP, "REQUEST -> ack"))
	for _, s := range []Stage{StageTFTP, StageIPXEDHCP, StageScript, StageSANLogin} {
		c.advance(time.Second)
		tr.Emit(c.event(s, ""))
	}
	if st := tr.State("pc1", 1, c.t); st.State != StateBooting || st.Stage != StageSANLogin {
		t.Fatalf("during iPXE's session: %+v", st)
	}
	c.advance(20 * time.Second)
	tr.Emit(c.event(StageRootLogin, ""))
	st := tr.State("pc1", 1, c.t)
	if st.State != StateOnline || !st.Since.Equal(c.t) {
		t.Fatalf("after the OS login: %+v", st)
	}
	b, _ := tr.LastBoot("pc1")
	if b.Result != Completed || b.DurationSeconds != 25 || len(b.Events) != 7 || b.Attempts != 1 {
		t.Fatalf("boot: result %s duration %v events %d attempts %d", b.Result, b.DurationSeconds, len(b.Events), b.Attempts)
	}
	s := tr.Stats()
	if s.Started != 1 || s.Completed != 1 || s.DurationSum != 25 || s.DurationCounts[4] != 1 { // 20 < 25 <= 30
		t.Fatalf("stats %+v", s)
	}
	// A reconnect of the running system is a session, not a boot.
	c.advance(time.Minute)
	tr.Emit(c.event(StageRootLogin, ""))
	if b, _ := tr.LastBoot("pc1"); b.Events[len(b.Events)-1].Stage != StageSession || tr.Stats().Started != 1 {
		t.Fatalf("re-login: %+v", b.Events[len(b.Events)-1])
	}
	// Offline once the sessions are gone; the next DHCP is a new boot.
	if st := tr.State("pc1", 0, time.Time{}); st.State != StateOffline {
		t.Fatalf("no session: %+v", st)
	}
	c.advance(time.Minute)
	biosBoot(tr, c)
	if s := tr.Stats(); s.Started != 2 || s.Completed != 2 {
		t.Fatalf("second boot: %+v", s)
	}
}

func TestFailureReportAndRetry(t *testing.T) {
	c := newClock()
	tr := New(Config{Now: c.now})
	tr.Emit(c.event(StageIPXEDHCP, "DISCOVER -> offer")) // an iPXE ROM starts here
	c.advance(time.Second)
	tr.Emit(c.event(StageScript, ""))
	c.advance(time.Second)
	fail := c.event(StageFailed, "iPXE: sanboot failed")
	fail.Error = "sanboot failed: Permission denied (https://ipxe.org/0216eb3c)"
	tr.Emit(fail)
	st := tr.State("pc1", 0, time.Time{})
	if st.State != StateFailed || st.Stage != StageScript || st.Failure != fail.Error {
		t.Fatalf("after the report: %+v", st)
	}
	if n := tr.Stats().Failed[FailKey{StageScript, "reported"}]; n != 1 {
		t.Fatalf("failed{script,reported} = %d", n)
	}
	// iPXE asks again 10 s later: the same boot, a second attempt.
	c.advance(10 * time.Second)
	tr.Emit(c.event(StageScript, ""))
	b, _ := tr.LastBoot("pc1")
	if b.Result != Booting || b.Attempts != 2 || tr.Stats().Started != 1 {
		t.Fatalf("retry: result %s attempts %d started %d", b.Result, b.Attempts, tr.Stats().Started)
	}
	// A refused login fails it with reason login.
	refused := c.event(StageFailed, DetailLoginRefused)
	refused.Error = "CHAP response does not match"
	tr.Emit(refused)
	if n := tr.Stats().Failed[FailKey{StageScript, "login"}]; n != 1 {
		t.Fatalf("failed{script,login} = %d", n)
	}
}

func TestStuck(t *testing.T) {
	c := newClock()
	rec := &memRecorder{}
	tr := New(Config{Now: c.now, StuckAfter: time.Minute, Recorder: rec})
	tr.Emit(c.event(StageDHCP, ""))
	c.advance(time.Second)
	tr.Emit(c.event(StageTFTP, ""))
	c.advance(59 * time.Second)
	tr.markStuck()
	if st := tr.State("pc1", 0, time.Time{}); st.State != StateBooting {
		t.Fatalf("59 s after the last step: %+v", st)
	}
	c.advance(time.Second)
	tr.markStuck()
	st := tr.State("pc1", 0, time.Time{})
	if st.State != StateStuck || st.Stage != StageTFTP || st.Failure == "" {
		t.Fatalf("60 s after the last step: %+v", st)
	}
	tr.Save()
	if bs, _ := rec.Boots("pc1"); len(bs) != 1 || bs[0].Result != Stuck {
		t.Fatalf("recorded: %+v", bs)
	}
}

// A restarted server goes on with the stored boot: the running system's
// re-login is a session, a boot in progress completes.
func TestRestartContinuesFromRecorder(t *testing.T) {
	c := newClock()
	rec := &memRecorder{}
	tr := New(Config{Now: c.now, Recorder: rec})
	biosBoot(tr, c)
	tr.Emit(Event{Time: c.t, Host: "pc2", Stage: StageSANLogin})
	tr.Save()

	c.advance(time.Minute)
	tr2 := New(Config{Now: c.now, Recorder: rec})
	tr2.Emit(c.event(StageRootLogin, ""))
	tr2.Emit(Event{Time: c.t, Host: "pc2", Stage: StageRootLogin})
	if s := tr2.Stats(); s.Started != 0 || s.Completed != 1 {
		t.Fatalf("after restart: %+v", s)
	}
	if b, _ := tr2.LastBoot("pc1"); b.Result != Completed || b.Events[len(b.Events)-1].Stage != StageSession {
		t.Fatalf("pc1 after restart: %+v", b)
	}
	// A boot stored while under way, by a server that then stopped, is
	// stuck once StuckAfter passed, though no Run marked it.
	tr2.Save()
	c.advance(DefaultStuckAfter)
	tr4 := New(Config{Now: c.now, Recorder: rec})
	if st := tr4.State("pc2", 0, time.Time{}); st.State != StateOffline {
		t.Fatalf("pc2 completed its boot above, then: %+v", st)
	}
	tr.Emit(Event{Time: c.t, Host: "pc5", Stage: StageScript})
	tr.Save()
	c.advance(DefaultStuckAfter)
	if st := tr4.State("pc5", 0, time.Time{}); st.State != StateStuck || st.Stage != StageScript {
		t.Fatalf("a stored boot under way, %s later: %+v", DefaultStuckAfter, st)
	}

	// Without any stored boot, a login is a session and no timeline.
	tr3 := New(Config{Now: c.now})
	tr3.Emit(Event{Time: c.t, Host: "pc3", Stage: StageRootLogin})
	if _, ok := tr3.LastBoot("pc3"); ok {
		t.Fatal("a session made a timeline")
	}
	if st := tr3.State("pc3", 1, c.t); st.State != StateOnline || !st.Since.Equal(c.t) {
		t.Fatalf("online without a timeline: %+v", st)
	}
}

// A flood of events costs bounded memory: repeats merge, the timeline
// keeps its start and its latest events.
func TestEventsBounded(t *testing.T) {
	c := newClock()
	tr := New(Config{Now: c.now})
	tr.Emit(c.event(StageDHCP, "first"))
	for range 1000 {
		tr.Emit(c.event(StageDHCP, "DISCOVER -> offer"))
	}
	b, _ := tr.LastBoot("pc1")
	if len(b.Events) != 2 || b.Events[1].Count != 1000 {
		t.Fatalf("repeats: %d events, count %d", len(b.Events), b.Events[1].Count)
	}
	for i := range 1000 {
		tr.Emit(c.event(StageDHCP, fmt.Sprint(i)))
	}
	b, _ = tr.LastBoot("pc1")
	if len(b.Events) != MaxEvents || b.Events[0].Detail != "first" || b.Events[MaxEvents-1].Detail != "999" ||
		b.DroppedEvents != 1002-MaxEvents {
		t.Fatalf("bounded: %d events, first %q last %q dropped %d", len(b.Events), b.Events[0].Detail,
			b.Events[len(b.Events)-1].Detail, b.DroppedEvents)
	}
}

func TestSubscribers(t *testing.T) {
	c := newClock()
	tr := New(Config{Now: c.now})
	ch, cancel, err := tr.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	slow, cancelSlow, _ := tr.Subscribe()
	defer cancelSlow()
	tr.Emit(Event{Stage: StageDHCP, MAC: "52:54:00:00:00:01"}) // no host: streamed, no timeline
	if e := <-ch; e.MAC != "52:54:00:00:00:01" || e.Time.IsZero() {
		t.Fatalf("got %+v", e)
	}
	for range subscriberBuffer + 1 {
		tr.Emit(c.event(StageDHCP, ""))
		<-ch
	}
	// slow never read: cut off, its channel closed after what it holds.
	n := 0
	for range slow {
		n++
	}
	if n != subscriberBuffer || tr.Stats().SubscribersCut != 1 {
		t.Fatalf("slow subscriber got %d events, cut %d", n, tr.Stats().SubscribersCut)
	}
	var cancels []func()
	for range maxSubscribers - 1 {
		_, cf, err := tr.Subscribe()
		if err != nil {
			t.Fatal(err)
		}
		cancels = append(cancels, cf)
	}
	if _, _, err := tr.Subscribe(); err == nil {
		t.Fatal("subscribed beyond the bound")
	}
	for _, cf := range cancels {
		cf()
	}
}

func TestRunSavesAtEnd(t *testing.T) {
	rec := &memRecorder{}
	tr := New(Config{Recorder: rec, SaveEvery: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tr.Run(ctx); close(done) }()
	tr.Emit(Event{Host: "pc1", Stage: StageDHCP})
	cancel()
	<-done
	if bs, _ := rec.Boots("pc1"); len(bs) != 1 {
		t.Fatalf("saved %d boots at the end", len(bs))
	}
}
