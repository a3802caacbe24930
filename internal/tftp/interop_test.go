package tftp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Interop tests against real TFTP clients. Each skips when its client is
// not installed; CI installs them (apt-get install tftp-hpa atftp curl
// busybox).
//
//	client            options it sends           notes
//	tftp-hpa 5.2      none                       RFC 1350 only; real netascii decoder
//	atftp 0.8         blksize tsize timeout windowsize (--option)
//	curl 7.88         tsize blksize timeout      blksize via --tftp-blksize
//	busybox 1.35      blksize tsize              blksize via -b

func lookClient(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed (apt-get install %s): skipping interop test", name, pkg)
	}
	return p
}

func runClient(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// interopServer serves a temporary directory, optionally over a link that
// loses a fraction of the packets on every transfer socket.
func interopServer(t *testing.T, loss float64, cfg Config) *testServer {
	t.Helper()
	if loss > 0 {
		var mu sync.Mutex
		seed := uint64(1)
		cfg.ListenTransfer = func(local net.Addr) (net.PacketConn, error) {
			c, err := listenTransfer(local)
			if err != nil {
				return nil, err
			}
			mu.Lock()
			seed++
			s := seed
			mu.Unlock()
			return newLossyConn(c, loss, s), nil
		}
		// Real clients retransmit slowly (atftp and tftp-hpa wait 5 s
		// before re-ACKing); the server's quicker timeout drives recovery.
		if cfg.Timeout == 0 {
			cfg.Timeout = 50 * time.Millisecond
		}
		cfg.Retries = 10
	}
	if cfg.MaxBlockSize == 0 {
		cfg.MaxBlockSize = 8192
	}
	return startServer(t, cfg)
}

type interopCase struct {
	name string
	loss float64
	size int
	args func(ts *testServer, remote, local string) []string
	// wantBlk and wantWin are what the server must have negotiated.
	wantBlk, wantWin int
}

func runInterop(t *testing.T, bin string, cases []interopCase) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := interopServer(t, tc.loss, Config{})
			want, err := writeFile(ts.dir, "boot.bin", tc.size, uint64(tc.size))
			if err != nil {
				t.Fatal(err)
			}
			local := filepath.Join(t.TempDir(), "out")
			out, err := runClient(t, bin, tc.args(ts, "boot.bin", local)...)
			if err != nil {
				t.Fatalf("%s: %v\n%s", bin, err, out)
			}
			got, err := os.ReadFile(local)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if sha256.Sum256(got) != sha256.Sum256(want) {
				t.Fatalf("downloaded %d bytes, want %d: content differs\n%s", len(got), len(want), out)
			}
			st := ts.waitStats(t, "completed", func(s Stats) bool { return s.Completed >= 1 && s.Active == 0 })
			infos := ts.transfers()
			ti := infos[len(infos)-1]
			if ti.Err != nil || ti.BlockSize != tc.wantBlk || ti.WindowSize != tc.wantWin || ti.Bytes != int64(tc.size) {
				t.Errorf("transfer: blksize %d windowsize %d bytes %d err %v; want blksize %d windowsize %d",
					ti.BlockSize, ti.WindowSize, ti.Bytes, ti.Err, tc.wantBlk, tc.wantWin)
			}
			if tc.loss > 0 && st.Retransmits == 0 {
				t.Errorf("lossy link but no retransmission: the test tests nothing")
			}
			t.Logf("%+v timeout=%v dur=%v", st, ti.Timeout, ti.Duration)
		})
	}
}

func port(ts *testServer) string { return strconv.Itoa(ts.addr.Port) }

const rolloverSize = 65536*512 + 4321 // > 65535 blocks of 512 bytes

