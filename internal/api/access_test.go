package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/store"
)

// newToken makes a token through the API and returns it.
func (a *testAPI) newToken(t *testing.T, name, role string) string {
	t.Helper()
	var tc TokenCreated
	body := `{"name": "` + name + `", "role": "` + role + `"}`
	if code, e := a.call(t, "POST", "/tokens", body, &tc); code != 201 || tc.Token == "" || tc.Name != name {
		t.Fatalf("create token %s: %d %+v %+v", name, code, e, tc)
	}
	return tc.Token
}

// A read-only token reads everything (the audit log and the metrics too)
// and changes nothing: every other method is 403 with a JSON error that
// says why, and token management is for admins only.
func TestReadOnlyRole(t *testing.T) {
	a := newTestAPI(t)
	if code, e := a.call(t, "POST", "/images", `{"name": "img", "size": "1M"}`, nil); code != 201 {
		t.Fatalf("image: %d %+v", code, e)
	}
	ro := a.newToken(t, "viewer", "read-only")
	for _, path := range []string{"/images", "/images/img", "/hosts", "/sessions", "/jobs", "/audit", "/unknown-hosts"} {
		if code, e := a.callAs(t, ro, "GET", path, "", nil); code != 200 {
			t.Errorf("read-only GET %s: %d %+v", path, code, e)
		}
	}
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/images", `{"name": "x", "size": "1M"}`},
		{"DELETE", "/images/img", ""},
		{"POST", "/hosts", `{"name": "h", "image": "img"}`},
		{"PATCH", "/hosts/h", `{"boot": "kernel"}`},
		{"POST", "/hosts/h/reset", ""},
		{"POST", "/tokens", `{"name": "mine", "role": "admin"}`},
		{"DELETE", "/tokens/admin", ""},
	} {
		code, e := a.callAs(t, ro, c.method, c.path, c.body, nil)
		if code != http.StatusForbidden || !strings.Contains(e.Error, "read-only") || !strings.Contains(e.Error, "admin token") {
			t.Errorf("read-only %s %s: %d %+v", c.method, c.path, code, e)
		}
	}
	if code, e := a.callAs(t, ro, "GET", "/tokens", "", nil); code != http.StatusForbidden {
		t.Errorf("read-only GET /tokens: %d %+v", code, e)
	}
	var imgs []json.RawMessage
	if a.call(t, "GET", "/images", "", &imgs); len(imgs) != 1 {
		t.Errorf("the refused changes changed something: %d images", len(imgs))
	}
	if st := a.h.Stats(); st.Forbidden != 7 {
		t.Errorf("stats %+v, want 7 forbidden", st)
	}

	// /metrics is a GET like any other.
	h, err := New(Config{Inventory: a.h.inv, Metrics: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("diskless_up 1\n"))
	})})
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("GET", MetricsPath, nil)
	r.Header.Set("Authorization", "Bearer "+ro)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 200 || w.Body.String() != "diskless_up 1\n" {
		t.Errorf("read-only GET /metrics: %d %q", w.Code, w.Body)
	}
}

// Tokens are made (shown once), listed (never shown), used and revoked;
// the last admin token cannot be revoked, and revoking the token a request
// uses says so.
func TestTokenLifecycle(t *testing.T) {
	a := newTestAPI(t)
	for _, c := range []struct {
		body        string
		code        int
		field, says string
	}{
		{`{"name": "Bad Name"}`, 400, "name", "token name"},
		{`{"name": ""}`, 400, "name", "token name"},
		{`{"name": "x", "role": "root"}`, 400, "role", "admin or read-only"},
		{`{"name": "x", "secret": "y"}`, 400, "secret", "unknown field"},
		{`{"name": "admin", "role": "admin"}`, 409, "name", "exists"},
	} {
		if code, e := a.call(t, "POST", "/tokens", c.body, nil); code != c.code || e.Field != c.field || !strings.Contains(e.Error, c.says) {
			t.Errorf("POST /tokens %s: %d %+v, want %d %s %q", c.body, code, e, c.code, c.field, c.says)
		}
	}
	var tc TokenCreated
	if code, e := a.call(t, "POST", "/tokens", `{"name": "ci"}`, &tc); code != 201 {
		t.Fatalf("create: %d %+v", code, e)
	}
	if tc.Role != RoleReadOnly || !strings.HasPrefix(tc.Token, "dl_") || len(tc.Notes) == 0 || tc.Created.IsZero() {
		t.Errorf("created %+v: want a read-only token by default, shown with a note", tc)
	}
	ops := a.newToken(t, "ops", "admin")

	var list []TokenInfo
	code, _ := a.call(t, "GET", "/tokens", "", &list)
	raw := a.raw(t, "GET", "/tokens")
	if code != 200 || len(list) != 3 || list[0].Name != "admin" || list[0].Role != RoleAdmin || list[1].Name != "ci" ||
		list[1].Role != RoleReadOnly || list[2].Name != "ops" {
		t.Fatalf("list: %d %+v", code, list)
	}
	for _, s := range []string{tc.Token, ops, a.token, hashToken(tc.Token), hashToken(a.token), "sha256"} {
		if strings.Contains(raw, s) {
			t.Errorf("GET /tokens shows %q: %s", s, raw)
		}
	}

	if code, _ := a.callAs(t, tc.Token, "GET", "/hosts", "", nil); code != 200 {
		t.Fatalf("the new token: %d", code)
	}
	var n Notes
	if code, e := a.call(t, "DELETE", "/tokens/ci", "", &n); code != 200 || len(n.Notes) != 0 {
		t.Fatalf("revoke ci: %d %+v %q", code, e, n.Notes)
	}
	if code, _ := a.callAs(t, tc.Token, "GET", "/hosts", "", nil); code != 401 {
		t.Fatalf("a revoked token: %d", code)
	}
	if code, e := a.call(t, "DELETE", "/tokens/ci", "", nil); code != 404 {
		t.Errorf("revoke twice: %d %+v", code, e)
	}

	// admin revokes itself: allowed while ops is an admin too, and said.
	if code, e := a.call(t, "DELETE", "/tokens/admin", "", &n); code != 200 || len(n.Notes) != 2 ||
		!strings.Contains(n.Notes[0], "this request was made with the token just revoked") || !strings.Contains(n.Notes[1], TokenFile) {
		t.Fatalf("revoke own token: %d %+v %q", code, e, n.Notes)
	}
	if code, _ := a.call(t, "GET", "/hosts", "", nil); code != 401 {
		t.Fatalf("the revoked admin token still works: %d", code)
	}
	a.token = ops
	if code, e := a.call(t, "DELETE", "/tokens/ops", "", nil); code != 409 || !strings.Contains(e.Error, "last admin token") {
		t.Fatalf("revoke the last admin: %d %+v", code, e)
	}
	a.newToken(t, "viewer", "read-only")
	if code, e := a.call(t, "DELETE", "/tokens/ops", "", nil); code != 409 {
		t.Fatalf("revoke the last admin while a read-only token remains: %d %+v", code, e)
	}
	if code, _ := a.call(t, "GET", "/hosts", "", nil); code != 200 {
		t.Fatalf("the last admin after the refusal: %d", code)
	}
}

