// Package web is the HTTP side of booting: the per-host iPXE script
// (GET /boot.ipxe?mac=...), the kernel and initrd of hosts that boot in
// kernel mode (GET /hosts/<mac>/kernel|initrd, with ranges) and the iPXE
// binaries for UEFI HTTP boot (GET /ipxe/<name>).
//
// It owns one rule: a script holding CHAP secrets is only served to the
// host it belongs to - the request's source address must resolve, through
// Neighbors (the kernel's neighbour table of the served link), to the MAC
// the script is for and, when this server hands out the addresses (DHCP
// full mode), Leases must agree that the address is the one leased to
// that MAC; anything else gets 403. What a host boots is decided by
// internal/boot; this package does not render scripts nor decide
// policies.
//
// No client can starve the others: connections and requests per source
// are bounded (internal/httplimit), headers, bodies and every phase of a
// request are bounded in size or time, and the log lines a client can
// cause are rate-limited.
package web

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/diskless-boot/diskless/internal/boot"
	"github.com/diskless-boot/diskless/internal/bootevent"
	"github.com/diskless-boot/diskless/internal/httplimit"
)

// Config configures a Server.
type Config struct {
	// Booter decides and renders what hosts boot. Required.
	Booter *boot.Booter
	// Neighbors resolves request source addresses to MACs, e.g.
	// ARPTable{Interface: "br0"}. nil: nothing resolves, so scripts
	// holding secrets are never served.
	Neighbors Neighbors
	// Leases, when set, must agree with Neighbors before a script holding
	// secrets is served or a host's boot begun: the source address must be
	// the one this server's DHCP leased to the MAC (a reserved address is
	// leased too once the host asked for it). Set it when diskless hands
	// out the addresses (dhcp: full); nil (proxy mode, no DHCP) leaves the
	// decision to Neighbors.
	Leases Leases
	// Logger receives one line per script and file served or refused
	// (default: discard).
	Logger *slog.Logger
	// FileTimeout bounds sending one kernel, initrd or binary (default
	// 10 min); scripts get 30 s.
	FileTimeout time.Duration
	// BeginBoot, when set, is called when a known host fetches its script
	// from its own address (the request's source resolves to its MAC),
	// before the script is rendered: the moment a new boot starts, when a
	// volatile disk is discarded and pending changes apply. An error
	// answers 503 (iPXE's script asks again after a pause).
	BeginBoot func(mac net.HardwareAddr, host string) error
	// Events, when set, is told the boot stages seen here: a host's
	// script fetched from its own address, its kernel or initrd sent, a
	// failed step its script reported. It must not block.
	Events func(bootevent.Event)
	// HeaderTimeout bounds reading a request's headers (default 10 s): a
	// client sending them byte by byte (slowloris) is cut then, however
	// steadily it sends. iPXE sends its request in one segment.
	HeaderTimeout time.Duration
	// Limits bound what each client may hold and ask (zero: the defaults
	// of internal/httplimit - 32 connections per source, 2048 in all, 50
	// requests a second per source with bursts of 200, bodies of 1 MiB).
	// Its Logger defaults to Logger.
	Limits httplimit.Config
}

// Stats are the server's counters since New.
type Stats struct {
	Limits         httplimit.Stats // connections and requests refused or cut
	Scripts        uint64          // iPXE scripts served
	ScriptsRefused uint64          // scripts refused: secrets for another address, unknown host
	Files          uint64          // kernels, initrds and binaries sent (or begun)
}

// Server is the boot HTTP server. It is safe for concurrent use.
type Server struct {
	cfg Config
	log *slog.Logger // rate-limited: clients cause most lines
	lim *httplimit.Limiter
	srv *http.Server
	mux *http.ServeMux

	scripts, scriptsRefused, files atomic.Uint64
}

const scriptTimeout = 30 * time.Second

// New returns a Server; Serve starts it.
func New(cfg Config) (*Server, error) {
	if cfg.Booter == nil {
		return nil, errors.New("web: a Booter is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.FileTimeout <= 0 {
		cfg.FileTimeout = 10 * time.Minute
	}
	if cfg.HeaderTimeout <= 0 {
		cfg.HeaderTimeout = 10 * time.Second
	}
	if cfg.Limits.Logger == nil {
		cfg.Limits.Logger = cfg.Logger
	}
	lim := httplimit.New(cfg.Limits)
	s := &Server{cfg: cfg, log: lim.Logger(), lim: lim}
	s.mux = s.newMux()
	s.srv = &http.Server{
		Handler:   lim.Handler(s.mux),
		ConnState: lim.ConnState,
		// A client sending its request byte by byte (slowloris) is cut
		// after ReadHeaderTimeout; the limiter gives its slot to others
		// before that when they need it.
		ReadHeaderTimeout: cfg.HeaderTimeout,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      scriptTimeout, // files extend it per request
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(lim.Logger().Handler(), slog.LevelDebug),
	}
	return s, nil
}

// Handler is the HTTP handler with the request limits (for tests or an
// outer mux).
func (s *Server) Handler() http.Handler { return s.srv.Handler }

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	return Stats{Limits: s.lim.Stats(), Scripts: s.scripts.Load(),
		ScriptsRefused: s.scriptsRefused.Load(), Files: s.files.Load()}
}