func TestInteropTFTPHPA(t *testing.T) {
	bin := lookClient(t, "tftp", "tftp-hpa")
	if out, _ := runClient(t, bin, "-V"); !strings.Contains(out, "tftp-hpa") {
		t.Skipf("tftp is not tftp-hpa: %s", out)
	}
	get := func(ts *testServer, remote, local string) []string {
		return []string{"-m", "binary", "127.0.0.1", port(ts), "-c", "get", remote, local}
	}
	cases := []interopCase{
		{name: "octet", size: 200_000, args: get, wantBlk: 512, wantWin: 1},
		{name: "lossy", loss: 0.05, size: 200_000, args: get, wantBlk: 512, wantWin: 1},
	}
	if !testing.Short() {
		cases = append(cases, interopCase{name: "rollover", size: rolloverSize, args: get, wantBlk: 512, wantWin: 1})
	}
	runInterop(t, bin, cases)

	t.Run("netascii", func(t *testing.T) {
		ts := interopServer(t, 0, Config{})
		text := "first\nsecond\r\nbare\rcr\n" + strings.Repeat("line\n", 300)
		os.WriteFile(filepath.Join(ts.dir, "t.txt"), []byte(text), 0o644)
		local := filepath.Join(t.TempDir(), "t.txt")
		out, err := runClient(t, bin, "-m", "netascii", "127.0.0.1", port(ts), "-c", "get", "t.txt", local)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		// tftp-hpa decodes netascii back to Unix text: the round trip is exact.
		if got, _ := os.ReadFile(local); string(got) != text {
			t.Fatalf("netascii round trip:\n got %q\nwant %q", got, text)
		}
	})
	t.Run("too many from one address", func(t *testing.T) {
		ts := interopServer(t, 0, Config{MaxTransfersPerSource: 1})
		writeFile(ts.dir, "f", 5000, 1)
		hog, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer hog.Close()
		hog.WriteTo((&Request{Op: OpRRQ, Filename: "f", Mode: "octet"}).AppendBinary(nil), ts.addr)
		tid := hogTID(t, hog) // its DATA 1: the one slot of 127.0.0.1 is taken
		defer hog.WriteTo((&Error{ErrCodeNotDefined, "done"}).AppendBinary(nil), tid)
		out, err := runClient(t, bin, "-m", "binary", "127.0.0.1", port(ts), "-c", "get", "f", filepath.Join(t.TempDir(), "f"))
		if !strings.Contains(out, "too many transfers from your address") {
			t.Fatalf("refusal not shown to the user (err %v): %q", err, out)
		}
		if st := ts.Stats(); st.SourceBusy != 1 {
			t.Errorf("%+v", st)
		}
	})
	t.Run("not found", func(t *testing.T) {
		ts := interopServer(t, 0, Config{})
		out, _ := runClient(t, bin, "-m", "binary", "127.0.0.1", port(ts), "-c", "get", "../../etc/passwd", filepath.Join(t.TempDir(), "x"))
		if !strings.Contains(out, "Access violation") && !strings.Contains(out, "access violation") {
			t.Fatalf("path escape not refused with an access violation: %q", out)
		}
	})
}

func TestInteropAtftp(t *testing.T) {
	bin := lookClient(t, "atftp", "atftp")
	// atftp re-ACKs a duplicate DATA only once, then waits for its own
	// timeout (5 s by default) before re-ACKing: when that extra ACK is lost
	// too, only its timeout restarts the transfer. --tftp-timeout 1 keeps
	// the lossy cases short; it is not sent as an option.
	get := func(options ...string) func(ts *testServer, remote, local string) []string {
		return func(ts *testServer, remote, local string) []string {
			args := []string{"--tftp-timeout", "1", "--get", "-r", remote, "-l", local}
			for _, o := range options {
				args = append(args, "--option", o)
			}
			return append(args, "127.0.0.1", port(ts))
		}
	}
	cases := []interopCase{
		{name: "plain", size: 100_000, args: get(), wantBlk: 512, wantWin: 1},
		{name: "blksize 1468 tsize", size: 300_000, args: get("blksize 1468", "tsize 0"), wantBlk: 1468, wantWin: 1},
		{name: "blksize 8192 capped", size: 300_000, args: get("blksize 65464"), wantBlk: 8192, wantWin: 1},
		{name: "windowsize 4", size: 300_000, args: get("blksize 1468", "windowsize 4", "tsize 0"), wantBlk: 1468, wantWin: 4},
		{name: "windowsize 16", size: 1_000_000, args: get("blksize 1468", "windowsize 16", "tsize 0", "timeout 1"), wantBlk: 1468, wantWin: 16},
		// Above Config.MaxTimeout the option is left out of the OACK;
		// atftp then keeps its own timer.
		{name: "timeout 255 ignored", size: 100_000, args: get("blksize 1468", "timeout 255", "tsize 0"), wantBlk: 1468, wantWin: 1},
		{name: "windowsize 8 lossy", loss: 0.03, size: 300_000, args: get("blksize 1468", "windowsize 8", "tsize 0"), wantBlk: 1468, wantWin: 8},
		{name: "lossy", loss: 0.05, size: 200_000, args: get("blksize 1024"), wantBlk: 1024, wantWin: 1},
	}
	if !testing.Short() {
		cases = append(cases,
			interopCase{name: "rollover", size: rolloverSize, args: get("tsize 0"), wantBlk: 512, wantWin: 1},
			interopCase{name: "rollover windowsize 16", size: rolloverSize, args: get("windowsize 16"), wantBlk: 512, wantWin: 16})
	}
	runInterop(t, bin, cases)
}

