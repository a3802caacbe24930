package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskless-boot/diskless/internal/inventory"
	"github.com/diskless-boot/diskless/internal/storage"
	"github.com/diskless-boot/diskless/internal/store"
)

// testAPI is a handler on a fresh data directory with its token.
type testAPI struct {
	h     *Handler
	token string
	dir   string
}

func newTestAPI(t *testing.T) *testAPI {
	t.Helper()
	return newTestAPIOn(t, nil)
}

// newTestAPIOn is newTestAPI with the storage backend wrap returns
// (nil: the Local one).
func newTestAPIOn(t *testing.T, wrap func(*storage.Local) storage.Backend) *testAPI {
	t.Helper()
	return newTestAPILogged(t, wrap, nil)
}

// newTestAPILogged is newTestAPIOn with the inventory and the handler
// logging to log (nil: nowhere).
func newTestAPILogged(t *testing.T, wrap func(*storage.Local) storage.Backend, log *slog.Logger) *testAPI {
	t.Helper()
	dir := t.TempDir()
	st, err := store.OpenBolt(filepath.Join(dir, store.FileName), store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	be, err := storage.NewLocal(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	var backend storage.Backend = be
	if wrap != nil {
		backend = wrap(be)
	}
	inv, err := inventory.New(inventory.Options{Store: st, Backend: backend, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := EnsureToken(st, dir)
	if err != nil || tok == "" {
		t.Fatalf("token %q: %v", tok, err)
	}
	h, err := New(Config{Inventory: inv, Context: t.Context(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return &testAPI{h: h, token: tok, dir: dir}
}

// call sends a request with the admin token and decodes the answer into
// out (if not nil).
func (a *testAPI) call(t *testing.T, method, path, body string, out any) (int, Error) {
	t.Helper()
	return a.callAs(t, a.token, method, path, body, out)
}

// callAs is call with another token.
func (a *testAPI) callAs(t *testing.T, token, method, path, body string, out any) (int, Error) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r := httptest.NewRequest(method, Prefix+path, rd)
	r.Header.Set("Authorization", "Bearer "+token)
	w := httptest.NewRecorder()
	a.h.ServeHTTP(w, r)
	var e Error
	if w.Code >= 300 {
		json.Unmarshal(w.Body.Bytes(), &e)
	} else if out != nil {
		if err := json.Unmarshal(w.Body.Bytes(), out); err != nil {
			t.Fatalf("%s %s: answer %q: %v", method, path, w.Body, err)
		}
	}
	return w.Code, e
}

func TestTokenRequired(t *testing.T) {
	a := newTestAPI(t)
	for _, hdr := range []string{"", "Bearer", "Bearer wrong", "Basic " + a.token, "Bearer " + a.token + "x"} {
		r := httptest.NewRequest("GET", Prefix+"/images", nil)
		if hdr != "" {
			r.Header.Set("Authorization", hdr)
		}
		w := httptest.NewRecorder()
		a.h.ServeHTTP(w, r)
		if w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), "bearer token") {
			t.Errorf("Authorization %q: %d %s", hdr, w.Code, w.Body)
		}
	}
	if code, _ := a.call(t, "GET", "/images", "", nil); code != 200 {
		t.Fatalf("with the token: %d", code)
	}
	// A second start makes no new token and keeps the first valid.
	st := a.h.inv.Store()
	if tok, err := EnsureToken(st, a.dir); err != nil || tok != "" {
		t.Fatalf("second EnsureToken: %q %v", tok, err)
	}
	if got, err := ReadTokenFile(a.dir); err != nil || got != a.token {
		t.Fatalf("token file %q %v", got, err)
	}
}

// Bad input is a 400 (or 413/415) naming the field, and changes nothing.
func TestBadRequests(t *testing.T) {
	a := newTestAPI(t)
	cases := []struct {
		method, path, body string
		code               int
		field              string
	}{
		{"POST", "/images", `{"name": "x", "sise": 1}`, 400, "sise"},
		{"POST", "/images", `{"name": 7}`, 400, "name"},
		{"POST", "/images", `{"name": "x", "size": "8 bananas"}`, 400, "size"},
		{"POST", "/images", `{"name": "x", "size": 4097}`, 400, "size"},
		{"POST", "/images", `{"name": "Bad Name", "size": "1M"}`, 400, "name"},
		{"POST", "/images", `{"name": "x"} {"name": "y"}`, 400, ""},
		{"POST", "/images", `{"name": "x", "size": "1M", "import": "/nonexistent"}`, 400, "import"},
		{"POST", "/images", `[1,2,3]`, 400, ""},
		{"POST", "/images", `{` + strings.Repeat(" ", maxBody) + `}`, 413, ""},
		{"POST", "/hosts", `{"name": "h1", "macs": ["zz:zz"]}`, 400, "macs"},
		{"POST", "/hosts", `{"name": "h1", "image": "none"}`, 400, "image"},
		{"POST", "/hosts", `{"name": "h1", "chap": "yes"}`, 400, "chap"},
		{"POST", "/hosts", `{"name": "h1"}`, 400, "image"},
		{"PATCH", "/hosts/nope", `{"boot": "kernel"}`, 404, ""},
		{"GET", "/images/x/versions/v0", "", 400, "version"},
		{"GET", "/nothing", "", 404, ""},
	}
	for _, c := range cases {
		code, e := a.call(t, c.method, c.path, c.body, nil)
		if code != c.code || e.Field != c.field || e.Error == "" {
			body := c.body
			if len(body) > 60 {
				body = body[:60]
			}
			t.Errorf("%s %s %s: %d %+v, want %d field %q", c.method, c.path, body, code, e, c.code, c.field)
		}
	}
	var imgs []inventory.ImageInfo
	if a.call(t, "GET", "/images", "", &imgs); len(imgs) != 0 {
		t.Errorf("bad requests left images: %+v", imgs)
	}
}

func TestImageVersions(t *testing.T) {
	a := newTestAPI(t)
	var img inventory.ImageInfo
	if code, e := a.call(t, "POST", "/images", `{"name": "deb", "size": "1M", "description": "test"}`, &img); code != 201 {
		t.Fatalf("create: %d %+v", code, e)
	}
	if img.Latest != 1 || len(img.Versions) != 1 || img.Versions[0].Size != 1<<20 || img.Versions[0].State != inventory.VersionReady {
		t.Fatalf("created %+v", img)
	}
	if code, _ := a.call(t, "POST", "/images", `{"name": "deb", "size": "1M"}`, nil); code != 409 {
		t.Fatalf("second create: %d", code)
	}
	var v inventory.VersionInfo
	if code, _ := a.call(t, "GET", "/images/deb/versions/latest", "", &v); code != 200 || v.Number != 1 {
		t.Fatalf("latest: %d %+v", code, v)
	}
	if code, _ := a.call(t, "DELETE", "/images/deb/versions/1", "", nil); code != 204 {
		t.Fatalf("delete v1: %d", code)
	}
	if code, _ := a.call(t, "GET", "/images/deb/versions/latest", "", nil); code != 409 {
		t.Fatalf("latest of an image without versions: %d", code)
	}
	if code, _ := a.call(t, "DELETE", "/images/deb", "", nil); code != 204 {
		t.Fatalf("delete image: %d", code)
	}
}

// Every request body decoder either fills its value or returns an error:
// no panic, no allocation beyond the body's size.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"name":"lab-01","macs":["52:54:00:12:34:56"],"image":"deb","chap":{"user":"u","secret":"0123456789abc"},"mutual_chap":false}`,
		`{"name":"deb","size":"8G","description":"x"}`, `{"size":8589934592}`, `{"macs":null,"version":3,"disk_mode":"volatile"}`,
		`{"chap":true}`, `{"chap":{"user":1}}`, `{"chap_rotation":"boot"}`, `{"image":"deb","dry_run":true}`, `{"source":"/srv/x.qcow2"}`, `[]`, `"x"`, `{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, v := range []any{&AddHostRequest{}, &SetHostRequest{}, &CreateImageRequest{}, &PromoteRequest{},
			&ImportRequest{}, &ExportRequest{}, &SnapshotRequest{}} {
			decodeJSON(bytes.NewReader(b), v)
		}
	})
}

func TestJobsBoundedAndCancelable(t *testing.T) {
	js := newJobs(context.Background())
	started := make(chan struct{})
	j := js.start("test", "x", 10, func(ctx context.Context, progress func(int64)) (any, error) {
		progress(5)
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	})
	<-started
	if !js.cancel(j.ID) {
		t.Fatal("cancel: no job")
	}
	js.wait(context.Background(), j.ID)
	if got, _ := js.get(j.ID); got.State != JobCanceled || got.Done != 5 {
		t.Fatalf("canceled job: %+v", got)
	}
	for range maxFinishedJobs + 10 {
		j := js.start("test", "y", 0, func(context.Context, func(int64)) (any, error) { return "ok", nil })
		js.wait(context.Background(), j.ID)
	}
	js.start("test", "z", 0, func(context.Context, func(int64)) (any, error) { return nil, nil })
	if n := len(js.list()); n > maxFinishedJobs+1 {
		t.Fatalf("%d jobs kept", n)
	}
}

// CHAP in requests round-trips through JSON in its three forms.
func TestCHAPJSON(t *testing.T) {
	for _, c := range []CHAP{{}, {inventory.CHAPSpec{Enabled: true}}, {inventory.CHAPSpec{Enabled: true, User: "u", Secret: "0123456789abc"}}} {
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		var back CHAP
		if err := json.Unmarshal(b, &back); err != nil || back != c {
			t.Errorf("%+v -> %s -> %+v %v", c, b, back, err)
		}
	}
}
