package ratelog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestLimiterBurstRefillAndSuppressedCount(t *testing.T) {
	l := New(time.Second, 2)
	t0 := time.Unix(1000, 0)
	for i := range 2 {
		if ok, n := l.AllowAt(t0); !ok || n != 0 {
			t.Fatalf("event %d of the burst: ok=%v suppressed=%d", i, ok, n)
		}
	}
	for i := range 5 {
		if ok, _ := l.AllowAt(t0.Add(time.Duration(i) * 100 * time.Millisecond)); ok {
			t.Fatalf("event %d after the burst allowed within the second", i)
		}
	}
	// A second later one token is back, and the line carries the five
	// that were held back.
	if ok, n := l.AllowAt(t0.Add(1500 * time.Millisecond)); !ok || n != 5 {
		t.Fatalf("after refill: ok=%v suppressed=%d, want true 5", ok, n)
	}
	if ok, _ := l.AllowAt(t0.Add(1600 * time.Millisecond)); ok {
		t.Fatal("only one token should have come back")
	}
	// A clock that steps back gives no tokens.
	if ok, _ := l.AllowAt(t0); ok {
		t.Fatal("a clock stepping back refilled the bucket")
	}
}

func TestLoggerOneBucketPerMessage(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	r := NewLogger(time.Hour, 1)
	for range 100 {
		r.Log(log, slog.LevelWarn, "connection refused", "remote", "10.0.0.1:1")
	}
	r.Log(log, slog.LevelWarn, "login timed out")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2 (one per message):\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[1], "login timed out") {
		t.Fatalf("a flood of one message muted another: %q", lines[1])
	}
	// Disabled levels take no token.
	r.Log(log, slog.LevelDebug, "debug line")
	r2 := NewLogger(time.Hour, 1)
	r2.Log(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelError})), slog.LevelWarn, "x")
	r2.Log(log, slog.LevelWarn, "x")
	if !strings.Contains(buf.String(), "msg=x") {
		t.Fatal("a line dropped for its level used up the bucket")
	}
}
