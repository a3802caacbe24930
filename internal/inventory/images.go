package inventory

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/diskless-boot/diskless/internal/storage"
	"github.com/diskless-boot/diskless/internal/store"
)

// Limits on images.
const (
	// MaxImageSize bounds a version (and so a host disk): 64 TiB.
	MaxImageSize = 64 << 40
	// minImageSize is one 4 KiB cluster.
	minImageSize = 4096
)

// CheckSize checks a disk size: a multiple of 4 KiB (the overlay's
// cluster, and every block size a LUN can have up to it) within bounds.
func CheckSize(field string, size int64) error {
	if size < minImageSize || size > MaxImageSize || size%4096 != 0 {
		return invalid(field, "%d bytes: want a multiple of 4096 from 4 KiB to 64 TiB", size)
	}
	return nil
}

// ImageInfo is an image with its versions and who uses them.
type ImageInfo struct {
	Image
	Versions []VersionInfo `json:"versions"`
}

// VersionInfo is a version and the hosts that use it.
type VersionInfo struct {
	Version
	Hosts []string `json:"hosts"` // hosts whose disk or snapshots use it, or that are pinned to it
}

// Images lists every image with its versions.
func (inv *Inventory) Images() ([]ImageInfo, error) {
	var out []ImageInfo
	err := inv.st.View(func(tx store.Tx) error {
		var names []string
		err := tx.ForEach(store.BucketImages, "", func(k string, _ []byte) error {
			names = append(names, k)
			return nil
		})
		if err != nil {
			return err
		}
		users, err := versionUsers(tx)
		if err != nil {
			return err
		}
		for _, n := range names {
			info, err := imageInfo(tx, n, users)
			if err != nil {
				return err
			}
			out = append(out, info)
		}
		return nil
	})
	return out, err
}

// Image returns one image with its versions.
func (inv *Inventory) Image(name string) (ImageInfo, error) {
	var out ImageInfo
	err := inv.st.View(func(tx store.Tx) error {
		users, err := versionUsers(tx)
		if err != nil {
			return err
		}
		out, err = imageInfo(tx, name, users)
		return err
	})
	return out, err
}

func imageInfo(tx store.Tx, name string, users map[storage.VersionRef][]string) (ImageInfo, error) {
	var info ImageInfo
	if err := getJSON(tx, store.BucketImages, name, &info.Image); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return info, notFound("no image %q", name)
		}
		return info, err
	}
	info.Versions = []VersionInfo{}
	err := tx.ForEach(store.BucketVersions, name+"/", func(k string, b []byte) error {
		var v VersionInfo
		if err := getJSON(tx, store.BucketVersions, k, &v.Version); err != nil {
			return err
		}
		v.Hosts = users[v.Ref()]
		if v.Hosts == nil {
			v.Hosts = []string{}
		}
		info.Versions = append(info.Versions, v)
		return nil
	})
	return info, err
}

// versionUsers maps each version to the hosts using it: on their disk,
// in a snapshot, pinned to it, or following the image's newest version.
func versionUsers(tx store.Tx) (map[storage.VersionRef][]string, error) {
	users := map[storage.VersionRef][]string{}
	add := func(v storage.VersionRef, h string) {
		if !slices.Contains(users[v], h) {
			users[v] = append(users[v], h)
		}
	}
	err := forEachHost(tx, func(h *Host) error {
		for _, v := range h.Disk.Versions() {
			add(v, h.Name)
		}
		if h.Image != "" {
			if ref, err := wantedBase(tx, h); err == nil {
				add(ref, h.Name)
			}
		}
		return nil
	})
	return users, err
}

// Version returns one version.
func (inv *Inventory) Version(image string, n int) (Version, error) {
	var v Version
	err := inv.st.View(func(tx store.Tx) error {
		var err error
		v, err = getVersion(tx, image, n)
		return err
	})
	return v, err
}

func getVersion(tx store.Tx, image string, n int) (Version, error) {
	var v Version
	err := getJSON(tx, store.BucketVersions, versionKey(image, n), &v)
	if errors.Is(err, store.ErrNotFound) {
		return v, notFound("image %q has no version %d", image, n)
	}
	return v, err
}

// ResolveVersion turns a version number (0: the newest) into a ready
// version.
func (inv *Inventory) ResolveVersion(image string, n int) (Version, error) {
	var v Version
	err := inv.st.View(func(tx store.Tx) error {
		ref, err := resolve(tx, image, n)
		if err != nil {
			return err
		}
		v, err = getVersion(tx, ref.Image, ref.Version)
		return err
	})
	return v, err
}

// resolve is ResolveVersion in a transaction.
func resolve(tx store.Tx, image string, n int) (storage.VersionRef, error) {
	var img Image
	if err := getJSON(tx, store.BucketImages, image, &img); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return storage.VersionRef{}, notFound("no image %q", image)
		}
		return storage.VersionRef{}, err
	}
	if n == 0 {
		if img.Latest == 0 {
			return storage.VersionRef{}, conflict("image %q has no version yet", image)
		}
		n = img.Latest
	}
	v, err := getVersion(tx, image, n)
	if err != nil {
		return storage.VersionRef{}, err
	}
	if v.State != VersionReady {
		return storage.VersionRef{}, conflict("version %s is still being written", v.Ref())
	}
	return v.Ref(), nil
}

