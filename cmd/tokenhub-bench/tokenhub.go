package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// benchModel is the model name every target is asked for: tokenhub routes it
// to the mock, which answers any name.
const benchModel = "mock-bench"

// startupTimeout bounds the wait for a started server to become ready.
const startupTimeout = 20 * time.Second

// tokenhub is a tokenhub process serving a config that routes benchModel to
// the mock, and a key to call it with.
type tokenhub struct {
	proc *process
	addr string // host:port
	key  string // a client key on the bench plan
}

// startTokenhub writes the config that config returns for a listen address
// and a store directory into dir, starts bin with it, waits for it to be
// healthy and creates a client key on the bench plan through the Keys API.
func startTokenhub(ctx context.Context, bin, dir string, config func(addr, store string) []byte) (*tokenhub, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	store := filepath.Join(dir, "store")
	proc, err := launchTokenhub(ctx, "tokenhub", bin, dir, addr, config(addr, store))
	if err != nil {
		return nil, err
	}
	th := &tokenhub{proc: proc, addr: addr}
	// Without admin_key in the config, tokenhub generated one on its first
	// start and keeps it in the store directory.
	adminKey, err := os.ReadFile(filepath.Join(store, "admin.key"))
	if err != nil {
		proc.stop(5 * time.Second)
		return nil, fmt.Errorf("tokenhub: admin key: %w", err)
	}
	k, err := createKey(addr, strings.TrimSpace(string(adminKey)), "bench")
	if err != nil {
		proc.stop(5 * time.Second)
		return nil, err
	}
	th.key = k.Key
	return th, nil
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
	if err := waitReady(ctx, proc, "http://"+addr+"/healthz"); err != nil {
		proc.stop(5 * time.Second)
		return nil, err
	}
	return proc, nil
}

// tokenhubConfig is the gateway's config for the benchmark: one upstream, the
// mock; one model routed to it; one plan allowing everything. With limited,
// the plan has every limit and budget, set too high to refuse anything, so
// the run measures what enforcing them costs.
func tokenhubConfig(addr, store, mockAddr string, limited bool) []byte {
	return gatewayConfig(addr, store, limited, mockRoute{upstream: "bench", model: benchModel, mockAddr: mockAddr, maxConns: 1024})
}

// mockRoute is a model tokenhub forwards to a mock upstream of its own.
type mockRoute struct {
	upstream, model, mockAddr string
	maxConns                  int
}

// gatewayConfig is a gateway config with one upstream and one model per
// route, and the bench plan allowing everything (with limited, as for
// tokenhubConfig).
func gatewayConfig(addr, store string, limited bool, routes ...mockRoute) []byte {
	q := yamlString
	plan := `{name: bench, models: ["*"]}`
	if limited {
		plan = `{name: bench, models: ["*"], rpm: 1000000000, tpm: 1000000000, max_request_usd: 1000, monthly_usd: 1000000000}`
	}
	var ups, models strings.Builder
	for _, r := range routes {
		fmt.Fprintf(&ups, "  - {name: %s, base_url: %s, max_conns: %d}\n", q(r.upstream), q("http://"+r.mockAddr+"/v1"), r.maxConns)
		fmt.Fprintf(&models, "  - name: %s\n    routes: [{upstream: %s, model: %s}]\n    price: {input_per_mtok: 0.1, output_per_mtok: 0.4}\n",
			q(r.model), q(r.upstream), q(r.model))
	}
	return []byte(`# Written by tokenhub-bench.
listen: ` + q(addr) + `
store: {path: ` + q(store) + `}
log: {level: warn}
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
