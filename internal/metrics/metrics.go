// Package metrics exports diskless' counters in the Prometheus text format.
// It keeps no counter of its own: at every scrape one collector reads the
// servers' Stats() and the hosts' sessions and disks, on a private registry
// (with the process and Go runtime collectors). Names and units follow
// Prometheus' conventions (diskless_ prefix, _total counters, _bytes);
// labels are bounded: a reason, a message type, a host's name - never an
// address, a connection or a block.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/diskless-boot/diskless/internal/api"
	"github.com/diskless-boot/diskless/internal/bootevent"
	"github.com/diskless-boot/diskless/internal/dhcp"
	"github.com/diskless-boot/diskless/internal/iscsi"
	"github.com/diskless-boot/diskless/internal/scsi"
	"github.com/diskless-boot/diskless/internal/tftp"
	"github.com/diskless-boot/diskless/internal/web"
)

// Sources are what a scrape reads; a nil one is a service not running
// (its metrics are left out).
type Sources struct {
	ISCSI func() iscsi.Stats
	TFTP  func() tftp.Stats
	DHCP  func() dhcp.Stats
	HTTP  func() web.Stats
	API   func() api.Stats
	Hosts func() []Host
	Boots func() bootevent.Stats
	// StoreBytes is the size of the state store's file.
	StoreBytes func() (int64, error)
}

// Host is one host's figures at scrape time.
type Host struct {
	Name     string
	Online   bool
	Sessions int
	// Commands are the counters of the host's iSCSI target: every
	// session since the server started (or the host was added), so a
	// reboot does not reset them. Zero before its first login.
	Commands  iscsi.CommandStats
	DiskBytes int64 // space its disk's own data takes (a copy-on-write disk: its writes)
	// State is the host's boot state (bootevent.States), "" if unknown.
	State string
}

// Handler serves the metrics of src.
func Handler(src Sources) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{src},
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector())
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// collector turns the sources into metrics at every scrape.
type collector struct{ src Sources }

// desc is one metric's name, help and label names.
func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("diskless_"+name, help, labels, nil)
}

var (
	iscsiAccepted = desc("iscsi_connections_accepted_total", "iSCSI connections taken in.")
	iscsiRefused  = desc("iscsi_connections_refused_total", "iSCSI connections closed at accept, by bound: per_source, total.", "reason")
	iscsiEvicted  = desc("iscsi_connections_evicted_total", "Logins under way and discovery sessions closed to make room at the connection bound.")
	iscsiTimedOut = desc("iscsi_connections_timed_out_total", "iSCSI connections closed for a time bound: login, discovery, first_command, nop, data_out.", "reason")
	iscsiTSF      = desc("iscsi_task_set_full_total", "Commands answered TASK SET FULL, by the memory bound they hit: session, target, total, reserved.", "bound")
	iscsiPanics   = desc("iscsi_panics_total", "iSCSI connection handlers that recovered from a panic.")
	iscsiConns    = desc("iscsi_connections", "Open iSCSI connections.")
	iscsiPending  = desc("iscsi_pending_connections", "Open iSCSI connections not in a normal session (login under way, discovery).")
	iscsiSessions = desc("iscsi_sessions", "Logged-in normal iSCSI sessions.")
	iscsiMemory   = desc("iscsi_command_memory_bytes", "Data buffer bytes held by iSCSI commands.")

	tftpRequests    = desc("tftp_requests_total", "TFTP requests parsed, duplicates and refused ones included.")
	tftpRefused     = desc("tftp_requests_refused_total", "TFTP requests turned away: busy, source_busy, error (answered with an ERROR), duplicate (ignored).", "reason")
	tftpTransfers   = desc("tftp_transfers_total", "TFTP transfers ended, by result: completed, aborted, timed_out, failed, preempted, expired.", "result")
	tftpRetransmits = desc("tftp_retransmits_total", "TFTP OACK and DATA packets sent again.")
	tftpSent        = desc("tftp_sent_bytes_total", "TFTP payload bytes acknowledged by clients.")
	tftpMalformed   = desc("tftp_malformed_packets_total", "TFTP packets dropped: unparsable or unexpected.")
	tftpActive      = desc("tftp_transfers_active", "TFTP transfers running.")

	dhcpPackets     = desc("dhcp_packets_total", "DHCP packets received, by message type and what became of them.", "type", "result")
	dhcpShed        = desc("dhcp_shed_packets_total", "DHCP packets of unknown clients dropped unread while every worker was busy.")
	dhcpLeaseWrites = desc("dhcp_lease_writes_total", "Writes of the DHCP lease file.")

	httpScripts = desc("http_scripts_total", "iPXE scripts asked for, by result: served, refused.", "result")
	httpFiles   = desc("http_files_total", "Kernels, initrds and binaries sent (or begun) over HTTP.")
	httpLimited = desc("http_refused_total", "Boot HTTP connections and requests refused or cut by the bounds: per_source, total, evicted, rate_limited, too_large.", "reason")

	apiRefused       = desc("api_requests_refused_total", "Admin API requests refused for their token: unauthenticated (none or unknown), forbidden (a change with a read-only token). Not in the audit log.", "reason")
	apiAuditFailures = desc("api_audit_write_failures_total", "Changes made through the API whose audit entry could not be written.")

	hostOnline   = desc("host_online", "1 when the host has an iSCSI session.", "host")
	hostSessions = desc("host_sessions", "The host's logged-in iSCSI sessions.", "host")
	hostRead     = desc("host_read_bytes_total", "Bytes the host read from its disk (READs that ended GOOD).", "host")
	hostWritten  = desc("host_written_bytes_total", "Bytes the host wrote to its disk (WRITEs that ended GOOD).", "host")
	hostLatency  = desc("host_command_duration_seconds", "Time from a SCSI command's arrival to its response written to the socket, by kind: read, write, other.", "host", "op")
	hostErrors   = desc("host_command_errors_total", "SCSI commands answered CHECK CONDITION, by sense key (SPC-4 names: ILLEGAL_REQUEST, UNIT_ATTENTION, MEDIUM_ERROR, ...).", "host", "sense_key")
	hostRefused  = desc("host_commands_refused_total", "SCSI commands the target did not run, by status: busy, reservation_conflict, task_set_full, aca_active, task_aborted.", "host", "status")
	hostDisk     = desc("host_disk_bytes", "Space the host's disk's own data takes (a copy-on-write disk: its writes).", "host")
	hostsByState = desc("hosts", "Hosts by boot state: offline, booting, online, failed, stuck.", "state")

	bootsStarted   = desc("boots_started_total", "Network boots of hosts begun (a DHCP, script or iPXE login step after the last boot ended).")
	bootsCompleted = desc("boots_completed_total", "Network boots that reached the operating system's iSCSI login (root mounted).")
	bootsFailed    = desc("boots_failed_total", "Network boots that failed, by the stage they reached and why: reported (by the iPXE script), login (iSCSI login refused), stuck.", "stage", "reason")
	bootEvents     = desc("boot_events_total", "Boot steps seen, by stage.", "stage")
	bootDuration   = desc("boot_duration_seconds", "Time from a boot's first step to the operating system's iSCSI login.")
	bootStreamCut  = desc("boot_event_streams_cut_total", "Live event streams (web console, API) cut off for lagging behind.")

	storeBytes = desc("store_bytes", "Size of the state store's file (bbolt grows it ahead of its data).")
)

