package metrics

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// dashboard is the sample Grafana dashboard shipped in contrib/.
const dashboard = "../../contrib/grafana/diskless.json"

// dashboardQueries returns every PromQL expression of the dashboard: its
// panels' targets and its template variables' queries.
func dashboardQueries(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(dashboard)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboard, err)
	}
	var exprs []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			if tg.Expr == "" {
				t.Errorf("panel %q: a target without a query", p.Title)
			}
			exprs = append(exprs, tg.Expr)
		}
	}
	if len(exprs) < 10 {
		t.Fatalf("%s: only %d queries", dashboard, len(exprs))
	}
	for _, v := range d.Templating.List {
		exprs = append(exprs, v.Definition)
	}
	return exprs
}

// Every metric the dashboard queries is one the collector describes (a
// histogram's by its _bucket, _sum and _count series): a renamed metric
// cannot leave a dashboard panel silently empty.
func TestDashboardMetricsExist(t *testing.T) {
	described := map[string]bool{}
	ch := make(chan *prometheus.Desc, 100)
	go func() { collector{}.Describe(ch); close(ch) }()
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range ch {
		m := fqName.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("no name in %s", d)
		}
		described[m[1]] = true
	}
	name := regexp.MustCompile(`diskless_[a-z_]+`)
	for _, e := range dashboardQueries(t) {
		for _, n := range name.FindAllString(e, -1) {
			base := n
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if s, ok := strings.CutSuffix(n, suffix); ok && described[s] {
					base = s
				}
			}
			if !described[base] {
				t.Errorf("the dashboard queries %s, which the collector does not describe: %s", n, e)
			}
		}
	}
}

// Every query of the dashboard is valid PromQL: promtool parses them as
// recording rules (the host variable standing for all hosts).
func TestDashboardQueriesParse(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (Debian package prometheus; scripts/ci-deps.sh installs it)")
	}
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, e := range dashboardQueries(t) {
		if strings.HasPrefix(e, "label_values(") {
			continue // Grafana's, not PromQL
		}
		e = strings.ReplaceAll(e, "$host", ".*")
		q, _ := json.Marshal(e) // a JSON string is a YAML string
		fmt.Fprintf(&rules, "      - record: dashboard:query%d\n        expr: %s\n", i, q)
	}
	path := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput(); err != nil {
		t.Errorf("promtool check rules: %v\n%s", err, out)
	}
}
