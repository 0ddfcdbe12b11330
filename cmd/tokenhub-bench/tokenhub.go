package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/internal/mock"
)

// benchModel is the model name every target is asked for: tokenhub routes it
// to the mock, which answers any name.
const benchModel = "mock-bench"

// startupTimeout bounds the wait for a started server to become ready.
const startupTimeout = 20 * time.Second

// tokenhub is a tokenhub process serving a config that routes benchModel to
// the mock, and a key to call it with (none when started by startGateway).
type tokenhub struct {
	proc     *process
	addr     string // host:port
	adminKey string
	key      string // a client key on the bench plan
	keyID    string
}

// startTokenhub starts a tokenhub as startGateway does and creates a client
// key on the bench plan through the Keys API.
func startTokenhub(ctx context.Context, bin, dir, name string, gw gateway) (*tokenhub, error) {
	th, err := startGateway(ctx, bin, dir, name, gw)
	if err != nil {
		return nil, err
	}
	k, err := createKey(th.addr, th.adminKey, "bench")
	if err != nil {
		th.proc.stop(5 * time.Second)
		return nil, err
	}
	th.key, th.keyID = k.Key, k.ID
	return th, nil
}

// startGateway writes gw's config, with a free address and a store in dir,
// into dir, starts bin with it and waits for it to be healthy; it creates
// no client key. name names its config, log and store.
func startGateway(ctx context.Context, bin, dir, name string, gw gateway) (*tokenhub, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	gw.addr, gw.store = addr, filepath.Join(dir, name+"-store")
	proc, err := launchTokenhub(ctx, name, bin, dir, addr, gw.config())
	if err != nil {
		return nil, err
	}
	th := &tokenhub{proc: proc, addr: addr, adminKey: gw.adminKey}
	if th.adminKey == "" {
		// Without admin_key in the config, tokenhub generated one on its
		// first start and keeps it in the store directory.
		b, err := os.ReadFile(filepath.Join(gw.store, "admin.key"))
		if err != nil {
			proc.stop(5 * time.Second)
			return nil, fmt.Errorf("%s: admin key: %w", name, err)
		}
		th.adminKey = strings.TrimSpace(string(b))
	}
	return th, nil
}

// target is th as a target of the load, named name.
func (th *tokenhub) target(name string) *target {
	return &target{name: name, addr: th.addr, procs: pids(th.proc), metrics: []string{th.addr}, adminKey: th.adminKey}
}

// usageNote reads key id's month to date back from the Keys API, once the
// usage the load left has been batched to the store, and says what it is.
func (th *tokenhub) usageNote(id string) string {
	// Usage reaches the store in batches every second.
	time.Sleep(1500 * time.Millisecond)
	var u struct {
		Requests    int64       `json:"requests"`
		Prompt      int64       `json:"prompt_tokens"`
		Completion  int64       `json:"completion_tokens"`
		SpendUSD    json.Number `json:"spend_usd"`
		ReservedUSD json.Number `json:"reserved_usd"`
		MonthlyUSD  json.Number `json:"monthly_usd"`
	}
	if err := adminCall(th.addr, th.adminKey, fasthttp.MethodGet, "/v1/keys/"+id+"/usage", nil, fasthttp.StatusOK, &u); err != nil {
		return "usage: not read: " + err.Error()
	}
	return fmt.Sprintf("usage of the key afterwards (GET /v1/keys/{id}/usage, warmups included): %d requests, %d prompt and %d completion tokens, $%s spent, $%s still reserved, monthly cap $%s",
		u.Requests, u.Prompt, u.Completion, u.SpendUSD, u.ReservedUSD, u.MonthlyUSD)
}

// forceGC has tokenhub collect its garbage, by asking its profiler (served
// with gateway.pprof) for a heap profile after a collection, so that its
// heap then is what it holds live. It reports whether it could.
func (th *tokenhub) forceGC() bool {
	status, _, err := fasthttp.GetTimeout(nil, "http://"+th.addr+"/debug/pprof/heap?gc=1", 30*time.Second)
	return err == nil && status == fasthttp.StatusOK
}

