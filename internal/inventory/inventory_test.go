package inventory

import (
	"context"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/diskless-boot/diskless/internal/storage"
	"github.com/diskless-boot/diskless/internal/store"
)

func newInv(t *testing.T, dir string, base string) *Inventory {
	t.Helper()
	st, err := store.OpenBolt(filepath.Join(dir, store.FileName), store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	be, err := storage.NewLocal(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := New(Options{Store: st, Backend: be, IQNBase: base})
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

var generatedIQN = regexp.MustCompile(`^iqn\.2026-01\.boot\.diskless:[0-9a-f]{8}\.(host|disk)\.525400123456$`)

// Generated IQNs come from the install ID (kept in the store) and the
// host's first MAC: stable across restarts, different between installs,
// and under iqn_base when one is set.
func TestGeneratedIQNs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	inv := newInv(t, dir, "")
	if _, err := inv.CreateImage(ctx, NewImage{Name: "img", Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	h, err := inv.AddHost(ctx, HostSpec{Name: "pc1", MACs: []string{"52:54:00:12:34:56"}, Image: "img", Mode: storage.Raw, Version: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, iqn := range []string{h.InitiatorIQN, h.TargetIQN} {
		if !generatedIQN.MatchString(iqn) {
			t.Errorf("generated IQN %q", iqn)
		}
	}
	inv.st.Close()
	inv2 := newInv(t, dir, "")
	if inv2.IQNBase() != inv.IQNBase() {
		t.Errorf("install ID changed across restarts: %q %q", inv.IQNBase(), inv2.IQNBase())
	}
	if other := newInv(t, t.TempDir(), ""); other.IQNBase() == inv.IQNBase() {
		t.Errorf("two installs share %q", inv.IQNBase())
	}
	withBase := newInv(t, t.TempDir(), "iqn.2005-03.org.example:lab")
	withBase.CreateImage(ctx, NewImage{Name: "img", Size: 1 << 20})
	h3, err := withBase.AddHost(ctx, HostSpec{Name: "x", Image: "img", Version: 1, Mode: storage.Raw}, nil)
	if err != nil || h3.TargetIQN != "iqn.2005-03.org.example:lab.disk.x" {
		t.Errorf("with iqn_base and no MAC: %q %v", h3.TargetIQN, err)
	}
}

var secretChars = regexp.MustCompile(`^[A-Za-z0-9]{16}$`)

func TestGenerateSecret(t *testing.T) {
	counts := map[byte]int{}
	for range 2000 {
		s, err := GenerateSecret()
		if err != nil || !secretChars.MatchString(s) {
			t.Fatalf("%q %v", s, err)
		}
		for i := range len(s) {
			counts[s[i]]++
		}
	}
	// 32000 characters over 62: each about 516; a biased generator (plain
	// modulo, a fixed character) falls far outside.
	if len(counts) != 62 {
		t.Fatalf("%d distinct characters", len(counts))
	}
	for ch, n := range counts {
		if n < 380 || n > 660 {
			t.Errorf("character %q drawn %d times", ch, n)
		}
	}
}

// The rules the API relies on: names, uniqueness, CHAP, versions in use,
// and hosts the YAML declares.
func TestRules(t *testing.T) {
	ctx := context.Background()
	inv := newInv(t, t.TempDir(), "")
	if _, err := inv.CreateImage(ctx, NewImage{Name: "img", Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if _, err := inv.CreateImage(ctx, NewImage{Name: "img", Size: 1 << 20}); KindOf(err) != Conflict {
		t.Errorf("second image of a name: %v", err)
	}
	if _, err := inv.CreateImage(ctx, NewImage{Name: "../x", Size: 1 << 20}); KindOf(err) != Invalid {
		t.Errorf("bad name: %v", err)
	}
	raw := func(name string, macs ...string) HostSpec {
		return HostSpec{Name: name, MACs: macs, Image: "img", Version: 1, Mode: storage.Raw}
	}
	h, err := inv.AddHost(ctx, raw("a", "52:54:00:00:00:01"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if h.CHAP == nil || h.MutualCHAP == nil || h.CHAP.Secret == h.MutualCHAP.Secret {
		t.Fatalf("API hosts get CHAP and mutual CHAP by default: %v %v", h.CHAP, h.MutualCHAP)
	}
	for name, spec := range map[string]HostSpec{
		"same MAC":          raw("b", "52:54:00:00:00:01"),
		"same name":         raw("a"),
		"same initiator":    {Name: "c", Image: "img", Version: 1, Mode: storage.Raw, InitiatorIQN: h.InitiatorIQN},
		"raw following new": {Name: "d", Image: "img", Mode: storage.Raw},
		"short secret":      {Name: "e", Image: "img", Version: 1, Mode: storage.Raw, CHAP: &CHAPSpec{Enabled: true, Secret: "short"}},
		"mutual = chap":     {Name: "f", Image: "img", Version: 1, Mode: storage.Raw, CHAP: &CHAPSpec{Enabled: true, Secret: "0123456789abc"}, MutualCHAP: &CHAPSpec{Enabled: true, Secret: "0123456789abc"}},
		"mutual alone":      {Name: "g", Image: "img", Version: 1, Mode: storage.Raw, CHAP: &CHAPSpec{}, MutualCHAP: &CHAPSpec{Enabled: true}},
		"no image":          {Name: "i"},
		"unsafe cmdline":    {Name: "j", Image: "img", Version: 1, Mode: storage.Raw, Boot: BootKernel, Kernel: "/etc/hostname", Cmdline: "a;reboot"},
	} {
		if _, err := inv.AddHost(ctx, spec, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// The version is used by host a: not deletable; the image neither.
	if err := inv.DeleteVersion("img", 1); KindOf(err) != Conflict {
		t.Errorf("delete a used version: %v", err)
	}
	if err := inv.DeleteImage("img"); KindOf(err) != Conflict {
		t.Errorf("delete a used image: %v", err)
	}
	// YAML hosts are changed through the file only.
	if _, err := inv.AddHost(ctx, HostSpec{Name: "y", Image: "img", Version: 1, Mode: storage.Raw, Source: SourceYAML}, nil); err != nil {
		t.Fatal(err)
	}
	boot := BootKernel
	if _, _, err := inv.SetHost("y", HostPatch{Boot: &boot}); KindOf(err) != Conflict {
		t.Errorf("API change of a YAML host: %v", err)
	}
	if err := inv.RemoveHost("y", false); KindOf(err) != Conflict {
		t.Errorf("API removal of a YAML host: %v", err)
	}
	if err := inv.RemoveHost("a", false); err != nil {
		t.Fatal(err)
	}
	if err := inv.RemoveHost("y", true); err != nil {
		t.Fatal(err)
	}
	if err := inv.DeleteImage("img"); err != nil {
		t.Errorf("delete an unused image: %v", err)
	}
}
