package iscsi

import (
	"bufio"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/iscsi/pdu"
)

// testInitiator is a small iSCSI initiator for exercising the target
// in-process. It is deliberately strict: every response it reads is
// checked against what RFC 7143 requires.
type testInitiator struct {
	t         *testing.T
	nc        net.Conn
	rd        pdu.Reader
	cmdSN     uint32
	expStatSN uint32
	itt       uint32
	isid      uint64
	tsih      uint16
	mrdsl     uint32 // the target's declared MaxRecvDataSegmentLength
	keys      map[string]string
	// Digests in force after login.
	headerDigest, dataDigest bool
}

type loginOpts struct {
	initiator, target string
	discovery         bool
	chapUser, chapSec string
	mutualUser        string
	mutualSec         string
	// hangUpOnBadMutual: a target answer to the mutual challenge that
	// does not match mutualSec closes the connection (as iPXE and
	// open-iscsi do) and login returns statusHungUp, instead of failing
	// the test.
	hangUpOnBadMutual bool
	isid              uint64
	ops               []pdu.KV
}

func dialInitiator(t *testing.T, addr string) *testInitiator {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	t.Cleanup(func() { nc.Close() })
	return &testInitiator{t: t, nc: nc, rd: pdu.Reader{R: bufio.NewReader(nc), MaxData: 1 << 24},
		isid: 0x800000001234, keys: map[string]string{}, mrdsl: 8192}
}

func (in *testInitiator) sendPDU(p *pdu.PDU) {
	in.t.Helper()
	if err := p.WriteTo(in.nc, in.headerDigest, in.dataDigest); err != nil {
		in.t.Fatal(err)
	}
}

func (in *testInitiator) readPDU() *pdu.PDU {
	in.t.Helper()
	var p pdu.PDU
	if err := in.rd.ReadPDU(&p); err != nil {
		in.t.Fatalf("read: %v", err)
	}
	return &p
}

// loginStep sends one Login Request and returns the response and its keys.
func (in *testInitiator) loginStep(csg, nsg pdu.Stage, transit bool, kvs ...pdu.KV) (pdu.LoginResponse, map[string]string) {
	in.t.Helper()
	req := pdu.LoginRequest{Transit: transit, CSG: csg, NSG: nsg, ISID: in.isid, TSIH: in.tsih,
		ITT: in.itt, CmdSN: in.cmdSN, ExpStatSN: in.expStatSN}
	var p pdu.PDU
	req.Marshal(&p.BHS)
	p.Data = pdu.AppendText(nil, kvs...)
	in.sendPDU(&p)
	r := in.readPDU()
	resp, err := pdu.ParseLoginResponse(&r.BHS)
	if err != nil {
		in.t.Fatalf("login response: %v (opcode %s)", err, r.BHS.Opcode())
	}
	in.expStatSN = resp.StatSN + 1
	got := map[string]string{}
	kv, err := pdu.ParseText(r.Data)
	if err != nil {
		in.t.Fatalf("login response text: %v", err)
	}
	for _, k := range kv {
		got[k.Key] = k.Value
		in.keys[k.Key] = k.Value
	}
	return resp, got
}

// statusHungUp is what login returns when the initiator itself gave up.
const statusHungUp = 0xffff

// login logs in; it returns the final status (0 on success).
func (in *testInitiator) login(o loginOpts) uint16 {
	in.t.Helper()
	if o.isid != 0 {
		in.isid = o.isid
	}
	first := []pdu.KV{{Key: "InitiatorName", Value: o.initiator}}
	if o.discovery {
		first = append(first, pdu.KV{Key: "SessionType", Value: "Discovery"})
	} else {
		first = append(first, pdu.KV{Key: "TargetName", Value: o.target})
	}
	auth := "None"
	if o.chapUser != "" {
		auth = "CHAP,None"
	}
	first = append(first, pdu.KV{Key: "AuthMethod", Value: auth})
	resp, keys := in.loginStep(pdu.StageSecurity, pdu.StageOperational, o.chapUser == "", first...)
	if resp.Status != 0 {
		return resp.Status
	}
	if o.chapUser != "" {
		if keys["AuthMethod"] != "CHAP" {
			in.t.Fatalf("AuthMethod answer %q", keys["AuthMethod"])
		}
		resp, keys = in.loginStep(pdu.StageSecurity, pdu.StageOperational, false, pdu.KV{Key: "CHAP_A", Value: "5"})
		if resp.Status != 0 {
			return resp.Status
		}
		id, _ := parseUint8(keys["CHAP_I"])
		chal, _ := hex.DecodeString(strings.TrimPrefix(keys["CHAP_C"], "0x"))
		sum := md5.Sum(append(append([]byte{id}, o.chapSec...), chal...))
		kv := []pdu.KV{{Key: "CHAP_N", Value: o.chapUser}, {Key: "CHAP_R", Value: "0x" + hex.EncodeToString(sum[:])}}
		mutualChal := []byte("0123456789abcdef")
		if o.mutualUser != "" {
			kv = append(kv, pdu.KV{Key: "CHAP_I", Value: "77"}, pdu.KV{Key: "CHAP_C", Value: "0x" + hex.EncodeToString(mutualChal)})
		}
		resp, keys = in.loginStep(pdu.StageSecurity, pdu.StageOperational, true, kv...)
		if resp.Status != 0 {
			return resp.Status
		}
		if o.mutualUser != "" {
			want := md5.Sum(append(append([]byte{77}, o.mutualSec...), mutualChal...))
			if keys["CHAP_N"] != o.mutualUser || keys["CHAP_R"] != "0x"+hex.EncodeToString(want[:]) {
				if o.hangUpOnBadMutual {
					in.nc.Close()
					return statusHungUp
				}
				in.t.Fatalf("mutual CHAP answer N=%q R=%q", keys["CHAP_N"], keys["CHAP_R"])
			}
		}
		if !resp.Transit {
			in.t.Fatalf("target did not leave the security stage after CHAP")
		}
	}
	ops := o.ops
	if ops == nil {
		ops = []pdu.KV{{Key: "HeaderDigest", Value: "None"}, {Key: "DataDigest", Value: "None"},
			{Key: "MaxRecvDataSegmentLength", Value: "262144"}}
		if !o.discovery {
			ops = append(ops, pdu.KV{Key: "InitialR2T", Value: "No"}, pdu.KV{Key: "ImmediateData", Value: "Yes"},
				pdu.KV{Key: "MaxBurstLength", Value: "262144"}, pdu.KV{Key: "FirstBurstLength", Value: "65536"},
				pdu.KV{Key: "MaxOutstandingR2T", Value: "1"}, pdu.KV{Key: "ErrorRecoveryLevel", Value: "0"})
		}
	}
	resp, _ = in.loginStep(pdu.StageOperational, pdu.StageFullFeature, true, ops...)
	if resp.Status != 0 {
		return resp.Status
	}
	if !resp.Transit || resp.NSG != pdu.StageFullFeature || resp.TSIH == 0 {
		in.t.Fatalf("final login response %+v", resp)
	}
	in.tsih = resp.TSIH
	fmt.Sscan(in.keys["MaxRecvDataSegmentLength"], &in.mrdsl)
	in.headerDigest = in.keys["HeaderDigest"] == "CRC32C"
	in.dataDigest = in.keys["DataDigest"] == "CRC32C"
	in.rd.HeaderDigest, in.rd.DataDigest = in.headerDigest, in.dataDigest
	return 0
}

