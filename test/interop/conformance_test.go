package interop

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConformance runs libiscsi's iscsi-test-cu through
// ../shared/tools/iscsi-conformance on a fresh 1 GiB sparse scratch LUN and
// requires no failures and at least 200 passed tests. (Debian's tgt scores
// about passed=157 skipped=62 failed=11 of 230.)
func TestConformance(t *testing.T) {
	needPeers(t, "iscsi-test-cu", "python3")
	tool := sharedTool(t, "iscsi-conformance")
	dir := t.TempDir()
	img := filepath.Join(dir, "scratch.img")
	if err := os.Truncate(createFile(t, img), 1<<30); err != nil {
		t.Fatal(err)
	}
	tg := startTarget(t, targetConfig{LUNs: []lunConfig{{Path: img}}})

	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	start := time.Now()
	report := filepath.Join(dir, "conformance.json")
	out, err := exec.CommandContext(ctx, tool, tg.URL(0, nil), "--json", report, "--timeout", "1200").CombinedOutput()
	t.Logf("iscsi-conformance ran %v", time.Since(start).Round(time.Second))
	if err != nil {
		t.Fatalf("iscsi-conformance: %v\n%s", err, tail(string(out), 4000))
	}

	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var passed, skipped, failed, total int
	if _, err := fmt.Sscanf(lines[len(lines)-1], "conformance passed=%d skipped=%d failed=%d total=%d",
		&passed, &skipped, &failed, &total); err != nil {
		t.Fatalf("no summary line from iscsi-conformance (%v):\n%s", err, tail(string(out), 4000))
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "FAILED ") {
			t.Log(l)
		}
	}
	t.Logf("conformance passed=%d skipped=%d failed=%d total=%d", passed, skipped, failed, total)
	if failed != 0 {
		t.Errorf("%d conformance tests failed (listed above)", failed)
	}
	if passed < 200 {
		t.Errorf("only %d conformance tests passed, want at least 200", passed)
	}
}
