package api

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/diskless-boot/diskless/internal/bootevent"
	"github.com/diskless-boot/diskless/internal/inventory"
	"github.com/diskless-boot/diskless/internal/iscsi"
	"github.com/diskless-boot/diskless/internal/storage"
)

// CHAP in a request: true, false, or {"user": ..., "secret": ...} (either
// may be left out and is then generated).
type CHAP struct {
	inventory.CHAPSpec
}

// MarshalJSON writes what UnmarshalJSON reads: false, true, or the object.
func (c CHAP) MarshalJSON() ([]byte, error) {
	switch {
	case !c.Enabled:
		return []byte("false"), nil
	case c.User == "" && c.Secret == "":
		return []byte("true"), nil
	}
	return json.Marshal(struct {
		User   string `json:"user,omitempty"`
		Secret string `json:"secret,omitempty"`
	}{c.User, c.Secret})
}

// UnmarshalJSON accepts a boolean or an object.
func (c *CHAP) UnmarshalJSON(b []byte) error {
	var on bool
	if err := json.Unmarshal(b, &on); err == nil {
		c.CHAPSpec = inventory.CHAPSpec{Enabled: on}
		return nil
	}
	var o struct {
		User   string `json:"user"`
		Secret string `json:"secret"`
	}
	dec := json.NewDecoder(bytesReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&o); err != nil {
		// The same type serves chap and mutual_chap.
		return &fieldError{field: "chap", msg: `want true, false or {"user": ..., "secret": ...}`}
	}
	c.CHAPSpec = inventory.CHAPSpec{Enabled: true, User: o.User, Secret: o.Secret}
	return nil
}

// AddHostRequest is the body of POST /hosts. Left-out fields take the
// defaults of inventory.HostSpec; CHAP and mutual CHAP are on, generated,
// unless turned off.
type AddHostRequest struct {
	Name         string   `json:"name"`
	MACs         []string `json:"macs,omitempty"`
	Arch         string   `json:"arch,omitempty"`
	Image        string   `json:"image,omitempty"`
	Version      int      `json:"version,omitempty"`
	DiskMode     string   `json:"disk_mode,omitempty"`
	RawPath      string   `json:"raw_path,omitempty"`
	Boot         string   `json:"boot,omitempty"`
	Kernel       string   `json:"kernel,omitempty"`
	Initrd       string   `json:"initrd,omitempty"`
	Cmdline      string   `json:"cmdline,omitempty"`
	InitiatorIQN string   `json:"initiator_iqn,omitempty"`
	TargetIQN    string   `json:"target_iqn,omitempty"`
	CHAP         *CHAP    `json:"chap,omitempty"`
	MutualCHAP   *CHAP    `json:"mutual_chap,omitempty"`
	CHAPRotation string   `json:"chap_rotation,omitempty"` // off (default) or boot
	IP           string   `json:"ip,omitempty"`
}

// SetHostRequest is the body of PATCH /hosts/{host}: fields left out stay.
type SetHostRequest struct {
	MACs     *[]string `json:"macs,omitempty"`
	Arch     *string   `json:"arch,omitempty"`
	Image    *string   `json:"image,omitempty"`
	Version  *int      `json:"version,omitempty"`
	DiskMode *string   `json:"disk_mode,omitempty"`
	Boot     *string   `json:"boot,omitempty"`
	Kernel   *string   `json:"kernel,omitempty"`
	Initrd   *string   `json:"initrd,omitempty"`
	Cmdline  *string   `json:"cmdline,omitempty"`
	IP       *string   `json:"ip,omitempty"`
	// CHAPRotation is off or boot.
	CHAPRotation *string `json:"chap_rotation,omitempty"`
}

// Credentials in a response: the secret only when the host was just made.
type Credentials struct {
	User   string `json:"user"`
	Secret string `json:"secret,omitempty"`
}

