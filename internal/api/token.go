package api

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/diskless-boot/diskless/internal/fsutil"
	"github.com/diskless-boot/diskless/internal/storage"
	"github.com/diskless-boot/diskless/internal/store"
)

// TokenFile is where the admin token is kept in data_dir (mode 0600), so
// the CLI on the server's own machine can use the API without asking.
const TokenFile = "api-token"

// adminToken is the name of the token made at first start.
const adminToken = "admin"

// maxTokens bounds the tokens a site may have: each request compares its
// token with every stored hash.
const maxTokens = 256

// lastUsedEvery is how stale a token's last-used time may be: it is
// written at most once a minute per token, so reads stay reads.
const lastUsedEvery = time.Minute

// Role is what a token may do.
type Role string

const (
	// RoleAdmin may do everything, managing tokens included.
	RoleAdmin Role = "admin"
	// RoleReadOnly may make every GET request (the audit log and the
	// metrics included, the tokens excepted); anything that changes state
	// is refused with 403.
	RoleReadOnly Role = "read-only"
)

// ParseRole checks a role's name; "" is read-only, the least a token can
// be.
func ParseRole(s string) (Role, error) {
	switch Role(s) {
	case RoleAdmin:
		return RoleAdmin, nil
	case RoleReadOnly, "":
		return RoleReadOnly, nil
	}
	return "", fmt.Errorf("want admin or read-only, not %q", s)
}

// tokenRecord is a token as stored: only its SHA-256, never the token.
type tokenRecord struct {
	Name     string    `json:"name"`
	Hash     string    `json:"sha256"`
	Role     Role      `json:"role,omitempty"` // "": made before roles, admin
	Created  time.Time `json:"created"`
	LastUsed time.Time `json:"last_used,omitzero"`
}

func (t tokenRecord) role() Role {
	if t.Role == "" {
		return RoleAdmin
	}
	return t.Role
}

func (t tokenRecord) info() TokenInfo {
	return TokenInfo{Name: t.Name, Role: t.role(), Created: t.Created, LastUsed: t.LastUsed}
}

// TokenInfo is a token as the API lists it: never the token or its hash.
type TokenInfo struct {
	Name    string    `json:"name"`
	Role    Role      `json:"role"`
	Created time.Time `json:"created"`
	// LastUsed is when the token last authenticated a request, up to a
	// minute stale; zero when never.
	LastUsed time.Time `json:"last_used,omitzero"`
}

// CreateTokenRequest is the body of POST /tokens.
type CreateTokenRequest struct {
	Name string `json:"name"`
	Role string `json:"role,omitempty"` // admin or read-only (default)
}

// TokenCreated answers POST /tokens: the token, shown this once.
type TokenCreated struct {
	TokenInfo
	Token string   `json:"token"`
	Notes []string `json:"notes"`
}

// newToken is 32 random bytes from crypto/rand, printable.
func newToken() (string, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("api: token: %w", err)
	}
	return "dl_" + base64.RawURLEncoding.EncodeToString(raw[:]), nil
}

// EnsureToken makes the admin token on first start: 32 random bytes from
// crypto/rand, stored hashed in the state store and in plain in
// dir/api-token (0600) for the local CLI. It returns the token when it
// made it now (to be shown once), "" otherwise. "First start" is a store
// without an admin token: the CLI may have made read-only ones on the
// data directory before any server ran, and once there is an admin token
// the API never lets the last one go.
func EnsureToken(st store.Store, dir string) (string, error) {
	var recs []tokenRecord
	err := st.View(func(tx store.Tx) error {
		var err error
		recs, err = readTokens(tx)
		return err
	})
	if err != nil {
		return "", err
	}
	name := adminToken
	for i := 2; ; i++ {
		taken := false
		for _, r := range recs {
			if r.role() == RoleAdmin {
				return "", nil
			}
			taken = taken || r.Name == name
		}
		if !taken {
			break
		}
		name = fmt.Sprintf("%s-%d", adminToken, i)
	}
	tok, err := newToken()
	if err != nil {
		return "", err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, TokenFile), []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("api: token: %w", err)
	}
	rec := tokenRecord{Name: name, Hash: hashToken(tok), Role: RoleAdmin, Created: time.Now().UTC()}
	b, _ := json.Marshal(rec)
	// Checked again in the transaction: servers sharing a store (etcd)
	// may start together, and the second must not replace the first's
	// token, whose plain text is in the first's data_dir.
	lost := false
	err = st.Update(func(tx store.Tx) error {
		recs, err := readTokens(tx)
		if err != nil {
			return err
		}
		lost = slices.ContainsFunc(recs, func(r tokenRecord) bool { return r.role() == RoleAdmin || r.Name == rec.Name })
		if lost {
			return nil
		}
		return tx.Put(store.BucketTokens, rec.Name, b)
	})
	if err != nil || lost {
		os.Remove(filepath.Join(dir, TokenFile))
		return "", err
	}
	return tok, nil
}

