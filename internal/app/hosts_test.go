package app

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/api"
	"github.com/diskless-boot/diskless/internal/config"
	"github.com/diskless-boot/diskless/internal/iscsi/pdu"
	"github.com/diskless-boot/diskless/internal/testutil/iscsiclient"
	"github.com/diskless-boot/diskless/internal/testutil/output"
	"github.com/diskless-boot/diskless/internal/web"
)

// site is a running `diskless serve` on loopback for a test, with the
// neighbour table faked: the test says which MAC 127.0.0.1 is, to play a
// host fetching its own iPXE script.
type site struct {
	t         *testing.T
	cfg       *config.Config
	api       string
	token     string
	iscsi     string
	http      string
	logs      *output.Output
	cancel    context.CancelFunc
	done      chan error
	neighbour atomic.Value // net.HardwareAddr
}

func startSite(t *testing.T, dataDir, yamlExtra string) *site {
	t.Helper()
	cfg, httpPort, iscsiPort := writeConfig(t, dataDir, yamlExtra)
	return runSite(t, dataDir, cfg, httpPort, iscsiPort, nil)
}

// runSite runs cfg (from writeConfig, perhaps changed); more, when set,
// adds to the options.
func runSite(t *testing.T, dataDir string, cfg *config.Config, httpPort, iscsiPort int, more func(*ServeOptions)) *site {
	t.Helper()
	s := &site{t: t, cfg: cfg, logs: &output.Output{}, done: make(chan error, 1),
		iscsi: fmt.Sprintf("127.0.0.1:%d", iscsiPort), http: fmt.Sprintf("http://127.0.0.1:%d", httpPort)}
	s.neighbour.Store(net.HardwareAddr(nil))
	ready := make(chan string, 1)
	ctx, cancel := context.WithCancel(t.Context())
	s.cancel = cancel
	neighbors := web.NeighborFunc(func(ip netip.Addr) (net.HardwareAddr, bool) {
		mac := s.neighbour.Load().(net.HardwareAddr)
		return mac, mac != nil && ip.IsLoopback()
	})
	opts := ServeOptions{Config: cfg, Neighbors: neighbors,
		Logger: slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Ready:  func(u string) { ready <- u }}
	if more != nil {
		more(&opts)
	}
	go func() { s.done <- RunServe(ctx, opts) }()
	select {
	case s.api = <-ready:
	case err := <-s.done:
		t.Fatalf("RunServe: %v\n%s", err, s.logs)
	case <-time.After(30 * time.Second):
		t.Fatal("RunServe not ready")
	}
	tok, err := api.ReadTokenFile(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	s.token = tok
	t.Cleanup(func() { s.stop() })
	return s
}

func (s *site) stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.cancel = nil
	select {
	case err := <-s.done:
		if err != nil {
			s.t.Errorf("RunServe: %v", err)
		}
	case <-time.After(30 * time.Second):
		s.t.Error("RunServe did not stop")
	}
}

// call sends an API request; a status >= 300 fails the test unless want
// says it is expected.
func (s *site) call(method, path string, body, out any, want ...int) int {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.api+api.Prefix+path, rd)
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if len(want) > 0 {
		if resp.StatusCode != want[0] {
			s.t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, data, want[0])
		}
	} else if resp.StatusCode >= 300 {
		s.t.Fatalf("%s %s: %d %s\n%s", method, path, resp.StatusCode, data, output.Tail(s.logs.String(), 3000))
	}
	if out != nil && resp.StatusCode < 300 && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			s.t.Fatalf("%s %s: %v", method, path, err)
		}
	}
	return resp.StatusCode
}

// waitJob polls a job until it ends and requires it done.
func (s *site) waitJob(j api.Job) api.Job {
	s.t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		s.call("GET", "/jobs/"+j.ID, nil, &j)
		if j.State != api.JobRunning {
			if j.State != api.JobDone {
				s.t.Fatalf("job %s %s: %s", j.Kind, j.State, j.Error)
			}
			return j
		}
	}
	s.t.Fatal("job did not end")
	return j
}

// boot plays the host with this MAC fetching its iPXE script: a new boot.
func (s *site) boot(mac string) {
	s.t.Helper()
	hw, _ := net.ParseMAC(mac)
	s.neighbour.Store(hw)
	defer s.neighbour.Store(net.HardwareAddr(nil))
	resp, err := http.Get(s.http + "/boot.ipxe?mac=" + mac)
	if err != nil {
		s.t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "sanboot") {
		s.t.Fatalf("script for %s: %d %s", mac, resp.StatusCode, body)
	}
}

// clientFrom is an HTTP client whose connections come from ip, one of the
// 127/8 addresses loopback answers for: a machine of its own to the
// server's per-address limits and lease checks.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
}