// HostView is a host as the API shows it.
type HostView struct {
	Name         string       `json:"name"`
	MACs         []string     `json:"macs"`
	Arch         string       `json:"arch,omitempty"`
	ArchLearnt   bool         `json:"arch_learnt,omitempty"`
	Image        string       `json:"image,omitempty"`
	Version      int          `json:"version"` // 0: follows the newest
	DiskMode     string       `json:"disk_mode"`
	Boot         string       `json:"boot"`
	Kernel       string       `json:"kernel,omitempty"`
	Initrd       string       `json:"initrd,omitempty"`
	Cmdline      string       `json:"cmdline,omitempty"`
	InitiatorIQN string       `json:"initiator_iqn"`
	TargetIQN    string       `json:"target_iqn"`
	CHAP         *Credentials `json:"chap,omitempty"`
	MutualCHAP   *Credentials `json:"mutual_chap,omitempty"`
	// CHAPRotation: "off", or "boot" (new secrets at every boot).
	CHAPRotation string    `json:"chap_rotation"`
	ReservedIP   string    `json:"reserved_ip,omitempty"`
	Source       string    `json:"source"`
	Created      time.Time `json:"created"`
	Updated      time.Time `json:"updated"`
	Disk         DiskView  `json:"disk"`
	// Pending is what changes at the host's next boot, "" when nothing
	// ("new CHAP secrets" among it after a rotation while it ran).
	Pending string `json:"pending,omitempty"`
	// Online: the host has iSCSI sessions now.
	Online   bool                `json:"online"`
	Sessions []iscsi.SessionInfo `json:"sessions"`
	IP       string              `json:"ip,omitempty"` // current address: DHCP lease or session
	// DiskError is set once a flush of the disk failed: its writes and
	// flushes fail until POST /hosts/{host}/clear-error.
	DiskError string `json:"disk_error,omitempty"`
	// State is where the host stands: offline, booting (at a stage),
	// online (since), failed or stuck (why); offline without a server.
	State bootevent.State `json:"state"`
	// LastBoot is the host's latest boot, nil when none is known: with its
	// timeline for one host, without (events left out) in listings.
	LastBoot *bootevent.Boot `json:"last_boot,omitempty"`
}

// DiskView is a host disk as the API shows it.
type DiskView struct {
	Mode       string             `json:"mode"`
	Base       string             `json:"base,omitempty"` // image@vN the disk is on
	File       string             `json:"file,omitempty"` // raw disks
	UsageBytes int64              `json:"usage_bytes"`    // space its own data takes
	Snapshots  []storage.Snapshot `json:"snapshots"`
}

// HostChange is the answer to a change: the host and what happens to it.
type HostChange struct {
	Host  HostView `json:"host"`
	Notes []string `json:"notes"`
}

func (h *Handler) view(host inventory.Host, withSecrets bool) HostView {
	v := HostView{Name: host.Name, MACs: host.MACs, Arch: host.Arch, ArchLearnt: host.ArchLearnt, Image: host.Image,
		Version: host.Version, DiskMode: string(host.Mode), Boot: host.Boot, Kernel: host.Kernel, Initrd: host.Initrd,
		Cmdline: host.Cmdline, InitiatorIQN: host.InitiatorIQN, TargetIQN: host.TargetIQN, ReservedIP: host.IP,
		CHAPRotation: host.Rotation(), Source: host.Source, Created: host.Created, Updated: host.Updated, Pending: h.inv.Pending(&host),
		Sessions: []iscsi.SessionInfo{}}
	if v.MACs == nil {
		v.MACs = []string{}
	}
	v.CHAP, v.MutualCHAP = credentials(host.CHAP, withSecrets), credentials(host.MutualCHAP, withSecrets)
	v.Disk = DiskView{Mode: string(host.Disk.Mode), Snapshots: host.Disk.Snapshots}
	if b := host.Disk.Base(); !b.IsZero() {
		v.Disk.Base = b.String()
	}
	if host.Disk.Mode == storage.Raw {
		v.Disk.File = host.Disk.RawPath
	}
	if v.Disk.Snapshots == nil {
		v.Disk.Snapshots = []storage.Snapshot{}
	}
	v.Disk.UsageBytes, _ = h.inv.Backend().Usage(host.Name, host.Disk)
	if err := h.inv.DiskError(&host); err != nil {
		v.DiskError = err.Error()
	}
	if st := h.cfg.Status; st != nil {
		v.Sessions = st.Sessions(host.TargetIQN)
		v.Online = len(v.Sessions) > 0
		v.IP = st.HostIP(&host)
		v.State = st.BootState(&host)
	} else {
		// No server runs: nothing serves the host.
		v.State = bootevent.State{State: bootevent.StateOffline}
	}
	return v
}

// credentials shows c, with its secret or without.
func credentials(c *iscsi.Credentials, withSecret bool) *Credentials {
	if c == nil {
		return nil
	}
	out := &Credentials{User: c.User}
	if withSecret {
		out.Secret = c.Secret
	}
	return out
}