// ReadTokenFile reads the token the CLI uses on the server's machine.
func ReadTokenFile(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, TokenFile))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func hashToken(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

// ErrUnauthenticated is a request that names no valid token.
var ErrUnauthenticated = errors.New("api: missing or unknown bearer token")

// Authenticate returns who a request acts as, from its Authorization
// header ("Bearer <token>"): the token's name and role. It fails with
// ErrUnauthenticated (answer 401) for a missing, malformed or unknown
// token, with another error when the store cannot be read. It records the
// token's use (at most once a minute). A principal already in the
// request's context (WithPrincipal) is not looked at: ServeHTTP decides
// which comes first.
func (h *Handler) Authenticate(r *http.Request) (Principal, error) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return Principal{}, ErrUnauthenticated
	}
	return h.AuthenticateToken(tok)
}

// AuthenticateToken is Authenticate for a token that came another way
// (the web console's session cookie holds one).
func (h *Handler) AuthenticateToken(tok string) (Principal, error) {
	tok = strings.TrimSpace(tok)
	if tok == "" || len(tok) > 256 {
		return Principal{}, ErrUnauthenticated
	}
	want := hashToken(tok)
	var rec tokenRecord
	found := false
	err := h.inv.Store().View(func(tx store.Tx) error {
		return tx.ForEach(store.BucketTokens, "", func(k string, v []byte) error {
			var r tokenRecord
			// Every record is compared, in constant time, so the
			// answer's timing says nothing of which hash was close.
			if json.Unmarshal(v, &r) == nil && subtle.ConstantTimeCompare([]byte(r.Hash), []byte(want)) == 1 {
				rec, found = r, true
			}
			return nil
		})
	})
	if err != nil {
		return Principal{}, fmt.Errorf("api: tokens: %w", err)
	}
	if !found {
		return Principal{}, ErrUnauthenticated
	}
	h.touch(rec)
	return Principal{Name: rec.Name, Role: rec.role()}, nil
}

// touch records that rec was used now, at most once a minute per token
// (the stored time, and this process's memory of its last write, both
// say when): a burst of reads costs one store write, not one each.
func (h *Handler) touch(rec tokenRecord) {
	now := h.now().UTC()
	if now.Sub(rec.LastUsed) < lastUsedEvery {
		return
	}
	h.mu.Lock()
	if now.Sub(h.touched[rec.Name]) < lastUsedEvery {
		h.mu.Unlock()
		return
	}
	h.touched[rec.Name] = now
	h.mu.Unlock()
	err := h.inv.Store().Update(func(tx store.Tx) error {
		b, err := tx.Get(store.BucketTokens, rec.Name)
		if errors.Is(err, store.ErrNotFound) {
			return nil // revoked meanwhile
		}
		if err != nil {
			return err
		}
		var cur tokenRecord
		if err := json.Unmarshal(b, &cur); err != nil || cur.Hash != rec.Hash {
			return err // replaced meanwhile by another of that name
		}
		cur.LastUsed = now
		b, _ = json.Marshal(cur)
		return tx.Put(store.BucketTokens, cur.Name, b)
	})
	if err != nil {
		h.log.Warn("api: token use not recorded", "token", rec.Name, "err", err)
	}
}

// readTokens returns every token record, by name.
func readTokens(tx store.Tx) ([]tokenRecord, error) {
	var out []tokenRecord
	err := tx.ForEach(store.BucketTokens, "", func(k string, v []byte) error {
		var r tokenRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("token %q: %w", k, err)
		}
		out = append(out, r)
		return nil
	})
	return out, err
}