func TestInteropCurl(t *testing.T) {
	bin := lookClient(t, "curl", "curl")
	if out, _ := runClient(t, bin, "--version"); !strings.Contains(out, "tftp") {
		t.Skip("curl built without TFTP")
	}
	get := func(extra ...string) func(ts *testServer, remote, local string) []string {
		return func(ts *testServer, remote, local string) []string {
			return append(extra, "-sS", "-o", local, fmt.Sprintf("tftp://127.0.0.1:%s/%s", port(ts), remote))
		}
	}
	cases := []interopCase{
		{name: "default", size: 100_000, args: get(), wantBlk: 512, wantWin: 1},
		{name: "blksize 1468", size: 300_000, args: get("--tftp-blksize", "1468"), wantBlk: 1468, wantWin: 1},
		// curl sends a timeout option derived from its connect timeout (6 s
		// by default, which the server then honours: RFC 2349). With
		// --connect-timeout 2 it asks for 1 s.
		{name: "lossy", loss: 0.02, size: 100_000, args: get("--tftp-blksize", "1468", "--connect-timeout", "2"), wantBlk: 1468, wantWin: 1},
	}
	if !testing.Short() {
		cases = append(cases, interopCase{name: "rollover", size: rolloverSize, args: get(), wantBlk: 512, wantWin: 1})
	}
	runInterop(t, bin, cases)
}

func TestInteropBusybox(t *testing.T) {
	bin := lookClient(t, "busybox", "busybox")
	if out, _ := runClient(t, bin, "tftp"); !strings.Contains(out, "blksize") && !strings.Contains(out, "-b SIZE") {
		t.Skipf("busybox tftp without blksize: %s", out)
	}
	get := func(extra ...string) func(ts *testServer, remote, local string) []string {
		return func(ts *testServer, remote, local string) []string {
			return append(append([]string{"tftp", "-g", "-r", remote, "-l", local}, extra...), "127.0.0.1", port(ts))
		}
	}
	runInterop(t, bin, []interopCase{
		{name: "default", size: 100_000, args: get(), wantBlk: 512, wantWin: 1},
		{name: "blksize 1468", size: 300_000, args: get("-b", "1468"), wantBlk: 1468, wantWin: 1},
	})
}

// TestInteropAtftpTrace: the OACK atftp reports carries the real tsize and
// the negotiated blksize and windowsize.
func TestInteropAtftpTrace(t *testing.T) {
	bin := lookClient(t, "atftp", "atftp")
	ts := interopServer(t, 0, Config{})
	writeFile(ts.dir, "f", 12345, 1)
	out, err := runClient(t, bin, "--verbose", "--trace", "--get", "-r", "f", "-l", filepath.Join(t.TempDir(), "f"),
		"--option", "tsize 0", "--option", "blksize 1468", "--option", "windowsize 4", "127.0.0.1", port(ts))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"tsize", "12345", "blksize", "1468", "windowsize", "4"} {
		if !strings.Contains(out, want) {
			t.Errorf("atftp trace lacks %q:\n%s", want, out)
		}
	}
	if !bytes.Contains([]byte(out), []byte("OACK")) {
		t.Errorf("no OACK in trace:\n%s", out)
	}
}
