package main

import (
	"bufio"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/diskless-boot/diskless/internal/api"
	"github.com/diskless-boot/diskless/internal/bootevent"
	"github.com/diskless-boot/diskless/internal/inventory"
	"github.com/diskless-boot/diskless/internal/storage"
)

func newHostCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "host",
		Short: "Manage hosts: the machines diskless boots, their disks and snapshots",
	}
	addClientFlags(cmd)
	cmd.AddCommand(hostAdd(), hostList(), hostShow(), hostSet(), hostRemove(), hostSnapshot(), hostSnapshots(),
		hostRollback(), hostReset(), hostPromote(), hostCheck(), hostClearError(), hostRotateSecrets(), hostUnknown(), hostAdopt())
	return cmd
}

func hostAdd() *cobra.Command {
	var req api.AddHostRequest
	var noCHAP, noMutual bool
	var chapUser, chapSecret string
	cmd := &cobra.Command{
		Use:   "add NAME --image IMAGE [--mac MAC]...",
		Short: "Add a host: its disk is made at once (an empty overlay, or a raw copy)",
		Example: `  diskless host add lab-01 --image debian12 --mac 52:54:00:12:34:56
  diskless host add kiosk-3 --image debian12 --disk volatile --mac 52:54:00:00:00:03
  diskless host add build --image debian12 --version 2 --disk raw`,
		Args: cobra.ExactArgs(1),
		RunE: withClient(func(cmd *cobra.Command, c *client, args []string) error {
			req.Name = args[0]
			for _, p := range []*string{&req.RawPath, &req.Kernel, &req.Initrd} {
				absPath(p)
			}
			if noCHAP {
				req.CHAP = &api.CHAP{CHAPSpec: inventory.CHAPSpec{}}
			} else if chapUser != "" || chapSecret != "" {
				req.CHAP = &api.CHAP{CHAPSpec: inventory.CHAPSpec{Enabled: true, User: chapUser, Secret: chapSecret}}
			}
			if noMutual || noCHAP {
				req.MutualCHAP = &api.CHAP{CHAPSpec: inventory.CHAPSpec{}}
			}
			var ch api.HostChange
			if err := c.do(cmd.Context(), http.MethodPost, "/hosts", req, &ch); err != nil {
				return err
			}
			if jsonFlag(cmd) {
				return printJSON(cmd, ch)
			}
			h := ch.Host
			fmt.Fprintf(cmd.OutOrStdout(), "host %s added: %s disk on %s\n", h.Name, h.Disk.Mode, orDash(h.Disk.Base+h.Disk.File))
			fmt.Fprintf(cmd.OutOrStdout(), "  initiator %s\n  target    %s\n", h.InitiatorIQN, h.TargetIQN)
			if h.CHAP != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "  CHAP        user %s secret %s\n", h.CHAP.User, h.CHAP.Secret)
			}
			if h.MutualCHAP != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "  mutual CHAP user %s secret %s\n", h.MutualCHAP.User, h.MutualCHAP.Secret)
			}
			for _, n := range ch.Notes {
				fmt.Fprintln(cmd.OutOrStdout(), "note:", n)
			}
			return nil
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.Image, "image", "", "image the host boots")
	f.IntVar(&req.Version, "version", 0, "pin to this version (default: follow the newest)")
	f.StringArrayVar(&req.MACs, "mac", nil, "MAC address of the host (repeatable)")
	f.StringVar(&req.DiskMode, "disk", "", "disk mode: persistent (default), volatile or raw")
	f.StringVar(&req.RawPath, "raw-file", "", "with --disk raw: use this disk file as it is instead of a copy of the image")
	f.StringVar(&req.Boot, "boot", "", "sanboot (default) or kernel")
	f.StringVar(&req.Kernel, "kernel", "", "kernel file (boot kernel)")
	f.StringVar(&req.Initrd, "initrd", "", "initrd file (boot kernel)")
	f.StringVar(&req.Cmdline, "cmdline", "", "extra kernel command line (boot kernel)")
	f.StringVar(&req.Arch, "arch", "", "bios or uefi (default: learnt from DHCP)")
	f.StringVar(&req.InitiatorIQN, "initiator-iqn", "", "the host's initiator name (default: generated)")
	f.StringVar(&req.TargetIQN, "target-iqn", "", "its target's name (default: generated)")
	f.StringVar(&req.IP, "ip", "", "fixed DHCP address (dhcp mode full)")
	f.BoolVar(&noCHAP, "no-chap", false, "no CHAP (anyone who knows the initiator name can log in)")
	f.BoolVar(&noMutual, "no-mutual-chap", false, "CHAP without mutual CHAP")
	f.StringVar(&chapUser, "chap-user", "", "CHAP user (default: the host name)")
	f.StringVar(&chapSecret, "chap-secret", "", "CHAP secret (default: generated)")
	f.StringVar(&req.CHAPRotation, "chap-rotation", "", chapRotationHelp)
	return cmd
}

