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
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/diskless-boot/diskless/internal/fsutil"
	"github.com/diskless-boot/diskless/internal/store"
)

// TokenFile is where the admin token is kept in data_dir (mode 0600), so
// the CLI on the server's own machine can use the API without asking.
const TokenFile = "api-token"

// adminToken is the name of the token made at first start.
const adminToken = "admin"

// tokenRecord is a token as stored: only its SHA-256, never the token.
type tokenRecord struct {
	Name    string    `json:"name"`
	Hash    string    `json:"sha256"`
	Created time.Time `json:"created"`
}

// EnsureToken makes the admin token on first start: 32 random bytes from
// crypto/rand, stored hashed in the state store and in plain in
// dir/api-token (0600) for the local CLI. It returns the token when it
// made it now (to be shown once), "" otherwise.
func EnsureToken(st store.Store, dir string) (string, error) {
	var have bool
	err := st.View(func(tx store.Tx) error {
		return tx.ForEach(store.BucketTokens, "", func(string, []byte) error {
			have = true
			return nil
		})
	})
	if err != nil || have {
		return "", err
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("api: token: %w", err)
	}
	tok := "dl_" + base64.RawURLEncoding.EncodeToString(raw[:])
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, TokenFile), []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("api: token: %w", err)
	}
	rec := tokenRecord{Name: adminToken, Hash: hashToken(tok), Created: time.Now().UTC()}
	b, _ := json.Marshal(rec)
	err = st.Update(func(tx store.Tx) error { return tx.Put(store.BucketTokens, rec.Name, b) })
	if err != nil {
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

// errNoToken is an Authorization that names no valid token.
var errNoToken = errors.New("api: missing or unknown bearer token")

// authenticate returns the name of the token a request carries.
func authenticate(st store.Store, header string) (string, error) {
	tok, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || tok == "" || len(tok) > 256 {
		return "", errNoToken
	}
	want := hashToken(strings.TrimSpace(tok))
	name := ""
	err := st.View(func(tx store.Tx) error {
		return tx.ForEach(store.BucketTokens, "", func(k string, v []byte) error {
			var rec tokenRecord
			if json.Unmarshal(v, &rec) == nil && subtle.ConstantTimeCompare([]byte(rec.Hash), []byte(want)) == 1 {
				name = rec.Name
			}
			return nil
		})
	})
	if err != nil {
		return "", err
	}
	if name == "" {
		return "", errNoToken
	}
	return name, nil
}
