package main

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/diskless-boot/diskless/internal/api"
	"github.com/diskless-boot/diskless/internal/inventory"
)

var syscallZero = syscall.Signal(0)

// withClient runs fn with a client that is closed afterwards.
func withClient(fn func(cmd *cobra.Command, c *client, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := newClient(cmd)
		if err != nil {
			return err
		}
		defer c.Close()
		return fn(cmd, c, args)
	}
}

func newImageCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Manage images: read-only disks with numbered versions that hosts boot",
	}
	addClientFlags(cmd)
	var size, desc, format string
	var version string
	create := &cobra.Command{
		Use:   "create NAME --size SIZE",
		Short: "Create an image whose version 1 is an empty disk",
		Args:  cobra.ExactArgs(1),
		RunE: withClient(func(cmd *cobra.Command, c *client, args []string) error {
			req := map[string]any{"name": args[0], "size": size}
			if desc != "" {
				req["description"] = desc
			}
			var img inventory.ImageInfo
			if err := c.do(cmd.Context(), http.MethodPost, "/images", req, &img); err != nil {
				return err
			}
			if jsonFlag(cmd) {
				return printJSON(cmd, img)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "image %s created: version 1, %s, empty\n", img.Name, humanBytes(size64(img)))
			return nil
		}),
	}
	create.Flags().StringVar(&size, "size", "", "size of the disk: bytes or 8G, 512M ... (required)")
	create.Flags().StringVar(&desc, "description", "", "free text shown in listings")
	create.MarkFlagRequired("size")

	var bootKernel, bootInitrd, bootCmdline string
	imp := &cobra.Command{
		Use:   "import NAME FILE",
		Short: "Import a disk file (raw, block device, qcow2; vmdk/vhdx/vdi/vpc with qemu-img) as the image's next version",
		Long: "Import a disk file as the next version of image NAME, creating the image when it does not exist.\n" +
			"The file is read on the server's machine; holes and zero blocks stay sparse.",
		Args: cobra.ExactArgs(2),
		RunE: withClient(func(cmd *cobra.Command, c *client, args []string) error {
			name, file := args[0], args[1]
			req := api.ImportRequest{Source: file, Kernel: bootKernel, Initrd: bootInitrd, Cmdline: bootCmdline}
			for _, p := range []*string{&req.Source, &req.Kernel, &req.Initrd, &req.Cmdline} {
				if *p == "" {
					continue
				}
				if abs, err := filepath.Abs(*p); err == nil {
					*p = abs
				}
			}
			return importVersion(cmd, c, name, desc, req)
		}),
	}
	imp.Flags().StringVar(&desc, "description", "", "description, when the image is created")
	imp.Flags().StringVar(&bootKernel, "kernel", "", "kernel file to keep with the version, for hosts that boot it without GRUB (boot kernel)")
	imp.Flags().StringVar(&bootInitrd, "initrd", "", "its initrd file (with --kernel)")
	imp.Flags().StringVar(&bootCmdline, "cmdline", "", "file holding the version's kernel command line, e.g. root=UUID=... (with --kernel)")

	exp := &cobra.Command{
		Use:   "export NAME FILE",
		Short: "Write a version of an image to a file (raw, or qcow2 with qemu-img)",
		Args:  cobra.ExactArgs(2),
		RunE: withClient(func(cmd *cobra.Command, c *client, args []string) error {
			name, file := args[0], args[1]
			if abs, err := filepath.Abs(file); err == nil {
				file = abs
			}
			var acc api.Accepted
			v := version
			if v == "" {
				v = "latest"
			}
			err := c.do(cmd.Context(), http.MethodPost, "/images/"+name+"/versions/"+v+"/export", api.ExportRequest{Path: file, Format: format}, &acc)
			if err != nil {
				return err
			}
			job, err := c.wait(cmd.Context(), acc.Job, "export "+name)
			if err != nil {
				return err
			}
			if jsonFlag(cmd) {
				return printJSON(cmd, job)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "exported to %s\n", file)
			return nil
		}),
	}
	exp.Flags().StringVar(&version, "version", "", "version to export (default: the newest)")
	exp.Flags().StringVar(&format, "format", "raw", "raw or qcow2")

	list := &cobra.Command{
		Use:   "list",
		Short: "List images and their versions",
		Args:  cobra.NoArgs,
		RunE: withClient(func(cmd *cobra.Command, c *client, _ []string) error {
			var imgs []inventory.ImageInfo
			if err := c.do(cmd.Context(), http.MethodGet, "/images", nil, &imgs); err != nil {
				return err
			}
			if jsonFlag(cmd) {
				return printJSON(cmd, imgs)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tNEWEST\tVERSIONS\tSIZE\tHOSTS\tSOURCE\tDESCRIPTION")
			for _, im := range imgs {
				hosts := map[string]bool{}
				for _, v := range im.Versions {
					for _, h := range v.Hosts {
						hosts[h] = true
					}
				}
				fmt.Fprintf(tw, "%s\tv%d\t%d\t%s\t%d\t%s\t%s\n", im.Name, im.Latest, len(im.Versions), humanBytes(size64(im)), len(hosts), im.Source, im.Description)
			}
			return tw.Flush()
		}),
	}
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show an image with its versions and the hosts on each",
		Args:  cobra.ExactArgs(1),
		RunE: withClient(func(cmd *cobra.Command, c *client, args []string) error {
			var im inventory.ImageInfo
			if err := c.do(cmd.Context(), http.MethodGet, "/images/"+args[0], nil, &im); err != nil {
				return err
			}
			if jsonFlag(cmd) {
				return printJSON(cmd, im)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "image %s (%s)  newest v%d  created %s\n", im.Name, im.Source, im.Latest, im.Created.Local().Format(time.DateTime))
			if im.Description != "" {
				fmt.Fprintln(cmd.OutOrStdout(), im.Description)
			}
			return printVersions(cmd, im.Versions)
		}),
	}
	versions := &cobra.Command{
		Use:   "versions NAME",
		Short: "List the versions of an image",
		Args:  cobra.ExactArgs(1),
		RunE: withClient(func(cmd *cobra.Command, c *client, args []string) error {
			var vs []inventory.VersionInfo
			if err := c.do(cmd.Context(), http.MethodGet, "/images/"+args[0]+"/versions", nil, &vs); err != nil {
				return err
			}
			if jsonFlag(cmd) {
				return printJSON(cmd, vs)
			}
			return printVersions(cmd, vs)
		}),
	}
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete an image (or one version with --version); refused while a host uses it",
		Args:  cobra.ExactArgs(1),
		RunE: withClient(func(cmd *cobra.Command, c *client, args []string) error {
			path := "/images/" + args[0]
			if version != "" {
				path += "/versions/" + version
			}
			if err := c.do(cmd.Context(), http.MethodDelete, path, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted %s\n", strings.TrimPrefix(path, "/images/"))
			return nil
		}),
	}
	del.Flags().StringVar(&version, "version", "", "delete this version only")
	cmd.AddCommand(list, create, imp, newImageBuildCommand(), newImagePrepareCommand(), exp, show, versions, del)
	return cmd
}

