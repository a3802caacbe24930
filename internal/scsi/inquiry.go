package scsi

// Standard INQUIRY data (SPC-4 6.6.2).

const (
	spcVersion     = 0x06 // SPC-4
	stdInquiryLen  = 96
	verSAM5        = 0x00a0
	verISCSI       = 0x0960
	verSPC4        = 0x0460
	verSBC3        = 0x04c0
	inquiryTPGSImp = 0x10 // TPGS 01b: implicit ALUA only
)

func (lu *LogicalUnit) inquiry(c *Command, r *Result) error {
	cdb := c.CDB
	alloc := int(be16(cdb[3:]))
	if cdb[1]&0x01 == 0 {
		if cdb[2] != 0 {
			// A page code without EVPD is an error (SPC-4 6.6.1).
			return invalidCDB(2, -1)
		}
		putAllocated(c, r, lu.standardInquiry(), alloc)
		return nil
	}
	data, err := lu.vpdPage(cdb[2])
	if err != nil {
		return err
	}
	putAllocated(c, r, data, alloc)
	return nil
}

func (lu *LogicalUnit) standardInquiry() []byte {
	b := make([]byte, stdInquiryLen)
	b[0] = 0x00 // peripheral qualifier 000b, direct access block device
	if lu.cfg.Removable {
		b[1] = 0x80 // RMB
	}
	b[2] = spcVersion
	b[3] = 0x12 // HISUP, RESPONSE DATA FORMAT 2
	b[4] = stdInquiryLen - 5
	// TPGS; 3PC: the LU is a copy manager for EXTENDED COPY (xcopy.go).
	b[5] = inquiryTPGSImp | 0x08
	b[7] = 0x02 // CMDQUE
	padASCII(b[8:16], lu.cfg.VendorID)
	padASCII(b[16:32], lu.cfg.ProductID)
	padASCII(b[32:36], lu.cfg.Revision)
	for i, v := range []uint16{verSAM5, verISCSI, verSPC4, verSBC3} {
		b[58+2*i], b[59+2*i] = byte(v>>8), byte(v)
	}
	return b
}

// padASCII left-aligns s in dst and pads it with spaces (SPC-4 4.4.1).
func padASCII(dst []byte, s string) {
	n := copy(dst, s)
	for i := n; i < len(dst); i++ {
		dst[i] = ' '
	}
}
