package iscsiclient

// Initiator side of the login phase (RFC 7143 sections 6 and 11.12):
//
//	security stage     InitiatorName, SessionType, TargetName, AuthMethod
//	                   [CHAP_A -> CHAP_A, CHAP_I, CHAP_C
//	                    CHAP_N, CHAP_R (, CHAP_I, CHAP_C) -> (CHAP_N, CHAP_R)]
//	operational stage  digests, data segment and burst lengths, R2T policy
//
// CHAP is RFC 1994 with MD5 (CHAP_A=5, the algorithm RFC 7143 12.1.3
// requires): R = MD5(I || secret || C).

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/diskless-boot/diskless/internal/iscsi/pdu"
)

// loginMaxData is the MaxRecvDataSegmentLength in force during login
// (RFC 7143 13.12: the default until declared).
const loginMaxData = 8192

// maxLoginSteps bounds the exchanges of one stage with a target that never
// moves on.
const maxLoginSteps = 8

// LoginError is a login the target refused: the status class and detail
// of its Login Response (RFC 7143 11.13.5), e.g. 0x0201 authentication
// failure, 0x0202 authorization failure, 0x0203 target not found.
type LoginError struct {
	Class, Detail uint8
}

// Status is Class<<8 | Detail, comparable with the pdu.Login* constants.
func (e *LoginError) Status() uint16 { return uint16(e.Class)<<8 | uint16(e.Detail) }

func (e *LoginError) Error() string {
	return fmt.Sprintf("login refused: status 0x%04x (%s)", e.Status(), loginStatusText(e.Status()))
}

func loginStatusText(s uint16) string {
	switch s {
	case pdu.LoginTargetMovedTemp:
		return "target moved temporarily"
	case pdu.LoginInitiatorError:
		return "initiator error"
	case pdu.LoginAuthFailure:
		return "authentication failure"
	case pdu.LoginForbidden:
		return "authorization failure"
	case pdu.LoginTargetNotFound:
		return "target not found"
	case pdu.LoginTargetRemoved:
		return "target removed"
	case pdu.LoginUnsupportedVersion:
		return "unsupported version"
	case pdu.LoginTooManyConnections:
		return "too many connections"
	case pdu.LoginMissingParameter:
		return "missing parameter"
	case pdu.LoginCantIncludeInSession:
		return "can't include in session"
	case pdu.LoginSessionTypeNotSupp:
		return "session type not supported"
	case pdu.LoginSessionDoesNotExist:
		return "session does not exist"
	case pdu.LoginInvalidDuringLogin:
		return "invalid during login"
	case pdu.LoginTargetError:
		return "target error"
	case pdu.LoginServiceUnavailable:
		return "service unavailable"
	case pdu.LoginOutOfResources:
		return "out of resources"
	}
	return "unknown status"
}

// ErrMutualAuth: the target's answer to our CHAP challenge is missing or
// wrong; the login is abandoned.
var ErrMutualAuth = errors.New("target failed mutual CHAP authentication")

// loginState is one login in progress.
type loginState struct {
	s     *Session
	ctx   context.Context
	itt   uint32
	stage pdu.Stage
	// answers are our replies to keys the target offered on its own,
	// sent with the next request.
	answers []pdu.KV
}

