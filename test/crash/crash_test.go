// Package crash kills `diskless serve` with SIGKILL at random moments while
// hosts write to their copy-on-write disks and flush, restarts it, and
// checks that every write a completed SYNCHRONIZE CACHE covered is on the
// disk and that every overlay passes `host check`.
//
// DISKLESS_CRASH_KILLS sets the number of kills (default 100; -short: 10).
package crash

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/api"
	"github.com/diskless-boot/diskless/internal/testutil/build"
	"github.com/diskless-boot/diskless/internal/testutil/iscsiclient"
	"github.com/diskless-boot/diskless/internal/testutil/served"
)

const (
	blockSize      = 512
	hosts          = 3
	writersPerHost = 2
	region         = 4096 // blocks per writer (2 MiB), apart from each other
)

// A block written by a writer describes itself, so a read tells which
// write (if any) it holds.
const magic = 0x6469736b6c657373 // "diskless"

func encodeBlock(b []byte, writer int, lba, seq uint64) {
	binary.BigEndian.PutUint64(b[0:], magic)
	binary.BigEndian.PutUint32(b[8:], uint32(writer))
	binary.BigEndian.PutUint64(b[12:], lba)
	binary.BigEndian.PutUint64(b[20:], seq)
	for i := 28; i < blockSize-4; i++ {
		b[i] = byte(seq) ^ byte(i)
	}
	binary.BigEndian.PutUint32(b[blockSize-4:], crc32.ChecksumIEEE(b[:blockSize-4]))
}

// decodeBlock returns the seq a block holds; zero means an unwritten
// block (all zeros); ok false means garbage.
func decodeBlock(b []byte, writer int, lba uint64) (seq uint64, ok bool) {
	if bytes.Equal(b, make([]byte, blockSize)) {
		return 0, true
	}
	if binary.BigEndian.Uint64(b) != magic || crc32.ChecksumIEEE(b[:blockSize-4]) != binary.BigEndian.Uint32(b[blockSize-4:]) ||
		binary.BigEndian.Uint32(b[8:]) != uint32(writer) || binary.BigEndian.Uint64(b[12:]) != lba {
		return 0, false
	}
	return binary.BigEndian.Uint64(b[20:]), true
}

// writer is one stream of writes on one host's disk, alone on its LBAs.
type writer struct {
	id     int
	host   int
	base   uint64
	seq    uint64
	issued map[uint64][]uint64 // lba -> seqs written (acknowledged or not)
	synced map[uint64]uint64   // lba -> the newest seq a completed flush covers
	acked  map[uint64]uint64   // lba -> newest acknowledged, not yet flushed
}

