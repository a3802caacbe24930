package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/diskless-boot/diskless/internal/inventory"
	"github.com/diskless-boot/diskless/internal/storage"
)

// Size is a disk size in a request: a number of bytes or a string such as
// "8G" (inventory.ParseSize).
type Size int64

// UnmarshalJSON accepts a number or a string.
func (s *Size) UnmarshalJSON(b []byte) error {
	var n int64
	if err := json.Unmarshal(b, &n); err == nil {
		*s = Size(n)
		return nil
	}
	var str string
	if err := json.Unmarshal(b, &str); err != nil {
		return &fieldError{field: "size", msg: `want a number of bytes or a string like "8G"`}
	}
	v, err := inventory.ParseSize(str)
	if err != nil {
		return &fieldError{field: "size", msg: err.Error()}
	}
	*s = Size(v)
	return nil
}

// CreateImageRequest is the body of POST /images.
type CreateImageRequest struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Size makes version 1 empty; Import imports the file as version 1
	// (a job). At most one of them; neither makes an image without
	// versions.
	Size   Size   `json:"size,omitempty"`
	Import string `json:"import,omitempty"`
	// Kernel and Initrd go with Import as in ImportRequest.
	Kernel string `json:"kernel,omitempty"`
	Initrd string `json:"initrd,omitempty"`
	// Cmdline, a file on the server, holds the version's kernel command
	// line (root=UUID=...) for those hosts. Optional.
	Cmdline string `json:"cmdline,omitempty"`
}

// ImportRequest is the body of POST /images/{image}/versions.
type ImportRequest struct {
	Source string `json:"source"` // a file or block device on the server
	// Kernel and Initrd, files on the server, are kept with the new
	// version (diskless image build extracts them) for hosts that boot
	// them without GRUB. Optional.
	Kernel string `json:"kernel,omitempty"`
	Initrd string `json:"initrd,omitempty"`
	// Cmdline, a file on the server, holds the version's kernel command
	// line (root=UUID=...) for those hosts. Optional.
	Cmdline string `json:"cmdline,omitempty"`
}

// ExportRequest is the body of POST .../versions/{version}/export.
type ExportRequest struct {
	Path   string `json:"path"`             // a new file on the server
	Format string `json:"format,omitempty"` // raw (default) or qcow2
}

// ImportResult is the result of an import job: the new version and what
// happened to the hosts that follow the image's newest version.
type ImportResult struct {
	Version inventory.Version `json:"version"`
	Notes   []string          `json:"notes"`
}

// Accepted is the answer to a request that started a job.
type Accepted struct {
	Job Job `json:"job"`
}

func (h *Handler) listImages(w http.ResponseWriter, r *http.Request) {
	imgs, err := h.inv.Images()
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if imgs == nil {
		imgs = []inventory.ImageInfo{}
	}
	writeJSON(w, http.StatusOK, imgs)
}

func (h *Handler) getImage(w http.ResponseWriter, r *http.Request) {
	img, err := h.inv.Image(r.PathValue("image"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, img)
}

func (h *Handler) createImage(w http.ResponseWriter, r *http.Request) {
	var req CreateImageRequest
	if !decode(w, r, &req) {
		return
	}
	auditObject(r, req.Name)
	if req.Size != 0 && req.Import != "" {
		writeError(w, http.StatusBadRequest, "import", "give size or import, not both")
		return
	}
	if req.Import != "" {
		// Checked before the image exists, so a bad file leaves nothing.
		size, err := h.probe(r.Context(), req.Import)
		if err != nil {
			writeError(w, http.StatusBadRequest, "import", err.Error())
			return
		}
		if _, err := h.inv.CreateImage(r.Context(), inventory.NewImage{Name: req.Name, Description: req.Description}); err != nil {
			h.fail(w, r, err)
			return
		}
		accepted(w, r, h.startImport(req.Name, req.Import, bootFiles(req.Kernel, req.Initrd, req.Cmdline), size))
		return
	}
	img, err := h.inv.CreateImage(r.Context(), inventory.NewImage{Name: req.Name, Description: req.Description, Size: int64(req.Size)})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, img)
}

// probe opens a file to import and says its size: a request naming a
// file that cannot be imported fails at once, not in its job.
func (h *Handler) probe(ctx context.Context, path string) (int64, error) {
	if h.cfg.Import == nil {
		return 0, fmt.Errorf("this server cannot import images")
	}
	if path == "" {
		return 0, fmt.Errorf("required: a file on the server")
	}
	if h.cfg.Inspect != nil {
		return h.cfg.Inspect(ctx, path)
	}
	src, _, closeSrc, err := h.cfg.Import(ctx, path)
	if err != nil {
		return 0, err
	}
	defer closeSrc()
	return src.Size(), nil
}

// bootFiles is the boot files an import request names.
func bootFiles(kernel, initrd, cmdline string) storage.BootFiles {
	b := storage.BootFiles{}
	if kernel != "" {
		b[storage.BootKernel] = kernel
	}
	if initrd != "" {
		b[storage.BootInitrd] = initrd
	}
	if cmdline != "" {
		b[storage.BootCmdline] = cmdline
	}
	return b
}

