package tftp

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Real requests, as captured from the clients named.
var (
	// iPXE (src/net/udp/tftp.c tftp_send_rrq): blksize 1432, tsize 0.
	rrqIPXE = []byte("\x00\x01undionly.kpxe\x00octet\x00blksize\x001432\x00tsize\x000\x00")
	// atftp 0.8 with --option "blksize 1468" --option "windowsize 16" --option "tsize 0".
	rrqAtftp = []byte("\x00\x01ipxe.efi\x00octet\x00tsize\x000\x00blksize\x001468\x00windowsize\x0016\x00")
	// tftp-hpa 5.2 client: no options.
	rrqHPA = []byte("\x00\x01pxelinux.0\x00octet\x00")
	// A PXE ROM's size probe (Intel PXE 2.1): tsize only.
	rrqPXEProbe = []byte("\x00\x01undionly.kpxe\x00octet\x00tsize\x000\x00")
	// curl 7.88: tsize and blksize, plus a timeout.
	rrqCurl = []byte("\x00\x01snponly.efi\x00octet\x00tsize\x000\x00blksize\x00512\x00timeout\x006\x00")
)

func TestRequestGolden(t *testing.T) {
	tests := []struct {
		name string
		hex  string
		want Request
	}{
		{"ipxe", "0001 756e64696f6e6c792e6b70786500 6f6374657400 626c6b73697a6500 3134333200 7473697a6500 3000",
			Request{OpRRQ, "undionly.kpxe", "octet", []Option{{"blksize", "1432"}, {"tsize", "0"}}}},
		{"plain", "0001 6100 6e6574617363696900",
			Request{OpRRQ, "a", "netascii", nil}},
		{"wrq", "0002 782f7900 4f4354455400",
			Request{OpWRQ, "x/y", "OCTET", nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := unhex(t, tt.hex)
			got, err := ParseRequest(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			if enc := tt.want.AppendBinary(nil); !bytes.Equal(enc, b) {
				t.Fatalf("encode:\n got %x\nwant %x", enc, b)
			}
		})
	}
}

func TestParseRequestLenient(t *testing.T) {
	// Zero padding after the options, and an option cut off by the end of
	// the packet, are ignored rather than fatal.
	padded := append(append([]byte{}, rrqIPXE...), 0, 0, 0, 0)
	r, err := ParseRequest(padded)
	if err != nil || len(r.Options) != 2 {
		t.Fatalf("padded: %+v, %v", r, err)
	}
	cut := []byte("\x00\x01f\x00octet\x00blksize\x001024\x00tsize\x000")
	r, err = ParseRequest(cut)
	if err != nil || len(r.Options) != 1 || r.Options[0] != (Option{"blksize", "1024"}) {
		t.Fatalf("cut: %+v, %v", r, err)
	}
	if v, ok := r.Option("BLKSIZE"); !ok || v != "1024" {
		t.Fatalf("Option(BLKSIZE) = %q, %v", v, ok)
	}
}

func TestParseRequestErrors(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"one byte", []byte{0}, ErrShort},
		{"ack", []byte{0, 4, 0, 1}, ErrWrongOpcode},
		{"no filename terminator", []byte("\x00\x01file"), ErrMalformed},
		{"empty filename", []byte("\x00\x01\x00octet\x00"), ErrMalformed},
		{"no mode", []byte("\x00\x01file\x00"), ErrMalformed},
		{"mode not terminated", []byte("\x00\x01file\x00oct"), ErrMalformed},
		{"empty mode", []byte("\x00\x01file\x00\x00"), ErrMalformed},
		{"too long", append([]byte("\x00\x01f\x00octet\x00"), make([]byte, MaxRequestLen)...), ErrTooLong},
	}
	for _, tt := range tests {
		if _, err := ParseRequest(tt.b); !errors.Is(err, tt.want) {
			t.Errorf("%s: err %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestParseRequestOptionCap(t *testing.T) {
	b := []byte("\x00\x01f\x00octet\x00")
	for range 100 {
		b = append(b, "x\x00y\x00"...)
	}
	r, err := ParseRequest(b)
	if err != nil || len(r.Options) != MaxOptions {
		t.Fatalf("got %d options, %v; want %d", len(r.Options), err, MaxOptions)
	}
}

func TestDataAckErrorOAckGolden(t *testing.T) {
	d := Data{Block: 0xfffe, Payload: []byte("hi")}
	if got := hex.EncodeToString(d.AppendBinary(nil)); got != "0003fffe6869" {
		t.Errorf("DATA %s", got)
	}
	pd, err := ParseData(unhex(t, "0003 0001"))
	if err != nil || pd.Block != 1 || len(pd.Payload) != 0 {
		t.Errorf("empty DATA: %+v %v", pd, err)
	}
	if _, err := ParseData(unhex(t, "0003 00")); !errors.Is(err, ErrShort) {
		t.Errorf("short DATA: %v", err)
	}
	big := make([]byte, 4+MaxBlockSize+1)
	big[1] = byte(OpDATA)
	if _, err := ParseData(big); !errors.Is(err, ErrTooLong) {
		t.Errorf("oversized DATA: %v", err)
	}
	if _, err := ParseData(make([]byte, 8)); !errors.Is(err, ErrWrongOpcode) {
		t.Errorf("opcode 0 DATA: %v", err)
	}

	a := Ack{Block: 0x1234}
	if got := hex.EncodeToString(a.AppendBinary(nil)); got != "00041234" {
		t.Errorf("ACK %s", got)
	}
	// Padded ACK (seen from PXE stacks that pad frames): accepted.
	pa, err := ParseAck(unhex(t, "0004 0007 0000 0000"))
	if err != nil || pa.Block != 7 {
		t.Errorf("padded ACK: %+v %v", pa, err)
	}
	if _, err := ParseAck(unhex(t, "0004 00")); !errors.Is(err, ErrShort) {
		t.Errorf("short ACK: %v", err)
	}

	e := Error{Code: ErrCodeFileNotFound, Message: "file not found"}
	wantE := "0005 0001 66696c65206e6f7420666f756e6400"
	if got := hex.EncodeToString(e.AppendBinary(nil)); got != strings.ReplaceAll(wantE, " ", "") {
		t.Errorf("ERROR %s", got)
	}
	pe, err := ParseError(unhex(t, wantE))
	if err != nil || pe != e {
		t.Errorf("ERROR parse %+v %v", pe, err)
	}
	// Missing terminator tolerated; long messages cut.
	pe, err = ParseError(append(unhex(t, "0005 0008"), strings.Repeat("x", 1000)...))
	if err != nil || pe.Code != ErrCodeOptionRefused || len(pe.Message) != maxErrorMessage {
		t.Errorf("ERROR unterminated %v %v", pe.Code, err)
	}

	o := OAck{Options: []Option{{"blksize", "1468"}, {"tsize", "70000"}}}
	wantO := "0006 626c6b73697a6500 3134363800 7473697a6500 373030303000"
	if got := hex.EncodeToString(o.AppendBinary(nil)); got != strings.ReplaceAll(wantO, " ", "") {
		t.Errorf("OACK %s", got)
	}
	po, err := ParseOAck(unhex(t, wantO))
	if err != nil || !reflect.DeepEqual(po, o) {
		t.Errorf("OACK parse %+v %v", po, err)
	}
	if v, ok := po.Option("TSIZE"); !ok || v != "70000" {
		t.Errorf("OACK tsize %q", v)
	}
}

func TestNegotiate(t *testing.T) {
	opt := func(kv ...string) []Option {
		var o []Option
		for i := 0; i+1 < len(kv); i += 2 {
			o = append(o, Option{kv[i], kv[i+1]})
		}
		return o
	}
	tests := []struct {
		name      string
		opts      []Option
		size      int64
		maxBlock  int
		wantBlock int
		wantWin   int
		wantOACK  []Option
	}{
		{"none", nil, 100, 1468, 512, 1, nil},
		{"ipxe", opt("blksize", "1432", "tsize", "0"), 70000, 1468, 1432, 1,
			opt("blksize", "1432", "tsize", "70000")},
		{"blksize capped by server", opt("blksize", "65464"), 5, 1468, 1468, 1, opt("blksize", "1468")},
		{"blksize huge capped", opt("blksize", "9999999"), 5, 8192, 8192, 1, opt("blksize", "8192")},
		{"blksize too small ignored", opt("blksize", "7"), 5, 1468, 512, 1, nil},
		{"blksize minimum", opt("blksize", "8"), 5, 1468, 8, 1, opt("blksize", "8")},
		{"blksize junk ignored", opt("blksize", "12a", "tsize", "0"), 5, 1468, 512, 1, opt("tsize", "5")},
		{"blksize signed ignored", opt("blksize", "+512"), 5, 1468, 512, 1, nil},
		{"case insensitive, first wins", opt("BlkSize", "1024", "blksize", "600"), 5, 1468, 1024, 1,
			opt("blksize", "1024")},
		{"timeout", opt("timeout", "3"), 5, 1468, 512, 1, opt("timeout", "3")},
		{"timeout 0 ignored", opt("timeout", "0"), 5, 1468, 512, 1, nil},
		{"timeout 256 ignored", opt("timeout", "256"), 5, 1468, 512, 1, nil},
		{"timeout at the cap", opt("timeout", "10"), 5, 1468, 512, 1, opt("timeout", "10")},
		// RFC 2349 does not let a server lower the timeout (EDK2 checks):
		// above the cap it is left out, the other options still answered.
		{"timeout above the cap ignored", opt("timeout", "255", "tsize", "0"), 5, 1468, 512, 1, opt("tsize", "5")},
		{"windowsize", opt("windowsize", "16"), 5, 1468, 512, 16, opt("windowsize", "16")},
		{"windowsize capped", opt("windowsize", "65535"), 5, 1468, 512, MaxWindowSize,
			opt("windowsize", "64")},
		{"windowsize 0 ignored", opt("windowsize", "0"), 5, 1468, 512, 1, nil},
		{"windowsize too big ignored", opt("windowsize", "65536"), 5, 1468, 512, 1, nil},
		{"tsize unknown size", opt("tsize", "0"), -1, 1468, 512, 1, nil},
		{"unknown options ignored", opt("multicast", "", "utimeout", "5000"), 5, 1468, 512, 1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := negotiate(tt.opts, tt.size, tt.maxBlock, MaxWindowSize, 10*time.Second)
			if n.timeoutIgnored != strings.HasPrefix(tt.name, "timeout above") {
				t.Errorf("timeoutIgnored %v", n.timeoutIgnored)
			}
			if n.blockSize != tt.wantBlock || n.windowSize != tt.wantWin || !reflect.DeepEqual(n.oack, tt.wantOACK) {
				t.Fatalf("got block %d window %d oack %v; want %d %d %v",
					n.blockSize, n.windowSize, n.oack, tt.wantBlock, tt.wantWin, tt.wantOACK)
			}
		})
	}
}

func TestCleanName(t *testing.T) {
	ok := map[string]string{
		"undionly.kpxe":     "undionly.kpxe",
		"./ipxe.efi":        "ipxe.efi",
		"efi//snponly.efi":  "efi/snponly.efi",
		"a/./b":             "a/b",
		`boot\x86\pxe.com`:  `boot\x86\pxe.com`,
		"..foo":             "..foo",
		"dir/..hidden/file": "dir/..hidden/file",
	}
	for in, want := range ok {
		if got, valid := cleanName(in); !valid || got != want {
			t.Errorf("cleanName(%q) = %q, %v; want %q", in, got, valid, want)
		}
	}
	for _, bad := range []string{"", "/etc/passwd", "../../etc/passwd", "..", "a/../../b", "a/..", "a/../b",
		"//etc/passwd", ".", "./", "a\x00b"} {
		if got, valid := cleanName(bad); valid {
			t.Errorf("cleanName(%q) = %q, accepted", bad, got)
		}
	}
}
