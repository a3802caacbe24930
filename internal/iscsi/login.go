package iscsi

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/diskless-boot/diskless/internal/iscsi/pdu"
)

// maxLoginText bounds the text keys of one login stage, across Continue
// PDUs, so a peer cannot make the target buffer without limit.
const maxLoginText = pdu.TextMaxLen

// loginError fails the login with an iSCSI status (RFC 7143 11.13.5).
type loginError struct {
	status uint16
	err    error
}

func (e *loginError) Error() string {
	return fmt.Sprintf("login status 0x%04x: %v", e.status, e.err)
}

func (e *loginError) Unwrap() error { return e.err }

// authFailed reports whether err ends a login for authentication: CHAP
// refused either way.
func authFailed(err error) bool {
	var le *loginError
	var ae *AuthError
	return errors.As(err, &ae) || errors.Is(err, errMutualRefused) ||
		errors.As(err, &le) && le.status == pdu.LoginAuthFailure
}

func loginFail(status uint16, format string, args ...any) error {
	return &loginError{status: status, err: fmt.Errorf(format, args...)}
}

// loginState is the target's side of one login (RFC 7143 6 and 11.12).
type loginState struct {
	c     *conn
	first bool

	initiatorName string
	alias         string
	discovery     bool
	target        *Target
	isid          uint64
	tsih          uint16
	cid           uint16
	itt           uint32
	cmdSN         uint32

	authMethod string // "" until negotiated
	authDone   bool
	chap       *CHAPAuthenticator
	neg        *Negotiator
}

// errMutualRefused: the initiator hung up right after the target answered
// its mutual CHAP challenge - the one sign a target gets that the initiator
// holds another target secret than the target's own (iPXE and open-iscsi
// close without a word). Said plainly, as the boot stops there.
var errMutualRefused = errors.New("the initiator closed the connection after the target's mutual CHAP answer: " +
	"it holds another target secret (mutual CHAP) for this target than the server does")

// login runs the login phase. On success the connection is in the full
// feature phase with c.sess and c.params set.
func (c *conn) login() (err error) {
	ls := &loginState{c: c, first: true}
	if hook := c.srv.cfg.OnLoginFailed; hook != nil {
		defer func() {
			if err != nil && ls.target != nil && !ls.discovery {
				hook(LoginFailure{Initiator: ls.initiatorName, ISID: ls.isid, Target: ls.target.Name, Remote: c.nc.RemoteAddr(),
					Auth: authFailed(err), Err: err})
			}
		}()
	}
	var (
		p    pdu.PDU
		text []byte
	)
	for {
		if err := c.rd.ReadPDU(&p); err != nil {
			if errors.Is(err, io.EOF) && ls.chap != nil && ls.chap.AnsweredMutual() {
				return fmt.Errorf("%w (initiator %s, target %s)", errMutualRefused, ls.initiatorName, ls.target.Name)
			}
			return err
		}
		if p.BHS.Opcode() != pdu.OpLoginReq {
			// Anything but a Login Request before the full feature
			// phase is a protocol error: close (RFC 7143 6.1).
			return fmt.Errorf("%s during login", p.BHS.Opcode())
		}
		req, _ := pdu.ParseLoginRequest(&p.BHS)
		if len(text)+len(p.Data) > maxLoginText {
			return ls.fail(req, loginFail(pdu.LoginInitiatorError, "login text longer than %d bytes", maxLoginText))
		}
		text = append(text, p.Data...)
		if req.Continue {
			// More text follows: acknowledge with an empty
			// response and keep collecting (RFC 7143 6.2).
			if err := ls.respond(req, nil, false, req.CSG, 0); err != nil {
				return err
			}
			continue
		}
		kvs, err := pdu.ParseText(text)
		text = text[:0]
		if err != nil {
			return ls.fail(req, loginFail(pdu.LoginInitiatorError, "login text: %w", err))
		}
		done, err := ls.step(req, kvs)
		if err != nil {
			return ls.fail(req, err)
		}
		if done {
			return nil
		}
	}
}

