package iscsiclient

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"

	"github.com/diskless-boot/diskless/internal/iscsi"
	"github.com/diskless-boot/diskless/internal/iscsi/pdu"
)

// TestDialRaw drives a WRITE by hand over a CHAP login: the command without
// data, the target's R2T, the Data-Out it asked for, the status - and the
// data lands on the disk.
func TestDialRaw(t *testing.T) {
	cred := iscsi.Credentials{User: "host-a", Secret: "initiator-secret"}
	ts := startServer(t, iscsi.Config{}, targetSpec{name: iqn1, chap: &cred})
	r, err := DialRaw(context.Background(), Config{Addr: ts.addr, Initiator: hostA, Target: iqn1,
		CHAPUser: cred.User, CHAPSecret: cred.Secret})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.TSIH == 0 || r.SendSegment == 0 || r.MaxCmdSN < r.CmdSN {
		t.Fatalf("login state %+v", r)
	}
	// TEST UNIT READY takes the unit attention every new nexus starts
	// with (SAM-5 5.14): CHECK CONDITION.
	tur := pdu.SCSICommand{Final: true, Attr: pdu.AttrSimple, ITT: 6, CmdSN: r.CmdSN, ExpStatSN: r.ExpStatSN}
	var p pdu.PDU
	tur.Marshal(&p)
	if err := r.WritePDU(&p); err != nil {
		t.Fatal(err)
	}
	if err := r.ReadPDU(&p); err != nil {
		t.Fatal(err)
	}
	if m, err := pdu.ParseSCSIResponse(&p.BHS); err != nil || m.ITT != 6 {
		t.Fatalf("TEST UNIT READY answered with %s", p.BHS.Opcode())
	}
	const lba, blocks = 8, 4
	data := bytes.Repeat([]byte("raw!"), blocks*512/4)
	cmd := pdu.SCSICommand{Final: true, Write: true, Attr: pdu.AttrSimple, ITT: 7,
		ExpectedDataTransferLength: uint32(len(data)), CmdSN: r.CmdSN + 1, ExpStatSN: r.ExpStatSN + 1}
	cmd.CDB[0] = 0x2a // WRITE(10)
	binary.BigEndian.PutUint32(cmd.CDB[2:], lba)
	binary.BigEndian.PutUint16(cmd.CDB[7:], blocks)
	p = pdu.PDU{} // no data: it all waits for the R2T
	cmd.Marshal(&p)
	if err := r.WritePDU(&p); err != nil {
		t.Fatal(err)
	}
	for {
		if err := r.ReadPDU(&p); err != nil {
			t.Fatal(err)
		}
		switch p.BHS.Opcode() {
		case pdu.OpR2T:
			m, _ := pdu.ParseR2T(&p.BHS)
			end := m.BufferOffset + m.DesiredDataTransferLength
			if m.ITT != 7 || end > uint32(len(data)) {
				t.Fatalf("R2T %+v", m)
			}
			d := pdu.DataOut{Final: true, ITT: 7, TTT: m.TTT, BufferOffset: m.BufferOffset}
			out := pdu.PDU{Data: data[m.BufferOffset:end]}
			d.Marshal(&out.BHS)
			if err := r.WritePDU(&out); err != nil {
				t.Fatal(err)
			}
		case pdu.OpSCSIResponse:
			m, _ := pdu.ParseSCSIResponse(&p.BHS)
			if m.ITT != 7 || m.Status != StatusGood {
				t.Fatalf("SCSI Response %+v", m)
			}
			if got := ts.image(t, iqn1, lba*512, len(data)); !bytes.Equal(got, data) {
				t.Fatalf("the disk holds %q...", got[:16])
			}
			return
		default:
			t.Fatalf("unexpected %s", p.BHS.Opcode())
		}
	}
}
