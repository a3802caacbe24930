// Package app wires diskless' services together: it opens devices and
// listeners, starts servers and shuts them down in order. It holds no
// protocol logic.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/diskless-boot/diskless/internal/activation"
	"github.com/diskless-boot/diskless/internal/disk"
	"github.com/diskless-boot/diskless/internal/iscsi"
	"github.com/diskless-boot/diskless/internal/scsi"
)

// LUNSpec is one --lun N=PATH[:OPTIONS] option.
type LUNSpec struct {
	LUN       uint64
	Path      string
	ReadOnly  bool
	Removable bool
}

// ParseLUNSpecs parses --lun values: "N=PATH" or "N=PATH:OPTIONS", OPTIONS
// a comma-separated list of ro, rw and removable ("0=/srv/a.img:ro,removable").
// A suffix that is not such a list is part of the path.
func ParseLUNSpecs(specs []string) ([]LUNSpec, error) {
	seen := map[uint64]bool{}
	var out []LUNSpec
	for _, s := range specs {
		num, path, ok := strings.Cut(s, "=")
		if !ok || path == "" {
			return nil, fmt.Errorf("--lun %q: want N=PATH[:ro|rw][,removable]", s)
		}
		n, err := strconv.ParseUint(num, 10, 14)
		if err != nil {
			return nil, fmt.Errorf("--lun %q: LUN number must be 0-16383", s)
		}
		spec := LUNSpec{LUN: n, Path: path}
		if i := strings.LastIndexByte(path, ':'); i > 0 {
			if opts, ok := parseLUNOptions(path[i+1:]); ok {
				spec.Path, spec.ReadOnly, spec.Removable = path[:i], opts.ReadOnly, opts.Removable
			}
		}
		if seen[n] {
			return nil, fmt.Errorf("--lun %q: LUN %d given twice", s, n)
		}
		seen[n] = true
		out = append(out, spec)
	}
	return out, nil
}

// parseLUNOptions parses the OPTIONS of --lun N=PATH:OPTIONS; ok is false
// unless every item is a known option.
func parseLUNOptions(s string) (spec LUNSpec, ok bool) {
	for opt := range strings.SplitSeq(s, ",") {
		switch opt {
		case "ro":
			spec.ReadOnly = true
		case "rw":
			spec.ReadOnly = false
		case "removable":
			spec.Removable = true
		default:
			return LUNSpec{}, false
		}
	}
	return spec, true
}

// ParseCredentials parses USER:SECRET ("" means none).
func ParseCredentials(flag, v string) (*iscsi.Credentials, error) {
	if v == "" {
		return nil, nil
	}
	user, secret, ok := strings.Cut(v, ":")
	if !ok || user == "" || secret == "" {
		return nil, fmt.Errorf("%s: want USER:SECRET", flag)
	}
	return &iscsi.Credentials{User: user, Secret: secret}, nil
}

// TargetOptions configures RunTarget.
type TargetOptions struct {
	Listen            string
	IQN               string
	Alias             string
	LUNs              []LUNSpec
	CHAP, MutualCHAP  *iscsi.Credentials
	AllowedInitiators []string
	PortalGroupTag    uint16
	NOPInterval       time.Duration
	// SendfileMin is iscsi.Config.SendfileMin (0: its default).
	SendfileMin int
	TraceDir    string // iscsi.Config.TraceDir: --trace-io
	Logger      *slog.Logger
	// Sockets are the listening sockets a service manager handed over:
	// the one bound to Listen is taken from it (default: none).
	Sockets *activation.Set
}

// RunTarget serves opts.LUNs as one iSCSI target until ctx is done, then
// shuts down: connections closed, every device flushed and closed.
func RunTarget(ctx context.Context, opts TargetOptions) (err error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := iscsi.CheckName(opts.IQN); err != nil {
		return fmt.Errorf("--iqn %q: %w", opts.IQN, err)
	}
	if len(opts.LUNs) == 0 {
		return errors.New("no --lun given")
	}
	if opts.MutualCHAP != nil && opts.CHAP == nil {
		return errors.New("--mutual-chap needs --chap")
	}
	st := scsi.NewTarget(scsi.TargetConfig{Name: opts.IQN, RelTargetPort: 1, TargetPortGroup: 1})
	var devices []disk.Device
	defer func() {
		for _, d := range devices {
			if cerr := d.Close(); cerr != nil {
				err = errors.Join(err, cerr)
			}
		}
	}()
	for _, l := range opts.LUNs {
		dev, err := disk.OpenFileWith(l.Path, disk.FileOptions{ReadOnly: l.ReadOnly,
			Logger: log.With("target", opts.IQN, "lun", l.LUN)})
		if err != nil {
			return fmt.Errorf("--lun %d: %w", l.LUN, err)
		}
		devices = append(devices, dev)
		lu, err := scsi.NewLogicalUnit(dev, scsi.LUConfig{
			ReadOnly:  l.ReadOnly,
			Removable: l.Removable,
			Serial:    fmt.Sprintf("%s/%d", opts.IQN, l.LUN),
		})
		if err != nil {
			return fmt.Errorf("--lun %d: %w", l.LUN, err)
		}
		if err := st.AddLU(l.LUN, lu); err != nil {
			return err
		}
		log.Info("lun", "lun", l.LUN, "image", l.Path, "bytes", dev.Size(), "ro", l.ReadOnly, "removable", l.Removable)
	}
	// The target's defaults bound every client (connections per source
	// and in total, login, discovery and Data-Out time, memory per host).
	icfg := iscsi.Defaults()
	icfg.PortalGroupTag, icfg.NOPInterval, icfg.Logger = opts.PortalGroupTag, opts.NOPInterval, log
	icfg.SendfileMin = opts.SendfileMin
	icfg.TraceDir = opts.TraceDir
	srv := iscsi.New(icfg)
	if err := srv.AddTarget(&iscsi.Target{
		Name: opts.IQN, Alias: opts.Alias, SCSI: st,
		CHAP: opts.CHAP, MutualCHAP: opts.MutualCHAP, AllowedInitiators: opts.AllowedInitiators,
	}); err != nil {
		return err
	}
	sockets := opts.Sockets
	if sockets == nil {
		sockets = &activation.Set{}
	}
	defer sockets.Close()
	ln, inherited, err := sockets.Listen(opts.Listen)
	if err != nil {
		return err
	}
	if inherited {
		log.Info("listening on a socket the service manager kept open", "addr", ln.Addr().String())
	}
	if unused := sockets.Unused(); len(unused) > 0 {
		log.Warn("closed sockets the service manager handed over that --listen does not name", "addrs", unused)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ctx, ln) }()
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		if err != nil {
			return err
		}
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("iscsi shutdown incomplete", "err", err)
	}
	for _, d := range devices {
		if ferr := d.Flush(); ferr != nil {
			err = errors.Join(err, ferr)
		}
	}
	return err
}
