package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Boot files are kept with a version: the kernel and initrd found on its
// root file system when it was built, so that hosts can boot them over
// HTTP without GRUB (boot: kernel). A version without them boots only
// through its own boot loader.
const (
	BootKernel = "kernel"
	BootInitrd = "initrd"
	// BootCmdline holds the kernel command line the version boots with
	// (root=UUID=..., consoles), as its boot loader would give it.
	BootCmdline = "cmdline"
)

// BootFiles names files on this machine to keep with a new version, by
// kind (BootKernel, BootInitrd). Empty: none.
type BootFiles map[string]string

func checkBootName(name string) error {
	if name != BootKernel && name != BootInitrd && name != BootCmdline {
		return fmt.Errorf("storage: boot file %q: want %s, %s or %s", name, BootKernel, BootInitrd, BootCmdline)
	}
	return nil
}

// bootPath is where a version's boot file lives: next to the version,
// images/<image>/v<N>.<name>.
func (l *Local) bootPath(ref VersionRef, name string) string {
	return filepath.Join(l.root, "images", ref.Image, fmt.Sprintf("v%d.%s", ref.Version, name))
}

// WriteBootFiles implements Backend: each file is copied next to the
// version, durable and read-only, before the version is published.
func (l *Local) WriteBootFiles(ctx context.Context, ref VersionRef, files BootFiles) error {
	for name, src := range files {
		if err := checkBootName(name); err != nil {
			return err
		}
		if err := l.writeBootFile(ctx, ref, name, src); err != nil {
			l.removeBootFiles(ref)
			return err
		}
	}
	return nil
}

func (l *Local) writeBootFile(ctx context.Context, ref VersionRef, name, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("storage: %s of %s: %w", name, ref, err)
	}
	defer in.Close()
	final := l.bootPath(ref, name)
	// The version's directory exists when the version is a file here;
	// the RBD backend keeps only boot files in it.
	if err := os.MkdirAll(filepath.Dir(final), 0o700); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	tmp := filepath.Join(filepath.Dir(final), "."+filepath.Base(final)+".partial")
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			out.Close()
			os.Remove(tmp)
		}
	}()
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		return fmt.Errorf("storage: %s of %s: %w", name, ref, err)
	}
	if err := out.Sync(); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	if err := out.Chmod(0o444); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	ok = true
	return syncDir(filepath.Dir(final))
}

// OpenBootFile implements Backend.
func (l *Local) OpenBootFile(ref VersionRef, name string) (*os.File, error) {
	if err := checkBootName(name); err != nil {
		return nil, err
	}
	f, err := os.Open(l.bootPath(ref, name))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("storage: version %s has no %s: %w", ref, name, os.ErrNotExist)
		}
		return nil, fmt.Errorf("storage: %w", err)
	}
	return f, nil
}

// removeBootFiles removes a version's boot files (with the version).
func (l *Local) removeBootFiles(ref VersionRef) error {
	var errs []error
	for _, name := range []string{BootKernel, BootInitrd, BootCmdline} {
		if err := os.Remove(l.bootPath(ref, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("storage: %w", err))
		}
	}
	return errors.Join(errs...)
}