// login runs the login phase on s.nc and fills in s.neg, s.tsih and the
// CmdSN window.
func (s *Session) login(ctx context.Context) error {
	s.neg = negotiated{sendSeg: 8192, maxBurst: 262144, firstBurst: 65536, initialR2T: true, immediateData: true} // RFC 7143 13 defaults
	ls := &loginState{s: s, ctx: ctx, itt: s.allocITT()}
	cfg := &s.cfg
	first := []pdu.KV{{Key: "InitiatorName", Value: cfg.Initiator}}
	if s.discovery {
		first = append(first, pdu.KV{Key: "SessionType", Value: "Discovery"})
	} else {
		first = append(first, pdu.KV{Key: "SessionType", Value: "Normal"}, pdu.KV{Key: "TargetName", Value: cfg.Target})
	}
	// With credentials, CHAP is offered first; None too unless the target
	// must prove itself (mutual CHAP), so that one Config serves targets
	// with and without CHAP, and discovery.
	chap, mutual := cfg.CHAPUser != "", cfg.MutualSecret != ""
	switch {
	case mutual:
		first = append(first, pdu.KV{Key: "AuthMethod", Value: "CHAP"})
	case chap:
		first = append(first, pdu.KV{Key: "AuthMethod", Value: "CHAP,None"})
	default:
		first = append(first, pdu.KV{Key: "AuthMethod", Value: pdu.ValueNone})
	}

	// Security stage. Without CHAP the first request asks to move on.
	resp, keys, err := ls.step(pdu.StageOperational, !chap, first)
	if err != nil {
		return err
	}
	if chap {
		switch m := keys["AuthMethod"]; {
		case m == "CHAP":
			if resp, err = ls.chap(); err != nil {
				return err
			}
		case m == pdu.ValueNone && !mutual:
		default:
			return protocolErrorf("AuthMethod answered %q", m)
		}
	}
	for i := 0; !resp.Transit; i++ {
		if i == maxLoginSteps {
			return protocolErrorf("target stays in the security stage")
		}
		if resp, _, err = ls.step(pdu.StageOperational, true, nil); err != nil {
			return err
		}
	}

	// Operational stage.
	ls.stage = pdu.StageOperational
	offer := s.offer()
	for i := 0; i == 0 || !resp.Transit; i++ {
		if i == maxLoginSteps {
			return protocolErrorf("target stays in the operational stage")
		}
		if resp, keys, err = ls.step(pdu.StageFullFeature, true, offer); err != nil {
			return err
		}
		offer = nil
		if err := ls.accept(keys); err != nil {
			return err
		}
	}
	if s.neg.firstBurst > s.neg.maxBurst {
		return protocolErrorf("FirstBurstLength %d above MaxBurstLength %d", s.neg.firstBurst, s.neg.maxBurst)
	}
	if resp.TSIH == 0 {
		return protocolErrorf("final Login Response without a TSIH")
	}
	s.tsih = resp.TSIH
	s.maxCmdSN = resp.MaxCmdSN
	if snLess(resp.MaxCmdSN, resp.ExpCmdSN-1) {
		s.maxCmdSN = resp.ExpCmdSN - 1
	}
	return nil
}

// step sends one Login Request of the current stage asking for nsg (with T
// when transit) and returns the Login Response and its keys, after
// fetching the rest of a response the target continued (C bit).
func (ls *loginState) step(nsg pdu.Stage, transit bool, kvs []pdu.KV) (pdu.LoginResponse, map[string]string, error) {
	s := ls.s
	kvs = append(kvs, ls.answers...)
	ls.answers = nil
	var (
		resp pdu.LoginResponse
		text []byte
	)
	for {
		req := pdu.LoginRequest{Transit: transit, CSG: ls.stage, NSG: nsg, ISID: s.cfg.ISID,
			ITT: ls.itt, CmdSN: s.cmdSN, ExpStatSN: s.expStatSN.Load()}
		if !transit {
			req.NSG = 0
		}
		var p pdu.PDU
		req.Marshal(&p.BHS)
		p.Data = pdu.AppendText(nil, kvs...)
		kvs = nil
		deadline := time.Now().Add(s.cfg.Timeout)
		if d, ok := ls.ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		if ls.ctx.Err() == nil {
			// After a cancel, AfterFunc's deadline in the past stays.
			s.nc.SetDeadline(deadline)
		}
		if err := p.WriteTo(s.nc, false, false); err != nil {
			return resp, nil, err
		}
		if err := s.rd.ReadPDU(&p); err != nil {
			return resp, nil, err
		}
		var err error
		if resp, err = pdu.ParseLoginResponse(&p.BHS); err != nil {
			return resp, nil, protocolErrorf("%s during login", p.BHS.Opcode())
		}
		if resp.Status != pdu.LoginSuccess {
			return resp, nil, &LoginError{Class: uint8(resp.Status >> 8), Detail: uint8(resp.Status)}
		}
		if resp.ITT != ls.itt || resp.ISID != s.cfg.ISID {
			return resp, nil, protocolErrorf("Login Response for ITT %#x ISID %#x", resp.ITT, resp.ISID)
		}
		if resp.VersionActive != 0 {
			return resp, nil, protocolErrorf("Login Response with version %d", resp.VersionActive)
		}
		s.expStatSN.Store(resp.StatSN + 1)
		text = append(text, p.Data...)
		if len(text) > pdu.TextMaxLen {
			return resp, nil, protocolErrorf("login text longer than %d bytes", pdu.TextMaxLen)
		}
		if !resp.Continue {
			break
		}
		// RFC 7143 6.2: fetch the rest with empty requests (without T).
		transit = false
	}
	if resp.CSG != ls.stage || (resp.Transit && (resp.NSG == 2 || resp.NSG <= ls.stage || resp.NSG > nsg)) {
		return resp, nil, protocolErrorf("Login Response moves from %s to %s", resp.CSG, resp.NSG)
	}
	kvs, err := pdu.ParseText(text)
	if err != nil {
		return resp, nil, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	keys := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		keys[kv.Key] = kv.Value
	}
	return resp, keys, nil
}

