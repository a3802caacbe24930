package api

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/diskless-boot/diskless/internal/store"
)

// syncBuffer is a log destination for handlers on several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// CHAP secrets and tokens sent to or made by the API appear in the one
// answer that made them and nowhere else: not in the audit log (entries
// or the store's bytes), the token and host listings, or the log at debug
// level - also when the request that carried them failed, and for tokens
// that were refused.
func TestSecretsNeverListedOrLogged(t *testing.T) {
	var logs syncBuffer
	a := newTestAPILogged(t, nil, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	const (
		chap       = "Chap-Secret-0001"
		mutual     = "Mutual-Secret-02"
		failedChap = "Failed-Secret-03"
		shortChap  = "short-04"
		badToken   = "dl_NotATokenButLooksLikeOne05"
	)
	for _, s := range []struct {
		token, method, path, body string
		code                      int
	}{
		{a.token, "POST", "/images", `{"name": "img", "size": "1M"}`, 201},
		{a.token, "POST", "/hosts", `{"name": "pc1", "image": "img", "chap": {"user": "u1", "secret": "` + chap +
			`"}, "mutual_chap": {"secret": "` + mutual + `"}}`, 201},
		{a.token, "POST", "/hosts", `{"name": "pc1", "image": "img", "chap": {"secret": "` + failedChap + `"}}`, 409},
		{a.token, "POST", "/hosts", `{"name": "pc2", "image": "img", "chap": {"secret": "` + shortChap + `"}}`, 400},
		{a.token, "POST", "/hosts/pc1/rotate-secrets", "", 200},
		{badToken, "POST", "/hosts", `{"name": "pc3", "image": "img"}`, 401},
		{badToken, "GET", "/hosts", "", 401},
	} {
		if code, e := a.callAs(t, s.token, s.method, s.path, s.body, nil); code != s.code {
			t.Fatalf("%s %s: %d %+v, want %d", s.method, s.path, code, e, s.code)
		}
	}
	var tc TokenCreated
	if code, e := a.call(t, "POST", "/tokens", `{"name": "ci", "role": "admin"}`, &tc); code != 201 {
		t.Fatalf("token: %d %+v", code, e)
	}
	var hc HostCredentials
	a.call(t, "GET", "/hosts/pc1/credentials", "", &hc) // the rotated ones
	if hc.CHAP == nil || hc.CHAP.Secret == "" || hc.MutualCHAP == nil {
		t.Fatalf("credentials %+v", hc)
	}
	secrets := map[string]string{"chap": chap, "mutual": mutual, "failed chap": failedChap, "short chap": shortChap,
		"bad token": badToken, "token": tc.Token, "admin token": a.token, "token hash": hashToken(tc.Token),
		"admin hash": hashToken(a.token), "rotated chap": hc.CHAP.Secret, "rotated mutual": hc.MutualCHAP.Secret}

	places := map[string]string{"log": logs.String()}
	for _, p := range []string{"/audit", "/tokens", "/hosts", "/hosts/pc1", "/jobs"} {
		places["GET "+p] = a.raw(t, "GET", p)
	}
	var raw strings.Builder
	a.h.inv.Store().View(func(tx store.Tx) error {
		return tx.ForEach(store.BucketAudit, "", func(_ string, v []byte) error { raw.Write(v); return nil })
	})
	places["the audit bucket"] = raw.String()
	if n := strings.Count(places["GET /audit"], `"seq"`); n != 6 {
		t.Fatalf("%d audit entries, want 6 (the test would prove nothing): %s", n, places["GET /audit"])
	}
	if !strings.Contains(places["log"], "without a valid token") {
		t.Fatalf("the refused token was not logged at all (the test would prove nothing): %s", places["log"])
	}
	for where, text := range places {
		for what, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s holds the %s %q:\n%s", where, what, s, text)
			}
		}
	}
}
