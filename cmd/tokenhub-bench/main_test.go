package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/bench/load"
	"github.com/tokenhub/tokenhub/config"
	"github.com/tokenhub/tokenhub/internal/mock"
)

// TestMain lets the test binary serve the mock when the benchmark starts it
// as one, as the benchmark's own binary does.
func TestMain(m *testing.M) {
	if os.Getenv(mockEnv) == "1" {
		os.Exit(serveMock(os.Args[1:], os.Stderr))
	}
	os.Exit(m.Run())
}

func TestCommandLineErrors(t *testing.T) {
	f := func(want string, args ...string) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		begin := time.Now()
		code := run(args, &stdout, &stderr)
		if code == 0 || !strings.Contains(stderr.String(), want) || stdout.Len() != 0 {
			t.Fatalf("%q: exit %d, stderr %q, stdout %q; want a failure saying %q", args, code, stderr.String(), stdout.String(), want)
		}
		// A hang guard, not a speed claim: a refusal takes milliseconds,
		// and a run that started anyway takes its 1s warmup and 10s
		// duration (timers, which load only lengthens) before failing.
		if took := time.Since(begin); took > 10*time.Second {
			t.Fatalf("%q: failed after %v: a bad command line must fail before anything starts", args, took)
		}
	}
	f("build it with `make tokenhub`", "-tokenhub", filepath.Join(t.TempDir(), "no-such-tokenhub"))
	f(`unknown scenario "nope"`, "-tokenhub=", "-scenario", "nope")
	f(`unknown scenario "nope"`, "-tokenhub=", "-scenario", "chat,nope")
	f("-rate -1: want 0 to 1000000", "-tokenhub=", "-rate", "-1")
	f("-open-conns 0: want 1 to 4096", "-tokenhub=", "-open-conns", "0")
	f("-keys 0: want 1 to 1000000", "-tokenhub=", "-keys", "0")
	f("-limit-rps 0: want 1 to 100000", "-tokenhub=", "-limit-rps", "0")
	f("-warmup -1s: want 0 to 10m0s", "-tokenhub=", "-warmup", "-1s")
	f("-mock-latency 2m0s: want 0 to 1m", "-tokenhub=", "-mock-latency", "2m")
	f("-conns 0: want 1 to 4096", "-tokenhub=", "-conns", "0")
	f("scenario measures tokenhub", "-tokenhub=", "-scenario", "keys")
	f("scenario measures tokenhub", "-tokenhub=", "-scenario", "ratelimit")
	f("-nodes 1: want 2 to 5", "-scenario", "valkey", "-nodes", "1")
	f("-duration 0s", "-tokenhub=", "-duration", "0")
	f("-max-tokens 0", "-tokenhub=", "-max-tokens", "0")
	f("unexpected arguments", "-tokenhub=", "extra")
	f("flag provided but not defined", "-bogus")
	f("-nodes 1: want 2 to 5", "-scenario", "propagation", "-nodes", "1")
	f("-nodes 6: want 2 to 5", "-scenario", "propagation", "-nodes", "6")
	f("-trials 0: want 1 to 1000", "-scenario", "propagation", "-trials", "0")
	f("`make deps` installs", "-scenario", "propagation", "-valkey", filepath.Join(t.TempDir(), "no-such-valkey-server"))
	f("-streams -1: want 0 to 20000", "-scenario", "streaming", "-streams", "-1")
	f("-streams 20001: want 0 to 20000", "-scenario", "streaming", "-streams", "20001")
	f("-chunk-interval 2s: want 0 to 1s", "-scenario", "streaming", "-chunk-interval", "2s")
	f("-conns 0: want 1 to 4096", "-scenario", "streaming", "-conns", "0")
	f("-duration 0s", "-scenario", "streaming", "-duration", "0")
	f("-max-tokens 0", "-scenario", "streaming", "-max-tokens", "0")
	f("build it with `make tokenhub`", "-scenario", "streaming", "-tokenhub", filepath.Join(t.TempDir(), "no-such-tokenhub"))
	if _, err := exec.LookPath("valkey-server"); err == nil {
		f("scenario measures tokenhub", "-scenario", "propagation", "-tokenhub=")
		f("build it with `make tokenhub`", "-scenario", "propagation", "-tokenhub", filepath.Join(t.TempDir(), "no-such-tokenhub"))
	}
}

