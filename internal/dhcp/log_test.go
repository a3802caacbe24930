package dhcp

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

type recorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *recorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Clone())
	return nil
}
func (h *recorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recorder) WithGroup(string) slog.Handler      { return h }

func attrs(r slog.Record) map[string]string {
	m := map[string]string{}
	r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.String(); return true })
	return m
}

// Each offer and ack is logged per client with the fixed keys.
func TestLogsPerClient(t *testing.T) {
	rec := &recorder{}
	cfg := fullConfig()
	cfg.Logger = slog.New(rec)
	s, _ := newTestServer(t, cfg)
	dora(t, s, kindIPXEBIOS, macN(5), 1, nil)
	var ops []string
	for _, r := range rec.recs {
		a := attrs(r)
		if a["mac"] != "52:54:00:00:00:05" || a["ip"] != "10.77.0.100" || r.Level != slog.LevelInfo {
			t.Errorf("log %q %v", r.Message, a)
		}
		ops = append(ops, a["op"])
	}
	if len(ops) != 2 || ops[0] != "offer" || ops[1] != "ack" {
		t.Errorf("logged ops %v, want offer, ack", ops)
	}
}

// A flood of bad packets makes a bounded number of log lines.
func TestClientTriggeredLogsRateLimited(t *testing.T) {
	rec := &recorder{}
	cfg := proxyConfig()
	cfg.Logger = slog.New(rec)
	s, _ := newTestServer(t, cfg)
	d := kindBIOSPXE.build(macN(1), dhcpv4.MessageTypeDiscover, 1)
	d.HWType = iana.HWTypeIEEE802
	b := d.ToBytes()
	for range 5000 {
		s.handle(b, testSrc, false)
	}
	if n := len(rec.recs); n < 10 || n > 200 {
		t.Errorf("5000 bad packets made %d log lines", n)
	}
}
