package scsi

import "encoding/binary"

// MODE SENSE(6/10) and MODE SELECT(6/10) (SPC-4 6.9-6.12, 7.5) with the
// caching (08h), control (0Ah) and informational exceptions control (1Ch)
// pages. Saved values are not implemented (PS=0, SP and PC=11b refused):
// after a reset the current values return to the defaults.

const (
	pageCaching  = 0x08
	pageControl  = 0x0a
	pageInfoExc  = 0x1c
	pageAllPages = 0x3f
)

// modeState is the changeable part of the mode pages.
type modeState struct {
	wce bool // caching: write cache enabled
	swp bool // control: software write protect
}

// modePage describes one page: its length and how to render it.
type modePage struct {
	code byte
	// render returns the page (header included) for the values in s;
	// changeable returns the mask of changeable bits.
	render     func(s modeState) []byte
	changeable []byte
	// apply copies the changeable fields of a validated page into s.
	apply func(s *modeState, page []byte)
}

var modePages = []modePage{
	{
		// Caching mode page (SBC-3 6.4.5): WCE reflects whether writes
		// wait for fdatasync; read caching is on (RCD=0).
		code: pageCaching,
		render: func(s modeState) []byte {
			p := make([]byte, 20)
			p[0], p[1] = pageCaching, 18
			if s.wce {
				p[2] |= 0x04
			}
			return p
		},
		changeable: []byte{2: 0x04, 19: 0},
		apply:      func(s *modeState, p []byte) { s.wce = p[2]&0x04 != 0 },
	},
	{
		// Control mode page (SPC-4 7.5.8): TST=000b (one task set),
		// QUEUE ALGORITHM MODIFIER 1h (commands are reordered: they run
		// concurrently), QERR=00b, D_SENSE=0 (fixed format), TAS=0, SWP
		// changeable.
		code: pageControl,
		render: func(s modeState) []byte {
			p := make([]byte, 12)
			p[0], p[1] = pageControl, 10
			p[3] = 1 << 4
			if s.swp {
				p[4] |= 0x08
			}
			return p
		},
		changeable: []byte{4: 0x08, 11: 0},
		apply:      func(s *modeState, p []byte) { s.swp = p[4]&0x08 != 0 },
	},
	{
		// Informational exceptions control mode page (SPC-4 7.5.13):
		// there are no failure predictions to report, DEXCPT=1.
		code: pageInfoExc,
		render: func(modeState) []byte {
			p := make([]byte, 12)
			p[0], p[1], p[2] = pageInfoExc, 10, 0x08
			return p
		},
		changeable: make([]byte, 12),
		apply:      func(*modeState, []byte) {},
	},
}

func findModePage(code byte) *modePage {
	for i := range modePages {
		if modePages[i].code == code {
			return &modePages[i]
		}
	}
	return nil
}

func (lu *LogicalUnit) currentMode() modeState {
	return modeState{wce: lu.wce.Load(), swp: lu.swp.Load()}
}

func (lu *LogicalUnit) defaultMode() modeState {
	return modeState{wce: !lu.cfg.WriteCacheDisabled}
}

// deviceSpecific is the DEVICE-SPECIFIC PARAMETER of the mode parameter
// header (SBC-3 6.4.1): WP when writes are refused, DPOFUA since DPO and
// FUA are supported.
func (lu *LogicalUnit) deviceSpecific() byte {
	b := byte(0x10)
	if lu.cfg.ReadOnly || lu.swp.Load() {
		b |= 0x80
	}
	return b
}

func (lu *LogicalUnit) modeSense(c *Command, r *Result) error {
	cdb := c.CDB
	ten := cdb[0] == opModeSense10
	dbd := cdb[1]&0x08 != 0
	llbaa := ten && cdb[1]&0x10 != 0
	pc, code, sub := cdb[2]>>6, cdb[2]&0x3f, cdb[3]
	alloc := int(cdb[4])
	if ten {
		alloc = int(be16(cdb[7:]))
	}
	var pages []*modePage
	switch {
	case pc == 3:
		return senseErr(SenseIllegalRequest, ascSavingNotSupported)
	case code == pageAllPages:
		if sub != 0 && sub != 0xff {
			return invalidCDB(3, -1)
		}
		for i := range modePages {
			pages = append(pages, &modePages[i])
		}
	default:
		p := findModePage(code)
		if p == nil {
			return invalidCDB(2, 5)
		}
		if sub != 0 && sub != 0xff {
			return invalidCDB(3, -1)
		}
		pages = append(pages, p)
	}
	var state modeState
	switch pc {
	case 0:
		state = lu.currentMode()
	case 2:
		state = lu.defaultMode()
	}
	var body []byte
	if !dbd {
		body = lu.blockDescriptor(llbaa, pc == 1)
	}
	bdl := len(body)
	for _, p := range pages {
		if pc == 1 {
			m := append([]byte(nil), p.changeable...)
			m[0], m[1] = p.code, byte(len(m)-2)
			body = append(body, m...)
		} else {
			body = append(body, p.render(state)...)
		}
	}
	var data []byte
	if ten {
		data = make([]byte, 8, 8+len(body))
		binary.BigEndian.PutUint16(data[0:], uint16(6+len(body)))
		data[3] = lu.deviceSpecific()
		if llbaa && bdl > 0 {
			data[4] = 0x01 // LONGLBA
		}
		binary.BigEndian.PutUint16(data[6:], uint16(bdl))
	} else {
		data = make([]byte, 4, 4+len(body))
		data[0] = byte(3 + len(body))
		data[2] = lu.deviceSpecific()
		data[3] = byte(bdl)
	}
	putAllocated(c, r, append(data, body...), alloc)
	return nil
}

