package app

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/diskless-boot/diskless/internal/api"
	"github.com/diskless-boot/diskless/internal/iscsi/pdu"
	"github.com/diskless-boot/diskless/internal/testutil/iscsiclient"
)

// secrets are a host's CHAP and mutual CHAP secrets.
type secrets struct{ chap, mutual string }

// credentials reads a host's current and waiting secrets through the API.
func (s *site) credentials(host string) (cur, next secrets) {
	s.t.Helper()
	var hc api.HostCredentials
	s.call("GET", "/hosts/"+host+"/credentials", nil, &hc)
	cur = secrets{hc.CHAP.Secret, hc.MutualCHAP.Secret}
	if hc.NextCHAP != nil {
		next = secrets{hc.NextCHAP.Secret, hc.NextMutualCHAP.Secret}
	}
	return cur, next
}

// dialMutual logs into h's target as h with sec, checking the target's
// answer to mutual CHAP.
func (s *site) dialMutual(h api.HostView, sec secrets) (*iscsiclient.Session, error) {
	ctx, cancel := context.WithTimeout(s.t.Context(), 20*time.Second)
	defer cancel()
	return iscsiclient.Dial(ctx, iscsiclient.Config{Addr: s.iscsi, Initiator: h.InitiatorIQN, Target: h.TargetIQN,
		CHAPUser: h.CHAP.User, CHAPSecret: sec.chap, MutualUser: h.MutualCHAP.User, MutualSecret: sec.mutual})
}

// mustLogIn logs in with sec and logs out.
func (s *site) mustLogIn(what string, h api.HostView, sec secrets) {
	s.t.Helper()
	sess, err := s.dialMutual(h, sec)
	if err != nil {
		s.t.Fatalf("%s: login: %v", what, err)
	}
	if err := sess.TestUnitReady(); err != nil {
		s.t.Fatalf("%s: TEST UNIT READY: %v", what, err)
	}
	sess.Close()
}

// mustBeRefused requires a login with sec to fail CHAP.
func (s *site) mustBeRefused(what string, h api.HostView, sec secrets) {
	s.t.Helper()
	sess, err := s.dialMutual(h, sec)
	if err == nil {
		sess.Close()
		s.t.Fatalf("%s: logged in", what)
	}
	if !isLoginStatus(err, pdu.LoginAuthFailure) && !errors.Is(err, iscsiclient.ErrMutualAuth) {
		s.t.Fatalf("%s: %v, want an authentication failure", what, err)
	}
}

// scriptBody fetches mac's iPXE script from the address from (resolved to
// mac by the faked neighbour table).
func (s *site) scriptBody(mac, from string) string {
	s.t.Helper()
	code, body := s.getAs(mac, from, "/boot.ipxe?mac="+mac)
	if code != http.StatusOK {
		s.t.Fatalf("script for %s: %d %s", mac, code, body)
	}
	return body
}

// carries reports whether an iPXE script logs in with sec.
func carries(script string, sec secrets) bool {
	return strings.Contains(script, "set password "+sec.chap+"\n") && strings.Contains(script, "set reverse-password "+sec.mutual+"\n")
}

// noSecretLogged fails when the server's log holds one of the secrets.
func noSecretLogged(t *testing.T, s *site, all ...secrets) {
	t.Helper()
	logs := s.logs.String()
	for _, sec := range all {
		for _, v := range []string{sec.chap, sec.mutual} {
			if v != "" && strings.Contains(logs, v) {
				t.Fatalf("a CHAP secret in the server's log")
			}
		}
	}
}

