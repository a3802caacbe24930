package imagefmt

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// qemuImg finds qemu-img on PATH; purpose ends the error when it is not
// there ("read vmdk images").
func qemuImg(purpose string) (string, error) {
	bin, err := exec.LookPath("qemu-img")
	if err != nil {
		return "", fmt.Errorf("imagefmt: %w: needed to %s", ErrNotInstalled, purpose)
	}
	return bin, nil
}

// qemu-img info reads only metadata, so it gets tight limits: an image
// crafted to make it spin or allocate (the reason OpenStack runs it under
// prlimit, CVE-2015-5162) fails instead of taking the host down.
const (
	infoTimeout  = 30 * time.Second
	infoMaxBytes = 1 << 30 // RLIMIT_AS
	infoMaxCPU   = 30      // RLIMIT_CPU, seconds
	infoMaxJSON  = 1 << 20 // bytes of output read
)

// qemuImgInfo is the part of `qemu-img info --output=json` that decides
// whether an image is safe to convert.
type qemuImgInfo struct {
	VirtualSize     int64  `json:"virtual-size"`
	Format          string `json:"format"`
	BackingFilename string `json:"backing-filename"`
	FormatSpecific  struct {
		Type string `json:"type"`
		Data struct {
			Extents []struct {
				Filename string `json:"filename"`
			} `json:"extents"`
		} `json:"data"`
	} `json:"format-specific"`
}

// inspect runs qemu-img info on path as format and refuses what must not be
// converted: a backing file, and VMDK extents outside the descriptor's
// directory (a descriptor is a text file that can name any path, such as
// /etc/shadow, as a FLAT extent).
func inspect(ctx context.Context, bin, path string, format Format) (qemuImgInfo, error) {
	var info qemuImgInfo
	ctx, cancel := context.WithTimeout(ctx, infoTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "info", "--output=json", "-f", string(format), path)
	var stdout limitedBuffer
	stdout.max = infoMaxJSON
	var stderr limitedBuffer
	stderr.max = 4096
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return info, fmt.Errorf("qemu-img info: %w", err)
	}
	// Best effort: the limits apply from here, after the exec, which is
	// before qemu-img has read the image in practice.
	_ = unix.Prlimit(cmd.Process.Pid, unix.RLIMIT_AS, &unix.Rlimit{Cur: infoMaxBytes, Max: infoMaxBytes}, nil)
	_ = unix.Prlimit(cmd.Process.Pid, unix.RLIMIT_CPU, &unix.Rlimit{Cur: infoMaxCPU, Max: infoMaxCPU}, nil)
	if err := cmd.Wait(); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return info, fmt.Errorf("qemu-img info: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	if stdout.truncated {
		return info, fmt.Errorf("qemu-img info: more than %d bytes of output", infoMaxJSON)
	}
	if err := json.Unmarshal(stdout.Bytes(), &info); err != nil {
		return info, fmt.Errorf("qemu-img info: %w", err)
	}
	if info.BackingFilename != "" {
		return info, &UnsupportedError{Format: format, Feature: fmt.Sprintf("a backing file (%q)", info.BackingFilename),
			Hint: "backing files are never opened from an uploaded image; flatten it first: qemu-img convert -O " + string(format)}
	}
	if info.VirtualSize < 0 {
		return info, fmt.Errorf("qemu-img info: virtual size %d: %w", info.VirtualSize, ErrMalformed)
	}
	dir := filepath.Dir(filepath.Clean(path))
	for _, e := range info.FormatSpecific.Data.Extents {
		if err := checkExtent(dir, e.Filename); err != nil {
			return info, &UnsupportedError{Format: format, Feature: fmt.Sprintf("an extent file %q (%v)", e.Filename, err),
				Hint: "keep every extent in the descriptor's directory, or convert it to a single file first"}
		}
	}
	return info, nil
}

// checkExtent accepts an extent file that is a regular file (not a
// symlink) directly in dir.
func checkExtent(dir, name string) error {
	p := name
	if !filepath.IsAbs(p) {
		p = filepath.Join(dir, p)
	}
	p = filepath.Clean(p)
	if filepath.Dir(p) != dir {
		return errors.New("outside the descriptor's directory")
	}
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return errors.New("not a regular file")
	}
	return nil
}