func TestKill9(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go not in PATH")
	}
	kills := 100
	if testing.Short() {
		kills = 10
	}
	if v, err := strconv.Atoi(os.Getenv("DISKLESS_CRASH_KILLS")); err == nil && v > 0 {
		kills = v
	}
	root, err := build.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := build.Diskless(root, t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	site := served.New(t, bin)
	site.CLI("image", "create", "golden", "--size", "64M")
	targets := make([]api.HostView, hosts)
	for i := range targets {
		var ch api.HostChange
		if err := json.Unmarshal(site.CLI("host", "add", fmt.Sprintf("h%d", i), "--image", "golden", "--no-chap", "--json"), &ch); err != nil {
			t.Fatal(err)
		}
		targets[i] = ch.Host
	}
	token := ""

	var ws []*writer
	for h := range hosts {
		for w := range writersPerHost {
			ws = append(ws, &writer{id: len(ws), host: h, base: uint64(1000 + w*region*2),
				issued: map[uint64][]uint64{}, synced: map[uint64]uint64{}, acked: map[uint64]uint64{}})
		}
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	start := time.Now()
	var totalWrites, totalSyncs int
	for k := 0; k <= kills; k++ {
		p := site.Start()
		if token == "" {
			token = site.Token()
		}
		sessions := make([]*iscsiclient.Session, hosts)
		for h := range hosts {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			sessions[h], err = iscsiclient.Dial(ctx, iscsiclient.Config{Addr: site.Portal(),
				Initiator: targets[h].InitiatorIQN, Target: targets[h].TargetIQN, Timeout: 5 * time.Second})
			cancel()
			if err != nil {
				t.Fatalf("restart %d: login h%d: %v\n%s", k, h, err, p.Output())
			}
		}
		// Every synced write must be there, and every block must hold
		// a write that was made (or nothing, if none was synced).
		for _, w := range ws {
			verify(t, k, w, sessions[w.host])
		}
		for h := range hosts {
			if !checkHost(t, site.API(), token, fmt.Sprintf("h%d", h)) {
				t.Fatalf("restart %d: h%d fails host check\n%s", k, h, p.Output())
			}
		}
		if k == kills {
			p.Stop()
			break
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, w := range ws {
			wg.Add(1)
			seed := rng.Uint64()
			go func() {
				defer wg.Done()
				n, s := w.run(sessions[w.host], seed)
				mu.Lock()
				totalWrites += n
				totalSyncs += s
				mu.Unlock()
			}()
		}
		time.Sleep(time.Duration(20+rng.IntN(400)) * time.Millisecond)
		p.Kill()
		p.Wait()
		wg.Wait()
		for _, s := range sessions {
			s.Close()
		}
	}
	t.Logf("%d kills in %s: %d writes, %d completed flushes, 0 lost synced writes, every overlay passed its check",
		kills, time.Since(start).Round(time.Second), totalWrites, totalSyncs)
}

// run writes until the session dies: 1, 8 or 64 blocks at a time (a
// partial cluster, one cluster, several), a flush every few writes.
func (w *writer) run(s *iscsiclient.Session, seed uint64) (writes, syncs int) {
	rng := rand.New(rand.NewPCG(seed, uint64(w.id)))
	buf := make([]byte, 64*blockSize)
	for {
		n := []int{1, 8, 64}[rng.IntN(3)]
		lba := w.base + uint64(rng.IntN(region-n))
		if n > 1 {
			lba &^= 7 // whole clusters
		}
		w.seq++
		for i := range n {
			encodeBlock(buf[i*blockSize:], w.id, lba+uint64(i), w.seq)
			w.issued[lba+uint64(i)] = append(w.issued[lba+uint64(i)], w.seq)
		}
		fua := rng.IntN(20) == 0
		if err := s.Write(lba, buf[:n*blockSize], fua); err != nil {
			return writes, syncs
		}
		writes++
		for i := range n {
			if fua {
				// FUA: durable (data and metadata) before GOOD.
				w.synced[lba+uint64(i)] = w.seq
				delete(w.acked, lba+uint64(i))
			} else {
				w.acked[lba+uint64(i)] = w.seq
			}
		}
		if rng.IntN(4) == 0 {
			covered := w.acked
			w.acked = map[uint64]uint64{}
			if err := s.SyncCache(); err != nil {
				return writes, syncs
			}
			syncs++
			for l, q := range covered {
				w.synced[l] = max(w.synced[l], q)
			}
		}
	}
}

func verify(t *testing.T, k int, w *writer, s *iscsiclient.Session) {
	t.Helper()
	buf := make([]byte, region*blockSize)
	if err := s.Read(w.base, buf); err != nil {
		t.Fatalf("restart %d: read: %v", k, err)
	}
	for i := range region {
		lba := w.base + uint64(i)
		seq, ok := decodeBlock(buf[i*blockSize:(i+1)*blockSize], w.id, lba)
		if !ok {
			t.Fatalf("restart %d: writer %d LBA %d holds garbage", k, w.id, lba)
		}
		if want := w.synced[lba]; seq < want {
			t.Fatalf("restart %d: writer %d LBA %d holds write %d, but write %d was flushed: a synced write was lost", k, w.id, lba, seq, want)
		}
		if seq != 0 && !contains(w.issued[lba], seq) {
			t.Fatalf("restart %d: writer %d LBA %d holds write %d, never made there", k, w.id, lba, seq)
		}
		// What is on the disk now is the base of what follows: an
		// unflushed write that survived is as good as flushed from
		// here on (it cannot go back to an older state without a lie).
		if seq > w.synced[lba] {
			w.synced[lba] = seq
		}
	}
	w.acked = map[uint64]uint64{}
}

func contains(s []uint64, v uint64) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func checkHost(t *testing.T, base, token, host string) bool {
	t.Helper()
	req, _ := http.NewRequest("POST", base+api.Prefix+"/hosts/"+host+"/check", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var rep struct{ OK bool }
	if resp.StatusCode != 200 || json.Unmarshal(body, &rep) != nil {
		t.Fatalf("check %s: %d %s", host, resp.StatusCode, body)
	}
	if !rep.OK {
		t.Logf("check %s: %s", host, body)
	}
	return rep.OK
}
