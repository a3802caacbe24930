package iscsi

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/diskless-boot/diskless/internal/iscsi/pdu"
)

// kvs builds pairs from "key=value" strings.
func kvs(pairs ...string) []pdu.KV {
	out := make([]pdu.KV, 0, len(pairs))
	for _, p := range pairs {
		k, v, _ := strings.Cut(p, "=")
		out = append(out, pdu.KV{Key: k, Value: v})
	}
	return out
}

// declaration is the target's MaxRecvDataSegmentLength with DefaultLimits.
const declaration = "MaxRecvDataSegmentLength=262144"

func TestDefaultParams(t *testing.T) {
	// RFC 7143 section 13, the "Default is" of each key.
	want := Params{
		HeaderDigest: false, DataDigest: false, // 13.1
		MaxConnections:                 1,      // 13.2
		InitialR2T:                     true,   // 13.10
		ImmediateData:                  true,   // 13.11
		MaxRecvDataSegmentLength:       8192,   // 13.12
		TargetMaxRecvDataSegmentLength: 8192,   // 13.12
		MaxBurstLength:                 262144, // 13.13
		FirstBurstLength:               65536,  // 13.14
		DefaultTime2Wait:               2,      // 13.15
		DefaultTime2Retain:             20,     // 13.16
		MaxOutstandingR2T:              1,      // 13.17
		DataPDUInOrder:                 true,   // 13.18
		DataSequenceInOrder:            true,   // 13.19
		ErrorRecoveryLevel:             0,      // 13.20
	}
	if got := DefaultParams(); got != want {
		t.Fatalf("DefaultParams() = %+v\nwant %+v", got, want)
	}
	if got := NewNegotiator(DefaultLimits(), false).Params(); got != want {
		t.Fatalf("before any request Params() = %+v, want the defaults", got)
	}
}

