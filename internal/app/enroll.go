package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/diskless-boot/diskless/internal/boot"
	"github.com/diskless-boot/diskless/internal/config"
	"github.com/diskless-boot/diskless/internal/inventory"
	"github.com/diskless-boot/diskless/internal/ratelog"
	"github.com/diskless-boot/diskless/internal/storage"
)

// Enrollment of new machines (unknown_hosts.policy enroll).
//
// A machine is enrolled while its network-boot DHCP request is answered, in
// the DHCP worker, so that the answer is already the new host's and the
// machine boots as that host in the same boot. The PXE filename is the same
// for a host and an unknown machine, but iPXE (in ROM, or any DHCP request
// answered with the script URL) fetches its script right after the answer,
// and in full mode an answer dropped to wait for the store would still be
// an address offer without a boot file, which firmware takes as "nothing to
// boot". Enrolling is one store transaction and an empty overlay
// (milliseconds); one enrollment runs at a time, a request waits at most
// enrollWait for it, and at most max_per_minute happen a minute, so the
// other workers keep answering the hosts. A request that would wait longer,
// or comes when the rate is used up, gets no boot answer: firmware repeats
// its request after about 4 s and is enrolled then.

// enrollWait bounds how long a DHCP worker waits for another machine's
// enrollment before it drops its request (the firmware asks again).
const enrollWait = time.Second

// enrollPause is how long enrollment rests after a refusal that the next
// machine would meet too (max_hosts reached, the image gone): requests in
// between get the fallback answer at once, without store work.
const enrollPause = 10 * time.Second

// enroller enrolls machines under policy enroll. It is safe for concurrent
// use; nil means enrollment is off.
type enroller struct {
	inv       *inventory.Inventory
	spec      inventory.EnrollSpec
	perMinute int
	rate      *ratelog.Limiter
	log       *slog.Logger
	limited   *ratelog.Logger // warnings machines can trigger
	now       func() time.Time
	wait      time.Duration
	turn      chan struct{} // holds a token while an enrollment runs

	mu          sync.Mutex
	pausedUntil time.Time
}

// bootPolicy is what the Booter gives a machine that is no host: under
// enroll, one that was not enrolled (a bound reached) boots its local disk.
func bootPolicy(p string) boot.Policy {
	if p == config.UnknownEnroll {
		return boot.PolicyLocal
	}
	return boot.Policy(p)
}

// setupEnroll keeps the enroll section in the store (the defaults of
// adoptions) and, under policy enroll, checks that its image version exists
// and returns the enroller; nil under other policies.
func setupEnroll(inv *inventory.Inventory, cfg *config.Config, log *slog.Logger) (*enroller, error) {
	e := cfg.UnknownHosts.Enroll
	spec := inventory.EnrollSpec{Image: e.Image, Version: e.Version, Mode: storage.DiskMode(e.Disk), Boot: e.Boot,
		NamePattern: e.NamePattern, MaxHosts: e.MaxHosts}
	if err := inv.SetEnrollDefaults(spec); err != nil {
		return nil, err
	}
	enroll := cfg.UnknownHosts.Policy == config.UnknownEnroll
	if e.Image != "" {
		if _, err := inv.ResolveVersion(e.Image, e.Version); err != nil {
			const fix = "declare it under images, or make it with `diskless image create` or `import`"
			if enroll {
				return nil, fmt.Errorf("%s: unknown_hosts.enroll.image: %v: %s", cfg.Where("unknown_hosts.enroll.image"), err, fix)
			}
			log.Warn("the image of unknown_hosts.enroll, the default of `host adopt`, is not usable: "+fix, "image", e.Image, "err", err)
		}
	}
	if !enroll {
		return nil, nil
	}
	return newEnroller(inv, spec, e.MaxPerMinute, log), nil
}

func newEnroller(inv *inventory.Inventory, spec inventory.EnrollSpec, perMinute int, log *slog.Logger) *enroller {
	return &enroller{inv: inv, spec: spec, perMinute: perMinute, log: log, now: time.Now, wait: enrollWait,
		rate:    ratelog.New(time.Minute/time.Duration(max(perMinute, 1)), perMinute),
		limited: ratelog.NewLogger(10*time.Second, 3), turn: make(chan struct{}, 1)}
}

// hostFor is the host behind a network-boot DHCP request of mac (option 93
// code): the Booter's, or, under policy enroll, one made of the machine now.
// known false: no host (the Booter's policy for unknown machines answers);
// answer false: send no boot answer, the machine will ask again.
func (e *enroller) hostFor(booter *boot.Booter, mac net.HardwareAddr, code uint16) (h boot.Host, known, answer bool) {
	if h, ok := booter.Host(mac); ok || e == nil {
		return h, ok, true
	}
	if e.paused() {
		return boot.Host{}, false, true
	}
	t := time.NewTimer(e.wait)
	select {
	case e.turn <- struct{}{}:
		t.Stop()
	case <-t.C:
		e.limited.Log(e.log, slog.LevelWarn, "enrollment busy: machine not answered, it will ask again", "mac", mac.String())
		return boot.Host{}, false, false
	}
	defer func() { <-e.turn }()
	// An earlier request of the same machine may have enrolled it.
	if h, ok := booter.Host(mac); ok {
		return h, true, true
	}
	if ok, _ := e.rate.AllowAt(e.now()); !ok {
		e.limited.Log(e.log, slog.LevelWarn, "enrollment rate bound reached: machine not answered, it will ask again",
			"mac", mac.String(), "max_per_minute", e.perMinute)
		return boot.Host{}, false, false
	}
	arch := boot.ArchName(code)
	start := time.Now()
	rec, err := e.inv.Enroll(context.Background(), mac, e.spec)
	switch {
	case errors.Is(err, inventory.ErrMaxHosts):
		e.pause()
		e.limited.Log(e.log, slog.LevelWarn, "enrollment stopped: max_hosts enrolled hosts exist; the machine boots as an unknown one",
			"mac", mac.String(), "arch", arch, "max_hosts", e.spec.MaxHosts)
		return boot.Host{}, false, true
	case inventory.KindOf(err) == inventory.NotFound || inventory.KindOf(err) == inventory.Invalid && isField(err, "image"):
		e.pause()
		e.limited.Log(e.log, slog.LevelError, "enrollment refused: the image of unknown_hosts.enroll is not usable; the machine boots as an unknown one",
			"mac", mac.String(), "arch", arch, "image", e.spec.Image, "err", err)
		return boot.Host{}, false, true
	case err != nil:
		e.limited.Log(e.log, slog.LevelWarn, "enrollment refused; the machine boots as an unknown one",
			"mac", mac.String(), "arch", arch, "err", err)
		return boot.Host{}, false, true
	}
	// Adding the host served it (inventory.Runtime.Changed): the Booter
	// knows it now. duration is what the DHCP worker spent on it.
	h, ok := booter.Host(mac)
	e.log.Info("host enrolled", "host", rec.Name, "mac", mac.String(), "arch", arch, "image", rec.Image, "disk", string(rec.Mode),
		"duration", time.Since(start).Round(time.Millisecond))
	return h, ok, true
}

func isField(err error, field string) bool {
	var ie *inventory.Error
	return errors.As(err, &ie) && ie.Field == field
}

func (e *enroller) paused() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now().Before(e.pausedUntil)
}

func (e *enroller) pause() {
	e.mu.Lock()
	e.pausedUntil = e.now().Add(enrollPause)
	e.mu.Unlock()
}
