package imagefmt

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// writeFile writes data to a new file in a test directory.
func writeFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDetect(t *testing.T) {
	vdi := make([]byte, 512)
	copy(vdi, "<<< Oracle VM VirtualBox Disk Image >>>\n")
	binary.LittleEndian.PutUint32(vdi[0x40:], vdiSignature)
	oldVPC := make([]byte, 4096) // Virtual PC before 2004: 511-byte footer
	copy(oldVPC[4096-511:], "conectix")
	raw := bytes.Repeat([]byte{0xeb, 0x63, 0x90}, 2000) // a boot sector is no signature
	tests := []struct {
		name string
		data []byte
		want Format
	}{
		{"qcow2 v3", readTestdata(t, "pattern-v3.qcow2"), QCOW2},
		{"qcow2 v2", readTestdata(t, "pattern-v2.qcow2"), QCOW2},
		{"vmdk sparse", readTestdata(t, "head.vmdk"), VMDK},
		{"vmdk descriptor", readTestdata(t, "descriptor.vmdk"), VMDK},
		{"vhdx", readTestdata(t, "head.vhdx"), VHDX},
		{"vdi from qemu-img", readTestdata(t, "head.vdi"), VDI},
		{"vdi from VirtualBox", vdi, VDI},
		{"vpc dynamic", readTestdata(t, "head.vpc"), VPC},
		{"vpc fixed (footer only)", readTestdata(t, "tail-fixed.vpc"), VPC},
		{"vpc 511-byte footer", oldVPC, VPC},
		{"raw", raw, Raw},
		{"empty", nil, Raw},
		{"shorter than a signature", []byte("QF"), Raw},
		{"vdi signature cut off", vdi[:0x42], Raw},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Detect(writeFile(t, "image", tt.data))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("Detect = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestDetectRefusesWhatIsNoImage(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, fifo, filepath.Join(dir, "missing")} {
		// A FIFO must not block the open: a hang here is the bug.
		if f, err := Detect(p); err == nil {
			t.Errorf("Detect(%s) = %s, want an error", p, f)
		}
	}
}

func TestParseFormat(t *testing.T) {
	for in, want := range map[string]Format{
		"raw": Raw, "QCOW2": QCOW2, " vmdk ": VMDK, "vhdx": VHDX, "vdi": VDI, "vpc": VPC, "vhd": VPC,
	} {
		if got, err := ParseFormat(in); err != nil || got != want {
			t.Errorf("ParseFormat(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	if _, err := ParseFormat("iso"); err == nil || !strings.Contains(err.Error(), "qcow2") {
		t.Errorf("ParseFormat(iso) = %v, want an error listing the formats", err)
	}
}

// FuzzDetect feeds Detect's parser any file content: it must return a
// format or an error, never panic, and read only the ends of the file.
func FuzzDetect(f *testing.F) {
	for _, name := range []string{"pattern-v3.qcow2", "pattern-compressed.qcow2", "head.vmdk",
		"descriptor.vmdk", "head.vhdx", "head.vdi", "head.vpc", "tail-fixed.vpc"} {
		f.Add(readTestdata(f, name))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &boundedReader{data: data}
		got, err := detect(r, int64(len(data)))
		if err != nil {
			t.Fatalf("detect on in-memory data: %v", err)
		}
		if got == "" {
			t.Fatal("no format and no error")
		}
		if r.read > 2*probeSize {
			t.Fatalf("read %d bytes, want at most %d", r.read, 2*probeSize)
		}
	})
}

// boundedReader is an in-memory io.ReaderAt that counts what it gives out.
type boundedReader struct {
	data []byte
	read int
}

func (r *boundedReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := bytes.NewReader(r.data).ReadAt(p, off)
	r.read += n
	return n, err
}