// TestRespondRealInitiators feeds the operational offers iPXE, open-iscsi
// and libiscsi send (iPXE src/net/tcp/iscsi.c
// iscsi_build_login_request_strings, open-iscsi usr/login.c
// fill_op_params_text, libiscsi lib/login.c) and checks every answer.
func TestRespondRealInitiators(t *testing.T) {
	tests := []struct {
		name      string
		discovery bool
		offer     []pdu.KV
		want      []pdu.KV
		params    func(*Params)
	}{{
		name: "iPXE",
		offer: kvs("HeaderDigest=None", "DataDigest=None", "MaxConnections=1", "InitialR2T=Yes",
			"ImmediateData=No", "MaxRecvDataSegmentLength=8192", "MaxBurstLength=262144",
			"FirstBurstLength=65536", "DefaultTime2Wait=0", "DefaultTime2Retain=0",
			"MaxOutstandingR2T=1", "DataPDUInOrder=Yes", "DataSequenceInOrder=Yes", "ErrorRecoveryLevel=0"),
		// iPXE fails the login on any Reject: there must be none.
		want: kvs("HeaderDigest=None", "DataDigest=None", "MaxConnections=1", "InitialR2T=Yes",
			"ImmediateData=No", "MaxBurstLength=262144", "FirstBurstLength=Irrelevant",
			"DefaultTime2Wait=2", "DefaultTime2Retain=0", "MaxOutstandingR2T=1",
			"DataPDUInOrder=Yes", "DataSequenceInOrder=Yes", "ErrorRecoveryLevel=0", declaration),
		params: func(p *Params) {
			p.InitialR2T, p.ImmediateData = true, false
			p.MaxRecvDataSegmentLength = 8192
			p.TargetMaxRecvDataSegmentLength = 262144
			p.DefaultTime2Retain = 0
		},
	}, {
		name: "open-iscsi",
		offer: kvs("HeaderDigest=CRC32C,None", "DataDigest=None", "DefaultTime2Wait=2", "DefaultTime2Retain=0",
			"IFMarker=No", "OFMarker=No", "ErrorRecoveryLevel=0", "InitialR2T=No", "ImmediateData=Yes",
			"MaxBurstLength=16776192", "FirstBurstLength=262144", "MaxOutstandingR2T=1", "MaxConnections=1",
			"DataPDUInOrder=Yes", "DataSequenceInOrder=Yes", "MaxRecvDataSegmentLength=262144"),
		want: kvs("HeaderDigest=CRC32C", "DataDigest=None", "DefaultTime2Wait=2", "DefaultTime2Retain=0",
			"IFMarker=No", "OFMarker=No", "ErrorRecoveryLevel=0", "InitialR2T=No", "ImmediateData=Yes",
			"MaxBurstLength=16776192", "FirstBurstLength=262144", "MaxOutstandingR2T=1", "MaxConnections=1",
			"DataPDUInOrder=Yes", "DataSequenceInOrder=Yes", declaration),
		params: func(p *Params) {
			p.HeaderDigest = true
			p.InitialR2T, p.ImmediateData = false, true
			p.MaxRecvDataSegmentLength, p.TargetMaxRecvDataSegmentLength = 262144, 262144
			p.MaxBurstLength, p.FirstBurstLength = 16776192, 262144
			p.DefaultTime2Retain = 0
		},
	}, {
		name:      "open-iscsi discovery",
		discovery: true,
		offer: kvs("HeaderDigest=None", "DataDigest=None", "DefaultTime2Wait=2", "DefaultTime2Retain=0",
			"IFMarker=No", "OFMarker=No", "ErrorRecoveryLevel=0", "MaxRecvDataSegmentLength=32768"),
		want: kvs("HeaderDigest=None", "DataDigest=None", "DefaultTime2Wait=2", "DefaultTime2Retain=0",
			"IFMarker=No", "OFMarker=No", "ErrorRecoveryLevel=0", declaration),
		params: func(p *Params) {
			p.MaxRecvDataSegmentLength, p.TargetMaxRecvDataSegmentLength = 32768, 262144
			p.DefaultTime2Retain = 0
		},
	}, {
		name: "libiscsi",
		offer: kvs("HeaderDigest=None,CRC32C", "DataDigest=None", "InitialR2T=No", "ImmediateData=Yes",
			"MaxBurstLength=262144", "FirstBurstLength=262144", "MaxRecvDataSegmentLength=262144",
			"DataPDUInOrder=Yes", "DefaultTime2Wait=2", "DefaultTime2Retain=0", "IFMarker=No", "OFMarker=No",
			"MaxConnections=1", "MaxOutstandingR2T=1", "ErrorRecoveryLevel=0", "DataSequenceInOrder=Yes"),
		want: kvs("HeaderDigest=None", "DataDigest=None", "InitialR2T=No", "ImmediateData=Yes",
			"MaxBurstLength=262144", "FirstBurstLength=262144",
			"DataPDUInOrder=Yes", "DefaultTime2Wait=2", "DefaultTime2Retain=0", "IFMarker=No", "OFMarker=No",
			"MaxConnections=1", "MaxOutstandingR2T=1", "ErrorRecoveryLevel=0", "DataSequenceInOrder=Yes", declaration),
		params: func(p *Params) {
			p.InitialR2T, p.ImmediateData = false, true
			p.MaxRecvDataSegmentLength, p.TargetMaxRecvDataSegmentLength = 262144, 262144
			p.FirstBurstLength = 262144
			p.DefaultTime2Retain = 0
		},
	}, {
		// libiscsi sends the normal-session keys in discovery sessions too;
		// open-iscsi answers Irrelevant the same way (usr/login.c).
		name:      "libiscsi discovery (RFC 7143 13: Irrelevant when SessionType=Discovery)",
		discovery: true,
		offer: kvs("InitialR2T=No", "ImmediateData=Yes", "MaxBurstLength=262144", "FirstBurstLength=262144",
			"MaxConnections=1", "MaxOutstandingR2T=1", "DataPDUInOrder=Yes", "DataSequenceInOrder=Yes",
			"TaskReporting=RFC3720", "ErrorRecoveryLevel=0"),
		want: kvs("InitialR2T=Irrelevant", "ImmediateData=Irrelevant", "MaxBurstLength=Irrelevant",
			"FirstBurstLength=Irrelevant", "MaxConnections=Irrelevant", "MaxOutstandingR2T=Irrelevant",
			"DataPDUInOrder=Irrelevant", "DataSequenceInOrder=Irrelevant", "TaskReporting=Irrelevant",
			"ErrorRecoveryLevel=0", declaration),
		params: func(p *Params) { p.TargetMaxRecvDataSegmentLength = 262144 },
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := NewNegotiator(DefaultLimits(), tt.discovery)
			got, err := n.Respond(tt.offer)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("reply\n got %q\nwant %q", got, tt.want)
			}
			want := DefaultParams()
			tt.params(&want)
			if p := n.Params(); p != want {
				t.Fatalf("params\n got %+v\nwant %+v", p, want)
			}
		})
	}
}

