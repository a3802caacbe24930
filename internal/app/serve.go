package app

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"time"

	"golang.org/x/net/ipv6"
	"golang.org/x/sync/errgroup"

	"github.com/diskless-boot/diskless/internal/boot"
	"github.com/diskless-boot/diskless/internal/config"
	"github.com/diskless-boot/diskless/internal/dhcp"
	"github.com/diskless-boot/diskless/internal/disk"
	"github.com/diskless-boot/diskless/internal/iscsi"
	"github.com/diskless-boot/diskless/internal/ra"
	"github.com/diskless-boot/diskless/internal/scsi"
	"github.com/diskless-boot/diskless/internal/tftp"
	"github.com/diskless-boot/diskless/internal/web"
)

// ServeOptions configures RunServe.
type ServeOptions struct {
	// Config is a validated configuration, from config.Load or
	// config.FromQuickFlags. RunServe resolves and finalizes it.
	Config *config.Config
	// Logger receives every service's logs (default: discard).
	Logger *slog.Logger
	// Stdout receives the CHAP secrets generated in this run, once
	// (default: discard).
	Stdout io.Writer
	// InterfaceAddrs looks up the interface's addresses (default: the
	// running system's).
	InterfaceAddrs config.InterfaceAddrs
	// ShutdownTimeout bounds the graceful shutdown (default 10 s).
	ShutdownTimeout time.Duration
}

// shutdowner is what every server has.
type shutdowner interface {
	Shutdown(ctx context.Context) error
}

