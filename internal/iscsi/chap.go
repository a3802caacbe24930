package iscsi

// Target side of CHAP authentication (RFC 1994, RFC 7143 section 12.1.3):
//
//	I->T  AuthMethod=CHAP,None ...          (SelectAuthMethod answers CHAP)
//	I->T  CHAP_A=<A1,A2,...>
//	T->I  CHAP_A=<A> CHAP_I=<I> CHAP_C=<C>
//	I->T  CHAP_N=<N> CHAP_R=<R> [CHAP_I=<I'> CHAP_C=<C'>]   (mutual when I', C')
//	T->I  [CHAP_N=<N'> CHAP_R=<R'>]
//
// R = H(I || secret || C) with H the hash of algorithm A. iPXE, open-iscsi
// and libiscsi all send the initiator's challenge in the same PDU as its
// response, and expect the target's response in the PDU that leaves the
// security stage.

import (
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha3"
	"crypto/subtle"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"strconv"
	"strings"

	"github.com/diskless-boot/diskless/internal/iscsi/pdu"
)

// Credentials are a CHAP name and secret. Printing them, with fmt or slog,
// shows the name only.
type Credentials struct {
	User   string
	Secret string
}

const redacted = "REDACTED"

// String redacts the secret.
func (c Credentials) String() string {
	return fmt.Sprintf("{User:%q Secret:%s}", c.User, redacted)
}

// GoString redacts the secret from %#v too.
func (c Credentials) GoString() string { return "iscsi.Credentials" + c.String() }

// LogValue redacts the secret in structured logs.
func (c Credentials) LogValue() slog.Value {
	return slog.GroupValue(slog.String("user", c.User), slog.String("secret", redacted))
}

// AuthError is an authentication failure. The login code answers it with a
// Login Response of status 0x0201, Authentication failure (RFC 7143
// 11.13.5), which ends the connection. Its text never holds a secret.
type AuthError struct{ Reason string }

func (e *AuthError) Error() string { return "iscsi: authentication failed: " + e.Reason }

func authErrorf(format string, args ...any) error {
	return &AuthError{Reason: fmt.Sprintf(format, args...)}
}

// SelectAuthMethod answers an initiator's AuthMethod offer (RFC 7143
// 12.1): CHAP when the target requires it (CHAP credentials configured),
// None otherwise. When the offer lacks that method the error is an
// AuthError: the target does not let the initiator pick a weaker method, nor
// a stronger one it cannot verify.
func SelectAuthMethod(offered string, chapRequired bool) (string, error) {
	want := pdu.ValueNone
	if chapRequired {
		want = "CHAP"
	}
	for _, m := range strings.Split(offered, ",") {
		if m == want {
			return want, nil
		}
	}
	return "", authErrorf("AuthMethod %q does not offer %s", clipValue(offered), want)
}

// chapAlgorithm is a CHAP_A value (IANA "PPP Authentication Algorithms").
type chapAlgorithm struct {
	id   uint64
	size int // digest size, also our challenge length
	hash func() hash.Hash
}

// The algorithms the target supports. The initiator's order decides: MD5 is
// the one RFC 7143 12.1.3 requires (and the only one iPXE knows); libiscsi
// computes with its own configured algorithm whatever the target picks, so
// the target must take the first one offered that it supports.
var chapAlgorithms = []chapAlgorithm{
	{id: 5, size: md5.Size, hash: md5.New},
	{id: 7, size: sha256.Size, hash: sha256.New},
	{id: 8, size: 32, hash: func() hash.Hash { return sha3.New256() }},
}

// Challenge lengths accepted from the initiator for mutual CHAP: RFC 7143
// 12.1.3 caps binary values at 1024 bytes; fewer than 16 random bytes are
// too guessable (iPXE sends 16, open-iscsi the digest size, libiscsi twice
// the digest size).
const (
	chapMinChallenge = 16
	chapMaxChallenge = 1024
)

type chapState uint8

const (
	chapWaitAlgorithm chapState = iota
	chapWaitResponse
	chapDone
	chapFailed
)

