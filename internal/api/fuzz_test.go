package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/inventory"
	"github.com/diskless-boot/diskless/internal/storage"
	"github.com/diskless-boot/diskless/internal/store"
)

// FuzzAPI sends the whole API handler sequences of requests built from the
// input: any route, or any method on it, or a path of junk; path values
// that exist, do not, or are hostile; JSON bodies assembled from fields
// and values that mean something to the model (with raw strings where
// they are free text), or raw bytes; with the right token, none, or a
// wrong one. Each input gets a fresh data directory, so a sequence can
// create an image, add hosts on it, snapshot, promote, export and delete.
// Checked for each request:
//   - no panic;
//   - without the token: 401, whatever the request, and nothing else;
//   - with it: never a 5xx - every error a client can cause is a 4xx;
//   - 2xx answers are JSON;
//   - the token is in no answer, and a CHAP secret is only in the answer
//     that creates its host and in GET /hosts/{host}/config - not in
//     listings, errors, jobs or logs.
//
// At the end every job the input started has ended.
//
// The fuzzer never touches files outside its own temporary directories:
// paths in structured bodies come from a list inside them, raw bodies
// have no '/' or '\' (so no absolute path, even escaped), and imports and
// exports go to fakes.
func FuzzAPI(f *testing.F) {
	for _, s := range faSeeds() {
		f.Add(s)
	}
	sandbox := newFaSandbox(f)
	// A file system that holds smaller files than the API accepts images
	// (ext4 stops at 16 TiB, this at 16 GiB): the data directory is on
	// tmpfs, which would hold anything sparse.
	limitFileSize(f, 16<<30)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 4096 {
			return
		}
		w := newFaWorld(t, sandbox)
		for _, f := range w.run(data) {
			t.Error(f)
		}
	})
}

// TestFuzzAPIDetects checks that FuzzAPI's checks can fail: a handler that
// lets a request without the token through, and one that lists hosts
// with their secrets, must be noticed by the seeds.
func TestFuzzAPIDetects(t *testing.T) {
	sandbox := newFaSandbox(t)
	seed := faSeeds()[0] // creates an image and a CHAP host, lists, reads config
	w := newFaWorld(t, sandbox)
	w.h.cfg.NoAuth = true
	if got := w.run(seed); !slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, "want 401") }) {
		t.Errorf("a handler without authentication went unnoticed: %q", got)
	}
	w = newFaWorld(t, sandbox)
	w.leakListing = true
	if got := w.run(seed); !slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, "holds a CHAP secret") }) {
		t.Errorf("a listing with secrets went unnoticed: %q", got)
	}
}

// faSandbox holds the files hosts and imports may name.
type faSandbox struct {
	dir   string
	paths []string // what raw_path, kernel, initrd, import and source pick from
}

func newFaSandbox(tb testing.TB) *faSandbox {
	dir := tb.TempDir()
	s := &faSandbox{dir: dir}
	raw := filepath.Join(dir, "raw.img")
	if err := os.WriteFile(raw, nil, 0o600); err != nil {
		tb.Fatal(err)
	}
	os.Truncate(raw, 1<<20)
	os.WriteFile(filepath.Join(dir, "vmlinuz"), []byte("kernel"), 0o600)
	os.WriteFile(filepath.Join(dir, "import.img"), nil, 0o600)
	os.Mkdir(filepath.Join(dir, "adir"), 0o700)
	s.paths = []string{raw, filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "import.img"), filepath.Join(dir, "missing.img"),
		filepath.Join(dir, "adir"), "relative.img", ""}
	return s
}

// faSource is what the fake importer reads: 1 MiB of zeros.
type faSource struct{ n int64 }