// NewImage describes CreateImage's image.
type NewImage struct {
	Name        string
	Description string
	// Size, when not zero, makes version 1 empty (all zeros) of this size.
	Size   int64
	Source string // SourceAPI (default) or SourceYAML
}

// CreateImage adds an image, with an empty first version when Size is set.
func (inv *Inventory) CreateImage(ctx context.Context, req NewImage) (ImageInfo, error) {
	if err := storage.CheckName("image", req.Name); err != nil {
		return ImageInfo{}, invalid("name", "%v", err)
	}
	if req.Size != 0 {
		if err := CheckSize("size", req.Size); err != nil {
			return ImageInfo{}, err
		}
	}
	if len(req.Description) > 256 {
		return ImageInfo{}, invalid("description", "at most 256 bytes")
	}
	if req.Source == "" {
		req.Source = SourceAPI
	}
	unlock := inv.lock("")
	err := inv.st.Update(func(tx store.Tx) error {
		if _, err := tx.Get(store.BucketImages, req.Name); err == nil {
			return conflict("image %q exists", req.Name)
		}
		return putJSON(tx, store.BucketImages, req.Name, Image{
			Name: req.Name, Description: req.Description, Created: inv.now().UTC(), Source: req.Source, Next: 1})
	})
	unlock()
	if err != nil {
		return ImageInfo{}, err
	}
	if req.Size != 0 {
		if _, _, err := inv.AddVersion(ctx, req.Name, req.Size, nil, "empty", nil); err != nil {
			// The request failed: it must not leave an image without
			// versions behind, whose name a retry would find taken.
			inv.DeleteImage(req.Name)
			return ImageInfo{}, err
		}
	}
	return inv.Image(req.Name)
}

// AddVersion makes the image's next version from src (nil: size bytes of
// zeros). The number is reserved first (state writing), so concurrent
// imports never collide; the version is published (ready, newest) only
// once its bytes are durable. Hosts that follow the image's newest
// version move to it at their next boot, or at once when offline.
func (inv *Inventory) AddVersion(ctx context.Context, image string, size int64, src storage.Source, origin string, progress storage.Progress) (Version, []string, error) {
	return inv.AddVersionWithBoot(ctx, image, size, src, nil, origin, progress)
}

// AddVersionWithBoot is AddVersion that also keeps boot files (the
// kernel and initrd an image build extracted) with the new version; they
// are stored before the version is published, so a ready version has
// them from its first moment.
func (inv *Inventory) AddVersionWithBoot(ctx context.Context, image string, size int64, src storage.Source, boot storage.BootFiles, origin string, progress storage.Progress) (Version, []string, error) {
	if src != nil && size == 0 {
		size = src.Size()
	}
	if err := CheckSize("size", size); err != nil {
		return Version{}, nil, err
	}
	v, err := inv.reserveVersion(image, size, origin)
	if err != nil {
		return Version{}, nil, err
	}
	if err := inv.be.WriteVersion(ctx, v.Ref(), size, src, progress); err != nil {
		inv.dropVersionRecord(v)
		if errors.Is(err, storage.ErrTooLarge) {
			// The size is valid in general, not for this server's
			// file system: the client can ask for less.
			return Version{}, nil, invalid("size", "%d bytes: %v", size, storage.ErrTooLarge)
		}
		return Version{}, nil, err
	}
	if len(boot) > 0 {
		if err := inv.be.WriteBootFiles(ctx, v.Ref(), boot); err != nil {
			inv.be.DeleteVersion(v.Ref())
			inv.dropVersionRecord(v)
			return Version{}, nil, err
		}
	}
	if err := inv.publish(v); err != nil {
		return Version{}, nil, err
	}
	inv.log.Info("image version published", "image", image, "version", v.Number, "bytes", size, "origin", origin)
	notes := inv.followersMoved(image)
	v.State = VersionReady
	return v, notes, nil
}

// publish makes a written version ready and, when it is the highest, the
// image's newest.
func (inv *Inventory) publish(v Version) error {
	unlock := inv.lock("")
	defer unlock()
	return inv.st.Update(func(tx store.Tx) error {
		var img Image
		if err := getJSON(tx, store.BucketImages, v.Image, &img); err != nil {
			return err
		}
		v.State = VersionReady
		if v.Number > img.Latest {
			img.Latest = v.Number
		}
		if err := putJSON(tx, store.BucketImages, v.Image, img); err != nil {
			return err
		}
		return putJSON(tx, store.BucketVersions, versionKey(v.Image, v.Number), v)
	})
}

// dropVersionRecord forgets a reserved version whose write failed.
func (inv *Inventory) dropVersionRecord(v Version) {
	unlock := inv.lock("")
	defer unlock()
	inv.st.Update(func(tx store.Tx) error {
		return tx.Delete(store.BucketVersions, versionKey(v.Image, v.Number))
	})
}