// Mount serves h under pattern on this server's listener: the admin API
// when it shares the boot network's port. Call it before Serve.
func (s *Server) Mount(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

func (s *Server) newMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+boot.ScriptPath, s.script)
	mux.HandleFunc("GET /hosts/{mac}/{file}", s.hostFile)
	mux.HandleFunc("GET "+boot.ReportPath, s.report)
	mux.HandleFunc("GET "+boot.BinaryPathPrefix+"{name...}", s.binary)
	return mux
}

// Serve serves l until ctx is done or Shutdown is called; it returns nil
// then.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(sctx)
	})
	defer stop()
	err := s.srv.Serve(s.lim.Listener(l))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, lets requests in flight finish until ctx is
// done, then closes every connection. It is idempotent, and each call
// keeps its own bound: the caller's is never stretched by another
// (Serve's own, when its context ends) running at the same time - the
// first deadline closes the connections for all.
func (s *Server) Shutdown(ctx context.Context) error {
	if err := s.srv.Shutdown(ctx); err != nil {
		return errors.Join(err, s.srv.Close())
	}
	return nil
}

// addrs returns the local address the request came in on (the address the
// host can reach us at) and its source address.
func addrs(r *http.Request) (local, remote netip.Addr) {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			local = ap.Addr().Unmap()
		}
	}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		remote = ap.Addr().Unmap()
	}
	return local, remote
}