// startImport imports path as the image's next version, as a job.
func (h *Handler) startImport(image, path string, boot storage.BootFiles, size int64) Job {
	return h.jobs.start("import", "image "+image, size, func(ctx context.Context, progress func(int64)) (any, error) {
		src, origin, closeSrc, err := h.cfg.Import(ctx, path)
		if err != nil {
			return nil, err
		}
		defer closeSrc()
		v, notes, err := h.inv.AddVersionWithBoot(ctx, image, src.Size(), src, boot, origin, progress)
		if err != nil {
			return nil, err
		}
		if notes == nil {
			notes = []string{}
		}
		return ImportResult{Version: v, Notes: notes}, nil
	})
}

func (h *Handler) importVersion(w http.ResponseWriter, r *http.Request) {
	var req ImportRequest
	if !decode(w, r, &req) {
		return
	}
	image := r.PathValue("image")
	if _, err := h.inv.Image(image); err != nil {
		h.fail(w, r, err)
		return
	}
	size, err := h.probe(r.Context(), req.Source)
	if err != nil {
		writeError(w, http.StatusBadRequest, "source", err.Error())
		return
	}
	accepted(w, r, h.startImport(image, req.Source, bootFiles(req.Kernel, req.Initrd, req.Cmdline), size))
}

func (h *Handler) listVersions(w http.ResponseWriter, r *http.Request) {
	img, err := h.inv.Image(r.PathValue("image"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, img.Versions)
}

// versionParam parses {version}: a number, "v3" or "latest".
func versionParam(w http.ResponseWriter, r *http.Request) (int, bool) {
	n, err := inventory.ParseVersion(r.PathValue("version"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "version", err.Error())
		return 0, false
	}
	return n, true
}

func (h *Handler) getVersion(w http.ResponseWriter, r *http.Request) {
	n, ok := versionParam(w, r)
	if !ok {
		return
	}
	image := r.PathValue("image")
	v, err := h.inv.ResolveVersion(image, n)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	img, err := h.inv.Image(image)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	for _, vi := range img.Versions {
		if vi.Number == v.Number {
			writeJSON(w, http.StatusOK, vi)
			return
		}
	}
	writeError(w, http.StatusNotFound, "", "no such version")
}

func (h *Handler) deleteVersion(w http.ResponseWriter, r *http.Request) {
	n, ok := versionParam(w, r)
	if !ok {
		return
	}
	if n == 0 {
		writeError(w, http.StatusBadRequest, "version", "name the version to delete by its number")
		return
	}
	if err := h.inv.DeleteVersion(r.PathValue("image"), n); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) deleteImage(w http.ResponseWriter, r *http.Request) {
	if err := h.inv.DeleteImage(r.PathValue("image")); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) exportVersion(w http.ResponseWriter, r *http.Request) {
	var req ExportRequest
	if !decode(w, r, &req) {
		return
	}
	n, ok := versionParam(w, r)
	if !ok {
		return
	}
	switch req.Format {
	case "":
		req.Format = "raw"
	case "raw", "qcow2":
	default:
		writeError(w, http.StatusBadRequest, "format", fmt.Sprintf("%q: want raw or qcow2", req.Format))
		return
	}
	if req.Path == "" {
		writeError(w, http.StatusBadRequest, "path", "required: the file to write on the server")
		return
	}
	if h.cfg.Export == nil {
		writeError(w, http.StatusNotImplemented, "", "this server cannot export images")
		return
	}
	image := r.PathValue("image")
	v, err := h.inv.ResolveVersion(image, n)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	job := h.jobs.start("export", "image "+v.Ref().String(), v.Size, func(ctx context.Context, progress func(int64)) (any, error) {
		v, src, closeSrc, err := h.inv.OpenVersion(image, v.Number)
		if err != nil {
			return nil, err
		}
		defer closeSrc()
		srcPath := h.inv.Backend().VersionPath(v.Ref())
		if err := h.cfg.Export(ctx, src, srcPath, req.Path, req.Format, progress); err != nil {
			return nil, err
		}
		return map[string]string{"path": req.Path, "format": req.Format, "version": v.Ref().String()}, nil
	})
	accepted(w, r, job)
}

func (h *Handler) listJobs(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, h.jobs.list())
}

func (h *Handler) getJob(w http.ResponseWriter, r *http.Request) {
	j, ok := h.jobs.get(r.PathValue("job"))
	if !ok {
		writeError(w, http.StatusNotFound, "", "no job "+strconv.Quote(r.PathValue("job"))+" (finished jobs are kept for a while only)")
		return
	}
	writeJSON(w, http.StatusOK, j)
}

func (h *Handler) cancelJob(w http.ResponseWriter, r *http.Request) {
	if !h.jobs.cancel(r.PathValue("job")) {
		writeError(w, http.StatusNotFound, "", "no such job")
		return
	}
	j, _ := h.jobs.get(r.PathValue("job"))
	writeJSON(w, http.StatusAccepted, j)
}