// chapRotationHelp is the help of --chap-rotation (host add and set).
const chapRotationHelp = "off (default), or boot: new CHAP secrets at every boot of the host. boot needs an image whose " +
	"initramfs logs in from the iBFT (ISCSI_AUTO=true, as iPXE's sanboot publishes the script's credentials there); " +
	"an image with secrets written into /etc/iscsi/iscsi.initramfs stops booting after the first rotation"

// absPath makes a file named on the command line absolute: the server may
// run in another directory.
func absPath(p *string) {
	if *p != "" {
		if a, err := filepath.Abs(*p); err == nil {
			*p = a
		}
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func hostList() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List hosts: disk, state (online since, address, I/O) and what changes at their next boot",
		Args:  cobra.NoArgs,
		RunE: withClient(func(cmd *cobra.Command, c *client, _ []string) error {
			var hosts []api.HostView
			if err := c.do(cmd.Context(), http.MethodGet, "/hosts", nil, &hosts); err != nil {
				return err
			}
			if jsonFlag(cmd) {
				return printJSON(cmd, hosts)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tMAC\tIMAGE\tDISK\tSTATE\tIP\tREAD\tWRITTEN\tUSED\tPENDING")
			for _, h := range hosts {
				state, rd, wr := stateText(&h, true), int64(0), int64(0)
				if h.Online {
					state += fmt.Sprintf(" (%d session", len(h.Sessions))
					if len(h.Sessions) > 1 {
						state += "s"
					}
					state += ")"
					for _, s := range h.Sessions {
						rd += int64(s.ReadBytes)
						wr += int64(s.WrittenBytes)
					}
				}
				if h.DiskError != "" {
					state += ", DISK FAILED"
				}
				mac := "-"
				if len(h.MACs) > 0 {
					mac = strings.Join(h.MACs, ",")
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Name, mac, orDash(h.Disk.Base+h.Disk.File),
					h.Disk.Mode, state, orDash(h.IP), humanBytes(rd), humanBytes(wr), humanBytes(h.Disk.UsageBytes), orDash(h.Pending))
			}
			return tw.Flush()
		}),
	}
}

func hostShow() *cobra.Command {
	var showConfig, showSecrets bool
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a host; --config prints what the HOWTO has the admin write by hand for it",
		Args:  cobra.ExactArgs(1),
		RunE: withClient(func(cmd *cobra.Command, c *client, args []string) error {
			if showSecrets {
				var hc api.HostCredentials
				if err := c.do(cmd.Context(), http.MethodGet, "/hosts/"+args[0]+"/credentials", nil, &hc); err != nil {
					return err
				}
				if jsonFlag(cmd) {
					return printJSON(cmd, hc)
				}
				if hc.CHAP == nil {
					fmt.Fprintf(cmd.OutOrStdout(), "host %s has no CHAP\n", hc.Host)
					return nil
				}
				fmt.Fprintf(cmd.OutOrStdout(), "chap         user %s  secret %s\n", hc.CHAP.User, hc.CHAP.Secret)
				if hc.MutualCHAP != nil {
					fmt.Fprintf(cmd.OutOrStdout(), "mutual_chap  user %s  secret %s\n", hc.MutualCHAP.User, hc.MutualCHAP.Secret)
				}
				if hc.NextCHAP != nil {
					fmt.Fprintln(cmd.OutOrStdout(), "new secrets, in use from the host's next boot:")
					fmt.Fprintf(cmd.OutOrStdout(), "chap         user %s  secret %s\n", hc.NextCHAP.User, hc.NextCHAP.Secret)
					if hc.NextMutualCHAP != nil {
						fmt.Fprintf(cmd.OutOrStdout(), "mutual_chap  user %s  secret %s\n", hc.NextMutualCHAP.User, hc.NextMutualCHAP.Secret)
					}
				}
				if hc.CHAPRotation == inventory.RotateBoot {
					fmt.Fprintln(cmd.OutOrStdout(), "chap_rotation boot: these secrets change at every boot of the host")
				}
				return nil
			}
			if showConfig {
				var hc api.HostConfig
				if err := c.do(cmd.Context(), http.MethodGet, "/hosts/"+args[0]+"/config", nil, &hc); err != nil {
					return err
				}
				if jsonFlag(cmd) {
					return printJSON(cmd, hc)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "# iPXE script (served to the host at boot)\n%s\n", hc.IPXEScript)
				fmt.Fprintf(cmd.OutOrStdout(), "# /etc/default/grub\n%s\n\n", hc.GrubCmdline)
				fmt.Fprintf(cmd.OutOrStdout(), "%s\n", hc.ISCSIInitramfs)
				fmt.Fprintf(cmd.OutOrStdout(), "# /etc/iscsi/initiatorname.iscsi\n%s", hc.InitiatorName)
				for _, n := range hc.Notes {
					fmt.Fprintln(cmd.OutOrStdout(), "# note:", n)
				}
				return nil
			}
			var h api.HostView
			if err := c.do(cmd.Context(), http.MethodGet, "/hosts/"+args[0], nil, &h); err != nil {
				return err
			}
			if jsonFlag(cmd) {
				return printJSON(cmd, h)
			}
			printHost(cmd, &h)
			return nil
		}),
	}
	cmd.Flags().BoolVar(&showConfig, "config", false, "print the host's iPXE script, GRUB_CMDLINE_LINUX, /etc/iscsi/iscsi.initramfs and initiatorname.iscsi (with its secrets)")
	cmd.Flags().BoolVar(&showSecrets, "secrets", false, "print the host's CHAP users and secrets, and new ones waiting for its next boot (they are never logged or printed otherwise)")
	return cmd
}

