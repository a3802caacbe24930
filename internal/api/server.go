package api

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/diskless-boot/diskless/internal/httplimit"
)

// Server serves the API on its own listener (api.listen), apart from the
// boot network's HTTP server. It is safe for concurrent use.
type Server struct {
	srv *http.Server
	lim *httplimit.Limiter
}

// ServerConfig configures a Server.
type ServerConfig struct {
	// Logger receives the server's own lines (default: discard).
	Logger *slog.Logger
	// Limits bound what each client may hold and ask, as on the boot
	// network's server (zero: the defaults of internal/httplimit - 32
	// connections per source, 2048 in all, 50 requests a second per
	// source with bursts of 200, bodies of 1 MiB). Its Logger defaults to
	// Logger.
	Limits httplimit.Config
}

// NewServer wraps h (the Handler) in an HTTP server with bounded reads,
// writes, connections and request rates.
func NewServer(h http.Handler, cfg ServerConfig) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Limits.Logger == nil {
		cfg.Limits.Logger = cfg.Logger
	}
	cfg.Limits.Name = "api"
	lim := httplimit.New(cfg.Limits)
	return &Server{lim: lim, srv: &http.Server{
		Handler:           lim.Handler(h),
		ConnState:         lim.ConnState,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      5 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(lim.Logger().Handler(), slog.LevelDebug),
	}}
}

// Stats returns the counters of the connection and request limits.
func (s *Server) Stats() httplimit.Stats { return s.lim.Stats() }

// Serve serves l until ctx is done or Shutdown is called.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(sctx)
	})
	defer stop()
	if err := s.srv.Serve(s.lim.Listener(l)); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
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
