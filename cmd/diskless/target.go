package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/diskless-boot/diskless/internal/activation"
	"github.com/diskless-boot/diskless/internal/app"
	"github.com/diskless-boot/diskless/internal/iscsi"
)

func newTargetCommand() *cobra.Command {
	var (
		opts                app.TargetOptions
		luns                []string
		chap, mchap         string
		chapFile, mchapFile string
	)
	cmd := &cobra.Command{
		Use:   "target --iqn IQN --lun 0=PATH[:ro] [--lun N=PATH ...]",
		Short: "Serve image files as the LUNs of one iSCSI target until SIGINT/SIGTERM",
		Example: `  diskless target --listen 127.0.0.1:3260 --iqn iqn.2026-11.org.example:disk1 \
      --lun 0=/srv/disk.img --lun 1=/srv/other.img:ro \
      --chap user:secret12chars --mutual-chap target:othersecret1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if opts.LUNs, err = app.ParseLUNSpecs(luns); err != nil {
				return err
			}
			logger, err := newLogger(cmd)
			if err != nil {
				return err
			}
			if opts.CHAP, err = credentials(logger, "--chap", chap, "--chap-file", chapFile, "DISKLESS_CHAP"); err != nil {
				return err
			}
			if opts.MutualCHAP, err = credentials(logger, "--mutual-chap", mchap, "--mutual-chap-file", mchapFile, "DISKLESS_MUTUAL_CHAP"); err != nil {
				return err
			}
			opts.Logger = logger
			if opts.Sockets, err = activation.FromEnv(); err != nil {
				return err
			}
			return app.RunTarget(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Listen, "listen", "0.0.0.0:3260", "address:port to accept iSCSI connections on")
	f.StringVar(&opts.IQN, "iqn", "", "iSCSI qualified name of the target (required)")
	f.StringArrayVar(&luns, "lun", nil, "N=PATH[:ro][,removable] serve the image file PATH as LUN N (repeatable); :ro read-only, :removable a removable medium (START STOP UNIT can eject it)")
	f.StringVar(&chap, "chap", "", "USER:SECRET initiators must authenticate with (CHAP); visible to every user in ps: prefer --chap-file or $DISKLESS_CHAP")
	f.StringVar(&mchap, "mutual-chap", "", "USER:SECRET the target authenticates itself with (mutual CHAP; needs --chap); prefer --mutual-chap-file or $DISKLESS_MUTUAL_CHAP")
	f.StringVar(&chapFile, "chap-file", "", "file holding USER:SECRET for --chap")
	f.StringVar(&mchapFile, "mutual-chap-file", "", "file holding USER:SECRET for --mutual-chap")
	f.StringArrayVar(&opts.AllowedInitiators, "allow-initiator", nil, "initiator IQN allowed to log in (repeatable; default: any)")
	f.Uint16Var(&opts.PortalGroupTag, "portal-group-tag", 1, "TargetPortalGroupTag (must match the initramfs' ISCSI_TARGET_GROUP)")
	f.StringVar(&opts.Alias, "alias", "", "TargetAlias sent to initiators")
	f.IntVar(&opts.SendfileMin, "sendfile-min", 0, "smallest READ (bytes) sent with sendfile(2) from the image file instead of copied (0: 65536; -1: never)")
	f.StringVar(&opts.TraceDir, "trace-io", "", traceIOHelp)
	f.DurationVar(&opts.NOPInterval, "nop-interval", 0, "ping idle connections with NOP-In this often and drop silent ones (0 = off; iPXE does not answer while GRUB sits idle)")
	cmd.MarkFlagRequired("iqn")
	cmd.MarkFlagRequired("lun")
	return cmd
}

// credentials reads USER:SECRET from the flag, the file or the environment
// variable (at most one): a secret in argv is readable by every user of
// the machine (ps, /proc/PID/cmdline), so using the flag logs a warning.
func credentials(log *slog.Logger, flag, value, fileFlag, file, env string) (*iscsi.Credentials, error) {
	from := flag
	n := 0
	if value != "" {
		n++
		log.Warn("a CHAP secret on the command line is visible to every user of this machine; use "+fileFlag+" or $"+env, "flag", flag)
	}
	if file != "" {
		n++
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", fileFlag, err)
		}
		value, from = strings.TrimSpace(string(b)), fileFlag
	}
	if v := os.Getenv(env); v != "" && n == 0 {
		value, from = v, "$"+env
	}
	if n > 1 {
		return nil, fmt.Errorf("give %s or %s, not both", flag, fileFlag)
	}
	return app.ParseCredentials(from, value)
}
