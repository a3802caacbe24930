// Command diskless is the whole server side of diskless iSCSI/PXE boot in
// one binary. This package only parses flags and runs internal/app.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "diskless:", err)
		os.Exit(1)
	}
}

// newRootCommand is the whole command tree.
func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "diskless",
		Short:         "Network-boot server: iSCSI target, DHCP/TFTP/HTTP boot, disk images",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.PersistentFlags().String("log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().String("log-format", "text", "log format: text or json")
	root.PersistentFlags().String("debug-listen", "", "serve Go profiling (/debug/pprof) on this address, e.g. 127.0.0.1:6060")
	root.AddCommand(newTargetCommand())
	root.AddCommand(newServeCommand())
	root.AddCommand(newImageCommand())
	root.AddCommand(newHostCommand())
	root.AddCommand(newTokenCommand())
	root.AddCommand(newAuditCommand())
	return root
}
