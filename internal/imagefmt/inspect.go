package imagefmt

import (
	"context"
	"fmt"
)

// Info is what Inspect learns of an image without converting it.
type Info struct {
	Format Format
	Size   int64 // virtual disk size in bytes
}

// Inspect tells an image's format and virtual size cheaply: raw and qcow2
// are read directly, the formats qemu-img reads are asked with `qemu-img
// info` and checked as Open checks them (no backing file, VMDK extents in
// the descriptor's directory), but not converted. An importer uses it to
// refuse a bad file at once and to size its progress.
func Inspect(ctx context.Context, path string) (Info, error) {
	in, err := openInput(path)
	if err != nil {
		return Info{}, err
	}
	format, err := detect(in, in.Size())
	if err != nil {
		in.Close()
		return Info{}, fmt.Errorf("imagefmt: detect %s: %w", path, err)
	}
	switch format {
	case Raw:
		defer in.Close()
		return Info{Format: Raw, Size: in.Size()}, nil
	case QCOW2:
		defer in.Close()
		q, err := newQCOW2(in, in.Size())
		if err != nil {
			return Info{}, fmt.Errorf("imagefmt: open %s: %w", path, err)
		}
		return Info{Format: QCOW2, Size: q.Size()}, nil
	}
	in.Close()
	bin, err := qemuImg("read " + string(format) + " images")
	if err != nil {
		return Info{}, err
	}
	info, err := inspect(ctx, bin, path, format)
	if err != nil {
		return Info{}, fmt.Errorf("imagefmt: %s: %w", path, err)
	}
	return Info{Format: format, Size: info.VirtualSize}, nil
}
