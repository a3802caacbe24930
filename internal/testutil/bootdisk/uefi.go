package bootdisk

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
)

// UEFI writes a GPT disk image to path whose only partition is an EFI
// system partition (FAT, built with mkfs.vfat and mtools, never mounted)
// holding a standalone GRUB as \EFI\BOOT\BOOTX64.EFI - the one file iPXE's
// EFI sanboot boots - that prints marker on the serial port and powers off.
// dir holds the intermediate files. Needs grub-mkstandalone
// (grub-efi-amd64-bin), mkfs.vfat (dosfstools) and mtools.
func UEFI(dir, path, marker string) error {
	cfg := filepath.Join(dir, "grub.cfg")
	os.WriteFile(cfg, []byte("serial --unit=0 --speed=115200\nterminal_output serial console\necho "+marker+"\nhalt\n"), 0o644)
	efi := filepath.Join(dir, "BOOTX64.EFI")
	if err := run("grub-mkstandalone", "-O", "x86_64-efi", "-o", efi,
		"--modules=serial terminal echo halt", "--locales=", "--themes=", "--fonts=",
		"boot/grub/grub.cfg="+cfg); err != nil {
		return err
	}
	const espSectors = 32 << 11 // 32 MiB
	esp := filepath.Join(dir, "esp.img")
	if err := run("mkfs.vfat", "-F", "16", "-n", "ESP", "-C", esp, "32768"); err != nil {
		return err
	}
	for _, c := range [][]string{
		{"mmd", "-i", esp, "::/EFI", "::/EFI/BOOT"},
		{"mcopy", "-i", esp, efi, "::/EFI/BOOT/BOOTX64.EFI"},
	} {
		cmd := exec.Command(c[0], c[1:]...)
		cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %v: %s", c, err, out)
		}
	}
	espData, err := os.ReadFile(esp)
	if err != nil {
		return err
	}
	const first = 2048
	total := uint64(first + espSectors + 2048)
	img := make([]byte, total*512)
	copy(img[first*512:], espData)
	writeGPT(img, total, first, first+espSectors-1)
	return os.WriteFile(path, img, 0o644)
}

// writeGPT writes a protective MBR and primary and backup GPT (UEFI 2.10
// section 5.3) with one EFI system partition from LBA first to last.
func writeGPT(img []byte, total, first, last uint64) {
	// Protective MBR: one partition of type 0xEE over the whole disk.
	p := img[0x1be:0x1ce]
	p[1], p[2], p[3] = 0, 2, 0
	p[4] = 0xee
	p[5], p[6], p[7] = 0xff, 0xff, 0xff
	binary.LittleEndian.PutUint32(p[8:], 1)
	binary.LittleEndian.PutUint32(p[12:], uint32(min(total-1, 0xffffffff)))
	img[510], img[511] = 0x55, 0xaa

	// Partition entry array: 128 entries of 128 bytes (32 sectors).
	entries := make([]byte, 128*128)
	e := entries[:128]
	copy(e[0:16], guidBytes("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")) // EFI system partition
	rand.Read(e[16:32])
	binary.LittleEndian.PutUint64(e[32:], first)
	binary.LittleEndian.PutUint64(e[40:], last)
	for i, r := range "EFI system" {
		binary.LittleEndian.PutUint16(e[56+2*i:], uint16(r))
	}
	entriesCRC := crc32.ChecksumIEEE(entries)
	var diskGUID [16]byte
	rand.Read(diskGUID[:])

	header := func(my, alt, entriesLBA uint64) []byte {
		h := make([]byte, 92)
		copy(h, "EFI PART")
		binary.LittleEndian.PutUint32(h[8:], 0x00010000)
		binary.LittleEndian.PutUint32(h[12:], 92)
		binary.LittleEndian.PutUint64(h[24:], my)
		binary.LittleEndian.PutUint64(h[32:], alt)
		binary.LittleEndian.PutUint64(h[40:], 34)       // first usable
		binary.LittleEndian.PutUint64(h[48:], total-34) // last usable
		copy(h[56:72], diskGUID[:])
		binary.LittleEndian.PutUint64(h[72:], entriesLBA)
		binary.LittleEndian.PutUint32(h[80:], 128)
		binary.LittleEndian.PutUint32(h[84:], 128)
		binary.LittleEndian.PutUint32(h[88:], entriesCRC)
		binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h))
		return h
	}
	copy(img[1*512:], header(1, total-1, 2))
	copy(img[2*512:], entries)
	copy(img[(total-33)*512:], entries)
	copy(img[(total-1)*512:], header(total-1, 1, total-33))
}

// guidBytes encodes a GUID in its mixed-endian on-disk form.
func guidBytes(s string) []byte {
	b, _ := hex.DecodeString(s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:])
	out := make([]byte, 16)
	binary.LittleEndian.PutUint32(out[0:], binary.BigEndian.Uint32(b[0:]))
	binary.LittleEndian.PutUint16(out[4:], binary.BigEndian.Uint16(b[4:]))
	binary.LittleEndian.PutUint16(out[6:], binary.BigEndian.Uint16(b[6:]))
	copy(out[8:], b[8:])
	return out
}

// run runs a command and returns its output with the error.
func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", name, err, out)
	}
	return nil
}
