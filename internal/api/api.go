// Package api is the admin REST API of diskless: JSON under /api/v1 for
// images, versions, hosts, snapshots, sessions and long-running jobs,
// behind named bearer tokens with a role (admin, read-only), every change
// recorded in a bounded audit log (who, what, when, result). Principal
// and Handler.AuthenticateToken are the seam another front end (the web
// console) uses to act through it. It turns HTTP into calls of the
// inventory (which owns every rule) and the inventory's refusals into
// status codes: 400 with the bad field for invalid input, 404, 409 for
// conflicts with the state. It serves no boot endpoint (internal/web
// does) and is mounted on the admin plane. docs/api.md and
// docs/openapi.yaml describe it.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/diskless-boot/diskless/internal/bootevent"
	"github.com/diskless-boot/diskless/internal/inventory"
	"github.com/diskless-boot/diskless/internal/iscsi"
	"github.com/diskless-boot/diskless/internal/ratelog"
	"github.com/diskless-boot/diskless/internal/storage"
)

// Prefix is where the API lives.
const Prefix = "/api/v1"

// catchAll is the pattern that answers "no such endpoint".
const catchAll = Prefix + "/"

// MetricsPath is where the API's handler serves Config.Metrics.
const MetricsPath = "/metrics"

// maxBody bounds a request body: requests are small JSON documents.
const maxBody = 1 << 20

// apiWriteTimeout bounds the answer of one request.
const apiWriteTimeout = 30 * time.Minute

// Status is what the running server knows about hosts: their sessions and
// addresses. Without a server (the CLI on the data directory) it is nil:
// nothing is online.
type Status interface {
	// Sessions lists the logged-in sessions of a target.
	Sessions(target string) []iscsi.SessionInfo
	// HostIP is the host's current IPv4 address (DHCP lease or iSCSI
	// session), "" when unknown.
	HostIP(h *inventory.Host) string
	// BootState is where the host stands in its boot now.
	BootState(h *inventory.Host) bootevent.State
	// Boots lists the host's boot timelines, newest first.
	Boots(host string) ([]bootevent.Boot, error)
	// LastBoot is the host's latest boot, false when none is known.
	LastBoot(host string) (bootevent.Boot, bool)
	// SubscribeEvents streams every boot event from now on; the channel
	// closes when the subscriber lags too far behind. cancel ends it.
	SubscribeEvents() (events <-chan bootevent.Event, cancel func(), err error)
}

// ServerInfo says where hosts reach the server: for the configuration
// texts of `host show --config`.
type ServerInfo struct {
	Address        netip.Addr // invalid when unknown (no server running)
	HTTPPort       uint16
	ISCSIPort      uint16
	PortalGroupTag uint16
}

// Importer opens a disk image file of any supported format as a source of
// bytes; origin describes it ("import /srv/x.qcow2 (qcow2)").
type Importer func(ctx context.Context, path string) (src storage.Source, origin string, closeFn func() error, err error)

// Exporter writes size bytes of src to path in format ("raw", "qcow2");
// srcPath, when not empty, is a file holding the same bytes (for tools
// that need one).
type Exporter func(ctx context.Context, src storage.Source, srcPath, path, format string, progress func(done int64)) error

// Config configures a Handler.
type Config struct {
	Inventory *inventory.Inventory // required
	Status    Status
	Server    ServerInfo
	Import    Importer // required for imports
	// Inspect tells a file's virtual size without converting it, so a
	// request naming a file that cannot be imported fails at once
	// (default: Import opens and closes it).
	Inspect func(ctx context.Context, path string) (int64, error)
	Export  Exporter // required for exports
	// NoAuth skips the token check: only for the CLI's in-process
	// handler on a data directory it has opened itself. Every request
	// then acts as Principal.
	NoAuth bool
	// Principal is who requests act as with NoAuth: the audit log names
	// it. Default: "local", admin. The CLI sets "local:<user name>".
	Principal Principal
	Logger    *slog.Logger
	// Context bounds the jobs (default: background).
	Context context.Context
	// Metrics, when set, is served at GET /metrics (Prometheus), behind
	// the same token as the API.
	Metrics http.Handler
}

// Handler serves the API. It is safe for concurrent use.
type Handler struct {
	cfg  Config
	inv  *inventory.Inventory
	log  *slog.Logger
	rlog *ratelog.Logger // lines clients can cause
	mux  *http.ServeMux
	jobs *jobs
	now  func() time.Time

	mu      sync.Mutex
	touched map[string]time.Time // token name -> when its last use was written

	unauthenticated, forbidden, auditFailures atomic.Uint64
}

// New returns the API handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Inventory == nil {
		return nil, errors.New("api: an inventory is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Context == nil {
		cfg.Context = context.Background()
	}
	if cfg.Principal.Name == "" {
		cfg.Principal.Name = "local"
	}
	if cfg.Principal.Role == "" {
		cfg.Principal.Role = RoleAdmin
	}
	h := &Handler{cfg: cfg, inv: cfg.Inventory, log: cfg.Logger, rlog: ratelog.NewLogger(10*time.Second, 3),
		mux: http.NewServeMux(), jobs: newJobs(cfg.Context), now: time.Now, touched: map[string]time.Time{}}
	h.routes()
	return h, nil
}

