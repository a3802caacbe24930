//go:build ceph

package app

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/api"
	"github.com/diskless-boot/diskless/internal/testutil/ceph"
	"github.com/diskless-boot/diskless/internal/testutil/iscsiclient"
)

// TestDegradedCluster is issue 14's degraded-cluster proof: diskless serve
// with its hosts' disks on RBD, and the cluster's only OSD stopped. A
// host's READ does not hang: it fails after op_timeout with an error the
// initiator sees (MEDIUM ERROR, which it retries); meanwhile the server
// answers its API at once and another host's session its commands that
// need no data (TEST UNIT READY, INQUIRY, a new login); when the OSD is
// back, the same sessions read and write again with nothing lost.
func TestDegradedCluster(t *testing.T) {
	cl := ceph.Start(t)
	dir, data := t.TempDir(), t.TempDir()
	img := filepath.Join(dir, "golden.img")
	golden := make([]byte, 8<<20)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range golden {
		golden[i] = byte(rng.Uint32())
	}
	if err := os.WriteFile(img, golden, 0o644); err != nil {
		t.Fatal(err)
	}
	const opTimeout = 4 * time.Second
	s := startSite(t, data, cl.StorageConfig(fmt.Sprintf("op_timeout: %v", opTimeout))+
		fmt.Sprintf("images:\n  - {name: golden, import: %s}\n", img))
	var hosts [2]api.HostView
	var secrets [2]string
	var sess [2]*iscsiclient.Session
	for i := range hosts {
		var ch api.HostChange
		s.call("POST", "/hosts", api.AddHostRequest{Name: fmt.Sprintf("pc%d", i+1), MACs: []string{fmt.Sprintf("52:54:00:00:01:0%d", i+1)},
			Image: "golden", DiskMode: "persistent"}, &ch, 201)
		hosts[i], secrets[i] = ch.Host, ch.Host.CHAP.Secret
		sess[i] = s.login(hosts[i], secrets[i])
	}
	mine := pattern("before the OSD stopped", 16*block)
	writeAt(t, sess[0], 100, mine)

	if err := cl.StopOSD(); err != nil {
		t.Fatal(err)
	}
	t.Log("OSD stopped")
	// Blocks nobody read yet: they must come from the cluster.
	start := time.Now()
	err := sess[0].Read(5000, make([]byte, 8*block))
	took := time.Since(start)
	t.Logf("READ with the OSD down: %v after %v", err, took.Round(10*time.Millisecond))
	var ce *iscsiclient.SCSIError
	if err == nil || !errors.As(err, &ce) {
		t.Fatalf("READ with the OSD down: %v, want a CHECK CONDITION", err)
	}
	if took < opTimeout-time.Second || took > opTimeout+5*time.Second {
		t.Errorf("READ failed after %v, want about op_timeout (%v)", took, opTimeout)
	}

	// Meanwhile: the API, the other host's session, a new login.
	done := make(chan error, 1)
	go func() { done <- sess[0].Write(200, pattern("while down", 8*block), false) }()
	apiStart := time.Now()
	var listed []api.HostView
	s.call("GET", "/hosts", nil, &listed)
	if d := time.Since(apiStart); d > time.Second || len(listed) != 2 {
		t.Errorf("API with the OSD down: %d hosts in %v", len(listed), d)
	} else {
		t.Logf("API with the OSD down: GET /hosts in %v", d.Round(time.Millisecond))
	}
	if err := sess[1].TestUnitReady(); err != nil {
		t.Errorf("pc2's TEST UNIT READY with the OSD down: %v", err)
	}
	if _, err := sess[1].Inquiry(); err != nil {
		t.Errorf("pc2's INQUIRY with the OSD down: %v", err)
	}
	relogin := time.Now()
	if again, err := s.dial(hosts[1], hosts[1].InitiatorIQN, secrets[1]); err != nil {
		t.Errorf("a new login of pc2 with the OSD down: %v", err)
	} else {
		t.Logf("pc2 logged in again with the OSD down in %v", time.Since(relogin).Round(time.Millisecond))
		again.Logout()
		again.Close()
	}
	// librbd's cache may take the WRITE (write-back, as the LU says:
	// WCE=1); the SYNCHRONIZE CACHE that must make it durable cannot
	// succeed, and fails within op_timeout.
	select {
	case err := <-done:
		t.Logf("WRITE with the OSD down: %v", err)
	case <-time.After(opTimeout + 10*time.Second):
		t.Errorf("a WRITE with the OSD down did not end within op_timeout + 10 s")
	}
	syncStart := time.Now()
	err = sess[0].SyncCache()
	t.Logf("SYNCHRONIZE CACHE with the OSD down: %v after %v", err, time.Since(syncStart).Round(10*time.Millisecond))
	if err == nil {
		t.Errorf("SYNCHRONIZE CACHE succeeded with the OSD down")
	}
	if d := time.Since(syncStart); d > opTimeout+10*time.Second {
		t.Errorf("SYNCHRONIZE CACHE took %v with the OSD down", d)
	}

	if err := cl.StartOSD(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	for {
		err := sess[0].Read(5000, make([]byte, 8*block))
		if err == nil {
			break
		}
		if time.Since(back) > time.Minute {
			t.Fatalf("reads fail a minute after the OSD came back: %v\n%s", err, s.logs)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("reads work again %v after the OSD was up", time.Since(back).Round(10*time.Millisecond))
	if got := readAt(t, sess[0], 100, len(mine)); !bytes.Equal(got, mine) {
		t.Error("pc1 lost what it wrote before the OSD stopped")
	}
	if got := readAt(t, sess[1], 5000, 8*block); !bytes.Equal(got, golden[5000*block:5008*block]) {
		t.Error("pc2 reads other than the image")
	}
	writeAt(t, sess[1], 300, pattern("after", 8*block))
}
