package api

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskless-boot/diskless/internal/inventory"
	"github.com/diskless-boot/diskless/internal/storage"
	"github.com/diskless-boot/diskless/internal/store"
)

// audit reads the audit log through the API.
func (a *testAPI) audit(t *testing.T, query string) []AuditEntry {
	t.Helper()
	var out []AuditEntry
	if code, e := a.call(t, "GET", "/audit"+query, "", &out); code != 200 {
		t.Fatalf("GET /audit%s: %d %+v", query, code, e)
	}
	return out
}

// Every change is an audit entry: who (the token's name), the action and
// object from the route (or the create's name), the client's address and
// the outcome with the error's message. Reads, requests without a valid
// token and changes refused to a read-only token are not.
func TestAuditRecordsChanges(t *testing.T) {
	a := newTestAPI(t)
	ops := a.newToken(t, "ops", "admin")
	ro := a.newToken(t, "viewer", "read-only")
	steps := []struct {
		token, method, path, body string
		code                      int
	}{
		{ops, "POST", "/images", `{"name": "img", "size": "1M"}`, 201},
		{ops, "POST", "/hosts", `{"name": "pc1", "image": "img"}`, 201},
		{ops, "GET", "/hosts/pc1", "", 200},
		{a.token, "POST", "/hosts", `{"name": "pc1", "image": "img"}`, 409},
		{ops, "POST", "/hosts/pc1/snapshots", `{"name": "s1"}`, 201},
		{ops, "POST", "/hosts/pc1/snapshots/s1/rollback", "", 200},
		{ops, "POST", "/hosts/pc1/reset", "", 200},
		{ops, "PATCH", "/hosts/nobody", `{"boot": "kernel"}`, 404},
		{ro, "POST", "/hosts/pc1/reset", "", 403},
		{"dl_wrong", "DELETE", "/hosts/pc1", "", 401},
		{ops, "POST", "/no/such/thing", "", 404},
		{ops, "DELETE", "/tokens/viewer", "", 200},
	}
	for _, s := range steps {
		if code, e := a.callAs(t, s.token, s.method, s.path, s.body, nil); code != s.code {
			t.Fatalf("%s %s: %d %+v, want %d", s.method, s.path, code, e, s.code)
		}
	}
	got := a.audit(t, "")
	type row struct {
		who, method, action, object string
		status                      int
		err                         string
	}
	want := []row{
		{"ops", "DELETE", "token.revoke", "viewer", 200, ""},
		{"ops", "PATCH", "host.update", "nobody", 404, `no host "nobody"`},
		{"ops", "POST", "host.reset", "pc1", 200, ""},
		{"ops", "POST", "snapshot.rollback", "pc1/s1", 200, ""},
		{"ops", "POST", "snapshot.create", "pc1/s1", 201, ""},
		{"admin", "POST", "host.create", "pc1", 409, "exists"},
		{"ops", "POST", "host.create", "pc1", 201, ""},
		{"ops", "POST", "image.create", "img", 201, ""},
		{"admin", "POST", "token.create", "viewer", 201, ""},
		{"admin", "POST", "token.create", "ops", 201, ""},
	}
	if len(got) != len(want) {
		t.Fatalf("%d entries, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Who != w.who || g.Method != w.method || g.Action != w.action || g.Object != w.object || g.Status != w.status ||
			!strings.Contains(g.Error, w.err) || (w.err == "") != (g.Error == "") {
			t.Errorf("entry %d: %+v, want %+v", i, g, w)
		}
		if g.Seq != uint64(len(want)-i) || g.Time.IsZero() || g.Time.Location().String() != "UTC" || g.Remote != "192.0.2.1:1234" {
			t.Errorf("entry %d: seq %d time %v remote %q", i, g.Seq, g.Time, g.Remote)
		}
	}

	// Paging: newest first, limit, before.
	if p := a.audit(t, "?limit=3"); len(p) != 3 || p[0].Seq != 10 || p[2].Seq != 8 {
		t.Errorf("limit=3: %+v", p)
	}
	if p := a.audit(t, "?limit=2&before=8"); len(p) != 2 || p[0].Seq != 7 || p[1].Seq != 6 {
		t.Errorf("before=8: %+v", p)
	}
	if p := a.audit(t, "?before=2"); len(p) != 1 || p[0].Seq != 1 {
		t.Errorf("before=2: %+v", p)
	}
	for _, q := range []string{"?limit=0", "?limit=1001", "?limit=x", "?before=0", "?before=-1"} {
		if code, e := a.call(t, "GET", "/audit"+q, "", nil); code != 400 || e.Field == "" {
			t.Errorf("GET /audit%s: %d %+v", q, code, e)
		}
	}
	if p := a.audit(t, "?limit=1000"); len(p) != 10 {
		t.Errorf("limit=1000: %d entries", len(p))
	}
}

// A change that starts a job (202) names the job in its audit entry.
func TestAuditNamesTheJob(t *testing.T) {
	a := newTestAPI(t)
	a.call(t, "POST", "/images", `{"name": "img", "size": "1M"}`, nil)
	a.call(t, "POST", "/hosts", `{"name": "pc1", "image": "img"}`, nil)
	var acc Accepted
	if code, e := a.call(t, "POST", "/hosts/pc1/promote", `{}`, &acc); code != 202 || acc.Job.ID == "" {
		t.Fatalf("promote: %d %+v", code, e)
	}
	a.h.WaitJob(t.Context(), acc.Job.ID)
	got := a.audit(t, "?limit=1")
	if got[0].Action != "host.promote" || got[0].Status != 202 || got[0].Job != acc.Job.ID || got[0].Object != "pc1" {
		t.Fatalf("audit %+v, job %s", got[0], acc.Job.ID)
	}
}

// The log keeps the newest entries up to its bound: the oldest go in the
// transaction that adds a new one.
func TestAuditBound(t *testing.T) {
	a := newTestAPI(t)
	st := a.h.inv.Store()
	for i := range 12 {
		if _, err := appendAudit(st, AuditEntry{Who: "t", Action: "host.reset", Object: fmt.Sprint(i)}, 5); err != nil {
			t.Fatal(err)
		}
	}
	keys := func() []string {
		var ks []string
		st.View(func(tx store.Tx) error {
			return tx.ForEach(store.BucketAudit, "", func(k string, _ []byte) error { ks = append(ks, k); return nil })
		})
		return ks
	}
	if ks := keys(); len(ks) != 5 || ks[0] != auditKey(8) || ks[4] != auditKey(12) {
		t.Fatalf("kept %q", ks)
	}
	got, err := readAudit(st, 0, 100)
	if err != nil || len(got) != 5 || got[0].Seq != 12 || got[0].Object != "11" || got[4].Seq != 8 {
		t.Fatalf("read %+v %v", got, err)
	}
	// A lower bound drops everything beyond it at the next entry.
	if _, err := appendAudit(st, AuditEntry{Who: "t", Action: "host.reset"}, 2); err != nil {
		t.Fatal(err)
	}
	if ks := keys(); len(ks) != 2 || ks[0] != auditKey(12) {
		t.Fatalf("after lowering the bound: %q", ks)
	}
	// Fields a client chooses are cut.
	long := strings.Repeat("x", 100000)
	if _, err := appendAudit(st, AuditEntry{Who: long, Object: long, Error: long, Remote: long}, 2); err != nil {
		t.Fatal(err)
	}
	got, _ = readAudit(st, 0, 1)
	if n := len(got[0].Who) + len(got[0].Object) + len(got[0].Error) + len(got[0].Remote); n > 2000 {
		t.Errorf("an entry of %d bytes", n)
	}
}

// Every change route has its own action name, noun.verb, derived from its
// pattern.
func TestRouteActions(t *testing.T) {
	src, err := os.ReadFile("api.go")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, m := range route.FindAllStringSubmatch(string(src), -1) {
		if m[1] == "GET" {
			continue
		}
		pattern := m[1] + " " + Prefix + m[2]
		act := routeAction(pattern)
		noun, verb, ok := strings.Cut(act, ".")
		if !ok || noun == "" || verb == "" || strings.ContainsAny(act, "{}/") {
			t.Errorf("%s: action %q", pattern, act)
		}
		if o, dup := seen[act]; dup {
			t.Errorf("%s and %s are both %s", o, pattern, act)
		}
		seen[act] = pattern
	}
	for pattern, want := range map[string]string{
		"POST /api/v1/hosts":                                      "host.create",
		"PATCH /api/v1/hosts/{host}":                              "host.update",
		"POST /api/v1/hosts/{host}/rotate-secrets":                "host.rotate-secrets",
		"POST /api/v1/hosts/{host}/promote":                       "host.promote",
		"POST /api/v1/hosts/{host}/snapshots/{snapshot}/rollback": "snapshot.rollback",
		"DELETE /api/v1/hosts/{host}/snapshots/{snapshot}":        "snapshot.delete",
		"POST /api/v1/images/{image}/versions":                    "version.import",
		"POST /api/v1/images/{image}/versions/{version}/export":   "version.export",
		"DELETE /api/v1/images/{image}/versions/{version}":        "version.delete",
		"DELETE /api/v1/jobs/{job}":                               "job.cancel",
		"POST /api/v1/tokens":                                     "token.create",
		"DELETE /api/v1/tokens/{token}":                           "token.revoke",
	} {
		if got := routeAction(pattern); got != want {
			t.Errorf("%s: %q, want %q", pattern, got, want)
		}
	}
	if len(seen) < 15 {
		t.Fatalf("%d change routes: the pattern no longer matches routes()", len(seen))
	}
}

// Another front end in the process (the web console) puts the principal
// it authenticated into the request's context: the API takes it without
// a header, checks its role and audits under its name.
func TestPrincipalFromContext(t *testing.T) {
	a := newTestAPI(t)
	if _, err := a.h.AuthenticateToken("dl_nope"); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("unknown token: %v", err)
	}
	p, err := a.h.AuthenticateToken(a.token)
	if err != nil || p != (Principal{Name: "admin", Role: RoleAdmin}) {
		t.Fatalf("AuthenticateToken: %+v %v", p, err)
	}
	serve := func(p Principal, method, path, body string) int {
		var rd io.Reader // nil, as a front end in the process may send
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, _ := http.NewRequestWithContext(WithPrincipal(t.Context(), p), method, Prefix+path, rd)
		req.RemoteAddr = "198.51.100.7:4444"
		w := httptest.NewRecorder()
		a.h.ServeHTTP(w, req)
		return w.Code
	}
	if code := serve(Principal{Name: "alice", Role: RoleAdmin}, "POST", "/images", `{"name": "img", "size": "1M"}`); code != 201 {
		t.Fatalf("as alice: %d", code)
	}
	if code := serve(Principal{Name: "bob", Role: RoleReadOnly}, "DELETE", "/images/img", ""); code != 403 {
		t.Fatalf("as read-only bob: %d", code)
	}
	if code := serve(Principal{Name: "alice", Role: RoleAdmin}, "POST", "/hosts/nobody/snapshots", ""); code != 404 {
		t.Fatalf("a request without a body: %d", code)
	}
	got := a.audit(t, "?before=2")
	if len(got) != 1 || got[0].Who != "alice" || got[0].Action != "image.create" || got[0].Remote != "198.51.100.7:4444" {
		t.Fatalf("audit %+v", got)
	}
}

