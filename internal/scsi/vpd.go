package scsi

import (
	"encoding/binary"
	"fmt"
)

// Vital product data pages (SPC-4 7.8, SBC-3 6.5).

const (
	vpdSupported       = 0x00
	vpdSerial          = 0x80
	vpdDeviceID        = 0x83
	vpdBlockLimits     = 0xb0
	vpdBlockDevChars   = 0xb1
	vpdLBProvisioning  = 0xb2
	protocolISCSI      = 0x5
	codeSetBinary      = 0x1
	codeSetUTF8        = 0x3
	assocLU            = 0x0
	assocTargetPort    = 0x1
	assocTargetDevice  = 0x2
	desigNAA           = 0x3
	desigRelTargetPort = 0x4
	desigTPG           = 0x5
	desigSCSIName      = 0x8
)

// vpdPages lists the supported pages in ascending order.
var vpdPages = []byte{vpdSupported, vpdSerial, vpdDeviceID, vpdBlockLimits, vpdBlockDevChars, vpdLBProvisioning}

func (lu *LogicalUnit) vpdPage(code byte) ([]byte, error) {
	var body []byte
	switch code {
	case vpdSupported:
		body = vpdPages
	case vpdSerial:
		body = []byte(lu.cfg.Serial)
	case vpdDeviceID:
		body = lu.deviceIdentification()
	case vpdBlockLimits:
		body = lu.blockLimits()
	case vpdBlockDevChars:
		// Block Device Characteristics (SBC-3 6.5.2): MEDIUM ROTATION
		// RATE 1 (non-rotating medium), form factor not reported.
		body = make([]byte, 0x3c)
		body[1] = 0x01
	case vpdLBProvisioning:
		body = lu.provisioning()
	default:
		return nil, invalidCDB(2, -1)
	}
	b := make([]byte, 4, 4+len(body))
	b[1] = code
	binary.BigEndian.PutUint16(b[2:], uint16(len(body)))
	return append(b, body...), nil
}

// designator appends one designation descriptor (SPC-4 7.8.6.1).
func designator(b []byte, proto, codeSet, assoc, typ byte, id []byte) []byte {
	piv := byte(0)
	if assoc != assocLU {
		piv = 0x80
	}
	b = append(b, proto<<4|codeSet, piv|assoc<<4|typ, 0, byte(len(id)))
	return append(b, id...)
}

// scsiName is a SCSI name string designator value: NUL-terminated and
// padded with NULs to a multiple of four bytes (SPC-4 7.8.6.11).
func scsiName(s string) []byte {
	b := make([]byte, (len(s)+1+3)&^3)
	copy(b, s)
	return b
}

// deviceIdentification is the Device Identification page (SPC-4 7.8.6):
// the LU's NAA designator and, once attached to a target, the relative
// target port, target port group and SCSI name strings of the target
// port and target device.
func (lu *LogicalUnit) deviceIdentification() []byte {
	b := designator(nil, 0, codeSetBinary, assocLU, desigNAA, lu.naa)
	t := lu.target.Load()
	if t == nil {
		return b
	}
	var v [4]byte
	binary.BigEndian.PutUint16(v[2:], t.cfg.RelTargetPort)
	b = designator(b, protocolISCSI, codeSetBinary, assocTargetPort, desigRelTargetPort, v[:])
	binary.BigEndian.PutUint16(v[2:], t.cfg.TargetPortGroup)
	b = designator(b, protocolISCSI, codeSetBinary, assocTargetPort, desigTPG, v[:])
	if t.cfg.Name != "" {
		port := fmt.Sprintf("%s,t,0x%04x", t.cfg.Name, t.cfg.PortalGroupTag)
		b = designator(b, protocolISCSI, codeSetUTF8, assocTargetPort, desigSCSIName, scsiName(port))
		b = designator(b, protocolISCSI, codeSetUTF8, assocTargetDevice, desigSCSIName, scsiName(t.cfg.Name))
	}
	return b
}

// granularity is the optimal alignment in blocks: a page.
func (lu *LogicalUnit) granularity() uint32 {
	return uint32(max(optimalGranularityBytes>>lu.shift, 1))
}

// blockLimits is the Block Limits page (SBC-3 6.5.3, with the atomic
// fields of SBC-4), page length 3Ch.
func (lu *LogicalUnit) blockLimits() []byte {
	b := make([]byte, 0x3c)
	// b[0] WSNZ=0: WRITE SAME with zero blocks means "to the end".
	b[1] = byte(lu.maxCAWBlocks())
	binary.BigEndian.PutUint16(b[2:], uint16(lu.granularity()))
	binary.BigEndian.PutUint32(b[4:], lu.maxXfer)
	binary.BigEndian.PutUint32(b[8:], uint32(min(uint64(optimalTransferBytes)>>lu.shift, uint64(lu.maxXfer))))
	if lu.unmapper != nil {
		binary.BigEndian.PutUint32(b[16:], maxUnmapBlocks)
		binary.BigEndian.PutUint32(b[20:], maxUnmapDescriptors)
		binary.BigEndian.PutUint32(b[24:], lu.granularity())
		b[28] = 0x80 // UGAVALID, alignment 0
	}
	binary.BigEndian.PutUint64(b[32:], maxWriteSameBlocks)
	// MAXIMUM ATOMIC TRANSFER LENGTH (SBC-4); ATOMIC ALIGNMENT,
	// ATOMIC TRANSFER LENGTH GRANULARITY and the atomic boundary
	// fields stay zero: no constraints, no boundaries (atomic.go).
	binary.BigEndian.PutUint32(b[40:], lu.maxAtomicBlocks())
	return b
}

// provisioning is the Logical Block Provisioning page (SBC-3 6.5.4).
// Thin provisioning is claimed only when the device can deallocate.
func (lu *LogicalUnit) provisioning() []byte {
	b := make([]byte, 4)
	if lu.unmapper != nil {
		// LBPU, LBPWS, LBPWS10, LBPRZ (deallocated blocks read as
		// zeros); no ANC_SUP; provisioning type 010b, thin.
		b[1] = 0x80 | 0x40 | 0x20 | 0x04
		b[2] = 0x02
	}
	return b
}
