package app

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/store"
	"github.com/diskless-boot/diskless/internal/testutil/output"
)

// serveOnce runs RunServe until it is up, stops it, and returns its log.
func serveOnce(t *testing.T, extra, dataDir string) string {
	t.Helper()
	cfg, _, _ := loadConfig(t, extra)
	if dataDir != "" {
		cfg.DataDir = dataDir
	}
	var logs output.Output
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- RunServe(ctx, ServeOptions{Config: cfg, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	}()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(logs.String(), "serving") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("RunServe: %v\n%s", err, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("RunServe did not return after cancel")
	}
	return logs.String()
}

// A host whose YAML turns CHAP off is warned about at every start, not
// only the first.
func TestCHAPOffWarnedAtEveryStart(t *testing.T) {
	data := filepath.Join(t.TempDir(), "state")
	for start := 1; start <= 2; start++ {
		logs := serveOnce(t, "    chap: false\n", data)
		if !strings.Contains(logs, "host without CHAP") || !strings.Contains(logs, "host=client1") {
			t.Errorf("start %d: no warning about client1 without CHAP:\n%s", start, logs)
		}
	}
	// With the default (CHAP on) there is nothing to warn about.
	if logs := serveOnce(t, "", ""); strings.Contains(logs, "host without CHAP") {
		t.Errorf("warning with CHAP on:\n%s", logs)
	}
}

// A data dir and state store left readable by others (an older install,
// a restored backup) are tightened at start, and the log says so.
func TestDataDirTightened(t *testing.T) {
	data := filepath.Join(t.TempDir(), "state")
	serveOnce(t, "", data)
	db := filepath.Join(data, store.FileName)
	if err := os.Chmod(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(db, 0o644); err != nil {
		t.Fatal(err)
	}
	logs := serveOnce(t, "", data)
	for path, want := range map[string]os.FileMode{data: 0o700, db: 0o600} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", path, st.Mode().Perm(), want)
		}
	}
	if !strings.Contains(logs, "made it 0700") || !strings.Contains(logs, "made it 0600") {
		t.Errorf("tightening not logged:\n%s", logs)
	}
}
