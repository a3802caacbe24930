package iscsi

import (
	"bytes"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/diskless-boot/diskless/internal/iscsi/pdu"
)

var (
	initiatorCreds = Credentials{User: "iqn.2010-04.org.ipxe:client", Secret: "initiator-secret"}
	targetCreds    = Credentials{User: "diskless-target", Secret: "target-secret!"}
)

// seq returns a deterministic "random" source: CHAP_I 42, then the bytes
// 0, 1, 2, ... as challenge.
func seq() *bytes.Reader {
	b := []byte{42}
	for i := range 32 {
		b = append(b, byte(i))
	}
	return bytes.NewReader(b)
}

func hexRange(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return "0x" + hex.EncodeToString(b)
}

// TestCHAPKnownAnswers checks R = H(I || secret || C) against vectors
// computed independently (Python hashlib) for each algorithm, and the
// choice of algorithm: the first of the initiator's list the target knows.
func TestCHAPKnownAnswers(t *testing.T) {
	const (
		md5R     = "0x146466a8b34b56526e0619fa9872f517"
		sha256R  = "0x80489e262cb88eeb289d9df6ca4cc01b520ad3cd6ce51dd68d37d58f66984cf4"
		sha3256R = "0x83933584898be9c611901ab813c4c8e336173fabba8fd7c0462b1212817a7f5d"
	)
	tests := []struct {
		name, chapA, wantA, r string
		clen                  int
	}{
		{"iPXE: MD5 only", "5", "5", md5R, 16},
		{"libiscsi test_iscsi_chap_simple: 5,6,7,8 picks 5", "5,6,7,8", "5", md5R, 16},
		{"SHA-256", "7", "7", sha256R, 32},
		{"open-iscsi SHA3-256 first", "8,7,5", "8", sha3256R, 32},
		{"SHA-1 (6) not supported, next one taken", "6,7", "7", sha256R, 32},
		{"unknown values ignored (RFC 7143 6.2.1)", "X,0x5", "5", md5R, 16},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := NewCHAPAuthenticator(initiatorCreds, nil, seq())
			reply, done, err := a.Step(kvs("CHAP_A=" + tt.chapA))
			if err != nil || done {
				t.Fatalf("step 1: done %v, err %v", done, err)
			}
			want := kvs("CHAP_A="+tt.wantA, "CHAP_I=42", "CHAP_C="+hexRange(tt.clen))
			if !reflect.DeepEqual(reply, want) {
				t.Fatalf("step 1 reply %q, want %q", reply, want)
			}
			reply, done, err = a.Step(kvs("CHAP_N="+initiatorCreds.User, "CHAP_R="+tt.r))
			if err != nil || !done || len(reply) != 0 {
				t.Fatalf("step 2: reply %q, done %v, err %v", reply, done, err)
			}
		})
	}
}

// TestCHAPEncodings: CHAP_R arrives in lower-case hex (iPXE), upper-case hex
// (libiscsi) or base64 (libiscsi test_iscsi_chap_base64), RFC 7143 6.1.
func TestCHAPEncodings(t *testing.T) {
	raw, _ := hex.DecodeString("146466a8b34b56526e0619fa9872f517")
	for _, r := range []string{
		"0x146466a8b34b56526e0619fa9872f517",
		"0X146466A8B34B56526E0619FA9872F517",
		"0b" + base64.StdEncoding.EncodeToString(raw),
		"0B" + base64.RawStdEncoding.EncodeToString(raw),
	} {
		a := NewCHAPAuthenticator(initiatorCreds, nil, seq())
		a.Step(kvs("CHAP_A=5"))
		if _, done, err := a.Step(kvs("CHAP_N="+initiatorCreds.User, "CHAP_R="+r)); err != nil || !done {
			t.Errorf("CHAP_R=%s: done %v, err %v", r, done, err)
		}
	}
}

