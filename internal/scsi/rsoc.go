package scsi

import "encoding/binary"

// REPORT SUPPORTED OPERATION CODES (SPC-4 6.35) from the command table,
// and REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS (SPC-4 6.37).

const (
	rsocAll         = 0x0 // all commands
	rsocOpcode      = 0x1 // one command without service actions
	rsocServiceAct  = 0x2 // one command with a service action
	rsocSupportNone = 0x1 // SUPPORT: not supported
	rsocSupportStd  = 0x3 // SUPPORT: supported as the standard says
)

// timeouts is the command timeouts descriptor (SPC-4 6.35.4): nominal
// processing time not given, recommended timeout in seconds.
func timeouts(b []byte, e *opcode) []byte {
	b = append(b, 0, 0x0a, 0, 0, 0, 0, 0, 0)
	return binary.BigEndian.AppendUint32(b, e.timeout)
}

func (lu *LogicalUnit) supports(e *opcode) bool { return e.avail == nil || e.avail(lu) }

func (lu *LogicalUnit) reportOpcodes(c *Command, r *Result) error {
	cdb := c.CDB
	rctd := cdb[2]&0x80 != 0
	op, sa, alloc := cdb[3], be16(cdb[4:]), int(be32(cdb[6:]))
	var data []byte
	switch cdb[2] & 0x07 {
	case rsocAll:
		data = make([]byte, 4)
		for i := range opcodeTable {
			e := &opcodeTable[i]
			if !lu.supports(e) {
				continue
			}
			d := []byte{e.op, 0, 0, e.sa, 0, 0, 0, byte(len(lu.usage(e)))}
			if e.hasSA {
				d[5] |= 0x01 // SERVACTV
			}
			if rctd {
				d[5] |= 0x02 // CTDP
				d = timeouts(d, e)
			}
			data = append(data, d...)
		}
		binary.BigEndian.PutUint32(data, uint32(len(data)-4))
	case rsocOpcode, rsocServiceAct:
		bySA := cdb[2]&0x07 == rsocServiceAct
		// Asking by operation code alone for a command with service
		// actions, or by service action for one without, is an error.
		if hasSAs(op) != bySA {
			return invalidCDB(2, 2)
		}
		var e *opcode
		if bySA {
			if sa <= 0xff {
				e = saIndex[op][byte(sa)]
			}
		} else {
			e = opIndex[op]
		}
		if e == nil || !lu.supports(e) {
			data = []byte{0, rsocSupportNone, 0, 0}
			break
		}
		usage := lu.usage(e)
		data = []byte{0, rsocSupportStd, 0, byte(len(usage))}
		data = append(data, usage...)
		if rctd {
			data[1] |= 0x80 // CTDP
			data = timeouts(data, e)
		}
	default:
		return invalidCDB(2, 2)
	}
	putAllocated(c, r, data, alloc)
	return nil
}

// reportTMFs reports what the iSCSI transport carries out (RFC 7143
// 11.5.1): ABORT TASK, ABORT TASK SET, CLEAR TASK SET, LOGICAL UNIT RESET
// and TARGET RESET; not CLEAR ACA (no ACA), QUERY TASK or I_T NEXUS RESET.
func (lu *LogicalUnit) reportTMFs(c *Command, r *Result) error {
	alloc := be32(c.CDB[6:])
	if alloc < 4 {
		return invalidCDB(6, -1)
	}
	data := []byte{0x80 | 0x40 | 0x10 | 0x08 | 0x02, 0, 0, 0}
	putAllocated(c, r, data, int(alloc))
	return nil
}
