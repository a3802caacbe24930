package iscsi

import (
	"encoding/binary"
	"testing"

	"github.com/diskless-boot/diskless/internal/iscsi/pdu"
	"github.com/diskless-boot/diskless/internal/scsi"
)

// taskMgmt sends an immediate Task Management Function Request for lun
// and returns the Response field of the answer (RFC 7143 11.6.1).
func (in *testInitiator) taskMgmt(fn uint8, lun uint64) uint8 {
	in.t.Helper()
	in.itt++
	m := pdu.TaskMgmtRequest{Immediate: true, Function: fn, LUN: encodeLUN(lun), ITT: in.itt,
		ReferencedTag: pdu.ReservedTag, CmdSN: in.cmdSN, ExpStatSN: in.expStatSN}
	var p pdu.PDU
	m.Marshal(&p.BHS)
	in.sendPDU(&p)
	r := in.readPDU()
	if r.BHS.Opcode() != pdu.OpTaskMgmtResp || r.BHS.ITT() != in.itt {
		in.t.Fatalf("got %s ITT %#x, want the TMF response to ITT %#x", r.BHS.Opcode(), r.BHS.ITT(), in.itt)
	}
	in.expStatSN = binary.BigEndian.Uint32(r.BHS[24:]) + 1
	return r.BHS[2]
}

// TestResetUnitAttentionOnEveryNexus is libiscsi's MultipathIO.Reset:
// two initiators on one LU take turns sending LOGICAL UNIT RESET, and after
// each, the next command on every path, the resetting one included, ends
// in BUS DEVICE RESET FUNCTION OCCURRED (SAM-5 6.3.3 c: a unit attention
// for every I_T nexus), and the one after that in GOOD. Multipath
// initiators rely on it to learn that the LU dropped their reservations,
// PREVENT and mode page changes, whichever path reset it. TARGET WARM
// RESET, a logical unit reset of each LU, does the same.
func TestResetUnitAttentionOnEveryNexus(t *testing.T) {
	for _, tc := range []struct {
		name string
		fn   uint8
	}{{"LUN reset", pdu.TMFLogicalUnitReset}, {"target warm reset", pdu.TMFTargetWarmReset}} {
		t.Run(tc.name, func(t *testing.T) {
			_, addr := startTarget(t, nil)
			var paths []*testInitiator
			for _, name := range []string{testInitiator1, "iqn.2026-11.org.example:client2"} {
				in := dialInitiator(t, addr)
				if st := in.login(loginOpts{initiator: name, target: testIQN}); st != 0 {
					t.Fatalf("login %s: status 0x%04x", name, st)
				}
				in.clearUnitAttention()
				paths = append(paths, in)
			}
			tur := []byte{0x00, 0, 0, 0, 0, 0}
			for i, resetter := range paths {
				if resp := resetter.taskMgmt(tc.fn, 0); resp != pdu.TMFComplete {
					t.Fatalf("%s through path %d: response %d", tc.name, i, resp)
				}
				for j, in := range paths {
					st, sense, _ := in.command(0, tur, nil, 0)
					if st != uint8(scsi.StatusCheckCondition) || len(sense) < 14 ||
						sense[2]&0x0f != 0x06 || sense[12] != 0x29 || sense[13] != 0x03 {
						t.Errorf("%s through path %d: TUR on path %d: status %#x sense %x, want UNIT ATTENTION 29h/03h",
							tc.name, i, j, st, sense)
					}
					if st, sense, _ := in.command(0, tur, nil, 0); st != 0 {
						t.Errorf("%s through path %d: second TUR on path %d: status %#x sense %x", tc.name, i, j, st, sense)
					}
				}
			}
		})
	}
}
