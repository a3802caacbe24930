package iscsi

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/iotrace"
)

// waitNoSessions waits until every session has ended (and with it every
// trace is closed).
func waitNoSessions(t *testing.T, srv *Server) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for srv.SessionCount() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("sessions did not end")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func readTraces(t *testing.T, dir string) []*iotrace.Trace {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.trace"))
	if err != nil {
		t.Fatal(err)
	}
	var out []*iotrace.Trace
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := iotrace.Read(fh, 0)
		fh.Close()
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, tr)
	}
	return out
}

// A boot's sessions - iPXE's, the OS's logging in while iPXE's is still
// open, and one after both ended, as iscsistart and iscsid do - land in one
// trace with their READs and WRITEs in order, closed at shutdown.
func TestIOTrace(t *testing.T) {
	dir := t.TempDir()
	srv, addr := startTargetWith(t, Config{TraceDir: dir}, nil)
	ipxe := loggedInISID(t, addr, 0x23d000000001)
	if st, _, _ := ipxe.command(0, rw10(0x28, 0, 1), nil, 512); st != 0 {
		t.Fatalf("READ: %#x", st)
	}
	if st, _, _ := ipxe.command(0, rw10(0x28, 100, 8), nil, 4096); st != 0 {
		t.Fatalf("READ: %#x", st)
	}
	os1 := loggedInISID(t, addr, 0x400001370000)
	if st, _, _ := os1.command(0, rw10(0x2a, 200, 2), make([]byte, 1024), 0); st != 0 {
		t.Fatalf("WRITE: %#x", st)
	}
	// Out of range: not served, not recorded.
	if st, _, _ := os1.command(0, rw10(0x28, 1<<30, 1), nil, 512); st == 0 {
		t.Fatal("READ beyond the disk succeeded")
	}
	ipxe.logout()
	os1.logout()
	waitNoSessions(t, srv)
	os2 := loggedInISID(t, addr, 0x400001370001)
	if st, _, _ := os2.command(0, rw10(0x28, 300, 16), nil, 8192); st != 0 {
		t.Fatalf("READ: %#x", st)
	}
	os2.logout()
	waitNoSessions(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	traces := readTraces(t, dir)
	if len(traces) != 1 {
		t.Fatalf("%d traces, want 1", len(traces))
	}
	tr := traces[0]
	if tr.Target != testIQN || tr.BlockSize != 512 || len(tr.Sessions) != 3 {
		t.Fatalf("header %+v, %d sessions", tr.Header, len(tr.Sessions))
	}
	if s := tr.Sessions; s[0].ISID != 0x23d000000001 || s[1].ISID != 0x400001370000 || s[2].ISID != 0x400001370001 ||
		s[0].Initiator != testInitiator1 || s[0].End == 0 || s[1].At < s[0].At || s[2].At < s[1].End {
		t.Fatalf("sessions %+v", tr.Sessions)
	}
	type io struct {
		s      int
		w      bool
		lba    uint64
		blocks uint32
	}
	var got []io
	for _, r := range tr.IOs {
		got = append(got, io{r.Session, r.Write, r.LBA, r.Blocks})
	}
	want := []io{{0, false, 0, 1}, {0, false, 100, 8}, {1, true, 200, 2}, {2, false, 300, 16}}
	if !slices.Equal(got, want) {
		t.Fatalf("records %+v, want %+v", got, want)
	}
}

// A session after the last one's trace lingered out starts a new file.
func TestIOTraceLinger(t *testing.T) {
	dir := t.TempDir()
	srv, addr := startTargetWith(t, Config{TraceDir: dir, TraceLinger: time.Millisecond}, nil)
	for i := range 2 {
		in := loggedInISID(t, addr, 0x23d000000001)
		in.command(0, rw10(0x28, 0, 1), nil, 512)
		in.logout()
		waitNoSessions(t, srv)
		deadline := time.Now().Add(5 * time.Second)
		for {
			srv.traceMu.Lock()
			open := len(srv.traces)
			srv.traceMu.Unlock()
			if open == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("trace not closed")
			}
			time.Sleep(time.Millisecond)
		}
		if got := readTraces(t, dir); len(got) != i+1 || len(got[i].IOs) != 1 {
			t.Fatalf("after boot %d: %d traces", i+1, len(got))
		}
	}
}
