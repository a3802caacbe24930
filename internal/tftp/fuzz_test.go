package tftp

import (
	"bytes"
	"io"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func FuzzParseRequest(f *testing.F) {
	for _, seed := range [][]byte{rrqIPXE, rrqAtftp, rrqHPA, rrqPXEProbe, rrqCurl,
		[]byte("\x00\x02upload.bin\x00octet\x00"),
		[]byte("\x00\x01a\x00netascii\x00windowsize\x0064\x00timeout\x00255\x00BLKSIZE\x0065464\x00"),
		append(append([]byte{}, rrqIPXE...), 0, 0, 0)} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRequest(b)
		if err != nil {
			return
		}
		if r.Filename == "" || r.Mode == "" || len(r.Options) > MaxOptions {
			t.Fatalf("accepted %+v", r)
		}
		enc := r.AppendBinary(nil)
		r2, err := ParseRequest(enc)
		if err != nil || !reflect.DeepEqual(r, r2) {
			t.Fatalf("round trip: %+v -> %x -> %+v, %v", r, enc, r2, err)
		}
		for _, maxBlock := range []int{512, 1468, MaxBlockSize} {
			n := negotiate(r.Options, int64(len(b)), maxBlock, MaxWindowSize, 255*time.Second)
			if n.blockSize < MinBlockSize || n.blockSize > max(maxBlock, DefaultBlockSize) ||
				n.windowSize < 1 || n.windowSize > MaxWindowSize || n.timeout < 0 || len(n.oack) > 4 {
				t.Fatalf("negotiated %+v from %+v", n, r.Options)
			}
			for _, o := range n.oack {
				if _, err := strconv.ParseUint(o.Value, 10, 63); err != nil {
					t.Fatalf("OACK value %q", o.Value)
				}
			}
		}
		cleanName(r.Filename)
	})
}

func FuzzParsePacket(f *testing.F) {
	for _, seed := range [][]byte{
		{0, 3, 0, 1, 'a', 'b'}, {0, 4, 0xff, 0xff}, {0, 4, 0, 0, 0, 0},
		[]byte("\x00\x05\x00\x01file not found\x00"), []byte("\x00\x05\x00\x08"),
		[]byte("\x00\x06blksize\x001468\x00tsize\x0070000\x00"), {0, 6}, rrqIPXE,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		op, err := PeekOpcode(b)
		if err != nil {
			return
		}
		switch op {
		case OpDATA:
			d, err := ParseData(b)
			if err == nil && !bytes.Equal(d.AppendBinary(nil), b) {
				t.Fatal("DATA round trip")
			}
		case OpACK:
			a, err := ParseAck(b)
			if err == nil && !bytes.Equal(a.AppendBinary(nil), b[:4]) {
				t.Fatal("ACK round trip")
			}
		case OpERROR:
			e, err := ParseError(b)
			if err == nil {
				e2, err := ParseError(e.AppendBinary(nil))
				if err != nil || e2 != e || len(e.Message) > maxErrorMessage {
					t.Fatalf("ERROR round trip %+v %+v", e, e2)
				}
			}
		case OpOACK:
			o, err := ParseOAck(b)
			if err == nil {
				o2, err := ParseOAck(o.AppendBinary(nil))
				if err != nil || !reflect.DeepEqual(o, o2) {
					t.Fatalf("OACK round trip %+v %+v", o, o2)
				}
			}
		default:
			ParseRequest(b)
		}
	})
}

// FuzzNetascii checks the streaming conversion against a one-shot
// reference, for any input and any read sizes, and through streamSource's
// block assembly.
func FuzzNetascii(f *testing.F) {
	f.Add([]byte("a\nb\r\nc\rd"), uint8(1), uint8(8))
	f.Add([]byte("\r\r\n\n"), uint8(3), uint8(8))
	f.Add(bytes.Repeat([]byte("\n"), 600), uint8(7), uint8(64))
	f.Fuzz(func(t *testing.T, in []byte, chunk, blk uint8) {
		want := strings.NewReplacer("\r", "\r\x00", "\n", "\r\n").Replace(string(in))
		r := newNetasciiReader(bytes.NewReader(in))
		var got []byte
		buf := make([]byte, int(chunk)%16+1)
		for {
			n, err := r.Read(buf)
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if string(got) != want {
			t.Fatalf("got %q, want %q", got, want)
		}

		bs := int64(blk)%64 + MinBlockSize
		src := &streamSource{r: newNetasciiReader(bytes.NewReader(in)), blockSize: bs, window: 3}
		got = got[:0]
		p := make([]byte, bs)
		for i := int64(0); ; i++ {
			// Read each block twice (a retransmission) before releasing it.
			n, err := src.readBlock(i, p)
			if err != nil {
				t.Fatal(err)
			}
			n2, _ := src.readBlock(i, p)
			if n2 != n {
				t.Fatalf("block %d re-read %d bytes, first %d", i, n2, n)
			}
			got = append(got, p[:n]...)
			src.release(i + 1)
			if int64(n) < bs {
				break
			}
			if int64(cap(src.buf)) > 3*bs {
				t.Fatalf("stream buffer grew to %d", cap(src.buf))
			}
		}
		if string(got) != want {
			t.Fatalf("blocks: got %q, want %q", got, want)
		}
	})
}
