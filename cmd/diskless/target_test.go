package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// diskless target takes CHAP credentials from a file or the environment
// so they need not be in argv, and warns when they are.
func TestTargetCredentialsSources(t *testing.T) {
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	f := filepath.Join(t.TempDir(), "chap")
	os.WriteFile(f, []byte("user1:file-secret-0123\n"), 0o600)
	c, err := credentials(log, "--chap", "", "--chap-file", f, "DISKLESS_TEST_CHAP")
	if err != nil || c.User != "user1" || c.Secret != "file-secret-0123" {
		t.Fatalf("file: %+v %v", c, err)
	}
	t.Setenv("DISKLESS_TEST_CHAP", "user2:env-secret-01234")
	if c, err = credentials(log, "--chap", "", "--chap-file", "", "DISKLESS_TEST_CHAP"); err != nil || c.User != "user2" {
		t.Fatalf("env: %+v %v", c, err)
	}
	if logs.Len() != 0 {
		t.Errorf("warned for a file or env secret: %s", logs.String())
	}
	if c, err = credentials(log, "--chap", "user3:argv-secret-0123", "--chap-file", "", "DISKLESS_TEST_CHAP"); err != nil || c.User != "user3" {
		t.Fatalf("flag: %+v %v", c, err)
	}
	if !strings.Contains(logs.String(), "visible to every user") || strings.Contains(logs.String(), "argv-secret") {
		t.Errorf("flag: %s", logs.String())
	}
	if _, err := credentials(log, "--chap", "u:s-0123456789ab", "--chap-file", f, "DISKLESS_TEST_CHAP"); err == nil {
		t.Error("flag and file both accepted")
	}
}
