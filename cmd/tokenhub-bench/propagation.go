package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/bench/load"
)

// The propagation scenario: nodes sharing one Valkey, changes made through
// the admin API of the first, and the time until the others act on them.
const (
	propagationScenario = "propagation"
	// promise is the documented bound (config/example.yaml, store.valkey): a
	// change on any node holds on all of them within it.
	promise = 5 * time.Second
	// pollBound ends a trial whose change has not held by then: twice the
	// promise, so a late change is measured rather than cut off at the bound.
	pollBound = 2 * promise
	// maxNodes and maxTrials keep a run modest.
	maxNodes  = 5
	maxTrials = 1000
	// subscribeWait follows the last node's /healthz: each node subscribes to
	// invalidations in the background, and until it has, it bounds staleness
	// by re-reading (cache.stale_after, 1s) instead of hearing changes.
	subscribeWait = time.Second
	// otherModel is a second model, so that one can be taken out of a plan
	// while the plan still allows benchModel.
	otherModel = "other"
	// narrowingPlan is the plan whose models the trials widen and narrow.
	narrowingPlan = "narrowing"
)

// Requests a node is polled with; each needs a key and is cheap.
var (
	// listModels is authenticated and does not reach the upstream.
	listModels = probe{method: fasthttp.MethodGet, path: "/v1/models"}
	// chatOther needs otherModel in the key's plan.
	chatOther = probe{method: fasthttp.MethodPost, path: "/v1/chat/completions",
		body: []byte(`{"model":"` + otherModel + `","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}`)}
)

// probe is a request sent with a client key.
type probe struct {
	method, path string
	body         []byte
}

// node is one tokenhub process of the cluster.
type node struct {
	name   string
	addr   string
	proc   *process
	client *fasthttp.HostClient
}

// propagation starts a Valkey, the mock and o.nodes tokenhub nodes sharing
// the Valkey, makes o.trials changes on the first node and reports how long
// each took to hold on the others. Progress goes to logw.
func propagation(ctx context.Context, o *options, logw io.Writer) (*propagationReport, error) {
	if o.nodes < 2 || o.nodes > maxNodes {
		return nil, fmt.Errorf("-nodes %d: want 2 to %d", o.nodes, maxNodes)
	}
	if o.trials < 1 || o.trials > maxTrials {
		return nil, fmt.Errorf("-trials %d: want 1 to %d", o.trials, maxTrials)
	}
	tokenhubBin, valkeyBin, err := clusterBinaries(o, propagationScenario)
	if err != nil {
		return nil, err
	}
	adminKey, err := randomSecret()
	if err != nil {
		return nil, err
	}

	st, err := startStack(ctx, logw, stackSpec{valkeyBin: valkeyBin})
	if err != nil {
		return nil, err
	}
	defer st.close()
	nodes := make([]*node, 0, o.nodes)
	for i := range o.nodes {
		name := fmt.Sprintf("tokenhub-%d", i+1)
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		cfg := nodeConfig(addr, filepath.Join(st.dir, name+"-store"), st.mockAddr, st.valkeyAddr, adminKey)
		proc, err := launchTokenhub(ctx, name, tokenhubBin, st.dir, addr, cfg)
		if err != nil {
			return nil, err
		}
		st.onClose(proc)
		nodes = append(nodes, &node{name: name, addr: addr, proc: proc,
			client: &fasthttp.HostClient{Addr: addr, NoDefaultUserAgentHeader: true}})
		fmt.Fprintf(logw, "%s serving on %s\n", name, addr)
	}
	select {
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	case <-time.After(subscribeWait):
	}

	rep := &propagationReport{Scenario: propagationScenario, Nodes: o.nodes, Trials: o.trials,
		CPUs: runtime.NumCPU(), Promise: promise, Started: time.Now()}
	fmt.Fprintf(logw, "%d trials: changes on %s, timed on %d other node(s)...\n", o.trials, nodes[0].name, o.nodes-1)
	t := &trials{first: nodes[0], others: nodes[1:], adminKey: adminKey}
	for i := range o.trials {
		if err := t.run(ctx, i); err != nil {
			return nil, fmt.Errorf("trial %d: %w", i+1, err)
		}
	}
	rep.add("revoke", &t.revoke)
	rep.add("rotate", &t.rotate)
	rep.add("plan", &t.plan)
	for _, c := range rep.Results {
		fmt.Fprintf(logw, "%s: %d samples, p50 %s, max %s\n", c.Change, c.Samples, ms(c.Delay.P50), ms(c.Delay.Max))
	}
	return rep, nil
}

// trials makes changes on first and times them on others.
type trials struct {
	first                *node
	others               []*node
	adminKey             string
	revoke, rotate, plan delays
}