// TestCHAPMutual runs a whole mutual exchange the way iPXE does it: the
// initiator's challenge travels with its response (iPXE
// iscsi_handle_chap_c_value), and the target's answer is checked here with
// an MD5 computed by hand.
func TestCHAPMutual(t *testing.T) {
	a := NewCHAPAuthenticator(initiatorCreds, &targetCreds, seq())
	first, _, err := a.Step(kvs("AuthMethod=CHAP", "CHAP_A=5")) // non-CHAP keys are ignored
	if err != nil {
		t.Fatal(err)
	}
	if first[2].Value != hexRange(16) {
		t.Fatalf("challenge %q", first[2].Value)
	}
	ourChallenge := make([]byte, 16)
	for i := range ourChallenge {
		ourChallenge[i] = byte(0xa0 + i)
	}
	h := md5.New()
	h.Write([]byte{42})
	h.Write([]byte(initiatorCreds.Secret))
	for i := range 16 {
		h.Write([]byte{byte(i)})
	}
	r := hex.EncodeToString(h.Sum(nil))
	reply, done, err := a.Step(kvs("CHAP_N="+initiatorCreds.User, "CHAP_R=0x"+r,
		"CHAP_I=7", "CHAP_C=0x"+hex.EncodeToString(ourChallenge)))
	if err != nil || !done {
		t.Fatalf("done %v, err %v", done, err)
	}
	// By hand: MD5(0x07 || "target-secret!" || a0..af).
	sum := md5.Sum(append(append([]byte{7}, targetCreds.Secret...), ourChallenge...))
	want := kvs("CHAP_N="+targetCreds.User, "CHAP_R=0x"+hex.EncodeToString(sum[:]))
	if !reflect.DeepEqual(reply, want) {
		t.Fatalf("reply %q, want %q", reply, want)
	}
	if want[1].Value != "0x441c476515f4650a7a9463358ae54be2" { // Python hashlib
		t.Fatalf("hand-computed MD5 disagrees with the reference: %s", want[1].Value)
	}

	// libiscsi: upper-case hex, 2x digest-size challenge, CHAP_I before CHAP_C.
	a = NewCHAPAuthenticator(initiatorCreds, &targetCreds, seq())
	a.Step(kvs("CHAP_A=5"))
	reply, done, err = a.Step(kvs("CHAP_N="+initiatorCreds.User, "CHAP_R=0x"+strings.ToUpper(r),
		"CHAP_I=1", "CHAP_C=0x"+strings.Repeat("5A", 32)))
	if err != nil || !done || len(reply) != 2 || reply[0].Key != "CHAP_N" || len(reply[1].Value) != 2+32 {
		t.Fatalf("libiscsi style: reply %q, done %v, err %v", reply, done, err)
	}

	// Mutual credentials configured but the initiator only authenticates
	// itself: one-way CHAP, nothing to answer.
	a = NewCHAPAuthenticator(initiatorCreds, &targetCreds, seq())
	a.Step(kvs("CHAP_A=5"))
	reply, done, err = a.Step(kvs("CHAP_N="+initiatorCreds.User, "CHAP_R=0x"+r))
	if err != nil || !done || len(reply) != 0 {
		t.Fatalf("one-way: reply %q, done %v, err %v", reply, done, err)
	}
}

