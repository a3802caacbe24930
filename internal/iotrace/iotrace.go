// Package iotrace writes and reads block I/O traces: the READs and WRITEs a
// host's disk served, in the order and at the times they arrived, with the
// session (iPXE's, the OS's) each came on. The target writes them when
// asked (`diskless serve --trace-io DIR`); benchmarks replay them
// (bench/replay). It does no I/O of its own beyond the io.Writer and
// io.Reader it is handed, and knows nothing of iSCSI or SCSI.
//
// A trace is a text file, one record a line, comma-separated, times in
// microseconds from the trace's start (the login of the first session):
//
//	# diskless io trace v1
//	# target iqn.2026-11.org.diskless:x.disk.pc1
//	# started 2026-12-05T06:30:00.123456Z
//	# block-size 512
//	L,<us>,<session>,<isid hex>,<tsih>,<initiator>   a session logged in
//	R,<us>,<session>,<lun>,<lba>,<blocks>            a READ it served (GOOD)
//	W,<us>,<session>,<lun>,<lba>,<blocks>            a WRITE it served (GOOD)
//	E,<us>,<session>                                 the session ended
//	# dropped <n> records after the cap of <max>
//
// Sessions are numbered from 0 in login order. R and W records are written
// in the order the commands were served; their time is when the command
// arrived at the target. An initiator with several commands in flight (the
// Linux kernel's) gets them served out of order, so times may go back from
// one record to the next: sort by time for the order they were sent in. At most the
// writer's cap of R and W records are written (DefaultMaxRecords); the rest
// are counted in the last line. Lines starting with # that are not one of
// the above are comments.
package iotrace

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultMaxRecords caps the R and W records of one trace: a Debian boot
// makes some ten thousand; a million lines are ~30 MB.
const DefaultMaxRecords = 1 << 20

const magic = "# diskless io trace v1"

// Header describes a trace.
type Header struct {
	Target    string    // the target's name (IQN)
	Started   time.Time // wall clock of the trace's time 0
	BlockSize int       // bytes per logical block of the LBAs (default 512)
}

// Session is a session's L (and E) record.
type Session struct {
	Index     int
	At        time.Duration // login
	End       time.Duration // 0 when the trace has no E record for it
	ISID      uint64
	TSIH      uint16
	Initiator string
}

// IO is an R or W record.
type IO struct {
	At      time.Duration
	Session int
	Write   bool
	LUN     uint64
	LBA     uint64
	Blocks  uint32
}

// Writer writes a trace. It is safe for concurrent use.
type Writer struct {
	mu       sync.Mutex
	w        *bufio.Writer
	buf      []byte
	max      int
	n        int // R and W records written
	dropped  int
	sessions int
	err      error
}

// NewWriter writes h to w and returns a writer of at most max R and W
// records (DefaultMaxRecords when max <= 0).
func NewWriter(w io.Writer, h Header, max int) *Writer {
	if max <= 0 {
		max = DefaultMaxRecords
	}
	if h.BlockSize == 0 {
		h.BlockSize = 512
	}
	tw := &Writer{w: bufio.NewWriterSize(w, 64<<10), max: max}
	_, tw.err = fmt.Fprintf(tw.w, "%s\n# target %s\n# started %s\n# block-size %d\n",
		magic, oneLine(h.Target), h.Started.UTC().Format(time.RFC3339Nano), h.BlockSize)
	return tw
}

func oneLine(s string) string {
	return strings.NewReplacer("\n", " ", "\r", " ", ",", " ").Replace(s)
}

func us(d time.Duration) uint64 {
	if d < 0 {
		return 0
	}
	return uint64(d / time.Microsecond)
}

// Login records a session's login at time at and returns its index.
func (w *Writer) Login(at time.Duration, isid uint64, tsih uint16, initiator string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	i := w.sessions
	w.sessions++
	b := append(w.buf[:0], "L,"...)
	b = strconv.AppendUint(b, us(at), 10)
	b = append(b, ',')
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, ',')
	b = fmt.Appendf(b, "%012x", isid)
	b = append(b, ',')
	b = strconv.AppendUint(b, uint64(tsih), 10)
	b = append(b, ',')
	b = append(b, oneLine(initiator)...)
	w.line(b)
	return i
}

// Logout records the end of session i.
func (w *Writer) Logout(at time.Duration, i int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	b := append(w.buf[:0], "E,"...)
	b = strconv.AppendUint(b, us(at), 10)
	b = append(b, ',')
	b = strconv.AppendInt(b, int64(i), 10)
	w.line(b)
}

// IO records a READ or WRITE; beyond the cap it is only counted. It does
// not allocate.
func (w *Writer) IO(r IO) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n >= w.max {
		w.dropped++
		return
	}
	w.n++
	b := append(w.buf[:0], 'R', ',')
	if r.Write {
		b[0] = 'W'
	}
	b = strconv.AppendUint(b, us(r.At), 10)
	b = append(b, ',')
	b = strconv.AppendInt(b, int64(r.Session), 10)
	b = append(b, ',')
	b = strconv.AppendUint(b, r.LUN, 10)
	b = append(b, ',')
	b = strconv.AppendUint(b, r.LBA, 10)
	b = append(b, ',')
	b = strconv.AppendUint(b, uint64(r.Blocks), 10)
	w.line(b)
}