// CHAPAuthenticator runs the target side of one CHAP exchange. It is not
// safe for concurrent use.
type CHAPAuthenticator struct {
	initiator Credentials
	mutual    *Credentials
	rand      io.Reader

	state      chapState
	alg        chapAlgorithm
	id         byte
	challenge  []byte
	mutualSent bool // the target answered the initiator's challenge
}

// AnsweredMutual reports whether the target has answered the initiator's
// own challenge (mutual CHAP): from then on it is the initiator that
// judges, and a hang-up means it did not accept the answer.
func (a *CHAPAuthenticator) AnsweredMutual() bool { return a.mutualSent }

// NewCHAPAuthenticator prepares the authentication of an initiator that must
// prove it knows initiator.Secret. mutual, when not nil, is what the target
// answers the initiator's own challenge with; when nil, an initiator asking
// for mutual CHAP fails. rand supplies the challenges (crypto/rand.Reader).
func NewCHAPAuthenticator(initiator Credentials, mutual *Credentials, rand io.Reader) *CHAPAuthenticator {
	return &CHAPAuthenticator{initiator: initiator, mutual: mutual, rand: rand}
}

// Step consumes the CHAP keys of one Login request (other keys are ignored)
// and returns the keys to answer with. done is true once the initiator is
// authenticated and, if it asked, the target has answered its challenge:
// the response carrying reply may then leave the security stage.
//
// An *AuthError is an authentication failure; any other error (the random
// source failing) is the target's. After an error every Step fails.
func (a *CHAPAuthenticator) Step(kvs []pdu.KV) (reply []pdu.KV, done bool, err error) {
	reply, done, err = a.step(kvs)
	if err != nil {
		a.state = chapFailed
		return nil, false, err
	}
	return reply, done, nil
}

func (a *CHAPAuthenticator) step(kvs []pdu.KV) ([]pdu.KV, bool, error) {
	keys := map[string]string{}
	for _, kv := range kvs {
		if !strings.HasPrefix(kv.Key, "CHAP_") {
			continue
		}
		switch kv.Key {
		case "CHAP_A", "CHAP_I", "CHAP_C", "CHAP_N", "CHAP_R":
		default:
			return nil, false, authErrorf("unknown key %q", kv.Key)
		}
		if _, dup := keys[kv.Key]; dup {
			return nil, false, authErrorf("%s sent twice", kv.Key) // RFC 7143 6.3
		}
		keys[kv.Key] = kv.Value
	}
	only := func(allowed ...string) error {
		for k := range keys {
			ok := false
			for _, a := range allowed {
				ok = ok || k == a
			}
			if !ok {
				return authErrorf("%s out of order", k)
			}
		}
		return nil
	}

	switch a.state {
	case chapWaitAlgorithm:
		if err := only("CHAP_A"); err != nil {
			return nil, false, err
		}
		v, ok := keys["CHAP_A"]
		if !ok {
			return nil, false, authErrorf("CHAP_A missing")
		}
		if !a.pickAlgorithm(v) {
			return nil, false, authErrorf("no supported algorithm in CHAP_A %q", clipValue(v))
		}
		buf := make([]byte, 1+a.alg.size)
		if _, err := io.ReadFull(a.rand, buf); err != nil {
			return nil, false, fmt.Errorf("iscsi: CHAP challenge: %w", err)
		}
		a.id, a.challenge = buf[0], buf[1:]
		a.state = chapWaitResponse
		return []pdu.KV{
			{Key: "CHAP_A", Value: strconv.FormatUint(a.alg.id, 10)},
			{Key: "CHAP_I", Value: strconv.Itoa(int(a.id))},
			{Key: "CHAP_C", Value: pdu.EncodeHexValue(a.challenge)},
		}, false, nil

	case chapWaitResponse:
		if err := only("CHAP_N", "CHAP_R", "CHAP_I", "CHAP_C"); err != nil {
			return nil, false, err
		}
		if err := a.verify(keys); err != nil {
			return nil, false, err
		}
		reply, err := a.answerMutual(keys)
		if err != nil {
			return nil, false, err
		}
		a.state = chapDone
		a.mutualSent = reply != nil
		return reply, true, nil
	}
	return nil, false, authErrorf("CHAP keys after the exchange ended")
}

