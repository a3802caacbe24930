package iscsiclient

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/diskless-boot/diskless/internal/iscsi/pdu"
)

// SCSI status codes (SAM-5 5.3.1).
const (
	StatusGood                = 0x00
	StatusCheckCondition      = 0x02
	StatusBusy                = 0x08
	StatusReservationConflict = 0x18
	StatusTaskSetFull         = 0x28
)

// Sense keys (SPC-4 4.5.6).
const (
	SenseNotReady       = 0x2
	SenseMediumError    = 0x3
	SenseHardwareError  = 0x4
	SenseIllegalRequest = 0x5
	SenseUnitAttention  = 0x6
	SenseDataProtect    = 0x7
	SenseAbortedCommand = 0xb
	SenseMiscompare     = 0xe
)

// SCSIError is a command that ended with a status other than GOOD. With
// CHECK CONDITION the sense key and additional sense code come from the
// sense data, fixed or descriptor format (SPC-4 4.5).
type SCSIError struct {
	Status    uint8
	SenseKey  uint8
	ASC, ASCQ uint8
	Sense     []byte // the sense data as received
}

func (e *SCSIError) Error() string {
	if e.Status != StatusCheckCondition {
		return fmt.Sprintf("SCSI status %s", statusName(e.Status))
	}
	return fmt.Sprintf("SCSI status CHECK CONDITION, sense key %s, ASC/ASCQ %02xh/%02xh",
		senseKeyName(e.SenseKey), e.ASC, e.ASCQ)
}

func statusName(s uint8) string {
	switch s {
	case StatusBusy:
		return "BUSY"
	case StatusReservationConflict:
		return "RESERVATION CONFLICT"
	case StatusTaskSetFull:
		return "TASK SET FULL"
	case StatusCheckCondition:
		return "CHECK CONDITION"
	}
	return fmt.Sprintf("%#02x", s)
}

func senseKeyName(k uint8) string {
	names := map[uint8]string{
		0: "NO SENSE", 1: "RECOVERED ERROR", SenseNotReady: "NOT READY", SenseMediumError: "MEDIUM ERROR",
		SenseHardwareError: "HARDWARE ERROR", SenseIllegalRequest: "ILLEGAL REQUEST",
		SenseUnitAttention: "UNIT ATTENTION", SenseDataProtect: "DATA PROTECT", 0x8: "BLANK CHECK",
		0xa: "COPY ABORTED", SenseAbortedCommand: "ABORTED COMMAND", SenseMiscompare: "MISCOMPARE",
	}
	if n, ok := names[k]; ok {
		return n
	}
	return fmt.Sprintf("%#x", k)
}

// senseFromSegment takes the sense data out of a SCSI Response data
// segment: SenseLength (2 bytes), then the sense data (RFC 7143 11.4.7).
// An empty segment has none.
func senseFromSegment(seg []byte) ([]byte, bool) {
	if len(seg) == 0 {
		return nil, true
	}
	if len(seg) < 2 {
		return nil, false
	}
	n := int(binary.BigEndian.Uint16(seg))
	if 2+n > len(seg) {
		return nil, false
	}
	return append([]byte(nil), seg[2:2+n]...), true
}

// scsiError decodes the outcome of a command whose status is not GOOD.
func scsiError(status uint8, sense []byte) *SCSIError {
	e := &SCSIError{Status: status, Sense: sense}
	if len(sense) == 0 {
		return e
	}
	switch sense[0] & 0x7f {
	case 0x70, 0x71: // fixed format (SPC-4 4.5.3)
		if len(sense) > 2 {
			e.SenseKey = sense[2] & 0x0f
		}
		if len(sense) > 13 {
			e.ASC, e.ASCQ = sense[12], sense[13]
		}
	case 0x72, 0x73: // descriptor format (SPC-4 4.5.2)
		if len(sense) > 3 {
			e.SenseKey, e.ASC, e.ASCQ = sense[1]&0x0f, sense[2], sense[3]
		}
	}
	return e
}

// maxUARetries bounds how often a command is sent again after UNIT
// ATTENTION; the target queues a bounded number of them per I_T nexus.
const maxUARetries = 8

// Exec runs one SCSI command on the configured LUN: dataOut, when not nil,
// is written; otherwise up to len(dataIn) bytes are read into dataIn. It
// returns the number of bytes read. A status other than GOOD comes back as
// an error wrapping *SCSIError.
func (s *Session) Exec(cdb []byte, dataOut, dataIn []byte) (int, error) {
	if s.discovery {
		return 0, errors.New("iscsiclient: SCSI command on a discovery session")
	}
	if dataOut != nil && dataIn != nil {
		return 0, errors.New("iscsiclient: bidirectional commands are not supported")
	}
	if len(cdb) == 0 || len(cdb) > 16+pdu.MaxAHSLen-4 {
		return 0, fmt.Errorf("iscsiclient: CDB of %d bytes", len(cdb))
	}
	for i := 0; ; i++ {
		n, err := s.exec(cdb, dataOut, dataIn)
		var se *SCSIError
		if i < maxUARetries && !s.cfg.ReportUnitAttention && errors.As(err, &se) && se.SenseKey == SenseUnitAttention {
			continue
		}
		return n, err
	}
}