// TestCHAPFailures: each must fail with an AuthError, and then stay failed.
func TestCHAPFailures(t *testing.T) {
	const goodR = "CHAP_R=0x146466a8b34b56526e0619fa9872f517"
	goodN := "CHAP_N=" + initiatorCreds.User
	tests := []struct {
		name   string
		mutual *Credentials
		creds  Credentials
		step1  []pdu.KV
		step2  []pdu.KV
	}{
		{name: "libiscsi test_iscsi_chap_invalid: CHAP_A=56", step1: kvs("CHAP_A=56")},
		{name: "libiscsi test_iscsi_chap_invalid: empty CHAP_A", step1: kvs("CHAP_A=")},
		{name: "SHA-1 only", step1: kvs("CHAP_A=6")},
		{name: "CHAP_A missing", step1: kvs("AuthMethod=CHAP")},
		{name: "response before challenge", step1: kvs("CHAP_A=5", goodN, goodR)},
		{name: "CHAP_A twice", step1: kvs("CHAP_A=5", "CHAP_A=7")},
		{name: "unknown CHAP key", step1: kvs("CHAP_A=5", "CHAP_X=1")},
		{name: "wrong secret", creds: Credentials{User: initiatorCreds.User, Secret: "other-secret"},
			step2: kvs(goodN, goodR)},
		{name: "wrong name", step2: kvs("CHAP_N=mallory", goodR)},
		{name: "CHAP_N missing", step2: kvs(goodR)},
		{name: "CHAP_R missing", step2: kvs(goodN)},
		{name: "CHAP_R malformed", step2: kvs(goodN, "CHAP_R=146466a8b34b56526e0619fa9872f517")},
		{name: "CHAP_R truncated", step2: kvs(goodN, "CHAP_R=0x146466a8b34b56526e0619fa9872f5")},
		{name: "CHAP_R too long", step2: kvs(goodN, "CHAP_R=0x146466a8b34b56526e0619fa9872f51700")},
		{name: "CHAP_A again", step2: kvs("CHAP_A=5", goodN, goodR)},
		{name: "no secret configured", creds: Credentials{User: initiatorCreds.User}, step2: kvs(goodN, "CHAP_R=0x"+strings.Repeat("00", 16))},
		{name: "mutual asked, target has no credentials",
			step2: kvs(goodN, goodR, "CHAP_I=1", "CHAP_C=0x"+strings.Repeat("ab", 16))},
		{name: "reflected challenge (RFC 7143 12.1.3)", mutual: &targetCreds,
			step2: kvs(goodN, goodR, "CHAP_I=42", "CHAP_C="+hexRange(16))},
		{name: "reflected challenge in base64", mutual: &targetCreds,
			step2: kvs(goodN, goodR, "CHAP_I=9", "CHAP_C=0b"+base64.StdEncoding.EncodeToString([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}))},
		{name: "same secret both ways (RFC 7143 12.1.3)", mutual: &Credentials{User: "t", Secret: initiatorCreds.Secret},
			step2: kvs(goodN, goodR, "CHAP_I=1", "CHAP_C=0x"+strings.Repeat("ab", 16))},
		{name: "challenge too short", mutual: &targetCreds,
			step2: kvs(goodN, goodR, "CHAP_I=1", "CHAP_C=0x"+strings.Repeat("ab", 15))},
		{name: "challenge too long", mutual: &targetCreds,
			step2: kvs(goodN, goodR, "CHAP_I=1", "CHAP_C=0x"+strings.Repeat("ab", 1025))},
		{name: "CHAP_I above 255", mutual: &targetCreds,
			step2: kvs(goodN, goodR, "CHAP_I=256", "CHAP_C=0x"+strings.Repeat("ab", 16))},
		{name: "CHAP_I without CHAP_C", mutual: &targetCreds, step2: kvs(goodN, goodR, "CHAP_I=1")},
		{name: "CHAP_C without CHAP_I", mutual: &targetCreds, step2: kvs(goodN, goodR, "CHAP_C=0x"+strings.Repeat("ab", 16))},
		{name: "CHAP_C malformed", mutual: &targetCreds, step2: kvs(goodN, goodR, "CHAP_I=1", "CHAP_C=0xzz")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			creds := initiatorCreds
			if tt.creds != (Credentials{}) {
				creds = tt.creds
			}
			a := NewCHAPAuthenticator(creds, tt.mutual, seq())
			step1 := tt.step1
			if step1 == nil {
				step1 = kvs("CHAP_A=5")
			}
			_, _, err := a.Step(step1)
			if tt.step1 == nil {
				if err != nil {
					t.Fatal(err)
				}
				_, _, err = a.Step(tt.step2)
			}
			var ae *AuthError
			if !errors.As(err, &ae) {
				t.Fatalf("err = %v, want an AuthError", err)
			}
			for _, secret := range []string{creds.Secret, targetCreds.Secret, initiatorCreds.Secret} {
				if secret != "" && strings.Contains(err.Error(), secret) {
					t.Fatalf("error %q leaks a secret", err)
				}
			}
			// A failed authenticator stays failed, even given good keys.
			if _, done, err := a.Step(kvs(goodN, goodR)); err == nil || done {
				t.Fatalf("after failure: done %v, err %v", done, err)
			}
		})
	}
}

