package pdu

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
)

// castagnoli is CRC32C, the iSCSI digest (RFC 7143 11.2.3 and appendix A.4).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Digest returns the CRC32C of b as iSCSI puts it on the wire. The digest is
// sent least significant byte first: RFC 7143 appendix B.4 shows the bytes of
// a known digest; Linux and libiscsi store it little-endian.
func Digest(b ...[]byte) uint32 {
	var c uint32
	for _, p := range b {
		c = crc32.Update(c, castagnoli, p)
	}
	return c
}

// MaxAHSLen is the largest AHS the format can express (255 words).
const MaxAHSLen = 255 * 4

// Reader reads PDUs from a byte stream in two steps, so that a data segment
// can land directly in the buffer of the command it belongs to:
// ReadHeader, then exactly one of ReadData, DiscardData.
//
// A Reader is not safe for concurrent use.
type Reader struct {
	R            io.Reader
	HeaderDigest bool
	DataDigest   bool
	// MaxData is the largest data segment accepted (our
	// MaxRecvDataSegmentLength). Larger segments fail with ErrTooLong
	// before anything is allocated.
	MaxData int

	pending int // data segment length announced by the last header
	scratch [BHSLen + MaxAHSLen + 4]byte
}

// ReadHeader reads the next BHS and AHS into p. p.Data is left untouched;
// the data segment length is p.BHS.DataSegmentLength().
func (rd *Reader) ReadHeader(p *PDU) error {
	if rd.pending != 0 {
		return fmt.Errorf("%w: previous data segment not consumed", ErrMalformed)
	}
	buf := rd.scratch[:BHSLen]
	if _, err := io.ReadFull(rd.R, buf); err != nil {
		return err
	}
	copy(p.BHS[:], buf)
	ahsLen := p.BHS.TotalAHSLength()
	n := BHSLen + ahsLen
	if ahsLen > 0 {
		if _, err := io.ReadFull(rd.R, rd.scratch[BHSLen:n]); err != nil {
			return err
		}
		p.AHS = append(p.AHS[:0], rd.scratch[BHSLen:n]...)
	} else {
		p.AHS = p.AHS[:0]
	}
	if rd.HeaderDigest {
		var d [4]byte
		if _, err := io.ReadFull(rd.R, d[:]); err != nil {
			return err
		}
		if binary.LittleEndian.Uint32(d[:]) != Digest(rd.scratch[:n]) {
			return ErrHeaderDigest
		}
	}
	dl := p.BHS.DataSegmentLength()
	if dl > rd.MaxData {
		return fmt.Errorf("%w: %d > %d", ErrTooLong, dl, rd.MaxData)
	}
	rd.pending = dl
	return nil
}

// ReadData reads the pending data segment into dst, which must be exactly
// DataSegmentLength bytes long, then skips the padding and checks the digest.
func (rd *Reader) ReadData(dst []byte) error {
	if len(dst) != rd.pending {
		return fmt.Errorf("%w: data buffer %d bytes for a %d-byte segment", ErrMalformed, len(dst), rd.pending)
	}
	rd.pending = 0
	if len(dst) == 0 {
		return nil
	}
	if _, err := io.ReadFull(rd.R, dst); err != nil {
		return err
	}
	return rd.trailer(dst)
}

// DiscardData reads and drops the pending data segment (for a PDU that is
// rejected or whose task is gone). The digest is still checked so that a
// corrupted stream is noticed.
func (rd *Reader) DiscardData() error {
	total := rd.pending
	rd.pending = 0
	var c uint32
	for n := total; n > 0; {
		chunk := rd.scratch[:min(n, len(rd.scratch))]
		if _, err := io.ReadFull(rd.R, chunk); err != nil {
			return err
		}
		if rd.DataDigest {
			c = crc32.Update(c, castagnoli, chunk)
		}
		n -= len(chunk)
	}
	if total == 0 {
		return nil
	}
	return rd.trailerCRC(c, Pad(total))
}

func (rd *Reader) trailer(data []byte) error {
	var c uint32
	if rd.DataDigest {
		c = crc32.Update(0, castagnoli, data)
	}
	return rd.trailerCRC(c, Pad(len(data)))
}

func (rd *Reader) trailerCRC(c uint32, pad int) error {
	var t [8]byte
	n := pad
	if rd.DataDigest {
		n += 4
	}
	if n == 0 {
		return nil
	}
	if _, err := io.ReadFull(rd.R, t[:n]); err != nil {
		return err
	}
	if rd.DataDigest {
		c = crc32.Update(c, castagnoli, t[:pad])
		if binary.LittleEndian.Uint32(t[pad:n]) != c {
			return ErrDataDigest
		}
	}
	return nil
}

// ReadPDU reads a whole PDU, allocating its data segment (bounded by MaxData).
// Use it for control PDUs; the data path uses ReadHeader + ReadData.
func (rd *Reader) ReadPDU(p *PDU) error {
	if err := rd.ReadHeader(p); err != nil {
		return err
	}
	return rd.ReadDataInto(p)
}

// ReadDataInto reads the data segment of the PDU whose header p holds into
// p.Data, reusing its capacity.
func (rd *Reader) ReadDataInto(p *PDU) error {
	n := p.BHS.DataSegmentLength()
	if cap(p.Data) >= n {
		p.Data = p.Data[:n]
	} else {
		p.Data = make([]byte, n)
	}
	return rd.ReadData(p.Data)
}

// FrameLen is the size of the scratch buffer Frame needs.
const FrameLen = BHSLen + MaxAHSLen + 4 + 3 + 4

// Frame lays out p for the wire: header is BHS+AHS+header digest, trailer is
// the data padding and data digest. Send header, p.Data, trailer in that
// order (net.Buffers turns this into one writev). Lengths in p.BHS are set
// from p.AHS and p.Data. scratch must be at least FrameLen bytes; header and
// trailer alias it.
func (p *PDU) Frame(scratch []byte, headerDigest, dataDigest bool) (header, trailer []byte, err error) {
	if len(p.AHS)%4 != 0 || len(p.AHS) > MaxAHSLen {
		return nil, nil, errNotMultipleOf4
	}
	if len(p.Data) >= 1<<24 {
		return nil, nil, fmt.Errorf("%w: data segment of %d bytes", ErrTooLong, len(p.Data))
	}
	p.BHS.setLengths(len(p.AHS), len(p.Data))
	n := copy(scratch, p.BHS[:])
	n += copy(scratch[n:], p.AHS)
	if headerDigest {
		binary.LittleEndian.PutUint32(scratch[n:], Digest(scratch[:n]))
		n += 4
	}
	header = scratch[:n]
	t := n
	pad := Pad(len(p.Data))
	clear(scratch[t : t+pad])
	n += pad
	if dataDigest && len(p.Data) > 0 {
		binary.LittleEndian.PutUint32(scratch[n:], Digest(p.Data, scratch[t:t+pad]))
		n += 4
	}
	return header, scratch[t:n], nil
}

// WriteTo writes p to w in one call (convenience for control PDUs and tests).
func (p *PDU) WriteTo(w io.Writer, headerDigest, dataDigest bool) error {
	var scratch [FrameLen]byte
	h, t, err := p.Frame(scratch[:], headerDigest, dataDigest)
	if err != nil {
		return err
	}
	buf := make([]byte, 0, len(h)+len(p.Data)+len(t))
	buf = append(append(append(buf, h...), p.Data...), t...)
	_, err = w.Write(buf)
	return err
}
