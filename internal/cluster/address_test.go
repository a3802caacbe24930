package cluster

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/testutil/netns"
)

// TestAddressExpires: the floating address lives as long as it was last
// renewed for, and the kernel removes it by itself after that - what
// takes it away from a server whose process was killed.
func TestAddressExpires(t *testing.T) {
	netns.Need(t, "ip netns add")
	ns := "dlcl-" + netns.ID()
	netns.Add(t, ns)
	if err := netns.IP("-n", ns, "link", "add", "d0", "type", "veth", "peer", "name", "d1"); err != nil {
		t.Fatal(err)
	}
	if err := netns.IP("-n", ns, "link", "set", "d0", "up"); err != nil {
		t.Fatal(err)
	}
	a, err := newAddress("d0", netip.MustParsePrefix("10.99.0.50/24"))
	if err != nil {
		t.Fatal(err)
	}
	addrs := func() string {
		out, _ := exec.Command("ip", "-n", ns, "-4", "addr", "show", "dev", "d0").CombinedOutput()
		return string(out)
	}
	run := func(fn func() error) {
		t.Helper()
		if err := netns.Run(ns, fn); err != nil {
			t.Fatal(err)
		}
	}
	run(func() error { return a.add(time.Now().Add(2500 * time.Millisecond)) })
	if out := addrs(); !strings.Contains(out, "10.99.0.50/24") || !strings.Contains(out, "valid_lft 2sec") {
		t.Fatalf("after add:\n%s", out)
	}
	// Renewed: it lives on past the first lifetime.
	time.Sleep(1500 * time.Millisecond)
	run(func() error { return a.add(time.Now().Add(2500 * time.Millisecond)) })
	time.Sleep(1500 * time.Millisecond)
	if out := addrs(); !strings.Contains(out, "10.99.0.50") {
		t.Fatalf("renewed address gone:\n%s", out)
	}
	// Not renewed: gone within its lifetime and the kernel's second.
	deadline := time.Now().Add(4 * time.Second)
	for strings.Contains(addrs(), "10.99.0.50") {
		if time.Now().After(deadline) {
			t.Fatalf("address still there 4 s after its last renewal ran out:\n%s", addrs())
		}
		time.Sleep(100 * time.Millisecond)
	}
	var removed bool
	run(func() (err error) { removed, err = a.remove(); return err })
	if removed {
		t.Errorf("remove found an expired address")
	}
}
