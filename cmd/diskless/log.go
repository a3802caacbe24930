package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
)

// newLogger builds the logger from the global flags and starts the debug
// server when asked: both are process-wide set-up every subcommand needs.
func newLogger(cmd *cobra.Command) (*slog.Logger, error) {
	levelName, _ := cmd.Flags().GetString("log-level")
	format, _ := cmd.Flags().GetString("log-format")
	var level slog.Level
	if err := level.UnmarshalText([]byte(levelName)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	o := &slog.HandlerOptions{Level: level}
	var log *slog.Logger
	switch format {
	case "text":
		log = slog.New(slog.NewTextHandler(os.Stderr, o))
	case "json":
		log = slog.New(slog.NewJSONHandler(os.Stderr, o))
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
	if addr, _ := cmd.Flags().GetString("debug-listen"); addr != "" {
		if err := startDebugServer(addr, log); err != nil {
			return nil, fmt.Errorf("--debug-listen: %w", err)
		}
	}
	return log, nil
}