// openConverted converts the image at path to a temporary sparse raw file
// with qemu-img and opens that. The file is unlinked once open, so it goes
// away with the Source, or with the process.
func openConverted(ctx context.Context, path string, format Format, opts OpenOptions) (Source, error) {
	bin, err := qemuImg("read " + string(format) + " images")
	if err != nil {
		return nil, err
	}
	// qemu-img names extents by joining the descriptor's path with
	// theirs; from an absolute path they come back absolute.
	if path, err = filepath.Abs(path); err != nil {
		return nil, fmt.Errorf("imagefmt: %w", err)
	}
	info, err := inspect(ctx, bin, path, format)
	if err != nil {
		return nil, fmt.Errorf("imagefmt: open %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(tempDir(opts.TempDir), ".imagefmt-*.raw")
	if err != nil {
		return nil, fmt.Errorf("imagefmt: %w", err)
	}
	name := tmp.Name()
	tmp.Close()
	defer os.Remove(name)
	// -f names the format, so qemu-img never probes; the output is
	// sparse (qemu-img's default -S 4k) and not flushed (its default
	// cache mode for convert output): it is a temporary file.
	err = runQemuImg(ctx, bin, info.VirtualSize, opts.Progress,
		"convert", "-p", "-f", string(format), "-O", "raw", path, name)
	if err != nil {
		return nil, fmt.Errorf("imagefmt: convert %s from %s: %w", path, format, err)
	}
	in, err := openInput(name)
	if err != nil {
		return nil, err
	}
	if in.Size() != info.VirtualSize {
		in.Close()
		return nil, fmt.Errorf("imagefmt: convert %s: qemu-img wrote %d bytes, virtual size is %d", path, in.Size(), info.VirtualSize)
	}
	in.format = format
	return in, nil
}

// runQemuImg runs qemu-img with args. With progress set, it reads the
// "(12.34/100%)" lines that -p prints and reports them as a share of total.
// Cancelling ctx kills qemu-img.
func runQemuImg(ctx context.Context, bin string, total int64, progress func(done, total int64), args ...string) error {
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr limitedBuffer
	stderr.max = 4096
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("qemu-img: %w", err)
	}
	sc := bufio.NewScanner(stdout)
	sc.Split(splitProgress)
	for sc.Scan() {
		if pct, ok := parseProgress(sc.Bytes()); ok && progress != nil {
			progress(int64(pct/100*float64(total)), total)
		}
	}
	// Drain whatever the scanner gave up on (a line over its limit) so
	// qemu-img never blocks writing.
	io.Copy(io.Discard, stdout)
	err = cmd.Wait()
	if ctx.Err() != nil {
		// Cancelled, even if qemu-img finished before the kill: the
		// caller has given up on the result.
		return ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("qemu-img %s: %w: %s", args[0], err, bytes.TrimSpace(stderr.Bytes()))
	}
	if progress != nil {
		progress(total, total)
	}
	return nil
}

// splitProgress splits qemu-img -p output, whose updates end in '\r'.
func splitProgress(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// parseProgress reads "    (12.34/100%)".
func parseProgress(line []byte) (float64, bool) {
	line = bytes.TrimSpace(line)
	rest, ok := bytes.CutPrefix(line, []byte("("))
	if !ok {
		return 0, false
	}
	num, ok := bytes.CutSuffix(rest, []byte("/100%)"))
	if !ok {
		return 0, false
	}
	pct, err := strconv.ParseFloat(string(num), 64)
	if err != nil || !(pct >= 0 && pct <= 100) { // NaN fails both
		return 0, false
	}
	return pct, true
}

// limitedBuffer keeps the first max bytes written to it and drops the rest,
// so a chatty child cannot grow it without bound.
type limitedBuffer struct {
	bytes.Buffer
	max       int
	truncated bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room < len(p) {
		b.truncated = true
		b.Buffer.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return b.Buffer.Write(p)
}
