package inventory

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/diskless-boot/diskless/internal/iscsi"
	"github.com/diskless-boot/diskless/internal/storage"
)

// fakeRuntime is a server whose hosts are online when the test says so; it
// records which hosts it was told changed.
type fakeRuntime struct {
	NoRuntime
	mu      sync.Mutex
	online  map[string]bool
	changed []string
	refuse  error // what MayChangeDisks says (a standby's refusal)
}

func newFakeRuntime() *fakeRuntime { return &fakeRuntime{online: map[string]bool{}} }

func (r *fakeRuntime) setOnline(host string, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.online[host] = on
}

func (r *fakeRuntime) Online(host string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.online[host]
}

func (r *fakeRuntime) WithDiskClosed(host string, fn func() error) error {
	if r.Online(host) {
		return conflict("host %q is online", host)
	}
	return fn()
}

func (r *fakeRuntime) MayChangeDisks() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refuse
}

func (r *fakeRuntime) Changed(host string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changed = append(r.changed, host)
}

func (r *fakeRuntime) changes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.changed)
}

// secretsOf returns a host's current and waiting credentials.
func secretsOf(t *testing.T, inv *Inventory, name string) (cur, next [2]*iscsi.Credentials) {
	t.Helper()
	h, err := inv.HostWithSecrets(name)
	if err != nil {
		t.Fatal(err)
	}
	return [2]*iscsi.Credentials{h.CHAP, h.MutualCHAP}, [2]*iscsi.Credentials{h.NextCHAP, h.NextMutualCHAP}
}

// checkFresh fails unless got are new secrets for the users of old: same
// users, new 16-character secrets, the mutual one differing from the CHAP
// one.
func checkFresh(t *testing.T, what string, old, got [2]*iscsi.Credentials) {
	t.Helper()
	for i, key := range []string{"chap", "mutual_chap"} {
		if got[i] == nil || old[i] == nil {
			t.Fatalf("%s: %s %v, before %v", what, key, got[i], old[i])
		}
		if got[i].User != old[i].User || got[i].Secret == old[i].Secret || !secretChars.MatchString(got[i].Secret) {
			t.Errorf("%s: %s user %q (was %q), secret new: %v, well formed: %v", what, key, got[i].User, old[i].User,
				got[i].Secret != old[i].Secret, secretChars.MatchString(got[i].Secret))
		}
	}
	if got[0].Secret == got[1].Secret {
		t.Errorf("%s: mutual CHAP secret equals the CHAP secret", what)
	}
}

func rotationInv(t *testing.T, dir string) (*Inventory, *fakeRuntime, *bytes.Buffer) {
	t.Helper()
	inv := newInv(t, dir, "")
	rt := newFakeRuntime()
	inv.SetRuntime(rt)
	var logs bytes.Buffer
	inv.log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return inv, rt, &logs
}

// An offline host's new secrets replace its current ones at once; the
// server is told, and nothing waits for a boot.
func TestRotateSecretsOfflineNow(t *testing.T) {
	ctx := context.Background()
	inv, rt, logs := rotationInv(t, t.TempDir())
	inv.CreateImage(ctx, NewImage{Name: "img", Size: 1 << 20})
	if _, err := inv.AddHost(ctx, HostSpec{Name: "pc1", Image: "img"}, nil); err != nil {
		t.Fatal(err)
	}
	old, _ := secretsOf(t, inv, "pc1")
	before := rt.changes()
	h, notes, err := inv.RotateSecrets("pc1")
	if err != nil {
		t.Fatal(err)
	}
	cur, next := secretsOf(t, inv, "pc1")
	checkFresh(t, "offline rotation", old, cur)
	if next[0] != nil || next[1] != nil || inv.Pending(&h) != "" {
		t.Errorf("offline rotation left secrets waiting: %v %v, pending %q", next[0], next[1], inv.Pending(&h))
	}
	if rt.changes() == before {
		t.Error("the server was not told: its target would keep the old secrets")
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "new secrets now") {
		t.Errorf("notes %q", notes)
	}
	if h.CHAP.Secret != "" || h.MutualCHAP.Secret != "" {
		t.Error("RotateSecrets answers a secret")
	}
	noSecretIn(t, "log and notes", logs.String()+strings.Join(notes, "\n"), old, cur)
}

