package api

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/diskless-boot/diskless/internal/boot"
	"github.com/diskless-boot/diskless/internal/inventory"
)

// HostConfig is what the HOWTO makes an admin write by hand for one host:
// the iPXE script, the kernel command line for /etc/default/grub, and the
// open-iscsi files of the host's initramfs. It holds the host's secrets.
type HostConfig struct {
	Host           string   `json:"host"`
	IPXEScript     string   `json:"ipxe_script"`
	GrubCmdline    string   `json:"grub_cmdline_linux"`
	ISCSIInitramfs string   `json:"iscsi_initramfs"`
	InitiatorName  string   `json:"initiatorname_iscsi"`
	Notes          []string `json:"notes"`
}

// placeholderServer stands for the server's address when it is not known
// (no server running): a documentation address (RFC 5737), replaced by a
// readable placeholder in the texts.
var placeholderServer = netip.MustParseAddr("192.0.2.1")

func (h *Handler) hostConfig(w http.ResponseWriter, r *http.Request) {
	host, err := h.inv.HostWithSecrets(r.PathValue("host"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	cfg, err := renderHostConfig(&host, h.cfg.Server)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, cfg)
}

// HostCredentials are a host's CHAP credentials, secrets included: what an
// admin copies into a host (or an initramfs) by hand. Only on this request.
// NextCHAP and NextMutualCHAP are set while rotated secrets wait for the
// host's next boot, when they replace CHAP and MutualCHAP.
type HostCredentials struct {
	Host           string       `json:"host"`
	CHAP           *Credentials `json:"chap"`
	MutualCHAP     *Credentials `json:"mutual_chap"`
	NextCHAP       *Credentials `json:"next_chap,omitempty"`
	NextMutualCHAP *Credentials `json:"next_mutual_chap,omitempty"`
	// CHAPRotation: "off", or "boot" (the secrets change at every boot).
	CHAPRotation string `json:"chap_rotation"`
}

func (h *Handler) hostCredentials(w http.ResponseWriter, r *http.Request) {
	host, err := h.inv.HostWithSecrets(r.PathValue("host"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	v := h.view(host, true)
	writeJSON(w, http.StatusOK, HostCredentials{Host: host.Name, CHAP: v.CHAP, MutualCHAP: v.MutualCHAP,
		NextCHAP: credentials(host.NextCHAP, true), NextMutualCHAP: credentials(host.NextMutualCHAP, true), CHAPRotation: v.CHAPRotation})
}

func renderHostConfig(host *inventory.Host, srv ServerInfo) (HostConfig, error) {
	out := HostConfig{Host: host.Name, Notes: []string{}}
	addr := srv.Address
	if !addr.IsValid() {
		addr = placeholderServer
		out.Notes = append(out.Notes, "no server is running: replace <server-ip> with the address hosts reach diskless at")
	}
	port, group, httpPort := srv.ISCSIPort, srv.PortalGroupTag, srv.HTTPPort
	if port == 0 {
		port = 3260
	}
	if group == 0 {
		group = 1
	}
	if httpPort == 0 {
		httpPort = 8080
	}
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	if hw := host.HardwareAddrs(); len(hw) > 0 {
		mac = hw[0]
	}
	bh := boot.Host{MAC: mac, Name: host.Name, Mode: boot.Mode(host.Boot), InitiatorIQN: host.InitiatorIQN,
		TargetIQN: host.TargetIQN, CHAP: host.CHAP, MutualCHAP: host.MutualCHAP,
		Kernel: host.Kernel, Initrd: host.Initrd, Cmdline: host.Cmdline}
	b, err := boot.New(boot.Config{Hosts: []boot.Host{bh}, HTTPPort: httpPort, ISCSIPort: port, PortalGroupTag: group})
	if err != nil {
		return out, err
	}
	sc, err := b.Script(boot.ScriptRequest{MAC: mac, Server: addr})
	if err != nil {
		return out, err
	}
	out.IPXEScript = string(sc.Body)

	kv := [][2]string{
		{"ISCSI_INITIATOR", host.InitiatorIQN},
		{"ISCSI_TARGET_NAME", host.TargetIQN},
		{"ISCSI_TARGET_IP", addr.String()},
		{"ISCSI_TARGET_PORT", fmt.Sprint(port)},
		{"ISCSI_TARGET_GROUP", fmt.Sprint(group)},
	}
	if c := host.CHAP; c != nil {
		kv = append(kv, [2]string{"ISCSI_USERNAME", c.User}, [2]string{"ISCSI_PASSWORD", c.Secret})
	}
	if c := host.MutualCHAP; c != nil {
		kv = append(kv, [2]string{"ISCSI_IN_USERNAME", c.User}, [2]string{"ISCSI_IN_PASSWORD", c.Secret})
	}
	var cmd, file strings.Builder
	file.WriteString("# /etc/iscsi/iscsi.initramfs (mode 0600: it holds the CHAP secrets)\n")
	for _, p := range kv {
		fmt.Fprintf(&cmd, "%s=%s ", p[0], p[1])
		fmt.Fprintf(&file, "%s=%q\n", p[0], p[1])
	}
	cmd.WriteString("ip=dhcp")
	out.GrubCmdline = `GRUB_CMDLINE_LINUX="` + cmd.String() + ` root=UUID=<uuid of the root filesystem>"`
	out.ISCSIInitramfs = file.String()
	out.InitiatorName = "InitiatorName=" + host.InitiatorIQN + "\n"
	if host.CHAP != nil {
		out.Notes = append(out.Notes, "the kernel command line is readable by every process of the host (/proc/cmdline): prefer /etc/iscsi/iscsi.initramfs or the iBFT for the secrets")
	}
	if host.NextCHAP != nil {
		out.Notes = append(out.Notes, "new CHAP secrets wait for the host's next boot; the texts above hold the current ones. "+
			"`diskless host show "+host.Name+" --secrets` shows the new ones: a disk that holds the secrets needs them before that boot")
	}
	if host.Rotation() == inventory.RotateBoot {
		out.Notes = append(out.Notes, "chap_rotation boot: these secrets change at the host's next boot; its initramfs must log in from the iBFT (ISCSI_AUTO=true), not with secrets written into the disk")
	}
	if !srv.Address.IsValid() {
		p := placeholderServer.String()
		for _, s := range []*string{&out.IPXEScript, &out.GrubCmdline, &out.ISCSIInitramfs} {
			*s = strings.ReplaceAll(*s, p, "<server-ip>")
		}
	}
	return out, nil
}
