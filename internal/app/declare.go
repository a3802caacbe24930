package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"github.com/diskless-boot/diskless/internal/config"
	"github.com/diskless-boot/diskless/internal/inventory"
	"github.com/diskless-boot/diskless/internal/storage"
)

// NewSecret is a CHAP credential generated for a host declared in the
// YAML, printed once for the admin (it stays in the state store).
type NewSecret struct {
	Host, MAC, Key, User, Secret string
}

// declare makes the inventory hold what the configuration declares:
// images that do not exist yet are created (imported or empty); declared
// hosts are added, or changed to match the file. For the hosts it
// declares the YAML wins: the API refuses to change them (409) and a host
// made through the API that the file now declares is taken over by it.
// A host the file declared before but no longer does is handed to the API
// (not deleted: its disk may hold a machine's only copy of its data).
func declare(ctx context.Context, site *Site, cfg *config.Config, log *slog.Logger) ([]NewSecret, error) {
	inv := site.Inv
	for i, im := range cfg.Images {
		if _, err := inv.Image(im.Name); err == nil {
			continue
		} else if inventory.KindOf(err) != inventory.NotFound {
			return nil, err
		}
		if err := declareImage(ctx, inv, im); err != nil {
			return nil, fmt.Errorf("images[%d] (%s): %w", i, im.Name, err)
		}
		log.Info("image created from the configuration", "image", im.Name)
	}
	legacy, err := loadLegacySecrets(filepath.Join(site.Dir, legacySecrets))
	if err != nil {
		return nil, err
	}
	var fresh []NewSecret
	declared := map[string]bool{}
	for i := range cfg.Hosts {
		h := &cfg.Hosts[i]
		declared[h.Name] = true
		spec := hostSpec(h, legacy)
		cur, err := inv.HostWithSecrets(h.Name)
		switch {
		case inventory.KindOf(err) == inventory.NotFound:
			added, err := inv.AddHost(ctx, spec, nil)
			if err != nil {
				return nil, fmt.Errorf("hosts[%d] (%s): %w", i, h.Name, err)
			}
			fresh = append(fresh, newSecrets(h, spec, &added)...)
			continue
		case err != nil:
			return nil, err
		}
		if cur.Source != inventory.SourceYAML {
			log.Warn("host made through the API is now declared in the configuration, which manages it from now on", "host", h.Name)
		}
		if err := declareChanges(inv, h, spec, &cur); inventory.KindOf(err) == inventory.Conflict {
			// The state does not allow it now (the host may be running):
			// the host keeps what it had, every other host is served.
			log.Error("declared host not changed", "host", h.Name, "err", err)
		} else if err != nil {
			return nil, fmt.Errorf("hosts[%d] (%s): %w", i, h.Name, err)
		}
	}
	hosts, err := inv.Hosts()
	if err != nil {
		return nil, err
	}
	api := inventory.SourceAPI
	for _, h := range hosts {
		if h.Source == inventory.SourceYAML && !declared[h.Name] {
			if _, _, err := inv.SetHost(h.Name, inventory.HostPatch{FromYAML: true, Source: &api}); err != nil {
				return nil, err
			}
			log.Warn("host no longer in the configuration: kept, now managed through the API (diskless host remove deletes it)", "host", h.Name)
		}
	}
	if len(legacy) > 0 {
		p := filepath.Join(site.Dir, legacySecrets)
		if err := os.Rename(p, p+".migrated"); err != nil {
			return nil, err
		}
	}
	return fresh, nil
}

func declareImage(ctx context.Context, inv *inventory.Inventory, im config.Image) error {
	req := inventory.NewImage{Name: im.Name, Description: im.Description, Source: inventory.SourceYAML}
	if im.Size != "" {
		n, err := inventory.ParseSize(im.Size)
		if err != nil {
			return err
		}
		req.Size = n
		_, err = inv.CreateImage(ctx, req)
		return err
	}
	src, origin, closeSrc, err := OpenImport(ctx, im.Import)
	if err != nil {
		return err
	}
	defer closeSrc()
	if _, err := inv.CreateImage(ctx, req); err != nil {
		return err
	}
	_, _, err = inv.AddVersion(ctx, im.Name, src.Size(), src, origin, nil)
	return err
}

// hostSpec turns a declared host into the model's spec.
func hostSpec(h *config.Host, legacy map[string]legacySecret) inventory.HostSpec {
	spec := inventory.HostSpec{Name: h.Name, MACs: []string{h.MAC}, Boot: h.Boot, Kernel: h.Kernel, Initrd: h.Initrd,
		Cmdline: h.Cmdline, InitiatorIQN: h.InitiatorIQN, TargetIQN: h.TargetIQN, IP: h.IP, CHAPRotation: h.CHAPRotation,
		Source: inventory.SourceYAML}
	if h.ImageFile() {
		spec.Mode, spec.RawPath = storage.Raw, h.Image
	} else {
		spec.Image, spec.Version, spec.Mode = h.Image, h.Version, storage.DiskMode(h.Disk)
	}
	spec.CHAP = chapSpec(h.CHAP, legacy[h.MAC+" chap"])
	spec.MutualCHAP = chapSpec(h.MutualCHAP, legacy[h.MAC+" mutual_chap"])
	return spec
}

