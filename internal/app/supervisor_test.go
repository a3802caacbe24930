package app

import (
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/diskless-boot/diskless/internal/inventory"
)

// A standby of a cluster admits no login, whatever the host: only the
// active server knows whether the host runs, and a disk opened here would
// take its lock from the server serving it. The check comes before the
// disk is looked at, so nothing of the storage is touched (the supervisor
// here has none). A target nobody serves is left to the login's own
// refusal.
func TestStandbyAdmitsNoLogin(t *testing.T) {
	s := newSupervisor(nil, nil, nil, slog.New(slog.DiscardHandler))
	s.onDemand = true
	s.active = func() bool { return false }
	s.hosts["pc1"] = &served{rec: inventory.Host{Name: "pc1", TargetIQN: "iqn.2026-01.test:disk.pc1"}}
	err := s.admit("iqn.2026-01.test:disk.pc1", "iqn.2026-01.test:host.pc1")
	if err == nil || !strings.Contains(err.Error(), "standby") {
		t.Fatalf("a standby's admit: %v, want a refusal naming the standby", err)
	}
	if err := s.admit("iqn.2026-01.test:disk.nobody", "iqn.2026-01.test:host.pc1"); err != nil {
		t.Fatalf("admit of a target nobody serves: %v, want nil (the login fails on its own)", err)
	}
}

// A standby changes no disk, whether the change needs it closed
// (snapshot, reset) or not (clear-error); the active server and a server
// outside a cluster may.
func TestStandbyChangesNoDisk(t *testing.T) {
	s := newSupervisor(nil, nil, nil, slog.New(slog.DiscardHandler))
	if err := s.MayChangeDisks(); err != nil {
		t.Fatalf("outside a cluster: %v", err)
	}
	active := true
	s.active = func() bool { return active }
	if err := s.MayChangeDisks(); err != nil {
		t.Fatalf("the active server: %v", err)
	}
	active = false
	err := s.MayChangeDisks()
	var ie *inventory.Error
	if !errors.As(err, &ie) || ie.Kind != inventory.Conflict || !strings.Contains(err.Error(), "standby") {
		t.Fatalf("a standby: %v, want a conflict naming the standby", err)
	}
	ran := false
	if err := s.WithDiskClosed("pc1", func() error { ran = true; return nil }); err == nil || ran {
		t.Fatalf("a standby's WithDiskClosed: %v, ran %v", err, ran)
	}
}
