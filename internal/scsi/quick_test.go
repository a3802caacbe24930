package scsi

import "testing"

// Quick must say "quick" only for commands that cannot wait for the
// medium: the transport runs those on its reader.
func TestQuick(t *testing.T) {
	tl := newMemLU(t, LUConfig{})
	cases := []struct {
		name string
		cdb  []byte
		want bool
	}{
		{"READ(10)", []byte{0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0}, true},
		{"READ(16) FUA", []byte{0x88, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0}, false},
		{"WRITE(10)", []byte{0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0}, true},
		{"WRITE(10) FUA", []byte{0x2a, 0x08, 0, 0, 0, 0, 0, 0, 8, 0}, false},
		{"SYNCHRONIZE CACHE(10)", []byte{0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0}, false},
		{"UNMAP", []byte{0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0}, false},
	}
	for _, c := range cases {
		if got := tl.tgt.Quick(0, c.cdb); got != c.want {
			t.Errorf("%s: Quick = %v, want %v", c.name, got, c.want)
		}
	}
	if tl.tgt.Quick(7, cases[0].cdb) {
		t.Error("a missing LUN is quick")
	}
	wt := newMemLU(t, LUConfig{WriteCacheDisabled: true})
	if wt.tgt.Quick(0, cases[2].cdb) {
		t.Error("WRITE with the write cache off (write-through, flush per write) is quick")
	}
	remote := newTestLU(t, remoteDevice{newMemDevice(1 << 20)}, LUConfig{})
	for _, c := range cases[:3] {
		if remote.tgt.Quick(0, c.cdb) {
			t.Errorf("%s on a remote device (every I/O a network round trip) is quick", c.name)
		}
	}
}

// remoteDevice is a memDevice that says its I/O goes over the network.
type remoteDevice struct{ *memDevice }

func (remoteDevice) Remote() bool { return true }