func parseUint8(s string) (byte, error) {
	var v int
	_, err := fmt.Sscan(s, &v)
	return byte(v), err
}

// command sends a SCSI command with optional data-out (immediate data up to
// FirstBurstLength, then answering R2Ts) and returns status, sense, data-in.
func (in *testInitiator) command(lun uint64, cdb []byte, dataOut []byte, readLen uint32) (status uint8, sense, dataIn []byte) {
	in.t.Helper()
	in.itt++
	m := pdu.SCSICommand{Final: true, Attr: pdu.AttrSimple, LUN: encodeLUN(lun), ITT: in.itt,
		CmdSN: in.cmdSN, ExpStatSN: in.expStatSN}
	in.cmdSN++
	copy(m.CDB[:], cdb)
	var p pdu.PDU
	if dataOut != nil {
		m.Write = true
		m.ExpectedDataTransferLength = uint32(len(dataOut))
		fb := 65536
		fmt.Sscan(in.keys["FirstBurstLength"], &fb)
		imm := min(len(dataOut), fb, int(in.mrdsl))
		p.Data = dataOut[:imm]
	} else if readLen > 0 {
		m.Read = true
		m.ExpectedDataTransferLength = readLen
	}
	m.Marshal(&p)
	in.sendPDU(&p)
	for {
		r := in.readPDU()
		switch r.BHS.Opcode() {
		case pdu.OpR2T:
			r2t, _ := pdu.ParseR2T(&r.BHS)
			off, end := r2t.BufferOffset, r2t.BufferOffset+r2t.DesiredDataTransferLength
			var sn uint32
			for off < end {
				n := min(end-off, in.mrdsl)
				d := pdu.DataOut{Final: off+n == end, LUN: m.LUN, ITT: m.ITT, TTT: r2t.TTT,
					ExpStatSN: in.expStatSN, DataSN: sn, BufferOffset: off}
				var dp pdu.PDU
				d.Marshal(&dp.BHS)
				dp.Data = dataOut[off : off+n]
				in.sendPDU(&dp)
				off += n
				sn++
			}
		case pdu.OpDataIn:
			d, _ := pdu.ParseDataIn(&r.BHS)
			if int(d.BufferOffset) != len(dataIn) {
				in.t.Fatalf("Data-In offset %d, have %d", d.BufferOffset, len(dataIn))
			}
			dataIn = append(dataIn, r.Data...)
			if d.HasStatus {
				in.expStatSN = d.StatSN + 1
				return d.Status, nil, dataIn
			}
		case pdu.OpSCSIResponse:
			resp, _ := pdu.ParseSCSIResponse(&r.BHS)
			in.expStatSN = resp.StatSN + 1
			if len(r.Data) >= 2 {
				n := int(binary.BigEndian.Uint16(r.Data))
				sense = r.Data[2 : 2+n]
			}
			return resp.Status, sense, dataIn
		default:
			in.t.Fatalf("unexpected %s during command", r.BHS.Opcode())
		}
	}
}

func (in *testInitiator) logout() {
	in.t.Helper()
	in.itt++
	m := pdu.LogoutRequest{Immediate: true, Reason: pdu.LogoutCloseSession, ITT: in.itt, CmdSN: in.cmdSN, ExpStatSN: in.expStatSN}
	var p pdu.PDU
	m.Marshal(&p.BHS)
	in.sendPDU(&p)
	r := in.readPDU()
	resp, err := pdu.ParseLogoutResponse(&r.BHS)
	if err != nil || resp.Response != pdu.LogoutSuccess {
		in.t.Fatalf("logout: %v %+v", err, resp)
	}
}

// encodeLUN is the inverse of decodeLUN.
func encodeLUN(lun uint64) uint64 {
	if lun < 256 {
		return lun << 48
	}
	return (0x4000 | lun&0x3fff) << 48
}