// requireAdmin answers 403 unless the request acts as an admin: token
// management is for admins, reads included.
func requireAdmin(w http.ResponseWriter, r *http.Request) bool {
	if p, _ := PrincipalFrom(r.Context()); p.Role == RoleAdmin {
		return true
	}
	writeError(w, http.StatusForbidden, "", "managing tokens needs an admin token")
	return false
}

func (h *Handler) listTokens(w http.ResponseWriter, r *http.Request) {
	if !requireAdmin(w, r) {
		return
	}
	var recs []tokenRecord
	err := h.inv.Store().View(func(tx store.Tx) error {
		var err error
		recs, err = readTokens(tx)
		return err
	})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := make([]TokenInfo, 0, len(recs))
	for _, rec := range recs {
		out = append(out, rec.info())
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) createToken(w http.ResponseWriter, r *http.Request) {
	if !requireAdmin(w, r) {
		return
	}
	var req CreateTokenRequest
	if !decode(w, r, &req) {
		return
	}
	auditObject(r, req.Name)
	if err := storage.CheckName("token", req.Name); err != nil {
		writeError(w, http.StatusBadRequest, "name", err.Error())
		return
	}
	role, err := ParseRole(req.Role)
	if err != nil {
		writeError(w, http.StatusBadRequest, "role", err.Error())
		return
	}
	tok, err := newToken()
	if err != nil {
		h.fail(w, r, err)
		return
	}
	rec := tokenRecord{Name: req.Name, Hash: hashToken(tok), Role: role, Created: h.now().UTC()}
	var conflict string
	err = h.inv.Store().Update(func(tx store.Tx) error {
		recs, err := readTokens(tx)
		if err != nil {
			return err
		}
		for _, o := range recs {
			if o.Name == rec.Name {
				conflict = fmt.Sprintf("token %q exists (revoke it first to replace it)", rec.Name)
				return nil
			}
		}
		if len(recs) >= maxTokens {
			conflict = fmt.Sprintf("%d tokens exist, the most a site may have: revoke some first", len(recs))
			return nil
		}
		b, _ := json.Marshal(rec)
		return tx.Put(store.BucketTokens, rec.Name, b)
	})
	switch {
	case err != nil:
		h.fail(w, r, err)
		return
	case conflict != "":
		writeError(w, http.StatusConflict, "name", conflict)
		return
	}
	writeJSON(w, http.StatusCreated, TokenCreated{TokenInfo: rec.info(), Token: tok,
		Notes: []string{"the token is shown this once: only its SHA-256 is kept"}})
}

func (h *Handler) revokeToken(w http.ResponseWriter, r *http.Request) {
	if !requireAdmin(w, r) {
		return
	}
	name := r.PathValue("token")
	var status int
	var msg string
	err := h.inv.Store().Update(func(tx store.Tx) error {
		recs, err := readTokens(tx)
		if err != nil {
			return err
		}
		admins, found := 0, false
		var rec tokenRecord
		for _, o := range recs {
			if o.role() == RoleAdmin {
				admins++
			}
			if o.Name == name {
				rec, found = o, true
			}
		}
		switch {
		case !found:
			status, msg = http.StatusNotFound, fmt.Sprintf("no token %q", name)
			return nil
		case rec.role() == RoleAdmin && admins == 1:
			// In the same transaction as the delete: two revokes at
			// once cannot remove the last two admins.
			status, msg = http.StatusConflict, fmt.Sprintf("token %q is the last admin token: nobody could manage tokens "+
				"without one (create another admin token first)", name)
			return nil
		}
		return tx.Delete(store.BucketTokens, name)
	})
	switch {
	case err != nil:
		h.fail(w, r, err)
		return
	case status != 0:
		writeError(w, status, "", msg)
		return
	}
	h.mu.Lock()
	delete(h.touched, name)
	h.mu.Unlock()
	n := []string{}
	if p, _ := PrincipalFrom(r.Context()); p.Name == name {
		n = append(n, "this request was made with the token just revoked: it no longer works")
	}
	if name == adminToken {
		n = append(n, "the token made at first start is named admin: if data_dir/"+TokenFile+" holds it, "+
			"the CLI on the server's machine now needs --token or DISKLESS_TOKEN")
	}
	writeJSON(w, http.StatusOK, notes(n))
}