// launchTokenhub writes cfg to dir/name.yaml, starts bin with it, its output
// in dir/name.log, and waits until it serves /healthz on addr.
func launchTokenhub(ctx context.Context, name, bin, dir, addr string, cfg []byte) (*process, error) {
	cfgPath := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		return nil, fmt.Errorf("%s: write config: %w", name, err)
	}
	proc, err := startProcess(name, filepath.Join(dir, name+".log"), bin, "-config", cfgPath)
	if err != nil {
		return nil, err
	}
	if err := readyOrStop(ctx, proc, "http://"+addr+"/healthz"); err != nil {
		return nil, err
	}
	return proc, nil
}

// Plans the bench plan can be: a YAML flow mapping each.
const (
	planOpen = `{name: bench, models: ["*"]}`
	// planAllLimits has every limit and budget, set too high to refuse
	// anything, so a run measures what enforcing them costs.
	// The monthly budget is $1,000,000, not more: tokenhub counts money in
	// int64 pico-dollars, which hold at most about $9.2 million.
	planAllLimits = `{name: bench, models: ["*"], rpm: 1000000000, tpm: 1000000000, max_request_usd: 1000, monthly_usd: 1000000}`
	// planBudgets has the budgets alone.
	planBudgets = `{name: bench, models: ["*"], max_request_usd: 1000, monthly_usd: 1000000}`
)

// benchPlan is the bench plan of the plain throughput scenarios: with
// limits (-limits), every limit and budget on.
func benchPlan(limits bool) string {
	if limits {
		return planAllLimits
	}
	return planOpen
}

// planRate is a bench plan allowing rpm requests and tpm tokens a minute.
func planRate(rpm, tpm int64) string {
	return fmt.Sprintf(`{name: bench, models: ["*"], rpm: %d, tpm: %d}`, rpm, tpm)
}

// gateway is the config of a tokenhub the benchmark starts.
type gateway struct {
	addr, store string
	// plan is the bench plan; planOpen when empty.
	plan   string
	routes []mockRoute
	// maxKeys is cache.max_keys; the default when 0.
	maxKeys int
	// valkeyAddr, when set, makes the store a Valkey shared with other
	// nodes, which then need adminKey in common.
	valkeyAddr string
	adminKey   string
	// pprof serves /debug/pprof/, whose heap profile can force a garbage
	// collection (see forceGC).
	pprof bool
}

// mockRoute is a model tokenhub forwards to a mock upstream of its own.
// Routes of the same model make one model with several routes.
type mockRoute struct {
	upstream, model, mockAddr string
	maxConns                  int
	// timeout is the upstream's timeout; the default when 0.
	timeout time.Duration
	// mockStatus, when set, is sent to the mock as X-Mock-Status: every
	// answer has that status, while its /v1/models still answers.
	mockStatus int
	// anthropic: the upstream is the mock's Messages API (kind: anthropic,
	// API version 2023-06-01, which takes the scenarios' temperature), as
	// claudeRouteModel.
	anthropic bool
}

// config is the gateway's config file: an upstream for each route, a model
// for each model the routes name (with their routes in order), and the
// bench plan.
func (g gateway) config() []byte {
	q := yamlString
	plan := g.plan
	if plan == "" {
		plan = planOpen
	}
	var ups, models, extra strings.Builder
	var order []string
	routes := map[string][]string{}
	for _, r := range g.routes {
		timeout := ""
		if r.timeout > 0 {
			timeout = ", timeout: " + r.timeout.String()
		}
		if r.mockStatus != 0 {
			timeout += fmt.Sprintf(", headers: {%s: %q}", mock.HeaderStatus, strconv.Itoa(r.mockStatus))
		}
		upstreamModel := r.model
		if r.anthropic {
			timeout += `, kind: anthropic, anthropic_version: "2023-06-01", api_key: bench`
			upstreamModel = claudeRouteModel
		}
		fmt.Fprintf(&ups, "  - {name: %s, base_url: %s, max_conns: %d%s}\n", q(r.upstream), q("http://"+r.mockAddr+"/v1"), r.maxConns, timeout)
		if _, ok := routes[r.model]; !ok {
			order = append(order, r.model)
		}
		routes[r.model] = append(routes[r.model], fmt.Sprintf("{upstream: %s, model: %s}", q(r.upstream), q(upstreamModel)))
	}
	for _, m := range order {
		fmt.Fprintf(&models, "  - name: %s\n    routes: [%s]\n    price: {input_per_mtok: 0.1, output_per_mtok: 0.4}\n",
			q(m), strings.Join(routes[m], ", "))
	}
	if g.adminKey != "" {
		fmt.Fprintf(&extra, "admin_key: %s\n", q(g.adminKey))
	}
	if g.maxKeys > 0 {
		fmt.Fprintf(&extra, "cache: {max_keys: %d}\n", g.maxKeys)
	}
	if g.pprof {
		extra.WriteString("admin: {pprof: true}\n")
	}
	store := "store: {path: " + q(g.store) + "}\n"
	if g.valkeyAddr != "" {
		store = "store:\n  path: " + q(g.store) + "\n  valkey: {addrs: [" + q(g.valkeyAddr) + "]}\n"
	}
	return []byte(`# Written by tokenhub-bench.
listen: ` + q(g.addr) + `
` + store + extra.String() + `log: {level: warn}
upstreams:
` + ups.String() + `models:
` + models.String() + `plans:
  - ` + plan + `
`)
}

