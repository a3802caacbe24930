package scsi

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
)

// run without a testLU: for goroutines, which must not call t.Fatal.
func exec(tgt *Target, n Nexus, cdb, out []byte, in []byte) Result {
	return tgt.Execute(&Command{Nexus: n, CDB: cdb, DataOut: out, DataIn: in})
}

// TestConcurrentCommands runs I/O from several I_T nexuses at once with
// COMPARE AND WRITE increments of a shared counter, while reservations,
// mode pages and resets change underneath. Under -race this checks the
// locking; the counter checks COMPARE AND WRITE atomicity.
func TestConcurrentCommands(t *testing.T) {
	tl := newTestLU(t, newMemDevice(4<<20), LUConfig{})
	tgt := tl.tgt
	const (
		workers    = 8
		increments = 50
	)
	nexuses := make([]Nexus, workers)
	for i := range nexuses {
		nexuses[i] = Nexus{InitiatorName: fmt.Sprintf("iqn.2026-01.test:w%d", i), ISID: uint64(i), RelTargetPort: 1}
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers*4)
	for w, n := range nexuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in := make([]byte, 4096)
			// Private region: write, read back, compare.
			for i := range 20 {
				lba := uint32(64 + w*64 + i)
				data := bytes.Repeat([]byte{byte(w), byte(i)}, 256)
				if r := retryUA(func() Result { return exec(tgt, n, cdb10(opWrite10, 0, lba, 1), data, nil) }); r.Status != StatusGood {
					errs <- fmt.Errorf("worker %d WRITE: %#x %x", w, r.Status, r.Sense)
					return
				}
				r := retryUA(func() Result { return exec(tgt, n, cdb10(opRead10, 0, lba, 1), nil, in[:512]) })
				if r.Status != StatusGood || !bytes.Equal(in[:512], data) {
					errs <- fmt.Errorf("worker %d READ back: %#x", w, r.Status)
					return
				}
			}
			// Shared counter in block 0.
			for done := 0; done < increments; {
				r := retryUA(func() Result { return exec(tgt, n, cdb10(opRead10, 0, 0, 1), nil, in[:512]) })
				if r.Status != StatusGood {
					errs <- fmt.Errorf("worker %d READ counter: %#x", w, r.Status)
					return
				}
				buf := make([]byte, 1024)
				copy(buf, in[:512])
				binary.BigEndian.PutUint64(buf[512:], binary.BigEndian.Uint64(in)+1)
				r = retryUA(func() Result { return exec(tgt, n, cawCDB(0, 1), buf, nil) })
				switch k, _ := senseOf(r); {
				case r.Status == StatusGood:
					done++
				case k == SenseMiscompare:
				default:
					errs <- fmt.Errorf("worker %d COMPARE AND WRITE: %#x %x", w, r.Status, r.Sense)
					return
				}
			}
		}()
	}
	// Control-path noise.
	wg.Add(1)
	go func() {
		defer wg.Done()
		ms := make([]byte, 255)
		for i := range 30 {
			n := nexuses[i%workers]
			exec(tgt, n, prOutCDB(prOutRegisterIgnore, 0), prOutParams(0, uint64(i+1), 0), nil)
			exec(tgt, n, []byte{opPRIn, 0, 0, 0, 0, 0, 0, 1, 0, 0}, nil, ms)
			exec(tgt, n, prOutCDB(prOutRegister, 0), prOutParams(uint64(i+1), 0, 0), nil)
			r := exec(tgt, n, modeSense6(true, 0, pageCaching, 0, 255), nil, ms)
			if r.Status == StatusGood {
				sel := append([]byte(nil), ms[:r.N]...)
				sel[0], sel[2] = 0, 0
				sel[6] ^= 0x04
				exec(tgt, n, modeSelect6(sel), sel, nil)
			}
			exec(tgt, n, rsocCDB(true, rsocAll, 0, 0, 255), nil, ms)
			exec(tgt, n, inquiryCDB(true, vpdDeviceID, 255), nil, ms)
			if i%10 == 0 {
				tgt.LUNReset(0)
				tl.lu.RefreshCapacity()
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got := binary.BigEndian.Uint64(tl.dev.data)
	if got != workers*increments {
		t.Fatalf("counter %d after %d COMPARE AND WRITE increments: lost updates", got, workers*increments)
	}
}

// retryUA repeats a command while it reports a unit attention.
func retryUA(f func() Result) Result {
	for {
		r := f()
		if k, _ := senseOf(r); r.Status == StatusCheckCondition && k == SenseUnitAttention {
			continue
		}
		return r
	}
}

// TestHotPathAllocations: READ and WRITE allocate nothing once the I_T
// nexus is known.
func TestHotPathAllocations(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	read := &Command{Nexus: nexusA, CDB: cdb10(opRead10, 0, 8, 8), DataIn: make([]byte, 4096)}
	write := &Command{Nexus: nexusA, CDB: cdb10(opWrite10, 0, 8, 8), DataOut: make([]byte, 4096)}
	for _, c := range []struct {
		name string
		cmd  *Command
	}{{"READ(10)", read}, {"WRITE(10)", write}} {
		allocs := testing.AllocsPerRun(200, func() {
			if r := tl.tgt.Execute(c.cmd); r.Status != StatusGood {
				t.Fatalf("%s: %#x", c.name, r.Status)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %.1f allocations per command, want 0", c.name, allocs)
		}
	}
}

func BenchmarkRead4K(b *testing.B) {
	lu, _ := NewLogicalUnit(newMemDevice(64<<20), LUConfig{Serial: "bench"})
	tgt := NewTarget(TargetConfig{})
	tgt.AddLU(0, lu)
	exec(tgt, nexusA, tur, nil, nil)
	b.SetBytes(4096)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		cmd := Command{Nexus: nexusA, CDB: cdb10(opRead10, 0, 0, 8), DataIn: make([]byte, 4096)}
		for pb.Next() {
			tgt.Execute(&cmd)
		}
	})
}

func BenchmarkWrite4K(b *testing.B) {
	lu, _ := NewLogicalUnit(newMemDevice(64<<20), LUConfig{Serial: "bench"})
	tgt := NewTarget(TargetConfig{})
	tgt.AddLU(0, lu)
	exec(tgt, nexusA, tur, nil, nil)
	b.SetBytes(4096)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		cmd := Command{Nexus: nexusA, CDB: cdb10(opWrite10, 0, 0, 8), DataOut: make([]byte, 4096)}
		for pb.Next() {
			tgt.Execute(&cmd)
		}
	})
}
