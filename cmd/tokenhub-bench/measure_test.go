package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/bench/load"
)

func TestMetricValue(t *testing.T) {
	const text = `# HELP go_memstats_mallocs_total Total number of heap objects allocated.
# TYPE go_memstats_mallocs_total counter
go_memstats_mallocs_total_extra 1
go_memstats_mallocs_total 1.234567e+06
go_memstats_heap_alloc_bytes 52428800
tokenhub_requests_total{code="200",route="chat"} 42 1700000000000
tokenhub_requests_total{code="429",route="chat"} 7
weird{label="a}b"} 3
`
	f := func(name string, want float64, wantOK bool) {
		t.Helper()
		got, ok := metricValue([]byte(text), name)
		if got != want || ok != wantOK {
			t.Fatalf("%s: %v, %v; want %v, %v", name, got, ok, want, wantOK)
		}
	}
	f("go_memstats_mallocs_total", 1234567, true)            // not the longer name before it
	f("go_memstats_heap_alloc_bytes", 52428800, true)        // an integer
	f("tokenhub_requests_total", 42, true)                   // the first sample, its timestamp ignored
	f("weird", 3, true)                                      // a brace inside a label value
	f("go_memstats_mallocs", 0, false)                       // a prefix of a name is not a name
	f("process_cpu_seconds_total", 0, false)                 // absent
	f("# HELP go_memstats_mallocs_total Total", 0, false)    // not a sample
	if _, ok := metricValue([]byte("x NaNish\n"), "x"); ok { // not a number
		t.Fatal("a value that is not a number was read")
	}
	if _, ok := metricValue(nil, "x"); ok {
		t.Fatal("a metric was read from nothing")
	}
}

func TestProcReadings(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("CPU time and memory are read from /proc")
	}
	self := os.Getpid()
	// The kernel's own account (getrusage) is the reference: spin until it
	// has counted 200ms of CPU, however long a busy machine takes to give
	// them, and /proc must have counted the same, to its 10ms ticks.
	ref0 := rusageCPU(t)
	before, err := cpuTime(self)
	if err != nil {
		t.Fatal(err)
	}
	for rusageCPU(t)-ref0 < 200*time.Millisecond {
	}
	after, err := cpuTime(self)
	ref := rusageCPU(t) - ref0
	const tick = 20 * time.Millisecond // a tick of rounding at each end
	if err != nil || after-before < 200*time.Millisecond-tick || after-before > ref+tick {
		t.Fatalf("cpu time %v then %v (%v): want the %v getrusage counted", before, after, err, ref)
	}
	m, err := readMemory(self)
	if err != nil || m.RSS < 1<<20 || m.Anon <= 0 || m.Anon > m.RSS || m.Peak < m.RSS {
		t.Fatalf("memory of this test: %+v, %v", m, err)
	}
	if _, err := cpuTime(-1); err == nil {
		t.Fatal("cpu time of no process: no error")
	}

	sleeper := exec.Command("sleep", "30")
	if err := sleeper.Start(); err != nil {
		t.Skip("no sleep command:", err)
	}
	defer func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() }()
	if kids := children(self); !slices.Contains(kids, sleeper.Process.Pid) {
		t.Fatalf("children %v, want %d among them", kids, sleeper.Process.Pid)
	}
	// A target reads its processes together.
	tg := &target{procs: func() []int { return []int{self, sleeper.Process.Pid} }}
	if sum, ok := tg.memory(); !ok || sum.RSS <= m.RSS/2 {
		t.Fatalf("memory of two processes: %+v, %v", sum, ok)
	}
	if _, ok := tg.cpu(); !ok {
		t.Fatal("cpu time of two processes not read")
	}
	if _, ok := (&target{}).cpu(); ok {
		t.Fatal("cpu time read for a target without processes")
	}
}