func size64(im inventory.ImageInfo) int64 {
	for _, v := range im.Versions {
		if v.Number == im.Latest {
			return v.Size
		}
	}
	return 0
}

func printVersions(cmd *cobra.Command, vs []inventory.VersionInfo) error {
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tSIZE\tSTATE\tCREATED\tORIGIN\tHOSTS")
	for _, v := range vs {
		fmt.Fprintf(tw, "v%d\t%s\t%s\t%s\t%s\t%s\n", v.Number, humanBytes(v.Size), v.State,
			v.Created.Local().Format(time.DateTime), v.Origin, strings.Join(v.Hosts, ","))
	}
	return tw.Flush()
}

// importVersion imports req's files as the next version of image name,
// creating the image (with description desc) when it does not exist:
// diskless image import, and the end of diskless image build.
func importVersion(cmd *cobra.Command, c *client, name, desc string, req api.ImportRequest) error {
	// Say first which hosts the new version will move.
	var hosts []api.HostView
	if err := c.do(cmd.Context(), http.MethodGet, "/hosts", nil, &hosts); err == nil {
		for _, h := range hosts {
			if h.Image == name && h.Version == 0 && h.DiskMode != "raw" {
				when := "now (offline)"
				if h.Online {
					when = "at its next boot"
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "%s follows %s's newest version: it moves to the new one %s (a persistent disk keeps its old state as a snapshot)\n", h.Name, name, when)
			}
		}
	}
	var acc api.Accepted
	err := c.do(cmd.Context(), http.MethodPost, "/images/"+name+"/versions", req, &acc)
	if e, ok := err.(*apiError); ok && e.Status == http.StatusNotFound {
		creq := api.CreateImageRequest{Name: name, Description: desc, Import: req.Source, Kernel: req.Kernel, Initrd: req.Initrd, Cmdline: req.Cmdline}
		err = c.do(cmd.Context(), http.MethodPost, "/images", creq, &acc)
	}
	if err != nil {
		return err
	}
	job, err := c.wait(cmd.Context(), acc.Job, "import "+name)
	if err != nil {
		return err
	}
	if jsonFlag(cmd) {
		return printJSON(cmd, job)
	}
	if r, ok := job.Result.(map[string]any); ok {
		if v, ok := r["version"].(map[string]any); ok {
			fmt.Fprintf(cmd.OutOrStdout(), "image %s version %v imported (%v)\n", name, v["version"], v["origin"])
		}
		if notes, ok := r["notes"].([]any); ok {
			for _, n := range notes {
				fmt.Fprintln(cmd.OutOrStdout(), n)
			}
		}
	}
	return nil
}
