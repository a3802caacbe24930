package boot

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"text/template"
)

// ScriptRequest is one request for an iPXE script.
type ScriptRequest struct {
	MAC net.HardwareAddr
	// Server is the address the host reached us on (the local address of
	// its connection): what it can reach the iSCSI portal and HTTP at.
	Server netip.Addr
	// ClientIP and Arch are recorded for unknown hosts; Arch is optional.
	ClientIP netip.Addr
	Arch     string
}

// Script is a rendered iPXE script.
type Script struct {
	Body []byte
	// Host is the known host's name, "" for an unknown MAC.
	Host  string
	Known bool
	// Secret is true when Body holds CHAP secrets: it may only go to the
	// host it belongs to.
	Secret bool
}

// Script renders the script for req.MAC: the host's boot, or the
// unknown-host policy (ErrRefused under PolicyRefuse). Unknown MACs are
// recorded in the registry.
func (b *Booter) Script(req ScriptRequest) (Script, error) {
	if len(req.MAC) != 6 {
		return Script{}, errors.New("boot: script: MAC must be 6 bytes")
	}
	if !req.Server.IsValid() {
		return Script{}, errors.New("boot: script: no server address")
	}
	h, known := b.host(req.MAC)
	if !known {
		b.registry.Observe(req.MAC, req.ClientIP, req.Arch)
		var tmpl *template.Template
		switch b.cfg.Unknown {
		case PolicyRefuse:
			return Script{}, ErrRefused
		case PolicyMenu:
			tmpl = menuScript
		default:
			tmpl = localScript
		}
		body, err := render(tmpl, unknownData{ScriptURL: b.ScriptURL(req.Server)})
		return Script{Body: body}, err
	}
	d := hostData{
		Host:      h,
		MACText:   h.MAC.String(),
		Server:    req.Server.Unmap().WithZone("").String(),
		Port:      b.cfg.ISCSIPort,
		Group:     b.cfg.PortalGroupTag,
		ScriptURL: b.ScriptURL(req.Server),
		ReportURL: "http://" + hostPort(req.Server, b.cfg.HTTPPort) + ReportPath,
	}
	// RFC 4173: iscsi:<server>:<protocol>:<port>:<LUN>:<targetname>,
	// IPv6 servers in brackets; protocol empty means TCP.
	server := d.Server
	if req.Server.Unmap().Is6() {
		server = "[" + server + "]"
	}
	d.SANURI = fmt.Sprintf("iscsi:%s::%d:%d:%s", server, b.cfg.ISCSIPort, h.LUN, h.TargetIQN)
	tmpl := sanbootScript
	if h.Mode == Kernel {
		base := "http://" + hostPort(req.Server, b.cfg.HTTPPort) + HostFilePath(h.MAC, "")
		d.KernelURL = base + "kernel"
		if h.Kernel == "" && h.Files != nil {
			line, err := h.Files.cmdline()
			if err != nil {
				return Script{}, err
			}
			d.VersionCmdline = line
		}
		if h.Initrd != "" || (h.Kernel == "" && h.Files != nil && h.Files.has("initrd")) {
			d.InitrdURL = base + "initrd"
		}
		tmpl = kernelScript
	}
	body, err := render(tmpl, d)
	if err != nil {
		return Script{}, err
	}
	return Script{Body: body, Host: h.Name, Known: true, Secret: h.Secret()}, nil
}

// HostFilePath is the URL path of a host's kernel or initrd:
// /hosts/52-54-00-12-34-56/<name>.
func HostFilePath(mac net.HardwareAddr, name string) string {
	return "/hosts/" + strings.ReplaceAll(mac.String(), ":", "-") + "/" + name
}

type hostData struct {
	*Host
	MACText              string
	Server               string
	Port, Group          uint16
	SANURI               string
	KernelURL, InitrdURL string
	VersionCmdline       string // the image version's own (root=UUID=...)
	ScriptURL            string
	ReportURL            string // where the script reports a failed step
}

type unknownData struct{ ScriptURL string }

func render(t *template.Template, data any) ([]byte, error) {
	var buf bytes.Buffer
	if err := t.Execute(&buf, data); err != nil {
		return nil, fmt.Errorf("boot: render %s: %w", t.Name(), err)
	}
	return buf.Bytes(), nil
}

