//go:build ceph

package pxe

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/testutil/ceph"
	"github.com/diskless-boot/diskless/internal/testutil/debimage"
)

// The diskless binary of this package's tests is built with the RBD
// backend too.
func init() { buildTags = []string{"ceph", "pacific"} }

// TestFailoverRBD is TestFailover with the disks where a site with several
// servers keeps them: on Ceph RBD (a single-node cluster in the storage
// namespace). The image is an RBD image with a protected snapshot, pc1 and
// pc2 persistent clones of it; only the active server holds a disk's
// exclusive lock, and B takes pc1's from the dead A by breaking it, which
// blocklists A's Ceph client: A's old connection could not write any more
// even if it came back to life.
func TestFailoverRBD(t *testing.T) {
	need(t, []string{"ip", "qemu-system-x86_64", "etcd", "ceph-mon", "ceph-osd"}, map[string]string{ipxeROM: "ipxe-qemu"})
	im := debimage.Get(t, e2eRecipe)
	var cl *ceph.Cluster
	c := newClusterSite(t, func(c *clusterSite) string {
		cl = ceph.StartIn(t, c.storNS, failoverStorage)
		return cl.StorageConfig()
	})
	c.storageName = "rbd"
	c.startA(true)
	c.startB(false)
	began := time.Now()
	c.cliA("image", "import", "debian", im.Disk, "--kernel", im.Kernel, "--initrd", im.Initrd, "--cmdline", im.Cmdline)
	t.Logf("image imported into RBD in %v", time.Since(began).Round(100*time.Millisecond))
	for _, h := range []struct{ name, mac string }{{"pc1", macPC1}, {"pc2", macPC2}} {
		c.cliA("host", "add", h.name, "--image", "debian", "--disk", "persistent", "--mac", h.mac)
	}
	ctx := context.Background()
	if out, err := cl.RBD(ctx, "info", cl.Pool+"/diskless.h.pc1.l1"); err != nil || !strings.Contains(out, "parent: "+cl.Pool+"/diskless.v.debian.1@v") {
		// The layout is the backend's; the test only wants a clone.
		out2, _ := cl.RBD(ctx, "ls", "-l", cl.Pool)
		t.Logf("pc1's disk is not the clone the test expected (%v):\n%s\n%s", err, out, out2)
	}
	clientA := clientOf(c.a.Output())
	failover(t, c)
	if clientA == "" {
		t.Errorf("A's Ceph client not logged")
	} else if out, err := cl.Ceph(ctx, "osd", "blocklist", "ls"); err != nil || !strings.Contains(out, clientA) {
		t.Errorf("A's old Ceph client %s is not blocklisted (%v):\n%s", clientA, err, out)
	} else {
		t.Logf("A's old Ceph client %s is blocklisted", clientA)
	}
}

var cephClient = regexp.MustCompile(`images and host disks in Ceph RBD.*client=(\S+)`)

// clientOf is the Ceph client address a server logged at its start.
func clientOf(log string) string {
	if m := cephClient.FindStringSubmatch(log); m != nil {
		return m[1]
	}
	return ""
}