func TestCHAPAfterDone(t *testing.T) {
	a := NewCHAPAuthenticator(initiatorCreds, nil, seq())
	a.Step(kvs("CHAP_A=5"))
	if _, done, err := a.Step(kvs("CHAP_N="+initiatorCreds.User, "CHAP_R=0x146466a8b34b56526e0619fa9872f517")); !done || err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Step(kvs("CHAP_A=5")); err == nil {
		t.Fatal("a second exchange was accepted")
	}
}

func TestCHAPRandomFailure(t *testing.T) {
	a := NewCHAPAuthenticator(initiatorCreds, nil, bytes.NewReader([]byte{1, 2, 3}))
	_, _, err := a.Step(kvs("CHAP_A=5"))
	var ae *AuthError
	if err == nil || errors.As(err, &ae) {
		t.Fatalf("err = %v, want a target (non-authentication) error", err)
	}
}

// TestCHAPNameIsText: libiscsi test_iscsi_chap_hex_name_prefix logs in with
// a CHAP name that starts with "0x"; it must not be decoded.
func TestCHAPNameIsText(t *testing.T) {
	creds := Credentials{User: "0x6a6f65", Secret: initiatorCreds.Secret}
	a := NewCHAPAuthenticator(creds, nil, seq())
	a.Step(kvs("CHAP_A=5"))
	if _, done, err := a.Step(kvs("CHAP_N=0x6a6f65", "CHAP_R=0x146466a8b34b56526e0619fa9872f517")); !done || err != nil {
		t.Fatal(err)
	}
	a = NewCHAPAuthenticator(creds, nil, seq())
	a.Step(kvs("CHAP_A=5"))
	if _, _, err := a.Step(kvs("CHAP_N=joe", "CHAP_R=0x146466a8b34b56526e0619fa9872f517")); err == nil {
		t.Fatal("decoded name accepted")
	}
}

func TestSelectAuthMethod(t *testing.T) {
	tests := []struct {
		offered  string
		required bool
		want     string // "" = error
	}{
		{"CHAP,None", true, "CHAP"}, // iPXE with credentials, open-iscsi, libiscsi
		{"CHAP", true, "CHAP"},      // iPXE with mutual credentials
		{"None", true, ""},          // iPXE without credentials, target requires CHAP
		{"CHAP,None", false, "None"},
		{"None", false, "None"},
		{"SRP,CHAP,None", false, "None"},
		{"CHAP", false, ""}, // no credentials to check it with
		{"KRB5,SRP", true, ""},
		{"", false, ""},
		{"none", false, ""}, // values are case-sensitive
	}
	for _, tt := range tests {
		got, err := SelectAuthMethod(tt.offered, tt.required)
		var ae *AuthError
		switch {
		case tt.want == "" && !errors.As(err, &ae):
			t.Errorf("SelectAuthMethod(%q, %v) = %q, %v; want an AuthError", tt.offered, tt.required, got, err)
		case tt.want != "" && (err != nil || got != tt.want):
			t.Errorf("SelectAuthMethod(%q, %v) = %q, %v; want %q", tt.offered, tt.required, got, err, tt.want)
		}
	}
}

