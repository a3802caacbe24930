package interop

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// libiscsiRun runs a libiscsi client (qemu-img or a libiscsi-bin tool) with a
// deadline and returns its combined output.
func libiscsiRun(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// TestQEMUImgRoundTrip copies random data into the LUN with qemu-img (QEMU's
// libiscsi block driver, CHAP) and back out again: once by URL, once with
// CRC32C header digests (QEMU's header-digest option; libiscsi has no data
// digests), checked in the target's log to be in use.
func TestQEMUImgRoundTrip(t *testing.T) {
	needPeers(t, "qemu-img")
	chap := &creds{"qemu-user", "qemu-secret-0123"}
	for _, tc := range []struct {
		name   string
		digest bool
	}{{"url", false}, {"header-digest", true}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			const size = 32 << 20
			src := make([]byte, size)
			rand.Read(src)
			srcPath := filepath.Join(dir, "src.img")
			lunPath := filepath.Join(dir, "lun.img")
			outPath := filepath.Join(dir, "out.img")
			if err := os.WriteFile(srcPath, src, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(createFile(t, lunPath), size); err != nil {
				t.Fatal(err)
			}
			tg := startTarget(t, targetConfig{LUNs: []lunConfig{{Path: lunPath}}, CHAP: chap})
			// qemu-img takes the LUN as a URL, or with digests as driver
			// options (--target-image-opts / --image-opts).
			url := tg.URL(0, chap)
			opts := fmt.Sprintf("driver=iscsi,transport=tcp,portal=127.0.0.1:%d,target=%s,lun=%d,"+
				"user=%s,password=%s,header-digest=crc32c", tg.Port, tg.IQN, tg.LUN(0), chap.User, chap.Secret)

			start := time.Now()
			args := []string{"convert", "-n", "-f", "raw", "-O", "raw", srcPath, url}
			if tc.digest {
				args = []string{"convert", "-n", "-f", "raw", "--target-image-opts", srcPath, opts}
			}
			if out, err := libiscsiRun(t, "qemu-img", args...); err != nil {
				t.Fatalf("qemu-img convert into the LUN: %v\n%s", err, out)
			}
			in := time.Since(start)
			got, err := os.ReadFile(lunPath)
			if err != nil {
				t.Fatal(err)
			}
			if i := firstDiff(got, src); i >= 0 {
				t.Fatalf("image file behind the LUN differs from what qemu-img wrote at byte %d", i)
			}

			start = time.Now()
			args = []string{"convert", "-f", "raw", "-O", "raw", url, outPath}
			if tc.digest {
				args = []string{"convert", "--image-opts", opts, "-O", "raw", outPath}
			}
			if out, err := libiscsiRun(t, "qemu-img", args...); err != nil {
				t.Fatalf("qemu-img convert out of the LUN: %v\n%s", err, out)
			}
			outTime := time.Since(start)
			got, err = os.ReadFile(outPath)
			if err != nil {
				t.Fatal(err)
			}
			if i := firstDiff(got, src); i >= 0 {
				t.Fatalf("data read back over iSCSI differs at byte %d (read %d bytes, want %d)", i, len(got), len(src))
			}
			t.Logf("32 MiB in %v, out %v", in.Round(time.Millisecond), outTime.Round(time.Millisecond))
			want := "header_digest=" + strconv.FormatBool(tc.digest)
			for _, l := range tg.loginLines(t) {
				if !strings.Contains(l, want) {
					t.Errorf("a session did not negotiate %s: %s", want, l)
				}
			}

			if tc.digest {
				return
			}
			// The wrong secret must not get in.
			bad := tg.URL(0, &creds{chap.User, "not-the-secret-9"})
			if out, err := libiscsiRun(t, "qemu-img", "info", bad); err == nil {
				t.Errorf("qemu-img info with a wrong CHAP secret succeeded:\n%s", out)
			} else {
				t.Logf("wrong secret refused: %s", lineWith(out, "qemu-img:"))
			}
		})
	}
}

