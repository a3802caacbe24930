package interop

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
			marker := "DISKLESS-MARKER-" + randomHex(t, 8)
			img := filepath.Join(t.TempDir(), "boot.img")
			if err := os.WriteFile(img, bootDisk(4<<20, marker), 0o644); err != nil {
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
			i, err := v.waitFor(90*time.Second, marker, "Could not boot", "DISKLESS-MBR-READ-ERROR")
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
				why := lineWith(v.console(), "Could not open SAN device")
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

// bootDisk returns a disk image of size bytes (a multiple of 512, at most
// 504 MiB for the CHS numbers below): a boot sector plus marker+"\r\n\0" in
// the last sector.
//
// The boot sector is 16-bit real-mode code, loaded by iPXE at 0000:7C00 with
// DL = the SAN drive number:
//
//	00 FA          cli
//	01 FC          cld
//	02 31 C0       xor  ax, ax
//	04 8E D8       mov  ds, ax
//	06 8E C0       mov  es, ax
//	08 8E D0       mov  ss, ax
//	0A BC 00 7C    mov  sp, 0x7c00
//	0D FB          sti
//	0E BE 2E 7C    mov  si, dap            ; INT 13h AH=42h extended read
//	11 B4 42       mov  ah, 0x42           ; of 1 sector (the last one) to
//	13 CD 13       int  0x13               ; 0000:8000, drive in DL
//	15 BE 3E 7C    mov  si, errmsg
//	18 72 03       jc   print              ; read failed: print errmsg
//	1A BE 00 80    mov  si, 0x8000         ; else the sector's string
//	1D BA F8 03    print: mov dx, 0x3f8    ; COM1 data register
//	20 AC          next:  lodsb
//	21 84 C0       test al, al
//	23 74 03       jz   done
//	25 EE          out  dx, al
//	26 EB F8       jmp  next
//	28 E6 F4       done: out 0xf4, al      ; isa-debug-exit: QEMU exits
//	2A FA          halt: cli               ; (if that device is absent)
//	2B F4          hlt
//	2C EB FC       jmp  halt
//	2E             dap: disk address packet (16 bytes)
//	3E             errmsg: "DISKLESS-MBR-READ-ERROR\r\n\0"
//
// iPXE also derives the INT 13h CHS geometry from the partition table (the
// default 255 heads x 63 sectors would give a disk this small zero
// cylinders, and iPXE then fails the CHS read of the boot sector with EIO),
// so the sector carries one partition laid out for 16 heads x 63 sectors.
func bootDisk(size int, marker string) []byte {
	const heads, sectors = 16, 63
	img := make([]byte, size)
	last := uint64(size/512 - 1)

	mbr := img[:512]
	code, _ := hex.DecodeString("FAFC31C08ED88EC08ED0BC007CFB" +
		"BE2E7C" + "B442CD13" + "BE3E7C" + "7203" + "BE0080" +
		"BAF803" + "AC84C07403EEEBF8" + "E6F4" + "FAF4EBFC")
	copy(mbr, code)
	dap := mbr[0x2e:0x3e]
	dap[0] = 0x10                                  // packet size
	binary.LittleEndian.PutUint16(dap[2:], 1)      // sectors
	binary.LittleEndian.PutUint16(dap[4:], 0x8000) // buffer offset
	binary.LittleEndian.PutUint16(dap[6:], 0)      // buffer segment
	binary.LittleEndian.PutUint64(dap[8:], last)   // LBA
	copy(mbr[0x3e:], "DISKLESS-MBR-READ-ERROR\r\n\x00")

	// Partition 1: from C/H/S 0/1/1 (LBA 63) to the last whole cylinder.
	cyls := size / 512 / (heads * sectors)
	p := mbr[0x1be:0x1ce]
	p[0] = 0x80                // active
	p[1], p[2], p[3] = 1, 1, 0 // start: head 1, sector 1, cylinder 0
	p[4] = 0xda                // type: non-filesystem data
	// End: last head, last sector | cylinder bits 9-8, cylinder bits 7-0.
	p[5], p[6], p[7] = heads-1, sectors|byte((cyls-1)>>8)<<6, byte(cyls-1)
	binary.LittleEndian.PutUint32(p[8:], sectors)
	binary.LittleEndian.PutUint32(p[12:], uint32(cyls*heads*sectors-sectors))
	mbr[510], mbr[511] = 0x55, 0xaa

	copy(img[last*512:], marker+"\r\n\x00")
	return img
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
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