func (s *Session) exec(cdb []byte, dataOut, dataIn []byte) (int, error) {
	op := commandName(cdb)
	t := newTask(encodeLUN(s.cfg.LUN), dataIn, dataOut)
	res, err := s.run(t, op, false, s.sendCommand(cdb))
	if err != nil {
		return 0, err
	}
	if res.response != 0 {
		return 0, fmt.Errorf("iscsiclient: %s: target failure (iSCSI response %#02x)", op, res.response)
	}
	if res.status != StatusGood && res.status != 0x04 { // 0x04: CONDITION MET
		return 0, fmt.Errorf("iscsiclient: %s: %w", op, scsiError(res.status, res.sense))
	}
	// What arrived must match the residual the status reports (RFC 7143
	// 11.4.5).
	n, want := t.got, len(dataIn)
	if res.underflow {
		want -= int(res.residual)
	}
	if dataIn != nil && n != want {
		return n, fmt.Errorf("iscsiclient: %s: %w: %d of %d bytes with residual %d", op, ErrProtocol, n, len(dataIn), res.residual)
	}
	return n, nil
}

// sendCommand returns the send step of run for a SCSI Command (RFC 7143
// 11.3): immediate data up to FirstBurstLength when ImmediateData=Yes, then
// unsolicited Data-Out up to FirstBurstLength when InitialR2T=No; the rest
// of a write goes as the target solicits it with R2Ts.
func (s *Session) sendCommand(cdb []byte) func(*task, uint32, uint32) error {
	return func(t *task, cmdSN, expStatSN uint32) error {
		m := pdu.SCSICommand{Final: true, Attr: pdu.AttrSimple, LUN: t.lun, ITT: t.itt, CmdSN: cmdSN, ExpStatSN: expStatSN}
		n := copy(m.CDB[:], cdb)
		if n < len(cdb) {
			m.ExtendedCDB = cdb[n:]
		}
		var p pdu.PDU
		var unsolicited uint32
		switch {
		case t.out != nil:
			m.Write = true
			m.ExpectedDataTransferLength = uint32(len(t.out))
			if !s.neg.initialR2T || s.neg.immediateData {
				unsolicited = min(m.ExpectedDataTransferLength, s.neg.firstBurst)
			}
			if s.neg.immediateData {
				p.Data = t.out[:min(unsolicited, s.neg.sendSeg)]
			}
			if s.neg.initialR2T {
				unsolicited = uint32(len(p.Data)) // immediate data only
			}
			m.Final = uint32(len(p.Data)) == unsolicited
		case t.in != nil:
			m.Read = true
			m.ExpectedDataTransferLength = uint32(len(t.in))
		}
		m.Marshal(&p)
		if m.Final {
			return s.write(p)
		}
		if err := s.write(p); err != nil {
			return err
		}
		imm := uint32(len(p.Data))
		return s.sendDataOut(t, pdu.ReservedTag, imm, unsolicited-imm)
	}
}

// encodeLUN puts a LUN into the 8-byte SAM-5 format (4.7): peripheral
// device addressing below 256, flat space addressing above.
func encodeLUN(lun uint64) uint64 {
	if lun < 256 {
		return lun << 48
	}
	return (0x4000 | lun&0x3fff) << 48
}

func decodeLUN(raw uint64) uint64 {
	b0, b1 := byte(raw>>56), byte(raw>>48)
	if b0>>6 == 1 {
		return uint64(b0&0x3f)<<8 | uint64(b1)
	}
	return uint64(b1)
}

func commandName(cdb []byte) string {
	switch cdb[0] {
	case 0x00:
		return "TEST UNIT READY"
	case 0x12:
		return "INQUIRY"
	case 0x88:
		return "READ(16)"
	case 0x8a:
		return "WRITE(16)"
	case 0x91:
		return "SYNCHRONIZE CACHE(16)"
	case 0x9e:
		return "READ CAPACITY(16)"
	case 0xa0:
		return "REPORT LUNS"
	}
	return fmt.Sprintf("SCSI command %#02x", cdb[0])
}

// TestUnitReady sends TEST UNIT READY (SPC-4 6.47).
func (s *Session) TestUnitReady() error {
	_, err := s.Exec(make([]byte, 6), nil, nil)
	return err
}

