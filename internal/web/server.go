// Package web is the HTTP side of booting: the per-host iPXE script
// (GET /boot.ipxe?mac=...), the kernel and initrd of hosts that boot in
// kernel mode (GET /hosts/<mac>/kernel|initrd, with ranges) and the iPXE
// binaries for UEFI HTTP boot (GET /ipxe/<name>).
//
// It owns one rule: a script holding CHAP secrets is only served to the
// host it belongs to - the request's source address must resolve, through
// Neighbors (the kernel's neighbour table of the served link, the DHCP
// leases), to the MAC the script is for; anything else gets 403. What a
// host boots is decided by internal/boot; this package does not render
// scripts nor decide policies.
package web

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/diskless-boot/diskless/internal/boot"
)

// Config configures a Server.
type Config struct {
	// Booter decides and renders what hosts boot. Required.
	Booter *boot.Booter
	// Neighbors resolves request source addresses to MACs, e.g.
	// AnyOf{leases, ARPTable{Interface: "br0"}}. nil: nothing resolves,
	// so scripts holding secrets are never served.
	Neighbors Neighbors
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
}

// Server is the boot HTTP server. It is safe for concurrent use.
type Server struct {
	cfg  Config
	log  *slog.Logger
	srv  *http.Server
	mux  *http.ServeMux
	once sync.Once
	err  error
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
	s := &Server{cfg: cfg, log: cfg.Logger}
	s.mux = s.newMux()
	s.srv = &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      scriptTimeout, // files extend it per request
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// Handler is the HTTP handler (for tests or an outer mux).
func (s *Server) Handler() http.Handler { return s.mux }

// Mount serves h under pattern on this server's listener: the admin API
// when it shares the boot network's port. Call it before Serve.
func (s *Server) Mount(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

func (s *Server) newMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+boot.ScriptPath, s.script)
	mux.HandleFunc("GET /hosts/{mac}/{file}", s.hostFile)
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
	err := s.srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, lets requests in flight finish until ctx is
// done, then closes every connection. It is idempotent.
func (s *Server) Shutdown(ctx context.Context) error {
	s.once.Do(func() {
		if err := s.srv.Shutdown(ctx); err != nil {
			s.err = errors.Join(err, s.srv.Close())
		}
	})
	return s.err
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
	got, resolved := s.neighbor(remote)
	fromHost := resolved && got.String() == mac.String()
	if known && h.Secret() && !fromHost {
		// The script holds CHAP secrets: only the host itself may have it.
		seen := "unresolved"
		if resolved {
			seen = got.String()
		}
		s.log.Warn("iPXE script refused: holds secrets and the source address does not belong to this mac",
			"mac", mac.String(), "ip", remote, "host", h.Name, "neighbour_mac", seen)
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
	if sc.Known {
		s.log.Info("iPXE script", "mac", mac.String(), "ip", remote, "host", sc.Host)
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

func (s *Server) neighbor(ip netip.Addr) (net.HardwareAddr, bool) {
	if s.cfg.Neighbors == nil || !ip.IsValid() {
		return nil, false
	}
	return s.cfg.Neighbors.MACOf(ip)
}

func (s *Server) hostFile(w http.ResponseWriter, r *http.Request) {
	_, remote := addrs(r)
	mac, err := net.ParseMAC(strings.ReplaceAll(r.PathValue("mac"), "-", ":"))
	if err != nil || len(mac) != 6 {
		http.NotFound(w, r)
		return
	}
	name := r.PathValue("file")
	path, ok := s.cfg.Booter.HostFile(mac, name)
	if !ok {
		http.NotFound(w, r)
		return
	}
	f, err := os.Open(path)
	if err != nil {
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
	s.log.Info("HTTP file", "mac", mac.String(), "ip", remote, "file", name, "bytes", st.Size())
	s.serveFile(w, r, name, st.ModTime(), f)
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
