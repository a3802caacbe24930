//go:build ceph

package interop

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/diskless-boot/diskless/internal/api"
	"github.com/diskless-boot/diskless/internal/testutil/ceph"
	"github.com/diskless-boot/diskless/internal/testutil/served"
)

// TestConformanceRBDDisk runs libiscsi's conformance suite, with a second
// session, on a persistent host disk on Ceph RBD (an RBD clone of an empty
// 1 GiB version, on a single-node cluster): its READs are answered from
// librbd's completions, its other commands through librbd's asynchronous
// I/O. No test may do worse than on a raw file (TestConformance's
// verdicts; with none, no test may fail), but for PRE-FETCH: a disk
// offers it only when it can read ahead (disk.Prefetcher), and librbd has
// no read-ahead to ask for, so the command is reported unsupported and
// libiscsi skips its tests.
func TestConformanceRBDDisk(t *testing.T) {
	tool := conformanceTool(t)
	cl := ceph.Start(t)
	site := served.New(t, disklessBin)
	appendFile(t, site.Config, cl.StorageConfig())
	site.Start()
	site.CLI("image", "create", "scratch", "--size", "1G")
	var ch api.HostChange
	if err := json.Unmarshal(site.CLI("host", "add", "rbd", "--image", "scratch", "--disk", "persistent", "--no-mutual-chap", "--json"), &ch); err != nil {
		t.Fatal(err)
	}
	if out, err := cl.RBD(t.Context(), "info", cl.Pool+"/diskless.h.rbd.l1"); err != nil {
		t.Fatalf("the host's disk is not an RBD image: %v\n%s", err, out)
	}
	var base map[string]string
	if rawFileVerdicts != nil {
		base = map[string]string{}
		for name, v := range rawFileVerdicts {
			if !strings.HasPrefix(name, "Prefetch10.") && !strings.HasPrefix(name, "Prefetch16.") {
				base[name] = v
			}
		}
	}
	noWorseThan(t, "rbd", conformanceAsHost(t, tool, site, ch.Host, "rbd"), base)
}
