package iscsiclient

import (
	"context"
	"net"
	"time"

	"github.com/diskless-boot/diskless/internal/iscsi/pdu"
)

// Raw is a session logged in like Dial's whose full feature phase the
// caller drives itself, PDU by PDU: for tests and benchmarks that must send
// what a correct initiator never sends, such as a WRITE whose Data-Out never
// comes (bench/hostile). Nothing answers the target on its own: NOP-In
// pings, R2Ts and the CmdSN window are the caller's. ReadPDU and WritePDU
// may run on two goroutines at once; each alone is not safe for concurrent
// use.
type Raw struct {
	// TSIH is the target's session handle.
	TSIH uint16
	// CmdSN is the CmdSN of the first command to send, MaxCmdSN the
	// target's window after the login (RFC 7143 4.2.2.1), ExpStatSN the
	// StatSN expected next.
	CmdSN, MaxCmdSN, ExpStatSN uint32
	// What was negotiated (RFC 7143 13): the target's
	// MaxRecvDataSegmentLength, FirstBurstLength, MaxBurstLength,
	// InitialR2T and ImmediateData.
	SendSegment, FirstBurst, MaxBurst uint32
	InitialR2T, ImmediateData         bool

	s *Session
}

// DialRaw connects to cfg.Addr and logs in (CHAP and negotiation as Dial)
// and returns the connection at the start of the full feature phase.
func DialRaw(ctx context.Context, cfg Config) (*Raw, error) {
	s, err := connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &Raw{TSIH: s.tsih, CmdSN: s.cmdSN, MaxCmdSN: s.maxCmdSN, ExpStatSN: s.expStatSN.Load(),
		SendSegment: s.neg.sendSeg, FirstBurst: s.neg.firstBurst, MaxBurst: s.neg.maxBurst,
		InitialR2T: s.neg.initialR2T, ImmediateData: s.neg.immediateData, s: s}, nil
}

// Conn is the TCP connection.
func (r *Raw) Conn() net.Conn { return r.s.nc }

// ReadPDU reads the target's next PDU into p, data segment included (up
// to the MaxRecvDataSegmentLength the initiator declared).
func (r *Raw) ReadPDU(p *pdu.PDU) error { return r.s.rd.ReadPDU(p) }

// WritePDU sends p with the negotiated header digest, within the session's
// Config.Timeout.
func (r *Raw) WritePDU(p *pdu.PDU) error {
	r.s.nc.SetWriteDeadline(time.Now().Add(r.s.cfg.Timeout))
	return p.WriteTo(r.s.nc, r.s.neg.headerDigest, false)
}

// Close closes the connection without logging out.
func (r *Raw) Close() error { return r.s.nc.Close() }