func (s *Server) script(w http.ResponseWriter, r *http.Request) {
	local, remote := addrs(r)
	mac, err := net.ParseMAC(r.URL.Query().Get("mac"))
	if err != nil || len(mac) != 6 {
		s.log.Warn("iPXE script: bad mac parameter", "ip", remote)
		http.Error(w, "want /boot.ipxe?mac=52:54:00:12:34:56", http.StatusBadRequest)
		return
	}
	h, known := s.cfg.Booter.Host(mac)
	fromHost, why := s.fromHost(mac, remote)
	if known && h.Secret() && !fromHost {
		// The script holds CHAP secrets: only the host itself may have it.
		s.scriptsRefused.Add(1)
		s.log.Warn("iPXE script refused: holds secrets and the source address does not belong to this mac",
			"mac", mac.String(), "ip", remote, "host", h.Name, "err", why)
		http.Error(w, "forbidden: this script is only served to "+mac.String(), http.StatusForbidden)
		return
	}
	// Only the host itself starts its new boot: anyone else asking for a
	// script without secrets must not end its sessions or wipe its
	// volatile disk.
	if known && fromHost && s.cfg.BeginBoot != nil {
		if err := s.cfg.BeginBoot(mac, h.Name); err != nil {
			s.log.Warn("iPXE script: the host's boot cannot start now", "mac", mac.String(), "ip", remote, "host", h.Name, "err", err)
			w.Header().Set("Retry-After", "10")
			http.Error(w, "the host's disk is busy; try again shortly", http.StatusServiceUnavailable)
			return
		}
	}
	sc, err := s.cfg.Booter.Script(boot.ScriptRequest{MAC: mac, Server: local, ClientIP: remote, Arch: archOf(r)})
	if errors.Is(err, boot.ErrRefused) {
		s.scriptsRefused.Add(1)
		s.log.Info("iPXE script refused: unknown host", "mac", mac.String(), "ip", remote)
		http.Error(w, "forbidden: unknown host", http.StatusForbidden)
		return
	}
	if err != nil {
		s.log.Error("iPXE script", "mac", mac.String(), "ip", remote, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(sc.Body)
	s.scripts.Add(1)
	if sc.Known {
		s.log.Info("iPXE script", "mac", mac.String(), "ip", remote, "host", sc.Host)
		if fromHost {
			s.emit(bootevent.Event{Host: sc.Host, MAC: mac.String(), IP: remote.String(), Stage: bootevent.StageScript,
				Arch: archOf(r), Detail: "iPXE script"})
		}
	} else {
		s.log.Info("iPXE script for unknown host", "mac", mac.String(), "ip", remote)
	}
}

// archOf takes the optional arch and platform parameters iPXE can send
// (${buildarch}, ${platform}) for the unknown-host registry.
func archOf(r *http.Request) string {
	q := r.URL.Query()
	a := strings.TrimSpace(q.Get("arch") + " " + q.Get("platform"))
	if len(a) > 32 {
		a = a[:32]
	}
	return a
}

// fromHost reports whether a request from ip comes from the machine with
// mac: the neighbour table says so and, in full DHCP mode, ip is the
// address leased to mac. Otherwise it says why not, for the log.
func (s *Server) fromHost(mac net.HardwareAddr, ip netip.Addr) (bool, string) {
	if s.cfg.Neighbors == nil || !ip.IsValid() {
		return false, "no neighbour table"
	}
	got, ok := s.cfg.Neighbors.MACOf(ip)
	if !ok {
		return false, "the neighbour table has no entry for the address"
	}
	if !bytes.Equal(got, mac) {
		return false, "the neighbour table names " + got.String()
	}
	if s.cfg.Leases != nil && !s.cfg.Leases.Leased(mac, ip) {
		return false, "not the address this server's DHCP leased to the mac"
	}
	return true, ""
}

func (s *Server) hostFile(w http.ResponseWriter, r *http.Request) {
	_, remote := addrs(r)
	mac, err := net.ParseMAC(strings.ReplaceAll(r.PathValue("mac"), "-", ":"))
	if err != nil || len(mac) != 6 {
		http.NotFound(w, r)
		return
	}
	name := r.PathValue("file")
	if h, known := s.cfg.Booter.Host(mac); known && h.Secret() {
		// As its script: a host with secrets may have an initrd holding
		// them (/etc/iscsi/iscsi.initramfs, the HOWTO's way).
		if ok, why := s.fromHost(mac, remote); !ok {
			s.log.Warn("host file refused: the source address does not belong to this mac",
				"mac", mac.String(), "ip", remote, "host", h.Name, "file", name, "err", why)
			http.Error(w, "forbidden: this file is only served to "+mac.String(), http.StatusForbidden)
			return
		}
	}
	f, err := s.cfg.Booter.OpenHostFile(mac, name)
	if errors.Is(err, boot.ErrNoHostFile) {
		http.NotFound(w, r)
		return
	}
	if err != nil {
		// The host should have this file: say what is missing.
		s.log.Error("host file", "mac", mac.String(), "ip", remote, "file", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		s.log.Error("host file: not a regular file", "mac", mac.String(), "file", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	s.files.Add(1)
	s.log.Info("HTTP file", "mac", mac.String(), "ip", remote, "file", name, "bytes", st.Size())
	if h, known := s.cfg.Booter.Host(mac); known {
		s.emit(bootevent.Event{Host: h.Name, MAC: mac.String(), IP: remote.String(), Stage: bootevent.StageKernel,
			Detail: fmt.Sprintf("%s, %d bytes", name, st.Size())})
	}
	s.serveFile(w, r, name, st.ModTime(), f)
}

// report takes a failed step a host's script reports (boot.ReportPath):
// which step, and iPXE's error number. Only the host itself may report
// (as for its script): nobody else can write failures into its timeline.
func (s *Server) report(w http.ResponseWriter, r *http.Request) {
	_, remote := addrs(r)
	q := r.URL.Query()
	mac, err := net.ParseMAC(q.Get("mac"))
	step := q.Get("step")
	msg, okErr := boot.IPXEError(q.Get("errno"))
	if err != nil || len(mac) != 6 || !slices.Contains(boot.ReportSteps, step) || !okErr {
		http.Error(w, "want "+boot.ReportPath+"?mac=52:54:00:12:34:56&step=sanboot&errno=0x0216eb3c", http.StatusBadRequest)
		return
	}
	h, known := s.cfg.Booter.Host(mac)
	if !known {
		http.Error(w, "forbidden: unknown host", http.StatusForbidden)
		return
	}
	if ok, why := s.fromHost(mac, remote); !ok {
		s.log.Warn("boot failure report refused: the source address does not belong to this mac",
			"mac", mac.String(), "ip", remote, "host", h.Name, "err", why)
		http.Error(w, "forbidden: only "+mac.String()+" reports its failures", http.StatusForbidden)
		return
	}
	s.emit(bootevent.Event{Host: h.Name, MAC: mac.String(), IP: remote.String(), Stage: bootevent.StageFailed,
		Detail: "iPXE: " + step + " failed", Error: step + " failed: " + msg})
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	// A script that does nothing: iPXE registers what imgfetch fetched.
	io.WriteString(w, "#!ipxe\n")
}

func (s *Server) emit(e bootevent.Event) {
	if s.cfg.Events != nil {
		s.cfg.Events(e)
	}
}

func (s *Server) binary(w http.ResponseWriter, r *http.Request) {
	_, remote := addrs(r)
	name := r.PathValue("name")
	f, err := s.cfg.Booter.OpenBinary(name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	rs, ok := f.(io.ReadSeeker)
	if err != nil || !ok {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	s.files.Add(1)
	s.log.Info("HTTP boot binary", "ip", remote, "file", name, "bytes", st.Size())
	s.serveFile(w, r, name, st.ModTime(), rs)
}

// serveFile sends a file with ranges and conditional requests, with more
// time than a script gets.
func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, name string, mod time.Time, f io.ReadSeeker) {
	rc := http.NewResponseController(w)
	if err := rc.SetWriteDeadline(time.Now().Add(s.cfg.FileTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		s.log.Debug("set write deadline", "err", err)
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, name, mod, f)
}