func (h *Handler) listHosts(w http.ResponseWriter, r *http.Request) {
	hosts, err := h.inv.Hosts()
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := make([]HostView, 0, len(hosts))
	for _, host := range hosts {
		v := h.view(host, false)
		if st := h.cfg.Status; st != nil {
			if b, ok := st.LastBoot(host.Name); ok {
				b.Events = nil
				v.LastBoot = &b
			}
		}
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) getHost(w http.ResponseWriter, r *http.Request) {
	host, err := h.inv.Host(r.PathValue("host"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	v := h.view(host, false)
	if boots, err := h.boots(host.Name); err == nil && len(boots) > 0 {
		v.LastBoot = &boots[0]
	}
	writeJSON(w, http.StatusOK, v)
}

func chapSpec(c *CHAP) *inventory.CHAPSpec {
	if c == nil {
		return nil
	}
	s := c.CHAPSpec
	return &s
}

func (h *Handler) addHost(w http.ResponseWriter, r *http.Request) {
	var req AddHostRequest
	if !decode(w, r, &req) {
		return
	}
	auditObject(r, req.Name)
	spec := inventory.HostSpec{Name: req.Name, MACs: req.MACs, Arch: req.Arch, Image: req.Image, Version: req.Version,
		Mode: storage.DiskMode(req.DiskMode), RawPath: req.RawPath, Boot: req.Boot, Kernel: req.Kernel, Initrd: req.Initrd,
		Cmdline: req.Cmdline, InitiatorIQN: req.InitiatorIQN, TargetIQN: req.TargetIQN,
		CHAP: chapSpec(req.CHAP), MutualCHAP: chapSpec(req.MutualCHAP), CHAPRotation: req.CHAPRotation, IP: req.IP}
	host, err := h.inv.AddHost(r.Context(), spec, nil)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	notes := []string{}
	if host.CHAP != nil {
		notes = append(notes, "the CHAP secrets are shown this once; `diskless host show NAME --config` prints what the host needs")
	}
	if host.Rotation() == inventory.RotateBoot {
		notes = append(notes, rotateBootNote)
	}
	writeJSON(w, http.StatusCreated, HostChange{Host: h.view(host, true), Notes: notes})
}

func (h *Handler) setHost(w http.ResponseWriter, r *http.Request) {
	var req SetHostRequest
	if !decode(w, r, &req) {
		return
	}
	p := inventory.HostPatch{MACs: req.MACs, Arch: req.Arch, Image: req.Image, Version: req.Version, Boot: req.Boot,
		Kernel: req.Kernel, Initrd: req.Initrd, Cmdline: req.Cmdline, IP: req.IP, CHAPRotation: req.CHAPRotation}
	if req.DiskMode != nil {
		m := storage.DiskMode(*req.DiskMode)
		p.Mode = &m
	}
	host, notes, err := h.inv.SetHost(r.PathValue("host"), p)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if notes == nil {
		notes = []string{}
	}
	if req.CHAPRotation != nil && host.Rotation() == inventory.RotateBoot {
		notes = append(notes, rotateBootNote)
	}
	writeJSON(w, http.StatusOK, HostChange{Host: h.view(host, false), Notes: notes})
}

// rotateBootNote warns whoever turns chap_rotation boot on.
const rotateBootNote = "chap_rotation boot: the host gets new CHAP secrets at every boot. Its image's initramfs must log in " +
	"with the credentials iPXE publishes in the iBFT (ISCSI_AUTO=true); one with secrets written into the disk " +
	"(/etc/iscsi/iscsi.initramfs, `host show --config`) stops booting after the first rotation"

// rotateSecrets gives a host new CHAP secrets: now when it is offline, at
// its next boot when it runs (the notes say which; no secret in them).
func (h *Handler) rotateSecrets(w http.ResponseWriter, r *http.Request) {
	host, notes, err := h.inv.RotateSecrets(r.PathValue("host"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, HostChange{Host: h.view(host, false), Notes: notes})
}

func (h *Handler) removeHost(w http.ResponseWriter, r *http.Request) {
	if err := h.inv.RemoveHost(r.PathValue("host"), false); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Notes is the answer to an action that changes a host's disk.
type Notes struct {
	Notes []string `json:"notes"`
}

func notes(n []string) Notes {
	if n == nil {
		n = []string{}
	}
	return Notes{Notes: n}
}

func (h *Handler) resetHost(w http.ResponseWriter, r *http.Request) {
	n, err := h.inv.Reset(r.PathValue("host"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, notes(n))
}

func (h *Handler) clearDiskError(w http.ResponseWriter, r *http.Request) {
	n, err := h.inv.ClearDiskError(r.PathValue("host"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, notes(n))
}

func (h *Handler) checkHost(w http.ResponseWriter, r *http.Request) {
	rep, err := h.inv.Check(r.PathValue("host"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// PromoteRequest is the body of POST /hosts/{host}/promote.
type PromoteRequest struct {
	Image string `json:"image"` // default: the host's image
	// DryRun answers the plan (what would happen to which host) without
	// doing anything.
	DryRun bool `json:"dry_run,omitempty"`
}

func (h *Handler) promoteHost(w http.ResponseWriter, r *http.Request) {
	var req PromoteRequest
	if !decode(w, r, &req) {
		return
	}
	name := r.PathValue("host")
	if req.Image == "" {
		host, err := h.inv.Host(name)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		if host.Image == "" {
			writeError(w, http.StatusBadRequest, "image", "the host has no image: name the image to promote to")
			return
		}
		req.Image = host.Image
	}
	plan, err := h.inv.PlanPromote(name, req.Image)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if plan.Effects == nil {
		plan.Effects = []string{}
	}
	if req.DryRun {
		writeJSON(w, http.StatusOK, plan)
		return
	}
	job := h.jobs.start("promote", "host "+name, plan.Size, func(ctx context.Context, progress func(int64)) (any, error) {
		v, n, err := h.inv.Promote(ctx, name, req.Image, progress)
		if err != nil {
			return nil, err
		}
		return map[string]any{"version": v, "notes": notes(n).Notes}, nil
	})
	accepted(w, r, job)
}

func (h *Handler) listSnapshots(w http.ResponseWriter, r *http.Request) {
	s, err := h.inv.Snapshots(r.PathValue("host"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s)
}

// SnapshotRequest is the body of POST /hosts/{host}/snapshots.
type SnapshotRequest struct {
	Name string `json:"name,omitempty"` // default: from the time
}

func (h *Handler) createSnapshot(w http.ResponseWriter, r *http.Request) {
	var req SnapshotRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Name != "" {
		auditObject(r, r.PathValue("host")+"/"+req.Name)
	}
	s, err := h.inv.Snapshot(r.PathValue("host"), req.Name)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	auditObject(r, r.PathValue("host")+"/"+s.Name)
	writeJSON(w, http.StatusCreated, s)
}

func (h *Handler) deleteSnapshot(w http.ResponseWriter, r *http.Request) {
	if err := h.inv.DeleteSnapshot(r.PathValue("host"), r.PathValue("snapshot")); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) rollback(w http.ResponseWriter, r *http.Request) {
	n, err := h.inv.Rollback(r.PathValue("host"), r.PathValue("snapshot"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, notes(n))
}

func (h *Handler) listSessions(w http.ResponseWriter, r *http.Request) {
	out := []iscsi.SessionInfo{}
	if h.cfg.Status != nil {
		out = append(out, h.cfg.Status.Sessions("")...)
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) listUnknown(w http.ResponseWriter, r *http.Request) {
	list, err := h.inv.UnknownHosts()
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, list)
}

// AdoptRequest is the body of POST /unknown-hosts/{mac}/adopt. Fields left
// out come from the unknown_hosts.enroll section the server last started
// with (the name from its name_pattern, default host-{mac}); the image is
// required from one of them.
type AdoptRequest struct {
	Name     string `json:"name,omitempty"`
	Image    string `json:"image,omitempty"`
	Version  *int   `json:"version,omitempty"`   // 0: follow the newest
	DiskMode string `json:"disk_mode,omitempty"` // persistent or volatile
	Boot     string `json:"boot,omitempty"`      // sanboot or kernel
}

// adoptUnknown makes a machine of the unknown list a host. The answer is
// the host as listings show it: its generated secrets are not in it.
func (h *Handler) adoptUnknown(w http.ResponseWriter, r *http.Request) {
	var req AdoptRequest
	if !decode(w, r, &req) {
		return
	}
	host, err := h.inv.Adopt(r.Context(), r.PathValue("mac"), inventory.AdoptSpec{Name: req.Name, Image: req.Image,
		Version: req.Version, Mode: storage.DiskMode(req.DiskMode), Boot: req.Boot})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	notes := []string{}
	if host.CHAP != nil {
		notes = append(notes, "CHAP secrets generated; `diskless host show "+host.Name+" --secrets` prints them")
	}
	writeJSON(w, http.StatusCreated, HostChange{Host: h.view(host, false), Notes: notes})
}
