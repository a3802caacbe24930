//go:build linux

package main

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/iotrace"
	"github.com/diskless-boot/diskless/internal/testutil/build"
)

const head = "# diskless io trace v1\n# target t\n# started 2026-12-05T06:30:00Z\n# block-size 512\n"

func mustTrace(t *testing.T, s string) *iotrace.Trace {
	t.Helper()
	tr, err := iotrace.Read(strings.NewReader(s), 0)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// A plan puts the trace's commands in the order they arrived, over its
// sessions, leaves out commands of no blocks and knows the largest command
// and the disk it needs.
func TestNewPlan(t *testing.T) {
	tr := mustTrace(t, head+`L,0,0,23d000000001,1,ipxe
R,100,0,0,0,1
R,200,0,0,2048,128
L,4900,1,400001370000,2,os
R,4950,1,0,10,0
L,5002,2,400001370001,3,os
W,5003,2,0,4096,8
R,4999,1,0,100,8
`)
	p, err := newPlan(tr)
	if err != nil {
		t.Fatal(err)
	}
	want := []step{
		{at: 100 * time.Microsecond, lba: 0, blocks: 1},
		{at: 200 * time.Microsecond, lba: 2048, blocks: 128},
		{at: 4999 * time.Microsecond, lba: 100, blocks: 8}, // served after the WRITE
		{at: 5003 * time.Microsecond, write: true, lba: 4096, blocks: 8},
	}
	if len(p.steps) != len(want) {
		t.Fatalf("steps %+v, want %+v", p.steps, want)
	}
	for i := range want {
		if p.steps[i] != want[i] {
			t.Fatalf("step %d: %+v, want %+v", i, p.steps[i], want[i])
		}
	}
	if p.maxBytes != 128*512 || p.endBlock != 4104 || p.blockSize != 512 {
		t.Fatalf("max %d, end %d, block size %d", p.maxBytes, p.endBlock, p.blockSize)
	}

	if _, err := newPlan(mustTrace(t, head+"L,0,0,1,1,i\nR,1,0,1,0,1\n")); err == nil {
		t.Error("a command on LUN 1 was taken")
	}
	if _, err := newPlan(mustTrace(t, head+"L,0,0,1,1,i\nR,1,0,0,0,0\n")); err == nil {
		t.Error("a trace without a command was taken")
	}
}

// Two hosts replay a small trace at once against diskless serve on
// loopback (tgt left out): the benchmark runs end to end.
func TestReplaySmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds diskless and starts it")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root, like the benchmark")
	}
	root, err := build.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin, err := build.Diskless(root, dir, false)
	if err != nil {
		t.Fatal(err)
	}
	trace := filepath.Join(dir, "boot.trace")
	if err := os.WriteFile(trace, []byte(head+`L,0,0,23d000000001,1,ipxe
R,100,0,0,0,1
R,200,0,0,2048,128
L,5000,1,400001370000,2,os
W,5003,1,0,4096,8
R,6000,1,0,4096,8
R,7000,1,0,1000000,2048
E,8000,1
`), 0o644); err != nil {
		t.Fatal(err)
	}
	rows, err := run(options{trace: trace, counts: []int{2}, alone: 1, bin: bin, size: 1 << 30, timeout: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[1].n != 2 || rows[1].server != "diskless" {
		t.Fatalf("rows %+v", rows)
	}
	for _, r := range rows {
		if r.errors != 0 || r.last <= 0 {
			t.Errorf("%s N=%d: %d errors (%v), last %v", r.server, r.n, r.errors, r.firstErr, r.last)
		}
	}
}

// The floor's null responder and client run a plan of READs and WRITEs,
// and the responder drops a request longer than its largest command.
func TestNullFloor(t *testing.T) {
	p, err := newPlan(mustTrace(t, head+`L,0,0,23d000000001,1,ipxe
R,100,0,0,0,1
W,200,0,0,4096,8
R,300,0,0,2048,128
`))
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- serveNull(l, p.maxBytes) }()
	ctx := context.Background()
	for range 3 {
		if err := replayNullOne(ctx, p, l.Addr().String(), nil, false, time.Now()); err != nil {
			t.Fatal(err)
		}
	}

	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := make([]byte, nullHeader)
	nullRequest(req, false, p.maxBytes+1)
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(req); err != io.EOF {
		t.Errorf("a request over the largest command: read %d bytes, %v; want the connection closed", n, err)
	}
	l.Close()
	if err := <-done; err != nil {
		t.Errorf("serveNull: %v", err)
	}
}