func (s faSource) ReadAt(p []byte, off int64) (int, error) {
	if off >= s.n {
		return 0, io.EOF
	}
	n := copy(p, make([]byte, min(int64(len(p)), s.n-off)))
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
func (s faSource) Size() int64 { return s.n }

var faTrace func(*http.Request, []byte, *httptest.ResponseRecorder)

type faWorld struct {
	t       testing.TB
	sandbox *faSandbox
	h       *Handler
	token   string
	logs    *faLogs
	secrets []string
	names   map[string][]string // learnt path values: image, host, snapshot, job
	jobs    []string
	// leakListing breaks the handler on purpose (TestFuzzAPIDetects).
	leakListing bool
}

type faLogs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *faLogs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// newFaWorld makes a handler on a fresh data directory, in memory when
// /dev/shm is there: the store syncs on every write.
func newFaWorld(tb testing.TB, sandbox *faSandbox) *faWorld {
	base := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		base = "/dev/shm"
	}
	dir, err := os.MkdirTemp(base, "diskless-fuzzapi-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	st, err := store.OpenBolt(filepath.Join(dir, store.FileName), store.BoltOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	w := &faWorld{t: tb, sandbox: sandbox, logs: &faLogs{}, names: map[string][]string{}}
	log := slog.New(slog.NewTextHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	be, err := storage.NewLocal(dir, log)
	if err != nil {
		tb.Fatal(err)
	}
	inv, err := inventory.New(inventory.Options{Store: st, Backend: be, Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	if w.token, err = EnsureToken(st, dir); err != nil {
		tb.Fatal(err)
	}
	good := sandbox.paths[2]
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	w.h, err = New(Config{Inventory: inv, Logger: log, Context: ctx,
		Import: func(_ context.Context, path string) (storage.Source, string, func() error, error) {
			if path != good {
				return nil, "", nil, fmt.Errorf("open %s: %w", path, os.ErrNotExist)
			}
			return faSource{1 << 20}, "import " + path, func() error { return nil }, nil
		},
		Export: func(_ context.Context, src storage.Source, _, path, _ string, progress func(int64)) error {
			if path == "" {
				return errors.New("no path")
			}
			progress(src.Size())
			return nil
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return w
}

type faInput struct{ b []byte }

func (in *faInput) u8() byte {
	if len(in.b) == 0 {
		return 0
	}
	v := in.b[0]
	in.b = in.b[1:]
	return v
}

// str reads a free-text string: no '/' or '\', so no path.
func (in *faInput) str(max int) string {
	n := min(int(in.u8())%(max+1), len(in.b))
	b := bytes.Map(func(r rune) rune {
		if r == '/' || r == '\\' {
			return '_'
		}
		return r
	}, in.b[:n])
	in.b = in.b[n:]
	return string(b)
}

func faPick[T any](in *faInput, list []T) T { return list[int(in.u8())%len(list)] }

// Bodies the routes take.
const (
	faNoBody = iota
	faImageBody
	faImportBody
	faExportBody
	faAddHostBody
	faSetHostBody
	faPromoteBody
	faSnapshotBody
)

var faRoutes = []struct {
	method, path string
	body         int
}{
	{"GET", "/images", faNoBody},
	{"POST", "/images", faImageBody},
	{"GET", "/images/{image}", faNoBody},
	{"DELETE", "/images/{image}", faNoBody},
	{"GET", "/images/{image}/versions", faNoBody},
	{"POST", "/images/{image}/versions", faImportBody},
	{"GET", "/images/{image}/versions/{version}", faNoBody},
	{"DELETE", "/images/{image}/versions/{version}", faNoBody},
	{"POST", "/images/{image}/versions/{version}/export", faExportBody},
	{"GET", "/hosts", faNoBody},
	{"POST", "/hosts", faAddHostBody},
	{"GET", "/hosts/{host}", faNoBody},
	{"PATCH", "/hosts/{host}", faSetHostBody},
	{"DELETE", "/hosts/{host}", faNoBody},
	{"GET", "/hosts/{host}/config", faNoBody},
	{"POST", "/hosts/{host}/reset", faNoBody},
	{"POST", "/hosts/{host}/check", faNoBody},
	{"POST", "/hosts/{host}/promote", faPromoteBody},
	{"GET", "/hosts/{host}/snapshots", faNoBody},
	{"POST", "/hosts/{host}/snapshots", faSnapshotBody},
	{"DELETE", "/hosts/{host}/snapshots/{snapshot}", faNoBody},
	{"POST", "/hosts/{host}/snapshots/{snapshot}/rollback", faNoBody},
	{"GET", "/sessions", faNoBody},
	{"GET", "/unknown-hosts", faNoBody},
	{"GET", "/jobs", faNoBody},
	{"GET", "/jobs/{job}", faNoBody},
	{"DELETE", "/jobs/{job}", faNoBody},
	{"GET", "/{junk}", faNoBody},
	{"GET", "/hosts/{host}/credentials", faNoBody},
	{"POST", "/hosts/{host}/rotate-secrets", faNoBody},
	{"POST", "/hosts/{host}/clear-error", faNoBody},
}

var (
	faMethods = []string{"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "BREW"}
	// Path values beside the ones the input made.
	faValues = map[string][]string{
		"image":    {"deb", "alpine", "Bad%20Name", "..", ".", strings.Repeat("x", 70), "%2e%2e", "a%2Fb", "%C3%BC", "-x"},
		"version":  {"1", "2", "latest", "v1", "0", "-1", "999999999999999999999", "v", "1.0"},
		"host":     {"h1", "lab-01", "UPPER", "..", strings.Repeat("h", 70), "%00"},
		"snapshot": {"s1", "auto-1", "..", "x"},
		"job":      {"deadbeefdeadbeef", "x"},
	}
	faSecrets = []string{"Fuzz-Secret-0001-abcdef", "Fuzz-Secret-0002-abcdef", "short", "Fuzz Secret with spaces",
		"Fuzz-Secret;rm-rf", "Fuzz-$ecret-${net0}"}
	faMACs = []string{"52:54:00:12:34:56", "52:54:00:12:34:57", "52-54-00-12-34-58", "01:00:5e:00:00:01",
		"ff:ff:ff:ff:ff:ff", "zz", "52:54:00:12:34:56:00:01", ""}
)

// authHeader picks the Authorization header: the token most of the time,
// else none, another token, another scheme, the token cut or extended.
func (w *faWorld) authHeader(sel byte) (string, bool) {
	switch sel % 12 {
	case 4:
		return "", false
	case 5:
		return "Bearer dl_wrongwrongwrongwrongwrongwrongwrongwrongw", false
	case 6:
		return "Basic " + w.token, false
	case 7:
		return "bearer " + w.token, false
	case 8:
		return "Bearer " + w.token + "x", false
	case 9:
		return "Bearer " + w.token[:10], false
	case 10:
		return "Bearer  " + w.token + " ", true // what authenticate trims
	case 11:
		return "Bearer", false
	}
	return "Bearer " + w.token, true
}

// value picks a path value: one the input made, or one from faValues.
func (w *faWorld) value(in *faInput, kind string) string {
	sel := int(in.u8())
	if learnt := w.names[kind]; len(learnt) > 0 && sel%3 != 2 {
		return url.PathEscape(learnt[sel%len(learnt)])
	}
	return faValues[kind][sel%len(faValues[kind])]
}

// run sends the requests the input describes; per request: auth, route,
// method override, path values, body, content type.
func (w *faWorld) run(data []byte) []string {
	in := &faInput{b: data}
	var fails []string
	for n := 0; len(in.b) > 0 && n < 48; n++ {
		auth, authed := w.authHeader(in.u8())
		rt := faPick(in, faRoutes)
		method := rt.method
		if m := in.u8(); m%8 == 7 {
			method = faPick(in, faMethods)
		}
		path := rt.path
		for _, kind := range []string{"image", "version", "host", "snapshot", "job"} {
			if strings.Contains(path, "{"+kind+"}") {
				path = strings.Replace(path, "{"+kind+"}", w.value(in, kind), 1)
			}
		}
		if strings.Contains(path, "{junk}") {
			path = strings.Replace(path, "{junk}", url.PathEscape(in.str(40)), 1)
		}
		target := Prefix + path
		var body []byte
		bodySel := in.u8()
		switch {
		case bodySel%8 == 7:
			body = []byte(in.str(200)) // raw bytes: the decoder's errors
		case rt.body != faNoBody || bodySel%8 == 6:
			body = w.body(in, rt.body)
		}
		ct := faPick(in, []string{"", "application/json", "application/json; charset=utf-8", "text/plain"})
		u, err := url.ParseRequestURI(target)
		if err != nil {
			continue
		}
		r := httptest.NewRequest("GET", "/", bytes.NewReader(body))
		r.Method, r.URL, r.RequestURI = method, u, target
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		if ct != "" && body != nil {
			r.Header.Set("Content-Type", ct)
		}
		rec := httptest.NewRecorder()
		w.h.ServeHTTP(rec, r)
		if faTrace != nil {
			faTrace(r, body, rec)
		}
		if w.leakListing && rt.path == "/hosts" && rt.method == "GET" && rec.Code == 200 {
			rec.Body.WriteString(strings.Join(w.secrets, " "))
		}
		fails = append(fails, w.check(method, rt.method+" "+rt.path, target, body, authed, rec)...)
	}
	// Every job ends (the fakes are instant; a job still running is stuck).
	for _, id := range w.jobs {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		w.h.WaitJob(ctx, id)
		cancel()
		if j, ok := w.h.jobs.get(id); ok && j.State == JobRunning {
			fails = append(fails, fmt.Sprintf("job %s (%s %s) still running", id, j.Kind, j.Object))
		}
	}
	w.logs.mu.Lock()
	logs := w.logs.buf.String()
	w.logs.mu.Unlock()
	for _, s := range append([]string{w.token}, w.secrets...) {
		if strings.Contains(logs, s) {
			fails = append(fails, fmt.Sprintf("a secret (%.6s...) in the logs:\n%s", s, logs))
		}
	}
	return fails
}

func (w *faWorld) check(method, route, target string, body []byte, authed bool, rec *httptest.ResponseRecorder) (fails []string) {
	failf := func(format string, args ...any) {
		fails = append(fails, fmt.Sprintf("%s %s (%s, body %q): ", method, target, route, clip(body))+fmt.Sprintf(format, args...))
	}
	answer := rec.Body.String()
	if !authed {
		if rec.Code != http.StatusUnauthorized {
			failf("without the token: %d, want 401: %s", rec.Code, clip([]byte(answer)))
		}
	} else if rec.Code >= 500 {
		failf("%d: %s", rec.Code, answer)
	}
	hdrs := fmt.Sprint(rec.Header())
	if strings.Contains(answer, w.token) || strings.Contains(hdrs, w.token) {
		failf("the API token is in the answer")
	}
	// Secrets: only in the answer that creates the host, its config and
	// its credentials. (ServeMux routes HEAD to GET handlers; a server
	// drops the body.)
	shows := authed && rec.Code/100 == 2 && method == "POST" && route == "POST /hosts" ||
		authed && rec.Code == 200 && (method == "GET" || method == "HEAD") &&
			(route == "GET /hosts/{host}/config" || route == "GET /hosts/{host}/credentials")
	for _, s := range w.secrets {
		if (strings.Contains(answer, s) && !shows) || strings.Contains(hdrs, s) {
			failf("answer %d holds a CHAP secret: %s", rec.Code, clip([]byte(answer)))
		}
	}
	if authed {
		for _, s := range faSecrets {
			if len(s) >= 12 && bytes.Contains(body, []byte(s)) && !slices.Contains(w.secrets, s) && rec.Code/100 == 2 {
				w.secrets = append(w.secrets, s) // accepted: now a host's
			}
		}
	}
	if rec.Code/100 == 2 && rec.Code != http.StatusNoContent && method != "HEAD" && !json.Valid(rec.Body.Bytes()) {
		failf("%d answer is not JSON: %q", rec.Code, clip([]byte(answer)))
	}
	if !authed || rec.Code/100 != 2 {
		return fails
	}
	w.learn(route, body, rec.Body.Bytes())
	return fails
}

// learn keeps the names and secrets a successful answer shows.
func (w *faWorld) learn(route string, reqBody, b []byte) {
	add := func(kind, v string) {
		if v != "" && !slices.Contains(w.names[kind], v) {
			w.names[kind] = append(w.names[kind], v)
		}
	}
	switch route {
	case "POST /images":
		var img struct{ Name string }
		if json.Unmarshal(b, &img); img.Name == "" {
			json.Unmarshal(reqBody, &img) // an import: the answer is its job
		}
		add("image", img.Name)
	case "POST /hosts":
		var hc HostChange
		json.Unmarshal(b, &hc)
		add("host", hc.Host.Name)
		for _, c := range []*Credentials{hc.Host.CHAP, hc.Host.MutualCHAP} {
			if c != nil && c.Secret != "" && !slices.Contains(w.secrets, c.Secret) {
				w.secrets = append(w.secrets, c.Secret)
			}
		}
	case "GET /hosts/{host}/credentials":
		// After a rotation, the next secrets are shown here first.
		var hc HostCredentials
		json.Unmarshal(b, &hc)
		for _, c := range []*Credentials{hc.CHAP, hc.MutualCHAP, hc.NextCHAP, hc.NextMutualCHAP} {
			if c != nil && c.Secret != "" && !slices.Contains(w.secrets, c.Secret) {
				w.secrets = append(w.secrets, c.Secret)
			}
		}
	case "POST /hosts/{host}/snapshots":
		var s struct{ Name string }
		json.Unmarshal(b, &s)
		add("snapshot", s.Name)
	}
	var acc Accepted
	if json.Unmarshal(b, &acc) == nil && acc.Job.ID != "" {
		add("job", acc.Job.ID)
		if !slices.Contains(w.jobs, acc.Job.ID) {
			w.jobs = append(w.jobs, acc.Job.ID)
		}
		// The fakes make jobs instant: let this one end, so that what
		// follows sees its outcome on every run.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		w.h.WaitJob(ctx, acc.Job.ID)
		cancel()
	}
}

func clip(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}

// body builds a JSON body for a route: a mask says which fields it has,
// then one byte per field picks the value.
func (w *faWorld) body(in *faInput, kind int) []byte {
	mask := uint16(in.u8())<<8 | uint16(in.u8())
	m := map[string]any{}
	field := func(i int, name string, v func() any) {
		if mask&(1<<i) != 0 {
			m[name] = v()
		}
	}
	path := func() any { return faPick(in, w.sandbox.paths) }
	name := func(kind string) func() any {
		return func() any {
			if sel := in.u8(); sel%4 == 3 {
				return in.str(70)
			} else if learnt := w.names[kind]; len(learnt) > 0 && sel%4 != 2 {
				return learnt[int(sel)%len(learnt)]
			}
			v, _ := url.PathUnescape(faPick(in, faValues[kind]))
			return v
		}
	}
	chap := func() any {
		if r := in.u8(); r%4 != 0 {
			m["chap_rotation"] = []string{"", "boot", "off", "bogus"}[r%4]
		}
		switch in.u8() % 6 {
		case 0:
			return true
		case 1:
			return false
		case 2:
			return map[string]any{"user": "fuzz-user", "secret": faPick(in, faSecrets)}
		case 3:
			return map[string]any{"secret": faPick(in, faSecrets)}
		case 4:
			return "yes"
		}
		return map[string]any{"user": 1}
	}
	switch kind {
	case faImageBody:
		field(0, "name", name("image"))
		field(1, "description", func() any { return in.str(255) + in.str(255) })
		field(2, "size", func() any {
			return faPick(in, []any{"1M", "4K", 4096, 4097, "8G", "x", 0, -4096, "64T", "65T", "1E", 1.5, "0x1000", nil})
		})
		field(3, "import", path)
		field(4, "sise", func() any { return 1 })
	case faImportBody:
		field(0, "source", path)
		field(1, "extra", func() any { return true })
	case faExportBody:
		field(0, "path", func() any { return filepath.Join(w.sandbox.dir, "export.img") })
		field(1, "format", func() any { return faPick(in, []any{"raw", "qcow2", "vmdk", "", 7}) })
	case faAddHostBody, faSetHostBody:
		add := kind == faAddHostBody
		if add {
			field(0, "name", name("host"))
		}
		field(1, "macs", func() any {
			var macs []string
			for range in.u8() % 4 {
				macs = append(macs, faPick(in, faMACs))
			}
			return macs
		})
		field(2, "arch", func() any { return faPick(in, []string{"x86_64", "arm64", "", "bogus", "efi"}) })
		field(3, "image", name("image"))
		field(4, "version", func() any { return faPick(in, []any{0, 1, 2, -1, "1"}) })
		field(5, "disk_mode", func() any { return faPick(in, []string{"persistent", "volatile", "raw", "bogus", ""}) })
		field(6, "boot", func() any { return faPick(in, []string{"sanboot", "kernel", "bogus"}) })
		field(7, "kernel", path)
		field(8, "initrd", path)
		field(9, "cmdline", func() any {
			if sel := in.u8(); sel%5 != 4 {
				return []string{"quiet", "console=ttyS0 a;b", "$x", strings.Repeat("a ", 600)}[sel%5]
			}
			return in.str(64)
		})
		field(10, "ip", func() any { return faPick(in, []string{"10.0.0.50", "10.0.0.51", "bad", "::1", "0.0.0.0"}) })
		if !add {
			field(11, "chap_rotation", func() any { return faPick(in, []string{"boot", "off", "bogus", ""}) })
		}
		if add {
			field(11, "raw_path", path)
			field(12, "initiator_iqn", func() any {
				return faPick(in, []string{"iqn.2026-01.org.example:h1", "iqn.bad name", "eui.0123456789abcdef", ""})
			})
			field(13, "target_iqn", func() any { return faPick(in, []string{"iqn.2026-01.org.example:disk-h1", "x"}) })
			field(14, "chap", chap)
			field(15, "mutual_chap", chap)
		}
	case faPromoteBody:
		field(0, "image", name("image"))
		field(1, "dry_run", func() any { return in.u8()&1 == 0 })
	case faSnapshotBody:
		field(0, "name", func() any { return faPick(in, []string{"", "s1", "..", strings.Repeat("s", 70), "Bad Name", "auto-1"}) })
	default:
		field(0, "x", func() any { return in.str(20) })
	}
	b, _ := json.Marshal(m)
	return b
}

// faSeed builds a FuzzAPI input.
type faSeed struct{ b []byte }

// req adds a request: auth (0 the token), the route, no method override,
// then what the route reads in order: a byte per path value (image,
// version, host, snapshot, job), the body selector, for a body the
// 16-bit field mask and the fields' value bytes, and the content type.
func (s *faSeed) req(auth byte, route string, rest ...byte) *faSeed {
	i := slices.IndexFunc(faRoutes, func(r struct {
		method, path string
		body         int
	}) bool {
		return r.method+" "+r.path == route
	})
	if i < 0 {
		panic("no route " + route)
	}
	s.b = append(append(s.b, auth, byte(i), 0), rest...)
	return s
}

// faSeeds: an admin's session (image, CHAP host, config, snapshot,
// promote, export, cleanup) with requests without the token among them,
// and one with an import, explicit secrets, raw bodies and junk paths.
func faSeeds() [][]byte {
	const (
		noAuth, badToken, basic = 4, 5, 6
		js                      = 1 // Content-Type: application/json
	)
	admin := (&faSeed{}).
		req(0, "POST /images", 0, 0, 0x05, 2, 0, 0, js). // {"name": "deb", "size": "1M"}
		// {"name": "h1", "image": "deb", "chap": true} (no chap_rotation)
		req(0, "POST /hosts", 0, 0x40, 0x09, 2, 0, 0, 0, 0, js).
		req(0, "GET /hosts", 0, js).
		req(0, "GET /hosts/{host}", 0, 0, js).
		req(0, "GET /hosts/{host}/config", 0, 0, js).
		req(0, "POST /hosts/{host}/snapshots", 0, 0, 0, 1, 1, js). // {"name": "s1"}
		req(0, "GET /hosts/{host}/snapshots", 0, 0, js).
		req(0, "POST /hosts/{host}/promote", 0, 0, 0, 3, 0, 1, js). // {"image": "deb", "dry_run": false}
		req(0, "POST /images/{image}/versions/{version}/export", 0, 2, 0, 0, 3, 0, js).
		req(0, "GET /jobs", 0, js).
		req(0, "GET /jobs/{job}", 0, 0, js).
		req(0, "PATCH /hosts/{host}", 0, 0, 0, 4, 1, js). // {"arch": "arm64"}
		req(0, "POST /hosts/{host}/rotate-secrets", 0, 0, js).
		req(0, "GET /hosts/{host}/credentials", 0, 0, js).
		req(0, "GET /hosts/{host}", 0, 0, js).
		req(noAuth, "GET /hosts/{host}/credentials", 0, 0, js).
		req(noAuth, "GET /hosts/{host}/config", 0, 0, js).
		req(badToken, "GET /hosts", 0, js).
		req(0, "POST /hosts/{host}/snapshots/{snapshot}/rollback", 0, 0, 0, js).
		req(0, "DELETE /hosts/{host}", 0, 0, js).
		req(0, "DELETE /images/{image}", 0, 0, js)
	other := (&faSeed{}).
		req(0, "POST /images", 0, 0, 0x09, 2, 1, 2, js). // {"name": "alpine", "import": <a file>}
		// {"name": "lab-01", "image": "alpine", "disk_mode": "volatile",
		//  "chap": {"user": ..., "secret": ...}, "mutual_chap": {...}}
		req(0, "POST /hosts", 0, 0xc0, 0x29, 2, 1, 0, 1, 0, 2, 0, 0, 2, 1, js).
		req(0, "GET /hosts/{host}/config", 0, 0, js).
		req(0, "GET /hosts", 0, js).
		req(0, "POST /hosts", append(append([]byte{7, 19}, `{"name":"h2","x":1}`...), js)...).
		req(0, "GET /{junk}", append(append([]byte{10}, "..%2fetc/x"...), 0, js)...).
		req(0, "POST /hosts/{host}/reset", 0, 0, js).
		req(0, "POST /hosts/{host}/check", 0, 0, js).
		req(basic, "DELETE /hosts/{host}", 0, 0, js)
	return [][]byte{admin.b, other.b}
}