// chapSpec is a declared chap or mutual_chap key. A secret the file writes
// is the file's (InYAML: never rotated); one carried over from an older
// diskless's chap-secrets.json was generated, and rotates.
func chapSpec(c config.CHAP, old legacySecret) *inventory.CHAPSpec {
	s := &inventory.CHAPSpec{Enabled: c.Enabled, User: c.User, Secret: c.Secret, InYAML: c.Enabled && c.Secret != ""}
	if c.Enabled && s.Secret == "" && old.Secret != "" && (s.User == "" || s.User == old.User) {
		// Generated by an earlier diskless and handed to the host then.
		s.User, s.Secret = old.User, old.Secret
	}
	return s
}

// newSecrets lists the credentials generated for a declared host now.
func newSecrets(h *config.Host, spec inventory.HostSpec, added *inventory.Host) []NewSecret {
	var out []NewSecret
	if spec.CHAP != nil && spec.CHAP.Enabled && spec.CHAP.Secret == "" && added.CHAP != nil {
		out = append(out, NewSecret{Host: h.Name, MAC: h.MAC, Key: "chap", User: added.CHAP.User, Secret: added.CHAP.Secret})
	}
	if spec.MutualCHAP != nil && spec.MutualCHAP.Enabled && spec.MutualCHAP.Secret == "" && added.MutualCHAP != nil {
		out = append(out, NewSecret{Host: h.Name, MAC: h.MAC, Key: "mutual_chap", User: added.MutualCHAP.User, Secret: added.MutualCHAP.Secret})
	}
	return out
}

// declareChanges changes an existing host to match its declaration.
func declareChanges(inv *inventory.Inventory, h *config.Host, spec inventory.HostSpec, cur *inventory.Host) error {
	for _, f := range []struct{ key, want, have string }{
		{"initiator_iqn", spec.InitiatorIQN, cur.InitiatorIQN}, {"target_iqn", spec.TargetIQN, cur.TargetIQN}} {
		if f.want != "" && f.want != f.have {
			return fmt.Errorf("%s: the host already has %s; names of a host do not change (remove and add it to rename)", f.key, f.have)
		}
	}
	if (spec.Mode == storage.Raw) != (cur.Mode == storage.Raw) || spec.RawPath != "" && cur.Disk.Owned {
		return errors.New("image: the host's disk is of another kind now; remove the host from the state (diskless host remove) to change it")
	}
	yaml := inventory.SourceYAML
	p := inventory.HostPatch{FromYAML: true, Source: &yaml, MACs: &spec.MACs, Boot: &spec.Boot, Kernel: &spec.Kernel,
		Initrd: &spec.Initrd, Cmdline: &spec.Cmdline, IP: &spec.IP, CHAP: spec.CHAP, MutualCHAP: spec.MutualCHAP,
		CHAPRotation: &spec.CHAPRotation}
	if spec.RawPath != "" {
		p.RawPath = &spec.RawPath
	}
	if spec.Mode != storage.Raw {
		mode := spec.Mode
		if mode == "" {
			mode = storage.Persistent
		}
		p.Image, p.Version, p.Mode = &spec.Image, &spec.Version, &mode
	}
	if slices.Equal(cur.MACs, spec.MACs) && unchanged(cur, &p) {
		return nil
	}
	_, _, err := inv.SetHost(h.Name, p)
	return err
}

// unchanged reports whether a patch would change nothing (so a restart
// does not rewrite every declared host).
func unchanged(h *inventory.Host, p *inventory.HostPatch) bool {
	eq := func(v *string, have string) bool { return v == nil || *v == have }
	same := eq(p.Boot, h.Boot) && eq(p.Kernel, h.Kernel) && eq(p.Initrd, h.Initrd) && eq(p.Cmdline, h.Cmdline) && eq(p.RawPath, h.Disk.RawPath) &&
		eq(p.IP, h.IP) && eq(p.Image, h.Image) && eq(p.Source, h.Source) && eq(p.CHAPRotation, h.Rotation()) &&
		(p.Version == nil || *p.Version == h.Version) && (p.Mode == nil || *p.Mode == h.Mode)
	credSame := func(s *inventory.CHAPSpec, have bool, user, secret string, inYAML bool) bool {
		if s == nil {
			return true
		}
		if !s.Enabled {
			return !have
		}
		return have && (s.User == "" || s.User == user) && (s.Secret == "" || s.Secret == secret) && s.InYAML == inYAML
	}
	var cu, cs, mu, ms string
	if h.CHAP != nil {
		cu, cs = h.CHAP.User, h.CHAP.Secret
	}
	if h.MutualCHAP != nil {
		mu, ms = h.MutualCHAP.User, h.MutualCHAP.Secret
	}
	return same && credSame(p.CHAP, h.CHAP != nil, cu, cs, h.CHAPInYAML) && credSame(p.MutualCHAP, h.MutualCHAP != nil, mu, ms, h.MutualCHAPInYAML)
}

// legacySecret is an entry of the chap-secrets.json of older versions.
type legacySecret struct {
	User   string `json:"user"`
	Secret string `json:"secret"`
}

func loadLegacySecrets(path string) (map[string]legacySecret, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	m := map[string]legacySecret{}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}
