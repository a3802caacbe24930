package app

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/api"
	"github.com/diskless-boot/diskless/internal/config"
	"github.com/diskless-boot/diskless/internal/testutil/output"
	"github.com/diskless-boot/diskless/internal/testutil/ports"
)

// reloadable is a running server whose configuration file the test
// rewrites and reloads.
type reloadable struct {
	*site
	path     string
	base     string // the keys the test does not change
	reload   chan struct{}
	reloaded chan error
}

func startReloadable(t *testing.T, yaml string) *reloadable {
	t.Helper()
	data := t.TempDir()
	httpPort, iscsiPort := ports.FreeTCP(t), ports.FreeTCP(t)
	r := &reloadable{path: filepath.Join(t.TempDir(), "diskless.yaml"), reload: make(chan struct{}), reloaded: make(chan error, 1),
		base: fmt.Sprintf("interface: lo\nserver_ip: 127.0.0.1\ndata_dir: %s\ndhcp: {mode: off}\ntftp: {enabled: false}\n"+
			"http: {listen: \"127.0.0.1:%d\"}\n", data, httpPort)}
	r.write(t, fmt.Sprintf("iscsi: {listen: \"127.0.0.1:%d\"}\n%s", iscsiPort, yaml))
	cfg, err := config.Load(r.path)
	if err != nil {
		t.Fatal(err)
	}
	r.site = runSite(t, data, cfg, httpPort, iscsiPort, func(o *ServeOptions) {
		o.ConfigFile, o.Reload, o.Reloaded = r.path, r.reload, func(err error) { r.reloaded <- err }
	})
	return r
}

func (r *reloadable) write(t *testing.T, yaml string) {
	t.Helper()
	if err := os.WriteFile(r.path, []byte(r.base+yaml), 0o644); err != nil {
		t.Fatal(err)
	}
}

// do asks for a reload (what SIGHUP does) and returns its outcome.
func (r *reloadable) do(t *testing.T) error {
	t.Helper()
	r.reload <- struct{}{}
	select {
	case err := <-r.reloaded:
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("reload did not end\n%s", output.Tail(r.logs.String(), 3000))
		return nil
	}
}

const reloadHosts = `images:
  - {name: golden, size: 1M}
hosts:
  - {mac: "52:54:00:00:00:01", name: pc1, image: golden, chap: {user: pc1, secret: pc1-long-secret}, mutual_chap: false}
  - {mac: "52:54:00:00:00:02", name: pc2, image: golden}
`

// A reload applies the hosts of the file while a host's iSCSI session
// runs on: a new host is served, a changed one changes, and the session
// made before the reload still reads and writes. Keys bound at start are
// reported, each by name, and a file that does not load changes nothing.
func TestReloadAppliesHostsKeepsSessions(t *testing.T) {
	r := startReloadable(t, reloadHosts)
	var pc1 api.HostView
	r.call("GET", "/hosts/pc1", nil, &pc1)
	sess := r.login(pc1, "pc1-long-secret")
	writeAt(t, sess, 0, pattern("before-reload", 8*block))

	// pc2 moves to another MAC, pc3 is new; the portal group tag and the
	// unknown-host policy are bound at start.
	r.write(t, fmt.Sprintf(`iscsi: {listen: "%s", portal_group_tag: 7}
unknown_hosts: {policy: menu}
images:
  - {name: golden, size: 1M}
hosts:
  - {mac: "52:54:00:00:00:01", name: pc1, image: golden, chap: {user: pc1, secret: pc1-long-secret}, mutual_chap: false}
  - {mac: "52:54:00:00:00:22", name: pc2, image: golden}
  - {mac: "52:54:00:00:00:03", name: pc3, image: golden, chap: {user: pc3, secret: pc3-long-secret}, mutual_chap: false}
`, r.cfg.ISCSI.Listen))
	if err := r.do(t); err != nil {
		t.Fatalf("reload: %v\n%s", err, output.Tail(r.logs.String(), 3000))
	}
	var pc2, pc3 api.HostView
	r.call("GET", "/hosts/pc2", nil, &pc2)
	if len(pc2.MACs) != 1 || pc2.MACs[0] != "52:54:00:00:00:22" {
		t.Errorf("pc2 after the reload: MACs %v, want the file's new one", pc2.MACs)
	}
	r.call("GET", "/hosts/pc3", nil, &pc3)
	sess3 := r.login(pc3, "pc3-long-secret") // its target is served
	writeAt(t, sess3, 0, pattern("pc3", block))

	// The session of before the reload was never dropped.
	if got := readAt(t, sess, 0, 8*block); !bytes.Equal(got, pattern("before-reload", 8*block)) {
		t.Errorf("pc1's disk through its old session reads %q", got[:16])
	}
	writeAt(t, sess, 8, pattern("after-reload", block))
	logs := r.logs.String()
	for _, key := range []string{"iscsi.portal_group_tag", "unknown_hosts.policy"} {
		if !strings.Contains(logs, "not applied until restart: "+key) {
			t.Errorf("the log does not report %s as not applied:\n%s", key, output.Tail(logs, 3000))
		}
	}
	for _, key := range []string{"iscsi.listen", "http.listen", "server_ip", "dhcp.netmask"} {
		if strings.Contains(logs, "not applied until restart: "+key) {
			t.Errorf("%s reported changed although the file did not change it", key)
		}
	}

	// A file that does not load: reported, and the running configuration
	// (pc3 included) stays.
	r.write(t, "hosts:\n  - {mac: nonsense, image: golden}\n")
	if err := r.do(t); err == nil || !strings.Contains(err.Error(), "mac") {
		t.Errorf("reload of a bad file: %v", err)
	}
	if !strings.Contains(r.logs.String(), "configuration not reloaded") {
		t.Error("the bad file is not reported in the log")
	}
	r.call("GET", "/hosts/pc3", nil, &pc3)
	if got := readAt(t, sess3, 0, block); !bytes.Equal(got, pattern("pc3", block)) {
		t.Errorf("pc3's session after the failed reload reads %q", got[:8])
	}
}