// latencyBounds are iscsi.LatencyBuckets in seconds.
var latencyBounds = func() []float64 {
	b := make([]float64, len(iscsi.LatencyBuckets))
	for i, d := range iscsi.LatencyBuckets {
		b[i] = d.Seconds()
	}
	return b
}()

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{iscsiAccepted, iscsiRefused, iscsiEvicted, iscsiTimedOut, iscsiTSF, iscsiPanics,
		iscsiConns, iscsiPending, iscsiSessions, iscsiMemory, tftpRequests, tftpRefused, tftpTransfers, tftpRetransmits,
		tftpSent, tftpMalformed, tftpActive, dhcpPackets, dhcpShed, dhcpLeaseWrites, httpScripts, httpFiles, httpLimited,
		apiRefused, apiAuditFailures, hostOnline, hostSessions, hostRead, hostWritten, hostLatency, hostErrors,
		hostRefused, hostDisk, hostsByState, bootsStarted, bootsCompleted, bootsFailed, bootEvents, bootDuration,
		bootStreamCut, storeBytes} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if c.src.ISCSI != nil {
		s := c.src.ISCSI()
		counter(iscsiAccepted, s.Accepted)
		counter(iscsiRefused, s.RefusedPerSource, "per_source")
		counter(iscsiRefused, s.RefusedTotal, "total")
		counter(iscsiEvicted, s.Evicted)
		counter(iscsiTimedOut, s.LoginTimeouts, "login")
		counter(iscsiTimedOut, s.DiscoveryTimeouts, "discovery")
		counter(iscsiTimedOut, s.FirstCommandTimeouts, "first_command")
		counter(iscsiTimedOut, s.NOPTimeouts, "nop")
		counter(iscsiTimedOut, s.DataOutTimeouts, "data_out")
		counter(iscsiTSF, s.TaskSetFullSession, "session")
		counter(iscsiTSF, s.TaskSetFullTarget, "target")
		counter(iscsiTSF, s.TaskSetFullTotal, "total")
		counter(iscsiTSF, s.TaskSetFullReserved, "reserved")
		counter(iscsiPanics, s.Panics)
		gauge(iscsiConns, float64(s.Connections))
		gauge(iscsiPending, float64(s.Pending))
		gauge(iscsiSessions, float64(s.Sessions))
		gauge(iscsiMemory, float64(s.MemoryUsed))
	}
	if c.src.TFTP != nil {
		s := c.src.TFTP()
		counter(tftpRequests, s.Requests)
		counter(tftpRefused, s.Busy, "busy")
		counter(tftpRefused, s.SourceBusy, "source_busy")
		counter(tftpRefused, s.Refused, "error")
		counter(tftpRefused, s.Duplicates, "duplicate")
		counter(tftpTransfers, s.Completed, "completed")
		counter(tftpTransfers, s.Aborted, "aborted")
		counter(tftpTransfers, s.TimedOut, "timed_out")
		counter(tftpTransfers, s.Failed, "failed")
		counter(tftpTransfers, s.Preempted, "preempted")
		counter(tftpTransfers, s.Expired, "expired")
		counter(tftpRetransmits, s.Retransmits)
		counter(tftpSent, s.BytesSent)
		counter(tftpMalformed, s.Malformed)
		gauge(tftpActive, float64(s.Active))
	}
	if c.src.DHCP != nil {
		s := c.src.DHCP()
		for typ, results := range s.ByType {
			for result, n := range results {
				counter(dhcpPackets, n, typ, result)
			}
		}
		counter(dhcpShed, s.Shed)
		counter(dhcpLeaseWrites, s.LeaseWrites)
	}
	if c.src.HTTP != nil {
		s := c.src.HTTP()
		counter(httpScripts, s.Scripts, "served")
		counter(httpScripts, s.ScriptsRefused, "refused")
		counter(httpFiles, s.Files)
		l := s.Limits
		counter(httpLimited, l.RefusedPerSource, "per_source")
		counter(httpLimited, l.RefusedTotal, "total")
		counter(httpLimited, l.Evicted, "evicted")
		counter(httpLimited, l.RateLimited, "rate_limited")
		counter(httpLimited, l.TooLarge, "too_large")
	}
	if c.src.Boots != nil {
		s := c.src.Boots()
		counter(bootsStarted, s.Started)
		counter(bootsCompleted, s.Completed)
		for k, n := range s.Failed {
			counter(bootsFailed, n, string(k.Stage), k.Reason)
		}
		for i, st := range bootevent.Stages {
			counter(bootEvents, s.Reached[i], string(st))
		}
		ch <- prometheus.MustNewConstHistogram(bootDuration, s.Completed, s.DurationSum,
			cumulative(bootevent.DurationBuckets, s.DurationCounts))
		counter(bootStreamCut, s.SubscribersCut)
	}
	if c.src.API != nil {
		s := c.src.API()
		counter(apiRefused, s.Unauthenticated, "unauthenticated")
		counter(apiRefused, s.Forbidden, "forbidden")
		counter(apiAuditFailures, s.AuditWriteFailures)
	}
	if c.src.Hosts != nil {
		states := map[string]int{}
		for _, st := range bootevent.States {
			states[st] = 0
		}
		for _, h := range c.src.Hosts() {
			if h.State != "" {
				states[h.State]++
			}
			online := 0.0
			if h.Online {
				online = 1
			}
			gauge(hostOnline, online, h.Name)
			gauge(hostSessions, float64(h.Sessions), h.Name)
			counter(hostRead, h.Commands.ReadBytes, h.Name)
			counter(hostWritten, h.Commands.WrittenBytes, h.Name)
			gauge(hostDisk, float64(h.DiskBytes), h.Name)
			collectCommands(ch, h.Name, &h.Commands)
		}
		for st, n := range states {
			gauge(hostsByState, float64(n), st)
		}
	}
	if c.src.StoreBytes != nil {
		if n, err := c.src.StoreBytes(); err == nil {
			gauge(storeBytes, float64(n))
		}
	}
}