// hostLogin logs into a host's target as the host.
func (s *site) login(h api.HostView, secret string) *iscsiclient.Session {
	s.t.Helper()
	sess, err := s.dial(h, h.InitiatorIQN, secret)
	if err != nil {
		s.t.Fatalf("login %s: %v", h.Name, err)
	}
	s.t.Cleanup(func() { sess.Close() })
	return sess
}

func (s *site) dial(h api.HostView, initiator, secret string) (*iscsiclient.Session, error) {
	ctx, cancel := context.WithTimeout(s.t.Context(), 20*time.Second)
	defer cancel()
	return iscsiclient.Dial(ctx, iscsiclient.Config{Addr: s.iscsi, Initiator: initiator, Target: h.TargetIQN,
		CHAPUser: h.CHAP.User, CHAPSecret: secret})
}

const block = 512

func pattern(tag string, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = tag[i%len(tag)]
	}
	return b
}

func readAt(t *testing.T, s *iscsiclient.Session, lba uint64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if err := s.Read(lba, b); err != nil {
		t.Fatalf("read %d: %v", lba, err)
	}
	return b
}

func writeAt(t *testing.T, s *iscsiclient.Session, lba uint64, b []byte) {
	t.Helper()
	if err := s.Write(lba, b, false); err != nil {
		t.Fatalf("write %d: %v", lba, err)
	}
	if err := s.SyncCache(); err != nil {
		t.Fatalf("sync: %v", err)
	}
}

