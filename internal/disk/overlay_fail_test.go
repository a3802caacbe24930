package disk

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestOverlayNoSpace puts the top on a 1 MiB tmpfs and fills it: the
// write that finds no space fails wrapping ErrNoSpace and changes
// nothing; the overlay stays healthy (flushes still find room for their
// record), unmapping frees space for new writes, and everything flushed
// is there after reopening.
func TestOverlayNoSpace(t *testing.T) {
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount a tmpfs to provoke ENOSPC (needs CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	const size = 8 << 20
	base, content := newBase(t, size, 21)
	s := &stack{dir: dir, cfg: LayerConfig{Size: size, BaseID: "b"}}
	s.top = s.nextDir()
	if err := CreateLayer(s.top, LayerConfig{Size: size, ID: s.id(s.top), BaseID: "b"}); err != nil {
		t.Fatal(err)
	}
	m := newModel(content, 4096)
	o := s.open(t, base, OverlayOptions{})
	defer func() { o.Close() }()
	var full error
	var c int64
	for c = 0; c < size/4096; c++ {
		var p []byte
		off := c * 4096
		if c%3 == 0 { // a partial write: copy-up
			p, off = pattern(1000, uint64(c)), off+100
		} else {
			p = pattern(4096, uint64(c))
		}
		if _, err := o.WriteAt(p, off); err != nil {
			full = err
			break
		}
		m.write(p, off)
		if c%16 == 0 {
			if err := o.Flush(); err != nil {
				t.Fatal(err)
			}
			m.flush()
		}
	}
	if !errors.Is(full, ErrNoSpace) || !errors.Is(full, unix.ENOSPC) {
		t.Fatalf("write %d into a full tmpfs: %v, want ErrNoSpace", c, full)
	}
	if o.Err() != nil {
		t.Fatalf("ENOSPC failed the overlay: %v", o.Err())
	}
	checkAll(t, o, m.cur) // the failed cluster reads as before
	if o.top.bits.has(c) {
		t.Fatalf("cluster %d owned after its write failed", c)
	}
	// A partial write to a new cluster (copy-up) fails the same way.
	if _, err := o.WriteAt([]byte{1, 2, 3}, (c+1)*4096+7); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("copy-up into a full tmpfs: %v", err)
	}
	checkAll(t, o, m.cur)
	if err := o.Flush(); err != nil {
		t.Fatalf("flush on a full file system: %v", err)
	}
	m.flush()
	// Overwriting owned clusters needs no space.
	p := pattern(4096, 99)
	if _, err := o.WriteAt(p, 4096); err != nil {
		t.Fatalf("overwrite of an owned cluster: %v", err)
	}
	m.write(p, 4096)
	// Freeing clusters makes room for new ones.
	if err := o.Unmap(0, 64<<10); err != nil {
		t.Fatal(err)
	}
	m.zero(0, 64<<10)
	p = pattern(4096, 100)
	if _, err := o.WriteAt(p, c*4096); err != nil {
		t.Fatalf("write after unmapping: %v", err)
	}
	m.write(p, c*4096)
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	o = s.open(t, base, OverlayOptions{})
	checkAll(t, o, m.cur)
}

// failSync makes fdatasync fail with EIO on the descriptor fd.
func failSync(t *testing.T, fd int) {
	orig := fdatasync
	fdatasync = func(f int) error {
		if f == fd {
			return unix.EIO
		}
		return orig(f)
	}
	t.Cleanup(func() { fdatasync = orig })
}

