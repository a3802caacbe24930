package scsi

import "encoding/binary"

// REPORT TARGET PORT GROUPS (SPC-4 6.36): implicit ALUA with one target
// port group holding the one target port, always active/optimized.

func (lu *LogicalUnit) reportTPG(c *Command, r *Result) error {
	t := lu.target.Load()
	if t == nil {
		return senseErr(SenseIllegalRequest, ascLUNotSupported)
	}
	format := c.CDB[1] >> 5
	if format > 1 {
		return invalidCDB(1, 7)
	}
	desc := make([]byte, 12)
	desc[0] = 0x80 | 0x0 // PREF, ASYMMETRIC ACCESS STATE active/optimized
	desc[1] = 0x01       // AO_SUP
	binary.BigEndian.PutUint16(desc[2:], t.cfg.TargetPortGroup)
	desc[7] = 1 // TARGET PORT COUNT
	binary.BigEndian.PutUint16(desc[10:], t.cfg.RelTargetPort)
	var data []byte
	if format == 1 {
		// Extended header: format type 001b, no implicit transition time.
		data = binary.BigEndian.AppendUint32(nil, uint32(4+len(desc)))
		data = append(data, 0x10, 0, 0, 0)
	} else {
		data = binary.BigEndian.AppendUint32(nil, uint32(len(desc)))
	}
	putAllocated(c, r, append(data, desc...), int(be32(c.CDB[6:])))
	return nil
}
