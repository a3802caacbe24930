package pdu

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// nul joins pairs the way initiators put them on the wire.
func nul(pairs ...string) []byte {
	var b []byte
	for _, p := range pairs {
		b = append(b, p...)
		b = append(b, 0)
	}
	return b
}

// padded adds the zero padding a PDU data segment carries (RFC 7143 11.2.3).
func padded(b []byte) []byte { return append(b, make([]byte, Pad(len(b)))...) }

// Login data as real initiators send it. Sources:
//   - iPXE src/net/tcp/iscsi.c iscsi_build_login_request_strings
//   - open-iscsi usr/login.c fill_op_params_text, usr/auth.c
//   - libiscsi lib/login.c iscsi_login_add_*
var (
	ipxeSecurity = nul(
		"InitiatorName=iqn.2010-04.org.ipxe:52540012345",
		"TargetName=iqn.2026-11.org.example:disk1",
		"SessionType=Normal",
		"AuthMethod=CHAP,None",
	)
	ipxeCHAPA        = nul("CHAP_A=5")
	ipxeCHAPResponse = nul(
		"CHAP_N=pxeuser",
		"CHAP_R=0x8cb2ae3b9b5d8c3a1e7f3f6b2d8a0c1e",
		"CHAP_I=201",
		"CHAP_C=0x0123456789abcdef0123456789abcdef",
	)
	ipxeOperational = nul(
		"HeaderDigest=None",
		"DataDigest=None",
		"MaxConnections=1",
		"InitialR2T=Yes",
		"ImmediateData=No",
		"MaxRecvDataSegmentLength=8192",
		"MaxBurstLength=262144",
		"FirstBurstLength=65536",
		"DefaultTime2Wait=0",
		"DefaultTime2Retain=0",
		"MaxOutstandingR2T=1",
		"DataPDUInOrder=Yes",
		"DataSequenceInOrder=Yes",
		"ErrorRecoveryLevel=0",
	)
	openISCSISecurity = nul(
		"InitiatorName=iqn.1993-08.org.debian:01:9b3e5634fdb9",
		"InitiatorAlias=client",
		"TargetName=iqn.2026-11.org.example:disk1",
		"SessionType=Normal",
		"AuthMethod=CHAP,None",
	)
	openISCSICHAPA       = nul("CHAP_A=8,7,5")
	openISCSIOperational = nul(
		"HeaderDigest=None",
		"DataDigest=None",
		"DefaultTime2Wait=2",
		"DefaultTime2Retain=0",
		"IFMarker=No",
		"OFMarker=No",
		"ErrorRecoveryLevel=0",
		"InitialR2T=No",
		"ImmediateData=Yes",
		"MaxBurstLength=16776192",
		"FirstBurstLength=262144",
		"MaxOutstandingR2T=1",
		"MaxConnections=1",
		"DataPDUInOrder=Yes",
		"DataSequenceInOrder=Yes",
		"MaxRecvDataSegmentLength=262144",
	)
	openISCSIDiscovery = nul(
		"InitiatorName=iqn.1993-08.org.debian:01:9b3e5634fdb9",
		"SessionType=Discovery",
		"AuthMethod=None",
	)
	libiscsiOperational = nul(
		"HeaderDigest=None,CRC32C",
		"DataDigest=None",
		"InitialR2T=No",
		"ImmediateData=Yes",
		"MaxBurstLength=262144",
		"FirstBurstLength=262144",
		"MaxRecvDataSegmentLength=262144",
		"DataPDUInOrder=Yes",
		"DefaultTime2Wait=2",
		"DefaultTime2Retain=0",
		"IFMarker=No",
		"OFMarker=No",
		"MaxConnections=1",
		"MaxOutstandingR2T=1",
		"ErrorRecoveryLevel=0",
		"DataSequenceInOrder=Yes",
	)
	libiscsiMutual = nul(
		"CHAP_N=0xuser",
		"CHAP_R=0x0A1B2C3D4E5F60718293A4B5C6D7E8F9",
		"CHAP_I=1",
		"CHAP_C=0x"+strings.Repeat("5A", 32),
	)
	sendTargets = nul("SendTargets=All")
)

