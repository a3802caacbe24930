package api

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// operations reads the "METHOD /path" operations of docs/openapi.yaml.
func operations(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	var out []string
	for path, item := range doc.Paths {
		for method := range item {
			if method != "parameters" {
				out = append(out, strings.ToUpper(method)+" "+path)
			}
		}
	}
	slices.Sort(out)
	return out
}

var route = regexp.MustCompile(`m\.HandleFunc\("([A-Z]+) "\+p\+"([^"]+)"`)

// docs/openapi.yaml and the routes agree: every operation it describes is
// served (not the catch-all "no such endpoint"), and every route Handler
// registers is described.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	ops := operations(t)
	src, err := os.ReadFile("api.go")
	if err != nil {
		t.Fatal(err)
	}
	var routes []string
	for _, m := range route.FindAllStringSubmatch(string(src), -1) {
		routes = append(routes, m[1]+" "+m[2])
	}
	if len(routes) < 20 {
		t.Fatalf("found %d routes in api.go: the pattern no longer matches routes()", len(routes))
	}
	for _, r := range routes {
		if !slices.Contains(ops, r) {
			t.Errorf("%s is served but not in docs/openapi.yaml", r)
		}
	}
	a := newTestAPI(t)
	fill := strings.NewReplacer("{image}", "x", "{version}", "1", "{host}", "x", "{snapshot}", "x", "{job}", "x", "{token}", "x", "{mac}", "52:54:00:12:34:56")
	for _, op := range ops {
		method, path, _ := strings.Cut(op, " ")
		if !slices.Contains(routes, op) {
			t.Errorf("%s is in docs/openapi.yaml but not a route", op)
		}
		code, e := a.call(t, method, fill.Replace(path), "", nil)
		if code == 405 || strings.Contains(e.Error, "no such endpoint") {
			t.Errorf("%s (docs/openapi.yaml): %d %s", op, code, e.Error)
		}
	}
}