// step handles one complete login request; done reports the move to the
// full feature phase.
func (ls *loginState) step(req pdu.LoginRequest, kvs []pdu.KV) (bool, error) {
	c := ls.c
	if ls.first {
		if err := ls.begin(req, kvs); err != nil {
			return false, err
		}
	} else if req.ISID != ls.isid || req.TSIH != ls.tsih || req.CID != ls.cid {
		return false, loginFail(pdu.LoginInitiatorError, "ISID/TSIH/CID changed during login")
	}
	if req.CSG == pdu.StageFullFeature || req.CSG == 2 || (req.Transit && (req.NSG == 2 || req.NSG <= req.CSG)) {
		return false, loginFail(pdu.LoginInitiatorError, "invalid stage transition %s -> %s", req.CSG, req.NSG)
	}
	var reply []pdu.KV
	if ls.first && !ls.discovery {
		// The first response of a normal session names the portal
		// group (RFC 7143 13.9); the initramfs checks it against
		// ISCSI_TARGET_GROUP.
		reply = append(reply, pdu.KV{Key: "TargetPortalGroupTag", Value: fmt.Sprint(c.srv.cfg.PortalGroupTag)})
		if ls.target.Alias != "" {
			reply = append(reply, pdu.KV{Key: "TargetAlias", Value: ls.target.Alias})
		}
	}
	ls.first = false

	var ops []pdu.KV
	for _, kv := range kvs {
		switch {
		case kv.Key == "AuthMethod" || strings.HasPrefix(kv.Key, "CHAP_"):
			if req.CSG != pdu.StageSecurity {
				return false, loginFail(pdu.LoginInitiatorError, "%s outside the security stage", kv.Key)
			}
		case IsSecurityOrLoginKey(kv.Key):
			// InitiatorName, TargetName, SessionType, InitiatorAlias:
			// consumed by begin.
		default:
			ops = append(ops, kv)
		}
	}

	needAuth := !ls.discovery && ls.target.CHAP != nil
	switch req.CSG {
	case pdu.StageSecurity:
		r, err := ls.security(kvs, needAuth)
		if err != nil {
			return false, err
		}
		reply = append(reply, r...)
	case pdu.StageOperational:
		if needAuth && !ls.authDone {
			return false, loginFail(pdu.LoginAuthFailure, "operational stage before authentication")
		}
		ls.authDone = true
	}
	// Operational keys are answered in the operational stage, always
	// (the first answer declares our MaxRecvDataSegmentLength). Only if an
	// initiator sends them in the security stage are they answered there:
	// open-iscsi refuses operational keys in a security-stage response it
	// did not ask for (usr/login.c).
	if req.CSG == pdu.StageOperational || len(ops) > 0 {
		r, err := ls.neg.Respond(ops)
		if err != nil {
			return false, loginFail(pdu.LoginInitiatorError, "negotiation: %w", err)
		}
		reply = append(reply, r...)
	}

	transit := req.Transit
	nsg := req.NSG
	if transit && req.CSG == pdu.StageSecurity && !ls.authDone {
		if ls.authMethod == "None" || (!needAuth && ls.authMethod == "") {
			ls.authDone = true
		} else {
			// Authentication still under way: stay (RFC 7143 6.2).
			transit = false
		}
	}
	if transit && nsg == pdu.StageFullFeature {
		if needAuth && !ls.authDone {
			return false, loginFail(pdu.LoginAuthFailure, "full feature phase requested before authentication")
		}
		return true, ls.finish(req, reply)
	}
	if !transit {
		nsg = 0
	}
	return false, ls.respond(req, reply, transit, req.CSG, nsg)
}