func realLoginData() [][]byte {
	return [][]byte{
		ipxeSecurity, ipxeCHAPA, ipxeCHAPResponse, ipxeOperational,
		openISCSISecurity, openISCSICHAPA, openISCSIOperational, openISCSIDiscovery,
		libiscsiOperational, libiscsiMutual, sendTargets,
	}
}

func TestParseTextGolden(t *testing.T) {
	// "HeaderDigest=None\0MaxBurstLength=262144\0" + 2 bytes of padding.
	golden, _ := hex.DecodeString("486561646572446967657374" + "3d" + "4e6f6e65" + "00" +
		"4d61784275727374" + "4c656e677468" + "3d" + "323632313434" + "00" + "0000")
	want := []KV{{"HeaderDigest", "None"}, {"MaxBurstLength", "262144"}}
	got, err := ParseText(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseText = %q, want %q", got, want)
	}
	if enc := AppendText(nil, want...); !bytes.Equal(enc, golden[:len(golden)-2]) {
		t.Fatalf("AppendText = %x, want %x", enc, golden[:len(golden)-2])
	}
}

func TestParseTextRealInitiators(t *testing.T) {
	for i, data := range realLoginData() {
		kvs, err := ParseText(padded(data))
		if err != nil {
			t.Fatalf("seed %d: %v", i, err)
		}
		if n := bytes.Count(data, []byte{0}); len(kvs) != n {
			t.Fatalf("seed %d: %d pairs, want %d", i, len(kvs), n)
		}
		if re := AppendText(nil, kvs...); !bytes.Equal(re, data) {
			t.Fatalf("seed %d: round trip changed the data:\n%q\n%q", i, re, data)
		}
	}
	kvs, _ := ParseText(ipxeOperational)
	if kvs[5] != (KV{"MaxRecvDataSegmentLength", "8192"}) {
		t.Fatalf("order not kept: %q", kvs[5])
	}
}

func TestParseTextAccepts(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want []KV
	}{
		{"empty segment", nil, []KV{}},
		{"only padding", []byte{0, 0, 0, 0}, []KV{}},
		{"empty value", nul("CHAP_A="), []KV{{"CHAP_A", ""}}},
		{"value with =", nul("X-a=b=c"), []KV{{"X-a", "b=c"}}},
		{"empty string between pairs", append(append(nul("A=1"), 0), nul("B=2")...), []KV{{"A", "1"}, {"B", "2"}}},
		{"public extension key (RFC 7143 13.22)", nul("X#NodeArchitecture=diskless"), []KV{{"X#NodeArchitecture", "diskless"}}},
		{"lower-case initial (RFC 7143 13.24)", nul("iSCSIProtocolLevel=1"), []KV{{"iSCSIProtocolLevel", "1"}}},
		{"63-byte key", nul(strings.Repeat("K", 63) + "=v"), []KV{{strings.Repeat("K", 63), "v"}}},
		{"255-byte value", nul("TargetAlias=" + strings.Repeat("v", 255)), []KV{{"TargetAlias", strings.Repeat("v", 255)}}},
		{"CHAP_C of 1024 bytes (RFC 7143 12.1.3)", nul("CHAP_C=0x" + strings.Repeat("ab", 1024)), []KV{{"CHAP_C", "0x" + strings.Repeat("ab", 1024)}}},
		{"repeated key kept", nul("A=1", "A=2"), []KV{{"A", "1"}, {"A", "2"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseText(tt.data)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseTextRejects(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want error
		off  int
	}{
		{"missing =", nul("A=1", "HeaderDigest"), ErrTextNoSeparator, 4},
		{"unterminated last pair (RFC 7143 6.1)", []byte("A=1\x00B=2"), ErrTextUnterminated, 4},
		{"empty key", nul("=x"), ErrTextKey, 0},
		{"64-byte key", nul(strings.Repeat("K", 64) + "=v"), ErrTextKey, 0},
		{"space in key", nul("Max Burst=1"), ErrTextKey, 0},
		{"non-ASCII key", nul("Kéy=1"), ErrTextKey, 0},
		{"256-byte value", nul("TargetAlias=" + strings.Repeat("v", 256)), ErrTextValueTooLong, 0},
		{"long value outside CHAP", nul("X-big=" + strings.Repeat("a", 300)), ErrTextValueTooLong, 0},
		{"CHAP_N is not a large value", nul("CHAP_N=" + strings.Repeat("u", 256)), ErrTextValueTooLong, 0},
		{"CHAP_R over 8192", nul("CHAP_R=0x" + strings.Repeat("a", 8191)), ErrTextValueTooLong, 0},
		{"too long", make([]byte, TextMaxLen+1), ErrTextTooLong, 0},
		{"too many pairs", bytes.Repeat(nul("A=1"), TextMaxPairs+1), ErrTextTooManyPairs, 4 * TextMaxPairs},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kvs, err := ParseText(tt.data)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v (kvs %q)", err, tt.want, kvs)
			}
			var te *TextError
			if !errors.As(err, &te) || te.Offset != tt.off {
				t.Fatalf("err = %#v, want offset %d", err, tt.off)
			}
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLong) {
				t.Fatalf("%v wraps neither ErrMalformed nor ErrTooLong", err)
			}
			if len(te.Key) > TextMaxKeyLen {
				t.Fatalf("error key not clipped: %d bytes", len(te.Key))
			}
		})
	}
}

