package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/bench/load"
)

// The keys scenario: many keys, created through the Keys API, then traffic
// spread over all of them, uniformly and skewed, so that tokenhub's cache of
// keys holds a working set of realistic size and shape.
const (
	keysScenario = "keys"
	// keyCreators is how many Keys API calls are made at a time. tokenhub
	// makes one admin write at a time, so more would only queue; a few keep
	// it busy while answers travel.
	keyCreators = 16
)

// keysReport is one run of the keys scenario.
type keysReport struct {
	Scenario string `json:"scenario"`
	Keys     int    `json:"keys"`
	// CacheMaxKeys is tokenhub's cache.max_keys, set so every key fits.
	CacheMaxKeys int       `json:"cache_max_keys"`
	CPUs         int       `json:"cpus"`
	Started      time.Time `json:"started"`
	// Create is the keys' creation through POST /v1/keys.
	Create keysCreated `json:"create"`
	// Cache is the pass that sent each key once, so that every one is cached.
	Cache *load.Result `json:"cache"`
	// Memory is tokenhub's at each stage.
	Memory []memoryStage `json:"memory"`
	// AnonPerKey is RssAnon per key from "created" to "cached": what holding
	// a key in the cache, and serving it once, costs.
	AnonPerKey int64 `json:"anon_bytes_per_cached_key"`
	// HeapPerKey is the same from the Go heap, when /metrics tells it.
	HeapPerKey *int64   `json:"heap_bytes_per_cached_key"`
	Uniform    *report  `json:"uniform"`
	Zipf       *report  `json:"zipf"`
	Notes      []string `json:"notes,omitempty"`
}

// keysCreated is how the keys were created.
type keysCreated struct {
	Keys      int           `json:"keys"`
	Conns     int           `json:"conns"`
	Took      time.Duration `json:"took_ns"`
	PerSecond float64       `json:"keys_per_second"`
}

// memoryStage is tokenhub's memory at one stage of the scenario.
type memoryStage struct {
	Stage string `json:"stage"`
	RSS   int64  `json:"rss_bytes"`
	Anon  int64  `json:"rss_anon_bytes"`
	// Heap is go_memstats_heap_alloc_bytes; nil without /metrics.
	Heap *int64 `json:"heap_alloc_bytes"`
	// Collected is whether a garbage collection ran just before, so that
	// Heap is the live heap rather than an upper bound.
	Collected bool `json:"collected"`
}

// manyKeys runs the keys scenario.
func manyKeys(ctx context.Context, o *options, logw io.Writer) (*keysReport, error) {
	if err := o.checkThroughput(); err != nil {
		return nil, err
	}
	tokenhubBin, err := needTokenhub(o, keysScenario)
	if err != nil {
		return nil, err
	}
	// Room for every key, and a quarter more so that the cache's admission
	// policy never has to choose between them.
	maxKeys := max(o.keys+o.keys/4, 1000)
	st, err := startStack(ctx, logw, stackSpec{tokenhubBin: tokenhubBin, gw: gateway{plan: benchPlan(o.limits), maxKeys: maxKeys, pprof: true}})
	if err != nil {
		return nil, err
	}
	defer st.close()
	th := st.targets[1]
	rep := &keysReport{Scenario: keysScenario, Keys: o.keys, CacheMaxKeys: maxKeys, CPUs: runtime.NumCPU(), Started: time.Now()}
	stage := func(name string) error {
		s := memoryStage{Stage: name}
		// The live heap: after a collection, or else with what garbage
		// there is.
		s.Collected = st.th.forceGC()
		if h, ok := th.metric(metricHeap); ok {
			v := int64(h)
			s.Heap = &v
		}
		m, ok := th.memory()
		if !ok {
			return errors.New("tokenhub's memory: not readable (it is read from Linux's /proc)")
		}
		s.RSS, s.Anon = m.RSS, m.Anon
		rep.Memory = append(rep.Memory, s)
		return nil
	}
	if err := stage("idle"); err != nil {
		return nil, err
	}

	fmt.Fprintf(logw, "tokenhub: creating %d keys, %d at a time...\n", o.keys, keyCreators)
	begin := time.Now()
	secrets, err := createKeys(ctx, st.th, o.keys, keyCreators)
	if err != nil {
		return nil, err
	}
	took := time.Since(begin)
	rep.Create = keysCreated{Keys: o.keys, Conns: keyCreators, Took: took, PerSecond: float64(o.keys) / took.Seconds()}
	fmt.Fprintf(logw, "tokenhub: %d keys in %v (%.0f/s)\n", o.keys, took.Round(time.Millisecond), rep.Create.PerSecond)
	if err := stage(strconv.Itoa(o.keys) + " keys created"); err != nil {
		return nil, err
	}

	sc, err := load.NewScenario("chat", benchModel, o.maxTokens)
	if err != nil {
		return nil, err
	}
	req := sc.Request
	fmt.Fprintf(logw, "tokenhub: one request with each key, %d at a time...\n", o.conns)
	req.Keys = &load.Keys{Secrets: secrets, Dist: load.Cycle}
	rep.Cache, err = load.Run(ctx, load.Config{Addr: th.addr, Request: req, Conns: o.conns, Requests: uint64(o.keys), Timeout: o.timeout})
	if err = cutShort(ctx, err); err != nil {
		return nil, fmt.Errorf("tokenhub: caching the keys: %w", err)
	}
	rep.Cache.Target = th.name
	if rep.Cache.OK != uint64(o.keys) {
		return nil, fmt.Errorf("tokenhub: caching the keys: %d of %d requests answered correctly (%s)", rep.Cache.OK, o.keys, errorKinds(rep.Cache.ErrorsByKind))
	}
	if err := stage("every key cached"); err != nil {
		return nil, err
	}
	created, cached := rep.Memory[1], rep.Memory[2]
	rep.AnonPerKey = (cached.Anon - created.Anon) / int64(o.keys)
	if created.Heap != nil && cached.Heap != nil {
		v := (*cached.Heap - *created.Heap) / int64(o.keys)
		rep.HeapPerKey = &v
	}

	for _, d := range []struct {
		dist load.Dist
		out  **report
	}{{load.Uniform, &rep.Uniform}, {load.Zipf, &rep.Zipf}} {
		req.Keys = &load.Keys{Secrets: secrets, Dist: d.dist}
		what := fmt.Sprintf("buffered chat completions of %d words, each with one of the %d keys drawn uniformly", o.maxTokens, o.keys)
		if d.dist == load.Zipf {
			what = fmt.Sprintf("buffered chat completions of %d words, each with one of the %d keys drawn by Zipf's law, exponent %v "+
				"(with 100,000 keys the first carries 13%% of the requests, the first 100 58%%)", o.maxTokens, o.keys, load.DefaultZipfS)
		}
		fmt.Fprintf(logw, "keys drawn %s:\n", d.dist)
		r, err := runThroughput(ctx, o, logw, keysScenario+"-"+d.dist.String(), what, req, st.targets)
		if err != nil {
			return nil, err
		}
		*d.out = r
		if err := stage("after the " + d.dist.String() + " traffic"); err != nil {
			return nil, err
		}
	}
	rep.Notes = append(rep.Notes, "nginx: not measured in this scenario (keys mean nothing to it; see chat)")
	return rep, nil
}