// begin checks the first Login Request: version, names, session type,
// target and access (RFC 7143 6.3).
func (ls *loginState) begin(req pdu.LoginRequest, kvs []pdu.KV) error {
	c := ls.c
	ls.isid, ls.tsih, ls.cid, ls.itt, ls.cmdSN = req.ISID, req.TSIH, req.CID, req.ITT, req.CmdSN
	c.statSN = req.ExpStatSN
	if req.VersionMin > 0 {
		return loginFail(pdu.LoginUnsupportedVersion, "version %d-%d", req.VersionMin, req.VersionMax)
	}
	var targetName, sessionType string
	for _, kv := range kvs {
		switch kv.Key {
		case "InitiatorName":
			ls.initiatorName = kv.Value
		case "InitiatorAlias":
			ls.alias = kv.Value
		case "TargetName":
			targetName = kv.Value
		case "SessionType":
			sessionType = kv.Value
		}
	}
	if ls.initiatorName == "" {
		return loginFail(pdu.LoginMissingParameter, "no InitiatorName")
	}
	switch sessionType {
	case "", "Normal":
	case "Discovery":
		ls.discovery = true
	default:
		return loginFail(pdu.LoginSessionTypeNotSupp, "SessionType %q", sessionType)
	}
	c.log = c.log.With("iqn", ls.initiatorName, "isid", isidString(ls.isid))
	if !ls.discovery {
		if targetName == "" {
			return loginFail(pdu.LoginMissingParameter, "no TargetName")
		}
		t := c.srv.target(targetName)
		if t == nil {
			return loginFail(pdu.LoginTargetNotFound, "no target %q", targetName)
		}
		if !t.allows(ls.initiatorName) {
			return loginFail(pdu.LoginForbidden, "initiator not allowed on %s", targetName)
		}
		ls.target = t
		if t.CHAP != nil {
			ls.chap = NewCHAPAuthenticator(*t.CHAP, t.MutualCHAP, rand.Reader)
		}
	}
	ls.neg = NewNegotiator(*c.srv.cfg.Limits, ls.discovery)
	return nil
}

// security handles AuthMethod and CHAP keys.
func (ls *loginState) security(kvs []pdu.KV, needAuth bool) ([]pdu.KV, error) {
	var reply, chapKeys []pdu.KV
	for _, kv := range kvs {
		switch {
		case kv.Key == "AuthMethod":
			if ls.authMethod != "" {
				return nil, loginFail(pdu.LoginInitiatorError, "AuthMethod offered twice")
			}
			m, err := SelectAuthMethod(kv.Value, needAuth)
			if err != nil {
				return nil, &loginError{status: pdu.LoginAuthFailure, err: err}
			}
			ls.authMethod = m
			reply = append(reply, pdu.KV{Key: "AuthMethod", Value: m})
		case strings.HasPrefix(kv.Key, "CHAP_"):
			chapKeys = append(chapKeys, kv)
		}
	}
	if len(chapKeys) > 0 {
		if ls.authMethod != "CHAP" || ls.chap == nil {
			return nil, loginFail(pdu.LoginAuthFailure, "CHAP keys without AuthMethod=CHAP")
		}
		r, done, err := ls.chap.Step(chapKeys)
		if err != nil {
			var ae *AuthError
			if !errors.As(err, &ae) {
				return nil, &loginError{status: pdu.LoginTargetError, err: err}
			}
			ls.c.warn("iscsi CHAP authentication failed", "err", err)
			return nil, &loginError{status: pdu.LoginAuthFailure, err: err}
		}
		reply = append(reply, r...)
		if done {
			ls.authDone = true
			ls.c.info("iscsi CHAP authentication succeeded")
		}
	}
	if needAuth && ls.authMethod == "" {
		return nil, loginFail(pdu.LoginAuthFailure, "target requires CHAP, initiator offered no AuthMethod")
	}
	return reply, nil
}