// TestDirectAndNginx runs the whole benchmark without tokenhub: the mock
// directly, and nginx when it is installed.
func TestDirectAndNginx(t *testing.T) {
	out := filepath.Join(t.TempDir(), "bench.json")
	var stdout, stderr bytes.Buffer
	code := run([]string{"-tokenhub=", "-duration", "300ms", "-warmup", "50ms", "-conns", "4", "-json", out}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	_, nginxErr := exec.LookPath("nginx")
	wantTargets := []string{"direct"}
	if nginxErr == nil {
		wantTargets = append(wantTargets, "nginx")
	} else if !strings.Contains(stdout.String(), "nginx: not measured") {
		t.Fatalf("no nginx, and the report does not say so:\n%s", stdout.String())
	}
	for _, name := range wantTargets {
		if !strings.Contains(stdout.String(), "| "+name+" | ") {
			t.Fatalf("no %s row in:\n%s", name, stdout.String())
		}
	}

	var rep struct {
		Scenario string `json:"scenario"`
		Results  []struct {
			load.Result
			VsDirect float64 `json:"throughput_vs_direct"`
		} `json:"results"`
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("json report: %v\n%s", err, b)
	}
	if rep.Scenario != "chat" || len(rep.Results) != len(wantTargets) {
		t.Fatalf("json report: %s", b)
	}
	for i, r := range rep.Results {
		if r.Target != wantTargets[i] || r.OK == 0 || r.Errors != 0 || r.VsDirect <= 0 {
			t.Fatalf("result %d: %+v", i, r)
		}
	}
	if rep.Results[0].VsDirect != 1 {
		t.Fatalf("direct vs direct = %v, want 1", rep.Results[0].VsDirect)
	}
}

// TestWithTokenhub runs the whole benchmark with a tokenhub binary named by
// $TOKENHUB_BIN (`make tokenhub` builds bin/tokenhub).
func TestWithTokenhub(t *testing.T) {
	bin := os.Getenv("TOKENHUB_BIN")
	if bin == "" {
		t.Skip("set TOKENHUB_BIN to a tokenhub binary to run the benchmark through it")
	}
	var stdout, stderr bytes.Buffer
	code := run([]string{"-tokenhub", bin, "-nginx=", "-duration", "300ms", "-warmup", "50ms", "-conns", "4"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "| tokenhub | ") || strings.Contains(stdout.String(), "errors:") {
		t.Fatalf("report:\n%s\nlog:\n%s", stdout.String(), stderr.String())
	}
}

// TestScenariosWithTokenhub runs the scenarios that need tokenhub, briefly,
// as a suite, with a tokenhub binary named by $TOKENHUB_BIN; the valkey one
// only when valkey-server is installed.
func TestScenariosWithTokenhub(t *testing.T) {
	bin := os.Getenv("TOKENHUB_BIN")
	if bin == "" {
		t.Skip("set TOKENHUB_BIN to a tokenhub binary to run the scenarios through it")
	}
	names := []string{"keys", "budgets", "ratelimit"}
	if _, err := exec.LookPath("valkey-server"); err == nil {
		names = append(names, "valkey")
	}
	out := filepath.Join(t.TempDir(), "suite.json")
	var stdout, stderr bytes.Buffer
	code := run([]string{"-tokenhub", bin, "-nginx=", "-scenario", strings.Join(names, ","), "-keys", "500",
		"-duration", "500ms", "-warmup", "100ms", "-conns", "4", "-open-conns", "16", "-limit-rps", "50", "-json", out}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s\nreport:\n%s", code, stderr.String(), stdout.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Suite     string `json:"suite"`
		Scenarios []struct {
			Name   string          `json:"name"`
			Error  string          `json:"error"`
			Report json.RawMessage `json:"report"`
		} `json:"scenarios"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("json report: %v\n%s", err, b)
	}
	if rep.Suite != "custom" || len(rep.Scenarios) != len(names) {
		t.Fatalf("json report: %s", b)
	}
	for i, s := range rep.Scenarios {
		if s.Name != names[i] || s.Error != "" || len(s.Report) == 0 {
			t.Fatalf("scenario %d: %s, %q", i, s.Name, s.Error)
		}
	}

	var keys keysReport
	if err := json.Unmarshal(rep.Scenarios[0].Report, &keys); err != nil {
		t.Fatal(err)
	}
	if keys.Keys != 500 || keys.CacheMaxKeys != 1000 || keys.Create.Keys != 500 || keys.Cache == nil || keys.Cache.OK != 500 ||
		len(keys.Memory) != 5 || keys.Uniform == nil || keys.Zipf == nil || len(keys.Uniform.Results) != 2 || keys.Zipf.Open == nil {
		t.Fatalf("keys report: %s", rep.Scenarios[0].Report)
	}
	for _, r := range append(keys.Uniform.Results, keys.Zipf.Results...) {
		if r.OK == 0 || r.Errors != 0 || r.CPUPer10k == nil || r.PeakRSS == 0 {
			t.Fatalf("keys: %+v", r)
		}
	}
	var budgets report
	if err := json.Unmarshal(rep.Scenarios[1].Report, &budgets); err != nil {
		t.Fatal(err)
	}
	if budgets.Scenario != "budgets" || len(budgets.Results) != 2 || budgets.Results[1].Target != "tokenhub" || budgets.Results[1].Errors != 0 ||
		budgets.Open == nil || len(budgets.Open.Results) != 2 || budgets.Open.Results[1].Added == nil || budgets.IdleRSS == 0 {
		t.Fatalf("budgets report: %s", rep.Scenarios[1].Report)
	}
	var rl rateLimitReport
	if err := json.Unmarshal(rep.Scenarios[2].Report, &rl); err != nil {
		t.Fatal(err)
	}
	if rl.RPM != 3000 || rl.Offered != 100 || rl.Open == nil || rl.Open.Refused == 0 || rl.Open.OK == 0 || len(rl.Problems) != 0 ||
		rl.Sample.Status != 429 {
		t.Fatalf("ratelimit report: %s", rep.Scenarios[2].Report)
	}
	if len(names) == 4 {
		var v report
		if err := json.Unmarshal(rep.Scenarios[3].Report, &v); err != nil {
			t.Fatal(err)
		}
		if len(v.Results) != 2 || v.Results[1].Target != "tokenhub×2" || v.Results[1].OK == 0 || v.Results[1].Errors != 0 {
			t.Fatalf("valkey report: %s", rep.Scenarios[3].Report)
		}
	}
}

// TestPropagation runs the propagation scenario with a tokenhub binary named
// by $TOKENHUB_BIN and valkey-server from PATH.
func TestPropagation(t *testing.T) {
	bin := os.Getenv("TOKENHUB_BIN")
	if bin == "" {
		t.Skip("set TOKENHUB_BIN to a tokenhub binary to run the propagation scenario")
	}
	if _, err := exec.LookPath("valkey-server"); err != nil {
		t.Skip("valkey-server not installed (`make deps` installs it)")
	}
	out := filepath.Join(t.TempDir(), "propagation.json")
	var stdout, stderr bytes.Buffer
	code := run([]string{"-scenario", "propagation", "-tokenhub", bin, "-trials", "10", "-json", out}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s\nreport:\n%s", code, stderr.String(), stdout.String())
	}
	for _, row := range []string{"| revoke | 5 | ", "| rotate | 5 | ", "| plan | 10 | "} {
		if !strings.Contains(stdout.String(), row) {
			t.Fatalf("no row starting %q in:\n%s", row, stdout.String())
		}
	}

	var rep propagationReport
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("json report: %v\n%s", err, b)
	}
	if rep.Scenario != "propagation" || rep.Nodes != 2 || rep.Trials != 10 || rep.Promise != 5*time.Second || len(rep.Results) != 3 {
		t.Fatalf("json report: %s", b)
	}
	for i, want := range []struct {
		change  string
		samples uint64
	}{{"revoke", 5}, {"rotate", 5}, {"plan", 10}} {
		c := rep.Results[i]
		if c.Change != want.change || c.Samples != want.samples || !c.WithinPromise ||
			c.Delay.Min <= 0 || c.Delay.P50 < c.Delay.Min || c.Delay.Max < c.Delay.P99 || c.Delay.Max > 5*time.Second ||
			c.AtFirstRequest > c.Samples {
			t.Fatalf("result %d: %+v", i, c)
		}
	}
}

func TestPropagationMarkdown(t *testing.T) {
	rep := &propagationReport{Scenario: "propagation", Nodes: 3, Trials: 4, CPUs: 2, Promise: 5 * time.Second}
	f := func(change string, atFirst uint64, samples ...time.Duration) {
		t.Helper()
		d := &delays{atFirst: atFirst}
		for _, s := range samples {
			d.Record(s)
		}
		rep.add(change, d)
	}
	f("revoke", 3, 100*time.Microsecond, 100*time.Microsecond, 300*time.Microsecond, 2*time.Second)
	f("rotate", 4, 100*time.Microsecond, 100*time.Microsecond, 100*time.Microsecond, 100*time.Microsecond)
	late := 5*time.Second + time.Millisecond
	f("plan", 0, late, late, late, late)
	var b bytes.Buffer
	if err := rep.writeMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	want := "scenario propagation, 3 tokenhub nodes sharing one Valkey, 4 trials, 2 CPUs, loopback: " +
		"time from the admin call's answer on node 1 to the first refusal on each other node\n\n" +
		"| change | samples | p50 | p90 | p99 | max | promise | result |\n" +
		"|---|---:|---:|---:|---:|---:|---:|---|\n" +
		"| revoke | 4 | 0.100ms | 2000ms | 2000ms | 2000ms | 5s | pass |\n" +
		"| rotate | 4 | 0.100ms | 0.100ms | 0.100ms | 0.100ms | 5s | pass |\n" +
		"| plan | 4 | 5001ms | 5001ms | 5001ms | 5001ms | 5s | FAIL |\n" +
		"\nrevoke: 3 of 4 samples held at the first request (one round trip, min 0.100ms)\n" +
		"rotate: 4 of 4 samples held at the first request (one round trip, min 0.100ms)\n" +
		"plan: 0 of 4 samples held at the first request (one round trip, min 5001ms)\n" +
		"\nrevoke: DELETE /v1/keys/{id}, until GET /v1/models with the key answers 401\n" +
		"rotate: POST /v1/keys/{id}/rotate, until GET /v1/models with the old secret answers 401\n" +
		"plan: PUT /v1/plans/{name} without model other, until a chat completion for it answers 403\n"
	if b.String() != want {
		t.Fatalf("markdown:\n%s\nwant:\n%s", b.String(), want)
	}
	err := rep.verdict()
	if err == nil || err.Error() != "changes took longer than the 5s promise to hold on every node: plan took up to 5001ms" {
		t.Fatalf("verdict: %v", err)
	}
	rep.Results = rep.Results[:2]
	if err := rep.verdict(); err != nil {
		t.Fatalf("verdict of changes within the promise: %v", err)
	}
}

func TestNodeConfigIsValid(t *testing.T) {
	adminKey := strings.Repeat("ab", 32)
	data := nodeConfig("127.0.0.1:8125", filepath.Join(t.TempDir(), "store"), "127.0.0.1:9125", "127.0.0.1:6390", adminKey)
	c, err := config.Parse(data, "node.yaml", func(string) string { return "" })
	if err != nil {
		t.Fatalf("config rejected: %v\n%s", err, data)
	}
	if c.Listen != "127.0.0.1:8125" || c.AdminKey != adminKey || c.Store.Valkey == nil ||
		!slices.Equal(c.Store.Valkey.Addrs, []string{"127.0.0.1:6390"}) ||
		len(c.Upstreams) != 1 || c.Upstreams[0].BaseURL != "http://127.0.0.1:9125/v1" ||
		len(c.Models) != 2 || c.Models[0].Name != benchModel || c.Models[1].Name != otherModel ||
		len(c.Plans) != 2 || c.Plans[0].Name != "bench" || c.Plans[1].Name != narrowingPlan ||
		!slices.Equal(c.Plans[1].Models, []string{benchModel}) {
		t.Fatalf("config read back as %+v", c)
	}
}

func TestGatewayConfigIsValid(t *testing.T) {
	route := mockRoute{upstream: "bench", model: benchModel, mockAddr: "127.0.0.1:9123", maxConns: 1024}
	f := func(name string, g gateway, check func(c *config.Config) bool) {
		t.Helper()
		g.addr, g.store, g.routes = "127.0.0.1:8123", filepath.Join(t.TempDir(), "store"), []mockRoute{route}
		data := g.config()
		c, err := config.Parse(data, "bench.yaml", func(string) string { return "" })
		if err != nil {
			t.Fatalf("%s: config rejected: %v\n%s", name, err, data)
		}
		if c.Listen != "127.0.0.1:8123" || len(c.Upstreams) != 1 ||
			c.Upstreams[0].BaseURL != "http://127.0.0.1:9123/v1" || c.Upstreams[0].MaxConns != 1024 ||
			len(c.Models) != 1 || c.Models[0].Name != benchModel || len(c.Plans) != 1 || c.Plans[0].Name != "bench" || !check(c) {
			t.Fatalf("%s: config read back as %+v", name, c)
		}
	}
	f("no limits", gateway{}, func(c *config.Config) bool {
		p := c.Plans[0]
		return c.AdminKey == "" && c.Store.Valkey == nil && p.RPM == 0 && p.TPM == 0 && p.MonthlyUSD == 0 && p.MaxRequestUSD == 0
	})
	f("every limit", gateway{plan: planAllLimits}, func(c *config.Config) bool {
		p := c.Plans[0]
		return p.RPM == 1e9 && p.TPM == 1e9 && p.MonthlyUSD > 0 && p.MaxRequestUSD > 0
	})
	f("budgets", gateway{plan: planBudgets}, func(c *config.Config) bool {
		p := c.Plans[0]
		return p.RPM == 0 && p.TPM == 0 && p.MonthlyUSD > 0 && p.MaxRequestUSD > 0
	})
	f("rate", gateway{plan: planRate(12000, 12000000)}, func(c *config.Config) bool {
		p := c.Plans[0]
		return p.RPM == 12000 && p.TPM == 12000000 && p.MonthlyUSD == 0
	})
	f("many keys", gateway{maxKeys: 125000}, func(c *config.Config) bool { return c.Cache.MaxKeys == 125000 })
	adminKey := strings.Repeat("cd", 32)
	f("a node", gateway{valkeyAddr: "127.0.0.1:6390", adminKey: adminKey}, func(c *config.Config) bool {
		return c.AdminKey == adminKey && c.Store.Valkey != nil && slices.Equal(c.Store.Valkey.Addrs, []string{"127.0.0.1:6390"})
	})
}

func TestNginxConfig(t *testing.T) {
	dir := t.TempDir()
	conf := string(nginxConfig(dir, "127.0.0.1:8124", "127.0.0.1:9124"))
	for _, want := range []string{
		"daemon off;", "pid " + dir + "/nginx.pid;", "access_log off;",
		"server 127.0.0.1:9124;", "keepalive 256;", "listen 127.0.0.1:8124;",
		"proxy_http_version 1.1;", `proxy_set_header Connection "";`,
	} {
		if !strings.Contains(conf, want) {
			t.Fatalf("config lacks %q:\n%s", want, conf)
		}
	}
	bin, err := exec.LookPath("nginx")
	if err != nil {
		t.Skip("nginx not installed: config syntax not checked")
	}
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-t", "-p", dir, "-c", "nginx.conf").CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
}

func TestMarkdown(t *testing.T) {
	rep := &report{Scenario: "chat", What: "buffered chat completions of 16 words", Conns: 8, Warmup: time.Second, Duration: 10 * time.Second,
		CPUs: 2, IdleRSS: 12 << 20}
	lat := load.Latency{P50: 250 * time.Microsecond, P90: 900 * time.Microsecond, P99: 12500 * time.Microsecond, P999: 2 * time.Second, Max: 2500 * time.Millisecond}
	cpu, allocations := 0.52, 3.25
	rep.add(&load.Result{Target: "direct", Throughput: 40000, Latency: lat}, cost{CPUPer10k: &cpu, PeakRSS: 10 << 20})
	rep.add(&load.Result{Target: "tokenhub", Throughput: 30000.4, Latency: lat, Errors: 3, ErrorsByKind: map[string]uint64{"502": 2, "timeout": 1}},
		cost{CPUPer10k: &cpu, PeakRSS: 30 << 20, AllocsPerRequest: &allocations})
	rep.Open = &openReport{Rate: 15000, RateFrom: "half tokenhub's closed-loop maximum", Conns: 128}
	open := func(target string, l load.Latency, late, unsent uint64) *load.OpenResult {
		return &load.OpenResult{Result: load.Result{Target: target, Throughput: 15000, Latency: l}, Rate: 15000, Scheduled: 150000,
			Late: late, Unsent: unsent, SendLag: load.Latency{P50: 50 * time.Microsecond, P99: 900 * time.Microsecond}}
	}
	slower := load.Latency{P50: 330 * time.Microsecond, P90: 800 * time.Microsecond, P99: 13 * time.Millisecond, P999: 2100 * time.Millisecond, Max: 3 * time.Second}
	rep.Open.add(open("direct", lat, 0, 0), cost{CPUPer10k: &cpu})
	rep.Open.add(open("tokenhub", slower, 20, 5), cost{})
	rep.Notes = []string{"nginx: not measured"}
	var b bytes.Buffer
	if err := rep.writeMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	want := "scenario chat: buffered chat completions of 16 words; 2 CPUs, loopback\n\n" +
		"Closed loop: 8 connections, each sending its next request when the last is answered, 10s per target after a 1s warmup.\n\n" +
		"| target | req/s | p50 | p90 | p99 | p99.9 | max | errors | vs direct | CPU s/10k req | peak RSS | allocs/req |\n" +
		"|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n" +
		"| direct | 40000 | 0.250ms | 0.900ms | 12.5ms | 2000ms | 2500ms | 0 | 1.00x | 0.52 | 10.0 MiB | n/a |\n" +
		"| tokenhub | 30000 | 0.250ms | 0.900ms | 12.5ms | 2000ms | 2500ms | 3 | 0.75x | 0.52 | 30.0 MiB | 3.2 |\n" +
		"\nOpen loop: 15000 req/s (half tokenhub's closed-loop maximum) for every target, at most 128 in flight, 10s after a 1s warmup; " +
		"latency from each request's due time, so a stall counts against every request it held up; added is the target's latency less the mock's.\n\n" +
		"| target | req/s | late | unsent | p50 | p90 | p99 | p99.9 | max | added p50 | added p99 | added p99.9 | errors | CPU s/10k req | allocs/req |\n" +
		"|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n" +
		"| direct | 15000 | 0 | 0 | 0.250ms | 0.900ms | 12.5ms | 2000ms | 2500ms | - | - | - | 0 | 0.52 | n/a |\n" +
		"| tokenhub | 15000 | 20 | 5 | 0.330ms | 0.800ms | 13.0ms | 2100ms | 3000ms | +0.080ms | +0.500ms | +100.0ms | 0 | n/a | n/a |\n" +
		"\ntokenhub: 20 of 150000 requests (0.01%) found all 128 connections busy when due and were sent late, their wait counted in their latency; 5 never sent" +
		"\nopen loop: the generator sent the mock's requests p50 0.050ms, p99 0.900ms after they were due (its timers' precision, part of every latency above)\n" +
		"\ntokenhub: 12.0 MiB resident once started, before any load\n" +
		"\ntokenhub errors: 502: 2, timeout: 1\n" +
		"\nnginx: not measured\n"
	if b.String() != want {
		t.Fatalf("markdown:\n%s\nwant:\n%s", b.String(), want)
	}
	if a := rep.Open.Results[1].Added; a == nil || a.P50 != 80*time.Microsecond || a.P90 != -100*time.Microsecond {
		t.Fatalf("added latency %+v", a)
	}
}

// TestStreamingWithoutTokenhub runs the streaming scenario against the mock
// directly, and nginx when it is installed: no memory is measured.
func TestStreamingWithoutTokenhub(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run([]string{"-scenario", "streaming", "-tokenhub=", "-duration", "300ms", "-warmup", "50ms", "-conns", "2"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	out := stdout.String()
	if !strings.Contains(out, "| direct | ") || strings.Contains(out, "errors:") || strings.Contains(out, "Memory per open stream") ||
		!strings.Contains(out, "memory: not measured (it is tokenhub's, and -tokenhub is empty)") {
		t.Fatalf("report:\n%s\nlog:\n%s", out, stderr.String())
	}
	if _, err := exec.LookPath("nginx"); err == nil && strings.Count(out, "| nginx | ") != 2 {
		t.Fatalf("no nginx rows in:\n%s", out)
	}
}

// TestStreaming runs the streaming scenario end to end with a tokenhub
// binary named by $TOKENHUB_BIN, holding 200 streams open; it takes about
// 15s, the held streams' length.
func TestStreaming(t *testing.T) {
	bin := os.Getenv("TOKENHUB_BIN")
	if bin == "" {
		t.Skip("set TOKENHUB_BIN to a tokenhub binary to run the streaming scenario through it")
	}
	out := filepath.Join(t.TempDir(), "streaming.json")
	var stdout, stderr bytes.Buffer
	code := run([]string{"-scenario", "streaming", "-tokenhub", bin, "-streams", "200",
		"-duration", "300ms", "-warmup", "50ms", "-conns", "4", "-json", out}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s\nreport:\n%s", code, stderr.String(), stdout.String())
	}
	if strings.Count(stdout.String(), "| tokenhub | ") != 3 || strings.Contains(stdout.String(), "errors:") {
		t.Fatalf("report:\n%s\nlog:\n%s", stdout.String(), stderr.String())
	}

	var rep streamingReport
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("json report: %v\n%s", err, b)
	}
	if rep.Scenario != "streaming" || rep.Conns != 4 || rep.Chunks != 16 || rep.ChunkInterval != time.Millisecond ||
		len(rep.Results) < 2 || rep.Results[0].Target != "direct" || rep.Results[1].Target != "tokenhub" {
		t.Fatalf("json report: %s", b)
	}
	for i, r := range rep.Results {
		// The role, 16 words, the finish, the usage and [DONE], each one
		// event, through every target.
		if r.OK == 0 || r.Errors != 0 || r.Events != 20 || r.FirstEvent.P50 <= 0 || r.FirstEvent.P50 > r.Stream.P50 ||
			r.Stream.Min < 17*time.Millisecond || r.PerEvent != time.Duration(float64(r.Stream.Mean)/20) {
			t.Fatalf("result %d: %+v", i, r)
		}
		if want := r.FirstEvent.P50 - rep.Results[0].FirstEvent.P50; r.AddedFirstEventP50 != want {
			t.Fatalf("result %d: added first event p50 %v, want %v", i, r.AddedFirstEventP50, want)
		}
	}
	m := rep.Memory
	if m == nil || m.Target != "tokenhub" || m.Asked != 200 || m.Streams != 200 || m.Opened != 200 || m.Open != 200 ||
		m.OK != 200 || m.Errors != 0 || m.HoldChunks != 10 || m.HoldInterval != time.Second ||
		m.IdleRSS <= 0 || m.RSS <= m.IdleRSS || m.PerStream != (m.RSS-m.IdleRSS)/200 || m.OpenFilesLimit < 400 {
		t.Fatalf("memory: %+v", m)
	}
}

func TestStreamingMarkdown(t *testing.T) {
	rep := &streamingReport{Scenario: "streaming", Conns: 16, Warmup: time.Second, Duration: 3 * time.Second, CPUs: 2,
		Chunks: 16, ChunkInterval: time.Millisecond, Notes: []string{"nginx: not measured"}}
	f := func(target string, p50, p99, mean time.Duration, errs map[string]uint64) {
		t.Helper()
		res := &load.StreamResult{Target: target, OK: 2000, Throughput: 666.7, Events: 20, ErrorsByKind: errs,
			FirstEvent: load.Latency{P50: p50, P90: p50 * 2, P99: p99, P999: p99 * 2, Max: p99 * 4},
			Stream:     load.Latency{P50: mean, P99: mean + time.Millisecond, Mean: mean},
			PerEvent:   mean / 20}
		for _, n := range errs {
			res.Errors += n
		}
		cpu := 1.5
		rep.add(res, cost{CPUPer10k: &cpu, PeakRSS: 20 << 20})
	}
	f("direct", 50*time.Microsecond, 200*time.Microsecond, 20*time.Millisecond, nil)
	f("tokenhub", 300*time.Microsecond, 100*time.Microsecond, 24*time.Millisecond, map[string]uint64{"502": 2, "bad_body": 1})
	rep.Memory = &memoryResult{
		HoldResult: &load.HoldResult{Target: "tokenhub", Streams: 9920, Opened: 9920, Open: 9900, OK: 9920,
			OpenTime: 1900 * time.Millisecond, FirstEvent: load.Latency{P50: 8 * time.Millisecond, P99: 44 * time.Millisecond}},
		Asked: 10000, OpenFilesLimit: 20000, HoldChunks: 10, HoldInterval: time.Second,
		IdleRSS: 16 << 20, RSSBefore: 28 << 20, RSS: 16<<20 + 9900*60<<10, PerStream: 60 << 10,
	}
	var b bytes.Buffer
	if err := rep.writeMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	want := "scenario streaming, 16 streams at a time, 3s per target after a 1s warmup, 2 CPUs, loopback: " +
		"chat completions streamed by the mock as 16 words 1ms apart, 20 events with the role, the finish, the usage and [DONE]\n\n" +
		"Time to first byte: from sending the request to the read that completed the first event.\n\n" +
		"| target | streams | p50 | p90 | p99 | p99.9 | max | errors | added p50 | added p99 |\n" +
		"|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n" +
		"| direct | 2000 | 0.050ms | 0.100ms | 0.200ms | 0.400ms | 0.800ms | 0 | - | - |\n" +
		"| tokenhub | 2000 | 0.300ms | 0.600ms | 0.100ms | 0.200ms | 0.400ms | 3 | +0.250ms | -0.100ms |\n" +
		"\nPer event: the mean stream's time, from sending the request to the read that completed the answer, divided by its events.\n\n" +
		"| target | streams/s | events | stream p50 | stream p99 | stream mean | per event | added per event | CPU s/10k streams | peak RSS | allocs/stream |\n" +
		"|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n" +
		"| direct | 667 | 20.0 | 20.0ms | 21.0ms | 20.0ms | 1.000ms | - | 1.50 | 20.0 MiB | n/a |\n" +
		"| tokenhub | 667 | 20.0 | 24.0ms | 25.0ms | 24.0ms | 1.200ms | +0.200ms | 1.50 | 20.0 MiB | n/a |\n" +
		"\nMemory per open stream: tokenhub's resident set (VmRSS) with 9920 streams opened at once, 64 at a time, " +
		"each sent by the mock as 10 words 1s apart, read when every one had received its first event; " +
		"idle is tokenhub's once started, before any request.\n\n" +
		"| target | streams open | idle RSS | RSS | per stream | opened in | errors |\n" +
		"|---|---:|---:|---:|---:|---:|---:|\n" +
		"| tokenhub | 9900 | 16.0 MiB | 596.1 MiB | 60.0 KiB | 1900ms | 0 |\n" +
		"\nmemory: 28.0 MiB just before the streams opened; opening them, first event p50 8.000ms, p99 44.0ms; open-file limit 20000\n" +
		"\ntokenhub errors: 502: 2, bad_body: 1\n" +
		"\nnginx: not measured\n"
	if b.String() != want {
		t.Fatalf("markdown:\n%s\nwant:\n%s", b.String(), want)
	}
	if err := rep.verdict(); err != nil {
		t.Fatalf("verdict: %v", err)
	}
}

func TestStreamingConfigIsValid(t *testing.T) {
	data := gateway{addr: "127.0.0.1:8126", store: filepath.Join(t.TempDir(), "store"), routes: []mockRoute{
		{upstream: "bench", model: benchModel, mockAddr: "127.0.0.1:9126", maxConns: 1024},
		{upstream: "hold", model: holdModel, mockAddr: "127.0.0.1:9127", maxConns: 10064},
	}}.config()
	c, err := config.Parse(data, "streaming.yaml", func(string) string { return "" })
	if err != nil {
		t.Fatalf("config rejected: %v\n%s", err, data)
	}
	if c.Listen != "127.0.0.1:8126" || len(c.Upstreams) != 2 ||
		c.Upstreams[0].BaseURL != "http://127.0.0.1:9126/v1" || c.Upstreams[0].MaxConns != 1024 ||
		c.Upstreams[1].BaseURL != "http://127.0.0.1:9127/v1" || c.Upstreams[1].MaxConns != 10064 ||
		len(c.Models) != 2 || c.Models[0].Name != benchModel || c.Models[1].Name != holdModel ||
		c.Models[1].Routes[0].Upstream != "hold" || len(c.Plans) != 1 || c.Plans[0].Name != "bench" {
		t.Fatalf("config read back as %+v", c)
	}
}

// TestFailoverConfigIsValid: the failover scenario's config gives one
// model two routes, the degraded upstream first, both with the scenario's
// timeout, and the 429 sent to the mock as its X-Mock-Status header.
func TestFailoverConfigIsValid(t *testing.T) {
	data := gateway{addr: "127.0.0.1:8128", store: filepath.Join(t.TempDir(), "store"), routes: []mockRoute{
		{upstream: "bad", model: benchModel, mockAddr: "127.0.0.1:9128", maxConns: 1024, timeout: failoverTimeout, mockStatus: 429},
		{upstream: "good", model: benchModel, mockAddr: "127.0.0.1:9129", maxConns: 1024, timeout: failoverTimeout},
	}}.config()
	c, err := config.Parse(data, "failover.yaml", func(string) string { return "" })
	if err != nil {
		t.Fatalf("config rejected: %v\n%s", err, data)
	}
	if len(c.Upstreams) != 2 || c.Upstreams[0].Timeout != failoverTimeout || c.Upstreams[1].Timeout != failoverTimeout ||
		c.Upstreams[0].Headers[mock.HeaderStatus] != "429" || len(c.Upstreams[1].Headers) != 0 ||
		len(c.Models) != 1 || len(c.Models[0].Routes) != 2 ||
		c.Models[0].Routes[0].Upstream != "bad" || c.Models[0].Routes[1].Upstream != "good" {
		t.Fatalf("config read back as %+v\n%s", c, data)
	}
}

func TestRSSAndOpenFiles(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("memory is read from /proc")
	}
	n, err := rss(os.Getpid())
	if err != nil || n < 1<<20 || n > 1<<34 {
		t.Fatalf("rss of this test: %d, %v", n, err)
	}
	if _, err := rss(-1); err == nil {
		t.Fatal("rss of no process: no error")
	}
	limit, err := raiseOpenFiles(256)
	if err != nil || limit < 256 {
		t.Fatalf("open-file limit: %d, %v", limit, err)
	}
}

// TestFailoverReport: a row per degradation, with its success rate,
// latencies, errors by kind and the degraded route's state.
func TestFailoverReport(t *testing.T) {
	rep := &failoverReport{Scenario: failoverScenario, Rate: 200, Duration: 15 * time.Second, CPUs: 2, Runs: []failoverRun{{
		Fault: "hung", Success: 0.9953, BadRoute: "ejected, 2 ejections, latency 4287 ms",
		Open: &load.OpenResult{Result: load.Result{Requests: 3000, OK: 2986, Errors: 14, ErrorsByKind: map[string]uint64{"504": 14},
			Latency: load.Latency{P50: 21900 * time.Microsecond, P99: 45400 * time.Microsecond}}},
	}}}
	var b strings.Builder
	if err := rep.writeMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	want := "| hung | 3000 | 99.53% | 21.9ms | 45.4ms | 504: 14 | ejected, 2 ejections, latency 4287 ms |\n"
	if !strings.Contains(b.String(), want) {
		t.Fatalf("markdown:\n%s\nwant the row:\n%s", b.String(), want)
	}
	if err := rep.verdict(); err != nil {
		t.Fatalf("verdict: %v", err)
	}
}
