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

// startTokenhub writes a config into dir, starts bin with it, waits for it to
// be healthy and creates a client key through the Keys API.
func startTokenhub(ctx context.Context, bin, dir, mockAddr string) (*tokenhub, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	store := filepath.Join(dir, "store")
	cfgPath := filepath.Join(dir, "tokenhub.yaml")
	if err := os.WriteFile(cfgPath, tokenhubConfig(addr, store, mockAddr), 0o600); err != nil {
		return nil, fmt.Errorf("tokenhub: write config: %w", err)
	}
	proc, err := startProcess("tokenhub", filepath.Join(dir, "tokenhub.log"), bin, "-config", cfgPath)
	if err != nil {
		return nil, err
	}
	th := &tokenhub{proc: proc, addr: addr}
	if err := waitReady(ctx, proc, "http://"+addr+"/healthz"); err != nil {
		proc.stop(5 * time.Second)
		return nil, err
	}
	// Without admin_key in the config, tokenhub generated one on its first
	// start and keeps it in the store directory.
	adminKey, err := os.ReadFile(filepath.Join(store, "admin.key"))
	if err != nil {
		proc.stop(5 * time.Second)
		return nil, fmt.Errorf("tokenhub: admin key: %w", err)
	}
	if th.key, err = createKey(addr, strings.TrimSpace(string(adminKey))); err != nil {
		proc.stop(5 * time.Second)
		return nil, err
	}
	return th, nil
}

// tokenhubConfig is the gateway's config for the benchmark: one upstream, the
// mock; one model routed to it; one plan allowing everything. Strings are
// written as JSON strings, which YAML reads alike.
func tokenhubConfig(addr, store, mockAddr string) []byte {
	q := func(s string) string {
		b, _ := json.Marshal(s)
		return string(b)
	}
	return []byte(`# Written by tokenhub-bench.
listen: ` + q(addr) + `
store: {path: ` + q(store) + `}
log: {level: warn}
upstreams:
  - {name: bench, base_url: ` + q("http://"+mockAddr+"/v1") + `, max_conns: 1024}
models:
  - name: ` + benchModel + `
    routes: [{upstream: bench, model: ` + benchModel + `}]
    price: {input_per_mtok: 0.1, output_per_mtok: 0.4}
plans:
  - {name: bench, models: ["*"]}
`)
}

// createKey creates a client key on the bench plan and returns its secret.
func createKey(addr, adminKey string) (string, error) {
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + addr + "/v1/keys")
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.Set("Authorization", "Bearer "+adminKey)
	req.Header.SetContentType("application/json")
	req.SetBodyString(`{"name":"bench","plan":"bench"}`)
	if err := fasthttp.DoTimeout(req, resp, 10*time.Second); err != nil {
		return "", fmt.Errorf("tokenhub: create key: %w", err)
	}
	if resp.StatusCode() != fasthttp.StatusCreated {
		return "", fmt.Errorf("tokenhub: create key: status %d: %s", resp.StatusCode(), resp.Body())
	}
	var created struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal(resp.Body(), &created); err != nil || created.Key == "" {
		return "", fmt.Errorf("tokenhub: create key: no key in the answer %s (%v)", resp.Body(), err)
	}
	return created.Key, nil
}

// waitReady polls url until it answers 200, the process exits, ctx ends or
// startupTimeout passes.
func waitReady(ctx context.Context, p *process, url string) error {
	deadline := time.Now().Add(startupTimeout)
	var last error
	for time.Now().Before(deadline) {
		if done, err := p.exited(); done {
			return fmt.Errorf("%s exited before it was ready (%v); its log:\n%s", p.name, err, p.logTail())
		}
		status, _, err := fasthttp.GetTimeout(nil, url, time.Second)
		if err == nil && status == fasthttp.StatusOK {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("status %d", status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", p.name, context.Cause(ctx))
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not ready after %v (GET %s: %v); its log:\n%s", p.name, startupTimeout, url, last, p.logTail())
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