// An online host keeps logging in with the secrets of its running boot; the
// new ones wait (kept across a restart) and become current when it begins
// its next boot, whatever its disk mode - also where BeginBoot leaves the
// disk alone (raw, persistent with nothing pending).
func TestRotateSecretsOnlineAtNextBoot(t *testing.T) {
	for _, mode := range []storage.DiskMode{storage.Persistent, storage.Volatile, storage.Raw} {
		t.Run(string(mode), func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			inv, rt, logs := rotationInv(t, dir)
			inv.CreateImage(ctx, NewImage{Name: "img", Size: 1 << 20})
			spec := HostSpec{Name: "pc1", Image: "img", Mode: mode}
			if mode == storage.Raw {
				spec.Version = 1
			}
			if _, err := inv.AddHost(ctx, spec, nil); err != nil {
				t.Fatal(err)
			}
			old, _ := secretsOf(t, inv, "pc1")
			rt.setOnline("pc1", true)
			_, notes, err := inv.RotateSecrets("pc1")
			if err != nil {
				t.Fatal(err)
			}
			if len(notes) != 1 || !strings.Contains(notes[0], "new secrets at the host's next boot") {
				t.Errorf("notes %q", notes)
			}
			cur, next := secretsOf(t, inv, "pc1")
			if !sameCredentials(cur[0], old[0]) || !sameCredentials(cur[1], old[1]) {
				t.Fatal("the secrets of an online host changed under it")
			}
			checkFresh(t, "waiting secrets", old, next)
			listed, _ := inv.Host("pc1")
			if p := inv.Pending(&listed); p != "new CHAP secrets" {
				t.Errorf("pending %q, want the new secrets said", p)
			}
			if listed.NextCHAP.Secret != "" || listed.NextMutualCHAP.Secret != "" {
				t.Error("a listing shows the waiting secrets")
			}

			// A restart (a new inventory on the same store) keeps both.
			inv.st.Close()
			inv, rt, logs2 := rotationInv(t, dir)
			if c, n := secretsOf(t, inv, "pc1"); !sameCredentials(c[0], old[0]) || !sameCredentials(n[0], next[0]) || !sameCredentials(n[1], next[1]) {
				t.Fatal("a restart lost the current or the waiting secrets")
			}
			// A script fetch while it runs is no boot (the server does not
			// call BeginBoot); its new boot is.
			rt.setOnline("pc1", false)
			bootNotes, err := inv.BeginBoot("pc1")
			if err != nil {
				t.Fatal(err)
			}
			cur, after := secretsOf(t, inv, "pc1")
			if !sameCredentials(cur[0], next[0]) || !sameCredentials(cur[1], next[1]) || after[0] != nil || after[1] != nil {
				t.Fatalf("after the boot: current %v %v, waiting %v %v", cur[0], cur[1], after[0], after[1])
			}
			if rt.changes() == 0 {
				t.Error("the server was not told of the boot's secrets")
			}
			if len(bootNotes) == 0 || !strings.Contains(bootNotes[0], "CHAP secrets") {
				t.Errorf("boot notes %q", bootNotes)
			}
			listed, _ = inv.Host("pc1")
			if p := inv.Pending(&listed); p != "" {
				t.Errorf("pending after the boot: %q", p)
			}
			// The next boot changes nothing more (rotation off).
			inv.BeginBoot("pc1")
			if again, _ := secretsOf(t, inv, "pc1"); !sameCredentials(again[0], cur[0]) {
				t.Error("a host without chap_rotation got new secrets at a boot with none waiting")
			}
			noSecretIn(t, "logs and notes", logs.String()+logs2.String()+strings.Join(append(notes, bootNotes...), "\n"), old, next)
		})
	}
}

