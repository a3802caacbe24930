package tftp

import (
	"errors"
	"fmt"
	"io"
)

// blockSource hands out the blocks of one transfer. Blocks are numbered
// from 0 here (the DATA packet of index i carries block number i+1, mod
// 2^16). A block shorter than the block size is the last one.
type blockSource interface {
	// readBlock copies block i into p (len(p) is the block size) and
	// returns its length.
	readBlock(i int64, p []byte) (int, error)
	// release says blocks before i were acknowledged and will not be
	// asked for again.
	release(i int64)
}

// atSource reads blocks straight from a file by offset, so that
// retransmissions need no buffer: the page cache holds the file.
type atSource struct {
	r         io.ReaderAt
	size      int64
	blockSize int64
}

func (s *atSource) readBlock(i int64, p []byte) (int, error) {
	off := i * s.blockSize
	if off >= s.size {
		return 0, nil // the empty last block of a size that is a multiple of blksize
	}
	want := min(int64(len(p)), s.size-off)
	n, err := s.r.ReadAt(p[:want], off)
	if int64(n) == want {
		return n, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		// The file shrank after the size was taken: fail rather than
		// send a transfer shorter than the tsize we announced.
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (s *atSource) release(int64) {}

// streamSource serves blocks of a stream that cannot be read by offset (a
// netascii conversion, or an fs.File without ReadAt). It keeps the
// unacknowledged blocks in memory, so that read-ahead is bounded by the
// window: at most window*blockSize bytes.
type streamSource struct {
	r         io.Reader
	blockSize int64
	window    int64 // most blocks kept
	base      int64 // index of the first block in buf
	buf       []byte
	eof       bool
}

func (s *streamSource) readBlock(i int64, p []byte) (int, error) {
	if i < s.base || i >= s.base+s.window {
		return 0, fmt.Errorf("tftp: block %d outside the window [%d, %d)", i, s.base, s.base+s.window)
	}
	end := (i - s.base + 1) * s.blockSize
	for empty := 0; int64(len(s.buf)) < end && !s.eof; {
		if cap(s.buf) < int(end) {
			nb := make([]byte, len(s.buf), end)
			copy(nb, s.buf)
			s.buf = nb
		}
		n, err := s.r.Read(s.buf[len(s.buf):end])
		s.buf = s.buf[:len(s.buf)+n]
		if n == 0 && err == nil {
			if empty++; empty > 100 {
				return 0, io.ErrNoProgress
			}
		}
		if errors.Is(err, io.EOF) {
			s.eof = true
		} else if err != nil {
			return 0, err
		}
	}
	start := (i - s.base) * s.blockSize
	if start >= int64(len(s.buf)) {
		return 0, nil
	}
	return copy(p, s.buf[start:min(end, int64(len(s.buf)))]), nil
}

func (s *streamSource) release(i int64) {
	if i <= s.base {
		return
	}
	drop := min((i-s.base)*s.blockSize, int64(len(s.buf)))
	s.buf = s.buf[:copy(s.buf, s.buf[drop:])]
	s.base = i
}
