package main

import (
	"github.com/spf13/cobra"

	"github.com/diskless-boot/diskless/internal/app"
)

func newTargetCommand() *cobra.Command {
	var (
		opts  app.TargetOptions
		luns  []string
		chap  string
		mchap string
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
			if opts.CHAP, err = app.ParseCredentials("--chap", chap); err != nil {
				return err
			}
			if opts.MutualCHAP, err = app.ParseCredentials("--mutual-chap", mchap); err != nil {
				return err
			}
			logger, err := newLogger(cmd)
			if err != nil {
				return err
			}
			opts.Logger = logger
			return app.RunTarget(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Listen, "listen", "0.0.0.0:3260", "address:port to accept iSCSI connections on")
	f.StringVar(&opts.IQN, "iqn", "", "iSCSI qualified name of the target (required)")
	f.StringArrayVar(&luns, "lun", nil, "N=PATH[:ro][,removable] serve the image file PATH as LUN N (repeatable); :ro read-only, :removable a removable medium (START STOP UNIT can eject it)")
	f.StringVar(&chap, "chap", "", "USER:SECRET initiators must authenticate with (CHAP)")
	f.StringVar(&mchap, "mutual-chap", "", "USER:SECRET the target authenticates itself with (mutual CHAP; needs --chap)")
	f.StringArrayVar(&opts.AllowedInitiators, "allow-initiator", nil, "initiator IQN allowed to log in (repeatable; default: any)")
	f.Uint16Var(&opts.PortalGroupTag, "portal-group-tag", 1, "TargetPortalGroupTag (must match the initramfs' ISCSI_TARGET_GROUP)")
	f.StringVar(&opts.Alias, "alias", "", "TargetAlias sent to initiators")
	f.DurationVar(&opts.NOPInterval, "nop-interval", 0, "ping idle connections with NOP-In this often and drop silent ones (0 = off; iPXE does not answer while GRUB sits idle)")
	cmd.MarkFlagRequired("iqn")
	cmd.MarkFlagRequired("lun")
	return cmd
}
