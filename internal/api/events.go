package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/diskless-boot/diskless/internal/bootevent"
)

// listBoots is GET /hosts/{host}/boots: the host's boot timelines,
// newest first (the last inventory.BootsPerHost).
func (h *Handler) listBoots(w http.ResponseWriter, r *http.Request) {
	host, err := h.inv.Host(r.PathValue("host"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	boots, err := h.boots(host.Name)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, boots)
}

// boots are the host's timelines: the running server's, else the stored
// ones (the CLI on a data directory no server runs on).
func (h *Handler) boots(host string) ([]bootevent.Boot, error) {
	if st := h.cfg.Status; st != nil {
		return st.Boots(host)
	}
	boots, err := h.inv.Boots(host)
	if boots == nil {
		boots = []bootevent.Boot{}
	}
	return boots, err
}

// eventKeepalive is how often an idle event stream gets a comment line,
// so proxies and the client see the connection alive.
const eventKeepalive = 15 * time.Second

// streamEvents is GET /events: every boot event from now on as Server-Sent
// Events (event "boot", data the event's JSON). A client that lags behind
// is cut off; EventSource then reconnects (after the retry it is told)
// and should reload what it shows.
func (h *Handler) streamEvents(w http.ResponseWriter, r *http.Request) {
	st := h.cfg.Status
	if st == nil {
		writeError(w, http.StatusServiceUnavailable, "", "no server runs: boot events come from a running diskless serve")
		return
	}
	events, cancel, err := st.SubscribeEvents()
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "", err.Error())
		return
	}
	defer cancel()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(s string) bool {
		rc.SetWriteDeadline(time.Now().Add(eventKeepalive * 2))
		if _, err := fmt.Fprint(w, s); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write("retry: 2000\n: diskless boot events\n\n") {
		return
	}
	tick := time.NewTicker(eventKeepalive)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-h.cfg.Context.Done():
			return // the server shuts down: do not hold it up
		case <-tick.C:
			if !write(": keepalive\n\n") {
				return
			}
		case e, ok := <-events:
			if !ok {
				return // lagged: the client reconnects and reloads
			}
			b, _ := json.Marshal(e)
			if !write("event: boot\ndata: " + string(b) + "\n\n") {
				return
			}
		}
	}
}