// delays are the times from the admin call's answer to another node's first
// refusal, one per change and other node.
type delays struct {
	load.Histogram
	// atFirst counts the changes that already held at the first request:
	// those delays are one round trip, the measurement's floor.
	atFirst uint64
}

// run is trial i: a revoke (even i) or a rotate (odd i) of a key every other
// node has cached, then otherModel taken out of a plan whose key every other
// node has used it with.
func (t *trials) run(ctx context.Context, i int) error {
	k, err := createKey(t.first.addr, t.adminKey, "bench")
	if err != nil {
		return err
	}
	if err := t.cache(listModels, k.Key); err != nil {
		return err
	}
	d, method, path := &t.revoke, fasthttp.MethodDelete, "/v1/keys/"+k.ID
	if i%2 == 1 {
		d, method, path = &t.rotate, fasthttp.MethodPost, "/v1/keys/"+k.ID+"/rotate"
	}
	if err := t.change(ctx, d, method, path, nil, listModels, k.Key, fasthttp.StatusUnauthorized); err != nil {
		return err
	}

	// The plan is narrow (as configured, or as the previous trial left it),
	// and the other nodes may still hold it so: widening it must reach them
	// before the key can be used with otherModel there. Waiting for that
	// caches the key and the wide plan on every other node; the wait itself
	// is not recorded.
	pk, err := createKey(t.first.addr, t.adminKey, narrowingPlan)
	if err != nil {
		return err
	}
	planPath := "/v1/plans/" + narrowingPlan
	if err := t.change(ctx, nil, fasthttp.MethodPut, planPath, planBody(benchModel, otherModel), chatOther, pk.Key, fasthttp.StatusOK); err != nil {
		return err
	}
	return t.change(ctx, &t.plan, fasthttp.MethodPut, planPath, planBody(benchModel), chatOther, pk.Key, fasthttp.StatusForbidden)
}

// cache sends p with secret to every other node, which must answer 200: the
// key, and its plan, are then in that node's cache.
func (t *trials) cache(p probe, secret string) error {
	for _, n := range t.others {
		status, body, err := n.send(p, secret)
		if err != nil {
			return err
		}
		if status != fasthttp.StatusOK {
			return fmt.Errorf("%s: %s %s with a new key: status %d, want 200: %s", n.name, p.method, p.path, status, body)
		}
	}
	return nil
}