// TestRespondRules checks one rule per row; the reply is compared without
// the target's declaration.
func TestRespondRules(t *testing.T) {
	type row struct {
		name      string
		limits    func(*Limits)
		discovery bool
		offer     []pdu.KV
		want      []pdu.KV
		check     func(Params) bool
	}
	rows := []row{
		// 6.2.1 list negotiation: the first offered value the acceptor
		// supports; unknown values are ignored; none acceptable: Reject.
		{name: "6.2.1 list: first supported", offer: kvs("HeaderDigest=CRC32C,None"), want: kvs("HeaderDigest=CRC32C"),
			check: func(p Params) bool { return p.HeaderDigest }},
		{name: "6.2.1 list: order is the initiator's", offer: kvs("DataDigest=None,CRC32C"), want: kvs("DataDigest=None"),
			check: func(p Params) bool { return !p.DataDigest }},
		{name: "6.2.1 list: unknown values ignored", offer: kvs("HeaderDigest=X-md5,CRC32C"), want: kvs("HeaderDigest=CRC32C")},
		{name: "6.2.1 list: digests not allowed", limits: func(l *Limits) { l.AllowDataDigest = false },
			offer: kvs("DataDigest=CRC32C,None"), want: kvs("DataDigest=None")},
		{name: "6.2.1 list: nothing acceptable is Reject", limits: func(l *Limits) { l.AllowHeaderDigest = false },
			offer: kvs("HeaderDigest=CRC32C"), want: kvs("HeaderDigest=Reject"),
			check: func(p Params) bool { return !p.HeaderDigest }},
		{name: "6.2.1 list: empty", offer: kvs("HeaderDigest="), want: kvs("HeaderDigest=Reject")},

		// 6.2.2 numerical Minimum: the smaller of offer and limit.
		{name: "13.13 MaxBurstLength Minimum: offer smaller", offer: kvs("MaxBurstLength=4096"), want: kvs("MaxBurstLength=4096"),
			check: func(p Params) bool { return p.MaxBurstLength == 4096 }},
		{name: "13.13 MaxBurstLength Minimum: limit smaller", limits: func(l *Limits) { l.MaxBurstLength = 65536 },
			offer: kvs("MaxBurstLength=16776192"), want: kvs("MaxBurstLength=65536")},
		{name: "13.13 MaxBurstLength hex value (6.1)", offer: kvs("MaxBurstLength=0x1000"), want: kvs("MaxBurstLength=4096")},
		{name: "13.13 MaxBurstLength below 512: Reject (6.2.2)", offer: kvs("MaxBurstLength=511"), want: kvs("MaxBurstLength=Reject"),
			check: func(p Params) bool { return p.MaxBurstLength == 262144 }},
		{name: "13.13 MaxBurstLength above 2^24-1: Reject", offer: kvs("MaxBurstLength=16777216"), want: kvs("MaxBurstLength=Reject")},
		{name: "13.13 MaxBurstLength malformed: Reject", offer: kvs("MaxBurstLength=lots"), want: kvs("MaxBurstLength=Reject")},
		{name: "13.2 MaxConnections Minimum", offer: kvs("MaxConnections=8"), want: kvs("MaxConnections=1")},
		{name: "13.2 MaxConnections 0: Reject", offer: kvs("MaxConnections=0"), want: kvs("MaxConnections=Reject")},
		{name: "13.16 DefaultTime2Retain Minimum", offer: kvs("DefaultTime2Retain=3600"), want: kvs("DefaultTime2Retain=20")},
		{name: "13.16 DefaultTime2Retain above 3600: Reject", offer: kvs("DefaultTime2Retain=3601"), want: kvs("DefaultTime2Retain=Reject")},
		{name: "13.17 MaxOutstandingR2T Minimum", offer: kvs("MaxOutstandingR2T=64"), want: kvs("MaxOutstandingR2T=32")},
		{name: "13.17 MaxOutstandingR2T 0: Reject", offer: kvs("MaxOutstandingR2T=0"), want: kvs("MaxOutstandingR2T=Reject")},
		{name: "13.20 ErrorRecoveryLevel Minimum with 0", offer: kvs("ErrorRecoveryLevel=2"), want: kvs("ErrorRecoveryLevel=0"),
			check: func(p Params) bool { return p.ErrorRecoveryLevel == 0 }},
		{name: "13.20 ErrorRecoveryLevel 3: Reject", offer: kvs("ErrorRecoveryLevel=3"), want: kvs("ErrorRecoveryLevel=Reject")},
		{name: "13.24 iSCSIProtocolLevel Minimum with 1", offer: kvs("iSCSIProtocolLevel=2"), want: kvs("iSCSIProtocolLevel=1")},
		{name: "13.24 iSCSIProtocolLevel 0", offer: kvs("iSCSIProtocolLevel=0"), want: kvs("iSCSIProtocolLevel=0")},
		{name: "13.24 iSCSIProtocolLevel 32: Reject", offer: kvs("iSCSIProtocolLevel=32"), want: kvs("iSCSIProtocolLevel=Reject")},

		// Numerical Maximum.
		{name: "13.15 DefaultTime2Wait Maximum: limit larger", offer: kvs("DefaultTime2Wait=0"), want: kvs("DefaultTime2Wait=2")},
		{name: "13.15 DefaultTime2Wait Maximum: offer larger", offer: kvs("DefaultTime2Wait=60"), want: kvs("DefaultTime2Wait=60"),
			check: func(p Params) bool { return p.DefaultTime2Wait == 60 }},
		{name: "13.15 DefaultTime2Wait above 3600: Reject", offer: kvs("DefaultTime2Wait=3601"), want: kvs("DefaultTime2Wait=Reject")},

		// 6.2.2 Boolean AND / OR, answered also where optional.
		{name: "13.11 ImmediateData AND: Yes and Yes", offer: kvs("ImmediateData=Yes"), want: kvs("ImmediateData=Yes")},
		{name: "13.11 ImmediateData AND: target says No", limits: func(l *Limits) { l.ImmediateData = false },
			offer: kvs("ImmediateData=Yes"), want: kvs("ImmediateData=No"), check: func(p Params) bool { return !p.ImmediateData }},
		{name: "13.11 ImmediateData AND: No decides alone", offer: kvs("ImmediateData=No"), want: kvs("ImmediateData=No")},
		{name: "13.10 InitialR2T OR: No and No", offer: kvs("InitialR2T=No"), want: kvs("InitialR2T=No"),
			check: func(p Params) bool { return !p.InitialR2T }},
		{name: "13.10 InitialR2T OR: target says Yes", limits: func(l *Limits) { l.InitialR2T = true },
			offer: kvs("InitialR2T=No"), want: kvs("InitialR2T=Yes")},
		{name: "13.10 InitialR2T OR: Yes decides alone", offer: kvs("InitialR2T=Yes"), want: kvs("InitialR2T=Yes")},
		{name: "13.10 Boolean malformed: Reject", offer: kvs("InitialR2T=yes"), want: kvs("InitialR2T=Reject"),
			check: func(p Params) bool { return p.InitialR2T }},
		{name: "13.18 DataPDUInOrder OR with Yes", offer: kvs("DataPDUInOrder=No"), want: kvs("DataPDUInOrder=Yes")},
		{name: "13.19 DataSequenceInOrder OR with Yes", offer: kvs("DataSequenceInOrder=No"), want: kvs("DataSequenceInOrder=Yes")},

		// 13.14 FirstBurstLength.
		{name: "13.14 FirstBurstLength Irrelevant when InitialR2T=Yes and ImmediateData=No",
			offer: kvs("FirstBurstLength=65536", "InitialR2T=Yes", "ImmediateData=No"),
			want:  kvs("FirstBurstLength=Irrelevant", "InitialR2T=Yes", "ImmediateData=No")},
		{name: "13.14 FirstBurstLength relevant with ImmediateData",
			offer: kvs("InitialR2T=Yes", "ImmediateData=Yes", "FirstBurstLength=4096"),
			want:  kvs("InitialR2T=Yes", "ImmediateData=Yes", "FirstBurstLength=4096")},
		{name: "13.14 FirstBurstLength <= MaxBurstLength of the same request, whatever the order",
			offer: kvs("FirstBurstLength=262144", "MaxBurstLength=8192"),
			want:  kvs("FirstBurstLength=8192", "MaxBurstLength=8192"),
			check: func(p Params) bool { return p.FirstBurstLength == 8192 && p.MaxBurstLength == 8192 }},
		{name: "13.14 FirstBurstLength <= default MaxBurstLength", limits: func(l *Limits) { l.FirstBurstLength = 1 << 20; l.MaxBurstLength = 1 << 20 },
			offer: kvs("FirstBurstLength=1048576"), want: kvs("FirstBurstLength=262144")},
		{name: "13.14 FirstBurstLength Minimum with limit", offer: kvs("FirstBurstLength=16777215"), want: kvs("FirstBurstLength=262144")},
		{name: "13.14 FirstBurstLength below 512: Reject", offer: kvs("FirstBurstLength=100"), want: kvs("FirstBurstLength=Reject")},

		// 13.12 declarative: no answer.
		{name: "13.12 MaxRecvDataSegmentLength declared, not answered", offer: kvs("MaxRecvDataSegmentLength=65536"), want: kvs(),
			check: func(p Params) bool { return p.MaxRecvDataSegmentLength == 65536 }},
		{name: "13.12 MaxRecvDataSegmentLength out of range: Reject", offer: kvs("MaxRecvDataSegmentLength=100"),
			want: kvs("MaxRecvDataSegmentLength=Reject"), check: func(p Params) bool { return p.MaxRecvDataSegmentLength == 8192 }},

		// 13.23 TaskReporting: RFC3720 only.
		{name: "13.23 TaskReporting picks RFC3720", offer: kvs("TaskReporting=FastAbort,RFC3720"), want: kvs("TaskReporting=RFC3720")},
		{name: "13.23 TaskReporting without RFC3720: Reject", offer: kvs("TaskReporting=ResponseFence,FastAbort"), want: kvs("TaskReporting=Reject")},

		// 13.25 obsolete markers.
		{name: "13.25 OFMarker=Yes answered No", offer: kvs("OFMarker=Yes", "IFMarker=No"), want: kvs("OFMarker=No", "IFMarker=No"),
			check: func(p Params) bool { return !p.OFMarker && !p.IFMarker }},
		{name: "13.25 OFMarkInt and IFMarkInt: Reject", offer: kvs("OFMarkInt=2048~8192", "IFMarkInt=1~65535"),
			want: kvs("OFMarkInt=Reject", "IFMarkInt=Reject")},

		// RFC 7145 iSER keys on a TCP target.
		{name: "RFC 7145 RDMAExtensions AND with No", offer: kvs("RDMAExtensions=Yes"), want: kvs("RDMAExtensions=No")},
		{name: "RFC 7145 iSER keys Irrelevant with RDMAExtensions=No",
			offer: kvs("InitiatorRecvDataSegmentLength=262144", "TargetRecvDataSegmentLength=262144", "MaxOutstandingUnexpectedPDUs=0"),
			want:  kvs("InitiatorRecvDataSegmentLength=Irrelevant", "TargetRecvDataSegmentLength=Irrelevant", "MaxOutstandingUnexpectedPDUs=Irrelevant")},

		// 6.2: unknown and extension keys.
		{name: "6.2 unknown key NotUnderstood", offer: kvs("FancyFeature=Yes"), want: kvs("FancyFeature=NotUnderstood")},
		{name: "13.22 X- private key NotUnderstood", offer: kvs("X-com.cisco.protocol=draft20"), want: kvs("X-com.cisco.protocol=NotUnderstood")},
		{name: "13.22 X# public key NotUnderstood", offer: kvs("X#NodeArchitecture=x"), want: kvs("X#NodeArchitecture=NotUnderstood")},
		{name: "unknown key twice is answered twice", offer: kvs("X-a=1", "X-a=2"), want: kvs("X-a=NotUnderstood", "X-a=NotUnderstood")},

		// Login keys belong to the login code.
		{name: "security and login keys skipped",
			offer: kvs("AuthMethod=None", "CHAP_A=5", "InitiatorName=iqn.x", "TargetName=iqn.y", "SessionType=Normal",
				"InitiatorAlias=a", "TargetPortalGroupTag=1", "SendTargets=All", "SRP_U=u", "MaxConnections=1"),
			want: kvs("MaxConnections=1")},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			l := DefaultLimits()
			if r.limits != nil {
				r.limits(&l)
			}
			n := NewNegotiator(l, r.discovery)
			got, err := n.Respond(r.offer)
			if err != nil {
				t.Fatal(err)
			}
			decl := pdu.KV{Key: "MaxRecvDataSegmentLength", Value: strconv.Itoa(int(l.MaxRecvDataSegmentLength))}
			if len(got) == 0 || got[len(got)-1] != decl {
				t.Fatalf("reply %q does not end with the declaration %q", got, decl)
			}
			got = got[:len(got)-1]
			if !reflect.DeepEqual(got, r.want) && !(len(got) == 0 && len(r.want) == 0) {
				t.Fatalf("reply\n got %q\nwant %q", got, r.want)
			}
			if r.check != nil && !r.check(n.Params()) {
				t.Fatalf("params %+v", n.Params())
			}
		})
	}
}