func printHost(cmd *cobra.Command, h *api.HostView) {
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("name", h.Name+"  ("+h.Source+")")
	row("macs", orDash(strings.Join(h.MACs, ", ")))
	arch := orDash(h.Arch)
	if h.ArchLearnt {
		arch += " (learnt)"
	}
	row("arch", arch)
	want := "-"
	if h.Image != "" {
		want = h.Image + " newest"
		if h.Version != 0 {
			want = fmt.Sprintf("%s v%d (pinned)", h.Image, h.Version)
		}
	}
	row("image", want)
	row("disk", fmt.Sprintf("%s on %s, %s used", h.Disk.Mode, orDash(h.Disk.Base+h.Disk.File), humanBytes(h.Disk.UsageBytes)))
	if h.DiskError != "" {
		row("disk error", "FAILED, writes refused until `diskless host clear-error "+h.Name+"`: "+h.DiskError)
	}
	row("boot", h.Boot)
	row("initiator", h.InitiatorIQN)
	row("target", h.TargetIQN)
	chap := "off"
	if h.CHAP != nil {
		chap = "user " + h.CHAP.User
		if h.MutualCHAP != nil {
			chap += ", mutual: user " + h.MutualCHAP.User
		}
		if h.CHAPRotation == inventory.RotateBoot {
			chap += "; new secrets at every boot"
		}
	}
	row("chap", chap)
	if h.ReservedIP != "" {
		row("reserved ip", h.ReservedIP)
	}
	row("pending", orDash(h.Pending))
	state := stateText(h, false)
	if h.IP != "" {
		state += ", " + h.IP
	}
	row("state", state)
	if b := h.LastBoot; b != nil {
		last := fmt.Sprintf("%s, %s", b.Started.Local().Format(time.DateTime), b.Result)
		if b.Result == bootevent.Completed {
			last += fmt.Sprintf(" in %.1f s", b.DurationSeconds)
		}
		if b.Attempts > 1 {
			last += fmt.Sprintf(", %d attempts", b.Attempts)
		}
		if b.DroppedEvents > 0 {
			last += fmt.Sprintf(" (%d steps left out)", b.DroppedEvents)
		}
		row("last boot", last)
		for _, e := range b.Events {
			step := fmt.Sprintf("+%5.1fs  %-10s %s", e.Time.Sub(b.Started).Seconds(), e.Stage, e.Detail)
			if e.Count > 1 {
				step += fmt.Sprintf(" (x%d)", e.Count)
			}
			if e.IP != "" {
				step += "  " + e.IP
			}
			if e.Error != "" {
				step += "  ERROR: " + e.Error
			}
			row("", step)
		}
	}
	for _, s := range h.Sessions {
		row("session", fmt.Sprintf("%s from %s since %s, read %s, written %s", s.Initiator, s.Remote,
			s.Since.Local().Format(time.DateTime), humanBytes(int64(s.ReadBytes)), humanBytes(int64(s.WrittenBytes))))
	}
	for _, s := range h.Disk.Snapshots {
		auto := ""
		if s.Auto {
			auto = " (automatic)"
		}
		row("snapshot", fmt.Sprintf("%s  %s  on %s%s", s.Name, s.Created.Local().Format(time.DateTime), s.Base, auto))
	}
	tw.Flush()
}