// RunServe runs every service of `diskless serve` on the configured
// interface until ctx is done: the iSCSI target (one target per host, its
// image as LUN 0), HTTP (iPXE scripts), TFTP (iPXE binaries), DHCP and the
// IPv6 router-solicitation answerer. Everything is checked and every socket
// opened before anything serves, so a bad configuration or a port in use
// starts nothing. Shutdown goes in the opposite order of a boot: no new
// DHCP offers first, the iSCSI sessions of running hosts last.
func RunServe(ctx context.Context, opts ServeOptions) (err error) {
	cfg := opts.Config
	if cfg == nil {
		return errors.New("serve: no configuration")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	out := opts.Stdout
	if out == nil {
		out = io.Discard
	}
	if err := cfg.ResolveNetwork(opts.InterfaceAddrs); err != nil {
		return err
	}
	secrets, err := cfg.Finalize()
	if err != nil {
		return err
	}
	serverIP := cfg.Server()

	var closers []io.Closer
	defer func() {
		for _, c := range slices.Backward(closers) {
			if cerr := c.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
				err = errors.Join(err, cerr)
			}
		}
	}()

	// Boot decisions.
	var binaries fs.FS
	if cfg.TFTP.Root != "" {
		root, err := os.OpenRoot(cfg.TFTP.Root)
		if err != nil {
			return fmt.Errorf("tftp.root: %w", err)
		}
		closers = append(closers, root)
		binaries = root.FS()
	}
	hosts := make(map[string]*config.Host) // by target IQN
	bcfg := boot.Config{
		Unknown:        boot.Policy(cfg.UnknownHosts.Policy),
		HTTPPort:       cfg.HTTPPort(),
		ISCSIPort:      cfg.ISCSIPort(),
		PortalGroupTag: uint16(cfg.ISCSI.PortalGroupTag),
		Binaries:       binaries,
	}
	for i := range cfg.Hosts {
		h := &cfg.Hosts[i]
		hosts[h.TargetIQN] = h
		bcfg.Hosts = append(bcfg.Hosts, boot.Host{
			MAC: h.HardwareAddr(), Name: h.Name, Mode: boot.Mode(h.Boot),
			InitiatorIQN: h.InitiatorIQN, TargetIQN: h.TargetIQN, LUN: 0,
			CHAP: bootCreds(h.CHAP), MutualCHAP: bootCreds(h.MutualCHAP),
			Kernel: h.Kernel, Initrd: h.Initrd, Cmdline: h.Cmdline,
		})
	}
	booter, err := boot.New(bcfg)
	if err != nil {
		return err
	}

	// iSCSI: one target per host, its image as LUN 0, only its initiator.
	isrv := iscsi.New(iscsi.Config{
		PortalGroupTag: uint16(cfg.ISCSI.PortalGroupTag),
		Logger:         log,
		OnLogin:        loginLogger(log, hosts),
	})
	var devices []disk.Device
	for i := range cfg.Hosts {
		h := &cfg.Hosts[i]
		dev, err := disk.OpenFile(h.Image, false)
		if err != nil {
			return fmt.Errorf("hosts[%d] (%s): image: %w", i, h.MAC, err)
		}
		closers = append(closers, dev)
		devices = append(devices, dev)
		st := scsi.NewTarget(scsi.TargetConfig{Name: h.TargetIQN, RelTargetPort: 1, TargetPortGroup: 1})
		lu, err := scsi.NewLogicalUnit(dev, scsi.LUConfig{Serial: h.Name})
		if err != nil {
			return fmt.Errorf("hosts[%d] (%s): %w", i, h.MAC, err)
		}
		if err := st.AddLU(0, lu); err != nil {
			return err
		}
		if err := isrv.AddTarget(&iscsi.Target{
			Name: h.TargetIQN, SCSI: st,
			CHAP: iscsiCreds(h.CHAP), MutualCHAP: iscsiCreds(h.MutualCHAP),
			AllowedInitiators: []string{h.InitiatorIQN},
		}); err != nil {
			return err
		}
		log.Info("host", "mac", h.MAC, "host", h.Name, "image", h.Image, "bytes", dev.Size(),
			"iqn", h.InitiatorIQN, "target", h.TargetIQN, "boot", h.Boot, "chap", h.CHAP.Enabled)
	}

	// HTTP. Secrets only go to the address the kernel resolved to the
	// host's MAC on the served interface.
	arp := web.ARPTable{Interface: cfg.Interface}
	wsrv, err := web.New(web.Config{Booter: booter, Neighbors: arp, Logger: log})
	if err != nil {
		return err
	}

	// TFTP, with a log line per transfer naming the host.
	var tsrv *tftp.Server
	if cfg.TFTP.Enabled {
		// The root opened above for the boot decisions, when there is
		// one (closed with closers); else tftp's default directory.
		tsrv, err = tftp.New(tftp.Config{
			Dir: cfg.TFTP.Root, FS: binaries, Logger: log, DropWhenBusy: true,
			OnTransfer: func(ti tftp.TransferInfo) { logTransfer(log, booter, arp, ti) },
		})
		if err != nil {
			return fmt.Errorf("tftp: %w", err)
		}
	}

	// DHCP.
	var dsrv *dhcp.Server
	if cfg.DHCP.Mode != config.DHCPOff {
		dsrv, err = dhcp.NewServer(dhcpConfig(cfg, booter, log))
		if err != nil {
			return err
		}
	}

	// Open every socket before serving anything.
	iln, err := net.Listen("tcp", cfg.ISCSI.Listen)
	if err != nil {
		return fmt.Errorf("iscsi.listen: %w", err)
	}
	closers = append(closers, iln)
	hln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("http.listen: %w", err)
	}
	closers = append(closers, hln)
	var tconn net.PacketConn
	if tsrv != nil {
		if tconn, err = net.ListenPacket("udp4", net.JoinHostPort(serverIP.String(), "69")); err != nil {
			return fmt.Errorf("tftp: %w", err)
		}
		closers = append(closers, tconn)
	}
	var dconn, pxeconn net.PacketConn
	if dsrv != nil {
		if dconn, err = dhcp.Listen(cfg.Interface, dhcp.ServerPort); err != nil {
			return fmt.Errorf("dhcp: %w", err)
		}
		closers = append(closers, dconn)
		if cfg.DHCP.Mode == config.DHCPProxy {
			if pxeconn, err = dhcp.Listen(cfg.Interface, dhcp.PXEPort); err != nil {
				return fmt.Errorf("dhcp: %w", err)
			}
			closers = append(closers, pxeconn)
		}
	}
	// The RA answerer only saves clients time: without it (no IPv6, no
	// CAP_NET_RAW) everything still boots.
	var rsrv *ra.Server
	var rconn *ipv6.PacketConn
	if s, rerr := ra.New(ra.Config{Interface: cfg.Interface, Logger: log}); rerr != nil {
		log.Warn("not answering IPv6 router solicitations: iPXE waits for a router before it boots", "err", rerr)
	} else if c, rerr := ra.Listen(cfg.Interface); rerr != nil {
		log.Warn("not answering IPv6 router solicitations: iPXE waits for a router before it boots", "err", rerr)
	} else {
		rsrv, rconn = s, c
		closers = append(closers, c)
	}

	for _, s := range secrets {
		fmt.Fprintf(out, "generated CHAP secret (shown once, kept in %s): host=%s mac=%s %s user=%s secret=%s\n",
			cfg.DataDir, s.Host, s.MAC, s.Key, s.User, s.Secret)
	}
	log.Info("serving", "interface", cfg.Interface, "ip", serverIP.String(), "dhcp", cfg.DHCP.Mode,
		"http", hln.Addr().String(), "iscsi", iln.Addr().String(), "hosts", len(cfg.Hosts))

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(sctx)
	var order []shutdowner // in shutdown order
	g.Go(func() error { return isrv.Serve(gctx, iln) })
	g.Go(func() error { return wsrv.Serve(gctx, hln) })
	if tsrv != nil {
		g.Go(func() error { return tsrv.Serve(gctx, tconn) })
	}
	if dsrv != nil {
		g.Go(func() error { return dsrv.Serve(gctx, dconn) })
		if pxeconn != nil {
			g.Go(func() error { return dsrv.ServePXE(gctx, pxeconn) })
		}
		order = append(order, dsrv)
	}
	if rsrv != nil {
		g.Go(func() error { return rsrv.Serve(gctx, rconn) })
		order = append(order, rsrv)
	}
	if tsrv != nil {
		order = append(order, tsrv)
	}
	order = append(order, wsrv, isrv)

	// Wait for the end (signal) or a service failing, then stop all.
	<-gctx.Done()
	log.Info("shutting down")
	tctx, tcancel := context.WithTimeout(context.Background(), cmp.Or(opts.ShutdownTimeout, 10*time.Second))
	defer tcancel()
	for _, s := range order {
		if serr := s.Shutdown(tctx); serr != nil {
			log.Warn("shutdown incomplete", "err", serr)
		}
	}
	cancel()
	if gerr := g.Wait(); gerr != nil && !errors.Is(gerr, context.Canceled) {
		err = errors.Join(err, gerr)
	}
	for _, d := range devices {
		if ferr := d.Flush(); ferr != nil {
			err = errors.Join(err, ferr)
		}
	}
	return err
}