func TestRespondDuplicateKey(t *testing.T) {
	// RFC 7143 6.3: renegotiating a key during login is a protocol error.
	n := NewNegotiator(DefaultLimits(), false)
	_, err := n.Respond(kvs("MaxBurstLength=4096", "MaxBurstLength=8192"))
	if !errors.Is(err, ErrDuplicateKey) {
		t.Fatalf("same request: err = %v", err)
	}
	var ne *NegotiationError
	if !errors.As(err, &ne) || ne.Key != "MaxBurstLength" {
		t.Fatalf("err = %#v", err)
	}

	n = NewNegotiator(DefaultLimits(), false)
	if _, err := n.Respond(kvs("InitialR2T=No")); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Respond(kvs("InitialR2T=Yes")); !errors.Is(err, ErrDuplicateKey) {
		t.Fatalf("later request: err = %v", err)
	}

	// A rejected key counts as negotiated too.
	n = NewNegotiator(DefaultLimits(), false)
	n.Respond(kvs("MaxRecvDataSegmentLength=1"))
	if _, err := n.Respond(kvs("MaxRecvDataSegmentLength=8192")); !errors.Is(err, ErrDuplicateKey) {
		t.Fatalf("after Reject: err = %v", err)
	}
}

func TestRespondBurstOrderAcrossRequests(t *testing.T) {
	// 13.14: FirstBurstLength MUST NOT exceed MaxBurstLength. An initiator
	// that lowers MaxBurstLength below an agreed FirstBurstLength in a later
	// request cannot be answered within the Minimum function.
	n := NewNegotiator(DefaultLimits(), false)
	if _, err := n.Respond(kvs("FirstBurstLength=65536")); err != nil {
		t.Fatal(err)
	}
	_, err := n.Respond(kvs("MaxBurstLength=4096"))
	if !errors.Is(err, ErrBurstOrder) {
		t.Fatalf("err = %v", err)
	}

	// Raising it, or lowering it to FirstBurstLength, is fine.
	n = NewNegotiator(DefaultLimits(), false)
	n.Respond(kvs("FirstBurstLength=65536"))
	if _, err := n.Respond(kvs("MaxBurstLength=65536")); err != nil {
		t.Fatal(err)
	}
}