// finish binds the session and sends the last Login Response.
func (ls *loginState) finish(req pdu.LoginRequest, reply []pdu.KV) error {
	c := ls.c
	key := sessionKey{initiator: ls.initiatorName, isid: ls.isid}
	if ls.target != nil {
		key.target = ls.target.Name
	}
	if admit := c.srv.cfg.Admit; admit != nil && !ls.discovery {
		if err := admit(key.target, ls.initiatorName); err != nil {
			return &loginError{status: pdu.LoginServiceUnavailable, err: err}
		}
	}
	ss, status := c.srv.bindSession(c, key, ls.tsih, ls.discovery, ls.target)
	if status != pdu.LoginSuccess {
		return &loginError{status: status, err: errors.New("session binding refused")}
	}
	c.sess = ss
	if !ls.discovery {
		c.srv.startTrace(ss)
		c.memTarget = c.srv.mem.forTarget(key.target)
		c.cmds = c.srv.cmdCountersFor(key.target)
	}
	c.sessCID = ls.cid
	c.params = ls.neg.Params()
	c.sendSeg.Store(c.params.MaxRecvDataSegmentLength)
	ls.neg.StartFullFeaturePhase()
	c.ffpNeg = ls.neg
	c.expCmdSN.Store(req.CmdSN)
	c.maxCmdSN.Store(req.CmdSN + uint32(c.srv.cfg.QueueDepth) - 1)
	ls.tsih = ss.tsih
	if err := ls.respond(req, reply, true, req.CSG, pdu.StageFullFeature); err != nil {
		return err
	}
	// From here on, PDUs may be as long as we declared.
	c.rd.MaxData = int(c.params.TargetMaxRecvDataSegmentLength)
	c.rd.HeaderDigest = c.params.HeaderDigest
	c.rd.DataDigest = c.params.DataDigest
	kind := "normal"
	if ls.discovery {
		kind = "discovery"
	} else if hook := c.srv.cfg.OnLogin; hook != nil {
		hook(LoginEvent{Initiator: ls.initiatorName, ISID: ls.isid, TSIH: ss.tsih, Target: key.target, Remote: c.nc.RemoteAddr()})
	}
	c.info("iscsi login", "session", kind, "target", key.target, "tsih", ss.tsih,
		"mrdsl", c.params.MaxRecvDataSegmentLength, "immediate_data", c.params.ImmediateData,
		"initial_r2t", c.params.InitialR2T, "header_digest", c.params.HeaderDigest, "data_digest", c.params.DataDigest)
	return nil
}

// respond sends a Login Response carrying kvs.
func (ls *loginState) respond(req pdu.LoginRequest, kvs []pdu.KV, transit bool, csg, nsg pdu.Stage) error {
	return ls.send(req, kvs, transit, csg, nsg, pdu.LoginSuccess)
}

func (ls *loginState) send(req pdu.LoginRequest, kvs []pdu.KV, transit bool, csg, nsg pdu.Stage, status uint16) error {
	c := ls.c
	r := pdu.LoginResponse{
		Transit: transit, CSG: csg, NSG: nsg,
		VersionMax: 0, VersionActive: 0,
		ISID: req.ISID, TSIH: ls.tsih, ITT: req.ITT,
		StatSN: c.statSN, ExpCmdSN: req.CmdSN, MaxCmdSN: req.CmdSN + uint32(c.srv.cfg.QueueDepth) - 1,
		Status: status,
	}
	if status != pdu.LoginSuccess {
		r.Transit, r.NSG, r.TSIH = false, 0, 0
	}
	c.statSN++
	var p pdu.PDU
	r.Marshal(&p.BHS)
	p.Data = pdu.AppendText(nil, kvs...)
	return p.WriteTo(c.nc, false, false)
}

// fail answers a login that cannot go on with its status and ends it.
func (ls *loginState) fail(req pdu.LoginRequest, err error) error {
	var le *loginError
	status := uint16(pdu.LoginInitiatorError)
	if errors.As(err, &le) {
		status = le.status
	}
	if werr := ls.send(req, nil, false, req.CSG, 0, status); werr != nil {
		return errors.Join(err, werr)
	}
	return err
}

func isidString(isid uint64) string { return fmt.Sprintf("0x%012x", isid) }
