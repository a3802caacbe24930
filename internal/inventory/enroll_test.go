package inventory

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/storage"
)

func TestCheckNamePattern(t *testing.T) {
	for p, want := range map[string]string{
		"pc-{n}":                        "",
		"host-{mac}":                    "",
		"lab.{n}-{mac}":                 "",
		"{mac}":                         "",
		"{n}":                           "",
		"pc":                            "put {n}",
		"":                              "put {n}",
		"pc-{N}":                        "put {n}",
		"pc-{n}-{x}":                    "only placeholders",
		"pc-{n}}":                       "only placeholders",
		"PC-{n}":                        "lower case",
		"-{n}":                          "starting with a letter",
		"pc {n}":                        "makes",
		strings.Repeat("a", 58) + "{n}": "makes", // 58 + 6 digits > 63
		strings.Repeat("a", 57) + "{n}": "",
	} {
		err := CheckNamePattern(p)
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("CheckNamePattern(%q) = %v, want %q", p, err, want)
		}
	}
}

func mustMAC(s string) net.HardwareAddr {
	hw, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return hw
}

// newEnrollInv is an inventory with image img (one version).
func newEnrollInv(t *testing.T) *Inventory {
	t.Helper()
	inv := newInv(t, t.TempDir(), "")
	if _, err := inv.CreateImage(context.Background(), NewImage{Name: "img", Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	return inv
}

// Enrolled hosts take the first number of the pattern no host has (holes
// left by removed hosts first, names of hosts added by hand skipped), get
// generated IQNs and secrets and an overlay on the image, and are marked.
func TestEnrollNaming(t *testing.T) {
	ctx := context.Background()
	inv := newEnrollInv(t)
	spec := EnrollSpec{Image: "img", Mode: storage.Volatile, NamePattern: "pc-{n}", MaxHosts: 10}
	if _, err := inv.AddHost(ctx, HostSpec{Name: "pc-2", Image: "img"}, nil); err != nil {
		t.Fatal(err)
	}
	var names []string
	for i := 1; i <= 3; i++ {
		mac := mustMAC("52:54:00:00:00:0" + string(rune('0'+i)))
		h, err := inv.Enroll(ctx, mac, spec)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Source != SourceEnroll || h.Mode != storage.Volatile || h.Disk.Base().Image != "img" || !h.HasMAC(mac.String()) {
			t.Errorf("enrolled host %+v", h)
		}
		if h.CHAP == nil || h.MutualCHAP == nil || len(h.CHAP.Secret) != GeneratedSecretLen ||
			!strings.HasSuffix(h.InitiatorIQN, ".host."+strings.ReplaceAll(mac.String(), ":", "")) {
			t.Errorf("enrolled host without generated IQNs or secrets: %+v", h)
		}
	}
	if strings.Join(names, " ") != "pc-1 pc-3 pc-4" {
		t.Errorf("names %q, want pc-1 pc-3 pc-4 (pc-2 is taken)", names)
	}
	if err := inv.RemoveHost("pc-3", false); err != nil {
		t.Fatal(err)
	}
	h, err := inv.Enroll(ctx, mustMAC("52:54:00:00:00:09"), spec)
	if err != nil || h.Name != "pc-3" {
		t.Errorf("after removing pc-3: %q %v, want pc-3", h.Name, err)
	}
	// A MAC that is a host's already is refused.
	if _, err := inv.Enroll(ctx, mustMAC("52:54:00:00:00:09"), spec); KindOf(err) != Conflict {
		t.Errorf("enrolling a host's MAC: %v", err)
	}
	// {mac}: the name is the MAC's; a host of that name is a conflict.
	mspec := EnrollSpec{Image: "img", NamePattern: "m-{mac}"}
	if h, err := inv.Enroll(ctx, mustMAC("52:54:00:aa:bb:cc"), mspec); err != nil || h.Name != "m-525400aabbcc" || h.Mode != storage.Persistent {
		t.Errorf("{mac}: %+v %v", h, err)
	}
	if _, err := inv.AddHost(ctx, HostSpec{Name: "m-525400aabbcd", Image: "img"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := inv.Enroll(ctx, mustMAC("52:54:00:aa:bb:cd"), mspec); KindOf(err) != Conflict || !strings.Contains(err.Error(), "m-525400aabbcd") {
		t.Errorf("{mac} name taken: %v", err)
	}
	// A missing image is refused with the reason.
	if _, err := inv.Enroll(ctx, mustMAC("52:54:00:00:01:01"), EnrollSpec{Image: "gone", NamePattern: "pc-{n}"}); err == nil || !strings.Contains(err.Error(), `no image "gone"`) {
		t.Errorf("missing image: %v", err)
	}
}

// max_hosts counts enrolled hosts only: at the bound nothing is added,
// hosts added by hand do not count, and a removed one makes room.
func TestEnrollMaxHosts(t *testing.T) {
	ctx := context.Background()
	inv := newEnrollInv(t)
	if _, err := inv.AddHost(ctx, HostSpec{Name: "byhand", Image: "img"}, nil); err != nil {
		t.Fatal(err)
	}
	spec := EnrollSpec{Image: "img", NamePattern: "pc-{n}", MaxHosts: 2}
	for _, m := range []string{"52:54:00:00:00:01", "52:54:00:00:00:02"} {
		if _, err := inv.Enroll(ctx, mustMAC(m), spec); err != nil {
			t.Fatal(err)
		}
	}
	_, err := inv.Enroll(ctx, mustMAC("52:54:00:00:00:03"), spec)
	if !errors.Is(err, ErrMaxHosts) {
		t.Fatalf("third enrollment with max_hosts 2: %v", err)
	}
	if hs, _ := inv.Hosts(); len(hs) != 3 {
		t.Errorf("%d hosts after a refused enrollment, want 3", len(hs))
	}
	if err := inv.RemoveHost("pc-1", false); err != nil {
		t.Fatal(err)
	}
	if h, err := inv.Enroll(ctx, mustMAC("52:54:00:00:00:03"), spec); err != nil || h.Name != "pc-1" {
		t.Errorf("after a removal: %q %v", h.Name, err)
	}
}

// Adopt takes a machine of the stored unknown list (only one), with the
// enroll defaults for what the admin leaves out, and takes it off the list.
func TestAdopt(t *testing.T) {
	ctx := context.Background()
	inv := newEnrollInv(t)
	now := time.Now()
	if err := inv.SaveUnknownHosts([]UnknownHost{
		{MAC: "52:54:00:00:00:01", Arch: "efi-x64", FirstSeen: now, LastSeen: now, Count: 1},
		{MAC: "52:54:00:00:00:02", FirstSeen: now, LastSeen: now, Count: 3},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := inv.Adopt(ctx, "52:54:00:00:00:09", AdoptSpec{Image: "img"}); KindOf(err) != NotFound {
		t.Errorf("adopting a MAC not in the list: %v", err)
	}
	if _, err := inv.Adopt(ctx, "52:54:00:00:00:01", AdoptSpec{}); KindOf(err) != Invalid || !strings.Contains(err.Error(), "image") {
		t.Errorf("adopting without image or defaults: %v", err)
	}
	h, err := inv.Adopt(ctx, "52-54-00-00-00-01", AdoptSpec{Name: "lab-1", Image: "img", Mode: storage.Volatile})
	if err != nil {
		t.Fatal(err)
	}
	if h.Name != "lab-1" || h.Source != SourceAPI || h.Mode != storage.Volatile || h.CHAP == nil || !h.HasMAC("52:54:00:00:00:01") {
		t.Errorf("adopted %+v", h)
	}
	list, _ := inv.UnknownHosts()
	if len(list) != 1 || list[0].MAC != "52:54:00:00:00:02" {
		t.Errorf("unknown list after adopting: %+v", list)
	}
	if _, err := inv.Adopt(ctx, "52:54:00:00:00:01", AdoptSpec{Image: "img"}); KindOf(err) != NotFound {
		t.Errorf("adopting twice: %v", err)
	}
	// The defaults the server started with: image, mode and pattern.
	if err := inv.SetEnrollDefaults(EnrollSpec{Image: "img", Mode: storage.Volatile, NamePattern: "pc-{n}"}); err != nil {
		t.Fatal(err)
	}
	h, err = inv.Adopt(ctx, "52:54:00:00:00:02", AdoptSpec{})
	if err != nil || h.Name != "pc-1" || h.Mode != storage.Volatile || h.Image != "img" {
		t.Errorf("adopting with the defaults: %+v %v", h, err)
	}
}
