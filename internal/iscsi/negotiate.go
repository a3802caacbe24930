package iscsi

// Operational parameter negotiation, target side (RFC 7143 sections 6.2,
// 6.3 and 13). The initiator offers; the Negotiator answers each offer with
// the result the key's function gives between the offer and the target's
// Limits, and declares the target's own MaxRecvDataSegmentLength once.
// Security and login-identity keys (AuthMethod, CHAP_*, names, ...) are the
// login code's: the Negotiator skips them.

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/diskless-boot/diskless/internal/iscsi/pdu"
)

// Params are the operational parameters in force on a session and
// connection (RFC 7143 section 13). The zero value is not meaningful; start
// from DefaultParams.
type Params struct {
	HeaderDigest, DataDigest bool // CRC32C negotiated (13.1)
	MaxConnections           uint32
	InitialR2T               bool
	ImmediateData            bool
	// MaxRecvDataSegmentLength is declared by the initiator: the largest
	// data segment the target may send it in one PDU (13.12).
	MaxRecvDataSegmentLength uint32
	// TargetMaxRecvDataSegmentLength is declared by the target: the largest
	// data segment the initiator may send. It stays 8192 (the default)
	// until the declaration has been sent.
	TargetMaxRecvDataSegmentLength uint32
	MaxBurstLength                 uint32
	// FirstBurstLength is meaningless when InitialR2T && !ImmediateData
	// (13.14): no unsolicited data then.
	FirstBurstLength    uint32
	DefaultTime2Wait    uint32 // seconds
	DefaultTime2Retain  uint32 // seconds
	MaxOutstandingR2T   uint32
	DataPDUInOrder      bool // always true: the target insists (13.18)
	DataSequenceInOrder bool // always true: the target insists (13.19)
	ErrorRecoveryLevel  uint32
	OFMarker, IFMarker  bool // always false: markers are obsolete (13.25)
}

// DefaultParams returns the values RFC 7143 section 13 prescribes when a key
// is not negotiated.
func DefaultParams() Params {
	return Params{
		MaxConnections:                 1,
		InitialR2T:                     true,
		ImmediateData:                  true,
		MaxRecvDataSegmentLength:       8192,
		TargetMaxRecvDataSegmentLength: 8192,
		MaxBurstLength:                 262144,
		FirstBurstLength:               65536,
		DefaultTime2Wait:               2,
		DefaultTime2Retain:             20,
		MaxOutstandingR2T:              1,
		DataPDUInOrder:                 true,
		DataSequenceInOrder:            true,
		ErrorRecoveryLevel:             0,
	}
}

// Limits are what the target is willing to accept, and its preferences
// where a key is Boolean. Each field gives its default (DefaultLimits) and
// its RFC 7143 range.
type Limits struct {
	// MaxRecvDataSegmentLength is declared to the initiator: the largest
	// data segment the target accepts (default 262144; 512..16777215).
	MaxRecvDataSegmentLength uint32
	// MaxBurstLength caps a solicited or unsolicited Data-Out sequence
	// (default 16776192; 512..16777215).
	MaxBurstLength uint32
	// FirstBurstLength caps unsolicited data (default 262144;
	// 512..16777215, at most MaxBurstLength).
	FirstBurstLength uint32
	// MaxOutstandingR2T caps the R2Ts outstanding per task (default 32;
	// 1..65535).
	MaxOutstandingR2T uint32
	// MaxConnections caps the connections of a session (default 1;
	// 1..65535).
	MaxConnections uint32
	// DefaultTime2Wait is the target's wish for the wait before a
	// reconnection; the larger of both sides wins (default 2; 0..3600).
	DefaultTime2Wait uint32
	// DefaultTime2Retain caps how long the target keeps state after a
	// connection loss (default 20; 0..3600).
	DefaultTime2Retain uint32
	// AllowHeaderDigest and AllowDataDigest let the initiator choose
	// CRC32C digests (default true).
	AllowHeaderDigest, AllowDataDigest bool
	// InitialR2T is the target's preference; Yes wins (default false).
	InitialR2T bool
	// ImmediateData is the target's preference; No wins (default true).
	ImmediateData bool
}

