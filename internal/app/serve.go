package app

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/net/ipv6"
	"golang.org/x/sync/errgroup"

	"github.com/diskless-boot/diskless/internal/activation"
	"github.com/diskless-boot/diskless/internal/api"
	"github.com/diskless-boot/diskless/internal/boot"
	"github.com/diskless-boot/diskless/internal/bootevent"
	"github.com/diskless-boot/diskless/internal/cluster"
	"github.com/diskless-boot/diskless/internal/config"
	"github.com/diskless-boot/diskless/internal/dhcp"
	"github.com/diskless-boot/diskless/internal/fsutil"
	"github.com/diskless-boot/diskless/internal/inventory"
	"github.com/diskless-boot/diskless/internal/iscsi"
	"github.com/diskless-boot/diskless/internal/metrics"
	"github.com/diskless-boot/diskless/internal/ra"
	"github.com/diskless-boot/diskless/internal/store"
	"github.com/diskless-boot/diskless/internal/store/etcdstore"
	"github.com/diskless-boot/diskless/internal/tftp"
	"github.com/diskless-boot/diskless/internal/ui"
	"github.com/diskless-boot/diskless/internal/web"
)

// ServeOptions configures RunServe.
type ServeOptions struct {
	// Config is a validated configuration, from config.Load or
	// config.FromQuickFlags. RunServe resolves it against the interface.
	Config *config.Config
	// Logger receives every service's logs (default: discard).
	Logger *slog.Logger
	// InterfaceAddrs looks up the interface's addresses (default: the
	// running system's).
	InterfaceAddrs config.InterfaceAddrs
	// ShutdownTimeout bounds the graceful shutdown (default 10 s).
	ShutdownTimeout time.Duration
	// Neighbors replaces the kernel's neighbour table for the HTTP
	// server's "is this request from that host" check (tests).
	Neighbors web.Neighbors
	// ListenDHCP opens the DHCP sockets on the interface (default
	// dhcp.Listen; tests pass loopback sockets).
	ListenDHCP func(iface string, port int) (net.PacketConn, error)
	// Ready, when set, is called once every socket is open and every
	// host served, with the API's base URL.
	Ready func(apiURL string)
	// Sockets are the listening sockets a service manager handed over
	// (activation.FromEnv): the iSCSI, HTTP and API listeners whose
	// address they are bound to are taken from it (default: none).
	Sockets *activation.Set
	// ConfigFile is the file Config was loaded from, read again at each
	// Reload request ("" when it came from flags: nothing to re-read).
	ConfigFile string
	// Reload requests a re-read of ConfigFile (SIGHUP): what can change
	// while serving is applied, the rest is logged (reload.go). Reloaded,
	// when set, is called after each with its outcome.
	Reload   <-chan struct{}
	Reloaded func(error)
	// TraceDir, when set, records every host's READs and WRITEs there, a
	// file per host and boot (--trace-io; iscsi.Config.TraceDir). Off by
	// default.
	TraceDir string
}

// shutdowner is what every server has.
type shutdowner interface {
	Shutdown(ctx context.Context) error
}

// ServerFile is written in data_dir while a server runs: where its API is,
// for the CLI on the same machine.
const ServerFile = "server.json"

// ServerRecord is the content of ServerFile.
type ServerRecord struct {
	API string `json:"api"` // base URL, e.g. http://127.0.0.1:8080
	PID int    `json:"pid"`
}

