package main

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// With no server, the CLI works on the data directory as local:USER:
// token create prints the token alone on stdout (for $(...)), list never
// shows it, and every change - failed ones too - is in `diskless audit`
// under that name.
func TestCLITokensAndAudit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	run := func(args ...string) (string, error) {
		t.Helper()
		return cli(t, append(args, "--data-dir", dir)...)
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := run(args...)
		if err != nil {
			t.Fatalf("diskless %s: %v", strings.Join(args, " "), err)
		}
		return out
	}
	tok := must("token", "create", "ci")
	if !regexp.MustCompile(`^dl_[A-Za-z0-9_-]{43}\n$`).MatchString(tok) {
		t.Fatalf("token create printed %q, want the token alone", tok)
	}
	must("token", "create", "ops", "--role", "admin")
	if _, err := run("token", "create", "x", "--role", "root"); err == nil || !strings.Contains(err.Error(), "admin or read-only") {
		t.Fatalf("a bad role: %v", err)
	}
	list := must("token", "list")
	if strings.Contains(list, strings.TrimSpace(tok)) || !regexp.MustCompile(`(?m)^ci\s+read-only\s+\S+\s+-$`).MatchString(list) ||
		!regexp.MustCompile(`(?m)^ops\s+admin\s`).MatchString(list) {
		t.Fatalf("token list:\n%s", list)
	}
	must("image", "create", "img", "--size", "1M")
	must("host", "add", "pc1", "--image", "img", "--chap-secret", "Cli-Secret-0001")
	if _, err := run("host", "add", "pc1", "--image", "img"); err == nil {
		t.Fatal("a second pc1 was added")
	}
	must("host", "reset", "pc1")
	// No server has run here, so ops is the only admin token.
	if _, err := run("token", "revoke", "ops"); err == nil || !strings.Contains(err.Error(), "last admin token") {
		t.Fatalf("revoke the last admin: %v", err)
	}
	if out := must("token", "revoke", "ci"); !strings.Contains(out, "token ci revoked") {
		t.Fatalf("revoke: %q", out)
	}
	if list := must("token", "list"); strings.Contains(list, "ci") {
		t.Fatalf("revoked, still listed:\n%s", list)
	}

	who := localPrincipal().Name
	if !strings.HasPrefix(who, "local:") || len(who) == len("local:") {
		t.Fatalf("local principal %q", who)
	}
	out := must("audit")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := []string{
		`token.revoke\s+ci\s+200`,
		`token.revoke\s+ops\s+409 token "ops" is the last admin token`,
		`host.reset\s+pc1\s+200`,
		`host.create\s+pc1\s+409 host "pc1" exists`,
		`host.create\s+pc1\s+201`,
		`image.create\s+img\s+201`,
		`token.create\s+x\s+400 role: want admin or read-only`,
		`token.create\s+ops\s+201`,
		`token.create\s+ci\s+201`,
	}
	if len(lines) != len(want)+1 || !strings.HasPrefix(lines[0], "SEQ") {
		t.Fatalf("audit:\n%s", out)
	}
	for i, w := range want {
		re := regexp.MustCompile(`^\d+\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+` + regexp.QuoteMeta(who) + `\s+(` + w + `)`)
		if !re.MatchString(lines[i+1]) {
			t.Errorf("audit line %d: %q, want %s by %s", i+1, lines[i+1], w, who)
		}
	}
	if strings.Contains(out, "Cli-Secret-0001") || strings.Contains(out, strings.TrimSpace(tok)) {
		t.Errorf("audit shows a secret:\n%s", out)
	}
	if out := must("audit", "--limit", "2"); strings.Count(out, "\n") != 3 {
		t.Errorf("audit --limit 2:\n%s", out)
	}
	if out := must("audit", "--before", "2"); !strings.Contains(out, "token.create") || strings.Count(out, "\n") != 2 {
		t.Errorf("audit --before 2:\n%s", out)
	}
}