// TestOverlayFlushFailure: when fdatasync of data or meta fails, that
// flush reports the failure, then every write and flush fails wrapping
// ErrDeviceFailed (so no later flush can succeed over the lost writes)
// while reads work. Reopening recovers what was flushed before.
func TestOverlayFlushFailure(t *testing.T) {
	for _, which := range []string{"data", "meta"} {
		t.Run(which, func(t *testing.T) {
			const size = 1 << 20
			base, content := newBase(t, size, 22)
			s := newStack(t, size, 4096)
			m := newModel(content, 4096)
			o := s.open(t, base, OverlayOptions{})
			p := pattern(9000, 1)
			o.WriteAt(p, 1000)
			m.write(p, 1000)
			if err := o.Flush(); err != nil {
				t.Fatal(err)
			}
			m.flush()
			p = pattern(5000, 2)
			o.WriteAt(p, 300000)
			m.write(p, 300000)
			fd := o.top.fd
			if which == "meta" {
				fd = int(o.top.meta.Fd())
			}
			failSync(t, fd)
			err := o.Flush()
			if err == nil || !errors.Is(err, unix.EIO) || errors.Is(err, ErrDeviceFailed) {
				t.Fatalf("failing flush = %v, want EIO (not ErrDeviceFailed)", err)
			}
			if !errors.Is(o.Err(), ErrDeviceFailed) {
				t.Fatalf("Err = %v", o.Err())
			}
			for name, err := range map[string]error{
				"Flush":       o.Flush(),
				"WriteAt":     func() error { _, err := o.WriteAt([]byte{1}, 0); return err }(),
				"Unmap":       o.Unmap(0, 4096),
				"WriteZeroes": o.WriteZeroes(0, 4096),
				"Push":        o.Push(filepath.Join(t.TempDir(), "p"), "p"),
			} {
				if !errors.Is(err, ErrDeviceFailed) {
					t.Errorf("%s after a failed flush = %v, want ErrDeviceFailed", name, err)
				}
			}
			checkAll(t, o, m.cur)
			if err := o.Close(); !errors.Is(err, ErrDeviceFailed) {
				t.Errorf("Close of a failed overlay = %v, want ErrDeviceFailed", err)
			}
			fdatasync = unix.Fdatasync
			o = s.open(t, base, OverlayOptions{})
			defer o.Close()
			if o.Err() != nil {
				t.Fatal(o.Err())
			}
			m.afterCrash(t, o)
			if _, err := o.WriteAt([]byte{1}, 0); err != nil {
				t.Fatalf("write after reopening: %v", err)
			}
		})
	}
}

// Kill -9 test: a child process writes generations of clusters and
// flushes, printing each generation once Flush returned; it also pushes
// snapshots and merges layers, printing each once done. The parent kills
// it at a random moment, reopens the stack it was told about and checks
// that every cluster holds at least its last acknowledged generation.

const (
	killSize     = 16 << 20
	killClusters = killSize / 4096
	envKillChild = "DISKLESS_OVERLAY_KILL_CHILD"
)

// killContent is cluster c as generation gen writes it.
func killContent(c int64, gen uint64) []byte {
	b := pattern(4096, gen<<16^uint64(c))
	binary.LittleEndian.PutUint64(b, uint64(c))
	binary.LittleEndian.PutUint64(b[8:], gen)
	return b
}

// killWrites is what generation gen writes: runs of clusters.
func killWrites(gen uint64) [][2]int64 {
	rng := rand.New(rand.NewPCG(gen, 77))
	runs := make([][2]int64, 1+rng.IntN(12))
	for i := range runs {
		c := rng.Int64N(killClusters - 8)
		runs[i] = [2]int64{c, 1 + rng.Int64N(8)}
	}
	return runs
}