func TestRespondDeclaresOnce(t *testing.T) {
	n := NewNegotiator(DefaultLimits(), false)
	got, _ := n.Respond(kvs("HeaderDigest=None"))
	if want := kvs("HeaderDigest=None", declaration); !reflect.DeepEqual(got, want) {
		t.Fatalf("first reply %q, want %q", got, want)
	}
	got, _ = n.Respond(kvs("DataDigest=None"))
	if want := kvs("DataDigest=None"); !reflect.DeepEqual(got, want) {
		t.Fatalf("second reply %q, want %q", got, want)
	}
	// A request with no operational key still carries the declaration.
	n = NewNegotiator(DefaultLimits(), false)
	got, _ = n.Respond(nil)
	if want := kvs(declaration); !reflect.DeepEqual(got, want) {
		t.Fatalf("empty request reply %q, want %q", got, want)
	}
	if p := n.Params(); p.TargetMaxRecvDataSegmentLength != 262144 {
		t.Fatalf("TargetMaxRecvDataSegmentLength = %d", p.TargetMaxRecvDataSegmentLength)
	}
}

func TestRespondFullFeaturePhase(t *testing.T) {
	n := NewNegotiator(DefaultLimits(), false)
	if _, err := n.Respond(kvs("MaxRecvDataSegmentLength=8192", "HeaderDigest=None")); err != nil {
		t.Fatal(err)
	}
	n.StartFullFeaturePhase()
	// 13.12 Use: ALL, so it may be declared again; LO/IO keys may not.
	got, err := n.Respond(kvs("SendTargets=All", "MaxRecvDataSegmentLength=65536", "HeaderDigest=CRC32C",
		"MaxBurstLength=4096", "X-vendor=1", "TargetRecvDataSegmentLength=1"))
	if err != nil {
		t.Fatal(err)
	}
	want := kvs("HeaderDigest=Reject", "MaxBurstLength=Reject", "X-vendor=NotUnderstood", "TargetRecvDataSegmentLength=Irrelevant")
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("reply %q, want %q", got, want)
	}
	p := n.Params()
	if p.MaxRecvDataSegmentLength != 65536 || p.HeaderDigest || p.MaxBurstLength != 262144 {
		t.Fatalf("params %+v", p)
	}
	// Each Text request is its own negotiation...
	if _, err := n.Respond(kvs("MaxRecvDataSegmentLength=16384")); err != nil {
		t.Fatal(err)
	}
	// ... within which a key still may not repeat.
	if _, err := n.Respond(kvs("MaxRecvDataSegmentLength=1024", "MaxRecvDataSegmentLength=2048")); !errors.Is(err, ErrDuplicateKey) {
		t.Fatalf("err = %v", err)
	}
}