func hostSet() *cobra.Command {
	var (
		image, version, disk, boot, kernel, initrd, cmdline, ip, arch, rotation string
		macs                                                                    []string
	)
	cmd := &cobra.Command{
		Use:   "set NAME [--image I] [--version N|latest] [--disk MODE] ...",
		Short: "Change a host; disk changes apply now if it is offline, at its next boot if it runs",
		Args:  cobra.ExactArgs(1),
		RunE: withClient(func(cmd *cobra.Command, c *client, args []string) error {
			var req api.SetHostRequest
			fl := cmd.Flags()
			str := func(name string, v string) *string {
				if fl.Changed(name) {
					return &v
				}
				return nil
			}
			req.Image, req.DiskMode, req.Boot = str("image", image), str("disk", disk), str("boot", boot)
			req.Kernel, req.Initrd, req.Cmdline = str("kernel", kernel), str("initrd", initrd), str("cmdline", cmdline)
			for _, p := range []*string{req.Kernel, req.Initrd} {
				if p != nil {
					absPath(p)
				}
			}
			req.IP, req.Arch, req.CHAPRotation = str("ip", ip), str("arch", arch), str("chap-rotation", rotation)
			if fl.Changed("mac") {
				req.MACs = &macs
			}
			if fl.Changed("version") {
				n, err := inventory.ParseVersion(version)
				if err != nil {
					return err
				}
				req.Version = &n
			}
			var ch api.HostChange
			if err := c.do(cmd.Context(), http.MethodPatch, "/hosts/"+args[0], req, &ch); err != nil {
				return err
			}
			if jsonFlag(cmd) {
				return printJSON(cmd, ch)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "host %s changed\n", args[0])
			for _, n := range ch.Notes {
				fmt.Fprintln(cmd.OutOrStdout(), "note:", n)
			}
			return nil
		}),
	}
	f := cmd.Flags()
	f.StringVar(&image, "image", "", "image the host boots")
	f.StringVar(&version, "version", "", "version number to pin to, or latest to follow the newest")
	f.StringVar(&disk, "disk", "", "persistent or volatile")
	f.StringVar(&boot, "boot", "", "sanboot or kernel")
	f.StringVar(&kernel, "kernel", "", "kernel file (boot kernel)")
	f.StringVar(&initrd, "initrd", "", "initrd file (boot kernel)")
	f.StringVar(&cmdline, "cmdline", "", "extra kernel command line")
	f.StringVar(&ip, "ip", "", "fixed DHCP address (empty: from the pool)")
	f.StringVar(&arch, "arch", "", "bios, uefi, or empty to learn it")
	f.StringArrayVar(&macs, "mac", nil, "the host's MAC addresses (replaces the list; repeatable)")
	f.StringVar(&rotation, "chap-rotation", "", chapRotationHelp)
	return cmd
}

