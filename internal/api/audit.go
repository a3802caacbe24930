package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/diskless-boot/diskless/internal/store"
)

// AuditBound is how many audit entries the store keeps: each new one
// deletes the oldest beyond it in the same transaction, so no client can
// grow the store without bound (entries are a few hundred bytes, their
// fields cut to bounded lengths).
const AuditBound = 10000

// metaAuditSeq, in the meta bucket, is the last audit sequence number
// given out.
const metaAuditSeq = "audit-seq"

// Bounds of the fields a client chooses (a path, an error answer).
const (
	maxAuditObject = 256
	maxAuditError  = 1024
	maxAuditShort  = 128 // who, remote
)

// AuditEntry is one change asked of the API: by whom, what, and how it
// ended. It never holds a request body, a token or a secret: the object
// is a name from the route (or the name a create gives), the error is the
// answer's message, which never holds one either.
type AuditEntry struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"` // UTC, when the request came in
	Who    string    `json:"who"`  // a token's name; "local:USER" for the CLI on the data directory
	Method string    `json:"method"`
	// Action is the route's stable name: host.create, host.reset,
	// snapshot.rollback, version.export, token.delete (see docs/api.md).
	Action string `json:"action"`
	// Object is what it acted on: the route's names joined with "/"
	// ("lab-01", "lab-01/before-upgrade", "debian12/3"), or the name a
	// create asked for.
	Object string `json:"object,omitempty"`
	Remote string `json:"remote,omitempty"` // the client's address; "" in process
	Status int    `json:"status"`           // the answer's HTTP status
	Error  string `json:"error,omitempty"`  // the answer's error message, on failure
	Job    string `json:"job,omitempty"`    // the job a 202 answer started
}

func auditKey(seq uint64) string { return fmt.Sprintf("%020d", seq) }

var errStop = errors.New("stop")

// appendAudit stores e as the next entry and deletes the oldest beyond
// bound, in one transaction. It returns e's sequence number.
func appendAudit(st store.Store, e AuditEntry, bound int) (uint64, error) {
	e.Who = cut(e.Who, maxAuditShort)
	e.Remote = cut(e.Remote, maxAuditShort)
	e.Object = cut(e.Object, maxAuditObject)
	e.Error = cut(e.Error, maxAuditError)
	err := st.Update(func(tx store.Tx) error {
		last, err := auditSeq(tx)
		if err != nil {
			return err
		}
		e.Seq = last + 1
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		if err := tx.Put(store.BucketMeta, metaAuditSeq, []byte(strconv.FormatUint(e.Seq, 10))); err != nil {
			return err
		}
		if err := tx.Put(store.BucketAudit, auditKey(e.Seq), b); err != nil {
			return err
		}
		if e.Seq <= uint64(bound) {
			return nil
		}
		// Keys sort as numbers: the oldest come first. Usually one
		// goes; more when the bound was lowered.
		cutoff := auditKey(e.Seq - uint64(bound))
		var old []string
		err = tx.ForEach(store.BucketAudit, "", func(k string, _ []byte) error {
			if k > cutoff {
				return errStop
			}
			old = append(old, k)
			return nil
		})
		if err != nil && !errors.Is(err, errStop) {
			return err
		}
		for _, k := range old {
			if err := tx.Delete(store.BucketAudit, k); err != nil {
				return err
			}
		}
		return nil
	})
	return e.Seq, err
}

// auditSeq is the last sequence number given out, 0 for none.
func auditSeq(tx store.Tx) (uint64, error) {
	b, err := tx.Get(store.BucketMeta, metaAuditSeq)
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s %q: %w", metaAuditSeq, b, err)
	}
	return n, nil
}