// line writes b and a newline, keeping the first error. Called with mu held.
func (w *Writer) line(b []byte) {
	b = append(b, '\n')
	w.buf = b
	if w.err == nil {
		_, w.err = w.w.Write(b)
	}
}

// Close writes the dropped count, if any, and flushes. It does not close
// the underlying writer.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dropped > 0 && w.err == nil {
		_, w.err = fmt.Fprintf(w.w, "# dropped %d records after the cap of %d\n", w.dropped, w.max)
	}
	if w.err == nil {
		w.err = w.w.Flush()
	}
	return w.err
}

// Trace is a parsed trace.
type Trace struct {
	Header
	Sessions []Session
	IOs      []IO
	Dropped  int // records the writer left out after its cap
}

// ErrFormat is wrapped by every error about a malformed trace.
var ErrFormat = errors.New("iotrace: malformed trace")

// Read parses a trace of at most max R and W records (DefaultMaxRecords
// when max <= 0). Every I/O must name a session logged in before it.
func Read(r io.Reader, max int) (*Trace, error) {
	if max <= 0 {
		max = DefaultMaxRecords
	}
	t := &Trace{Header: Header{BlockSize: 512}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 4096)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		bad := func(why string) error { return fmt.Errorf("%w: line %d: %s: %q", ErrFormat, n, why, line) }
		if n == 1 {
			if line != magic {
				return nil, bad("not a diskless io trace v1")
			}
			continue
		}
		if strings.HasPrefix(line, "#") {
			if err := t.comment(line); err != nil {
				return nil, bad(err.Error())
			}
			continue
		}
		if line == "" {
			continue
		}
		f := strings.Split(line, ",")
		nums := func(fields []string) ([]uint64, error) {
			v := make([]uint64, len(fields))
			for i, s := range fields {
				x, err := strconv.ParseUint(s, 10, 64)
				if err != nil {
					return nil, err
				}
				v[i] = x
			}
			return v, nil
		}
		switch f[0] {
		case "L":
			if len(f) != 6 {
				return nil, bad("want 6 fields")
			}
			v, err := nums([]string{f[1], f[2], f[4]})
			if err != nil || v[1] != uint64(len(t.Sessions)) || v[2] > 0xffff {
				return nil, bad("bad time, session or tsih")
			}
			isid, err := strconv.ParseUint(f[3], 16, 48)
			if err != nil {
				return nil, bad("bad isid")
			}
			at := time.Duration(v[0]) * time.Microsecond
			t.Sessions = append(t.Sessions, Session{Index: len(t.Sessions), At: at, ISID: isid, TSIH: uint16(v[2]), Initiator: f[5]})
		case "R", "W":
			if len(f) != 6 {
				return nil, bad("want 6 fields")
			}
			v, err := nums(f[1:])
			if err != nil || v[4] > 0xffffffff {
				return nil, bad("bad number")
			}
			if v[1] >= uint64(len(t.Sessions)) {
				return nil, bad("session not logged in")
			}
			at, s := time.Duration(v[0])*time.Microsecond, int(v[1])
			if len(t.IOs) >= max {
				return nil, bad(fmt.Sprintf("more than %d records", max))
			}
			t.IOs = append(t.IOs, IO{At: at, Session: s, Write: f[0] == "W", LUN: v[2], LBA: v[3], Blocks: uint32(v[4])})
		case "E":
			if len(f) != 3 {
				return nil, bad("want 3 fields")
			}
			v, err := nums(f[1:])
			if err != nil || v[1] >= uint64(len(t.Sessions)) {
				return nil, bad("bad time or session")
			}
			t.Sessions[v[1]].End = time.Duration(v[0]) * time.Microsecond
		default:
			return nil, bad("unknown record")
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFormat, err)
	}
	if t.Target == "" && len(t.IOs) == 0 && len(t.Sessions) == 0 && t.Started.IsZero() {
		return nil, fmt.Errorf("%w: empty", ErrFormat)
	}
	return t, nil
}

// comment takes in the header lines and the dropped count.
func (t *Trace) comment(line string) error {
	k, v, _ := strings.Cut(strings.TrimPrefix(line, "# "), " ")
	switch k {
	case "target":
		t.Target = v
	case "started":
		at, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return err
		}
		t.Started = at
	case "block-size":
		bs, err := strconv.Atoi(v)
		if err != nil || bs < 512 || bs > 1<<16 || bs&(bs-1) != 0 {
			return errors.New("bad block size")
		}
		t.BlockSize = bs
	case "dropped":
		n, _, _ := strings.Cut(v, " ")
		d, err := strconv.Atoi(n)
		if err != nil {
			return err
		}
		t.Dropped = d
	}
	return nil
}
