package config

import (
	"strings"
	"testing"
)

// unknown_hosts.enroll: each key checked, named with its line; the image is
// required only with policy enroll (elsewhere the section is adopt's
// defaults), and enrollment needs a DHCP server.
func TestEnrollSection(t *testing.T) {
	cases := []struct {
		name, yaml, want string // want "": valid
	}{
		{"defaults", "policy: enroll\n  enroll: {image: golden}", ""},
		{"all keys", "policy: enroll\n  enroll: {image: golden, version: 2, disk: volatile, boot: kernel, name_pattern: \"pc-{n}\", max_hosts: 30, max_per_minute: 60}", ""},
		{"mac pattern", "policy: enroll\n  enroll: {image: golden, name_pattern: \"lab.{mac}\"}", ""},
		{"both placeholders", "policy: enroll\n  enroll: {image: golden, name_pattern: \"r{n}-{mac}\"}", ""},
		{"adopt defaults only", "policy: local\n  enroll: {name_pattern: \"pc-{n}\"}", ""},
		{"missing image", "policy: enroll\n  enroll: {name_pattern: \"pc-{n}\"}", ":5: unknown_hosts.enroll.image: required with unknown_hosts.policy enroll"},
		{"no section", "policy: enroll", ":3: unknown_hosts.enroll.image: required"},
		{"image path", "policy: enroll\n  enroll: {image: /srv/disk.img}", ":5: unknown_hosts.enroll.image: \"/srv/disk.img\" is not an image name"},
		{"no placeholder", "policy: enroll\n  enroll: {image: golden, name_pattern: pc}", "name_pattern: \"pc\": put {n} (first free number) or {mac}"},
		{"unknown placeholder", "policy: enroll\n  enroll: {image: golden, name_pattern: \"pc-{ip}\"}", "name_pattern: \"pc-{ip}\": put {n}"},
		{"other brace", "policy: enroll\n  enroll: {image: golden, name_pattern: \"pc-{n}{\"}", "the only placeholders are {n} and {mac}"},
		{"upper case", "policy: enroll\n  enroll: {image: golden, name_pattern: \"Lab-{n}\"}", "makes \"Lab-1\""},
		{"space", "policy: enroll\n  enroll: {image: golden, name_pattern: \"pc {n}\"}", "makes \"pc 1\""},
		{"too long", "policy: enroll\n  enroll: {image: golden, name_pattern: \"" + strings.Repeat("x", 51) + "-{mac}\"}", "makes"},
		{"raw disk", "policy: enroll\n  enroll: {image: golden, disk: raw}", "unknown_hosts.enroll.disk: \"raw\": want persistent or volatile"},
		{"max_hosts 0", "policy: enroll\n  enroll: {image: golden, max_hosts: 0}", "unknown_hosts.enroll.max_hosts: 0: want 1-100000"},
		{"max_hosts huge", "policy: enroll\n  enroll: {image: golden, max_hosts: 1000000}", "max_hosts: 1000000: want 1-100000"},
		{"rate 0", "policy: enroll\n  enroll: {image: golden, max_per_minute: 0}", "max_per_minute: 0: want 1-600"},
		{"negative version", "policy: enroll\n  enroll: {image: golden, version: -3}", "version: -3"},
		{"typo", "policy: enroll\n  enroll: {image: golden, disk_mode: volatile}", `unknown key "unknown_hosts.enroll.disk_mode"`},
		{"dhcp off", "policy: enroll\n  enroll: {image: golden}\ndhcp: {mode: off}", ":3: unknown_hosts.policy: enroll needs dhcp.mode full or proxy"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			y := "interface: br0\ndhcp: {mode: proxy}\nunknown_hosts:\n  " + tc.yaml + "\n"
			if strings.Contains(tc.yaml, "dhcp:") {
				y = "interface: br0\nunknown_hosts:\n  " + tc.yaml + "\n"
			}
			c, err := Parse("c.yaml", []byte(y))
			if err == nil {
				err = c.Validate()
			}
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("%s: %v", y, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("%s: got %v, want %q", y, err, tc.want)
			}
			if err == nil && c.UnknownHosts.Enroll.MaxHosts == 0 {
				t.Errorf("defaults lost: %+v", c.UnknownHosts.Enroll)
			}
		})
	}
}