// collectCommands sends a host's command metrics. Only what happened is
// sent (a kind of command once seen, a sense key once answered): a host
// that never booted adds no series, and one that did keeps them, since
// its counters only grow.
func collectCommands(ch chan<- prometheus.Metric, host string, st *iscsi.CommandStats) {
	for op := range iscsi.NumOps {
		l := &st.Latency[op]
		n := l.Count()
		if n == 0 {
			continue
		}
		ch <- prometheus.MustNewConstHistogram(hostLatency, n, l.Sum.Seconds(), cumulative(latencyBounds, l.Counts[:]),
			host, op.String())
	}
	for k, n := range st.Errors {
		if n > 0 {
			ch <- prometheus.MustNewConstMetric(hostErrors, prometheus.CounterValue, float64(n), host, scsi.SenseKey(k).String())
		}
	}
	for r, n := range st.Refused {
		if n > 0 {
			ch <- prometheus.MustNewConstMetric(hostRefused, prometheus.CounterValue, float64(n), host, iscsi.RefusedStatus(r).String())
		}
	}
}

// cumulative turns per-bucket counts (counts[i]: observations at most
// bounds[i] and above the bound before) into Prometheus' cumulative
// buckets; a count past the last bound is left to the histogram's total.
func cumulative(bounds []float64, counts []uint64) map[float64]uint64 {
	buckets := make(map[float64]uint64, len(bounds))
	var cum uint64
	for i, le := range bounds {
		cum += counts[i]
		buckets[le] = cum
	}
	return buckets
}
