package interop

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLinuxInitiator runs the Linux kernel initiator (open-iscsi) in a QEMU
// guest against the target, with CHAP and with mutual CHAP. The guest's /init
// (scripts/guest-init.sh) logs in with iscsistart, makes an ext4 file system
// on the LUN, writes files and prints their sha256 (DISKLESS-SUM1), logs out
// through iscsid + iscsiadm, logs in again with iscsiadm, runs e2fsck -fn,
// checks and prints the sha256 again (DISKLESS-SUM2) and prints
// DISKLESS-GUEST-PASS. The test then reads the files out of the image file on
// the host (debugfs), so the data provably went through the target to disk.
// The mutual CHAP guest insists on CRC32C header and data digests, checked
// in the target's log for every login.
func TestLinuxInitiator(t *testing.T) {
	needPeers(t, "qemu-system-x86_64", "busybox", "iscsistart", "iscsid", "iscsiadm",
		"mke2fs", "e2fsck", "debugfs", "apt-get", "dpkg-deb", "cpio")
	kernel, initrd := guestBundle(t)

	mutual := &creds{"disk1-target", "target-secret-4567"}
	cases := []struct {
		name    string
		mutual  *creds // target side
		tsecret string // what the guest expects the target to answer with
		digest  bool   // the guest insists on CRC32C header and data digests
		fails   string // when the login must fail: the guest's failure line
		why     string // and iscsistart's reason
	}{
		{name: "chap"},
		{name: "mutual-chap-crc32c", mutual: mutual, tsecret: mutual.Secret, digest: true},
		{name: "wrong-target-secret", mutual: mutual, tsecret: "not-the-secret-9",
			fails: "DISKLESS-GUEST-FAIL: iscsistart login", why: "received incorrect CHAP response from target"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			chap := &creds{"linux-user", "linux-secret-0123"}
			img := filepath.Join(t.TempDir(), "disk.img")
			if err := os.Truncate(createFile(t, img), 64<<20); err != nil {
				t.Fatal(err)
			}
			tg := startTarget(t, targetConfig{LUNs: []lunConfig{{Path: img}}, CHAP: chap, MutualCHAP: tc.mutual})

			params := []string{"console=ttyS0", "panic=-1", "quiet",
				"dl.addr=10.0.2.2",
				fmt.Sprintf("dl.port=%d", tg.Port),
				"dl.iqn=" + tg.IQN,
				"dl.tpgt=1",
				"dl.initiator=iqn.2026-11.org.example:linux-client",
				"dl.user=" + chap.User, "dl.secret=" + chap.Secret,
			}
			if tc.mutual != nil {
				params = append(params, "dl.tuser="+tc.mutual.User, "dl.tsecret="+tc.tsecret)
			}
			if tc.digest {
				params = append(params, "dl.digest=crc32c")
			}
			v := startVM(t, "-m", "512",
				"-kernel", kernel, "-initrd", initrd,
				"-append", strings.Join(params, " "),
				"-netdev", "user,id=n0",
				"-device", "e1000,netdev=n0")
			i, _, err := v.WaitFor(5*time.Minute, "DISKLESS-GUEST-PASS", "DISKLESS-GUEST-FAIL")
			if err != nil {
				t.Fatal(err)
			}
			// Either way the guest powers off next; then its output is complete.
			if err := v.Wait(30 * time.Second); err != nil {
				t.Errorf("guest did not power off: %v", err)
			}
			console := v.Console()
			failure := lineWith(console, "DISKLESS-GUEST-FAIL")
			if tc.fails != "" {
				if failure != tc.fails {
					t.Fatalf("guest: %q, want %q", failure, tc.fails)
				}
				why := lineWith(console, tc.why)
				if why == "" {
					t.Fatalf("iscsistart failed, but not with %q", tc.why)
				}
				t.Logf("refused as expected in %v: %s", time.Since(start).Round(100*time.Millisecond), why)
				return
			}
			if i != 0 {
				t.Fatalf("guest: %s", failure)
			}
			sums1, sums2 := guestSums(console, "DISKLESS-SUM1"), guestSums(console, "DISKLESS-SUM2")
			if len(sums1) != 3 {
				t.Fatalf("guest printed %d DISKLESS-SUM1 lines, want 3", len(sums1))
			}
			for name, sum := range sums1 {
				if sums2[name] != sum {
					t.Errorf("%s: sha256 %s after writing, %q after logout and login", name, sum, sums2[name])
				}
			}
			t.Logf("guest passed in %v", time.Since(start).Round(100*time.Millisecond))
			logins := tg.loginLines(t)
			want := fmt.Sprintf("header_digest=%t data_digest=%t", tc.digest, tc.digest)
			for _, l := range logins {
				if !strings.Contains(l, want) {
					t.Errorf("a login did not negotiate %s: %s", want, l)
				}
			}
			if tg.logins != nil && len(logins) < 3 {
				t.Errorf("%d logins logged, want 3 (iscsistart, iscsid taking over, iscsiadm)", len(logins))
			}

			// The host sees the same file system in the image file.
			if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
				t.Errorf("e2fsck -fn on the target's image file: %v\n%s", err, out)
			}
			for name, sum := range sums1 {
				data, err := exec.Command("debugfs", "-R", "cat /data/"+name, img).Output()
				if err != nil {
					t.Fatalf("debugfs cat /data/%s: %v", name, err)
				}
				h := sha256.Sum256(data)
				if got := hex.EncodeToString(h[:]); got != sum {
					t.Errorf("/data/%s in the image file: sha256 %s, the guest wrote %s", name, got, sum)
				}
			}
		})
	}
}

// guestBundle builds (or reuses) the guest kernel and initramfs with
// scripts/guest-bundle.sh in the interop cache directory.
func guestBundle(t *testing.T) (kernel, initrd string) {
	t.Helper()
	cache := os.Getenv("DISKLESS_INTEROP_CACHE")
	if cache == "" {
		cache = "/var/tmp/diskless-interop"
	}
	dir := filepath.Join(cache, "guest")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, filepath.Join(repoRoot, "scripts", "guest-bundle.sh"), dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/guest-bundle.sh %s: %v\n%s", dir, err, out)
	}
	t.Logf("guest bundle ready in %v (%s)", time.Since(start).Round(100*time.Millisecond), dir)
	return filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initramfs.gz")
}

// guestSums collects "PREFIX <sha256>  <name>" lines from the console.
func guestSums(console, prefix string) map[string]string {
	sums := map[string]string{}
	for _, l := range strings.Split(console, "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && f[0] == prefix && len(f[1]) == 64 {
			sums[f[2]] = f[1]
		}
	}
	return sums
}

// createFile creates an empty file and returns its path.
func createFile(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	return path
}