// yamlString quotes s for a config file: as a JSON string, which YAML reads
// alike.
func yamlString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// createdKey is the Keys API's answer to a create or a rotate: the only time
// it shows the secret.
type createdKey struct {
	ID  string `json:"id"`
	Key string `json:"key"`
}

// createKey creates a client key on plan and returns it with its secret.
func createKey(addr, adminKey, plan string) (createdKey, error) {
	var k createdKey
	body, _ := json.Marshal(map[string]string{"name": "bench", "plan": plan})
	if err := adminCall(addr, adminKey, fasthttp.MethodPost, "/v1/keys", body, fasthttp.StatusCreated, &k); err != nil {
		return k, err
	}
	if k.ID == "" || k.Key == "" {
		return k, fmt.Errorf("tokenhub: POST /v1/keys: no id or key in the answer")
	}
	return k, nil
}

// adminCall sends one Keys or Plans API request to addr and decodes the
// answer into out, if not nil. Any status but want is an error.
func adminCall(addr, adminKey, method, path string, body []byte, want int, out any) error {
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + addr + path)
	req.Header.SetMethod(method)
	req.Header.Set("Authorization", "Bearer "+adminKey)
	if body != nil {
		req.Header.SetContentType("application/json")
		req.SetBody(body)
	}
	if err := fasthttp.DoTimeout(req, resp, 10*time.Second); err != nil {
		return fmt.Errorf("tokenhub: %s %s: %w", method, path, err)
	}
	if resp.StatusCode() != want {
		return fmt.Errorf("tokenhub: %s %s: status %d, want %d: %s", method, path, resp.StatusCode(), want, resp.Body())
	}
	if out != nil {
		if err := json.Unmarshal(resp.Body(), out); err != nil {
			return fmt.Errorf("tokenhub: %s %s: answer %s: %w", method, path, resp.Body(), err)
		}
	}
	return nil
}

// waitReady polls url until it answers 200, the process exits, ctx ends or
// startupTimeout passes.
func waitReady(ctx context.Context, p *process, url string) error {
	return waitUntil(ctx, p, p.name, "GET "+url, 50*time.Millisecond, func() error {
		status, _, err := fasthttp.GetTimeout(nil, url, time.Second)
		if err == nil && status != fasthttp.StatusOK {
			err = fmt.Errorf("status %d", status)
		}
		return err
	})
}

// readyOrStop waits until url answers 200, as waitReady, and stops p if it
// does not.
func readyOrStop(ctx context.Context, p *process, url string) error {
	if err := waitReady(ctx, p, url); err != nil {
		p.stop(5 * time.Second)
		return err
	}
	return nil
}

// waitUntil runs probe every interval until it succeeds, the process exits
// (its log then says why), ctx ends or startupTimeout passes. name says
// which process, probe what is tried.
func waitUntil(ctx context.Context, p *process, name, probe string, interval time.Duration, try func() error) error {
	deadline := time.Now().Add(startupTimeout)
	var last error
	for time.Now().Before(deadline) {
		if done, err := p.exited(); done {
			return fmt.Errorf("%s exited before it was ready (%v); its log:\n%s", name, err, p.logTail())
		}
		if last = try(); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", p.name, context.Cause(ctx))
		case <-time.After(interval):
		}
	}
	return fmt.Errorf("%s not ready after %v (%s: %v); its log:\n%s", name, startupTimeout, probe, last, p.logTail())
}

// freeAddr returns a loopback address with a port free at the time of the call.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	return addr, nil
}