// failingAudit is a store whose audit bucket refuses writes.
type failingAudit struct{ store.Store }

func (s failingAudit) Update(fn func(store.Tx) error) error {
	return s.Store.Update(func(tx store.Tx) error { return fn(failingAuditTx{tx}) })
}

type failingAuditTx struct{ store.Tx }

func (t failingAuditTx) Put(bucket, key string, v []byte) error {
	if bucket == store.BucketAudit {
		return errors.New("disk full")
	}
	return t.Tx.Put(bucket, key, v)
}

// A change that was made is answered as made when its audit entry cannot
// be written: the warning and the counter say the entry is missing.
func TestAuditFailureDoesNotFailTheChange(t *testing.T) {
	dir := t.TempDir()
	st, err := store.OpenBolt(filepath.Join(dir, store.FileName), store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	be, err := storage.NewLocal(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.New(inventory.Options{Store: failingAudit{st}, Backend: be})
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	h, err := New(Config{Inventory: inv, NoAuth: true, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("POST", Prefix+"/images", strings.NewReader(`{"name": "img", "size": "1M"}`)))
	if w.Code != 201 {
		t.Fatalf("create: %d %s", w.Code, w.Body)
	}
	if _, err := inv.Image("img"); err != nil {
		t.Fatalf("the image: %v", err)
	}
	if s := h.Stats(); s.AuditWriteFailures != 1 || !strings.Contains(logs.String(), "audit entry not written") ||
		!strings.Contains(logs.String(), "image.create") {
		t.Fatalf("stats %+v, log %q", s, logs.String())
	}
}