func TestCredentialsRedacted(t *testing.T) {
	c := Credentials{User: "alice", Secret: "hunter2hunter2"}
	for _, s := range []string{
		fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s", c, c, c, c), fmt.Sprintf("%v", &c), fmt.Sprintf("%+v", struct{ C Credentials }{c}),
	} {
		if strings.Contains(s, c.Secret) || !strings.Contains(s, "alice") {
			t.Errorf("formatted %q", s)
		}
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("login", "chap", c, "ptr", &c)
	if strings.Contains(buf.String(), c.Secret) || !strings.Contains(buf.String(), "alice") {
		t.Errorf("slog: %s", buf.String())
	}
}

// FuzzCHAPStep drives two steps with arbitrary keys: no panic, every error
// typed, and no success without the right response.
func FuzzCHAPStep(f *testing.F) {
	f.Add([]byte("CHAP_A=5\x00"), []byte("CHAP_N=iqn.2010-04.org.ipxe:client\x00CHAP_R=0x146466a8b34b56526e0619fa9872f517\x00CHAP_I=7\x00CHAP_C=0xa0a1a2a3a4a5a6a7a8a9aaabacadaeaf\x00"))
	f.Add([]byte("CHAP_A=8,7,5\x00"), []byte("CHAP_N=iqn.2010-04.org.ipxe:client\x00CHAP_R=0b\x00"))
	f.Add([]byte("CHAP_A=5,6,7,8\x00"), []byte("CHAP_N=x\x00CHAP_R=0x00\x00CHAP_I=1\x00CHAP_C=0x"+strings.Repeat("5A", 32)+"\x00"))
	f.Fuzz(func(t *testing.T, d1, d2 []byte) {
		k1, err1 := pdu.ParseText(d1)
		k2, err2 := pdu.ParseText(d2)
		if err1 != nil || err2 != nil {
			return
		}
		a := NewCHAPAuthenticator(initiatorCreds, &targetCreds, seq())
		for i, k := range [][]pdu.KV{k1, k2} {
			reply, done, err := a.Step(k)
			if err != nil {
				var ae *AuthError
				if !errors.As(err, &ae) {
					t.Fatalf("step %d: untyped error %v", i, err)
				}
				return
			}
			if done {
				// Only the right CHAP_R gets here; the fuzzer cannot
				// know it unless it is the seed's.
				var r string
				for _, kv := range k {
					if kv.Key == "CHAP_R" {
						r = kv.Value
					}
				}
				got, _ := pdu.DecodeBinaryValue(r, 1024)
				want := chapResponse(a.alg, a.id, initiatorCreds.Secret, a.challenge)
				if !bytes.Equal(got, want) {
					t.Fatalf("authenticated with CHAP_R %q", r)
				}
				for _, kv := range reply {
					if strings.Contains(kv.Value, targetCreds.Secret) {
						t.Fatal("secret in reply")
					}
				}
			}
		}
	})
}

// The login hooks tell a normal session's login and a refused one, with
// the ISID (which tells iPXE from open-iscsi) and whether CHAP refused it.
func TestLoginHooks(t *testing.T) {
	var mu sync.Mutex
	var logins []LoginEvent
	var failures []LoginFailure
	cfg := Config{
		OnLogin:       func(e LoginEvent) { mu.Lock(); logins = append(logins, e); mu.Unlock() },
		OnLoginFailed: func(f LoginFailure) { mu.Lock(); failures = append(failures, f); mu.Unlock() },
	}
	creds := &Credentials{User: "host1", Secret: "secret-of-host1"}
	_, addr := startTargetWith(t, cfg, func(tg *Target) { tg.CHAP = creds })
	const isid = 0x400027230001 // iPXE's kind
	bad := dialInitiator(t, addr)
	if st := bad.login(loginOpts{initiator: testInitiator1, target: testIQN, isid: isid, chapUser: "host1", chapSec: "guessed"}); st != pdu.LoginAuthFailure {
		t.Fatalf("wrong secret: 0x%04x", st)
	}
	good := dialInitiator(t, addr)
	if st := good.login(loginOpts{initiator: testInitiator1, target: testIQN, isid: isid, chapUser: "host1", chapSec: "secret-of-host1"}); st != 0 {
		t.Fatalf("login 0x%04x", st)
	}
	waitFor(t, "hooks", func() bool { mu.Lock(); defer mu.Unlock(); return len(logins) == 1 && len(failures) == 1 })
	mu.Lock()
	defer mu.Unlock()
	if f := failures[0]; !f.Auth || f.ISID != isid || f.Target != testIQN || f.Initiator != testInitiator1 || f.Err == nil {
		t.Errorf("failure %+v", f)
	}
	if e := logins[0]; e.ISID != isid || e.Target != testIQN {
		t.Errorf("login %+v", e)
	}
	good.logout()
}