func sum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// Hosts on one image: each sees its own writes and the image elsewhere,
// none reaches another's disk, the image never changes; a volatile disk
// is new at each boot but the same for every login of one boot; a
// persistent one survives a restart; snapshot and rollback restore the
// exact bytes; promote makes version 2 and a host that follows the newest
// version reads it after its next boot.
func TestHostsOnOneImage(t *testing.T) {
	dir := t.TempDir()
	data := t.TempDir()
	img := filepath.Join(dir, "golden.img")
	golden := make([]byte, 16<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range golden {
		golden[i] = byte(rng.Uint32())
	}
	if err := os.WriteFile(img, golden, 0o644); err != nil {
		t.Fatal(err)
	}
	goldenSum := sha256.Sum256(golden)
	s := startSite(t, data, "images:\n  - {name: golden, import: "+img+"}\n")
	versionFile := filepath.Join(data, "images", "golden", "v1.img")
	if sum(t, versionFile) != goldenSum {
		t.Fatal("imported version differs from the file")
	}

	macs := []string{"52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03"}
	modes := []string{"persistent", "persistent", "volatile"}
	hosts := make([]api.HostView, 3)
	secrets := make([]string, 3)
	for i := range hosts {
		var ch api.HostChange
		s.call("POST", "/hosts", api.AddHostRequest{Name: fmt.Sprintf("pc%d", i+1), MACs: []string{macs[i]},
			Image: "golden", DiskMode: modes[i]}, &ch, 201)
		hosts[i], secrets[i] = ch.Host, ch.Host.CHAP.Secret
		if ch.Host.CHAP == nil || len(secrets[i]) != 16 || ch.Host.MutualCHAP == nil {
			t.Fatalf("host %d: no generated CHAP: %+v", i, ch.Host)
		}
	}
	// Listings never show secrets.
	var listed []api.HostView
	s.call("GET", "/hosts", nil, &listed)
	for _, h := range listed {
		if h.CHAP == nil || h.CHAP.Secret != "" {
			t.Fatalf("listing shows a secret or no CHAP: %+v", h.CHAP)
		}
	}

	// All three at once: own pattern at LBA 100+, the image elsewhere.
	sess := make([]*iscsiclient.Session, 3)
	for i := range hosts {
		sess[i] = s.login(hosts[i], secrets[i])
	}
	for i, ss := range sess {
		writeAt(t, ss, 100, pattern(fmt.Sprintf("host%d", i+1), 64*block))
		writeAt(t, ss, 7, pattern(fmt.Sprintf("odd%d", i+1), 1*block)) // a partial cluster: copy-up
	}
	for i, ss := range sess {
		if got := readAt(t, ss, 100, 64*block); !bytes.Equal(got, pattern(fmt.Sprintf("host%d", i+1), 64*block)) {
			t.Fatalf("host %d reads another's data at 100", i+1)
		}
		got := readAt(t, ss, 0, 16*block)
		want := append(append(append([]byte{}, golden[:7*block]...), pattern(fmt.Sprintf("odd%d", i+1), block)...), golden[8*block:16*block]...)
		if !bytes.Equal(got, want) {
			t.Fatalf("host %d: a partial write did not merge with the image around it", i+1)
		}
		if got := readAt(t, ss, 10000, 256*block); !bytes.Equal(got, golden[10000*block:10256*block]) {
			t.Fatalf("host %d does not read the image where it did not write", i+1)
		}
	}
	if sum(t, versionFile) != goldenSum {
		t.Fatal("the image version changed under the hosts' writes")
	}
	// Nobody reaches another's disk: pc1's name on pc2's target, a wrong
	// secret, discovery listing only one's own.
	if _, err := s.dial(hosts[1], hosts[0].InitiatorIQN, secrets[1]); !isLoginStatus(err, pdu.LoginForbidden) {
		t.Fatalf("pc1's initiator name on pc2's target: %v", err)
	}
	if _, err := s.dial(hosts[1], hosts[1].InitiatorIQN, secrets[0]); !isLoginStatus(err, pdu.LoginAuthFailure) {
		t.Fatalf("wrong CHAP secret: %v", err)
	}
	names, err := iscsiclient.Discover(t.Context(), iscsiclient.Config{Addr: s.iscsi, Initiator: hosts[0].InitiatorIQN})
	if err != nil || len(names) != 1 || names[0] != hosts[0].TargetIQN {
		t.Fatalf("discovery as pc1: %v %v", names, err)
	}

	// Volatile: a second login of the same boot sees the writes ...
	sess[2].Close()
	v2 := s.login(hosts[2], secrets[2])
	if got := readAt(t, v2, 100, 64*block); !bytes.Equal(got, pattern("host3", 64*block)) {
		t.Fatal("volatile disk lost its writes at a second login of the same boot")
	}
	// ... the next boot does not, and its old session is gone.
	s.boot(macs[2])
	if err := v2.TestUnitReady(); err == nil {
		t.Error("the previous boot's session survived the new boot")
	}
	v3 := s.login(hosts[2], secrets[2])
	if got := readAt(t, v3, 100, 64*block); !bytes.Equal(got, golden[100*block:164*block]) {
		t.Fatal("volatile disk kept its writes across a new boot")
	}
	// A persistent host's boot keeps them.
	s.boot(macs[1])
	sess[1] = s.login(hosts[1], secrets[1])
	if got := readAt(t, sess[1], 100, 64*block); !bytes.Equal(got, pattern("host2", 64*block)) {
		t.Fatal("persistent disk lost its writes at a new boot")
	}

	// Persistent across a server restart.
	for _, ss := range []*iscsiclient.Session{sess[0], sess[1], v3} {
		ss.Close()
	}
	s.stop()
	s = startSite(t, data, "images:\n  - {name: golden, import: "+img+"}\n")
	sess[0] = s.login(hosts[0], secrets[0])
	if got := readAt(t, sess[0], 100, 64*block); !bytes.Equal(got, pattern("host1", 64*block)) {
		t.Fatal("persistent disk lost synced writes across a restart")
	}

	// Snapshot (online), more writes, rollback (offline): the exact bytes.
	before := readAt(t, sess[0], 0, 2048*block)
	var snap struct{ Name string }
	s.call("POST", "/hosts/pc1/snapshots", api.SnapshotRequest{Name: "before-update"}, &snap, 201)
	writeAt(t, sess[0], 50, pattern("after-snapshot", 500*block))
	s.call("POST", "/hosts/pc1/snapshots/before-update/rollback", nil, nil, http.StatusConflict) // online
	sess[0].Close()
	waitOffline(t, s, "pc1")
	s.call("POST", "/hosts/pc1/snapshots/before-update/rollback", nil, nil)
	sess[0] = s.login(hosts[0], secrets[0])
	if got := readAt(t, sess[0], 0, 2048*block); !bytes.Equal(got, before) {
		t.Fatal("rollback did not restore the snapshot's bytes")
	}
	var rep struct {
		OK    bool
		Parts []struct{ Name, Detail string }
	}
	s.call("POST", "/hosts/pc1/check", nil, &rep)
	if !rep.OK {
		t.Fatalf("pc1's disk fails its check: %+v", rep.Parts)
	}

	// Promote pc1 (offline) to v2 while pc2 runs: pc2 moves at its next boot.
	writeAt(t, sess[0], 3000, pattern("promoted", 32*block))
	sess[0].Close()
	waitOffline(t, s, "pc1")
	sess[1] = s.login(hosts[1], secrets[1])
	var plan struct{ Version int }
	s.call("POST", "/hosts/pc1/promote", api.PromoteRequest{DryRun: true}, &plan)
	if plan.Version != 2 {
		t.Fatalf("plan: %+v", plan)
	}
	var acc api.Accepted
	s.call("POST", "/hosts/pc1/promote", api.PromoteRequest{}, &acc, http.StatusAccepted)
	s.waitJob(acc.Job)
	if sum(t, versionFile) != goldenSum {
		t.Fatal("promote wrote the version it was built on")
	}
	var h2 api.HostView
	s.call("GET", "/hosts/pc2", nil, &h2)
	if h2.Pending != "move to golden@v2" {
		t.Fatalf("pc2 pending %q", h2.Pending)
	}
	if got := readAt(t, sess[1], 3000, 32*block); bytes.Equal(got, pattern("promoted", 32*block)) {
		t.Fatal("a running host saw the new version before its next boot")
	}
	s.boot(macs[1])
	sess[1] = s.login(hosts[1], secrets[1])
	if got := readAt(t, sess[1], 3000, 32*block); !bytes.Equal(got, pattern("promoted", 32*block)) {
		t.Fatal("pc2 does not read the promoted change after its next boot")
	}
	var h2after api.HostView
	s.call("GET", "/hosts/pc2", nil, &h2after)
	if h2after.Disk.Base != "golden@v2" || len(h2after.Disk.Snapshots) != 1 || !h2after.Disk.Snapshots[0].Auto {
		t.Fatalf("pc2 after its boot: base %q snapshots %+v", h2after.Disk.Base, h2after.Disk.Snapshots)
	}
	// v1 is still used (by pc2's automatic snapshot): not deletable.
	s.call("DELETE", "/images/golden/versions/1", nil, nil, http.StatusConflict)
}

func isLoginStatus(err error, status uint16) bool {
	var le *iscsiclient.LoginError
	return errors.As(err, &le) && le.Status() == status
}

// waitOffline waits until the server has seen a host's sessions end.
func waitOffline(t *testing.T, s *site, host string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var h api.HostView
		s.call("GET", "/hosts/"+host, nil, &h)
		if !h.Online {
			return
		}
	}
	t.Fatalf("%s still online", host)
}

