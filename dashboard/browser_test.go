package dashboard_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/config"
	"github.com/tokenhub/tokenhub/internal/eventually"
	gw "github.com/tokenhub/tokenhub/internal/gateway"
	"github.com/tokenhub/tokenhub/internal/mock"
)

// chromiumPath is where Debian's chromium package (.ci/install-deps) puts the browser.
const chromiumPath = "/usr/bin/chromium"

const adminKey = "dashboard-test-admin-key-0123456789"

// TestKeysPageInChromium drives the real page in headless Chromium against a
// real gateway: sign in, create a key and see its secret once, use it, rotate
// it, revoke it, edit a plan, sign out. The API calls that prove each step
// are made from Go, as a client application would make them.
func TestKeysPageInChromium(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing (%v): CI must run the browser test; .ci/install-deps installs chromium", chromiumPath, err)
		}
		t.Skipf("%s is missing (%v): install Debian's chromium package to run the browser test", chromiumPath, err)
	}
	gw := startGateway(t)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.WindowSize(1400, 1000),
	)...)
	defer cancelAlloc()
	tab, cancelTab := chromedp.NewContext(allocCtx)
	defer cancelTab()
	if err := chromedp.Do(tab); err != nil { // starts the browser
		t.Fatalf("starting %s: %v", chromiumPath, err)
	}
	p := &page{t: t, ctx: tab, artifacts: artifactsDir(t)}
	p.watchConsole()

	// /dashboard redirects to the page, which asks for the admin key.
	p.do("open /dashboard", chromedp.Navigate(gw.url+"/dashboard"), chromedp.WaitVisible(chromedp.ID("admin-key")))
	if got := p.eval(`location.pathname`); got != "/dashboard/keys" {
		t.Fatalf("/dashboard led to %q, want /dashboard/keys", got)
	}

	// A wrong key is refused with the API's own message.
	p.do("sign in with a wrong key",
		chromedp.SendKeys(chromedp.ID("admin-key"), "not-the-admin-key"),
		chromedp.Click(chromedp.CSS("#signin-form button")),
		chromedp.WaitVisible(chromedp.ID("signin-error")))
	p.wantText("#signin-error", "That is not the admin key: Incorrect API key provided. (invalid_api_key)")
	if got := p.eval(`String(sessionStorage.getItem('tokenhub.adminKey'))`); got != "null" {
		t.Fatalf("a refused key stayed in sessionStorage: %q", got)
	}

	p.do("sign in",
		chromedp.SendKeys(chromedp.ID("admin-key"), adminKey),
		chromedp.Click(chromedp.CSS("#signin-form button")),
		chromedp.WaitVisible(chromedp.ID("create-form")))
	p.poll("plans listed", `document.querySelector('#create-plan option[value="free"]') !== null`)
	// The routes' health: the built-in mock model's one route, healthy.
	mockRoute := `document.querySelector('#routes-body tr[data-model="mock"][data-upstream="mock"]')`
	p.poll("routes listed", mockRoute+` !== null`)
	if got := p.eval(mockRoute + `.cells[2].textContent + '|' + ` + mockRoute + `.cells[6].textContent`); got != "healthy|—" {
		t.Fatalf("the mock route shows state|back at %q, want healthy|—", got)
	}
	if got := p.eval(`sessionStorage.getItem('tokenhub.adminKey')`); got != adminKey {
		t.Fatalf("sessionStorage holds %q, want the admin key", got)
	}

	// Create a key whose name is markup: it must show as text.
	const name = `ci <img src=x id=injected>`
	p.do("create a key",
		chromedp.SendKeys(chromedp.ID("create-name"), name),
		chromedp.SetValue(chromedp.ID("create-plan"), "free"),
		chromedp.SetValue(chromedp.ID("create-expires"), "2099-12-31"),
		chromedp.Click(chromedp.ID("create-submit")),
		chromedp.WaitVisible(chromedp.ID("secret-value")))
	secret := p.eval(`document.getElementById('secret-value').textContent`)
	id := p.eval(`document.getElementById('secret-panel').dataset.keyId`)
	if !strings.HasPrefix(secret, "sk-") || !strings.HasPrefix(id, "key_") {
		t.Fatalf("secret panel shows key %q with id %q", secret, id)
	}
	row := `document.querySelector('tr[data-id=` + jsString(id) + `]')`
	p.poll("the new key listed", row+` !== null`)
	if got := p.eval(row + `.cells[0].textContent`); got != name {
		t.Fatalf("name cell shows %q, want %q as text", got, name)
	}
	if got := p.eval(`String(document.getElementById('injected'))`); got != "null" {
		t.Fatal("a key's name was parsed as HTML")
	}
	p.do("copy the secret", chromedp.Click(chromedp.ID("secret-copy")), chromedp.WaitVisible(chromedp.ID("secret-copied")))

	var created struct {
		Plan      string `json:"plan"`
		ExpiresAt *int64 `json:"expires_at"`
	}
	gw.admin(t, "GET", "/v1/keys/"+id, nil, http.StatusOK, &created)
	// The end of 2099-12-31 in the browser's time zone, whatever that is.
	if exp := created.ExpiresAt; created.Plan != "free" || exp == nil ||
		*exp < time.Date(2099, 12, 31, 0, 0, 0, 0, time.UTC).Unix() || *exp > time.Date(2100, 1, 2, 0, 0, 0, 0, time.UTC).Unix() {
		t.Fatalf("created key has plan %q, expires_at %v; want free, the end of 2099-12-31", created.Plan, exp)
	}

	gw.wantChat(t, secret, http.StatusOK, "")
	gw.waitUsage(t, id, 1)

	// After a reload the page lists the key with its usage, and the secret is gone.
	p.do("reload", chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("keys-table")))
	p.poll("the month's usage shown", row+` !== null && `+row+`.cells[7].textContent === '1'`)
	if got := p.eval(row + `.cells[8].title`); !regexp.MustCompile(`^\d+ prompt \(2 read from cache\) \+ \d+ completion$`).MatchString(got) {
		t.Fatalf("tokens cell's title %q, want the prompt, its cache reads and the completion", got)
	}
	if got := p.eval(row + `.cells[9].textContent`); !strings.HasSuffix(got, " of $10.00") {
		t.Fatalf("spend cell shows %q, want the spend of $10.00", got)
	}
	p.wantNoSecret(secret)

	// Cancelling the confirmation leaves the key alone.
	revoke := chromedp.CSS(`button[data-action="revoke"][data-id=` + jsString(id) + `]`)
	p.do("cancel a revoke",
		chromedp.Click(revoke),
		chromedp.WaitVisible(chromedp.ID("confirm")),
		chromedp.Click(chromedp.ID("confirm-cancel")),
		chromedp.WaitNotVisible(chromedp.ID("confirm")))
	gw.wantChat(t, secret, http.StatusOK, "")

	// Rotating shows the new secret once; the old one stops working.
	p.do("rotate",
		chromedp.Click(chromedp.CSS(`button[data-action="rotate"][data-id=`+jsString(id)+`]`)),
		chromedp.WaitVisible(chromedp.ID("confirm")),
		chromedp.Click(chromedp.ID("confirm-ok")),
		chromedp.WaitVisible(chromedp.ID("secret-value")))
	rotated := p.eval(`document.getElementById('secret-value').textContent`)
	if !strings.HasPrefix(rotated, "sk-") || rotated == secret {
		t.Fatalf("rotation showed %q, want a new secret", rotated)
	}
	gw.wantChat(t, secret, http.StatusUnauthorized, "invalid_api_key")
	gw.wantChat(t, rotated, http.StatusOK, "")

	// Revoking, confirmed in the page's own dialog, refuses the key at once.
	p.do("revoke",
		chromedp.Click(revoke),
		chromedp.WaitVisible(chromedp.ID("confirm")),
		chromedp.Click(chromedp.ID("confirm-ok")))
	p.poll("revoke reported", `document.getElementById('notice').textContent.endsWith('revoked.')`)
	gw.wantChat(t, rotated, http.StatusUnauthorized, "invalid_api_key")
	if got := p.eval(`String(document.getElementById('secret-panel').hidden)`); got != "true" {
		t.Fatal("the revoked key's secret is still on the page")
	}
	p.do("show revoked keys", chromedp.Click(chromedp.ID("show-revoked")))
	p.poll("the key shown revoked", row+` !== null && `+row+`.cells[6].textContent === 'revoked'`)

	// Edit a plan: a bad amount is refused in the page, a good one saved.
	p.do("edit plan free",
		chromedp.Click(chromedp.CSS(`button[data-action="edit"][data-name="free"]`)),
		chromedp.WaitVisible(chromedp.ID("plan-form")),
		chromedp.SetValue(chromedp.ID("plan-models"), "mock, gpt-4o*"),
		chromedp.SetValue(chromedp.ID("plan-rpm"), "120"),
		chromedp.SetValue(chromedp.ID("plan-monthly"), "25.1234567"),
		chromedp.Click(chromedp.ID("plan-save")),
		chromedp.WaitVisible(chromedp.ID("error")))
	p.wantText("#error", "USD per month must be an amount of dollars with at most 6 decimals, such as 10 or 0.5 (0 means no limit).")
	p.do("save plan free",
		chromedp.SetValue(chromedp.ID("plan-monthly"), "25.5"),
		chromedp.Click(chromedp.ID("plan-save")),
		chromedp.WaitNotVisible(chromedp.ID("plan-form")))
	p.wantText("#notice", "Plan “free” saved.")
	var plan struct {
		Models     []string    `json:"models"`
		RPM        int64       `json:"rpm"`
		MonthlyUSD json.Number `json:"monthly_usd"`
	}
	gw.admin(t, "GET", "/v1/plans/free", nil, http.StatusOK, &plan)
	if strings.Join(plan.Models, ",") != "mock,gpt-4o*" || plan.RPM != 120 || plan.MonthlyUSD != "25.5" {
		t.Fatalf("plan free after the edit: %+v, want models mock,gpt-4o*, rpm 120, monthly 25.5", plan)
	}

	p.screenshot("dashboard-keys.png")

	// Signing out forgets the admin key, also across a reload.
	p.do("sign out", chromedp.Click(chromedp.ID("signout")), chromedp.WaitVisible(chromedp.ID("admin-key")))
	if got := p.eval(`String(sessionStorage.length)`); got != "0" {
		t.Fatalf("sessionStorage holds %s items after sign-out", got)
	}
	p.do("reload signed out", chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("admin-key")))
	if got := p.eval(`String(document.getElementById('app').hidden)`); got != "true" {
		t.Fatal("the app is shown after sign-out and reload")
	}

	p.wantCleanConsole()
}

