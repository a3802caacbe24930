package api

import (
	"strings"
	"testing"
)

// POST /hosts/{host}/rotate-secrets (no server: every host offline) answers
// the host without secrets and notes saying the new ones are current now;
// GET credentials shows them; chap_rotation is set, shown and checked.
func TestRotateSecretsAPI(t *testing.T) {
	a := newTestAPI(t)
	if code, e := a.call(t, "POST", "/images", `{"name": "img", "size": "1M"}`, nil); code != 201 {
		t.Fatalf("image: %d %+v", code, e)
	}
	var added HostChange
	if code, e := a.call(t, "POST", "/hosts", `{"name": "pc1", "image": "img"}`, &added); code != 201 {
		t.Fatalf("add: %d %+v", code, e)
	}
	var ch HostChange
	if code, e := a.call(t, "POST", "/hosts/pc1/rotate-secrets", "", &ch); code != 200 {
		t.Fatalf("rotate: %d %+v", code, e)
	}
	if ch.Host.CHAP == nil || ch.Host.CHAP.Secret != "" || ch.Host.MutualCHAP.Secret != "" || ch.Host.Pending != "" {
		t.Errorf("answer: %+v %+v, pending %q", ch.Host.CHAP, ch.Host.MutualCHAP, ch.Host.Pending)
	}
	if len(ch.Notes) != 1 || !strings.Contains(ch.Notes[0], "new secrets now") {
		t.Errorf("notes %q", ch.Notes)
	}
	var hc HostCredentials
	a.call(t, "GET", "/hosts/pc1/credentials", "", &hc)
	if hc.CHAP.Secret == added.Host.CHAP.Secret || hc.MutualCHAP.Secret == added.Host.MutualCHAP.Secret ||
		hc.CHAP.User != added.Host.CHAP.User || hc.NextCHAP != nil || hc.CHAPRotation != "off" {
		t.Errorf("credentials after the rotation: %+v", hc)
	}
	for _, c := range []struct {
		method, path, body string
		code               int
		field, says        string
	}{
		{"POST", "/hosts/nobody/rotate-secrets", "", 404, "", "no host"},
		{"POST", "/hosts", `{"name": "n", "image": "img", "chap": false, "mutual_chap": false}`, 201, "", ""},
		{"POST", "/hosts/n/rotate-secrets", "", 409, "", "has no CHAP"},
		{"PATCH", "/hosts/n", `{"chap_rotation": "boot"}`, 400, "chap_rotation", "needs chap"},
		{"POST", "/hosts", `{"name": "x", "image": "img", "chap_rotation": "weekly"}`, 400, "chap_rotation", "want off or boot"},
	} {
		code, e := a.call(t, c.method, c.path, c.body, nil)
		if code != c.code || e.Field != c.field || !strings.Contains(e.Error, c.says) {
			t.Errorf("%s %s %s: %d %+v, want %d %q", c.method, c.path, c.body, code, e, c.code, c.says)
		}
	}
	var set HostChange
	if code, e := a.call(t, "PATCH", "/hosts/pc1", `{"chap_rotation": "boot"}`, &set); code != 200 {
		t.Fatalf("PATCH chap_rotation: %d %+v", code, e)
	}
	if set.Host.CHAPRotation != "boot" || !strings.Contains(strings.Join(set.Notes, " "), "iBFT") {
		t.Errorf("PATCH chap_rotation boot: %q, notes %q", set.Host.CHAPRotation, set.Notes)
	}
	var cfg HostConfig
	a.call(t, "GET", "/hosts/pc1/config", "", &cfg)
	if !strings.Contains(strings.Join(cfg.Notes, " "), "chap_rotation boot") {
		t.Errorf("config notes of a rotating host: %q", cfg.Notes)
	}
}
