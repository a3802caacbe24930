// Package bootdisk builds small disk images that prove a guest booted from a
// served disk: an MBR that prints a marker, and a GPT disk whose EFI system
// partition holds a GRUB that does. It is for tests and benchmarks only
// (test/interop, test/pxe, bench/boot); production
// code must not import it.
package bootdisk

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"testing"
)

// Marker returns prefix followed by 16 random hex digits: a string the guest
// can only print when it read it from the disk served in this test.
func Marker(t testing.TB, prefix string) string {
	t.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return prefix + hex.EncodeToString(b)
}

// ReadError is what the boot sector prints on COM1 when its INT 13h read of
// the last sector fails.
const ReadError = "DISKLESS-MBR-READ-ERROR"

// MBR returns a BIOS disk image of size bytes (a multiple of 512, at most
// 504 MiB for the CHS numbers below): a boot sector plus marker+"\r\n\0" in
// the last sector. The boot sector reads the last sector through INT 13h
// (served by iPXE over iSCSI), prints the marker found there on COM1 and
// exits QEMU through isa-debug-exit.
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
func MBR(size int, marker string) []byte {
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
	copy(mbr[0x3e:], ReadError+"\r\n\x00")

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