// DefaultLimits returns limits that let initiators go as fast as they ask.
func DefaultLimits() Limits {
	return Limits{
		MaxRecvDataSegmentLength: 256 << 10,
		MaxBurstLength:           16776192, // 2^24-1 rounded down to 1 KiB, as open-iscsi offers
		FirstBurstLength:         256 << 10,
		MaxOutstandingR2T:        32,
		MaxConnections:           1,
		DefaultTime2Wait:         2,
		DefaultTime2Retain:       20,
		AllowHeaderDigest:        true,
		AllowDataDigest:          true,
		InitialR2T:               false,
		ImmediateData:            true,
	}
}

// RFC 7143 section 13 ranges.
const (
	minDataLen   = 512 // 13.12, 13.13, 13.14
	maxDataLen   = 1<<24 - 1
	maxTime      = 3600 // 13.15, 13.16
	maxR2T       = 65535
	maxConns     = 65535
	maxERL       = 2  // 13.20
	maxLevel     = 31 // 13.24
	ourERL       = 0  // the target implements ErrorRecoveryLevel 0 only
	ourLevel     = 1  // iSCSIProtocolLevel of RFC 7143 (13.24)
	taskReporter = "RFC3720"
)

// ranges calls f with each numeric limit and its RFC 7143 range, in an
// order where a range depending on another limit (FirstBurstLength's on
// MaxBurstLength) comes after it.
func (l *Limits) ranges(f func(name string, v *uint32, lo, hi uint32)) {
	f("MaxRecvDataSegmentLength", &l.MaxRecvDataSegmentLength, minDataLen, maxDataLen)
	f("MaxBurstLength", &l.MaxBurstLength, minDataLen, maxDataLen)
	f("FirstBurstLength", &l.FirstBurstLength, minDataLen, l.MaxBurstLength)
	f("MaxOutstandingR2T", &l.MaxOutstandingR2T, 1, maxR2T)
	f("MaxConnections", &l.MaxConnections, 1, maxConns)
	f("DefaultTime2Wait", &l.DefaultTime2Wait, 0, maxTime)
	f("DefaultTime2Retain", &l.DefaultTime2Retain, 0, maxTime)
}

// Validate reports a limit outside its RFC 7143 range.
func (l Limits) Validate() error {
	var errs []error
	l.ranges(func(name string, v *uint32, lo, hi uint32) {
		if *v < lo || *v > hi {
			errs = append(errs, fmt.Errorf("iscsi: limits: %s %d outside %d..%d", name, *v, lo, hi))
		}
	})
	return errors.Join(errs...)
}

// clamped brings every limit into its RFC range so that no answer the
// Negotiator derives from it is out of range.
func (l Limits) clamped() Limits {
	l.ranges(func(_ string, v *uint32, lo, hi uint32) { *v = max(lo, min(*v, hi)) })
	return l
}

// Errors of negotiation. Both are initiator errors: the login code answers
// with a Login Response of status 0x0200 (RFC 7143 6.3, 11.13.5).
var (
	// ErrDuplicateKey: a key offered or declared twice during login (6.3).
	ErrDuplicateKey = errors.New("key negotiated twice")
	// ErrBurstOrder: FirstBurstLength ended above MaxBurstLength (13.14).
	ErrBurstOrder = errors.New("FirstBurstLength exceeds MaxBurstLength")
)

// NegotiationError is a negotiation that cannot continue.
type NegotiationError struct {
	Key string
	Err error // ErrDuplicateKey or ErrBurstOrder
}

func (e *NegotiationError) Error() string {
	return fmt.Sprintf("iscsi: negotiate %q: %v", e.Key, e.Err)
}

func (e *NegotiationError) Unwrap() error { return e.Err }

