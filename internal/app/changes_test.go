package app

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/api"
)

// Concurrent changes of two hosts: supervisor.syncLocked writes sv.rec
// under the host's lock only, refreshTables reads every sv.rec under s.mu.
func TestConcurrentHostChanges(t *testing.T) {
	data := t.TempDir()
	s := startSite(t, data, "images:\n  - {name: golden, size: 1M}\n")
	for i := 1; i <= 2; i++ {
		s.call("POST", "/hosts", api.AddHostRequest{Name: fmt.Sprintf("pc%d", i), MACs: []string{fmt.Sprintf("52:54:00:00:00:0%d", i)},
			Image: "golden"}, nil, 201)
	}
	var wg sync.WaitGroup
	for i := 1; i <= 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				arch := []string{"bios", "uefi"}[j%2]
				s.call("PATCH", fmt.Sprintf("/hosts/pc%d", i), api.SetHostRequest{Arch: &arch}, nil)
			}
		}()
	}
	wg.Wait()
}

// A host that logs in while its promote is under way: the promote is
// refused (the host is online when the copy would start), or the copy is of
// the disk as it was when the copy began - with all of the host's writes
// (made and flushed before it) or none (the host found no LUN during it),
// never a mix of before and after.
func TestPromoteNotMixedWithALogin(t *testing.T) {
	dir := t.TempDir()
	data := t.TempDir()
	img := filepath.Join(dir, "golden.img")
	golden := make([]byte, 128<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < len(golden); i += 8 {
		v := rng.Uint64()
		for k := 0; k < 8; k++ {
			golden[i+k] = byte(v >> (8 * k))
		}
	}
	os.WriteFile(img, golden, 0o644)
	s := startSite(t, data, "images:\n  - {name: golden, import: "+img+"}\n")
	var ch api.HostChange
	s.call("POST", "/hosts", api.AddHostRequest{Name: "pc1", MACs: []string{"52:54:00:00:00:01"}, Image: "golden", DiskMode: "persistent"}, &ch, 201)
	sess := s.login(ch.Host, ch.Host.CHAP.Secret)
	writeAt(t, sess, 0, pattern("before", 64*block))
	sess.Close()
	waitOffline(t, s, "pc1")
	var acc api.Accepted
	s.call("POST", "/hosts/pc1/promote", api.PromoteRequest{}, &acc, 202)
	sess2, err := s.dial(ch.Host, ch.Host.InitiatorIQN, ch.Host.CHAP.Secret)
	if err == nil {
		sess2.Write(0, pattern("during", 64*block), false)
		sess2.Write(uint64(len(golden)/block-64), pattern("during", 64*block), false)
		sess2.SyncCache()
		sess2.Close()
	}
	var j api.Job
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if s.call("GET", "/jobs/"+acc.Job.ID, nil, &j); j.State != api.JobRunning {
			break
		}
	}
	switch j.State {
	case api.JobFailed:
		if !strings.Contains(j.Error, "online") {
			t.Fatalf("promote failed for another reason: %s", j.Error)
		}
	case api.JobDone:
		b, _ := os.ReadFile(filepath.Join(data, "images", "golden", "v2.img"))
		head := bytes.Equal(b[:6], []byte("during"))
		tail := bytes.Equal(b[len(b)-64*block:len(b)-64*block+6], []byte("during"))
		if head != tail {
			t.Fatalf("the promoted version mixes the disk before and after the host's writes: head %q, tail %q",
				b[:6], b[len(b)-64*block:len(b)-64*block+6])
		}
	default:
		t.Fatalf("promote job %s", j.State)
	}
}

// A host fetching its script (beginBoot reads sv.rec without a lock) while
// the admin changes it (syncLocked writes sv.rec).
func TestBootWhileHostChanges(t *testing.T) {
	data := t.TempDir()
	s := startSite(t, data, "images:\n  - {name: golden, size: 1M}\n")
	s.call("POST", "/hosts", api.AddHostRequest{Name: "pc1", MACs: []string{"52:54:00:00:00:01"}, Image: "golden"}, nil, 201)
	hw, _ := net.ParseMAC("52:54:00:00:00:01")
	s.neighbour.Store(hw)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	// The host asks from an address of its own: the API's requests are
	// not to share its request budget (it goes over it at once).
	host := clientFrom("127.0.0.2")
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := host.Get(s.http + "/boot.ipxe?mac=52:54:00:00:00:01")
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}()
	for j := range 60 {
		arch := []string{"bios", "uefi"}[j%2]
		s.call("PATCH", "/hosts/pc1", api.SetHostRequest{Arch: &arch}, nil)
	}
	close(stop)
	wg.Wait()
}