// pickAlgorithm takes the first value of the CHAP_A list the target
// supports; values it does not understand are ignored (RFC 7143 6.2.1).
func (a *CHAPAuthenticator) pickAlgorithm(list string) bool {
	for _, s := range strings.Split(list, ",") {
		id, err := pdu.ParseNumericalValue(s)
		if err != nil {
			continue
		}
		for _, alg := range chapAlgorithms {
			if alg.id == id {
				a.alg = alg
				return true
			}
		}
	}
	return false
}

// verify checks the initiator's CHAP_N and CHAP_R.
func (a *CHAPAuthenticator) verify(keys map[string]string) error {
	name, ok := keys["CHAP_N"]
	if !ok {
		return authErrorf("CHAP_N missing")
	}
	r, ok := keys["CHAP_R"]
	if !ok {
		return authErrorf("CHAP_R missing")
	}
	if a.initiator.Secret == "" {
		return authErrorf("no CHAP secret configured for the initiator")
	}
	// CHAP_N is a name, compared as text: libiscsi's tests use names that
	// look like hex constants ("0x...").
	if name != a.initiator.User {
		return authErrorf("unknown CHAP name %q", clipValue(name))
	}
	got, err := pdu.DecodeBinaryValue(r, chapMaxChallenge)
	if err != nil {
		return authErrorf("malformed CHAP_R")
	}
	want := chapResponse(a.alg, a.id, a.initiator.Secret, a.challenge)
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return authErrorf("wrong CHAP_R for %q", clipValue(name))
	}
	return nil
}

// answerMutual answers the initiator's own challenge, if it sent one.
func (a *CHAPAuthenticator) answerMutual(keys map[string]string) ([]pdu.KV, error) {
	iv, hasI := keys["CHAP_I"]
	cv, hasC := keys["CHAP_C"]
	switch {
	case !hasI && !hasC:
		return nil, nil // one-way CHAP
	case hasI != hasC:
		return nil, authErrorf("CHAP_I and CHAP_C must come together")
	}
	if a.mutual == nil || a.mutual.Secret == "" {
		return nil, authErrorf("initiator asks for mutual CHAP, but the target has no credentials for it")
	}
	// RFC 7143 12.1.3: "Any CHAP secret used for initiator authentication
	// MUST NOT be configured for authentication of any target".
	if subtle.ConstantTimeCompare([]byte(a.mutual.Secret), []byte(a.initiator.Secret)) == 1 {
		return nil, authErrorf("mutual CHAP secret equals the initiator's secret")
	}
	id, err := pdu.ParseNumericalValue(iv)
	if err != nil || id > 255 {
		return nil, authErrorf("malformed CHAP_I")
	}
	c, err := pdu.DecodeBinaryValue(cv, chapMaxChallenge)
	if err != nil {
		return nil, authErrorf("malformed CHAP_C")
	}
	if len(c) < chapMinChallenge {
		return nil, authErrorf("CHAP_C of %d bytes is too short", len(c))
	}
	// RFC 7143 12.1.3: the initiator must not reflect the target's own
	// challenge, which would make the target compute the answer to it.
	if subtle.ConstantTimeCompare(c, a.challenge) == 1 {
		return nil, authErrorf("initiator reflected the target's challenge")
	}
	r := chapResponse(a.alg, byte(id), a.mutual.Secret, c)
	return []pdu.KV{
		{Key: "CHAP_N", Value: a.mutual.User},
		{Key: "CHAP_R", Value: pdu.EncodeHexValue(r)},
	}, nil
}

// chapResponse is H(id || secret || challenge) (RFC 1994 section 4.1).
func chapResponse(alg chapAlgorithm, id byte, secret string, challenge []byte) []byte {
	h := alg.hash()
	h.Write([]byte{id})
	io.WriteString(h, secret)
	h.Write(challenge)
	return h.Sum(nil)
}

// clipValue shortens peer text quoted in errors.
func clipValue(s string) string {
	const n = 64
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
