package imagefmt

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
)

// Format is a disk image file format. Its value is the name qemu-img uses
// for it (-f/-O), so it can be passed to qemu-img and shown to people as is.
type Format string

// The formats diskless reads. Raw also covers block devices.
const (
	Raw   Format = "raw"
	QCOW2 Format = "qcow2"
	VMDK  Format = "vmdk"
	VHDX  Format = "vhdx"
	VDI   Format = "vdi"
	VPC   Format = "vpc" // Microsoft Virtual PC / Hyper-V VHD
)

func (f Format) String() string { return string(f) }

// ParseFormat maps a name an admin types (case-insensitive; "vhd" is an
// alias of vpc, as in most tools other than qemu-img) to a Format.
func ParseFormat(s string) (Format, error) {
	name := strings.ToLower(strings.TrimSpace(s))
	if name == "vhd" {
		return VPC, nil
	}
	for _, f := range []Format{Raw, QCOW2, VMDK, VHDX, VDI, VPC} {
		if string(f) == name {
			return f, nil
		}
	}
	return "", fmt.Errorf("imagefmt: unknown image format %q (want one of raw, qcow2, vmdk, vhdx, vdi, vpc)", s)
}

// Signatures, each cited from the format's specification.
var (
	// QEMU docs/interop/qcow2.txt: "QFI\xfb" at offset 0, big endian
	// version after it. qcow version 1 shares the magic; Open refuses it.
	qcow2Magic = []byte("QFI\xfb")
	// VMware Virtual Disk Format 1.1, "Hosted Sparse Extent Header":
	// "KDMV" at offset 0. ESX sparse extents (COWD) are vmdk too.
	vmdkSparseMagic = []byte("KDMV")
	vmdkCOWDMagic   = []byte("COWD")
	// VMDK 1.1 "The Descriptor File": a text file starting with this line.
	vmdkDescriptorMagic = []byte("# Disk DescriptorFile")
	// MS-VHDX 2.2.1 File Type Identifier: "vhdxfile" at offset 0.
	vhdxMagic = []byte("vhdxfile")
	// Virtual Hard Disk Image Format Specification, "Hard Disk Footer
	// Format": cookie "conectix". The footer is the last 512 bytes (511
	// before Virtual PC 2004); dynamic disks copy it to offset 0.
	vpcMagic = []byte("conectix")
)

// VirtualBox VDI header (VBox/vd-vdi.h VDIPREHEADER): a 64-byte text banner
// ("<<< Oracle VM VirtualBox Disk Image >>>\n") then u32le signature.
const (
	vdiSignatureOffset = 0x40
	vdiSignature       = 0xbeda107f
)

// probeSize is how much Detect reads at the start and at the end of a file:
// one sector holds every signature above.
const probeSize = 512

// detect tells the format of the size bytes r holds by their signatures,
// reading at most probeSize bytes at each end. Anything without a known
// signature is Raw: a disk image has no magic of its own.
func detect(r io.ReaderAt, size int64) (Format, error) {
	head, err := readProbe(r, 0, min(size, probeSize))
	if err != nil {
		return "", err
	}
	switch {
	case bytes.HasPrefix(head, qcow2Magic):
		return QCOW2, nil
	case bytes.HasPrefix(head, vhdxMagic):
		return VHDX, nil
	case bytes.HasPrefix(head, vmdkSparseMagic), bytes.HasPrefix(head, vmdkCOWDMagic),
		bytes.HasPrefix(head, vmdkDescriptorMagic):
		return VMDK, nil
	case len(head) >= vdiSignatureOffset+4 &&
		binary.LittleEndian.Uint32(head[vdiSignatureOffset:]) == vdiSignature:
		return VDI, nil
	case bytes.HasPrefix(head, vpcMagic):
		return VPC, nil
	}
	if size >= probeSize {
		tail, err := readProbe(r, size-probeSize, probeSize)
		if err != nil {
			return "", err
		}
		// A fixed-size VHD has only the footer: at size-512, or at
		// size-511 when written by Virtual PC before 2004.
		if bytes.HasPrefix(tail, vpcMagic) || bytes.HasPrefix(tail[1:], vpcMagic) {
			return VPC, nil
		}
	}
	return Raw, nil
}

// readProbe reads exactly n bytes at off.
func readProbe(r io.ReaderAt, off, n int64) ([]byte, error) {
	b := make([]byte, n)
	if got, err := r.ReadAt(b, off); got < len(b) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read %d bytes at %d: %w", n, off, err)
	}
	return b, nil
}

// Detect tells the format of the regular file or block device at path from
// the signatures in its first and last sector. It reads nothing else.
func Detect(path string) (Format, error) {
	in, err := openInput(path)
	if err != nil {
		return "", err
	}
	defer in.Close()
	f, err := detect(in, in.Size())
	if err != nil {
		return "", fmt.Errorf("imagefmt: detect %s: %w", path, err)
	}
	return f, nil
}