// Rolling a host the YAML declares back to a snapshot of another version
// than the file names is refused: the file would move it away again at the
// next start.
func TestRollbackOfYAMLHostToOtherVersionRefused(t *testing.T) {
	dir := t.TempDir()
	data := t.TempDir()
	v2 := filepath.Join(dir, "v2.img")
	os.WriteFile(v2, bytes.Repeat([]byte("V2"), 512<<10), 0o644)
	yaml := "images:\n  - {name: golden, size: 1M}\nhosts:\n  - {mac: \"52:54:00:00:00:01\", name: pc1, image: golden, chap: {user: pc1, secret: abcdefghijklmnop}}\n"
	s := startSite(t, data, yaml)
	var h api.HostView
	s.call("GET", "/hosts/pc1", nil, &h)
	sess := s.login(h, "abcdefghijklmnop")
	writeAt(t, sess, 0, pattern("mine", 8*block))
	sess.Close()
	waitOffline(t, s, "pc1")
	var acc api.Accepted
	s.call("POST", "/images/golden/versions", api.ImportRequest{Source: v2}, &acc, 202)
	s.waitJob(acc.Job)
	s.call("GET", "/hosts/pc1", nil, &h)
	if len(h.Disk.Snapshots) != 1 || h.Disk.Base != "golden@v2" {
		t.Fatalf("after the import: base %s snapshots %+v", h.Disk.Base, h.Disk.Snapshots)
	}
	s.call("POST", "/hosts/pc1/snapshots/"+h.Disk.Snapshots[0].Name+"/rollback", nil, nil, http.StatusConflict)
}

// dhcp full: a fixed address outside the served subnet is refused with
// the field named, and a restart is never stopped by one host's address.
func TestReservationOutsideSubnet(t *testing.T) {
	data := t.TempDir()
	cfg, _, _ := writeConfig(t, data, "images:\n  - {name: golden, size: 1M}\n")
	cfg.DHCP.Mode = "full"
	cfg.DHCP.Range = "127.0.0.100-127.0.0.200"
	cfg.DHCP.Netmask = "255.0.0.0"
	if err := cfg.Validate(); err != nil {
		t.Skipf("dhcp full on lo not accepted: %v", err)
	}
	start := func(ctx context.Context) (string, chan error) {
		done, ready := make(chan error, 1), make(chan string, 1)
		go func() { done <- RunServe(ctx, ServeOptions{Config: cfg, Ready: func(u string) { ready <- u }}) }()
		select {
		case u := <-ready:
			return u, done
		case err := <-done:
			t.Skipf("RunServe with dhcp full on lo: %v", err)
		}
		return "", done
	}
	ctx, cancel := context.WithCancel(t.Context())
	apiURL, done := start(ctx)
	tok, _ := api.ReadTokenFile(data)
	body := `{"name":"pc1","macs":["52:54:00:00:00:01"],"image":"golden","ip":"10.1.2.3"}`
	req, _ := http.NewRequest("POST", apiURL+api.Prefix+"/hosts", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), `"field": "ip"`) {
		t.Errorf("a reservation outside the subnet: %d %s", resp.StatusCode, b)
	}
	cancel()
	<-done
	ctx2, cancel2 := context.WithCancel(t.Context())
	defer cancel2()
	start(ctx2)
}

