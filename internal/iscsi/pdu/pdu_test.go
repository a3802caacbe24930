package pdu

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
)

// RFC 3720 appendix B.4 (carried into RFC 7143): 32 bytes of zeros have
// the CRC32C aa 36 91 8a on the wire.
func TestDigestKnownAnswer(t *testing.T) {
	var b [4]byte
	d := Digest(make([]byte, 32))
	b[0], b[1], b[2], b[3] = byte(d), byte(d>>8), byte(d>>16), byte(d>>24)
	if got := hex.EncodeToString(b[:]); got != "aa36918a" {
		t.Fatalf("CRC32C of 32 zero bytes on the wire = %s, want aa36918a", got)
	}
	ones := bytes.Repeat([]byte{0xff}, 32)
	d = Digest(ones)
	b[0], b[1], b[2], b[3] = byte(d), byte(d>>8), byte(d>>16), byte(d>>24)
	if got := hex.EncodeToString(b[:]); got != "43aba862" {
		t.Fatalf("CRC32C of 32 0xff bytes on the wire = %s, want 43aba862", got)
	}
}

// A first Login Request laid out the way iPXE builds it (from iPXE's
// iscsi.c layout: T=1 CSG=0 NSG=1, ISID type 0x80 IANA enterprise).
const ipxeLoginHex = "4381000000000054" + "8000e74b00000000" + "00000000" + "00000000" +
	"00000000" + "00000000" + "0000000000000000" + "0000000000000000"

func TestParseLoginRequestGolden(t *testing.T) {
	raw, _ := hex.DecodeString(ipxeLoginHex)
	var h BHS
	copy(h[:], raw)
	m, err := ParseLoginRequest(&h)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Transit || m.Continue || m.CSG != StageSecurity || m.NSG != StageOperational {
		t.Errorf("flags: %+v", m)
	}
	if m.ISID != 0x8000e74b0000 || m.TSIH != 0 || h.DataSegmentLength() != 0x54 {
		t.Errorf("ISID %x TSIH %d DSL %d", m.ISID, m.TSIH, h.DataSegmentLength())
	}
	var again BHS
	m.Marshal(&again)
	again.setLengths(0, 0x54)
	if again != h {
		t.Errorf("round trip:\n got %x\nwant %x", again, h)
	}
}

func TestSCSICommandRoundTrip(t *testing.T) {
	m := SCSICommand{Final: true, Read: true, Attr: AttrSimple, LUN: 1 << 48, ITT: 7,
		ExpectedDataTransferLength: 4096, CmdSN: 9, ExpStatSN: 3}
	m.CDB[0] = 0x28
	var p PDU
	m.Marshal(&p)
	got, err := ParseSCSICommand(&p)
	if err != nil {
		t.Fatal(err)
	}
	if got.CDB != m.CDB || got.ITT != 7 || got.CmdSN != 9 || !got.Read || got.Write || got.LUN != 1<<48 {
		t.Fatalf("round trip: %+v", got)
	}
	// Extended CDB (32-byte CDB: 16 in the BHS, 16 in the AHS).
	m.ExtendedCDB = bytes.Repeat([]byte{0xab}, 16)
	m.Marshal(&p)
	if len(p.AHS) != 20 {
		t.Fatalf("AHS length %d, want 20", len(p.AHS))
	}
	got, err = ParseSCSICommand(&p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.FullCDB()[16:], m.ExtendedCDB) || len(got.FullCDB()) != 32 {
		t.Fatalf("extended CDB: %x", got.FullCDB())
	}
}

// The target-side PDUs an initiator decodes survive Marshal and Parse.
func TestInitiatorSideRoundTrip(t *testing.T) {
	tr := TextResponse{Continue: true, LUN: 1 << 48, ITT: 3, TTT: 9, StatSN: 4, ExpCmdSN: 5, MaxCmdSN: 6}
	var h BHS
	tr.Marshal(&h)
	if got, err := ParseTextResponse(&h); err != nil || got != tr {
		t.Errorf("Text Response: %+v %v, want %+v", got, err, tr)
	}
	rj := Reject{Reason: RejectProtocolError, StatSN: 7, ExpCmdSN: 8, MaxCmdSN: 9, DataSN: 1}
	rj.Marshal(&h)
	if got, err := ParseReject(&h); err != nil || got != rj {
		t.Errorf("Reject: %+v %v, want %+v", got, err, rj)
	}
	if _, err := ParseReject(&BHS{}); !errors.Is(err, ErrWrongOpcode) {
		t.Errorf("Reject from a NOP-Out header: %v", err)
	}
}

func TestBadAHSRejected(t *testing.T) {
	var p PDU
	(&SCSICommand{}).Marshal(&p)
	for _, ahs := range [][]byte{
		{0, 0xff, 1, 0},          // length past end
		{0, 1, 1, 0},             // extended CDB too short
		{0, 5, 9, 0, 0, 0, 0, 0}, // unknown type
		{0, 1},                   // truncated
		{0, 0, 1, 0},             // length 0 (used to panic slicing [4:3])
		{0, 0, 9, 0},             // length 0, unknown type
	} {
		p.AHS = ahs
		if _, err := ParseSCSICommand(&p); !errors.Is(err, ErrMalformed) {
			t.Errorf("AHS %x: err %v, want ErrMalformed", ahs, err)
		}
	}
}