// ServeHTTP authenticates the request, checks its role and dispatches
// it; a change (any method but GET and HEAD on a route) is recorded in the
// audit log. Who a request acts as comes from, in order: a principal in
// its context (WithPrincipal: another front end in this process that
// authenticated it), Config.Principal with NoAuth, the Authorization
// header (Authenticate).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p, ok := PrincipalFrom(r.Context())
	switch {
	case ok:
	case h.cfg.NoAuth:
		p = h.cfg.Principal
		r = r.WithContext(WithPrincipal(r.Context(), p))
	default:
		var err error
		if p, err = h.Authenticate(r); err != nil {
			h.refuse(w, r, err)
			return
		}
		r = r.WithContext(WithPrincipal(r.Context(), p))
	}
	if r.Body == nil {
		r.Body = http.NoBody // a request made in process (WithPrincipal, the CLI's) may have none
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	// Mounted on the boot network's server, the API would inherit its
	// short timeouts; some calls (a raw host's copy, a snapshot merge)
	// take longer, and their answer must not be cut (it may hold secrets
	// shown once).
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Now().Add(apiWriteTimeout))
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		h.mux.ServeHTTP(w, r)
		return
	}
	if p.Role != RoleAdmin {
		// Not an audit row: a read-only token could otherwise push the
		// record of real changes out of the bounded log.
		h.forbidden.Add(1)
		h.rlog.Log(h.log, slog.LevelWarn, "api: change refused to a read-only token", "token", p.Name, "ip", r.RemoteAddr,
			"method", r.Method, "path", r.URL.Path)
		writeError(w, http.StatusForbidden, "", fmt.Sprintf("token %q is %s: %s %s changes state and needs an admin token",
			p.Name, p.Role, r.Method, r.URL.Path))
		return
	}
	if _, pattern := h.mux.Handler(r); pattern != "" && pattern != catchAll {
		h.serveAudited(w, r, p, pattern)
		return
	}
	h.mux.ServeHTTP(w, r) // no such route: nothing changes
}

// refuse answers a request that failed authentication. Such requests are
// not audited: anyone who can reach the listener could grow the log with
// them. They are counted, and logged at most a few times a minute with
// the number held back (never with what the request sent).
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, err error) {
	if !errors.Is(err, ErrUnauthenticated) {
		h.log.Error("api: cannot check the token", "err", err)
		writeError(w, http.StatusInternalServerError, "", "cannot check the token: "+err.Error())
		return
	}
	h.unauthenticated.Add(1)
	h.rlog.Log(h.log, slog.LevelWarn, "api: request without a valid token refused", "ip", r.RemoteAddr,
		"method", r.Method, "path", r.URL.Path)
	w.Header().Set("WWW-Authenticate", `Bearer realm="diskless"`)
	writeError(w, http.StatusUnauthorized, "", "a valid bearer token is required (Authorization: Bearer <token>; the server's is in data_dir/api-token)")
}

// Stats are the API's counters. Requests refused for their token are
// not audit entries (see refuse and ServeHTTP); they are counted here.
type Stats struct {
	Unauthenticated    uint64 // requests without a valid token (401)
	Forbidden          uint64 // changes asked with a read-only token (403)
	AuditWriteFailures uint64 // changes made whose audit entry could not be written
}

// Stats returns the API's counters.
func (h *Handler) Stats() Stats {
	return Stats{Unauthenticated: h.unauthenticated.Load(), Forbidden: h.forbidden.Load(),
		AuditWriteFailures: h.auditFailures.Load()}
}

// WaitJob blocks until a job ends (the CLI's in-process handler).
func (h *Handler) WaitJob(ctx context.Context, id string) { h.jobs.wait(ctx, id) }