func bootCreds(c config.CHAP) *boot.Credentials {
	if !c.Enabled {
		return nil
	}
	return &boot.Credentials{User: c.User, Secret: c.Secret}
}

func iscsiCreds(c config.CHAP) *iscsi.Credentials {
	if !c.Enabled {
		return nil
	}
	return &iscsi.Credentials{User: c.User, Secret: c.Secret}
}

// dhcpConfig maps the dhcp section onto the DHCP server, with the Booter as
// its boot policy.
func dhcpConfig(cfg *config.Config, booter *boot.Booter, log *slog.Logger) dhcp.Config {
	serverIP := cfg.Server()
	ones, _ := cfg.DHCP.Mask().Size()
	dc := dhcp.Config{
		Mode:      dhcp.Mode(cfg.DHCP.Mode),
		Interface: cfg.Interface,
		ServerIP:  serverIP,
		Subnet:    netip.PrefixFrom(serverIP, ones).Masked(),
		Router:    cfg.DHCP.RouterAddr(),
		DNS:       cfg.DHCP.DNSAddrs(),
		LeaseTime: cfg.DHCP.LeaseTime,
		Logger:    log,
		Boot: func(ci dhcp.ClientInfo) (dhcp.Boot, bool) {
			file, ok := booter.DHCPBoot(ci.MAC, archCode(ci), ci.IPXE, ci.HTTPClient, serverIP)
			return dhcp.Boot{Filename: file}, ok
		},
	}
	if cfg.DHCP.Mode == config.DHCPFull {
		dc.PoolStart, dc.PoolEnd = cfg.DHCP.Pool()
		dc.LeaseFile = cfg.DHCP.LeaseFile
		for i := range cfg.Hosts {
			h := &cfg.Hosts[i]
			if ip := h.Reservation(); ip.IsValid() {
				dc.Reservations = append(dc.Reservations, dhcp.Reservation{MAC: h.HardwareAddr(), IP: ip, Hostname: h.Name})
			}
		}
	}
	return dc
}