// rusageCPU is this process's CPU time, user and system, from getrusage.
func rusageCPU(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func TestMeterCost(t *testing.T) {
	m := &meter{cpu0: time.Second, cpuOK: true, cpu1: 3 * time.Second, mallocs0: 1000, mallocsOK: true, mallocs1: 21000, ended: true,
		t: &target{}}
	c := m.cost(20000)
	if c.CPUPer10k == nil || *c.CPUPer10k != 1 || c.AllocsPerRequest == nil || *c.AllocsPerRequest != 1 || c.PeakRSS != 0 {
		t.Fatalf("cost %+v: want 1 CPU second per 10k requests and 1 allocation a request", c)
	}
	m.mallocsOK = false
	if c := m.cost(20000); c.AllocsPerRequest != nil || c.CPUPer10k == nil {
		t.Fatalf("cost %+v: allocations not counted must be nil", c)
	}
	if c := m.cost(0); c.CPUPer10k != nil {
		t.Fatalf("cost of no requests %+v, want nothing", c)
	}
}

func TestPlanScenarios(t *testing.T) {
	f := func(arg, wantSuite string, want ...string) {
		t.Helper()
		p, err := planScenarios(arg)
		if err != nil {
			t.Fatalf("%q: %v", arg, err)
		}
		var got []string
		for _, r := range p.runs {
			got = append(got, r.name)
		}
		if p.suite != wantSuite || !slices.Equal(got, want) {
			t.Fatalf("%q: suite %q, %v; want %q, %v", arg, p.suite, got, wantSuite, want)
		}
	}
	f("chat", "", "chat")
	f("chat, keys", "", "chat", "keys")
	f("quick", "quick", "chat", "streaming", "ratelimit", "propagation")
	f("full", "full", scenarioNames()...)
	for _, bad := range []string{"nope", "chat,,keys", "chat,full", ""} {
		if _, err := planScenarios(bad); err == nil || !strings.Contains(err.Error(), "unknown scenario") {
			t.Fatalf("%q: %v, want an unknown scenario", bad, err)
		}
	}
	if len(scenarioNames()) != 11 {
		t.Fatalf("scenarios %v: a new one needs a place in the full suite and this test", scenarioNames())
	}

	// The quick suite skips the held streams unless asked for them.
	o := options{streams: 10000, given: map[string]bool{}}
	suites[0].tweak(streamingScenario, &o)
	if o.streams != 0 {
		t.Fatalf("quick suite: %d held streams, want 0", o.streams)
	}
	o = options{streams: 500, given: map[string]bool{"streams": true}}
	suites[0].tweak(streamingScenario, &o)
	if o.streams != 500 {
		t.Fatalf("quick suite with -streams 500: %d held streams", o.streams)
	}
}

func TestRefusalCheck(t *testing.T) {
	good := func() refusalSample {
		return refusalSample{Status: 429, Body: `{"error":{"message":"Rate limit reached for requests.","type":"requests","param":null,"code":"rate_limit_exceeded"}}`,
			Headers: map[string]string{"content-type": "application/json", "retry-after": "1", "retry-after-ms": "300",
				"x-ratelimit-limit-requests": "12000", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "5ms", "x-request-id": "req_1"}}
	}
	f := func(name string, change func(s *refusalSample), want string) {
		t.Helper()
		s := good()
		change(&s)
		err := s.check()
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Fatalf("%s: %v, want %q", name, err, want)
		}
	}
	f("OpenAI's 429", func(*refusalSample) {}, "")
	f("a 200", func(s *refusalSample) { s.Status = 200 }, "status 200, want 429")
	f("not JSON", func(s *refusalSample) { s.Body = "slow down" }, "want {\"error\"")
	f("a fifth field", func(s *refusalSample) {
		s.Body = `{"error":{"message":"m","type":"requests","param":null,"code":"rate_limit_exceeded","x":1}}`
	}, "want exactly")
	f("tokens, not requests", func(s *refusalSample) {
		s.Body = strings.Replace(s.Body, `"requests"`, `"tokens"`, 1)
	}, "want exactly")
	f("no param", func(s *refusalSample) {
		s.Body = `{"error":{"message":"m","type":"requests","code":"rate_limit_exceeded","p":null}}`
	}, "want exactly")
	f("a text body", func(s *refusalSample) { s.Headers["content-type"] = "text/plain" }, "content-type")
	f("no retry-after", func(s *refusalSample) { delete(s.Headers, "retry-after") }, "retry-after \"\"")
	f("retry-after 0", func(s *refusalSample) { s.Headers["retry-after"] = "0" }, "retry-after \"0\"")
	f("requests remaining", func(s *refusalSample) { s.Headers["x-ratelimit-remaining-requests"] = "3" }, "remaining-requests \"3\"")
	f("no request id", func(s *refusalSample) { delete(s.Headers, "x-request-id") }, "no x-request-id")
}

