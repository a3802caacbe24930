package main

import (
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
)

// traceIOHelp describes --trace-io of serve and target.
const traceIOHelp = "debugging and benchmarks: record every READ and WRITE each host's disk serves to a file per host and boot in this existing directory (docs/config.md, \"I/O traces\"; at most 1M records a file; default off)"

// startDebugServer serves Go's profiler on addr (the --debug-listen flag),
// for finding where a slow workload spends its time.
func startDebugServer(addr string, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	log.Info("debug server listening", "addr", ln.Addr().String())
	go http.Serve(ln, mux)
	return nil
}