func TestOverlayKillChild(t *testing.T) {
	spec := os.Getenv(envKillChild)
	if spec == "" {
		t.Skip("run by TestOverlayKill9")
	}
	// spec: base|top|lower1:lower2...|first generation
	f := strings.Split(spec, "|")
	base, err := OpenFile(f[0], true)
	if err != nil {
		t.Fatal(err)
	}
	var lower []string
	if f[2] != "" {
		lower = strings.Split(f[2], ":")
	}
	o, err := OpenOverlay(base, lower, f[1], OverlayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	o.compactAt, o.top.nextCompact = 16<<10, 16<<10
	gen, _ := strconv.ParseUint(f[3], 10, 64)
	out := bufio.NewWriter(os.Stdout)
	say := func(format string, args ...any) {
		fmt.Fprintf(out, format+"\n", args...)
		out.Flush()
	}
	stackDir := filepath.Dir(f[1])
	for ; ; gen++ {
		for _, r := range killWrites(gen) {
			buf := make([]byte, 0, r[1]*4096)
			for c := r[0]; c < r[0]+r[1]; c++ {
				buf = append(buf, killContent(c, gen)...)
			}
			if _, err := o.WriteAt(buf, r[0]*4096); err != nil {
				t.Fatal(err)
			}
		}
		if err := o.Flush(); err != nil {
			t.Fatal(err)
		}
		say("ack %d", gen)
		switch lower, _ := o.Layers(); {
		case gen%15 == 0:
			dir := filepath.Join(stackDir, fmt.Sprintf("g%d", gen))
			if err := o.Push(dir, filepath.Base(dir)); err != nil {
				t.Fatal(err)
			}
			say("push %s", dir)
		case gen%35 == 17 && len(lower) > 0:
			if err := o.MergeInto(lower[0]); err != nil {
				t.Fatal(err)
			}
			say("merge %s", lower[0])
		}
	}
}

func TestOverlayKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	base, content := newBase(t, killSize, 31)
	s := newStack(t, killSize, 4096)
	s.lower = nil
	// Per cluster, the generation it must hold at least (0: the base).
	floor := make([]uint64, killClusters)
	gen := uint64(1)
	for round := range 6 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestOverlayKillChild$")
		cmd.Env = append(os.Environ(), envKillChild+"="+strings.Join(
			[]string{base.Path(), s.top, strings.Join(s.lower, ":"), strconv.FormatUint(gen, 10)}, "|"))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		timer := time.AfterFunc(time.Duration(200+rand.IntN(600))*time.Millisecond, func() {
			cmd.Process.Signal(syscall.SIGKILL)
		})
		acked, lines := gen-1, 0
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines++
			w := strings.Fields(sc.Text())
			switch {
			case len(w) == 2 && w[0] == "ack":
				acked, _ = strconv.ParseUint(w[1], 10, 64)
			case len(w) == 2 && w[0] == "push":
				s.lower, s.top = append(s.lower, s.top), w[1]
			case len(w) == 2 && w[0] == "merge":
				s.lower = s.lower[1:]
				os.RemoveAll(w[1])
			default:
				t.Logf("child: %s", sc.Text())
			}
		}
		timer.Stop()
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("round %d: child ended on its own: %v", round, err)
		}
		for g := gen; g <= acked; g++ {
			for _, r := range killWrites(g) {
				for c := r[0]; c < r[0]+r[1]; c++ {
					floor[c] = g
				}
			}
		}
		started := acked + 1 // the generation cut short, if any
		o, err := OpenOverlay(base, s.lower, s.top, OverlayOptions{})
		if err != nil {
			t.Fatalf("round %d: reopen after kill -9: %v", round, err)
		}
		s.lower, s.top = o.Layers()
		got := make([]byte, killSize)
		if _, err := o.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		for c := int64(0); c < killClusters; c++ {
			b := got[c*4096 : (c+1)*4096]
			if string(b) == string(content[c*4096:(c+1)*4096]) {
				if floor[c] != 0 {
					t.Fatalf("round %d: cluster %d lost acknowledged generation %d", round, c, floor[c])
				}
				continue
			}
			g := binary.LittleEndian.Uint64(b[8:])
			if int64(binary.LittleEndian.Uint64(b)) != c || g < floor[c] || g > started ||
				string(b) != string(killContent(c, g)) {
				t.Fatalf("round %d: cluster %d holds generation %d (floor %d, last started %d) or garbage",
					round, c, g, floor[c], started)
			}
			floor[c] = g
		}
		if err := o.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: killed after %d generations (%d acknowledged), %d lower layers", round, started-gen+1, acked-gen+1, len(s.lower))
		gen = started + 1
	}
}