// page is one browser tab on the dashboard.
type page struct {
	t         *testing.T
	ctx       context.Context
	artifacts string

	mu       sync.Mutex
	problems []string // exceptions, CSP violations, console errors
}

// stepTimeout bounds each step, so that a step that waits for what never
// comes fails with its name and a screenshot while the test's context lives.
const stepTimeout = 10 * time.Second

// do runs steps, then waits until the page has no API call under way, so
// that the next step finds the page settled (rows are redrawn after each
// change). It fails the test with a screenshot when a step fails.
func (p *page) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.fail(what, err)
	}
	p.poll(what+": API calls done", `!document.body.hasAttribute('aria-busy')`)
}

// eval returns the string value of a JavaScript expression.
func (p *page) eval(expr string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		p.fail("evaluate "+expr, err)
	}
	return v
}

// poll waits until a JavaScript expression is true.
func (p *page) poll(what, expr string) {
	p.t.Helper()
	if _, err := chromedp.Run(p.ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(stepTimeout))); err != nil {
		p.fail("wait for "+what, err)
	}
}

// wantText asserts the exact text of the element that selector finds.
func (p *page) wantText(selector, want string) {
	p.t.Helper()
	if got := p.eval(`document.querySelector(` + jsString(selector) + `).textContent`); got != want {
		p.fail("text of "+selector, errors.New("got "+jsString(got)+", want "+jsString(want)))
	}
}

