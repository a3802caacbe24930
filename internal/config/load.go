package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// maxConfigSize bounds the file Load reads; a config is a few KiB.
const maxConfigSize = 4 << 20

// source remembers where each key of a Config came from, so errors can
// point at it: a file and line, or the quick-start flag that set it.
type source struct {
	file  string            // config file name; "" when built from flags
	lines map[string]int    // key path ("hosts[1].mac") -> line of the key
	flags map[string]string // key path -> flag that set it
}

// where says where path came from: "file:line", a flag, the file alone (the
// key was defaulted) or "default".
func (s *source) where(path string) string {
	if s == nil {
		return "config"
	}
	for p := path; p != ""; p = parentPath(p) {
		if f, ok := s.flags[p]; ok {
			return f
		}
		if l, ok := s.lines[p]; ok {
			return fmt.Sprintf("%s:%d", s.file, l)
		}
	}
	if s.file != "" {
		return s.file
	}
	return "default"
}

// parentPath strips the last element of a key path: "hosts[1].mac" ->
// "hosts[1]" -> "hosts" -> "".
func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

// Load reads the YAML file at path over the defaults, then validates it.
// Every problem found is reported, each as "file:line: key: why"; unknown
// keys (typos) are errors.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if st.Size() > maxConfigSize {
		return nil, fmt.Errorf("config: %s: %d bytes, more than the %d a config may have", path, st.Size(), maxConfigSize)
	}
	data := make([]byte, st.Size())
	if _, err := f.ReadAt(data, 0); err != nil && st.Size() > 0 {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(path, data)
	if err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Parse decodes YAML data (named name in errors) over the defaults without
// validating it. Load is Parse followed by Validate.
func Parse(name string, data []byte) (*Config, error) {
	c := Default()
	c.src = &source{file: name, lines: map[string]int{}}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, c.src.yamlError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, fmt.Errorf("%s:%d: only one YAML document is allowed", name, extra.Line)
	}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		root := doc.Content[0]
		var errs []string
		c.src.walk(root, reflect.TypeOf(Config{}), "", &errs)
		if len(errs) > 0 {
			return nil, errors.New(strings.Join(errs, "\n"))
		}
		if err := root.Decode(c); err != nil {
			return nil, c.src.yamlError(err)
		}
	}
	c.relativeTo(filepath.Dir(name))
	c.fillDerived()
	return c, nil
}

// relativeTo makes the relative paths of a config file relative to the
// file's directory, not to wherever diskless was started.
func (c *Config) relativeTo(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	abs(&c.DataDir)
	abs(&c.TFTP.Root)
	abs(&c.DHCP.LeaseFile)
	for i := range c.Images {
		abs(&c.Images[i].Import)
	}
	for i := range c.Hosts {
		resolveImage(dir, &c.Hosts[i].Image)
		abs(&c.Hosts[i].Kernel)
		abs(&c.Hosts[i].Initrd)
	}
}

// resolveImage turns a host's image that names a file into an absolute
// path: a value with a '/', or one naming a file that exists in dir. Any
// other value is an image name and stays as it is.
func resolveImage(dir string, img *string) {
	v := *img
	if v == "" {
		return
	}
	p := v
	if !filepath.IsAbs(p) {
		p = filepath.Join(dir, p)
	}
	if strings.Contains(v, "/") {
		*img = p
		return
	}
	if _, err := os.Stat(p); err == nil {
		if !strings.Contains(p, "/") {
			p = "./" + p // still a path, not a name, to ImageFile
		}
		*img = p
	}
}

var (
	chapType  = reflect.TypeOf(CHAP{})
	yamlLine  = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	lineInMsg = regexp.MustCompile(`line (\d+)`)
)

// walk records the line of every key under n (whose Go type is t) and
// reports unknown keys. It removes null values of sections so that
// "dhcp:" with nothing under it keeps the defaults instead of zeroing them.
func (s *source) walk(n *yaml.Node, t reflect.Type, path string, errs *[]string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	switch {
	case t == chapType:
		return // CHAP.UnmarshalYAML checks its own keys
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return // the decoder reports the type mismatch
		}
		fields := yamlFields(t)
		kept := n.Content[:0]
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := joinKey(path, k.Value)
			f, ok := fields[k.Value]
			if !ok {
				*errs = append(*errs, fmt.Sprintf("%s:%d: unknown key %q%s", s.file, k.Line, p, suggest(k.Value, fields)))
				continue
			}
			s.lines[p] = k.Line
			ft := t.FieldByIndex(f).Type
			if v.Kind == yaml.ScalarNode && v.Tag == "!!null" && ft.Kind() == reflect.Struct && ft != chapType {
				continue
			}
			s.walk(v, ft, p, errs)
			kept = append(kept, k, v)
		}
		n.Content = kept
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			s.lines[p] = item.Line
			s.walk(item, t.Elem(), p, errs)
		}
	}
}

func joinKey(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// yamlFields maps the yaml names of t's fields to their index.
func yamlFields(t reflect.Type) map[string][]int {
	m := map[string][]int{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		m[name] = f.Index
	}
	return m
}

// suggest names the closest known key when the unknown one looks like a
// typo of it, and lists the known keys otherwise.
func suggest(k string, fields map[string][]int) string {
	names := make([]string, 0, len(fields))
	best, bestD := "", 3
	for n := range fields {
		names = append(names, n)
		if d := editDistance(k, n); d < bestD {
			best, bestD = n, d
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	sort.Strings(names)
	return " (known keys: " + strings.Join(names, ", ") + ")"
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// yamlError rewrites the decoder's "line N: why" messages as
// "file:N: key: why".
func (s *source) yamlError(err error) error {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	out := make([]string, 0, len(msgs))
	for _, m := range msgs {
		sub := yamlLine.FindStringSubmatch(m)
		if sub == nil {
			if l := lineInMsg.FindStringSubmatch(m); l != nil {
				out = append(out, fmt.Sprintf("%s:%s: %s", s.file, l[1], strings.TrimPrefix(m, "yaml: ")))
			} else {
				out = append(out, fmt.Sprintf("%s: %s", s.file, strings.TrimPrefix(m, "yaml: ")))
			}
			continue
		}
		line, _ := strconv.Atoi(sub[1])
		if key := s.keyAt(line); key != "" {
			out = append(out, fmt.Sprintf("%s:%d: %s: %s", s.file, line, key, sub[2]))
		} else {
			out = append(out, fmt.Sprintf("%s:%d: %s", s.file, line, sub[2]))
		}
	}
	return errors.New(strings.Join(out, "\n"))
}

// keyAt is the deepest key written on line, "" if none.
func (s *source) keyAt(line int) string {
	best := ""
	for p, l := range s.lines {
		if l == line && (len(p) > len(best) || len(p) == len(best) && p < best) {
			best = p
		}
	}
	return best
}
