package app

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/diskless-boot/diskless/internal/imagefmt"
	"github.com/diskless-boot/diskless/internal/storage"
)

// OpenImport opens a disk image file of any format imagefmt reads, to be
// imported as an image version (api.Importer). Formats read through
// qemu-img are converted next to the file's directory's temp space.
func OpenImport(ctx context.Context, path string) (storage.Source, string, func() error, error) {
	src, err := imagefmt.Open(ctx, path, imagefmt.OpenOptions{})
	if err != nil {
		return nil, "", nil, err
	}
	if src.Size()%4096 != 0 {
		src.Close()
		return nil, "", nil, fmt.Errorf("%s: %d bytes is not a whole number of 4 KiB blocks", path, src.Size())
	}
	return src, fmt.Sprintf("import %s (%s)", path, src.Format()), src.Close, nil
}

// InspectImport checks a file to import without converting it and says
// its virtual size (api.Config.Inspect).
func InspectImport(ctx context.Context, path string) (int64, error) {
	in, err := imagefmt.Inspect(ctx, path)
	if err != nil {
		return 0, err
	}
	if in.Size%4096 != 0 {
		return 0, fmt.Errorf("%s: %d bytes is not a whole number of 4 KiB blocks", path, in.Size)
	}
	return in.Size, nil
}

// ExportImage writes a version to a new file, raw or qcow2 (api.Exporter).
// A file that exists is refused: an export never overwrites.
func ExportImage(ctx context.Context, src storage.Source, srcPath, path, format string, progress func(int64)) error {
	f, err := imagefmt.ParseFormat(format)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("%s exists: an export does not overwrite files", path)
	}
	return imagefmt.Export(ctx, src, src.Size(), path, f, imagefmt.ExportOptions{
		SourcePath: srcPath, TempDir: filepath.Dir(path),
		Progress: func(done, total int64) {
			if progress != nil {
				progress(done)
			}
		},
	})
}