func hostRemove() *cobra.Command {
	return &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a host and its disk (refused while it is online)",
		Args:  cobra.ExactArgs(1),
		RunE: withClient(func(cmd *cobra.Command, c *client, args []string) error {
			if err := c.do(cmd.Context(), http.MethodDelete, "/hosts/"+args[0], nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "host %s removed\n", args[0])
			return nil
		}),
	}
}

func hostSnapshot() *cobra.Command {
	var del string
	cmd := &cobra.Command{
		Use:   "snapshot NAME [SNAPSHOT]",
		Short: "Take a snapshot of a persistent host disk (the host may run), or --delete one",
		Args:  cobra.RangeArgs(1, 2),
		RunE: withClient(func(cmd *cobra.Command, c *client, args []string) error {
			if del != "" {
				if err := c.do(cmd.Context(), http.MethodDelete, "/hosts/"+args[0]+"/snapshots/"+del, nil, nil); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "snapshot %s of %s deleted\n", del, args[0])
				return nil
			}
			req := api.SnapshotRequest{}
			if len(args) == 2 {
				req.Name = args[1]
			}
			var s storage.Snapshot
			if err := c.do(cmd.Context(), http.MethodPost, "/hosts/"+args[0]+"/snapshots", req, &s); err != nil {
				return err
			}
			if jsonFlag(cmd) {
				return printJSON(cmd, s)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "snapshot %s of %s taken (on %s)\n", s.Name, args[0], s.Base)
			return nil
		}),
	}
	cmd.Flags().StringVar(&del, "delete", "", "delete this snapshot instead")
	return cmd
}

