package pxe

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/diskless-boot/diskless/internal/app"
	"github.com/diskless-boot/diskless/internal/testutil/netns"
)

// TestWebConsole drives the web console in a real browser (Debian's
// chromium, headless) through a real boot: log in with the API token, see
// pc1 go from offline through its boot stages to online while a QEMU
// machine PXE boots the end-to-end image, the same stages in order in the
// API's timeline and in /metrics; then take a snapshot of it and reset it
// from its page, behind confirmations that say what happens to it.
func TestWebConsole(t *testing.T) {
	browserBin := ""
	for _, b := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(b); err == nil {
			browserBin = p
			break
		}
	}
	if browserBin == "" {
		t.Skip("needs chromium (Debian package chromium; CI installs it)")
	}
	n, dir, data, cli := e2eSite(t)
	cli("host", "add", "pc1", "--image", "debian", "--disk", "persistent", "--mac", macPC1)
	startServe(t, n, e2eServeArgs(n, data)...)
	base, token, apiGet := adminPlane(t, n, data)

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browserBin), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 800))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	bctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	// Start the browser on bctx itself: the timeouts of the steps below
	// must not end it.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting %s: %v", browserBin, err)
	}
	do := func(what string, timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		ctx, cancel := context.WithTimeout(bctx, timeout)
		defer cancel()
		if err := chromedp.Do(ctx, steps...); err != nil {
			// What the page showed, for the log.
			sctx, scancel := context.WithTimeout(bctx, 10*time.Second)
			defer scancel()
			text, _ := chromedp.Run(sctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText`))
			t.Fatalf("browser: %s: %v\npage:\n%s", what, err, text)
		}
	}
	shots := os.Getenv("DISKLESS_SCREENSHOT_DIR")
	if shots == "" {
		shots = dir
	}
	screenshot := func(name string) {
		t.Helper()
		png := browserValue(t, bctx, "screenshot", chromedp.FullScreenshot(100))
		p := filepath.Join(shots, name)
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot %s", p)
	}
	pc1State := chromedp.CSS(`tr[data-host="pc1"] .state`)

	// Log in: a wrong token is refused, the server's is taken.
	do("login", time.Minute,
		chromedp.Navigate(base+"/ui/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), "dl_not-the-token"),
		chromedp.Submit(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.ID("failed")),
		chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Submit(chromedp.ID("login")),
		chromedp.WaitVisible(pc1State),
		chromedp.WaitVisible(chromedp.CSS(`#live.on`)))
	if state := browserValue(t, bctx, "pc1's state", chromedp.Text(pc1State)); state != "offline" {
		t.Fatalf("pc1 before its boot: %q", state)
	}
	// Record every state pc1's row shows from now on.
	browserValue(t, bctx, "observer", chromedp.Evaluate[bool](`window.states = [];
		new MutationObserver(() => {
			const c = document.querySelector('tr[data-host="pc1"] .state');
			if (c && window.states[window.states.length - 1] !== c.textContent) window.states.push(c.textContent);
		}).observe(document.getElementById("view"), {subtree: true, childList: true, characterData: true});
		true`))

	// Boot it; the page follows without a reload.
	// "loop": it keeps running (and writing) until the test ends.
	startVM(t, n.vmNS, e2eVMArgs(t, n, dir, macPC1, false, "loop")...)
	var states []string
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		states = browserValue(t, bctx, "states", chromedp.Evaluate[[]string](`window.states`))
		if len(states) > 0 && strings.HasPrefix(states[len(states)-1], "online") {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("pc1 in the console: offline, %s", strings.Join(states, ", "))
	checkStateOrder(t, states)
	// Its I/O rate shows from the second refresh on.
	do("I/O rate", 30*time.Second, chromedp.WaitVisible(chromedp.Search(`//tr[@data-host="pc1"]/td[contains(text(),"/s read")]`)))
	screenshot("console-hosts.png")

	// The API has the whole timeline, in order; /metrics counts the boot.
	var h struct {
		State    struct{ State string }
		LastBoot struct {
			Result          string
			DurationSeconds float64 `json:"duration_seconds"`
			Events          []struct{ Stage string }
		} `json:"last_boot"`
	}
	if err := json.Unmarshal(apiGet("/api/v1/hosts/pc1"), &h); err != nil {
		t.Fatal(err)
	}
	var stages []string
	for _, e := range h.LastBoot.Events {
		stages = append(stages, e.Stage)
	}
	if h.State.State != "online" || h.LastBoot.Result != "completed" ||
		!inOrder(stages, "ipxe-dhcp", "script", "san-login", "root-login") {
		t.Errorf("API: state %s, last boot %s with stages %v", h.State.State, h.LastBoot.Result, stages)
	}
	t.Logf("API: pc1 %s, boot %s in %.1f s: %s", h.State.State, h.LastBoot.Result, h.LastBoot.DurationSeconds, strings.Join(stages, " "))
	metrics := string(apiGet("/metrics"))
	for _, want := range []string{"diskless_boots_completed_total 1", "diskless_boot_duration_seconds_count 1",
		`diskless_boot_events_total{stage="root-login"} 1`, `diskless_hosts{state="online"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics has no %q", want)
		}
	}

	// Its page: the timeline; a snapshot and a reset while it runs, each
	// confirmed in a dialog that says what happens to the running machine.
	do("host page", time.Minute,
		chromedp.Click(chromedp.CSS(`a[href="#/hosts/pc1"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#timeline tr[data-stage="root-login"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-state="online"]`)))
	if rows := browserValue(t, bctx, "timeline", chromedp.Evaluate[int](`document.querySelectorAll("#timeline tbody tr").length`)); rows < 4 {
		t.Errorf("the page's timeline has %d steps", rows)
	}
	do("snapshot dialog", time.Minute,
		chromedp.Click(chromedp.Search(`//button[text()="Snapshot"]`)),
		chromedp.WaitVisible(chromedp.ID("confirm")))
	if text := browserValue(t, bctx, "snapshot text", chromedp.Text(chromedp.ID("confirm-text"))); !strings.Contains(text, "pc1 is running now") || !strings.Contains(text, "goes on undisturbed") {
		t.Errorf("snapshot confirmation: %q", text)
	}
	do("snapshot", time.Minute,
		chromedp.SendKeys(chromedp.ID("snap-name"), "before-reset"),
		chromedp.Click(chromedp.ID("confirm-ok")),
		chromedp.WaitVisible(chromedp.CSS(`button[data-snapshot="before-reset"]`)))
	screenshot("console-host.png")
	do("reset dialog", time.Minute,
		chromedp.Click(chromedp.Search(`//button[text()="Reset disk"]`)),
		chromedp.WaitVisible(chromedp.ID("confirm")))
	if text := browserValue(t, bctx, "reset text", chromedp.Text(chromedp.ID("confirm-text"))); !strings.Contains(text, "reset when it next boots") {
		t.Errorf("reset confirmation: %q", text)
	}
	do("reset", time.Minute,
		chromedp.Click(chromedp.ID("confirm-ok")),
		chromedp.WaitVisible(chromedp.Search(`//div[@id="status"]/p[starts-with(text(),"reset:")]`)))
	if st := browserValue(t, bctx, "status", chromedp.Text(chromedp.ID("status"))); !strings.Contains(st, "reset when it next boots") {
		t.Errorf("after the reset the page says %q", st)
	}
	if p := browserValue(t, bctx, "pending", chromedp.Text(chromedp.Search(`//dt[text()="Pending"]/following-sibling::dd[1]`))); p == "" {
		t.Errorf("no pending reset shown")
	}

	// Both changes are the admin token's, in the audit log.
	var audit []struct{ Who, Action, Object string }
	if err := json.Unmarshal(apiGet("/api/v1/audit"), &audit); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range audit {
		got = append(got, a.Who+" "+a.Action+" "+a.Object)
	}
	if !slices.Contains(got, "admin snapshot.create pc1/before-reset") || !slices.Contains(got, "admin host.reset pc1") {
		t.Errorf("audit log: %v", got)
	}
}

// browserValue runs one browser action that reads a value.
func browserValue[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
	return v
}

// adminPlane reaches the admin plane of the server running on data in
// n's server namespace from here (through a relay on loopback): its base
// URL, the admin token, and a GET of the API with it.
func adminPlane(t *testing.T, n *testNet, data string) (base, token string, get func(path string) []byte) {
	t.Helper()
	var rec app.ServerRecord
	if b, err := os.ReadFile(filepath.Join(data, app.ServerFile)); err != nil || json.Unmarshal(b, &rec) != nil {
		t.Fatalf("server record: %v", err)
	}
	tok, err := os.ReadFile(filepath.Join(data, "api-token"))
	if err != nil {
		t.Fatal(err)
	}
	token = strings.TrimSpace(string(tok))
	base = "http://" + netns.Forward(t, n.srvNS, strings.TrimPrefix(rec.API, "http://"))
	return base, token, func(path string) []byte {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s", path, resp.Status)
		}
		return b
	}
}

// stageRank orders what pc1's row can show during a boot.
var stageRank = map[string]int{"dhcp": 1, "tftp": 2, "ipxe-dhcp": 3, "script": 4, "kernel": 5, "san-login": 6}

var bootingState = regexp.MustCompile(`^booting: ([a-z-]+)$`)

// checkStateOrder checks what the row showed: booting stages in boot
// order, then online.
func checkStateOrder(t *testing.T, states []string) {
	t.Helper()
	last, booting := 0, 0
	for i, s := range states {
		if m := bootingState.FindStringSubmatch(s); m != nil {
			r, ok := stageRank[m[1]]
			if !ok || r < last {
				t.Errorf("state %d %q comes after a later stage: %v", i, s, states)
			}
			last = r
			booting++
			continue
		}
		if strings.HasPrefix(s, "online") && i == len(states)-1 || s == "offline" && booting == 0 {
			continue
		}
		t.Errorf("unexpected state %q in %v", s, states)
	}
	if booting == 0 || len(states) == 0 || !strings.HasPrefix(states[len(states)-1], "online") {
		t.Errorf("the console did not show pc1 booting, then online: %v", states)
	}
}

// inOrder reports whether want appear in got in that order.
func inOrder(got []string, want ...string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}
