package api

import (
	"strings"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/inventory"
)

// POST /unknown-hosts/{mac}/adopt makes a machine of the unknown list a
// host and answers it as listings show it (no secret); the machine leaves
// the list; a MAC not in it, a bad one and a bad body are refused naming
// what is wrong.
func TestAdoptUnknown(t *testing.T) {
	a := newTestAPI(t)
	if code, e := a.call(t, "POST", "/images", `{"name": "golden", "size": "1M"}`, nil); code != 201 {
		t.Fatalf("image: %d %s", code, e.Error)
	}
	now := time.Now()
	if err := a.h.inv.SaveUnknownHosts([]inventory.UnknownHost{
		{MAC: "52:54:00:00:00:01", Arch: "bios", FirstSeen: now, LastSeen: now, Count: 2},
		{MAC: "52:54:00:00:00:02", FirstSeen: now, LastSeen: now, Count: 1},
	}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path, body string
		code       int
		field, msg string
	}{
		{"/unknown-hosts/52:54:00:00:00:09/adopt", `{"image": "golden"}`, 404, "", "not in the unknown list"},
		{"/unknown-hosts/zz/adopt", `{"image": "golden"}`, 400, "mac", "not an Ethernet address"},
		{"/unknown-hosts/52:54:00:00:00:01/adopt", `{}`, 400, "image", "no unknown_hosts.enroll.image"},
		{"/unknown-hosts/52:54:00:00:00:01/adopt", `{"image": "nope"}`, 400, "image", `no image "nope"`},
		{"/unknown-hosts/52:54:00:00:00:01/adopt", `{"image": "golden", "disk_mode": "raw"}`, 400, "disk_mode", "persistent or volatile"},
		{"/unknown-hosts/52:54:00:00:00:01/adopt", `{"image": "golden", "name": "Bad Name"}`, 400, "name", ""},
		{"/unknown-hosts/52:54:00:00:00:01/adopt", `{"image": "golden", "mode": "volatile"}`, 400, "mode", "unknown field"},
	} {
		code, e := a.call(t, "POST", c.path, c.body, nil)
		if code != c.code || e.Field != c.field || !strings.Contains(e.Error, c.msg) {
			t.Errorf("POST %s %s: %d %+v, want %d field %q %q", c.path, c.body, code, e, c.code, c.field, c.msg)
		}
	}
	var ch HostChange
	if code, e := a.call(t, "POST", "/unknown-hosts/52:54:00:00:00:01/adopt", `{"name": "lab-1", "image": "golden", "disk_mode": "volatile"}`, &ch); code != 201 {
		t.Fatalf("adopt: %d %s", code, e.Error)
	}
	h := ch.Host
	if h.Name != "lab-1" || h.Source != inventory.SourceAPI || h.DiskMode != "volatile" || h.Disk.Base != "golden@v1" ||
		len(h.MACs) != 1 || h.MACs[0] != "52:54:00:00:00:01" || h.CHAP == nil || h.CHAP.Secret != "" || h.MutualCHAP.Secret != "" {
		t.Errorf("adopted host: %+v", h)
	}
	if len(ch.Notes) != 1 || !strings.Contains(ch.Notes[0], "host show lab-1 --secrets") {
		t.Errorf("notes %q", ch.Notes)
	}
	var list []inventory.UnknownHost
	a.call(t, "GET", "/unknown-hosts", "", &list)
	if len(list) != 1 || list[0].MAC != "52:54:00:00:00:02" {
		t.Errorf("unknown list after the adoption: %+v", list)
	}
	if code, _ := a.call(t, "POST", "/unknown-hosts/52:54:00:00:00:01/adopt", `{"image": "golden"}`, nil); code != 404 {
		t.Errorf("adopting twice: %d", code)
	}
	// The secrets are the host's: its credentials show them.
	var hc HostCredentials
	if a.call(t, "GET", "/hosts/lab-1/credentials", "", &hc); hc.CHAP == nil || len(hc.CHAP.Secret) != inventory.GeneratedSecretLen {
		t.Errorf("credentials of the adopted host: %+v", hc.CHAP)
	}
}