// TestLibiscsiMutualCHAP checks mutual CHAP with libiscsi. QEMU 7.2 cannot
// (its iscsi driver sets only the initiator's credentials and ignores the
// URL's target_user/target_password), so this uses libiscsi's own iscsi-inq,
// which takes them from the URL.
func TestLibiscsiMutualCHAP(t *testing.T) {
	needPeers(t, "iscsi-inq")
	img := filepath.Join(t.TempDir(), "lun.img")
	if err := os.Truncate(createFile(t, img), 8<<20); err != nil {
		t.Fatal(err)
	}
	chap := &creds{"inq-user", "inq-secret-01234"}
	mutual := &creds{"disk1-target", "target-secret-4567"}
	tg := startTarget(t, targetConfig{LUNs: []lunConfig{{Path: img}}, CHAP: chap, MutualCHAP: mutual})

	for _, tc := range []struct {
		name, url, want string
		ok              bool
	}{
		{"mutual", tg.URL(0, chap) + "?target_user=" + mutual.User + "&target_password=" + mutual.Secret,
			"Peripheral Device Type:DIRECT_ACCESS", true},
		{"wrong-target-secret", tg.URL(0, chap) + "?target_user=" + mutual.User + "&target_password=not-the-secret-9",
			"Invalid CHAP_R response from the target", false},
		{"wrong-initiator-secret", tg.URL(0, &creds{chap.User, "not-the-secret-9"}) +
			"?target_user=" + mutual.User + "&target_password=" + mutual.Secret,
			"Login Failed", false},
	} {
		out, err := libiscsiRun(t, "iscsi-inq", tc.url)
		if (err == nil) != tc.ok || !strings.Contains(out, tc.want) {
			t.Errorf("%s: iscsi-inq: err=%v, want success=%v and output with %q:\n%s", tc.name, err, tc.ok, tc.want, out)
		}
	}
}

// TestLibiscsiAccess checks --allow-initiator and a read-only LUN with
// qemu-img: a listed initiator reads, an unlisted one is refused; the :ro LUN
// reads back its image file, and qemu-img refuses to write to it because
// MODE SENSE reports it write-protected (SBC-3 6.5.4 WP bit), leaving the file
// unchanged.
func TestLibiscsiAccess(t *testing.T) {
	needPeers(t, "qemu-img")
	dir := t.TempDir()
	rw, ro := filepath.Join(dir, "rw.img"), filepath.Join(dir, "ro.img")
	roData := bytes.Repeat([]byte("read-only LUN\n"), (4<<20)/14+1)[:4<<20]
	if err := os.Truncate(createFile(t, rw), 4<<20); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ro, roData, 0o644); err != nil {
		t.Fatal(err)
	}
	allowed := "iqn.2026-11.org.example:allowed"
	tg := startTarget(t, targetConfig{
		LUNs:  []lunConfig{{Path: rw}, {Path: ro, ReadOnly: true}},
		Allow: []string{allowed},
	})
	// QEMU's iscsi driver takes the initiator name only as an option.
	opts := func(lun int, initiator string) string {
		return fmt.Sprintf("driver=raw,file.driver=iscsi,file.transport=tcp,file.portal=127.0.0.1:%d,file.target=%s,file.lun=%d,file.initiator-name=%s",
			tg.Port, tg.IQN, tg.LUN(lun), initiator)
	}

	if out, err := libiscsiRun(t, "qemu-img", "info", "--image-opts", opts(0, allowed)); err != nil {
		t.Errorf("allowed initiator: qemu-img info: %v\n%s", err, out)
	}
	if out, err := libiscsiRun(t, "qemu-img", "info", "--image-opts", opts(0, "iqn.2026-11.org.example:stranger")); err == nil {
		t.Errorf("initiator not in --allow-initiator got in:\n%s", out)
	} else {
		t.Logf("stranger refused: %s", lineWith(out, "qemu-img:"))
	}

	// Read-only LUN: reads work, writes do not reach the file.
	out := filepath.Join(dir, "ro-copy.img")
	if o, err := libiscsiRun(t, "qemu-img", "convert", "--image-opts", opts(1, allowed), "-O", "raw", out); err != nil {
		t.Fatalf("read the :ro LUN: %v\n%s", err, o)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, roData) {
		t.Errorf("data read from the :ro LUN differs from its image file")
	}
	junk := filepath.Join(dir, "junk.img")
	if err := os.WriteFile(junk, bytes.Repeat([]byte{0xa5}, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if o, err := libiscsiRun(t, "qemu-img", "convert", "-n", "-f", "raw", junk, "--target-image-opts", opts(1, allowed)); err == nil {
		t.Errorf("writing to the :ro LUN succeeded:\n%s", o)
	} else if !strings.Contains(o, "write protected") {
		t.Errorf("writing to the :ro LUN failed, but not for write protection:\n%s", o)
	}
	if got, _ := os.ReadFile(ro); !bytes.Equal(got, roData) {
		t.Errorf("the :ro LUN's image file changed")
	}
}

// firstDiff returns the first offset where a and b differ, -1 if equal.
func firstDiff(a, b []byte) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return n
	}
	return -1
}