// raw is the body of a GET with the admin token.
func (a *testAPI) raw(t *testing.T, method, path string) string {
	t.Helper()
	r := httptest.NewRequest(method, Prefix+path, nil)
	r.Header.Set("Authorization", "Bearer "+a.token)
	w := httptest.NewRecorder()
	a.h.ServeHTTP(w, r)
	return w.Body.String()
}

// A token stored before roles existed (no role field) is an admin, as the
// first start's token always was.
func TestTokenWithoutRoleIsAdmin(t *testing.T) {
	a := newTestAPI(t)
	err := a.h.inv.Store().Update(func(tx store.Tx) error {
		return tx.Put(store.BucketTokens, "old", []byte(`{"name":"old","sha256":"`+hashToken("dl_old")+`","created":"2025-01-01T00:00:00Z"}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.h.AuthenticateToken("dl_old")
	if err != nil || p != (Principal{Name: "old", Role: RoleAdmin}) {
		t.Fatalf("legacy token: %+v %v", p, err)
	}
	if code, e := a.callAs(t, "dl_old", "POST", "/images", `{"name": "img", "size": "1M"}`, nil); code != 201 {
		t.Fatalf("legacy token change: %d %+v", code, e)
	}
}

// A token's last use is written at most once a minute: a burst of reads
// is not a burst of store writes.
func TestTokenLastUsed(t *testing.T) {
	a := newTestAPI(t)
	now := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	a.h.now = func() time.Time { return now }
	lastUsed := func() time.Time {
		t.Helper()
		var rec tokenRecord
		a.h.inv.Store().View(func(tx store.Tx) error {
			b, err := tx.Get(store.BucketTokens, adminToken)
			if err == nil {
				err = json.Unmarshal(b, &rec)
			}
			return err
		})
		return rec.LastUsed
	}
	a.call(t, "GET", "/hosts", "", nil)
	if got := lastUsed(); !got.Equal(now) {
		t.Fatalf("last used %v, want %v", got, now)
	}
	first := now
	now = now.Add(59 * time.Second)
	for range 5 {
		a.call(t, "GET", "/hosts", "", nil)
	}
	if got := lastUsed(); !got.Equal(first) {
		t.Fatalf("last used %v within the minute, want it still %v", got, first)
	}
	now = now.Add(2 * time.Second)
	var list []TokenInfo
	a.call(t, "GET", "/tokens", "", &list)
	if got := lastUsed(); !got.Equal(now) || !list[0].LastUsed.Equal(now) {
		t.Fatalf("last used %v (listed %v) after a minute, want %v", got, list[0].LastUsed, now)
	}
}

// The CLI can make tokens on a data directory before any server ran: a
// store with read-only tokens only still gets its admin token (and the
// token file) at the server's first start, under a free name.
func TestEnsureTokenWithoutAdmin(t *testing.T) {
	dir := t.TempDir()
	st, err := store.OpenBolt(filepath.Join(dir, store.FileName), store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.Update(func(tx store.Tx) error {
		return tx.Put(store.BucketTokens, "admin", []byte(`{"name":"admin","sha256":"x","role":"read-only"}`))
	})
	tok, err := EnsureToken(st, dir)
	if err != nil || tok == "" {
		t.Fatalf("EnsureToken: %q %v", tok, err)
	}
	if f, _ := ReadTokenFile(dir); f != tok {
		t.Fatalf("token file %q", f)
	}
	var recs []tokenRecord
	st.View(func(tx store.Tx) error { recs, err = readTokens(tx); return err })
	if len(recs) != 2 || recs[0].role() != RoleReadOnly || recs[1].Name != "admin-2" || recs[1].role() != RoleAdmin ||
		recs[1].Hash != hashToken(tok) {
		t.Fatalf("tokens %+v", recs)
	}
	if again, err := EnsureToken(st, dir); again != "" || err != nil {
		t.Fatalf("second start: %q %v", again, err)
	}
}
