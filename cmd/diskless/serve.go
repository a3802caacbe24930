package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/diskless-boot/diskless/internal/activation"
	"github.com/diskless-boot/diskless/internal/app"
	"github.com/diskless-boot/diskless/internal/config"
)

func newServeCommand() *cobra.Command {
	var (
		file     string
		q        config.QuickFlags
		traceDir string
	)
	cmd := &cobra.Command{
		Use:   "serve (--config FILE | --interface IF [--host MAC=IMAGE ...])",
		Short: "Serve DHCP, TFTP, HTTP, iSCSI and the admin API on one interface: boot the hosts of the state store",
		Example: `  diskless serve --config /etc/diskless.yaml
  diskless serve --interface br0 --dhcp full --dhcp-range 10.77.0.100-10.77.0.200 [--data-dir DIR]
  diskless serve --interface br0 --dhcp full --dhcp-range 10.77.0.100-10.77.0.200 \
      --host 52:54:00:12:34:56=/srv/disk.img [--host MAC=IMAGE ...] [--no-chap] [--data-dir DIR]
  diskless serve --interface br0 --dhcp proxy --host 52:54:00:12:34:56=/srv/disk.img`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var cfg *config.Config
			var err error
			if file != "" {
				for _, f := range []string{"interface", "dhcp", "dhcp-range", "host", "chap", "no-chap", "data-dir"} {
					if cmd.Flags().Changed(f) {
						return errors.New("--" + f + " is a quick-start flag: put it in the --config file instead")
					}
				}
				cfg, err = config.Load(file)
			} else {
				cfg, err = config.FromQuickFlags(q)
			}
			if err != nil {
				return err
			}
			logger, err := newLogger(cmd)
			if err != nil {
				return err
			}
			sockets, err := activation.FromEnv()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			opts := app.ServeOptions{Config: cfg, Logger: logger, Sockets: sockets, ConfigFile: file, TraceDir: traceDir}
			stop := serviceManager(ctx, &opts)
			defer stop()
			return app.RunServe(ctx, opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&file, "config", "", "YAML configuration file (docs/config.md)")
	f.StringVar(&q.Interface, "interface", "", "quick start: network interface to serve, e.g. br0")
	f.StringVar(&q.DHCP, "dhcp", "", "quick start: DHCP mode full, proxy or off (default proxy)")
	f.StringVar(&q.DHCPRange, "dhcp-range", "", "quick start: address pool FIRST-LAST for --dhcp full")
	f.StringArrayVar(&q.Hosts, "host", nil, "quick start: MAC=IMAGE boot the machine MAC from the image file IMAGE (repeatable)")
	f.BoolVar(&q.NoCHAP, "no-chap", false, "quick start: no CHAP for the --host machines (default: CHAP and mutual CHAP, generated; `diskless host show NAME --secrets` prints them)")
	f.Bool("chap", true, "quick start: CHAP for the --host machines (the default; kept for older scripts)")
	f.StringVar(&q.DataDir, "data-dir", "", "quick start: state directory (default /var/lib/diskless)")
	f.StringVar(&traceDir, "trace-io", "", traceIOHelp)
	return cmd
}

// serviceManager tells the service manager (systemd, Type=notify) where
// serve is - READY=1 once every socket is open and every host served,
// RELOADING=1 then READY=1 around each reload, STOPPING=1 once asked to
// stop - and turns SIGHUP (systemctl reload) into reload requests. Without
// a service manager the notifications are no-ops; SIGHUP still reloads.
// stop undoes the signal handling.
func serviceManager(ctx context.Context, opts *app.ServeOptions) (stop func()) {
	log := opts.Logger
	notify := func(state string) {
		if err := activation.Notify(state); err != nil {
			log.Warn("service manager not told", "state", state, "err", err)
		}
	}
	opts.Ready = func(string) { notify("READY=1\nSTATUS=serving") }
	opts.Reloaded = func(err error) {
		status := "STATUS=serving; configuration reloaded"
		if err != nil {
			status = "STATUS=serving; configuration not reloaded (see the log)"
		}
		notify("READY=1\n" + status)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan struct{}, 1)
	opts.Reload = reload
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-hup:
				notify("RELOADING=1\nSTATUS=reloading the configuration")
				select {
				case reload <- struct{}{}:
				default: // one is pending already: it reads the newest file
				}
			case <-ctx.Done():
				notify("STOPPING=1\nSTATUS=stopping: draining sessions, flushing disks")
				<-done
				return
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
	}
}