// DeleteVersion removes a version no host uses: not on a disk, not in a
// snapshot, not pinned, and not the newest while hosts follow the image
// (they would go back to an older version at their next boot).
func (inv *Inventory) DeleteVersion(image string, n int) error {
	unlock := inv.lock("")
	defer unlock()
	var v Version
	var img Image
	err := inv.st.Update(func(tx store.Tx) error {
		var err error
		if v, err = getVersion(tx, image, n); err != nil {
			return err
		}
		if err := getJSON(tx, store.BucketImages, image, &img); err != nil {
			return err
		}
		users, err := versionUsers(tx)
		if err != nil {
			return err
		}
		if u := users[v.Ref()]; len(u) > 0 {
			return conflict("version %s is used by host(s) %v (their disk, a snapshot, or they follow the newest version); move or remove them first", v.Ref(), u)
		}
		if v.State == VersionWriting {
			return conflict("version %s is still being written", v.Ref())
		}
		// The record goes in the same transaction that found no user, so
		// a host added meanwhile either counts as a user or finds no
		// version (AddHost checks again when it commits).
		if err := tx.Delete(store.BucketVersions, versionKey(image, n)); err != nil {
			return err
		}
		return putJSON(tx, store.BucketImages, image, withLatest(tx, img, n))
	})
	if err != nil {
		return err
	}
	if err := inv.be.DeleteVersion(v.Ref()); err != nil {
		// Still open (an export, a copy): the version stays.
		if rerr := inv.st.Update(func(tx store.Tx) error {
			if err := putJSON(tx, store.BucketVersions, versionKey(image, n), v); err != nil {
				return err
			}
			return putJSON(tx, store.BucketImages, image, img)
		}); rerr != nil {
			inv.log.Error("version record not restored after a failed delete", "image", image, "version", n, "err", rerr)
		}
		return diskErr(err)
	}
	return nil
}

// withLatest is img with Latest recomputed after version gone went.
func withLatest(tx store.Tx, img Image, gone int) Image {
	if img.Latest != gone {
		return img
	}
	img.Latest = 0
	tx.ForEach(store.BucketVersions, img.Name+"/", func(k string, b []byte) error {
		var o Version
		if getJSON(tx, store.BucketVersions, k, &o) == nil && o.State == VersionReady && o.Number > img.Latest && o.Number != gone {
			img.Latest = o.Number
		}
		return nil
	})
	return img
}

// DeleteImage removes an image and all its versions; refused while any
// host uses or names it.
func (inv *Inventory) DeleteImage(name string) error {
	info, err := inv.Image(name)
	if err != nil {
		return err
	}
	hosts, err := inv.Hosts()
	if err != nil {
		return err
	}
	var users []string
	for _, h := range hosts {
		if h.Image == name {
			users = append(users, h.Name)
		}
	}
	for _, v := range info.Versions {
		for _, h := range v.Hosts {
			if !slices.Contains(users, h) {
				users = append(users, h)
			}
		}
	}
	if len(users) > 0 {
		return conflict("image %q is used by host(s) %v; move or remove them first", name, users)
	}
	for _, v := range info.Versions {
		if err := inv.DeleteVersion(name, v.Number); err != nil {
			return err
		}
	}
	unlock := inv.lock("")
	defer unlock()
	return inv.st.Update(func(tx store.Tx) error {
		return tx.Delete(store.BucketImages, name)
	})
}

// ParseVersion parses "3", "v3" or "" / "latest" (0).
func ParseVersion(s string) (int, error) {
	if s == "" || s == "latest" || s == "newest" {
		return 0, nil
	}
	if s[0] == 'v' {
		s = s[1:]
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, invalid("version", "%q: want a version number (3 or v3) or latest", s)
	}
	return n, nil
}

// OpenVersion opens a ready version read-only (export).
func (inv *Inventory) OpenVersion(image string, n int) (Version, storage.Source, func() error, error) {
	v, err := inv.ResolveVersion(image, n)
	if err != nil {
		return v, nil, nil, err
	}
	dev, err := inv.be.OpenVersion(v.Ref())
	if err != nil {
		return v, nil, nil, err
	}
	return v, dev, dev.Close, nil
}

// ParseSize parses a disk size: bytes, or a number with K, M, G or T
// (binary units, an optional "iB"/"B"). The result is a multiple of 4 KiB
// between 4 KiB and 64 TiB (CheckSize).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "i")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K', 'k':
			mult = 1 << 10
		case 'M', 'm':
			mult = 1 << 20
		case 'G', 'g':
			mult = 1 << 30
		case 'T', 't':
			mult = 1 << 40
		}
		if mult != 1 {
			t = t[:n-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (64<<40)/mult {
		return 0, fmt.Errorf("size %q: want bytes or a number with K, M, G or T, up to 64T", s)
	}
	n *= mult
	if n%4096 != 0 || n < 4096 {
		return 0, fmt.Errorf("size %q: want a multiple of 4 KiB", s)
	}
	return n, nil
}