// Rotation is refused, with a reason, for a host without CHAP and for a
// secret the YAML configuration writes; a YAML host whose secrets diskless
// generated rotates.
func TestRotateSecretsRefused(t *testing.T) {
	ctx := context.Background()
	inv, _, _ := rotationInv(t, t.TempDir())
	inv.CreateImage(ctx, NewImage{Name: "img", Size: 1 << 20})
	add := func(spec HostSpec) {
		t.Helper()
		spec.Image = "img"
		if _, err := inv.AddHost(ctx, spec, nil); err != nil {
			t.Fatalf("%s: %v", spec.Name, err)
		}
	}
	on := func(user, secret string, inYAML bool) *CHAPSpec {
		return &CHAPSpec{Enabled: true, User: user, Secret: secret, InYAML: inYAML}
	}
	add(HostSpec{Name: "nochap", CHAP: &CHAPSpec{}, MutualCHAP: &CHAPSpec{}})
	add(HostSpec{Name: "yaml-given", Source: SourceYAML, CHAP: on("", "given-secret-1", true), MutualCHAP: on("", "", false)})
	add(HostSpec{Name: "yaml-mutual-given", Source: SourceYAML, CHAP: on("", "", false), MutualCHAP: on("", "given-secret-2", true)})
	add(HostSpec{Name: "yaml-generated", Source: SourceYAML, CHAP: on("u", "", false), MutualCHAP: on("", "", false)})
	// A secret given through the API is the API's to rotate.
	add(HostSpec{Name: "api-given", CHAP: on("", "given-secret-3", false)})
	for name, want := range map[string]string{
		"nochap":            "has no CHAP",
		"yaml-given":        "chap secret is written in the YAML configuration; change it there",
		"yaml-mutual-given": "mutual_chap secret is written in the YAML configuration; change it there",
	} {
		before, _ := secretsOf(t, inv, name)
		_, _, err := inv.RotateSecrets(name)
		if KindOf(err) != Conflict || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want a conflict saying %q", name, err, want)
		}
		if after, _ := secretsOf(t, inv, name); !sameCredentials(before[0], after[0]) || !sameCredentials(before[1], after[1]) {
			t.Errorf("%s: refused, yet its secrets changed", name)
		}
	}
	for _, name := range []string{"yaml-generated", "api-given"} {
		before, _ := secretsOf(t, inv, name)
		if _, _, err := inv.RotateSecrets(name); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		after, _ := secretsOf(t, inv, name)
		checkFresh(t, name, before, after)
	}
	if _, _, err := inv.RotateSecrets("nobody"); KindOf(err) != NotFound {
		t.Errorf("unknown host: %v", err)
	}

	// The YAML leaving the secret out again makes it rotatable; the
	// secret itself stays (patchCredentials keeps it).
	p := HostPatch{FromYAML: true, CHAP: on("", "", false), MutualCHAP: on("", "", false)}
	if _, _, err := inv.SetHost("yaml-given", p); err != nil {
		t.Fatal(err)
	}
	if _, _, err := inv.RotateSecrets("yaml-given"); err != nil {
		t.Errorf("after the YAML left the secret out: %v", err)
	}
}