// createKeys creates n keys on the bench plan through th's Keys API, conns
// calls at a time, and returns their secrets.
func createKeys(ctx context.Context, th *tokenhub, n, conns int) ([]string, error) {
	secrets := make([]string, n)
	hc := &fasthttp.HostClient{Addr: th.addr, MaxConns: conns, NoDefaultUserAgentHeader: true}
	defer hc.CloseIdleConnections()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, conns)
	for w := range conns {
		wg.Go(func() {
			req := fasthttp.AcquireRequest()
			defer fasthttp.ReleaseRequest(req)
			resp := fasthttp.AcquireResponse()
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI("http://" + th.addr + "/v1/keys")
			req.Header.SetMethod(fasthttp.MethodPost)
			req.Header.Set("Authorization", "Bearer "+th.adminKey)
			req.Header.SetContentType("application/json")
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				req.SetBodyString(`{"name":"bench-` + strconv.Itoa(i) + `","plan":"bench"}`)
				if err := hc.DoTimeout(req, resp, 10*time.Second); err != nil {
					errs[w] = fmt.Errorf("tokenhub: POST /v1/keys: %w", err)
					return
				}
				var k createdKey
				if resp.StatusCode() != fasthttp.StatusCreated || json.Unmarshal(resp.Body(), &k) != nil || !strings.HasPrefix(k.Key, "sk-") {
					errs[w] = fmt.Errorf("tokenhub: POST /v1/keys: status %d: %s", resp.StatusCode(), resp.Body())
					return
				}
				secrets[i] = k.Key
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, context.Cause(ctx)
	}
	return secrets, nil
}

func (r *keysReport) writeMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "scenario %s: %d keys created through the Keys API, cached, then chat completions spread over all of them, uniformly and Zipf-skewed; "+
		"cache.max_keys %d (every key fits); %d CPUs, loopback\n\n", r.Scenario, r.Keys, r.CacheMaxKeys, r.CPUs)
	c := r.Create
	fmt.Fprintf(&b, "Creating: %d keys in %s, %.0f a second, %d POST /v1/keys at a time (tokenhub makes one admin write at a time).\n",
		c.Keys, c.Took.Round(time.Millisecond), c.PerSecond, c.Conns)
	if p := r.Cache; p != nil {
		fmt.Fprintf(&b, "Caching: one chat completion with each key, %d at a time: %.0f req/s, p50 %s, p99 %s (each a cache miss that reads the store).\n",
			p.Conns, p.Throughput, ms(p.Latency.P50), ms(p.Latency.P99))
	}
	b.WriteString("\ntokenhub's memory: resident (VmRSS), anonymous (RssAnon: heap and stacks, not the mapped store), " +
		"Go heap (go_memstats_heap_alloc_bytes, read after a forced collection: live objects; marked * where that failed, and garbage counts too).\n\n")
	b.WriteString("| stage | VmRSS | RssAnon | Go heap |\n|---|---:|---:|---:|\n")
	for _, s := range r.Memory {
		heap := "n/a"
		if s.Heap != nil {
			heap = mib(*s.Heap)
			if !s.Collected {
				heap += "*"
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", s.Stage, mib(s.RSS), mib(s.Anon), heap)
	}
	heap := "n/a (no /metrics)"
	if r.HeapPerKey != nil {
		heap = strconv.FormatInt(*r.HeapPerKey, 10) + " bytes of Go heap"
	}
	fmt.Fprintf(&b, "\nper cached key (every key cached less keys created, over %d keys): %d bytes of RssAnon; %s\n", r.Keys, r.AnonPerKey, heap)
	for _, sub := range []*report{r.Uniform, r.Zipf} {
		if sub == nil {
			continue
		}
		fmt.Fprintf(&b, "\n### %s\n\n", sub.Scenario)
		if err := sub.writeMarkdown(&b); err != nil {
			return err
		}
	}
	writeBlock(&b, r.Notes)
	_, err := io.WriteString(w, b.String())
	return err
}

// verdict is nil: the keys scenario makes no promise.
func (r *keysReport) verdict() error { return nil }