// archCode is the option 93 value of a client; for one that sent none, the
// code of the architecture the DHCP server derived from its vendor class.
func archCode(ci dhcp.ClientInfo) uint16 {
	if ci.ArchCode >= 0 {
		return uint16(ci.ArchCode)
	}
	switch ci.Arch {
	case dhcp.ArchEFIIA32:
		return boot.ArchEFIIA32
	case dhcp.ArchEFIx64:
		return boot.ArchEFIx64BC
	case dhcp.ArchEFIARM32:
		return boot.ArchEFIARM32
	case dhcp.ArchEFIARM64:
		return boot.ArchEFIARM64
	case dhcp.ArchEFIIA32HTTP:
		return boot.ArchEFIIA32HTTP
	case dhcp.ArchEFIx64HTTP:
		return boot.ArchEFIx64HTTP
	case dhcp.ArchEFIARM32HTTP:
		return boot.ArchEFIARM32HTTP
	case dhcp.ArchEFIARM64HTTP:
		return boot.ArchEFIARM64HTTP
	case dhcp.ArchEFIRISCV64:
		return 27
	case dhcp.ArchEFIRISCV64HTTP:
		return 28
	case dhcp.ArchBIOSHTTP:
		return 20
	}
	return boot.ArchBIOS
}

// logTransfer logs a TFTP transfer under the MAC and name of the host that
// made it (the kernel's neighbour table knows the MAC: it answered the
// client's ARP to send the data).
func logTransfer(log *slog.Logger, booter *boot.Booter, arp web.Neighbors, ti tftp.TransferInfo) {
	args := []any{"ip", ti.Client.Addr().String(), "file", ti.File, "bytes", ti.Bytes,
		"blksize", ti.BlockSize, "windowsize", ti.WindowSize, "duration", ti.Duration.Round(time.Millisecond)}
	if mac, ok := arp.MACOf(ti.Client.Addr()); ok {
		args = append([]any{"mac", mac.String()}, args...)
		if h, ok := booter.Host(mac); ok {
			args = append(args, "host", h.Name)
		}
	}
	if ti.Err != nil {
		log.Warn("boot: TFTP transfer failed", append(args, "err", ti.Err)...)
		return
	}
	log.Info("boot: TFTP file", args...)
}

// loginLogger logs, for each iSCSI login, which host's target the
// initiator logged into: the boot stage an admin follows per MAC.
func loginLogger(log *slog.Logger, hosts map[string]*config.Host) func(iscsi.LoginEvent) {
	return func(e iscsi.LoginEvent) {
		h, ok := hosts[e.Target]
		if !ok {
			return
		}
		log.Info("boot: iSCSI login", "mac", h.MAC, "host", h.Name, "iqn", e.Initiator, "target", e.Target)
	}
}