// wantNoSecret asserts the secret appears nowhere in the document.
func (p *page) wantNoSecret(secret string) {
	p.t.Helper()
	if got := p.eval(`String(document.documentElement.outerHTML.includes(` + jsString(secret) + `))`); got != "false" {
		p.fail("secret shown once", errors.New("the secret is on the page again after a reload"))
	}
}

func (p *page) fail(what string, err error) {
	p.t.Helper()
	p.screenshot("dashboard-failure.png")
	p.mu.Lock()
	defer p.mu.Unlock()
	p.t.Fatalf("%s: %v\nconsole problems so far: %q", what, err, p.problems)
}

func (p *page) screenshot(name string) {
	p.t.Helper()
	png, err := chromedp.Run(p.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Logf("screenshot %s: %v", name, err)
		return
	}
	path := filepath.Join(p.artifacts, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Errorf("screenshot: %v", err)
		return
	}
	p.t.Logf("screenshot: %s", path)
}

// watchConsole records what a working page never produces: uncaught
// exceptions, Content-Security-Policy violations (the "security" log) and
// console.error calls. Failed requests (the "network" log) are expected: the
// test signs in with a wrong key.
func (p *page) watchConsole() {
	messages := chromedp.Console(p.ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.IsException() || m.Source == "security" || m.Source == "javascript" ||
				(m.Type == chromedp.ConsoleError && m.Source == "") {
				p.mu.Lock()
				p.problems = append(p.problems, m.String())
				p.mu.Unlock()
			}
		}
	}()
}

