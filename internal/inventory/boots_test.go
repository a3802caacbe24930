package inventory

import (
	"context"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/bootevent"
	"github.com/diskless-boot/diskless/internal/storage"
)

// The store keeps the latest BootsPerHost timelines of each host, replaces
// a boot saved again, ignores hosts that are gone, and drops a host's
// timelines with the host.
func TestBootTimelinesBounded(t *testing.T) {
	ctx := context.Background()
	inv := newInv(t, t.TempDir(), "")
	if _, err := inv.CreateImage(ctx, NewImage{Name: "img", Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"pc1", "pc10"} {
		if _, err := inv.AddHost(ctx, HostSpec{Name: n, Image: "img", Mode: storage.Persistent}, nil); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)
	for i := range BootsPerHost + 5 {
		b := bootevent.Boot{Host: "pc1", Started: start.Add(time.Duration(i) * time.Minute), Result: bootevent.Booting}
		if err := inv.SaveBoots([]bootevent.Boot{b, {Host: "gone", Started: start}}); err != nil {
			t.Fatal(err)
		}
		b.Result = bootevent.Completed
		if err := inv.SaveBoots([]bootevent.Boot{b}); err != nil {
			t.Fatal(err)
		}
	}
	if err := inv.SaveBoots([]bootevent.Boot{{Host: "pc10", Started: start}}); err != nil {
		t.Fatal(err)
	}
	boots, err := inv.Boots("pc1")
	if err != nil {
		t.Fatal(err)
	}
	if len(boots) != BootsPerHost || !boots[0].Started.Equal(start.Add(14*time.Minute)) || boots[0].Result != bootevent.Completed {
		t.Fatalf("%d boots, newest %v %s", len(boots), boots[0].Started, boots[0].Result)
	}
	if gone, _ := inv.Boots("gone"); len(gone) != 0 {
		t.Fatalf("kept %d boots of a host that does not exist", len(gone))
	}
	if err := inv.RemoveHost("pc1", false); err != nil {
		t.Fatal(err)
	}
	if boots, _ := inv.Boots("pc1"); len(boots) != 0 {
		t.Fatalf("%d boots left after the host was removed", len(boots))
	}
	if boots, _ := inv.Boots("pc10"); len(boots) != 1 {
		t.Fatalf("pc10 (a name pc1 prefixes) lost its boots: %d", len(boots))
	}
}