// Rotated while the host runs, the new secrets wait for its next boot, on
// the real target: until then (and across a server restart) the secrets
// of its running boot log in again and the new ones are refused; the
// script that starts the next boot carries the new ones, and from then on
// only they log in (the target proves itself with the new mutual secret).
func TestRotatedSecretsAtTheTarget(t *testing.T) {
	const mac = "52:54:00:00:00:01"
	const yaml = "images:\n  - {name: golden, size: 1M}\n"
	data := t.TempDir()
	s := startSite(t, data, yaml)
	var added api.HostChange
	s.call("POST", "/hosts", api.AddHostRequest{Name: "pc1", MACs: []string{mac}, Image: "golden"}, &added, 201)
	h := added.Host
	old := secrets{h.CHAP.Secret, h.MutualCHAP.Secret}
	running, err := s.dialMutual(h, old) // the host's boot session: online
	if err != nil {
		t.Fatal(err)
	}

	var ch api.HostChange
	s.call("POST", "/hosts/pc1/rotate-secrets", nil, &ch)
	if len(ch.Notes) != 1 || !strings.Contains(ch.Notes[0], "new secrets at the host's next boot") {
		t.Errorf("notes %q", ch.Notes)
	}
	if ch.Host.Pending != "new CHAP secrets" || ch.Host.CHAP.Secret != "" {
		t.Errorf("answer: pending %q, a secret shown: %v", ch.Host.Pending, ch.Host.CHAP.Secret != "")
	}
	cur, next := s.credentials("pc1")
	if cur != old || next.chap == "" || next.chap == old.chap || next.mutual == old.mutual || next.chap == next.mutual {
		t.Fatalf("after the rotation: current is the old: %v; new ones differ: %v", cur == old, next.chap != old.chap)
	}
	// A reconnect of the running system: the old secrets; the new ones
	// are not taken yet.
	s.mustLogIn("old secrets before the boot", h, old)
	s.mustBeRefused("new secrets before the boot", h, next)
	running.Close()

	// A restart keeps it all.
	s.stop()
	s = startSite(t, data, yaml)
	if c, n := s.credentials("pc1"); c != old || n != next {
		t.Fatal("a restart lost the current or the waiting secrets")
	}
	s.mustLogIn("old secrets after a restart", h, old)
	s.mustBeRefused("new secrets after a restart", h, next)

	// The next boot.
	script := s.scriptBody(mac, "127.0.0.1")
	if !carries(script, next) || strings.Contains(script, old.chap) {
		t.Fatalf("the script of the new boot carries the new secrets: %v, the old: %v", carries(script, next), strings.Contains(script, old.chap))
	}
	s.mustLogIn("new secrets after the boot", h, next)
	s.mustBeRefused("old secrets after the boot", h, old)
	s.mustBeRefused("the old mutual secret after the boot", h, secrets{next.chap, old.mutual})
	if c, n := s.credentials("pc1"); c != next || n != (secrets{}) {
		t.Fatal("after the boot the new secrets are not the current ones, or some still wait")
	}
	var after api.HostView
	s.call("GET", "/hosts/pc1", nil, &after)
	if after.Pending != "" {
		t.Errorf("pending after the boot: %q", after.Pending)
	}
	if !strings.Contains(s.logs.String(), "boot: CHAP secrets rotated while the host ran are in use from this boot") {
		t.Errorf("the boot does not log the change of secrets:\n%s", s.logs)
	}
	noSecretLogged(t, s, old, next)
}

// chap_rotation boot with DHCP running: every network boot (a PXE DHCP
// request, then the script) gets fresh secrets that the target takes at
// once; a script fetched without a network boot (any process of the
// running system can) changes nothing.
func TestRotationAtEveryNetworkBoot(t *testing.T) {
	const pc1 = "52:54:00:00:00:01"
	s, server := startDHCPSite(t, "proxy", nil)
	boot := "boot"
	var ch api.HostChange
	s.call("PATCH", "/hosts/pc1", api.SetHostRequest{CHAPRotation: &boot}, &ch)
	if ch.Host.CHAPRotation != "boot" || len(ch.Notes) == 0 || !strings.Contains(strings.Join(ch.Notes, " "), "iBFT") {
		t.Fatalf("PATCH chap_rotation boot: %+v, notes %q", ch.Host.CHAPRotation, ch.Notes)
	}
	var h api.HostView
	s.call("GET", "/hosts/pc1", nil, &h)
	first, _ := s.credentials("pc1")
	seen := []secrets{first}

	// No network boot: the script carries the current secrets, unchanged.
	if script := s.scriptBody(pc1, "127.0.0.121"); !carries(script, first) {
		t.Fatal("a script fetch without a network boot: not the current secrets")
	}
	if cur, _ := s.credentials("pc1"); cur != first {
		t.Fatal("a script fetch without a network boot rotated the secrets")
	}
	if !strings.Contains(s.logs.String(), "not starting a new boot") {
		t.Fatalf("the script fetch did not reach the boot check:\n%s", s.logs)
	}
	s.mustLogIn("current secrets", h, first)

	prev := first
	for i := range 2 {
		s.pxeDiscover(server, pc1, []string{"bios", "uefi"}[i])
		script := s.scriptBody(pc1, "127.0.0.121")
		cur, next := s.credentials("pc1")
		if cur == prev || cur.chap == cur.mutual || next != (secrets{}) {
			t.Fatalf("network boot %d: secrets not rotated", i+1)
		}
		if !carries(script, cur) {
			t.Fatalf("network boot %d: the script does not carry the boot's secrets", i+1)
		}
		s.mustLogIn("the boot's secrets", h, cur)
		s.mustBeRefused("the previous boot's secrets", h, prev)
		seen = append(seen, cur)
		prev = cur
	}
	noSecretLogged(t, s, seen...)
}