// A running host reconnects after a server restart: a YAML change of its
// version made for that restart waits for the host's next boot instead of
// changing the disk under it.
func TestYAMLChangeWaitsForRunningHost(t *testing.T) {
	dir := t.TempDir()
	data := t.TempDir()
	v2 := filepath.Join(dir, "v2.img")
	os.WriteFile(v2, bytes.Repeat([]byte("V2"), 512<<10), 0o644)
	host := func(v int) string {
		return fmt.Sprintf("images:\n  - {name: golden, size: 1M}\nhosts:\n  - {mac: \"52:54:00:00:00:01\", name: pc1, image: golden, version: %d, chap: {user: pc1, secret: abcdefghijklmnop}}\n", v)
	}
	s := startSite(t, data, host(1))
	var acc api.Accepted
	s.call("POST", "/images/golden/versions", api.ImportRequest{Source: v2}, &acc, 202)
	s.waitJob(acc.Job)
	var h api.HostView
	s.call("GET", "/hosts/pc1", nil, &h)
	sess := s.login(h, "abcdefghijklmnop") // the host's OS runs
	writeAt(t, sess, 0, pattern("mine", 8*block))
	s.stop() // admin restarts the server after editing the file
	s = startSite(t, data, host(2))
	s.call("GET", "/hosts/pc1", nil, &h)
	if h.Disk.Base != "golden@v1" || h.Pending != "move to golden@v2" {
		t.Errorf("after restart: disk %s pending %q", h.Disk.Base, h.Pending)
	}
	sess2 := s.login(h, "abcdefghijklmnop") // its initiator logs in again
	got := readAt(t, sess2, 0, 8*block)
	if !bytes.Equal(got, pattern("mine", 8*block)) {
		t.Errorf("the running host's disk changed under it at the server restart: reads %q", got[:8])
	}
}

// A kernel-mode host with no kernel of its own boots the kernel and initrd
// kept with the image version its disk is on (an image build keeps them):
// its script hooks the disk and asks for both, and the host files are the
// version's, byte for byte - after an import too, once the host moved to
// the new version. Only the host itself gets them.
func TestKernelModeBootsTheVersionsKernel(t *testing.T) {
	data := t.TempDir()
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	disk := filepath.Join(dir, "disk.img")
	os.WriteFile(disk, bytes.Repeat([]byte("D"), 1<<20), 0o644)
	s := startSite(t, data, "")
	var acc api.Accepted
	s.call("POST", "/images", api.CreateImageRequest{Name: "debian", Import: disk,
		Kernel: file("k1", "kernel of v1"), Initrd: file("i1", "initrd of v1"), Cmdline: file("c1", "root=UUID=1111 ro\n")}, &acc, 202)
	s.waitJob(acc.Job)
	const mac = "52:54:00:00:00:07"
	s.call("POST", "/hosts", api.AddHostRequest{Name: "k1", MACs: []string{mac}, Image: "debian", Boot: "kernel", Cmdline: "quiet"}, nil, 201)

	get := func(path string) (int, string) { return s.getAs(mac, "127.0.0.1", path) }
	files := "/hosts/52-54-00-00-00-07/"
	if code, script := get("/boot.ipxe?mac=" + mac); code != 200 || !strings.Contains(script, "sanhook iscsi:") ||
		!strings.Contains(script, files+"kernel") || !strings.Contains(script, "initrd --name initrd http") ||
		!strings.Contains(script, "iscsi_auto ip=dhcp root=UUID=1111 ro ") || strings.Contains(script, "ISCSI_PASSWORD") {
		t.Fatalf("script: %d\n%s", code, script)
	}
	for name, want := range map[string]string{"kernel": "kernel of v1", "initrd": "initrd of v1"} {
		if code, got := get(files + name); code != 200 || got != want {
			t.Errorf("%s: %d %q, want %q", name, code, got, want)
		}
	}
	// Another machine asking for them gets nothing.
	resp, err := clientFrom("127.0.0.1").Get(s.http + files + "kernel")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Errorf("the kernel went to a machine that is not the host")
		}
	}

	// A new version with its own kernel: the host (offline, following the
	// newest) moves to it, and so does its kernel.
	s.call("POST", "/images/debian/versions", api.ImportRequest{Source: disk,
		Kernel: file("k2", "kernel of v2"), Initrd: file("i2", "initrd of v2")}, &acc, 202)
	s.waitJob(acc.Job)
	var h api.HostView
	s.call("GET", "/hosts/k1", nil, &h)
	if h.Disk.Base != "debian@v2" {
		t.Fatalf("host on %s after the import", h.Disk.Base)
	}
	if code, got := get(files + "kernel"); code != 200 || got != "kernel of v2" {
		t.Errorf("kernel after the host moved to v2: %d %q", code, got)
	}
}