// Machines that ask to boot but are not hosts are kept in the store across
// restarts and listed by the API.
func TestUnknownHostsKept(t *testing.T) {
	data := t.TempDir()
	s := startSite(t, data, "")
	resp, err := http.Get(s.http + "/boot.ipxe?mac=52:54:00:99:99:99&arch=x86_64")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	s.stop() // saves the registry
	s = startSite(t, data, "")
	var list []struct{ MAC, Arch string }
	s.call("GET", "/unknown-hosts", nil, &list)
	if len(list) != 1 || list[0].MAC != "52:54:00:99:99:99" || list[0].Arch != "x86_64" {
		t.Fatalf("unknown hosts after a restart: %+v", list)
	}
}

// A damaged store stops the start with an error that says so; nothing
// panics and nothing serves.
func TestCorruptStoreRefused(t *testing.T) {
	data := t.TempDir()
	s := startSite(t, data, "")
	s.stop()
	db := filepath.Join(data, "state.db")
	b, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string][]byte{"truncated": b[:len(b)/3], "garbage": bytes.Repeat([]byte("x"), len(b))} {
		os.WriteFile(db, bad, 0o600)
		cfg, _, _ := loadConfig(t, "")
		cfg.DataDir = data
		err := RunServe(t.Context(), ServeOptions{Config: cfg})
		t.Logf("%s: %v", name, err)
		if err == nil || !strings.Contains(err.Error(), "store: file is corrupt") {
			t.Errorf("%s store: %v", name, err)
		}
	}
}

// A host whose disk could not be opened when the server started (here its
// image's version file moved away; on RBD, a lock its own crashed
// predecessor still holds) is not left with a target without its LUN
// until its record next changes: each login tries to open the disk again,
// and is refused with a status the initiator retries until that works.
func TestDiskOpenedAtLogin(t *testing.T) {
	dir, data := t.TempDir(), t.TempDir()
	img := filepath.Join(dir, "golden.img")
	if err := os.WriteFile(img, make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := "images:\n  - {name: golden, import: " + img + "}\n"
	s := startSite(t, data, conf)
	var ch api.HostChange
	s.call("POST", "/hosts", api.AddHostRequest{Name: "pc1", Image: "golden", DiskMode: "persistent"}, &ch, 201)
	h, secret := ch.Host, ch.Host.CHAP.Secret
	sess := s.login(h, secret)
	writeAt(t, sess, 100, pattern("kept", 8*block))
	sess.Close()
	s.stop()

	version, away := filepath.Join(data, "images", "golden", "v1.img"), filepath.Join(dir, "v1.img")
	if err := os.Rename(version, away); err != nil {
		t.Fatal(err)
	}
	s = startSite(t, data, conf)
	if _, err := s.dial(h, h.InitiatorIQN, secret); !isLoginStatus(err, pdu.LoginServiceUnavailable) {
		t.Fatalf("login while the disk cannot be opened: %v, want service unavailable (retried)", err)
	}
	if err := os.Rename(away, version); err != nil {
		t.Fatal(err)
	}
	sess = s.login(h, secret)
	if got := readAt(t, sess, 100, 8*block); !bytes.Equal(got, pattern("kept", 8*block)) {
		t.Fatal("the disk opened at login does not hold the host's writes")
	}
}