func hostSnapshots() *cobra.Command {
	return &cobra.Command{
		Use:   "snapshots NAME",
		Short: "List a host's snapshots",
		Args:  cobra.ExactArgs(1),
		RunE: withClient(func(cmd *cobra.Command, c *client, args []string) error {
			var ss []storage.Snapshot
			if err := c.do(cmd.Context(), http.MethodGet, "/hosts/"+args[0]+"/snapshots", nil, &ss); err != nil {
				return err
			}
			if jsonFlag(cmd) {
				return printJSON(cmd, ss)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SNAPSHOT\tCREATED\tVERSION\tAUTOMATIC")
			for _, s := range ss {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%v\n", s.Name, s.Created.Local().Format(time.DateTime), s.Base, s.Auto)
			}
			return tw.Flush()
		}),
	}
}

func notesOut(cmd *cobra.Command, n api.Notes) error {
	if jsonFlag(cmd) {
		return printJSON(cmd, n)
	}
	for _, s := range n.Notes {
		fmt.Fprintln(cmd.OutOrStdout(), s)
	}
	return nil
}

func hostRollback() *cobra.Command {
	return &cobra.Command{
		Use:   "rollback NAME SNAPSHOT",
		Short: "Make a snapshot the host's disk again (the host must be offline; later writes are lost)",
		Args:  cobra.ExactArgs(2),
		RunE: withClient(func(cmd *cobra.Command, c *client, args []string) error {
			var n api.Notes
			if err := c.do(cmd.Context(), http.MethodPost, "/hosts/"+args[0]+"/snapshots/"+args[1]+"/rollback", nil, &n); err != nil {
				return err
			}
			return notesOut(cmd, n)
		}),
	}
}

func hostReset() *cobra.Command {
	return &cobra.Command{
		Use:   "reset NAME",
		Short: "Discard a host's writes: its disk becomes its image version again (now, or at its next boot if it runs)",
		Args:  cobra.ExactArgs(1),
		RunE: withClient(func(cmd *cobra.Command, c *client, args []string) error {
			var n api.Notes
			if err := c.do(cmd.Context(), http.MethodPost, "/hosts/"+args[0]+"/reset", nil, &n); err != nil {
				return err
			}
			return notesOut(cmd, n)
		}),
	}
}

func hostPromote() *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "promote NAME [IMAGE]",
		Short: "Make a host's disk the next version of an image (default: its own); says first which hosts move",
		Args:  cobra.RangeArgs(1, 2),
		RunE: withClient(func(cmd *cobra.Command, c *client, args []string) error {
			req := api.PromoteRequest{DryRun: true}
			if len(args) == 2 {
				req.Image = args[1]
			}
			var plan inventory.PromotePlan
			if err := c.do(cmd.Context(), http.MethodPost, "/hosts/"+args[0]+"/promote", req, &plan); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "promote %s to %s v%d (%s):\n", plan.Host, plan.Image, plan.Version, humanBytes(plan.Size))
			if len(plan.Effects) == 0 {
				fmt.Fprintln(os.Stderr, "  no host follows the image's newest version: nothing else changes")
			}
			for _, e := range plan.Effects {
				fmt.Fprintln(os.Stderr, "  "+e)
			}
			if !yes && !confirm("go ahead?") {
				return fmt.Errorf("not promoted (pass --yes to skip the question)")
			}
			req.Image, req.DryRun = plan.Image, false
			var acc api.Accepted
			if err := c.do(cmd.Context(), http.MethodPost, "/hosts/"+args[0]+"/promote", req, &acc); err != nil {
				return err
			}
			job, err := c.wait(cmd.Context(), acc.Job, "promote "+args[0])
			if err != nil {
				return err
			}
			if jsonFlag(cmd) {
				return printJSON(cmd, job)
			}
			if m, ok := job.Result.(map[string]any); ok {
				if ns, ok := m["notes"].([]any); ok {
					for _, n := range ns {
						fmt.Fprintln(cmd.OutOrStdout(), n)
					}
				}
			}
			return nil
		}),
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask")
	return cmd
}

// confirm asks on the terminal; without one the answer is no.
func confirm(q string) bool {
	st, err := os.Stdin.Stat()
	if err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	fmt.Fprintf(os.Stderr, "%s [y/N] ", q)
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	a := strings.ToLower(strings.TrimSpace(line))
	return a == "y" || a == "yes"
}

func hostCheck() *cobra.Command {
	return &cobra.Command{
		Use:   "check NAME",
		Short: "Verify a host disk's metadata (checksums, records, layers)",
		Args:  cobra.ExactArgs(1),
		RunE: withClient(func(cmd *cobra.Command, c *client, args []string) error {
			var rep storage.CheckReport
			if err := c.do(cmd.Context(), http.MethodPost, "/hosts/"+args[0]+"/check", nil, &rep); err != nil {
				return err
			}
			if jsonFlag(cmd) {
				if err := printJSON(cmd, rep); err != nil {
					return err
				}
			} else {
				for _, p := range rep.Parts {
					mark := "ok  "
					if !p.OK {
						mark = "FAIL"
					}
					fmt.Fprintf(cmd.OutOrStdout(), "%s %s: %s\n", mark, p.Name, p.Detail)
				}
			}
			if !rep.OK {
				return fmt.Errorf("host %s: disk check failed", args[0])
			}
			return nil
		}),
	}
}