// blockDescriptor is the short (8-byte) or long (16-byte) LBA mode
// parameter block descriptor (SBC-3 6.4.2); in the changeable form all
// zero, since neither capacity nor block length can be changed.
func (lu *LogicalUnit) blockDescriptor(long, changeable bool) []byte {
	if long {
		d := make([]byte, 16)
		if !changeable {
			binary.BigEndian.PutUint64(d, lu.blocks.Load())
			binary.BigEndian.PutUint32(d[12:], uint32(lu.bs))
		}
		return d
	}
	d := make([]byte, 8)
	if !changeable {
		binary.BigEndian.PutUint32(d, uint32(min(lu.blocks.Load(), 0xffffffff)))
		binary.BigEndian.PutUint32(d[4:], uint32(lu.bs)) // byte 4 is reserved: bs < 2^24
	}
	return d
}

func (lu *LogicalUnit) modeSelect(c *Command, r *Result) error {
	cdb := c.CDB
	ten := cdb[0] == opModeSelect10
	plen := int(cdb[4])
	if ten {
		plen = int(be16(cdb[7:]))
	}
	r.Wanted = plen
	if cdb[1]&0x01 != 0 { // SP: no saved pages
		return invalidCDB(1, 0)
	}
	if plen == 0 {
		return nil
	}
	data := c.DataOut
	if len(data) > plen {
		data = data[:plen]
	}
	hdr, bdl, longLBA := 4, 0, false
	if ten {
		hdr = 8
	}
	if len(data) < hdr {
		return paramListLengthError()
	}
	if ten {
		bdl, longLBA = int(be16(data[6:])), data[4]&0x01 != 0
		if data[2] != 0 {
			return invalidParam(2, -1) // MEDIUM TYPE
		}
	} else {
		bdl = int(data[3])
		if data[1] != 0 {
			return invalidParam(1, -1)
		}
	}
	pos := hdr
	if bdl > 0 {
		if err := lu.checkBlockDescriptor(data, pos, bdl, longLBA, hdr); err != nil {
			return err
		}
		pos += bdl
	}
	lu.mu.Lock()
	defer lu.mu.Unlock()
	cur := lu.currentMode()
	next := cur
	for pos < len(data) {
		if len(data)-pos < 2 {
			return paramListLengthError()
		}
		b0 := data[pos]
		switch {
		case b0&0x80 != 0: // PS is reserved in MODE SELECT
			return invalidParam(pos, 7)
		case b0&0x40 != 0: // no subpages
			return invalidParam(pos, 6)
		}
		p := findModePage(b0 & 0x3f)
		if p == nil {
			return invalidParam(pos, 5)
		}
		want := p.render(cur)
		if int(data[pos+1]) != len(want)-2 {
			return invalidParam(pos+1, -1)
		}
		if pos+len(want) > len(data) {
			return paramListLengthError()
		}
		page := data[pos : pos+len(want)]
		for i := 2; i < len(want); i++ {
			if bad := (page[i] ^ want[i]) &^ p.changeable[i]; bad != 0 {
				return invalidParam(pos+i, highestBit(bad))
			}
		}
		p.apply(&next, page)
		pos += len(want)
	}
	if next != cur {
		lu.wce.Store(next.wce)
		lu.swp.Store(next.swp)
		n := c.Nexus
		lu.uaAll(ascModeParametersChanged, &n)
	}
	return nil
}

// checkBlockDescriptor accepts a block descriptor that changes nothing:
// block length equal to the current one, number of blocks zero or the
// current capacity (SBC-3 6.4.2).
func (lu *LogicalUnit) checkBlockDescriptor(data []byte, pos, bdl int, long bool, hdr int) error {
	size := 8
	if long {
		size = 16
	}
	if bdl != size {
		return invalidParam(hdr-1, -1)
	}
	if pos+bdl > len(data) {
		return paramListLengthError()
	}
	d := data[pos : pos+bdl]
	blocks := lu.blocks.Load()
	if long {
		if n := be64(d); n != 0 && n != blocks {
			return invalidParam(pos, -1)
		}
		if be32(d[12:]) != uint32(lu.bs) {
			return invalidParam(pos+12, -1)
		}
		return nil
	}
	if n := be32(d); n != 0 && uint64(n) != min(blocks, 0xffffffff) {
		return invalidParam(pos, -1)
	}
	if be32(d[4:])&0xffffff != uint32(lu.bs) {
		return invalidParam(pos+5, -1)
	}
	return nil
}