// IsSecurityOrLoginKey reports whether key belongs to the login or
// discovery code rather than to the Negotiator: the security keys (RFC 7143
// 12: AuthMethod, CHAP_*, SRP_*, KRB_*, SPKM_*), the names and addresses of
// the login (13.4-13.9: InitiatorName, TargetName, InitiatorAlias,
// TargetAlias, TargetAddress, TargetPortalGroupTag), SessionType (13.21)
// and SendTargets (13.3).
func IsSecurityOrLoginKey(key string) bool {
	switch key {
	case "AuthMethod", "InitiatorName", "TargetName", "InitiatorAlias", "TargetAlias",
		"TargetAddress", "TargetPortalGroupTag", "SessionType", "SendTargets":
		return true
	}
	for _, p := range []string{"CHAP_", "SRP_", "KRB_", "SPKM_"} {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// Negotiator answers the operational keys of one connection's login, and
// afterwards of its Text requests. It is not safe for concurrent use.
type Negotiator struct {
	lim         Limits
	discovery   bool
	fullFeature bool
	p           Params
	seen        map[string]bool // keys negotiated so far in the login (6.3)
	declared    bool            // our MaxRecvDataSegmentLength was sent
	firstBurst  bool            // FirstBurstLength was answered with a number
}

// NewNegotiator starts the negotiation of a normal or (discovery) a
// discovery session's connection. Limits outside their RFC range are
// brought into it; Limits.Validate reports them.
func NewNegotiator(l Limits, discovery bool) *Negotiator {
	return &Negotiator{lim: l.clamped(), discovery: discovery, p: DefaultParams(), seen: map[string]bool{}}
}

// Params returns the parameters negotiated so far; after the login, the
// ones in force.
func (n *Negotiator) Params() Params { return n.p }

// StartFullFeaturePhase ends the login phase. From then on every Respond
// call is an independent Text negotiation (RFC 7143 6.2): the initiator may
// declare MaxRecvDataSegmentLength again (Use: ALL, 13.12), and the keys
// that may only be negotiated during login (Use: LO or IO) are answered
// Reject.
func (n *Negotiator) StartFullFeaturePhase() { n.fullFeature = true }

// Respond answers the keys of one Login request of the operational stage,
// or of one Text request (after the C-bit continuations are joined) in the
// Full Feature Phase. Call it only for those:
// during the security stage some initiators (open-iscsi) refuse any key but
// the security ones. Keys for which IsSecurityOrLoginKey is true are
// skipped; the caller answers them.
//
// The answer holds, in request order, one pair per offered key that needs
// one (declarations need none), then, on the first call of the login, the
// target's MaxRecvDataSegmentLength declaration. Bad values are answered
// Reject and unknown keys NotUnderstood (6.2); the only errors are
// NegotiationErrors, for which a login is rejected with status 0x0200 and a
// Text request with a Reject PDU (protocol error).
func (n *Negotiator) Respond(kvs []pdu.KV) ([]pdu.KV, error) {
	if n.fullFeature {
		// Each Text request is a negotiation of its own.
		n.seen = map[string]bool{}
	}
	// RFC 7143 6.3: a key negotiated twice during login is a protocol
	// error. Unknown keys are answered NotUnderstood each time instead.
	for _, kv := range kvs {
		if IsSecurityOrLoginKey(kv.Key) || !knownKey(kv.Key) {
			continue
		}
		if n.seen[kv.Key] {
			return nil, &NegotiationError{Key: kv.Key, Err: ErrDuplicateKey}
		}
		n.seen[kv.Key] = true
	}
	if n.fullFeature {
		return n.respondText(kvs), nil
	}

	answers := make([]*pdu.KV, len(kvs))
	// FirstBurstLength depends on InitialR2T, ImmediateData and
	// MaxBurstLength (13.14), which may come later in the same request:
	// answer it last.
	deferred := -1
	for i, kv := range kvs {
		if IsSecurityOrLoginKey(kv.Key) {
			continue
		}
		if kv.Key == "FirstBurstLength" {
			deferred = i
			continue
		}
		answers[i] = n.answer(kv)
	}
	if deferred >= 0 {
		answers[deferred] = n.answer(kvs[deferred])
	}
	if n.firstBurst && n.p.FirstBurstLength > n.p.MaxBurstLength {
		// Only reachable when MaxBurstLength comes after FirstBurstLength,
		// in a later request, below it: no answer can repair that.
		return nil, &NegotiationError{Key: "MaxBurstLength", Err: ErrBurstOrder}
	}

	reply := make([]pdu.KV, 0, len(kvs)+1)
	for _, a := range answers {
		if a != nil {
			reply = append(reply, *a)
		}
	}
	if !n.declared {
		// 13.12: each side declares the most it receives; until then the
		// initiator assumes 8192.
		n.declared = true
		n.p.TargetMaxRecvDataSegmentLength = n.lim.MaxRecvDataSegmentLength
		reply = append(reply, pdu.KV{Key: "MaxRecvDataSegmentLength", Value: u32(n.lim.MaxRecvDataSegmentLength)})
	}
	return reply, nil
}

// respondText answers a Text request of the Full Feature Phase.
func (n *Negotiator) respondText(kvs []pdu.KV) []pdu.KV {
	var reply []pdu.KV
	for _, kv := range kvs {
		switch {
		case IsSecurityOrLoginKey(kv.Key):
		case kv.Key == "MaxRecvDataSegmentLength":
			if a := n.answer(kv); a != nil {
				reply = append(reply, *a)
			}
		case iserKeys[kv.Key]:
			reply = append(reply, pdu.KV{Key: kv.Key, Value: pdu.ValueIrrelevant})
		case knownKey(kv.Key):
			// LO and IO keys cannot change after login (13).
			reply = append(reply, pdu.KV{Key: kv.Key, Value: pdu.ValueReject})
		default:
			reply = append(reply, pdu.KV{Key: kv.Key, Value: pdu.ValueNotUnderstood})
		}
	}
	return reply
}

// Keys "Irrelevant when: SessionType=Discovery" in RFC 7143 section 13.
var discoveryIrrelevant = map[string]bool{
	"MaxConnections": true, "InitialR2T": true, "ImmediateData": true,
	"MaxBurstLength": true, "FirstBurstLength": true, "MaxOutstandingR2T": true,
	"DataPDUInOrder": true, "DataSequenceInOrder": true, "TaskReporting": true,
}

// iSER keys (RFC 7145 6.3), "Irrelevant when: RDMAExtensions=No", which it
// always is on TCP.
var iserKeys = map[string]bool{
	"InitiatorRecvDataSegmentLength": true,
	"TargetRecvDataSegmentLength":    true,
	"MaxOutstandingUnexpectedPDUs":   true,
}

// knownKey reports whether key is an operational key the Negotiator
// answers with anything but NotUnderstood.
func knownKey(key string) bool {
	switch key {
	case "HeaderDigest", "DataDigest", "MaxConnections", "InitialR2T", "ImmediateData",
		"MaxRecvDataSegmentLength", "MaxBurstLength", "FirstBurstLength",
		"DefaultTime2Wait", "DefaultTime2Retain", "MaxOutstandingR2T",
		"DataPDUInOrder", "DataSequenceInOrder", "ErrorRecoveryLevel",
		"TaskReporting", "iSCSIProtocolLevel",
		"IFMarker", "OFMarker", "IFMarkInt", "OFMarkInt", "RDMAExtensions":
		return true
	}
	return iserKeys[key]
}

// answer negotiates one offer and returns the pair to answer with, or nil
// for a declaration.
func (n *Negotiator) answer(kv pdu.KV) *pdu.KV {
	key, v := kv.Key, kv.Value
	reply := func(value string) *pdu.KV { return &pdu.KV{Key: key, Value: value} }
	reject := reply(pdu.ValueReject)

	if n.discovery && discoveryIrrelevant[key] {
		return reply(pdu.ValueIrrelevant)
	}
	switch key {
	case "HeaderDigest", "DataDigest":
		// 13.1, list: the first value of the offer the target supports
		// (6.2.1); values it does not know are ignored.
		allow := n.lim.AllowHeaderDigest
		if key == "DataDigest" {
			allow = n.lim.AllowDataDigest
		}
		for _, o := range strings.Split(v, ",") {
			if o == "None" || (o == "CRC32C" && allow) {
				crc := o == "CRC32C"
				if key == "HeaderDigest" {
					n.p.HeaderDigest = crc
				} else {
					n.p.DataDigest = crc
				}
				return reply(o)
			}
		}
		return reject

	case "MaxConnections": // 13.2: Minimum, 1..65535
		x, ok := number(v, 1, maxConns)
		if !ok {
			return reject
		}
		n.p.MaxConnections = min(x, n.lim.MaxConnections)
		return reply(u32(n.p.MaxConnections))

	case "InitialR2T": // 13.10: OR
		b, ok := boolean(v)
		if !ok {
			return reject
		}
		n.p.InitialR2T = b || n.lim.InitialR2T
		return reply(yesNo(n.p.InitialR2T))

	case "ImmediateData": // 13.11: AND
		b, ok := boolean(v)
		if !ok {
			return reject
		}
		n.p.ImmediateData = b && n.lim.ImmediateData
		return reply(yesNo(n.p.ImmediateData))

	case "MaxRecvDataSegmentLength": // 13.12: declarative, 512..2^24-1
		x, ok := number(v, minDataLen, maxDataLen)
		if !ok {
			return reject
		}
		n.p.MaxRecvDataSegmentLength = x
		return nil

	case "MaxBurstLength": // 13.13: Minimum, 512..2^24-1
		x, ok := number(v, minDataLen, maxDataLen)
		if !ok {
			return reject
		}
		n.p.MaxBurstLength = min(x, n.lim.MaxBurstLength)
		return reply(u32(n.p.MaxBurstLength))

	case "FirstBurstLength": // 13.14: Minimum, 512..2^24-1, <= MaxBurstLength
		if n.p.InitialR2T && !n.p.ImmediateData {
			// "Irrelevant when: ( InitialR2T=Yes and ImmediateData=No )".
			return reply(pdu.ValueIrrelevant)
		}
		x, ok := number(v, minDataLen, maxDataLen)
		if !ok {
			return reject
		}
		n.p.FirstBurstLength = min(x, n.lim.FirstBurstLength, n.p.MaxBurstLength)
		n.firstBurst = true
		return reply(u32(n.p.FirstBurstLength))

	case "DefaultTime2Wait": // 13.15: Maximum, 0..3600
		x, ok := number(v, 0, maxTime)
		if !ok {
			return reject
		}
		n.p.DefaultTime2Wait = max(x, n.lim.DefaultTime2Wait)
		return reply(u32(n.p.DefaultTime2Wait))

	case "DefaultTime2Retain": // 13.16: Minimum, 0..3600
		x, ok := number(v, 0, maxTime)
		if !ok {
			return reject
		}
		n.p.DefaultTime2Retain = min(x, n.lim.DefaultTime2Retain)
		return reply(u32(n.p.DefaultTime2Retain))

	case "MaxOutstandingR2T": // 13.17: Minimum, 1..65535
		x, ok := number(v, 1, maxR2T)
		if !ok {
			return reject
		}
		n.p.MaxOutstandingR2T = min(x, n.lim.MaxOutstandingR2T)
		return reply(u32(n.p.MaxOutstandingR2T))

	case "DataPDUInOrder", "DataSequenceInOrder":
		// 13.18, 13.19: OR, and the target wants Yes: the result is Yes.
		if _, ok := boolean(v); !ok {
			return reject
		}
		return reply(pdu.ValueYes)

	case "ErrorRecoveryLevel": // 13.20: Minimum, 0..2; the target does 0
		x, ok := number(v, 0, maxERL)
		if !ok {
			return reject
		}
		n.p.ErrorRecoveryLevel = min(x, ourERL)
		return reply(u32(n.p.ErrorRecoveryLevel))

	case "TaskReporting":
		// 13.23, list: the target offers RFC3720 semantics only, not
		// ResponseFence or FastAbort.
		for _, o := range strings.Split(v, ",") {
			if o == taskReporter {
				return reply(o)
			}
		}
		return reject

	case "iSCSIProtocolLevel": // 13.24: Minimum, 0..31; RFC 7143 is level 1
		x, ok := number(v, 0, maxLevel)
		if !ok {
			return reject
		}
		return reply(u32(min(x, ourLevel)))

	case "IFMarker", "OFMarker":
		// 13.25: obsolete; "MAY alternatively respond with a No value",
		// which every initiator takes (they all offer No), "MUST NOT
		// respond with NotUnderstood".
		if _, ok := boolean(v); !ok {
			return reject
		}
		return reply(pdu.ValueNo)

	case "IFMarkInt", "OFMarkInt": // 13.25: obsolete, answered Reject
		return reject

	case "RDMAExtensions":
		// RFC 7145 6.3.1: Boolean AND; there is no RDMA on a TCP target.
		if _, ok := boolean(v); !ok {
			return reject
		}
		return reply(pdu.ValueNo)
	}
	if iserKeys[key] {
		return reply(pdu.ValueIrrelevant)
	}
	// 6.2: X- private and X# public extension keys, and anything else the
	// target does not implement.
	return reply(pdu.ValueNotUnderstood)
}

// number parses a numerical value (RFC 7143 6.1) within lo..hi.
func number(v string, lo, hi uint32) (uint32, bool) {
	x, err := pdu.ParseNumericalValue(v)
	if err != nil || x < uint64(lo) || x > uint64(hi) {
		return 0, false
	}
	return uint32(x), true
}

// boolean parses a boolean-value: exactly Yes or No (RFC 7143 6.1).
func boolean(v string) (bool, bool) {
	switch v {
	case pdu.ValueYes:
		return true, true
	case pdu.ValueNo:
		return false, true
	}
	return false, false
}

func yesNo(b bool) string {
	if b {
		return pdu.ValueYes
	}
	return pdu.ValueNo
}

func u32(x uint32) string { return strconv.FormatUint(uint64(x), 10) }
