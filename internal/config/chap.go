package config

import (
	"fmt"
	"log/slog"

	"go.yaml.in/yaml/v3"
)

// CHAP is a chap or mutual_chap key: false (off), true (on, with a
// generated user and secret) or {user, secret} (either may be omitted and is
// then generated). Left out, it is on (see Config.fillDerived). Printing
// it, with fmt or slog, never shows the secret.
type CHAP struct {
	Enabled bool
	// Set tells the key was written (false: the default applies).
	Set    bool   `yaml:"-"`
	User   string `yaml:"user"`
	Secret string `yaml:"secret"`
}

// UnmarshalYAML accepts a boolean or a {user, secret} mapping.
func (c *CHAP) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		var b bool
		if err := n.Decode(&b); err != nil {
			return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: want true, false or {user, secret}, not %q", n.Line, n.Value)}}
		}
		*c = CHAP{Enabled: b, Set: true}
		return nil
	case yaml.MappingNode:
		var errs []string
		v := CHAP{Enabled: true, Set: true}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			var dst *string
			switch k.Value {
			case "user":
				dst = &v.User
			case "secret":
				dst = &v.Secret
			default:
				errs = append(errs, fmt.Sprintf("line %d: unknown key %q (want user, secret)", k.Line, k.Value))
				continue
			}
			if val.Kind != yaml.ScalarNode || val.Tag != "!!str" && val.Tag != "!!int" {
				errs = append(errs, fmt.Sprintf("line %d: %s: want a string", val.Line, k.Value))
				continue
			}
			*dst = val.Value
		}
		if errs != nil {
			return &yaml.TypeError{Errors: errs}
		}
		*c = v
		return nil
	}
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: want true, false or {user, secret}", n.Line)}}
}

// String redacts the secret.
func (c CHAP) String() string {
	if !c.Enabled {
		return "off"
	}
	return fmt.Sprintf("{user:%q secret:REDACTED}", c.User)
}

// GoString redacts the secret from %#v.
func (c CHAP) GoString() string { return "config.CHAP" + c.String() }

// LogValue redacts the secret in structured logs.
func (c CHAP) LogValue() slog.Value {
	if !c.Enabled {
		return slog.StringValue("off")
	}
	return slog.GroupValue(slog.String("user", c.User), slog.String("secret", "REDACTED"))
}
