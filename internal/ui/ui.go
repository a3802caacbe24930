// Package ui is the web console at /ui/: a single page (HTML, CSS and
// JavaScript embedded in the binary, no build step, nothing fetched from
// the network) that renders the API's JSON and follows its boot event
// stream, and the session around it. The admin logs in with an API token;
// the token is kept in an HttpOnly, SameSite=Strict cookie, and the page's
// API calls (/ui/api/...) are served by the API handler as that token's
// principal, so roles and the audit log apply as to any API client. Every
// change also carries a CSRF token (double submit: a second, readable
// cookie the page echoes in a header), on top of SameSite.
//
// It keeps no state and draws nothing on the server; it is mounted on the
// admin plane beside the API.
package ui

import (
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/diskless-boot/diskless/internal/api"
)

// Prefix is where the console is served.
const Prefix = "/ui/"

// Cookie names.
const (
	tokenCookie = "diskless_token" // the API token, HttpOnly
	csrfCookie  = "diskless_csrf"  // readable by the page, echoed in csrfHeader
	csrfHeader  = "X-CSRF-Token"
)

// sessionAge is how long a login lasts.
const sessionAge = 12 * time.Hour

//go:embed assets
var assets embed.FS

// Config configures the console.
type Config struct {
	// API serves the console's calls. Required.
	API *api.Handler
	// Logger receives failed logins (default: discard).
	Logger *slog.Logger
}

// Handler serves the console. It is safe for concurrent use.
type Handler struct {
	cfg    Config
	log    *slog.Logger
	mux    *http.ServeMux
	static http.Handler
}

// New returns the console's handler, to be mounted at Prefix.
func New(cfg Config) (*Handler, error) {
	if cfg.API == nil {
		return nil, errors.New("ui: the API handler is required")
	}
	h := &Handler{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux()}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, err
	}
	h.static = http.StripPrefix(Prefix+"static/", http.FileServerFS(sub))
	h.mux.HandleFunc("GET "+Prefix+"{$}", h.page)
	h.mux.HandleFunc("GET "+Prefix+"login", h.loginPage)
	h.mux.HandleFunc("POST "+Prefix+"login", h.login)
	h.mux.HandleFunc("POST "+Prefix+"logout", h.logout)
	h.mux.Handle("GET "+Prefix+"static/", h.static)
	h.mux.HandleFunc(Prefix+"api/", h.proxy)
	h.mux.HandleFunc(Prefix, http.NotFound)
	return h, nil
}

// ServeHTTP sets the headers every answer gets, then dispatches.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	// Only what the binary serves; no inline script, no framing.
	hd.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Frame-Options", "DENY")
	h.mux.ServeHTTP(w, r)
}

// principal is the session's principal, if its cookie holds a valid token.
func (h *Handler) principal(r *http.Request) (api.Principal, bool) {
	c, err := r.Cookie(tokenCookie)
	if err != nil || c.Value == "" {
		return api.Principal{}, false
	}
	p, err := h.cfg.API.AuthenticateToken(c.Value)
	return p, err == nil
}

// page serves the console, or sends the browser to the login page.
func (h *Handler) page(w http.ResponseWriter, r *http.Request) {
	if _, ok := h.principal(r); !ok {
		http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
		return
	}
	h.serveAsset(w, r, "index.html")
}

func (h *Handler) loginPage(w http.ResponseWriter, r *http.Request) {
	h.serveAsset(w, r, "login.html")
}

func (h *Handler) serveAsset(w http.ResponseWriter, r *http.Request, name string) {
	b, err := assets.ReadFile("assets/" + name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b)
}

// login checks the token the form sent and opens a session.
func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	tok := strings.TrimSpace(r.PostFormValue("token"))
	p, err := h.cfg.API.AuthenticateToken(tok)
	if err != nil || tok == "" {
		h.log.Warn("ui: login refused", "ip", r.RemoteAddr)
		http.Redirect(w, r, Prefix+"login?failed=1", http.StatusSeeOther)
		return
	}
	var raw [16]byte
	rand.Read(raw[:])
	expires := time.Now().Add(sessionAge)
	http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: tok, Path: Prefix, Expires: expires,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: hex.EncodeToString(raw[:]), Path: Prefix, Expires: expires,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	h.log.Info("ui: login", "token", p.Name, "role", string(p.Role), "ip", r.RemoteAddr)
	http.Redirect(w, r, Prefix, http.StatusSeeOther)
}

// logout ends the session (a CSRF-checked change like any other).
func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	if !csrfOK(r) {
		http.Error(w, "missing or wrong CSRF token", http.StatusForbidden)
		return
	}
	for _, name := range []string{tokenCookie, csrfCookie} {
		http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: Prefix, MaxAge: -1, HttpOnly: name == tokenCookie,
			SameSite: http.SameSiteStrictMode})
	}
	http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
}

// csrfOK reports whether a change carries the session's CSRF token: in the
// header (a form from another site cannot set one) or, for the plain
// logout form, in its field.
func csrfOK(r *http.Request) bool {
	c, err := r.Cookie(csrfCookie)
	if err != nil || len(c.Value) < 32 {
		return false
	}
	got := r.Header.Get(csrfHeader)
	if got == "" {
		r.Body = http.MaxBytesReader(nil, r.Body, 4<<10)
		got = r.PostFormValue("csrf")
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(c.Value)) == 1
}

// proxy serves /ui/api/... as the API's /api/... for the session's
// principal.
func (h *Handler) proxy(w http.ResponseWriter, r *http.Request) {
	p, ok := h.principal(r)
	if !ok {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"error":"log in again: the session ended or its token was revoked"}` + "\n"))
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead && !csrfOK(r) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte(`{"error":"missing or wrong CSRF token: reload the page"}` + "\n"))
		return
	}
	r2 := r.Clone(api.WithPrincipal(r.Context(), p))
	r2.URL.Path = "/" + strings.TrimPrefix(r.URL.Path, Prefix)
	r2.URL.RawPath = ""
	r2.RequestURI = r2.URL.RequestURI()
	r2.Header.Del("Cookie") // the API knows nothing of the session
	h.cfg.API.ServeHTTP(w, r2)
}