// readAudit returns up to limit entries older than before (0: the
// newest), newest first. Entries are numbered without gaps, so this reads
// limit keys, not the whole log.
func readAudit(st store.Store, before uint64, limit int) ([]AuditEntry, error) {
	out := []AuditEntry{}
	err := st.View(func(tx store.Tx) error {
		seq, err := auditSeq(tx)
		if err != nil {
			return err
		}
		if before > 0 && before-1 < seq {
			seq = before - 1
		}
		for ; seq > 0 && len(out) < limit; seq-- {
			b, err := tx.Get(store.BucketAudit, auditKey(seq))
			if errors.Is(err, store.ErrNotFound) {
				return nil // older ones were dropped at the bound
			}
			if err != nil {
				return err
			}
			var e AuditEntry
			if err := json.Unmarshal(b, &e); err != nil {
				return fmt.Errorf("audit entry %d: %w", seq, err)
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// auditNote is what a handler adds to its request's audit entry: the name
// a create asked for (not in the route), the job it started.
type auditNote struct{ object, job string }

type auditNoteKey struct{}

// auditObject sets the object of r's audit entry (a create's name).
func auditObject(r *http.Request, object string) {
	if n, ok := r.Context().Value(auditNoteKey{}).(*auditNote); ok {
		n.object = object
	}
}

// accepted answers 202 with the job a request started, and notes it for
// the audit log.
func accepted(w http.ResponseWriter, r *http.Request, job Job) {
	if n, ok := r.Context().Value(auditNoteKey{}).(*auditNote); ok {
		n.job = job.ID
	}
	writeJSON(w, http.StatusAccepted, Accepted{Job: job})
}

// nouns are the collections of the routes, in the singular of actions.
var nouns = map[string]string{"images": "image", "versions": "version", "hosts": "host", "snapshots": "snapshot",
	"jobs": "job", "tokens": "token", "sessions": "session", "unknown-hosts": "unknown-host", "audit": "audit"}

// renamed are actions whose method's verb says less than a word of
// their own.
var renamed = map[string]string{"version.create": "version.import", "job.delete": "job.cancel", "token.delete": "token.revoke"}

// routeAction names a route's action from its pattern: the last
// collection in the singular, then the verb the path ends with, else the
// method's (create, update, delete; see renamed). "POST /api/v1/hosts" is host.create,
// "POST /api/v1/hosts/{host}/reset" host.reset, "DELETE
// /api/v1/hosts/{host}/snapshots/{snapshot}" snapshot.delete.
func routeAction(pattern string) string {
	method, path, _ := strings.Cut(pattern, " ")
	noun, verb := "", ""
	for s := range strings.SplitSeq(strings.Trim(strings.TrimPrefix(path, Prefix), "/"), "/") {
		switch {
		case strings.HasPrefix(s, "{"):
		case nouns[s] != "":
			noun, verb = nouns[s], ""
		case noun == "":
			noun = s
		default:
			verb = s
		}
	}
	if verb == "" {
		switch method {
		case http.MethodPost:
			verb = "create"
		case http.MethodPatch:
			verb = "update"
		case http.MethodPut:
			verb = "replace"
		case http.MethodDelete:
			verb = "delete"
		default:
			verb = strings.ToLower(method)
		}
	}
	a := noun + "." + verb
	if n, ok := renamed[a]; ok {
		return n
	}
	return a
}

// routeObject is what a request acts on: the values of its pattern's
// wildcards, joined with "/".
func routeObject(pattern string, r *http.Request) string {
	_, path, _ := strings.Cut(pattern, " ")
	want := strings.Split(path, "/")
	got := strings.Split(r.URL.EscapedPath(), "/")
	var parts []string
	for i, s := range want {
		if !strings.HasPrefix(s, "{") || i >= len(got) {
			continue
		}
		v, err := url.PathUnescape(got[i])
		if err != nil {
			v = got[i]
		}
		parts = append(parts, v)
	}
	return strings.Join(parts, "/")
}

// auditWriter notes the status of an answer, and the start of an error
// answer for its message.
type auditWriter struct {
	http.ResponseWriter
	status int
	body   []byte
}

func (w *auditWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *auditWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.status >= 400 && len(w.body) < 8<<10 {
		w.body = append(w.body, b[:min(len(b), 8<<10-len(w.body))]...)
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *auditWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// serveAudited serves a change and records it. The record is written
// after the change, in its own transaction: a store that refuses it does
// not undo or fail a change that was made (the warning and the counter
// say it is missing).
func (h *Handler) serveAudited(w http.ResponseWriter, r *http.Request, p Principal, pattern string) {
	e := AuditEntry{Time: h.now().UTC(), Who: p.Name, Method: r.Method, Action: routeAction(pattern),
		Object: routeObject(pattern, r), Remote: r.RemoteAddr}
	note := &auditNote{}
	aw := &auditWriter{ResponseWriter: w}
	h.mux.ServeHTTP(aw, r.WithContext(context.WithValue(r.Context(), auditNoteKey{}, note)))
	if note.object != "" {
		e.Object = note.object
	}
	e.Job = note.job
	e.Status = aw.status
	if e.Status == 0 {
		e.Status = http.StatusOK
	}
	if e.Status >= 400 {
		var ae Error
		if json.Unmarshal(aw.body, &ae) == nil && ae.Error != "" {
			e.Error = ae.Error
			if ae.Field != "" {
				e.Error = ae.Field + ": " + ae.Error
			}
		} else {
			e.Error = http.StatusText(e.Status)
		}
	}
	h.record(e)
}

// record writes an audit entry; a failure is logged and counted, never
// the request's.
func (h *Handler) record(e AuditEntry) {
	if _, err := appendAudit(h.inv.Store(), e, AuditBound); err != nil {
		h.auditFailures.Add(1)
		h.log.Warn("api: audit entry not written", "op", e.Action, "err", err)
	}
}

func (h *Handler) listAudit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 100
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, "limit", "want a number from 1 to 1000")
			return
		}
		limit = n
	}
	var before uint64
	if s := q.Get("before"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || n == 0 {
			writeError(w, http.StatusBadRequest, "before", "want the seq of an entry (a number from 1)")
			return
		}
		before = n
	}
	out, err := readAudit(h.inv.Store(), before, limit)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}