func (h *Handler) routes() {
	m := h.mux
	p := Prefix
	if h.cfg.Metrics != nil {
		m.Handle("GET "+MetricsPath, h.cfg.Metrics)
	}
	m.HandleFunc("GET "+p+"/images", h.listImages)
	m.HandleFunc("POST "+p+"/images", h.createImage)
	m.HandleFunc("GET "+p+"/images/{image}", h.getImage)
	m.HandleFunc("DELETE "+p+"/images/{image}", h.deleteImage)
	m.HandleFunc("GET "+p+"/images/{image}/versions", h.listVersions)
	m.HandleFunc("POST "+p+"/images/{image}/versions", h.importVersion)
	m.HandleFunc("GET "+p+"/images/{image}/versions/{version}", h.getVersion)
	m.HandleFunc("DELETE "+p+"/images/{image}/versions/{version}", h.deleteVersion)
	m.HandleFunc("POST "+p+"/images/{image}/versions/{version}/export", h.exportVersion)
	m.HandleFunc("GET "+p+"/hosts", h.listHosts)
	m.HandleFunc("POST "+p+"/hosts", h.addHost)
	m.HandleFunc("GET "+p+"/hosts/{host}", h.getHost)
	m.HandleFunc("PATCH "+p+"/hosts/{host}", h.setHost)
	m.HandleFunc("DELETE "+p+"/hosts/{host}", h.removeHost)
	m.HandleFunc("GET "+p+"/hosts/{host}/config", h.hostConfig)
	m.HandleFunc("GET "+p+"/hosts/{host}/credentials", h.hostCredentials)
	m.HandleFunc("POST "+p+"/hosts/{host}/reset", h.resetHost)
	m.HandleFunc("POST "+p+"/hosts/{host}/check", h.checkHost)
	m.HandleFunc("POST "+p+"/hosts/{host}/clear-error", h.clearDiskError)
	m.HandleFunc("POST "+p+"/hosts/{host}/rotate-secrets", h.rotateSecrets)
	m.HandleFunc("POST "+p+"/hosts/{host}/promote", h.promoteHost)
	m.HandleFunc("GET "+p+"/hosts/{host}/snapshots", h.listSnapshots)
	m.HandleFunc("POST "+p+"/hosts/{host}/snapshots", h.createSnapshot)
	m.HandleFunc("DELETE "+p+"/hosts/{host}/snapshots/{snapshot}", h.deleteSnapshot)
	m.HandleFunc("POST "+p+"/hosts/{host}/snapshots/{snapshot}/rollback", h.rollback)
	m.HandleFunc("GET "+p+"/hosts/{host}/boots", h.listBoots)
	m.HandleFunc("GET "+p+"/events", h.streamEvents)
	m.HandleFunc("GET "+p+"/sessions", h.listSessions)
	m.HandleFunc("GET "+p+"/unknown-hosts", h.listUnknown)
	m.HandleFunc("POST "+p+"/unknown-hosts/{mac}/adopt", h.adoptUnknown)
	m.HandleFunc("GET "+p+"/jobs", h.listJobs)
	m.HandleFunc("GET "+p+"/jobs/{job}", h.getJob)
	m.HandleFunc("DELETE "+p+"/jobs/{job}", h.cancelJob)
	m.HandleFunc("GET "+p+"/tokens", h.listTokens)
	m.HandleFunc("POST "+p+"/tokens", h.createToken)
	m.HandleFunc("DELETE "+p+"/tokens/{token}", h.revokeToken)
	m.HandleFunc("GET "+p+"/audit", h.listAudit)
	m.HandleFunc(catchAll, func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "", "no such endpoint: "+r.Method+" "+r.URL.Path+" (see docs/api.md)")
	})
}

// Error is the body of every error response.
type Error struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"` // the request field at fault
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, field, msg string) {
	writeJSON(w, code, Error{Error: msg, Field: field})
}

// fail answers an error from the model or the storage.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	var e *inventory.Error
	switch {
	case errors.As(err, &e) && e.Kind == inventory.Invalid:
		writeError(w, http.StatusBadRequest, e.Field, e.Msg)
	case errors.As(err, &e) && e.Kind == inventory.NotFound:
		writeError(w, http.StatusNotFound, e.Field, e.Msg)
	case errors.As(err, &e) && e.Kind == inventory.Conflict:
		writeError(w, http.StatusConflict, e.Field, e.Msg)
	case errors.Is(err, inventory.ErrBusy):
		writeError(w, http.StatusConflict, "", err.Error())
	default:
		h.log.Error("api", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "", err.Error())
	}
}

// decode reads a JSON body into v strictly: unknown fields, wrong types,
// trailing data and oversized bodies are 400s naming the field. An empty
// body decodes as {}.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, "", "send application/json")
		return false
	}
	err := decodeJSON(r.Body, v)
	if err == nil {
		return true
	}
	var he *fieldError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		writeError(w, http.StatusRequestEntityTooLarge, "", fmt.Sprintf("body larger than %d bytes", mbe.Limit))
	case errors.As(err, &he):
		writeError(w, http.StatusBadRequest, he.field, he.msg)
	default:
		writeError(w, http.StatusBadRequest, "", "bad JSON body: "+err.Error())
	}
	return false
}

// fieldError is a decoding problem of one field.
type fieldError struct{ field, msg string }

func (e *fieldError) Error() string { return e.field + ": " + e.msg }

// decodeJSON is decode without the HTTP: the pure part, fuzzed.
func decodeJSON(body io.Reader, v any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if errors.Is(err, io.EOF) {
		return nil
	}
	if err != nil {
		var fe *fieldError
		if errors.As(err, &fe) {
			return fe // from a field type's own UnmarshalJSON (Size, CHAP)
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return &fieldError{field: te.Field, msg: fmt.Sprintf("want %s, got %s", te.Type, te.Value)}
		}
		if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return &fieldError{field: strings.Trim(f, `"`), msg: "unknown field"}
		}
		return err
	}
	if dec.More() {
		return errors.New("one JSON object expected, more data follows")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("one JSON object expected, more data follows")
	}
	return nil
}

func bytesReader(b []byte) io.Reader { return strings.NewReader(string(b)) }