func TestLimits(t *testing.T) {
	if err := DefaultLimits().Validate(); err != nil {
		t.Fatal(err)
	}
	bad := []func(*Limits){
		func(l *Limits) { l.MaxRecvDataSegmentLength = 511 },
		func(l *Limits) { l.MaxRecvDataSegmentLength = 1 << 24 },
		func(l *Limits) { l.MaxBurstLength = 0 },
		func(l *Limits) { l.FirstBurstLength = l.MaxBurstLength + 1 },
		func(l *Limits) { l.MaxOutstandingR2T = 0 },
		func(l *Limits) { l.MaxConnections = 0 },
		func(l *Limits) { l.DefaultTime2Wait = 3601 },
		func(l *Limits) { l.DefaultTime2Retain = 3601 },
	}
	for i, f := range bad {
		l := DefaultLimits()
		f(&l)
		if l.Validate() == nil {
			t.Errorf("case %d: %+v validated", i, l)
		}
		// Unvalidated limits are clamped: answers stay in range.
		n := NewNegotiator(l, false)
		got, _ := n.Respond(kvs("MaxBurstLength=16777215", "FirstBurstLength=16777215", "MaxOutstandingR2T=65535",
			"MaxConnections=65535", "DefaultTime2Wait=3600", "DefaultTime2Retain=3600"))
		checkAnswers(t, kvs("MaxBurstLength=16777215", "FirstBurstLength=16777215", "MaxOutstandingR2T=65535",
			"MaxConnections=65535", "DefaultTime2Wait=3600", "DefaultTime2Retain=3600"), got)
	}
}

