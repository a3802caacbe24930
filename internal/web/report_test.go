package web

import (
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/diskless-boot/diskless/internal/boot"
	"github.com/diskless-boot/diskless/internal/bootevent"
)

// eventLog collects the events a server emits.
type eventLog struct {
	mu     sync.Mutex
	events []bootevent.Event
}

func (l *eventLog) add(e bootevent.Event) { l.mu.Lock(); l.events = append(l.events, e); l.mu.Unlock() }
func (l *eventLog) all() []bootevent.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]bootevent.Event(nil), l.events...)
}

// A host's script reports its failed step: the event names the host, the
// step and iPXE's error in words. Only the host itself may report, with
// a step and error number that parse.
func TestFailureReport(t *testing.T) {
	var ev eventLog
	e := startConfig(t, boot.PolicyLocal, Config{Neighbors: is(macCHAP), Events: ev.add})
	report := func(mac, step, errno string) int {
		q := url.Values{"mac": {mac}, "step": {step}, "errno": {errno}}
		code, _ := get(t, e.url+boot.ReportPath+"?"+q.Encode())
		return code
	}
	if code := report(macCHAP.String(), "sanboot", "0x0216eb3c"); code != 200 {
		t.Fatalf("report: %d", code)
	}
	got := ev.all()
	if len(got) != 1 || got[0].Host != "secret-host" || got[0].Stage != bootevent.StageFailed ||
		got[0].Error != "sanboot failed: Permission denied (https://ipxe.org/0216eb3c)" {
		t.Fatalf("events %+v", got)
	}
	for _, c := range []struct {
		mac, step, errno string
		code             int
	}{
		{macPlain.String(), "sanboot", "0x0216eb3c", 403}, // another machine's address
		{macOther.String(), "sanboot", "0x0216eb3c", 403}, // no host
		{macCHAP.String(), "format-disk", "0x0216eb3c", 400},
		{macCHAP.String(), "sanboot", "permission", 400},
		{"zz", "sanboot", "1", 400},
	} {
		if code := report(c.mac, c.step, c.errno); code != c.code {
			t.Errorf("report %s %s %s: %d, want %d", c.mac, c.step, c.errno, code, c.code)
		}
	}
	if n := len(ev.all()); n != 1 {
		t.Errorf("%d events after refused reports", n)
	}
	// The script fetched from the host's own address is a boot step.
	if code, _ := get(t, e.url+"/boot.ipxe?mac="+macCHAP.String()); code != 200 {
		t.Fatal(code)
	}
	if got := ev.all(); got[len(got)-1].Stage != bootevent.StageScript || got[len(got)-1].Host != "secret-host" {
		t.Fatalf("script event %+v", got[len(got)-1])
	}
	if !strings.Contains(e.logs.String(), "boot failure report refused") {
		t.Errorf("refused report not logged:\n%s", e.logs)
	}
}