func TestParseNumericalValue(t *testing.T) {
	good := map[string]uint64{
		"0":                    0,
		"8192":                 8192,
		"16777215":             16777215,
		"0x2000":               8192,
		"0XfF":                 255,
		"18446744073709551615": 1<<64 - 1,
	}
	for s, want := range good {
		if got, err := ParseNumericalValue(s); err != nil || got != want {
			t.Errorf("ParseNumericalValue(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	// RFC 7143 6.1: unsigned decimal or hex only, below 2^64.
	for _, s := range []string{"", "-1", "+1", " 1", "1 ", "0x", "0xg", "0b1234", "1e3", "18446744073709551616", "1_000", "Yes"} {
		if v, err := ParseNumericalValue(s); err == nil {
			t.Errorf("ParseNumericalValue(%q) = %d, want error", s, v)
		}
	}
}

func TestDecodeBinaryValue(t *testing.T) {
	tests := []struct {
		in   string
		want []byte
	}{
		{"0x0102ff", []byte{1, 2, 0xff}},
		{"0X0A0b", []byte{0x0a, 0x0b}},
		{"0x102", []byte{0x01, 0x02}}, // odd digit count: leading zero nibble (RFC 7143 6.1)
		{"0bAQL/", []byte{1, 2, 0xff}},
		{"0BAQI=", []byte{1, 2}},
		{"0bAQI", []byte{1, 2}},
		{"0bAQ==", []byte{1}},
	}
	for _, tt := range tests {
		got, err := DecodeBinaryValue(tt.in, 16)
		if err != nil || !bytes.Equal(got, tt.want) {
			t.Errorf("DecodeBinaryValue(%q) = %x, %v; want %x", tt.in, got, err, tt.want)
		}
	}
	for _, s := range []string{"", "0x", "0b", "0b==", "1234", "0y12", "0x12zz", "0b!!!!", "0bA"} {
		if b, err := DecodeBinaryValue(s, 16); err == nil {
			t.Errorf("DecodeBinaryValue(%q) = %x, want error", s, b)
		}
	}
	if _, err := DecodeBinaryValue("0x"+strings.Repeat("00", 17), 16); !errors.Is(err, ErrTextValueTooLarge) {
		t.Errorf("17 bytes with max 16: err = %v", err)
	}
	if _, err := DecodeBinaryValue("0b"+strings.Repeat("A", 24), 16); !errors.Is(err, ErrTextValueTooLarge) {
		t.Errorf("18 base64 bytes with max 16: err = %v", err)
	}
	b := []byte{0, 1, 0xab, 0xff}
	if s := EncodeHexValue(b); s != "0x0001abff" {
		t.Errorf("EncodeHexValue = %q", s)
	}
}
