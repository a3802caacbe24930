package interop

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/testutil/bootdisk"
)

// The iPXE ROM QEMU loads for -device e1000 (Debian package ipxe-qemu); it
// holds both the legacy BIOS and the EFI image.
const ipxeROM = "/usr/lib/ipxe/qemu/efi-e1000.rom"

// TestIPXESanboot boots a QEMU PC (SeaBIOS + iPXE NIC ROM) from the target
// with iPXE's sanboot. The disk's boot sector reads the disk's last sector
// through INT 13h (served by iPXE over iSCSI) and prints the marker found
// there on COM1, so the marker proves iPXE logged in and read both ends of
// the disk.
func TestIPXESanboot(t *testing.T) {
	needPeers(t, "qemu-system-x86_64")
	needFile(t, ipxeROM, "ipxe-qemu")

	initiator := "iqn.2026-11.org.example:ipxe-client"
	chap := &creds{"ipxe-user", "ipxe-secret-0123"}
	mutual := &creds{"disk1-target", "target-secret-4567"}
	wrong := func(c *creds) *creds { return &creds{c.User, "not-the-secret-9"} }
	cases := []struct {
		name         string
		chap, mutual *creds // target side
		send, expect *creds // iPXE side: username/password, reverse-username/reverse-password
		// When it must not boot: iPXE's error text. EPERM when the target
		// refuses the login (status 0201 initiator authentication failure,
		// RFC 7143 11.13.5), EACCES when iPXE refuses the target's CHAP
		// response.
		refusal string
	}{
		{name: "no-chap"},
		{name: "chap", chap: chap, send: chap},
		{name: "mutual-chap", chap: chap, mutual: mutual, send: chap, expect: mutual},
		{name: "wrong-secret", chap: chap, send: wrong(chap), refusal: "Operation not permitted"},
		{name: "wrong-target-secret", chap: chap, mutual: mutual, send: chap, expect: wrong(mutual),
			refusal: "Permission denied"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			marker := bootdisk.Marker(t, "DISKLESS-MARKER-")
			img := filepath.Join(t.TempDir(), "boot.img")
			if err := os.WriteFile(img, bootdisk.MBR(4<<20, marker), 0o644); err != nil {
				t.Fatal(err)
			}
			tg := startTarget(t, targetConfig{LUNs: []lunConfig{{Path: img}}, CHAP: tc.chap, MutualCHAP: tc.mutual})
			script := "#!ipxe\ndhcp\nset initiator-iqn " + initiator + "\n"
			if c := tc.send; c != nil {
				script += "set username " + c.User + "\nset password " + c.Secret + "\n"
			}
			if c := tc.expect; c != nil {
				script += "set reverse-username " + c.User + "\nset reverse-password " + c.Secret + "\n"
			}
			script += fmt.Sprintf("sanboot iscsi:10.0.2.2::%d:%d:%s\n", tg.Port, tg.LUN(0), tg.IQN)
			url := serveScript(t, script)

			v := startVM(t, "-m", "128",
				"-machine", "graphics=off", // SeaBIOS and iPXE print on the serial console too
				"-netdev", "user,id=n0,bootfile="+url,
				"-device", "e1000,netdev=n0",
				"-boot", "n",
				// The boot sector ends with OUT 0xf4: QEMU exits at once.
				"-device", "isa-debug-exit,iobase=0xf4,iosize=0x04")

			// iPXE's last word when sanboot fails.
			i, _, err := v.WaitFor(90*time.Second, marker, "Could not boot", bootdisk.ReadError)
			if err != nil {
				t.Fatal(err)
			}
			switch boots := tc.refusal == ""; {
			case boots && i != 0:
				t.Fatalf("sanboot did not reach the boot sector's marker")
			case !boots && i == 0:
				t.Fatalf("sanboot booted although the CHAP exchange must fail")
			case !boots:
				// iPXE says why before it gives up, e.g. "Could not open
				// SAN device: Permission denied (http://ipxe.org/020d623c)".
				why := lineWith(v.Console(), "Could not open SAN device")
				if !strings.Contains(why, tc.refusal) {
					t.Errorf("iPXE refused with %q, want %q", why, tc.refusal)
				}
				t.Logf("iPXE refused as expected: %s", why)
			}
			t.Logf("%s done in %v", tc.name, time.Since(start).Round(100*time.Millisecond))
		})
	}
}

// serveScript serves an iPXE script over HTTP on 127.0.0.1 and returns its URL
// as the guest sees it (slirp maps 10.0.2.2 to the host's loopback).
func serveScript(t *testing.T, script string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, script)
	}))
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	return "http://10.0.2.2:" + port + "/boot.ipxe"
}

// lineWith returns the first line of s containing sub.
func lineWith(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}