// checkAnswers asserts the selection rules of RFC 7143 6.2.2 and the
// ranges of section 13 for every answer to a numerical or Boolean offer.
func checkAnswers(t *testing.T, offer, reply []pdu.KV) {
	t.Helper()
	offered := map[string]string{}
	for _, kv := range offer {
		offered[kv.Key] = kv.Value
	}
	for _, a := range reply {
		if a.Value == pdu.ValueReject || a.Value == pdu.ValueIrrelevant || a.Value == pdu.ValueNotUnderstood {
			continue
		}
		o, ok := offered[a.Key]
		if !ok {
			if a.Key != "MaxRecvDataSegmentLength" {
				t.Fatalf("answer %q to a key never offered", a)
			}
			continue
		}
		ov, _ := pdu.ParseNumericalValue(o)
		av, aerr := pdu.ParseNumericalValue(a.Value)
		inRange := func(lo, hi uint64) {
			if aerr != nil || av < lo || av > hi {
				t.Fatalf("answer %q outside %d..%d", a, lo, hi)
			}
		}
		switch a.Key {
		case "MaxBurstLength", "FirstBurstLength":
			inRange(512, 1<<24-1)
			if av > ov {
				t.Fatalf("Minimum function broken: offer %s, answer %q", o, a)
			}
		case "MaxConnections", "MaxOutstandingR2T":
			inRange(1, 65535)
			if av > ov {
				t.Fatalf("Minimum function broken: offer %s, answer %q", o, a)
			}
		case "DefaultTime2Retain", "ErrorRecoveryLevel", "iSCSIProtocolLevel":
			inRange(0, 3600)
			if av > ov {
				t.Fatalf("Minimum function broken: offer %s, answer %q", o, a)
			}
		case "DefaultTime2Wait":
			inRange(0, 3600)
			if av < ov {
				t.Fatalf("Maximum function broken: offer %s, answer %q", o, a)
			}
		case "ImmediateData", "RDMAExtensions":
			if o == "No" && a.Value != "No" {
				t.Fatalf("AND function broken: offer %s, answer %q", o, a)
			}
		case "InitialR2T", "DataPDUInOrder", "DataSequenceInOrder":
			if o == "Yes" && a.Value != "Yes" {
				t.Fatalf("OR function broken: offer %s, answer %q", o, a)
			}
		case "HeaderDigest", "DataDigest", "TaskReporting":
			if !strings.Contains(","+o+",", ","+a.Value+",") {
				t.Fatalf("list answer %q not among the offer %s", a, o)
			}
		}
	}
}