func (p *page) wantCleanConsole() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.problems) > 0 {
		p.t.Fatalf("the page reported problems:\n%s", strings.Join(p.problems, "\n"))
	}
}

// artifactsDir is $TOKENHUB_ARTIFACTS (kept after the test, for CI to
// upload) or else a temporary directory.
func artifactsDir(t *testing.T) string {
	dir := os.Getenv("TOKENHUB_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// jsString quotes s as a JavaScript (and CSS) string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// gateway is a tokenhub with the embedded defaults on a loopback port.
type gateway struct {
	url    string
	client *http.Client
}

func startGateway(t *testing.T) *gateway {
	t.Helper()
	cfg, err := config.Load("")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Store.Path = t.TempDir()
	cfg.AdminKey = adminKey
	// The mock model on a mock that reads part of every prompt from a
	// cache, so that the page has cache reads to show.
	for i := range cfg.Upstreams {
		if cfg.Upstreams[i].Name == "mock" {
			cfg.Upstreams[i].BaseURL = startMock(t, mock.Options{CachedTokens: cachedTokens})
		}
	}
	node, err := gw.Open(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		node.Close()
		t.Fatal(err)
	}
	go node.Serve(ln) // Serve ends with Shutdown
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		node.Shutdown(ctx)
		node.Close()
	})
	return &gateway{url: "http://" + ln.Addr().String(), client: &http.Client{Timeout: 10 * time.Second}}
}

// cachedTokens is how many of each prompt's tokens the mock reads from a cache.
const cachedTokens = 2

// startMock serves a mock upstream with o on loopback and returns its base URL.
func startMock(t *testing.T, o mock.Options) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: mock.New(o).Handler}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return "http://" + ln.Addr().String() + "/v1"
}

func (g *gateway) do(t *testing.T, method, path, key string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, g.url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := g.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// admin calls the admin API, failing unless the status is want, and decodes
// the answer into out.
func (g *gateway) admin(t *testing.T, method, path string, body []byte, want int, out any) {
	t.Helper()
	status, b := g.do(t, method, path, adminKey, body)
	if status != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, status, want, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("%s %s: %v: %s", method, path, err, b)
	}
}

// wantChat sends a chat completion with key and asserts the status, and for
// errors the OpenAI error code.
func (g *gateway) wantChat(t *testing.T, key string, status int, code string) {
	t.Helper()
	got, b := g.do(t, "POST", "/v1/chat/completions", key,
		[]byte(`{"model":"mock","messages":[{"role":"user","content":"Hello"}]}`))
	if got != status {
		t.Fatalf("chat completion: status %d, want %d: %s", got, status, b)
	}
	var v struct {
		Choices []json.RawMessage `json:"choices"`
		Error   struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("chat completion: %v: %s", err, b)
	}
	if status == http.StatusOK && len(v.Choices) == 0 || v.Error.Code != code {
		t.Fatalf("chat completion: error code %q, want %q: %s", v.Error.Code, code, b)
	}
}

// waitUsage waits until the key's month-to-date usage counts requests
// (usage reaches the store in batches every second).
func (g *gateway) waitUsage(t *testing.T, id string, requests int64) {
	t.Helper()
	var u struct {
		Requests int64 `json:"requests"`
	}
	eventually.True(t, fmt.Sprintf("usage of %s counting %d requests", id, requests), func() bool {
		g.admin(t, "GET", "/v1/keys/"+id+"/usage", nil, http.StatusOK, &u)
		return u.Requests == requests
	})
}