func TestFrameAndReadBack(t *testing.T) {
	for _, digests := range []bool{false, true} {
		var p PDU
		(&NOPOut{ITT: 5, TTT: ReservedTag, CmdSN: 1}).Marshal(&p.BHS)
		p.Data = []byte("hello") // 5 bytes: 3 bytes of padding
		var w bytes.Buffer
		if err := p.WriteTo(&w, digests, digests); err != nil {
			t.Fatal(err)
		}
		want := 48 + 8
		if digests {
			want += 8
		}
		if w.Len() != want {
			t.Fatalf("digests=%v: %d bytes on the wire, want %d", digests, w.Len(), want)
		}
		rd := Reader{R: &w, HeaderDigest: digests, DataDigest: digests, MaxData: 8192}
		var q PDU
		if err := rd.ReadPDU(&q); err != nil {
			t.Fatal(err)
		}
		if string(q.Data) != "hello" || q.BHS.ITT() != 5 {
			t.Fatalf("read back %q itt %d", q.Data, q.BHS.ITT())
		}
	}
}

func TestReaderDetectsCorruption(t *testing.T) {
	var p PDU
	(&NOPOut{ITT: 5}).Marshal(&p.BHS)
	p.Data = []byte("ping data")
	var w bytes.Buffer
	p.WriteTo(&w, true, true)
	wire := w.Bytes()
	for i, wantErr := range map[int]error{3: ErrHeaderDigest, 60: ErrDataDigest} {
		b := append([]byte(nil), wire...)
		b[i] ^= 1
		rd := Reader{R: bytes.NewReader(b), HeaderDigest: true, DataDigest: true, MaxData: 8192}
		var q PDU
		if err := rd.ReadPDU(&q); !errors.Is(err, wantErr) {
			t.Errorf("flip byte %d: err %v, want %v", i, err, wantErr)
		}
	}
}

func TestReaderCapsDataBeforeAllocating(t *testing.T) {
	var h BHS
	h.startFlags(OpNOPOut, true, 0)
	h.setLengths(0, 1<<24-1)
	rd := Reader{R: bytes.NewReader(h[:]), MaxData: 8192}
	var q PDU
	if err := rd.ReadPDU(&q); !errors.Is(err, ErrTooLong) {
		t.Fatalf("err %v, want ErrTooLong", err)
	}
	if cap(q.Data) != 0 {
		t.Fatalf("allocated %d bytes for a refused segment", cap(q.Data))
	}
}

func TestDiscardDataKeepsStreamInSync(t *testing.T) {
	var w bytes.Buffer
	for i, d := range []string{"abcdefg", "x"} {
		var p PDU
		(&NOPOut{ITT: uint32(i)}).Marshal(&p.BHS)
		p.Data = []byte(d)
		p.WriteTo(&w, false, true)
	}
	rd := Reader{R: &w, DataDigest: true, MaxData: 8192}
	var q PDU
	if err := rd.ReadHeader(&q); err != nil {
		t.Fatal(err)
	}
	if err := rd.DiscardData(); err != nil {
		t.Fatal(err)
	}
	if err := rd.ReadPDU(&q); err != nil || string(q.Data) != "x" || q.BHS.ITT() != 1 {
		t.Fatalf("after discard: %v %q", err, q.Data)
	}
	if err := rd.ReadPDU(&q); err != io.EOF {
		t.Fatalf("at end: %v", err)
	}
}

func TestOpcodeString(t *testing.T) {
	if OpR2T.String() != "R2T" || !strings.Contains(Opcode(0x1e).String(), "0x1e") {
		t.Fatal(OpR2T.String(), Opcode(0x1e).String())
	}
}

// FuzzReadPDU feeds arbitrary bytes to the reader and every header parser:
// nothing may panic, and no data segment larger than MaxData is accepted.
func FuzzReadPDU(f *testing.F) {
	raw, _ := hex.DecodeString(ipxeLoginHex)
	f.Add(append(raw, make([]byte, 0x54)...), false, false)
	var p PDU
	(&SCSICommand{Final: true, Write: true, ExpectedDataTransferLength: 512, ExtendedCDB: []byte{1, 2, 3}}).Marshal(&p)
	p.Data = make([]byte, 512)
	var w bytes.Buffer
	p.WriteTo(&w, true, true)
	f.Add(w.Bytes(), true, true)
	// An AHS whose length field is 0.
	p.AHS, p.Data = []byte{0, 0, 1, 0}, nil
	w.Reset()
	p.WriteTo(&w, false, false)
	f.Add(w.Bytes(), false, false)
	f.Fuzz(func(t *testing.T, b []byte, hd, dd bool) {
		rd := Reader{R: bytes.NewReader(b), HeaderDigest: hd, DataDigest: dd, MaxData: 4096}
		for i := 0; i < 4; i++ {
			var q PDU
			if err := rd.ReadPDU(&q); err != nil {
				return
			}
			if len(q.Data) > 4096 {
				t.Fatalf("accepted %d-byte segment", len(q.Data))
			}
			h := &q.BHS
			ParseSCSICommand(&q)
			ParseDataOut(h)
			ParseLoginRequest(h)
			ParseTextRequest(h)
			ParseLogoutRequest(h)
			ParseNOPOut(h)
			ParseTaskMgmtRequest(h)
			ParseSNACKRequest(h)
			ParseTextResponse(h)
			ParseReject(h)
		}
	})
}