// chap runs the CHAP exchange after the target chose AuthMethod=CHAP and
// returns the response that ends it.
func (ls *loginState) chap() (pdu.LoginResponse, error) {
	cfg := &ls.s.cfg
	_, keys, err := ls.step(pdu.StageOperational, false, []pdu.KV{{Key: "CHAP_A", Value: "5"}})
	if err != nil {
		return pdu.LoginResponse{}, err
	}
	if keys["CHAP_A"] != "5" {
		return pdu.LoginResponse{}, protocolErrorf("CHAP_A=5 offered, target answered %q", keys["CHAP_A"])
	}
	id, err := pdu.ParseNumericalValue(keys["CHAP_I"])
	if err != nil || id > 255 {
		return pdu.LoginResponse{}, protocolErrorf("malformed CHAP_I %q", keys["CHAP_I"])
	}
	challenge, err := pdu.DecodeBinaryValue(keys["CHAP_C"], 1024)
	if err != nil {
		return pdu.LoginResponse{}, protocolErrorf("malformed CHAP_C")
	}
	r := chapResponse(byte(id), cfg.CHAPSecret, challenge)
	kvs := []pdu.KV{{Key: "CHAP_N", Value: cfg.CHAPUser}, {Key: "CHAP_R", Value: pdu.EncodeHexValue(r)}}
	var myID [1]byte
	var myChallenge [16]byte
	mutual := cfg.MutualSecret != ""
	if mutual {
		rand.Read(myID[:])
		rand.Read(myChallenge[:])
		kvs = append(kvs, pdu.KV{Key: "CHAP_I", Value: strconv.Itoa(int(myID[0]))},
			pdu.KV{Key: "CHAP_C", Value: pdu.EncodeHexValue(myChallenge[:])})
	}
	resp, keys, err := ls.step(pdu.StageOperational, true, kvs)
	if err != nil {
		return resp, err
	}
	if mutual {
		got, err := pdu.DecodeBinaryValue(keys["CHAP_R"], 1024)
		want := chapResponse(myID[0], cfg.MutualSecret, myChallenge[:])
		if err != nil || subtle.ConstantTimeCompare(got, want) != 1 {
			return resp, ErrMutualAuth
		}
		if cfg.MutualUser != "" && keys["CHAP_N"] != cfg.MutualUser {
			return resp, fmt.Errorf("%w: target named itself %q", ErrMutualAuth, keys["CHAP_N"])
		}
	}
	return resp, nil
}

// chapResponse is MD5(id || secret || challenge) (RFC 1994 4.1).
func chapResponse(id byte, secret string, challenge []byte) []byte {
	h := md5.New()
	h.Write([]byte{id})
	h.Write([]byte(secret))
	h.Write(challenge)
	return h.Sum(nil)
}

