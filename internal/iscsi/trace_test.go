package iscsi

import (
	"os"
	"path/filepath"
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

// A boot's two sessions (iPXE's, then the OS's logging in while iPXE's is
// still open) land in one trace with their READs and WRITEs in order; a
// session after both ended starts the next file.
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
	if st, _, _ := os1.command(0, rw10(0x28, 300, 16), nil, 8192); st != 0 {
		t.Fatalf("READ: %#x", st)
	}
	os1.logout()
	waitNoSessions(t, srv)
	next := loggedInISID(t, addr, 0x23d000000002)
	next.command(0, rw10(0x28, 0, 1), nil, 512)
	next.logout()
	waitNoSessions(t, srv)

	traces := readTraces(t, dir)
	if len(traces) != 2 {
		t.Fatalf("%d traces, want 2", len(traces))
	}
	tr := traces[0]
	if tr.Started.After(traces[1].Started) {
		tr = traces[1]
	}
	if tr.Target != testIQN || tr.BlockSize != 512 || len(tr.Sessions) != 2 {
		t.Fatalf("header %+v, %d sessions", tr.Header, len(tr.Sessions))
	}
	if s := tr.Sessions; s[0].ISID != 0x23d000000001 || s[1].ISID != 0x400001370000 ||
		s[0].Initiator != testInitiator1 || s[0].End == 0 || s[1].End < s[0].End || s[1].At < s[0].At {
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
	want := []io{{0, false, 0, 1}, {0, false, 100, 8}, {1, true, 200, 2}, {1, false, 300, 16}}
	if len(got) != len(want) {
		t.Fatalf("records %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("records %+v, want %+v", got, want)
		}
	}
}