func TestRateLimitCheck(t *testing.T) {
	f := func(admitted float64, late, errs uint64, sampleErr error, want string) {
		t.Helper()
		r := &rateLimitReport{LimitRPS: 200, Duration: 10 * time.Second, Admitted: admitted}
		r.Open = newOpenResultForTest(late, errs)
		got := strings.Join(r.check(sampleErr), "; ")
		if want == "" && got != "" || want != "" && !strings.Contains(got, want) {
			t.Fatalf("admitted %v, %d late, %d errors: problems %q, want %q", admitted, late, errs, got, want)
		}
	}
	f(200, 0, 0, nil, "")
	f(210.1, 0, 0, nil, "")                                  // within 5% and a request over the window
	f(189.9, 0, 0, nil, "")                                  // the same below
	f(211, 0, 0, nil, "admitted 211.0 req/s, want 200±10.1") // too many let through
	f(150, 0, 0, nil, "admitted 150.0 req/s")                // too many refused
	f(200, 3, 0, nil, "3 requests late")                     // the offered rate not kept
	f(200, 0, 2, nil, "2 errors")                            // anything but 200s and 429s
	f(200, 0, 0, errors.New("no x-request-id"), "the sample refusal: no x-request-id")
}

func TestSuiteReport(t *testing.T) {
	chat := &report{Scenario: "chat", What: "buffered chat completions", Conns: 1, CPUs: 2}
	late := &propagationReport{Scenario: "propagation", Promise: 5 * time.Second,
		Results: []changeResult{{Change: "revoke", WithinPromise: false, Delay: loadLatency(6 * time.Second)}}}
	rep := &suiteReport{Suite: "quick", Command: "tokenhub-bench -scenario quick", Machine: machine{CPU: "Test CPU", CPUs: 2, Kernel: "6.1",
		Go: "go1.26", Tokenhub: "tokenhub dev", Nginx: "nginx/1.22.1", Valkey: "valkey-server not found"},
		Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Took: 100 * time.Second,
		Scenarios: []scenarioResult{
			{Name: "chat", Report: chat},
			{Name: "ratelimit", Error: "tokenhub exited", Took: 2 * time.Second},
			{Name: "valkey", Skipped: "valkey-server not found"},
			{Name: "propagation", Report: late},
		}}
	var b bytes.Buffer
	if err := rep.writeMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"# tokenhub-bench: quick\n\n- command: `tokenhub-bench -scenario quick`\n- machine: Test CPU, 2 CPUs, Linux 6.1\n" +
			"- software: tokenhub dev, nginx/1.22.1, valkey-server not found, tokenhub-bench built with go1.26\n- started 2026-01-02T03:04:05Z, took 1m40s\n",
		"\n## chat\n\nscenario chat: buffered chat completions; 2 CPUs, loopback\n",
		"\n## ratelimit\n\nFAILED after 2s: tokenhub exited\n",
		"\n## valkey\n\nskipped: valkey-server not found\n",
		"\n## propagation\n\nscenario propagation,",
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("no %q in:\n%s", want, out)
		}
	}
	err := rep.verdict()
	if err == nil || !strings.Contains(err.Error(), "ratelimit: tokenhub exited") || !strings.Contains(err.Error(), "propagation: changes took longer") {
		t.Fatalf("verdict: %v", err)
	}
}

func newOpenResultForTest(late, errs uint64) *load.OpenResult {
	r := &load.OpenResult{Late: late}
	r.Errors = errs
	if errs > 0 {
		r.ErrorsByKind = map[string]uint64{"502": errs}
	}
	return r
}

func loadLatency(d time.Duration) load.Latency {
	return load.Latency{Min: d, Mean: d, P50: d, P90: d, P99: d, P999: d, Max: d}
}