// offer returns the operational keys we propose (RFC 7143 13).
func (s *Session) offer() []pdu.KV {
	hd := pdu.ValueNone
	if s.cfg.HeaderDigest {
		hd = "CRC32C"
	}
	kvs := []pdu.KV{
		{Key: "HeaderDigest", Value: hd},
		{Key: "DataDigest", Value: pdu.ValueNone},
		{Key: "MaxRecvDataSegmentLength", Value: strconv.Itoa(recvSegLen)},
	}
	if s.discovery {
		return kvs
	}
	return append(kvs,
		pdu.KV{Key: "ErrorRecoveryLevel", Value: "0"},
		pdu.KV{Key: "MaxConnections", Value: "1"},
		pdu.KV{Key: "InitialR2T", Value: pdu.ValueNo},
		pdu.KV{Key: "ImmediateData", Value: pdu.ValueYes},
		pdu.KV{Key: "MaxBurstLength", Value: strconv.Itoa(offerMaxBurst)},
		pdu.KV{Key: "FirstBurstLength", Value: strconv.Itoa(offerFirstBurst)},
		pdu.KV{Key: "MaxOutstandingR2T", Value: strconv.Itoa(offerMaxR2T)},
		pdu.KV{Key: "DataPDUInOrder", Value: pdu.ValueYes},
		pdu.KV{Key: "DataSequenceInOrder", Value: pdu.ValueYes},
		pdu.KV{Key: "DefaultTime2Wait", Value: "0"},
		pdu.KV{Key: "DefaultTime2Retain", Value: "0"},
	)
}

// accept takes the target's answers and declarations. An answer outside
// what we offered is a protocol error; Reject, NotUnderstood and Irrelevant
// leave the RFC default. Keys the target offers on its own are answered
// NotUnderstood with the next request.
func (ls *loginState) accept(keys map[string]string) error {
	s := ls.s
	n := &s.neg
	for k, v := range keys {
		if v == pdu.ValueReject || v == pdu.ValueNotUnderstood || v == pdu.ValueIrrelevant {
			if k == "HeaderDigest" && s.cfg.HeaderDigest {
				return fmt.Errorf("target answered HeaderDigest=CRC32C with %s", v)
			}
			continue
		}
		bad := func() error { return protocolErrorf("target answered %s=%q", k, v) }
		num := func(lo, hi uint64) (uint32, error) {
			x, err := pdu.ParseNumericalValue(v)
			if err != nil || x < lo || x > hi {
				return 0, bad()
			}
			return uint32(x), nil
		}
		var err error
		switch k {
		case "HeaderDigest":
			switch {
			case v == "CRC32C" && s.cfg.HeaderDigest:
				n.headerDigest = true
			case v == pdu.ValueNone && !s.cfg.HeaderDigest:
			default:
				return bad()
			}
		case "DataDigest":
			if v != pdu.ValueNone {
				return bad()
			}
		case "MaxRecvDataSegmentLength": // the target's declaration (13.12)
			n.sendSeg, err = num(512, 1<<24-1)
		case "MaxBurstLength": // Minimum (13.13)
			n.maxBurst, err = num(512, offerMaxBurst)
		case "FirstBurstLength": // Minimum (13.14)
			n.firstBurst, err = num(512, offerFirstBurst)
		case "InitialR2T": // OR (13.10)
			switch v {
			case pdu.ValueYes:
				n.initialR2T = true
			case pdu.ValueNo:
				n.initialR2T = false
			default:
				return bad()
			}
		case "ImmediateData": // AND (13.11)
			switch v {
			case pdu.ValueYes:
				n.immediateData = true
			case pdu.ValueNo:
				n.immediateData = false
			default:
				return bad()
			}
		case "ErrorRecoveryLevel":
			_, err = num(0, 0)
		case "MaxConnections":
			_, err = num(1, 1)
		case "MaxOutstandingR2T":
			_, err = num(1, offerMaxR2T)
		case "DataPDUInOrder", "DataSequenceInOrder":
			// Data-In is placed in order (dataIn) and Data-Out sent in
			// order: only Yes works.
			if v != pdu.ValueYes {
				return bad()
			}
		case "DefaultTime2Wait", "DefaultTime2Retain":
			_, err = num(0, 3600)
		case "TargetAlias", "TargetAddress", "TargetPortalGroupTag",
			"IFMarker", "OFMarker", "iSCSIProtocolLevel", "TaskReporting":
		default:
			ls.answers = append(ls.answers, pdu.KV{Key: k, Value: pdu.ValueNotUnderstood})
		}
		if err != nil {
			return err
		}
	}
	return nil
}
