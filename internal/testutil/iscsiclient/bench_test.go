package iscsiclient

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/diskless-boot/diskless/internal/iscsi"
)

// BenchmarkRead reads from an in-process target over loopback, at queue
// depth 1 and 16 on one session. The target shares the CPUs: compare
// with -cpuprofile how much of the time is the client's.
func BenchmarkRead(b *testing.B) {
	ts := startServer(b, iscsi.Config{}, targetSpec{name: iqn1})
	s := dial(b, Config{Addr: ts.addr, Initiator: hostA, Target: iqn1})
	// Fill the image so reads come from the page cache, not from holes.
	chunk := make([]byte, 8<<20)
	rand.NewChaCha8([32]byte{}).Read(chunk)
	for off := 0; off < diskBytes; off += len(chunk) {
		if err := s.Write(uint64(off/512), chunk, false); err != nil {
			b.Fatal(err)
		}
	}
	for _, size := range []int{4 << 10, 1 << 20} {
		for _, qd := range []int{1, 16} {
			b.Run(fmt.Sprintf("%dKiB/QD%d", size>>10, qd), func(b *testing.B) {
				slots := uint64(diskBytes / size)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				if qd == 1 {
					buf := make([]byte, size)
					for i := 0; b.Loop(); i++ {
						if err := s.Read(uint64(i)%slots*uint64(size/512), buf); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				var next atomic.Uint64
				b.SetParallelism(max(1, qd/runtime.GOMAXPROCS(0))) // GOMAXPROCS times this many goroutines
				b.RunParallel(func(pb *testing.PB) {
					buf := make([]byte, size)
					for pb.Next() {
						if err := s.Read(next.Add(1)%slots*uint64(size/512), buf); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

// BenchmarkReadTrace is BenchmarkRead's 4 KiB QD1 case with I/O tracing
// off and on (iscsi.Config.TraceDir): what --trace-io costs per command.
func BenchmarkReadTrace(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(map[bool]string{false: "off", true: "on"}[on], func(b *testing.B) {
			var cfg iscsi.Config
			if on {
				cfg.TraceDir = b.TempDir()
			}
			ts := startServer(b, cfg, targetSpec{name: iqn1})
			s := dial(b, Config{Addr: ts.addr, Initiator: hostA, Target: iqn1})
			const size = 4 << 10
			buf := make([]byte, size)
			slots := uint64(diskBytes / size)
			b.SetBytes(size)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if err := s.Read(uint64(i)%slots*uint64(size/512), buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
