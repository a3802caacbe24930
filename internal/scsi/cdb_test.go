package scsi

import "testing"

// BlockRange decodes every READ/WRITE size and never reads past a CDB
// shorter than its operation code implies (it is fed what the transport
// received).
func TestBlockRange(t *testing.T) {
	for _, c := range []struct {
		cdb    []byte
		lba    uint64
		blocks uint32
	}{
		{[]byte{0x08, 0x01, 0x02, 0x03, 0x00, 0}, 0x010203, 256},                      // READ(6): 0 means 256
		{[]byte{0x28, 0, 0, 0, 0x10, 0x00, 0, 0x00, 0x08, 0}, 0x1000, 8},              // READ(10)
		{[]byte{0xaa, 0, 0, 0, 0, 0x20, 0, 0, 0x01, 0x00, 0, 0}, 0x20, 0x100},         // WRITE(12)
		{[]byte{0x88, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x08, 0, 0, 0}, 1 << 32, 2048}, // READ(16)
		{[]byte{0x88, 0, 0, 0}, 0, 0},                                                 // short
		{nil, 0, 0},
	} {
		lba, n := BlockRange(c.cdb)
		if lba != c.lba || n != c.blocks {
			t.Errorf("% x: lba %#x blocks %d, want %#x %d", c.cdb, lba, n, c.lba, c.blocks)
		}
	}
}