// chap_rotation boot: fresh secrets at every BeginBoot (and only then),
// for any disk mode; it needs CHAP and secrets diskless generates.
func TestRotationAtEveryBoot(t *testing.T) {
	ctx := context.Background()
	inv, rt, logs := rotationInv(t, t.TempDir())
	inv.CreateImage(ctx, NewImage{Name: "img", Size: 1 << 20})
	if _, err := inv.AddHost(ctx, HostSpec{Name: "pc1", Image: "img", CHAPRotation: RotateBoot}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := inv.AddHost(ctx, HostSpec{Name: "raw1", Image: "img", Version: 1, Mode: storage.Raw}, nil); err != nil {
		t.Fatal(err)
	}
	boot := RotateBoot
	if _, _, err := inv.SetHost("raw1", HostPatch{CHAPRotation: &boot}); err != nil {
		t.Fatal(err)
	}
	var all []*iscsi.Credentials
	for _, name := range []string{"pc1", "raw1"} {
		seen := map[string]bool{}
		prev, _ := secretsOf(t, inv, name)
		seen[prev[0].Secret] = true
		for i := range 3 {
			// Online or not (a boot ends the sessions first): rotated.
			rt.setOnline(name, i == 1)
			if _, err := inv.BeginBoot(name); err != nil {
				t.Fatal(err)
			}
			cur, next := secretsOf(t, inv, name)
			checkFresh(t, fmt.Sprintf("%s boot %d", name, i+1), prev, cur)
			if seen[cur[0].Secret] || next[0] != nil {
				t.Fatalf("%s boot %d: a secret seen before, or secrets left waiting", name, i+1)
			}
			seen[cur[0].Secret] = true
			// No boot, no new secret: reading and listing change nothing.
			inv.Hosts()
			if again, _ := secretsOf(t, inv, name); !sameCredentials(again[0], cur[0]) || !sameCredentials(again[1], cur[1]) {
				t.Fatalf("%s: secrets changed without a boot", name)
			}
			all = append(all, cur[0], cur[1])
			prev = cur
		}
	}
	for _, c := range all {
		if strings.Contains(logs.String(), c.Secret) {
			t.Fatal("a rotated secret in the log")
		}
	}

	// Waiting secrets (rotated while it ran) are the ones its next boot
	// takes: the admin may have written them into the host.
	rt.setOnline("pc1", true)
	inv.RotateSecrets("pc1")
	_, next := secretsOf(t, inv, "pc1")
	inv.BeginBoot("pc1")
	if cur, _ := secretsOf(t, inv, "pc1"); !sameCredentials(cur[0], next[0]) {
		t.Error("a boot of a rotating host did not take the secrets that waited for it")
	}

	for name, spec := range map[string]HostSpec{
		"without chap":    {Name: "x1", CHAP: &CHAPSpec{}, MutualCHAP: &CHAPSpec{}, CHAPRotation: RotateBoot},
		"secret in YAML":  {Name: "x2", Source: SourceYAML, CHAP: &CHAPSpec{Enabled: true, Secret: "given-secret-1", InYAML: true}, CHAPRotation: RotateBoot},
		"unknown setting": {Name: "x3", CHAPRotation: "daily"},
	} {
		spec.Image = "img"
		if _, err := inv.AddHost(ctx, spec, nil); KindOf(err) != Invalid {
			t.Errorf("%s: %v, want invalid chap_rotation", name, err)
		}
	}
	off := RotateOff
	if h, _, err := inv.SetHost("raw1", HostPatch{CHAPRotation: &off}); err != nil || h.Rotation() != RotateOff {
		t.Fatalf("rotation off: %v", err)
	}
	before, _ := secretsOf(t, inv, "raw1")
	inv.BeginBoot("raw1")
	if after, _ := secretsOf(t, inv, "raw1"); !sameCredentials(before[0], after[0]) {
		t.Error("rotation off, yet a boot changed the secrets")
	}
}

// Changing a host's credentials (the YAML names another user) drops the
// secrets that waited for its next boot: they were made for the old ones.
func TestNewCredentialsDropWaitingSecrets(t *testing.T) {
	ctx := context.Background()
	inv, rt, _ := rotationInv(t, t.TempDir())
	inv.CreateImage(ctx, NewImage{Name: "img", Size: 1 << 20})
	on := &CHAPSpec{Enabled: true}
	if _, err := inv.AddHost(ctx, HostSpec{Name: "pc1", Image: "img", Source: SourceYAML, CHAP: on, MutualCHAP: on}, nil); err != nil {
		t.Fatal(err)
	}
	rt.setOnline("pc1", true)
	inv.RotateSecrets("pc1")
	// The same declaration again (a restart) keeps them.
	if _, _, err := inv.SetHost("pc1", HostPatch{FromYAML: true, CHAP: on, MutualCHAP: on}); err != nil {
		t.Fatal(err)
	}
	if _, next := secretsOf(t, inv, "pc1"); next[0] == nil {
		t.Fatal("an unchanged declaration dropped the waiting secrets")
	}
	if _, _, err := inv.SetHost("pc1", HostPatch{FromYAML: true, CHAP: &CHAPSpec{Enabled: true, User: "other"}, MutualCHAP: on}); err != nil {
		t.Fatal(err)
	}
	cur, next := secretsOf(t, inv, "pc1")
	if next[0] != nil || next[1] != nil || cur[0].User != "other" {
		t.Errorf("after a new user: current %v, waiting %v %v", cur[0], next[0], next[1])
	}
}

// noSecretIn fails when text holds one of the secrets.
func noSecretIn(t *testing.T, what, text string, creds ...[2]*iscsi.Credentials) {
	t.Helper()
	for _, cs := range creds {
		for _, c := range cs {
			if c != nil && strings.Contains(text, c.Secret) {
				t.Errorf("%s hold a secret:\n%s", what, text)
				return
			}
		}
	}
}