// Template functions: every value goes through arg (one iPXE word) or line
// (a kernel command line); both fail the rendering rather than emit
// anything iPXE or the initramfs shell would interpret. New checked the
// same already, this is the second wall.
var funcs = template.FuncMap{
	"arg": func(v any) (string, error) {
		s := fmt.Sprint(v)
		if !SafeArg(s, 1) {
			return "", fmt.Errorf("unsafe value %q", s)
		}
		return s, nil
	},
	"url": func(s string) (string, error) {
		// URLs and SAN URIs are built here from checked parts; on top of
		// SafeArg they may hold IPv6 brackets, a query and, once, the
		// ${netX/mac} of ScriptURL.
		rest := strings.Replace(s, "${netX/mac}", "", 1)
		rest = strings.NewReplacer("[", "", "]", "", "?", "").Replace(rest)
		if !SafeArg(rest, 1) {
			return "", fmt.Errorf("unsafe URL %q", s)
		}
		return s, nil
	},
	"line": func(s string) (string, error) {
		if !safeLine(s) {
			return "", fmt.Errorf("unsafe command line %q", s)
		}
		return s, nil
	},
	"port": func(p uint16) string { return strconv.Itoa(int(p)) },
}

func mustTemplate(name, text string) *template.Template {
	return template.Must(template.New(name).Funcs(funcs).Option("missingkey=error").Parse(text))
}

// Boot failure: tell the server which step failed and iPXE's error number
// (the admin sees it in the host's boot timeline), show it, give the admin
// a moment, ask again (the host may have been fixed meanwhile). errno is
// copied first: only a failing command changes it, but the report itself
// may fail. A failed report does not stop the retry.
const retry = `:failed
set dlerr ${errno}
echo diskless: ${dlstep} failed (${dlerr}), asking the server again in 10 seconds
imgfetch --name dlreport {{url .ReportURL}}?mac=${netX/mac}&step=${dlstep}&errno=${dlerr} && imgfree dlreport || echo diskless: could not report the failure
sleep 10
chain --replace --autofree {{url .ScriptURL}} || goto failed
`

// iSCSI login parameters: iPXE logs in with them and publishes them in the
// iBFT for the initramfs.
const credentials = `set initiator-iqn {{arg .InitiatorIQN}}
{{- with .CHAP}}
set username {{arg .User}}
set password {{arg .Secret}}
{{- end}}
{{- with .MutualCHAP}}
set reverse-username {{arg .User}}
set reverse-password {{arg .Secret}}
{{- end}}
`

var sanbootScript = mustTemplate("sanboot", `#!ipxe
# diskless: {{arg .Name}} ({{arg .MACText}}) boots iSCSI {{arg .TargetIQN}}
`+credentials+`set dlstep sanboot
sanboot {{url .SANURI}} || goto failed
exit
`+retry)

// Kernel mode: the HOWTO's "without GRUB" boot. iPXE hooks the disk first
// (sanhook: its iSCSI session and the iBFT, ACPI table, that describes it),
// then boots kernel and initrd over HTTP. iscsi_auto has open-iscsi's
// initramfs log in from the iBFT (iscsistart -b), so the CHAP secrets stay
// off /proc/cmdline, which every user can read; the iBFT in sysfs is
// root's only. initrd=initrd names the initrd for EFI-stub kernels.
var kernelScript = mustTemplate("kernel", `#!ipxe
# diskless: {{arg .Name}} ({{arg .MACText}}) boots a kernel, root on iSCSI {{arg .TargetIQN}}
`+credentials+`set dlstep sanhook
sanhook {{url .SANURI}} || goto failed
set dlstep kernel
kernel {{url .KernelURL}}
{{- if .InitrdURL}} initrd=initrd{{end}} iscsi_auto ip=dhcp
{{- if .VersionCmdline}} {{line .VersionCmdline}}{{end}}
{{- if .Cmdline}} {{line .Cmdline}}{{end}} || goto failed
{{- if .InitrdURL}}
set dlstep initrd
initrd --name initrd {{url .InitrdURL}} || goto failed
{{- end}}
set dlstep boot
boot || goto failed
`+retry)

// Local disk: on BIOS, boot drive 0x80 without describing a SAN disk; on
// UEFI (and if that fails) exit, so the firmware tries its next boot
// option.
const localBoot = `iseq ${platform} pcbios && sanboot --no-describe --drive 0x80 ||
exit
`

var localScript = mustTemplate("local", `#!ipxe
# diskless: this machine is not configured; booting from local disk
echo diskless: ${netX/mac} is not configured, booting from local disk
`+localBoot)

var menuScript = mustTemplate("menu", `#!ipxe
# diskless: this machine is not configured
:menu
menu diskless: ${netX/mac} is not configured
item local  Boot from local disk
item retry  Ask the server again
item shell  iPXE shell
item reboot Reboot
choose --default local --timeout 30000 choice || goto local
goto ${choice}
:retry
chain --replace --autofree {{url .ScriptURL}} || goto menu
:shell
shell
goto menu
:reboot
reboot
:local
`+localBoot)
