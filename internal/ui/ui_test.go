package ui_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/diskless-boot/diskless/internal/api"
	"github.com/diskless-boot/diskless/internal/app"
	"github.com/diskless-boot/diskless/internal/ui"
)

// The session's cookies and header, as the page sees them.
const (
	tokenCookie = "diskless_token"
	csrfCookie  = "diskless_csrf"
	csrfHeader  = "X-CSRF-Token"
)

// site serves the console over a real API on a fresh data directory; it
// returns the server and the admin token.
func site(t *testing.T) (*httptest.Server, string) {
	t.Helper()
	s, err := app.OpenSite(t.Context(), t.TempDir(), app.SiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	tok, err := api.EnsureToken(s.Store, s.Dir)
	if err != nil {
		t.Fatal(err)
	}
	apiH, err := api.New(api.Config{Inventory: s.Inv, Context: t.Context()})
	if err != nil {
		t.Fatal(err)
	}
	uiH, err := ui.New(ui.Config{API: apiH})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(api.Prefix+"/", apiH)
	mux.Handle(ui.Prefix, uiH)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, tok
}

// browser is an HTTP client with cookies that does not follow redirects.
func browser(t *testing.T) *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func login(t *testing.T, c *http.Client, base, tok string) *http.Response {
	t.Helper()
	resp, err := c.PostForm(base+"/ui/login", url.Values{"token": {tok}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func do(t *testing.T, c *http.Client, method, u, body string, hdr ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func cookie(c *http.Client, base, name string) *http.Cookie {
	u, _ := url.Parse(base + "/ui/")
	for _, k := range c.Jar.Cookies(u) {
		if k.Name == name {
			return k
		}
	}
	return nil
}

func TestLoginSession(t *testing.T) {
	srv, tok := site(t)
	c := browser(t)
	if code, _ := do(t, c, "GET", srv.URL+"/ui/", ""); code != http.StatusSeeOther {
		t.Fatalf("console without a session: %d, want a redirect to the login", code)
	}
	if resp := login(t, c, srv.URL, "dl_wrong"); resp.Header.Get("Location") != "/ui/login?failed=1" || len(resp.Cookies()) != 0 {
		t.Fatalf("wrong token: %v %v", resp.Header, resp.Cookies())
	}
	resp := login(t, c, srv.URL, tok)
	var tokC, csrfC *http.Cookie
	for _, k := range resp.Cookies() {
		switch k.Name {
		case tokenCookie:
			tokC = k
		case csrfCookie:
			csrfC = k
		}
	}
	if tokC == nil || !tokC.HttpOnly || tokC.SameSite != http.SameSiteStrictMode || tokC.Path != ui.Prefix {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/ui/", tokC)
	}
	if csrfC == nil || csrfC.HttpOnly || csrfC.SameSite != http.SameSiteStrictMode || len(csrfC.Value) != 32 {
		t.Fatalf("CSRF cookie %+v: want readable by the page, SameSite=Strict", csrfC)
	}
	code, body := do(t, c, "GET", srv.URL+"/ui/", "")
	if code != 200 || !strings.Contains(body, `src="/ui/static/app.js"`) {
		t.Fatalf("console: %d", code)
	}
	// Assets come from the binary.
	for _, a := range []string{"app.js", "style.css", "login.js"} {
		if code, body := do(t, c, "GET", srv.URL+"/ui/static/"+a, ""); code != 200 || len(body) < 50 {
			t.Errorf("%s: %d", a, code)
		}
	}
	if code, _ := do(t, c, "GET", srv.URL+"/ui/static/nothing.js", ""); code != 404 {
		t.Errorf("missing asset: %d", code)
	}
	// The page's API calls run as the token.
	code, body = do(t, c, "GET", srv.URL+"/ui/api/v1/hosts", "")
	if code != 200 || strings.TrimSpace(body) != "[]" {
		t.Fatalf("hosts through the console: %d %s", code, body)
	}
}

// A change needs the CSRF token in its header; it is audited under the
// token's name. A read-only token's session can look, not change.
func TestChangesNeedCSRFAndRole(t *testing.T) {
	srv, tok := site(t)
	c := browser(t)
	login(t, c, srv.URL, tok)
	create := `{"name":"img","size":1048576}`
	if code, body := do(t, c, "POST", srv.URL+"/ui/api/v1/images", create, "Content-Type", "application/json"); code != 403 || !strings.Contains(body, "CSRF") {
		t.Fatalf("change without CSRF token: %d %s", code, body)
	}
	if code, _ := do(t, c, "POST", srv.URL+"/ui/api/v1/images", create, "Content-Type", "application/json", csrfHeader, strings.Repeat("0", 32)); code != 403 {
		t.Fatalf("change with a wrong CSRF token: %d", code)
	}
	csrf := cookie(c, srv.URL, csrfCookie).Value
	if code, body := do(t, c, "POST", srv.URL+"/ui/api/v1/images", create, "Content-Type", "application/json", csrfHeader, csrf); code/100 != 2 {
		t.Fatalf("change with the CSRF token: %d %s", code, body)
	}
	_, body := do(t, c, "GET", srv.URL+"/ui/api/v1/audit", "")
	var audit []api.AuditEntry
	if err := json.Unmarshal([]byte(body), &audit); err != nil || len(audit) != 1 || audit[0].Who != "admin" || audit[0].Action != "image.create" {
		t.Fatalf("audit %s: %v", body, err)
	}

	// A read-only token, made through the API.
	req, _ := http.NewRequest("POST", srv.URL+api.Prefix+"/tokens", strings.NewReader(`{"name":"viewer","role":"read-only"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var made api.TokenCreated
	json.NewDecoder(resp.Body).Decode(&made)
	resp.Body.Close()
	v := browser(t)
	login(t, v, srv.URL, made.Token)
	if code, _ := do(t, v, "GET", srv.URL+"/ui/api/v1/images", ""); code != 200 {
		t.Fatalf("read-only look: %d", code)
	}
	if code, _ := do(t, v, "DELETE", srv.URL+"/ui/api/v1/images/img", "", csrfHeader, cookie(v, srv.URL, csrfCookie).Value); code != 403 {
		t.Fatalf("read-only change: %d", code)
	}
	// Revoked, the session ends.
	req, _ = http.NewRequest("DELETE", srv.URL+api.Prefix+"/tokens/viewer", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("revoke: %v %v", resp.StatusCode, err)
	}
	if code, _ := do(t, v, "GET", srv.URL+"/ui/api/v1/images", ""); code != 401 {
		t.Fatalf("revoked token's session: %d", code)
	}
}

func TestSecurityHeadersAndLogout(t *testing.T) {
	srv, tok := site(t)
	c := browser(t)
	resp, err := c.Get(srv.URL + "/ui/login")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
	login(t, c, srv.URL, tok)
	// Logout is a change: a form from elsewhere (no CSRF field) is refused.
	if code, _ := do(t, c, "POST", srv.URL+"/ui/logout", "", "Content-Type", "application/x-www-form-urlencoded"); code != 403 {
		t.Fatalf("logout without CSRF: %d", code)
	}
	csrf := cookie(c, srv.URL, csrfCookie).Value
	if code, _ := do(t, c, "POST", srv.URL+"/ui/logout", "csrf="+csrf, "Content-Type", "application/x-www-form-urlencoded"); code != http.StatusSeeOther {
		t.Fatalf("logout: %d", code)
	}
	if code, _ := do(t, c, "GET", srv.URL+"/ui/api/v1/hosts", ""); code != 401 {
		t.Fatalf("after logout: %d", code)
	}
}
