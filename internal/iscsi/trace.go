package iscsi

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/diskless-boot/diskless/internal/iotrace"
	"github.com/diskless-boot/diskless/internal/scsi"
)

// I/O traces (Config.TraceDir): what each host's disk served during one
// boot, for replaying real boots in benchmarks (bench/replay).
//
// A target's trace file opens at the login of a session when the target
// has none open, and closes Config.TraceLinger (30 s) after its last
// session ended, so that one file holds a boot: a BIOS boot of the
// end-to-end image has four sessions one after the other, seconds apart
// (iPXE's probe and sanboot, the initramfs' iscsistart, the OS's iscsid),
// because iPXE's connection ends when Linux resets the network card and
// iscsistart logs out before iscsid logs in. Two boots less than
// TraceLinger apart share a file. Shutdown closes every file.
//
// Off, a command pays one nil check (session.trace). On, one mutex and a
// formatted line in a 64 KiB buffer; files are capped at
// iotrace.DefaultMaxRecords records.

// traceFile is one target's open trace.
type traceFile struct {
	path  string
	f     *os.File
	w     *iotrace.Writer
	start int64 // monoNow at its first login: the trace's time 0
	refs  int   // sessions writing to it
	// linger closes the file TraceLinger after its last session ended,
	// unless a login stops it first.
	linger *time.Timer
}

// sessionTrace is a session's handle on its target's trace.
type sessionTrace struct {
	file  *traceFile
	index int
}

// record adds a READ or WRITE the target served.
func (st *sessionTrace) record(t *task, cdb []byte) {
	lba, n := scsi.BlockRange(cdb)
	st.file.w.IO(iotrace.IO{At: time.Duration(t.start - st.file.start), Session: st.index,
		Write: t.op == OpWrite, LUN: t.lun, LBA: lba, Blocks: n})
}

// startTrace opens or joins the trace of ss's target, when traces are on.
func (s *Server) startTrace(ss *session) {
	if s.cfg.TraceDir == "" || ss.discovery {
		return
	}
	s.traceMu.Lock()
	defer s.traceMu.Unlock()
	tf := s.traces[ss.key.target]
	if tf == nil {
		now := time.Now()
		path := filepath.Join(s.cfg.TraceDir, traceName(ss.key.target, now))
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
		if err != nil {
			s.warn.Log(s.log, slog.LevelWarn, "io trace not written", "iqn", ss.key.target, "err", err)
			return
		}
		bs := 512
		if lu := ss.target.SCSI.LU(0); lu != nil {
			bs = lu.BlockSize()
		}
		tf = &traceFile{path: path, f: f, start: monoNow(),
			w: iotrace.NewWriter(f, iotrace.Header{Target: ss.key.target, Started: now, BlockSize: bs}, 0)}
		if s.traces == nil {
			s.traces = map[string]*traceFile{}
		}
		s.traces[ss.key.target] = tf
	}
	if tf.linger != nil {
		tf.linger.Stop() // if it fires anyway, it finds refs > 0
		tf.linger = nil
	}
	tf.refs++
	at := time.Duration(monoNow() - tf.start)
	ss.trace = &sessionTrace{file: tf, index: tf.w.Login(at, ss.key.isid, ss.tsih, ss.key.initiator)}
}

// endTrace records the end of ss; the trace of its target closes
// TraceLinger after its last session ended.
func (s *Server) endTrace(ss *session) {
	st := ss.trace
	if st == nil {
		return
	}
	s.traceMu.Lock()
	defer s.traceMu.Unlock()
	tf := st.file
	tf.w.Logout(time.Duration(monoNow()-tf.start), st.index)
	if tf.refs--; tf.refs > 0 {
		return
	}
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		s.closeTraceLocked(ss.key.target, tf)
		return
	}
	target := ss.key.target
	tf.linger = time.AfterFunc(s.cfg.TraceLinger, func() {
		s.traceMu.Lock()
		defer s.traceMu.Unlock()
		if tf.refs == 0 && s.traces[target] == tf {
			s.closeTraceLocked(target, tf)
		}
	})
}

// closeTraces closes every trace no session writes to (at shutdown).
func (s *Server) closeTraces() {
	s.traceMu.Lock()
	defer s.traceMu.Unlock()
	for target, tf := range s.traces {
		if tf.refs == 0 {
			if tf.linger != nil {
				tf.linger.Stop()
			}
			s.closeTraceLocked(target, tf)
		}
	}
}

// closeTraceLocked closes tf, the trace of target. Called with traceMu held.
func (s *Server) closeTraceLocked(target string, tf *traceFile) {
	delete(s.traces, target)
	err := tf.w.Close()
	if cerr := tf.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		s.warn.Log(s.log, slog.LevelWarn, "io trace not written", "iqn", target, "err", err)
		return
	}
	s.log.Info("io trace written", "iqn", target, "path", tf.path)
}

// traceName is the file of a target's trace started at t:
// <target with / and : replaced>-<UTC time to the microsecond>.trace.
func traceName(target string, t time.Time) string {
	safe := strings.Map(func(r rune) rune {
		if r == '/' || r == ':' || r < ' ' {
			return '_'
		}
		return r
	}, target)
	return fmt.Sprintf("%s-%s.trace", safe, t.UTC().Format("20060102T150405.000000"))
}
