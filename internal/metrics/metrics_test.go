package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/diskless-boot/diskless/internal/api"
	"github.com/diskless-boot/diskless/internal/dhcp"
	"github.com/diskless-boot/diskless/internal/httplimit"
	"github.com/diskless-boot/diskless/internal/iscsi"
	"github.com/diskless-boot/diskless/internal/scsi"
	"github.com/diskless-boot/diskless/internal/tftp"
	"github.com/diskless-boot/diskless/internal/web"
)

func sources() Sources {
	return Sources{
		ISCSI: func() iscsi.Stats {
			return iscsi.Stats{Accepted: 7, RefusedPerSource: 3, NOPTimeouts: 2, TaskSetFullTarget: 1, Sessions: 2, MemoryUsed: 4096}
		},
		TFTP: func() tftp.Stats { return tftp.Stats{Requests: 5, Completed: 4, Busy: 1, BytesSent: 70000, Active: 1} },
		DHCP: func() dhcp.Stats {
			return dhcp.Stats{ByType: map[string]map[string]uint64{"DISCOVER": {"answered": 9}, "REQUEST": {"answered": 8, "no_offer": 1}}}
		},
		HTTP: func() web.Stats {
			return web.Stats{Scripts: 6, ScriptsRefused: 2, Limits: httplimit.Stats{RateLimited: 4}}
		},
		API: func() api.Stats { return api.Stats{Unauthenticated: 11, Forbidden: 3, AuditWriteFailures: 1} },
		Hosts: func() []Host {
			pc1 := Host{Name: "pc1", Online: true, Sessions: 1, DiskBytes: 8192,
				Commands: iscsi.CommandStats{ReadBytes: 1 << 20, WrittenBytes: 512}}
			// 3 READs within 50 us, 1 within 250 us; 2 commands of
			// other kinds slower than every bucket.
			pc1.Commands.Latency[iscsi.OpRead].Counts[0] = 3
			pc1.Commands.Latency[iscsi.OpRead].Counts[2] = 1
			pc1.Commands.Latency[iscsi.OpRead].Sum = 300 * time.Microsecond
			pc1.Commands.Latency[iscsi.OpOther].Counts[len(iscsi.LatencyBuckets)] = 2
			pc1.Commands.Latency[iscsi.OpOther].Sum = 20 * time.Second
			pc1.Commands.Errors[scsi.SenseIllegalRequest] = 5
			pc1.Commands.Refused[iscsi.RefusedTaskSetFull] = 2
			return []Host{pc1, {Name: "pc2"}}
		},
		StoreBytes: func() (int64, error) { return 65536, nil },
	}
}

func scrape(t *testing.T, src Sources) string {
	t.Helper()
	rec := httptest.NewRecorder()
	Handler(src).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("status %d", rec.Code)
	}
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

// The figures of the servers' Stats come out under their names and labels.
func TestScrape(t *testing.T) {
	out := scrape(t, sources())
	for _, want := range []string{
		"diskless_iscsi_connections_accepted_total 7",
		`diskless_iscsi_connections_refused_total{reason="per_source"} 3`,
		`diskless_iscsi_connections_timed_out_total{reason="nop"} 2`,
		`diskless_iscsi_task_set_full_total{bound="target"} 1`,
		"diskless_iscsi_sessions 2",
		"diskless_iscsi_command_memory_bytes 4096",
		`diskless_tftp_transfers_total{result="completed"} 4`,
		`diskless_tftp_requests_refused_total{reason="busy"} 1`,
		"diskless_tftp_sent_bytes_total 70000",
		`diskless_dhcp_packets_total{result="answered",type="DISCOVER"} 9`,
		`diskless_dhcp_packets_total{result="no_offer",type="REQUEST"} 1`,
		`diskless_http_scripts_total{result="refused"} 2`,
		`diskless_http_refused_total{reason="rate_limited"} 4`,
		`diskless_api_requests_refused_total{reason="unauthenticated"} 11`,
		`diskless_api_requests_refused_total{reason="forbidden"} 3`,
		"diskless_api_audit_write_failures_total 1",
		`diskless_host_online{host="pc1"} 1`,
		`diskless_host_online{host="pc2"} 0`,
		`diskless_host_read_bytes_total{host="pc1"} 1.048576e+06`,
		`diskless_host_disk_bytes{host="pc1"} 8192`,
		`diskless_host_command_duration_seconds_bucket{host="pc1",op="read",le="5e-05"} 3`,
		`diskless_host_command_duration_seconds_bucket{host="pc1",op="read",le="0.0001"} 3`,
		`diskless_host_command_duration_seconds_bucket{host="pc1",op="read",le="0.00025"} 4`,
		`diskless_host_command_duration_seconds_bucket{host="pc1",op="read",le="+Inf"} 4`,
		`diskless_host_command_duration_seconds_sum{host="pc1",op="read"} 0.0003`,
		`diskless_host_command_duration_seconds_count{host="pc1",op="read"} 4`,
		`diskless_host_command_duration_seconds_bucket{host="pc1",op="other",le="5"} 0`,
		`diskless_host_command_duration_seconds_count{host="pc1",op="other"} 2`,
		`diskless_host_command_errors_total{host="pc1",sense_key="ILLEGAL_REQUEST"} 5`,
		`diskless_host_commands_refused_total{host="pc1",status="task_set_full"} 2`,
		"diskless_store_bytes 65536",
		"process_cpu_seconds_total", "go_goroutines",
	} {
		if !strings.Contains(out, want+"\n") && !strings.Contains(out, want+" ") {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	// What did not happen adds no series: no writes, no other sense
	// key, no host without commands.
	for _, unwanted := range []string{`op="write"`, `sense_key="NO_SENSE"`, `status="busy"`,
		`diskless_host_command_duration_seconds_count{host="pc2"`} {
		if strings.Contains(out, unwanted) {
			t.Errorf("%s in:\n%s", unwanted, out)
		}
	}
}

// A service that does not run has no metrics.
func TestServiceOff(t *testing.T) {
	src := sources()
	src.DHCP, src.TFTP = nil, nil
	out := scrape(t, src)
	if strings.Contains(out, "diskless_dhcp_") || strings.Contains(out, "diskless_tftp_") {
		t.Errorf("metrics of services that do not run:\n%s", out)
	}
}

// Names, units and help follow Prometheus' conventions (promlint).
func TestLint(t *testing.T) {
	problems, err := testutil.CollectAndLint(collector{sources()})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}