// ReadCapacity sends READ CAPACITY(16) (SBC-3 5.16) and returns the number
// of logical blocks and the block size, which Read and Write use from then
// on.
func (s *Session) ReadCapacity() (blocks uint64, blockSize uint32, err error) {
	var cdb [16]byte
	cdb[0], cdb[1] = 0x9e, 0x10 // SERVICE ACTION IN(16) / READ CAPACITY(16)
	binary.BigEndian.PutUint32(cdb[10:], 32)
	buf := make([]byte, 32)
	n, err := s.Exec(cdb[:], nil, buf)
	if err != nil {
		return 0, 0, err
	}
	if n < 12 {
		return 0, 0, fmt.Errorf("iscsiclient: READ CAPACITY(16): %d bytes of data", n)
	}
	blocks = binary.BigEndian.Uint64(buf) + 1
	blockSize = binary.BigEndian.Uint32(buf[8:])
	if blockSize == 0 {
		return 0, 0, errors.New("iscsiclient: READ CAPACITY(16): block size 0")
	}
	s.blockSize.Store(blockSize)
	return blocks, blockSize, nil
}

// rw builds the CDB of READ(16) or WRITE(16) (SBC-3 5.8, 5.32) for n bytes
// at lba, asking READ CAPACITY for the block size the first time.
func (s *Session) rw(op byte, lba uint64, n int, fua bool) ([]byte, error) {
	bs := s.blockSize.Load()
	if bs == 0 {
		if _, _, err := s.ReadCapacity(); err != nil {
			return nil, err
		}
		bs = s.blockSize.Load()
	}
	if n == 0 || n%int(bs) != 0 || uint64(n)/uint64(bs) > 0xffffffff {
		return nil, fmt.Errorf("iscsiclient: %d bytes is not a positive number of %d-byte blocks", n, bs)
	}
	cdb := make([]byte, 16)
	cdb[0] = op
	if fua {
		cdb[1] = 0x08
	}
	binary.BigEndian.PutUint64(cdb[2:], lba)
	binary.BigEndian.PutUint32(cdb[10:], uint32(n/int(bs)))
	return cdb, nil
}

// Read reads len(buf) bytes from lba with READ(16); len(buf) is a multiple
// of the block size. The data lands in buf directly.
func (s *Session) Read(lba uint64, buf []byte) error {
	cdb, err := s.rw(0x88, lba, len(buf), false)
	if err != nil {
		return err
	}
	n, err := s.Exec(cdb, nil, buf)
	if err != nil {
		return fmt.Errorf("%w (lba %d)", err, lba)
	}
	if n != len(buf) {
		return fmt.Errorf("iscsiclient: READ(16) lba %d: %d of %d bytes", lba, n, len(buf))
	}
	return nil
}

// Write writes data at lba with WRITE(16), with FUA when fua is set (the
// data is durable when Write returns); len(data) is a multiple of the block
// size.
func (s *Session) Write(lba uint64, data []byte, fua bool) error {
	cdb, err := s.rw(0x8a, lba, len(data), fua)
	if err != nil {
		return err
	}
	if _, err := s.Exec(cdb, data, nil); err != nil {
		return fmt.Errorf("%w (lba %d)", err, lba)
	}
	return nil
}

// SyncCache sends SYNCHRONIZE CACHE(16) for the whole medium (SBC-3 5.22):
// when it returns nil, every write completed before it was sent is durable.
func (s *Session) SyncCache() error {
	cdb := make([]byte, 16)
	cdb[0] = 0x91
	_, err := s.Exec(cdb, nil, nil)
	return err
}

// Inquiry is the standard INQUIRY data (SPC-4 6.6.2) in short.
type Inquiry struct {
	PeripheralType            uint8 // 0 = direct access block device
	Vendor, Product, Revision string
}

// Inquiry sends INQUIRY for the standard data.
func (s *Session) Inquiry() (Inquiry, error) {
	buf := make([]byte, 96)
	cdb := []byte{0x12, 0, 0, 0, byte(len(buf)), 0}
	n, err := s.Exec(cdb, nil, buf)
	if err != nil {
		return Inquiry{}, err
	}
	if n < 36 {
		return Inquiry{}, fmt.Errorf("iscsiclient: INQUIRY: %d bytes of data", n)
	}
	trim := func(b []byte) string { return strings.TrimRight(string(b), " ") }
	return Inquiry{PeripheralType: buf[0] & 0x1f, Vendor: trim(buf[8:16]), Product: trim(buf[16:32]), Revision: trim(buf[32:36])}, nil
}

// ReportLUNs sends REPORT LUNS (SPC-4 6.33) and returns the LUN numbers.
func (s *Session) ReportLUNs() ([]uint64, error) {
	buf := make([]byte, 8+8*512)
	cdb := make([]byte, 12)
	cdb[0] = 0xa0
	binary.BigEndian.PutUint32(cdb[6:], uint32(len(buf)))
	n, err := s.Exec(cdb, nil, buf)
	if err != nil {
		return nil, err
	}
	if n < 8 {
		return nil, fmt.Errorf("iscsiclient: REPORT LUNS: %d bytes of data", n)
	}
	l := min(int(binary.BigEndian.Uint32(buf)), n-8)
	luns := make([]uint64, 0, l/8)
	for off := 8; off+8 <= 8+l; off += 8 {
		luns = append(luns, decodeLUN(binary.BigEndian.Uint64(buf[off:])))
	}
	return luns, nil
}
