package inventory

import (
	"fmt"
	"slices"

	"github.com/diskless-boot/diskless/internal/iscsi"
	"github.com/diskless-boot/diskless/internal/store"
)

// CHAP rotation policies (Host.CHAPRotation).
const (
	// RotateOff: the secrets change only when asked (RotateSecrets).
	RotateOff = "off"
	// RotateBoot: fresh secrets at every new boot of the host, so a script
	// sniffed on the wire is useless after the host's next boot. The
	// host's initramfs must take its iSCSI login from the iBFT, where
	// iPXE's sanboot publishes the script's credentials: secrets written
	// into the disk (/etc/iscsi/iscsi.initramfs) stop working at the next
	// boot.
	RotateBoot = "boot"
)

// RotateSecrets gives a host new CHAP and mutual CHAP secrets, users
// unchanged. An offline host gets them at once. An online host keeps its
// current ones until it begins its next boot (BeginBoot): its running
// system logs in again after a network drop or a server restart with the
// secrets of the boot that started it (open-iscsi keeps the initramfs'
// session credentials), so new ones under it would cost it its root disk.
// Refused (Conflict) for a host without CHAP and for secrets the YAML
// configuration writes. The notes say which case it was, never a secret.
func (inv *Inventory) RotateSecrets(name string) (Host, []string, error) {
	unlock := inv.lock(name)
	defer unlock()
	online := inv.rt.Online(name)
	var h Host
	err := inv.st.Update(func(tx store.Tx) error {
		var err error
		if h, err = getHost(tx, name); err != nil {
			return err
		}
		if h.CHAP == nil {
			return conflict("host %q has no CHAP: it has no secret to rotate", name)
		}
		if h.CHAPInYAML || h.MutualCHAPInYAML {
			key := "chap"
			if !h.CHAPInYAML {
				key = "mutual_chap"
			}
			return conflict("host %q: its %s secret is written in the YAML configuration; change it there (or leave it out there, and diskless generates secrets it can rotate)", name, key)
		}
		chap, mutual, err := freshSecrets(&h)
		if err != nil {
			return err
		}
		if online {
			h.NextCHAP, h.NextMutualCHAP = chap, mutual
		} else {
			h.CHAP, h.MutualCHAP, h.NextCHAP, h.NextMutualCHAP = chap, mutual, nil, nil
		}
		h.Updated = inv.now().UTC()
		return putJSON(tx, store.BucketHosts, name, h)
	})
	if err != nil {
		return Host{}, nil, err
	}
	inv.rt.Changed(name)
	var note string
	if online {
		inv.log.Info("CHAP secrets rotated: in use from the host's next boot", "host", name)
		note = fmt.Sprintf("host %s: new secrets at the host's next boot; it is online and logs in with its current ones until then "+
			"(an image whose initramfs holds the secrets needs the new ones written there before that boot). "+
			"`diskless host show %s --secrets` shows both", name, name)
	} else {
		inv.log.Info("CHAP secrets rotated: in use now", "host", name)
		note = fmt.Sprintf("host %s: new secrets now (it has no iSCSI session); its next boot logs in with them. "+
			"`diskless host show %s --secrets` shows them", name, name)
	}
	return h.redacted(), []string{note}, nil
}

// bootSecrets makes the CHAP secrets of a host's new boot current: those
// RotateSecrets left waiting, else fresh ones when the host rotates at
// every boot. The host's lock is held. The server is told (Changed) before
// BeginBoot returns, so the script of this boot carries the new secrets and
// the host's target takes them before iPXE logs in.
func (inv *Inventory) bootSecrets(name string) ([]string, error) {
	var note string
	err := inv.st.Update(func(tx store.Tx) error {
		note = "" // a store may run fn again
		h, err := getHost(tx, name)
		if err != nil {
			return err
		}
		switch {
		case h.NextCHAP != nil:
			h.CHAP, h.MutualCHAP = h.NextCHAP, h.NextMutualCHAP
			note = "CHAP secrets rotated while the host ran are in use from this boot"
		case h.Rotation() == RotateBoot && h.CHAP != nil:
			if h.CHAP, h.MutualCHAP, err = freshSecrets(&h); err != nil {
				return err
			}
			note = "new CHAP secrets for this boot (chap_rotation boot)"
		default:
			return nil
		}
		h.NextCHAP, h.NextMutualCHAP = nil, nil
		return putJSON(tx, store.BucketHosts, name, h)
	})
	if err != nil || note == "" {
		return nil, err
	}
	inv.rt.Changed(name)
	return []string{note}, nil
}

// freshSecrets generates new secrets for h's CHAP and mutual CHAP users
// (mutual nil when h has none). None repeats a current one, and the mutual
// secret differs from the CHAP one (RFC 7143 12.1.3).
func freshSecrets(h *Host) (chap, mutual *iscsi.Credentials, err error) {
	var avoid []string
	for _, c := range []*iscsi.Credentials{h.CHAP, h.MutualCHAP} {
		if c != nil {
			avoid = append(avoid, c.Secret)
		}
	}
	gen := func() (string, error) {
		for {
			s, err := GenerateSecret()
			if err != nil || !slices.Contains(avoid, s) {
				avoid = append(avoid, s)
				return s, err
			}
		}
	}
	s, err := gen()
	if err != nil {
		return nil, nil, err
	}
	chap = &iscsi.Credentials{User: h.CHAP.User, Secret: s}
	if h.MutualCHAP != nil {
		if s, err = gen(); err != nil {
			return nil, nil, err
		}
		mutual = &iscsi.Credentials{User: h.MutualCHAP.User, Secret: s}
	}
	return chap, mutual, nil
}

// sameCredentials reports whether a and b are the same credentials (both
// nil, or equal user and secret).
func sameCredentials(a, b *iscsi.Credentials) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