func hostClearError() *cobra.Command {
	return &cobra.Command{
		Use:   "clear-error NAME",
		Short: "Accept writes to a host's disk again after a failed flush, once its storage is fixed (the host's file system may have lost writes)",
		Long: `Once a flush of a host's disk fails (an I/O error or a full thin volume under its
file), the disk refuses every write and flush, so the host never gets a success
over writes that may be lost; reads keep working. host show and host list say so.
Fix the storage, then clear the error: one more flush must succeed. Writes the
host made before the failed flush may be missing: check its file system.
The error outlives restarts of the server; a disk made anew (reset, rollback,
another version) starts without it.`,
		Args: cobra.ExactArgs(1),
		RunE: withClient(func(cmd *cobra.Command, c *client, args []string) error {
			var n api.Notes
			if err := c.do(cmd.Context(), http.MethodPost, "/hosts/"+args[0]+"/clear-error", nil, &n); err != nil {
				return err
			}
			return notesOut(cmd, n)
		}),
	}
}

func hostRotateSecrets() *cobra.Command {
	return &cobra.Command{
		Use:   "rotate-secrets NAME",
		Short: "Give a host new CHAP secrets: now if it is offline, at its next boot if it runs (never printed)",
		Long: `Generates new CHAP and mutual CHAP secrets for a host (the users stay) and
says when they take effect. A host without iSCSI sessions gets them now: its next
boot's iPXE script carries them. A running host keeps the current ones until it
next boots (from the network): its running system logs in again with the secrets
of its boot after a network drop or a server restart, so changing them under it
would cost it its root disk. host list and host show say "new CHAP secrets" in
PENDING meanwhile; host show NAME --secrets shows the current and the new ones
(an image whose initramfs holds the secrets, see host show --config, needs the
new ones written there before the reboot).
Refused for a host without CHAP, and for a secret the YAML configuration writes
(change it there). For new secrets at every boot, see --chap-rotation boot of
host add and host set.`,
		Args: cobra.ExactArgs(1),
		RunE: withClient(func(cmd *cobra.Command, c *client, args []string) error {
			var ch api.HostChange
			if err := c.do(cmd.Context(), http.MethodPost, "/hosts/"+args[0]+"/rotate-secrets", nil, &ch); err != nil {
				return err
			}
			if jsonFlag(cmd) {
				return printJSON(cmd, ch)
			}
			for _, n := range ch.Notes {
				fmt.Fprintln(cmd.OutOrStdout(), n)
			}
			return nil
		}),
	}
}

func hostUnknown() *cobra.Command {
	return &cobra.Command{
		Use:   "unknown",
		Short: "List machines that asked to boot but are not hosts (MAC, address, architecture, when)",
		Args:  cobra.NoArgs,
		RunE: withClient(func(cmd *cobra.Command, c *client, _ []string) error {
			var list []inventory.UnknownHost
			if err := c.do(cmd.Context(), http.MethodGet, "/unknown-hosts", nil, &list); err != nil {
				return err
			}
			if jsonFlag(cmd) {
				return printJSON(cmd, list)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MAC\tIP\tARCH\tFIRST SEEN\tLAST SEEN\tREQUESTS")
			for _, u := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", u.MAC, orDash(u.IP), orDash(u.Arch),
					u.FirstSeen.Local().Format(time.DateTime), u.LastSeen.Local().Format(time.DateTime), u.Count)
			}
			return tw.Flush()
		}),
	}
}