// pxeDiscover plays mac's PXE firmware of architecture arch (bios, uefi)
// asking for a boot (a proxyDHCP DISCOVER), and waits until the server has
// seen it: the host shows arch learnt from it (so the test alternates).
func (s *site) pxeDiscover(server net.Addr, mac, arch string) {
	s.t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		s.t.Fatal(err)
	}
	defer c.Close()
	hw, _ := net.ParseMAC(mac)
	class := map[string]string{"bios": "PXEClient:Arch:00000:UNDI:002001", "uefi": "PXEClient:Arch:00007:UNDI:003000"}[arch]
	disc, _ := dhcpv4.New(dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(class)))
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		c.WriteTo(disc.ToBytes(), server)
		for range 10 {
			var h api.HostView
			s.call("GET", "/hosts/pc1", nil, &h)
			if h.Arch == arch && h.ArchLearnt {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	s.t.Fatalf("the server did not see %s's PXE request:\n%s", mac, s.logs)
}

// Hosts the YAML declares: secrets diskless generated rotate, and a restart
// (which declares them again) keeps the rotated ones; a secret the file
// writes is refused with the reason. A rotating host without a DHCP server
// is warned about at start.
func TestRotateYAMLHosts(t *testing.T) {
	const yaml = "images:\n  - {name: golden, size: 1M}\nhosts:\n" +
		"  - {mac: \"52:54:00:00:00:01\", name: gen, image: golden, chap: {user: gen}, chap_rotation: boot}\n" +
		"  - {mac: \"52:54:00:00:00:02\", name: given, image: golden, chap: {secret: abcdefghijklmnop}}\n"
	data := t.TempDir()
	s := startSite(t, data, yaml)
	if !strings.Contains(s.logs.String(), "host with chap_rotation boot and no DHCP server") {
		t.Errorf("no warning for a rotating host without DHCP:\n%s", s.logs)
	}
	req, _ := http.NewRequest("POST", s.api+api.Prefix+"/hosts/given/rotate-secrets", nil)
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict || !strings.Contains(string(body), "written in the YAML configuration; change it there") {
		t.Errorf("rotating a secret the YAML writes: %d %s", resp.StatusCode, body)
	}
	old, _ := s.credentials("gen")
	var ch api.HostChange
	s.call("POST", "/hosts/gen/rotate-secrets", nil, &ch)
	rotated, _ := s.credentials("gen")
	if rotated == old || len(ch.Notes) != 1 || !strings.Contains(ch.Notes[0], "new secrets now") {
		t.Fatalf("rotating generated secrets of a YAML host: changed %v, notes %q", rotated != old, ch.Notes)
	}
	s.stop()
	s = startSite(t, data, yaml)
	if cur, _ := s.credentials("gen"); cur != rotated {
		t.Fatal("a restart declared the host again with other secrets than the rotated ones")
	}
	var h api.HostView
	s.call("GET", "/hosts/gen", nil, &h)
	s.mustLogIn("rotated secrets after a restart", h, rotated)
	noSecretLogged(t, s, old, rotated)
}