// RunServe runs every service of `diskless serve` on the configured
// interface until ctx is done: the iSCSI target (one target per host, its
// disk as LUN 0), HTTP (iPXE scripts) with the admin API, TFTP (iPXE
// binaries), DHCP and the IPv6 router-solicitation answerer, with the
// hosts and images of the state store in data_dir (the configuration's
// declared ones added to it). Everything is checked and every socket
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
	// The file as loaded, before the interface fills in defaults: what a
	// reload compares the file read again with.
	loaded := *cfg
	if err := cfg.ResolveNetwork(opts.InterfaceAddrs); err != nil {
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
	sockets := opts.Sockets
	if sockets == nil {
		sockets = &activation.Set{}
	}
	closers = append(closers, sockets)
	// A cluster's servers bind the floating address whether they hold it
	// or not: the active one answers on it, the others once they take it.
	sockets.Freebind = cfg.Cluster.Enabled()
	listen := func(what, addr string) (net.Listener, error) {
		l, inherited, err := sockets.Listen(addr)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		if inherited {
			log.Info("listening on a socket the service manager kept open", "listen", what, "addr", l.Addr().String())
		}
		closers = append(closers, l)
		return l, nil
	}

	// The supervisor and the cluster membership come after the site; the
	// disks' fencing asks them (cluster.go).
	var (
		sup  *supervisor
		node *cluster.Node
	)
	fence := fencing{node: &node, sup: &sup, log: log, fatal: make(chan error, 1)}
	site, err := OpenSite(ctx, cfg.DataDir, SiteOptions{IQNBase: cfg.IQNBase, Logger: log, Store: cfg.Store, Storage: cfg.Storage,
		MayBreakLock: fence.mayBreakLock, OnFenced: fence.onFenced})
	if err != nil {
		return err
	}
	closers = append(closers, site)
	// A host may be running while the server starts (it lost its sessions
	// with the last one): what the file changes of its disk waits for its
	// next boot.
	site.Inv.SetRuntime(inventory.StartingUp{})
	secrets, err := declare(ctx, site, cfg, log)
	if err != nil {
		return err
	}
	enroll, err := setupEnroll(site.Inv, cfg, log)
	if err != nil {
		return err
	}
	token, err := api.EnsureToken(site.Store, site.Dir)
	if err != nil {
		return err
	}

	// Boot decisions; the supervisor fills in the hosts.
	var binaries fs.FS
	if cfg.TFTP.Root != "" {
		root, err := os.OpenRoot(cfg.TFTP.Root)
		if err != nil {
			return fmt.Errorf("tftp.root: %w", err)
		}
		closers = append(closers, root)
		binaries = root.FS()
	}
	booter, err := boot.New(boot.Config{
		Unknown:        bootPolicy(cfg.UnknownHosts.Policy),
		Registry:       boot.NewRegistry(inventory.MaxUnknown, nil), // as many as the store keeps
		HTTPPort:       cfg.HTTPPort(),
		ISCSIPort:      cfg.ISCSIPort(),
		PortalGroupTag: uint16(cfg.ISCSI.PortalGroupTag),
		Binaries:       binaries,
	})
	if err != nil {
		return err
	}

	// The target's defaults bound every client (connections per source
	// and in total, login, discovery and Data-Out time, memory per host).
	icfg := iscsi.Defaults()
	icfg.PortalGroupTag = uint16(cfg.ISCSI.PortalGroupTag)
	icfg.Logger = log
	icfg.TraceDir = opts.TraceDir
	icfg.OnLogin = func(e iscsi.LoginEvent) { sup.login(e) }
	icfg.OnLoginFailed = func(f iscsi.LoginFailure) { sup.loginFailed(f) }
	icfg.Admit = func(target, initiator string) error { return sup.admit(target, initiator) }
	isrv := iscsi.New(icfg)
	sup = newSupervisor(site.Inv, isrv, booter, log)
	sup.onDemand = cfg.Cluster.Enabled()
	var cdhcp *clusterDHCP // the active server's DHCP
	if cfg.Cluster.Enabled() {
		cdhcp = &clusterDHCP{log: log}
		if node, err = newClusterNode(cfg, site, sup, cdhcp, log); err != nil {
			return err
		}
		cdhcp.node = node
		sup.active, sup.leader = node.Active, func() string { return leaderName(ctx, node) }
	}
	// Boot telemetry: every server's boot steps, one timeline per boot.
	sup.events = bootevent.New(bootevent.Config{Recorder: site.Inv, StuckAfter: cfg.Boots.StuckAfter, Logger: log})

	var neighbors web.Neighbors = web.ARPTable{Interface: cfg.Interface}
	if opts.Neighbors != nil {
		neighbors = opts.Neighbors
	}
	sup.neighbors = neighbors

	// TFTP, each transfer a boot event naming the host.
	var tsrv *tftp.Server
	if cfg.TFTP.Enabled {
		tsrv, err = tftp.New(tftp.Config{Dir: cfg.TFTP.Root, FS: binaries, Logger: log, OnTransfer: sup.tftpTransfer})
		if err != nil {
			return fmt.Errorf("tftp: %w", err)
		}
	}

	// DHCP.
	var dsrv *dhcp.Server
	if cfg.DHCP.Mode != config.DHCPOff {
		dc := dhcpConfig(cfg, booter, sup, enroll, log)
		if cdhcp != nil {
			// One server of a cluster answers, the active one, from the
			// leases all share.
			dc.Answering = cdhcp.answering
			dc.LeaseFile, dc.LeaseStore = "", storeLeases{store: site.Store.(*etcdstore.Store), guard: node.LeaderGuard}
		}
		dsrv, err = dhcp.NewServer(dc)
		if err != nil {
			return err
		}
		if cdhcp != nil {
			cdhcp.srv = dsrv
		}
		if cfg.DHCP.Mode == config.DHCPFull {
			sup.dhcp = dsrv
		}
		sup.dhcpOn = true
	}

	// HTTP. Secrets only go to the address the kernel resolved to the
	// host's MAC on the served interface and, when diskless hands out the
	// addresses, to the one its DHCP leased to that MAC: both must agree.
	// Only such a request starts a host's new boot.
	var leases web.Leases
	if sup.dhcp != nil {
		leases = web.LeaseFunc(sup.leasedTo)
	}
	wsrv, err := web.New(web.Config{Booter: booter, Neighbors: neighbors, Leases: leases, Logger: log, BeginBoot: sup.beginBoot,
		Events: sup.emit})
	if err != nil {
		return err
	}
	site.Inv.SetRuntime(sup)
	// A store other servers share: their changes are applied here too
	// (watch.go). The watch starts before the hosts are loaded.
	var applyWatched func()
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	if w, ok := site.Store.(store.Watcher); ok {
		if applyWatched, err = sup.watchHosts(wctx, w); err != nil {
			return err
		}
	}
	if err := sup.start(); err != nil {
		return err
	}
	defer sup.stop()
	if applyWatched != nil {
		watchDone := make(chan struct{})
		go func() { applyWatched(); close(watchDone) }()
		// Before sup.stop: no sync may reopen a disk it closed.
		defer func() { wcancel(); <-watchDone }()
	}

	// The admin API, on the HTTP listener or its own.
	var apiH *api.Handler // made below, read at scrape time
	msrc := metrics.Sources{ISCSI: isrv.Stats, HTTP: wsrv.Stats, Hosts: sup.metricsHosts, Boots: sup.events.Stats,
		API: func() api.Stats { return apiH.Stats() }}
	if b, ok := site.Store.(*store.Bolt); ok {
		// etcd's size is the cluster's business (its own metrics).
		msrc.StoreBytes = b.Size
	}
	if tsrv != nil {
		msrc.TFTP = tsrv.Stats
	}
	if dsrv != nil {
		msrc.DHCP = dsrv.Stats
	}
	apiH, err = api.New(api.Config{Inventory: site.Inv, Status: sup, Logger: log, Context: ctx, Metrics: metrics.Handler(msrc),
		Server: api.ServerInfo{Address: serverIP, HTTPPort: cfg.HTTPPort(), ISCSIPort: cfg.ISCSIPort(), PortalGroupTag: uint16(cfg.ISCSI.PortalGroupTag)},
		Import: OpenImport, Inspect: InspectImport, Export: ExportImage})
	if err != nil {
		return err
	}

	// Open every socket before serving anything.
	iln, err := listen("iscsi.listen", cfg.ISCSI.Listen)
	if err != nil {
		return err
	}
	hln, err := listen("http.listen", cfg.HTTP.Listen)
	if err != nil {
		return err
	}
	// The admin plane: the API, its metrics and the web console, on the
	// HTTP listener or on api.listen alone.
	uiH, err := ui.New(ui.Config{API: apiH, Logger: log})
	if err != nil {
		return err
	}
	apiLn := hln
	var asrv *api.Server
	if cfg.API.Listen != "" {
		if apiLn, err = listen("api.listen", cfg.API.Listen); err != nil {
			return err
		}
		admin := http.NewServeMux()
		mountAdmin(admin.Handle, apiH, uiH)
		admin.Handle("GET /{$}", http.RedirectHandler(ui.Prefix, http.StatusSeeOther))
		asrv = api.NewServer(admin, api.ServerConfig{Logger: log})
	} else {
		mountAdmin(wsrv.Mount, apiH, uiH)
	}
	var tconn net.PacketConn
	if tsrv != nil {
		lc := net.ListenConfig{}
		if sockets.Freebind {
			lc.Control = activation.FreebindControl
		}
		if tconn, err = lc.ListenPacket(ctx, "udp4", net.JoinHostPort(serverIP.String(), "69")); err != nil {
			return fmt.Errorf("tftp: %w", err)
		}
		closers = append(closers, tconn)
	}
	var dconn, pxeconn net.PacketConn
	if dsrv != nil {
		listen := dhcp.Listen
		if opts.ListenDHCP != nil {
			listen = opts.ListenDHCP
		}
		if dconn, err = listen(cfg.Interface, dhcp.ServerPort); err != nil {
			return fmt.Errorf("dhcp: %w", err)
		}
		closers = append(closers, dconn)
		if cfg.DHCP.Mode == config.DHCPProxy {
			if pxeconn, err = listen(cfg.Interface, dhcp.PXEPort); err != nil {
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

	if unused := sockets.Unused(); len(unused) > 0 {
		log.Warn("closed sockets the service manager handed over that no listen address names", "addrs", unused)
	}

	logSecrets(log, secrets)
	if token != "" {
		log.Info("API token made; the CLI on this machine reads it, others pass it with --token", "file", filepath.Join(site.Dir, api.TokenFile))
	}
	apiURL := "http://" + loopbackFor(apiLn.Addr())
	if err := writeServerFile(site.Dir, apiURL); err != nil {
		return err
	}
	defer os.Remove(filepath.Join(site.Dir, ServerFile))
	hostCount := 0
	if hs, err := site.Inv.Hosts(); err == nil {
		hostCount = len(hs)
	}
	log.Info("serving", "interface", cfg.Interface, "ip", serverIP.String(), "dhcp", cfg.DHCP.Mode,
		"http", hln.Addr().String(), "api", apiURL+api.Prefix, "iscsi", iln.Addr().String(), "hosts", hostCount)

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	unknownDone, eventsDone := make(chan struct{}), make(chan struct{})
	go func() { sup.keepUnknown(sctx); close(unknownDone) }()
	go func() { sup.events.Run(sctx); close(eventsDone) }()
	defer func() { cancel(); <-unknownDone; <-eventsDone }()
	if node != nil {
		log.Info("cluster: member; the active server holds the floating address", "addr", cfg.Cluster.Address,
			"member", cfg.Cluster.Name, "lease", cmp.Or(cfg.Cluster.Lease, cluster.DefaultTTL))
		clusterDone := runCluster(sctx, node)
		defer func() { cancel(); clusterDone() }()
	}
	g, gctx := errgroup.WithContext(sctx)
	var order []shutdowner // in shutdown order
	g.Go(func() error { return isrv.Serve(gctx, iln) })
	g.Go(func() error {
		select {
		case err := <-fence.fatal:
			return err
		case <-gctx.Done():
			return nil
		}
	})
	g.Go(func() error { return wsrv.Serve(gctx, hln) })
	if asrv != nil {
		g.Go(func() error { return asrv.Serve(gctx, apiLn) })
	}
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
	order = append(order, wsrv)
	if asrv != nil {
		order = append(order, asrv)
	}
	order = append(order, isrv)
	if opts.Ready != nil {
		opts.Ready(apiURL)
	}

	// Wait for the end (signal) or a service failing, re-reading the
	// configuration when asked, then stop all.
	rl := &reloader{file: opts.ConfigFile, started: &loaded, site: site, log: log}
	rl.serve(gctx, opts.Reload, opts.Reloaded)
	log.Info("shutting down")
	tctx, tcancel := context.WithTimeout(context.Background(), cmp.Or(opts.ShutdownTimeout, 10*time.Second))
	defer tcancel()
	for _, s := range order {
		if serr := s.Shutdown(tctx); serr != nil {
			log.Warn("shutdown incomplete", "err", serr)
		}
	}
	cancel()
	// A server shut down before its Serve began says net.ErrClosed: that
	// is a clean stop too.
	if gerr := g.Wait(); gerr != nil && !errors.Is(gerr, context.Canceled) && !errors.Is(gerr, net.ErrClosed) {
		err = errors.Join(err, gerr)
	}
	return err
}

// mountAdmin mounts the admin plane's handlers with mount.
func mountAdmin(mount func(pattern string, h http.Handler), apiH *api.Handler, uiH *ui.Handler) {
	mount(api.Prefix+"/", apiH)
	mount("GET "+api.MetricsPath, apiH)
	mount(ui.Prefix, uiH)
}

// loopbackFor is the address the CLI on this machine reaches a listener
// at: a wildcard listener through loopback.
func loopbackFor(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	if ta.IP.IsUnspecified() {
		return net.JoinHostPort("127.0.0.1", fmt.Sprint(ta.Port))
	}
	return ta.String()
}

func writeServerFile(dir, apiURL string) error {
	b, _ := json.Marshal(ServerRecord{API: apiURL, PID: os.Getpid()})
	return fsutil.WriteFileAtomic(filepath.Join(dir, ServerFile), append(b, '\n'), 0o600)
}

// dhcpConfig maps the dhcp section onto the DHCP server, with the Booter as
// its boot policy (and enroll, when not nil, making hosts of new machines).
func dhcpConfig(cfg *config.Config, booter *boot.Booter, sup *supervisor, enroll *enroller, log *slog.Logger) dhcp.Config {
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
		OnReply:   sup.dhcpReply,
		Boot: func(ci dhcp.ClientInfo) (dhcp.Boot, bool) {
			code := archCode(ci)
			h, ok, answer := enroll.hostFor(booter, ci.MAC, code)
			if !answer {
				return dhcp.Boot{}, false
			}
			if ok {
				sup.sawNetboot(ci.MAC, h.Name, code)
			}
			file, ok := booter.DHCPBoot(ci.MAC, code, ci.IPXE, ci.HTTPClient, serverIP)
			return dhcp.Boot{Filename: file}, ok
		},
	}
	if cfg.DHCP.Mode == config.DHCPFull {
		// Reservations come from the hosts in the store: the supervisor
		// sets them when it serves them, and again when they change.
		dc.PoolStart, dc.PoolEnd = cfg.DHCP.Pool()
		dc.LeaseFile = cfg.DHCP.LeaseFile
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