// stateText says where a host stands: "booting: san-login (12s)", "online
// since 10:02:03 (5m0s)", "failed at script: sanboot failed: ...". short
// leaves out the failure's text (listings).
func stateText(h *api.HostView, short bool) string {
	st := h.State
	ago := func(t time.Time) string { return time.Since(t).Round(time.Second).String() }
	switch st.State {
	case bootevent.StateBooting:
		return fmt.Sprintf("booting: %s (%s)", st.Stage, ago(st.Since))
	case bootevent.StateOnline:
		if st.Since.IsZero() {
			return "online"
		}
		if short {
			return "online " + ago(st.Since)
		}
		return fmt.Sprintf("online since %s (%s)", st.Since.Local().Format(time.DateTime), ago(st.Since))
	case bootevent.StateFailed, bootevent.StateStuck:
		if short {
			return fmt.Sprintf("%s at %s", strings.ToUpper(st.State), st.Stage)
		}
		return fmt.Sprintf("%s at %s: %s", strings.ToUpper(st.State), st.Stage, st.Failure)
	case bootevent.StateOffline:
		return "offline"
	}
	// No server runs: only the sessions tell.
	if h.Online {
		return "online"
	}
	return "offline"
}

func hostAdopt() *cobra.Command {
	var req api.AdoptRequest
	var version string
	cmd := &cobra.Command{
		Use:   "adopt MAC [--name NAME] [--image IMAGE] [--version N] [--disk persistent|volatile]",
		Short: "Make a machine of `host unknown` a host (what is left out: the configuration's unknown_hosts.enroll)",
		Long: `Makes a machine that asked to boot but is no host (diskless host unknown) a
host, as host add would: generated IQNs and CHAP secrets (host show NAME
--secrets prints them), a copy-on-write disk on the image. It leaves the
unknown list. What the flags leave out comes from the unknown_hosts.enroll
section the server last started with: the name from its name_pattern (default
host-<mac without colons>), the image, version, disk mode and boot mode. Without
that section, --image is required.`,
		Example: `  diskless host adopt 52:54:00:12:34:56 --name lab-07 --image debian12
  diskless host adopt 52:54:00:12:34:56          # as unknown_hosts.enroll says`,
		Args: cobra.ExactArgs(1),
		RunE: withClient(func(cmd *cobra.Command, c *client, args []string) error {
			if cmd.Flags().Changed("version") {
				n, err := inventory.ParseVersion(version)
				if err != nil {
					return err
				}
				req.Version = &n
			}
			var ch api.HostChange
			if err := c.do(cmd.Context(), http.MethodPost, "/unknown-hosts/"+url.PathEscape(args[0])+"/adopt", req, &ch); err != nil {
				return err
			}
			if jsonFlag(cmd) {
				return printJSON(cmd, ch)
			}
			h := ch.Host
			fmt.Fprintf(cmd.OutOrStdout(), "host %s adopted (%s): %s disk on %s\n", h.Name, strings.Join(h.MACs, ","), h.Disk.Mode, orDash(h.Disk.Base))
			for _, n := range ch.Notes {
				fmt.Fprintln(cmd.OutOrStdout(), "note:", n)
			}
			return nil
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.Name, "name", "", "host name (default: from unknown_hosts.enroll.name_pattern, else host-<mac hex>)")
	f.StringVar(&req.Image, "image", "", "image the host boots (default: unknown_hosts.enroll.image)")
	f.StringVar(&version, "version", "", "version number to pin to, or latest (default: the enroll section's, else the newest)")
	f.StringVar(&req.DiskMode, "disk", "", "persistent or volatile (default: the enroll section's, else persistent)")
	f.StringVar(&req.DiskMode, "mode", "", "same as --disk")
	f.MarkHidden("mode")
	f.StringVar(&req.Boot, "boot", "", "sanboot or kernel (default: the enroll section's, else sanboot)")
	return cmd
}
