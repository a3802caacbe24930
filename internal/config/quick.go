package config

import (
	"errors"
	"fmt"
	"strings"
)

// QuickFlags are the quick-start flags of `diskless serve` (no config
// file):
//
//	diskless serve --interface br0 --dhcp full --dhcp-range A-B \
//	    [--host MAC=IMAGE ...] [--no-chap] [--data-dir DIR]
//
// Hosts given with --host are added to those of the state store.
//
// Empty fields keep the defaults of Default().
type QuickFlags struct {
	Interface string   // --interface
	DHCP      string   // --dhcp: full, proxy or off
	DHCPRange string   // --dhcp-range FIRST-LAST
	Hosts     []string // --host MAC=IMAGE, repeatable
	NoCHAP    bool     // --no-chap: no CHAP for these hosts (default: CHAP and mutual CHAP)
	DataDir   string   // --data-dir
}

// FromQuickFlags builds the Config the quick-start flags describe and
// validates it like Load does; errors name the flag at fault.
func FromQuickFlags(q QuickFlags) (*Config, error) {
	c := Default()
	c.src = &source{flags: map[string]string{}}
	set := func(key, flag, val string, dst *string) {
		if val == "" {
			c.src.flags[key] = flag + " (not given)"
			return
		}
		*dst = val
		c.src.flags[key] = fmt.Sprintf("%s %q", flag, val)
	}
	set("interface", "--interface", q.Interface, &c.Interface)
	set("dhcp.mode", "--dhcp", q.DHCP, &c.DHCP.Mode)
	set("dhcp.range", "--dhcp-range", q.DHCPRange, &c.DHCP.Range)
	set("data_dir", "--data-dir", q.DataDir, &c.DataDir)
	var errs []error
	for i, spec := range q.Hosts {
		key := fmt.Sprintf("hosts[%d]", i)
		c.src.flags[key] = fmt.Sprintf("--host %q", spec)
		mac, image, ok := strings.Cut(spec, "=")
		if !ok || mac == "" || image == "" {
			errs = append(errs, &FieldError{Where: c.src.where(key), Key: key, Reason: "want MAC=IMAGE, e.g. 52:54:00:12:34:56=/srv/disk.img"})
			continue
		}
		resolveImage(".", &image)
		h := Host{MAC: mac, Image: image}
		if q.NoCHAP {
			h.CHAP, h.MutualCHAP = CHAP{Set: true}, CHAP{Set: true}
		}
		c.Hosts = append(c.Hosts, h)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	c.fillDerived()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}