// FuzzRespond feeds arbitrary text to a Negotiator: it never panics, and
// every answer obeys the selection rules.
func FuzzRespond(f *testing.F) {
	f.Add([]byte("HeaderDigest=CRC32C,None\x00MaxBurstLength=4096\x00FirstBurstLength=262144\x00"), false)
	f.Add([]byte("InitialR2T=Yes\x00ImmediateData=No\x00FirstBurstLength=65536\x00DefaultTime2Wait=0\x00"), false)
	f.Add([]byte("MaxConnections=1\x00X-x=1\x00OFMarker=Yes\x00ErrorRecoveryLevel=2\x00"), true)
	f.Fuzz(func(t *testing.T, data []byte, discovery bool) {
		offer, err := pdu.ParseText(data)
		if err != nil {
			return
		}
		n := NewNegotiator(DefaultLimits(), discovery)
		reply, err := n.Respond(offer)
		if err != nil {
			var ne *NegotiationError
			if !errors.As(err, &ne) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		checkAnswers(t, offer, reply)
		p := n.Params()
		if p.FirstBurstLength > p.MaxBurstLength && n.firstBurst {
			t.Fatalf("FirstBurstLength %d > MaxBurstLength %d", p.FirstBurstLength, p.MaxBurstLength)
		}
		if p.ErrorRecoveryLevel != 0 || p.OFMarker || p.IFMarker || !p.DataPDUInOrder || !p.DataSequenceInOrder {
			t.Fatalf("params %+v", p)
		}
	})
}