// change makes an admin call on the first node and polls every other node
// with p and secret until it answers want, recording each node's delay in d
// when d is not nil.
func (t *trials) change(ctx context.Context, d *delays, method, path string, body []byte, p probe, secret string, want int) error {
	if err := adminCall(t.first.addr, t.adminKey, method, path, body, fasthttp.StatusOK, nil); err != nil {
		return err
	}
	t0 := time.Now()
	took := make([]time.Duration, len(t.others))
	sent := make([]int, len(t.others))
	errs := make([]error, len(t.others))
	var wg sync.WaitGroup
	for i, n := range t.others {
		wg.Go(func() { took[i], sent[i], errs[i] = n.await(ctx, t0, p, secret, want) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("after %s %s on %s: %w", method, path, t.first.name, err)
	}
	if d != nil {
		for i := range took {
			d.Record(took[i])
			if sent[i] == 1 {
				d.atFirst++
			}
		}
	}
	return nil
}

// await sends p with secret to n, back to back, until n answers want, and
// returns the time from since to that answer, and the number of requests
// sent: the change is known to hold on n from then, and to have held at most
// one round trip earlier.
func (n *node) await(ctx context.Context, since time.Time, p probe, secret string, want int) (time.Duration, int, error) {
	for sent := 1; ; sent++ {
		status, body, err := n.send(p, secret)
		if err != nil {
			return 0, sent, err
		}
		took := time.Since(since)
		if status == want {
			return took, sent, nil
		}
		if took > pollBound {
			return 0, sent, fmt.Errorf("%s: %s %s still answered %d after %v, want %d: %s", n.name, p.method, p.path, status, pollBound, want, body)
		}
		if ctx.Err() != nil {
			return 0, sent, context.Cause(ctx)
		}
	}
}

// send sends p to n with secret as the key and returns the answer's status,
// and its body for error messages.
func (n *node) send(p probe, secret string) (int, []byte, error) {
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + n.addr + p.path)
	req.Header.SetMethod(p.method)
	req.Header.Set("Authorization", "Bearer "+secret)
	if p.body != nil {
		req.Header.SetContentType("application/json")
		req.SetBody(p.body)
	}
	if err := n.client.DoTimeout(req, resp, 5*time.Second); err != nil {
		return 0, nil, fmt.Errorf("%s: %s %s: %w", n.name, p.method, p.path, err)
	}
	return resp.StatusCode(), append([]byte(nil), resp.Body()...), nil
}

// planBody is a Plans API body allowing models.
func planBody(models ...string) []byte {
	q := make([]string, len(models))
	for i, m := range models {
		q[i] = yamlString(m)
	}
	return []byte(`{"models":[` + strings.Join(q, ",") + `]}`)
}

// randomSecret returns 32 random bytes in hex, for the nodes' shared admin key.
func randomSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("admin key: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// nodeConfig is the config of one node of the propagation scenario: the
// shared Valkey and admin key, a store directory of its own, benchModel and
// otherModel both served by the mock, the bench plan allowing everything and
// the narrowing plan the trials change.
func nodeConfig(addr, store, mockAddr, valkeyAddr, adminKey string) []byte {
	q := yamlString
	return []byte(`# Written by tokenhub-bench for the ` + propagationScenario + ` scenario.
listen: ` + q(addr) + `
admin_key: ` + q(adminKey) + `
store:
  path: ` + q(store) + `
  valkey: {addrs: [` + q(valkeyAddr) + `]}
log: {level: warn}
upstreams:
  - {name: bench, base_url: ` + q("http://"+mockAddr+"/v1") + `}
models:
  - name: ` + benchModel + `
    routes: [{upstream: bench}]
  - name: ` + otherModel + `
    routes: [{upstream: bench}]
plans:
  - {name: bench, models: ["*"]}
  - {name: ` + narrowingPlan + `, models: [` + benchModel + `]}
`)
}

// propagationReport is one run of the propagation scenario.
type propagationReport struct {
	Scenario string         `json:"scenario"`
	Nodes    int            `json:"nodes"`
	Trials   int            `json:"trials"`
	CPUs     int            `json:"cpus"`
	Promise  time.Duration  `json:"promise_ns"`
	Started  time.Time      `json:"started"`
	Results  []changeResult `json:"results"`
}

// changeResult is how long one kind of change took to hold on other nodes.
type changeResult struct {
	// Change is revoke, rotate or plan.
	Change string `json:"change"`
	// Samples is one per change and other node.
	Samples uint64 `json:"samples"`
	// AtFirstRequest counts the samples where the change already held at the
	// first request, so the delay is one round trip: the measurement's floor.
	AtFirstRequest uint64 `json:"at_first_request"`
	// Delay summarises the times from the admin call's answer on the first
	// node to another node's first refusal.
	Delay load.Latency `json:"delay"`
	// WithinPromise is whether every sample was within the promise.
	WithinPromise bool `json:"within_promise"`
}

// add appends the delays of one kind of change.
func (r *propagationReport) add(change string, d *delays) {
	h := &d.Histogram
	r.Results = append(r.Results, changeResult{
		Change:         change,
		Samples:        h.Count(),
		AtFirstRequest: d.atFirst,
		Delay:          h.Summary(),
		WithinPromise:  h.Max() <= r.Promise,
	})
}

// writeMarkdown prints the report as a markdown table with a preamble and
// what each change is.
func (r *propagationReport) writeMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "scenario %s, %d tokenhub nodes sharing one Valkey, %d trials, %d CPUs, loopback: "+
		"time from the admin call's answer on node 1 to the first refusal on each other node\n\n",
		r.Scenario, r.Nodes, r.Trials, r.CPUs)
	b.WriteString("| change | samples | p50 | p90 | p99 | max | promise | result |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---|\n")
	for _, c := range r.Results {
		result := "pass"
		if !c.WithinPromise {
			result = "FAIL"
		}
		d := c.Delay
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %v | %s |\n",
			c.Change, c.Samples, ms(d.P50), ms(d.P90), ms(d.P99), ms(d.Max), r.Promise, result)
	}
	b.WriteString("\n")
	for _, c := range r.Results {
		fmt.Fprintf(&b, "%s: %d of %d samples held at the first request (one round trip, min %s)\n",
			c.Change, c.AtFirstRequest, c.Samples, ms(c.Delay.Min))
	}
	b.WriteString("\nrevoke: DELETE /v1/keys/{id}, until GET /v1/models with the key answers 401\n" +
		"rotate: POST /v1/keys/{id}/rotate, until GET /v1/models with the old secret answers 401\n" +
		"plan: PUT /v1/plans/{name} without model " + otherModel + ", until a chat completion for it answers 403\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// verdict is an error naming every change that took longer than the promise
// on some node.
func (r *propagationReport) verdict() error {
	var late []string
	for _, c := range r.Results {
		if !c.WithinPromise {
			late = append(late, fmt.Sprintf("%s took up to %s", c.Change, ms(c.Delay.Max)))
		}
	}
	if len(late) > 0 {
		return fmt.Errorf("changes took longer than the %v promise to hold on every node: %s", r.Promise, strings.Join(late, ", "))
	}
	return nil
}
