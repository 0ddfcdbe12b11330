package proxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/tokenhub/tokenhub/internal/eventually"
	"github.com/tokenhub/tokenhub/internal/mock"
	"github.com/tokenhub/tokenhub/internal/valkeytest"
	"github.com/tokenhub/tokenhub/keys"
)

// scrape reads /metrics into series → value.
func (g *gateway) scrape() map[string]float64 {
	g.t.Helper()
	st, hdr, body := g.do("GET", "/metrics", "", nil)
	if st != http.StatusOK || !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain; version=0.0.4") {
		g.t.Fatalf("/metrics: %d %s", st, hdr.Get("Content-Type"))
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			g.t.Fatalf("/metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// TestMetrics: requests by endpoint, model, plan and status; tokens and
// spend; the gateway's and upstream's latency and a stream's time to first
// byte as histograms; key cache lookups; upstream failovers; open streams;
// and the process's own (RSS, CPU, allocations).
func TestMetrics(t *testing.T) {
	_, up := startMock(t, mock.Options{Chunks: 4})
	g := startGateway(t, fmt.Sprintf(`
upstreams: [{name: up, base_url: %q}, {name: dead, base_url: %q}]
models:
  - {name: mock, routes: [{upstream: up}], price: {input_per_mtok: 1, output_per_mtok: 2}}
  - {name: flaky, routes: [{upstream: dead, weight: 1000000}, {upstream: up, weight: 1}]}
plans: [{name: all, models: ["*"]}]
`, up, deadURL(t)), "")
	k := g.newKey("all")
	for range 2 {
		if st, _, body := g.do("POST", "/v1/chat/completions", k.Key, []byte(`{"model":"mock","messages":[{"role":"user","content":"hi"}]}`)); st != 200 {
			t.Fatalf("%d %s", st, body)
		}
	}
	rawStream(t, g.url, k.Key, `{"model":"mock","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	g.do("POST", "/v1/chat/completions", "sk-nope", []byte(`{"model":"mock"}`))
	g.do("POST", "/v1/chat/completions", k.Key, []byte(`{"model":"no-such-model","messages":[{"role":"user","content":"hi"}]}`))
	if st, _, body := g.do("POST", "/v1/chat/completions", k.Key, []byte(`{"model":"flaky","messages":[{"role":"user","content":"hi"}]}`)); st != 200 {
		t.Fatalf("flaky: %d %s", st, body)
	}
	g.do("GET", "/v1/models", k.Key, nil)

	var m map[string]float64
	// A stream is counted when it ends, after the client has read it all.
	eventually.True(t, "the stream counted", func() bool {
		m = g.scrape()
		return m[`tokenhub_stream_ttfb_seconds_count`] == 1
	})
	want := map[string]float64{
		`tokenhub_requests_total{endpoint="chat",model="mock",plan="all",status="200"}`:  3,
		`tokenhub_requests_total{endpoint="chat",model="",plan="",status="401"}`:         1,
		`tokenhub_requests_total{endpoint="chat",model="",plan="all",status="404"}`:      1,
		`tokenhub_requests_total{endpoint="chat",model="flaky",plan="all",status="200"}`: 1,
		`tokenhub_requests_total{endpoint="models",model="",plan="",status="200"}`:       1,
		`tokenhub_tokens_total{model="mock",plan="all",type="completion"}`:               12,
		`tokenhub_upstream_events_total{upstream="dead",event="unreachable"}`:            1,
		`tokenhub_upstream_events_total{upstream="dead",event="failover"}`:               1,
		`tokenhub_gateway_duration_seconds_count{endpoint="chat"}`:                       6,
		`tokenhub_upstream_duration_seconds_count{endpoint="chat"}`:                      4,
		`tokenhub_stream_ttfb_seconds_count`:                                             1,
		`tokenhub_open_streams`:                                                          0,
		`tokenhub_key_cache_lookups_total{result="hit"}`:                                 5,
		`tokenhub_key_cache_lookups_total{result="negative_hit"}`:                        0,
		`tokenhub_key_cache_lookups_total{result="miss"}`:                                1,
		`tokenhub_usage_estimated_total{model="mock",plan="all"}`:                        0,
		`tokenhub_gateway_duration_seconds_bucket{endpoint="chat",le="+Inf"}`:            6,
		`tokenhub_spend_usd_total{model="flaky",plan="all"}`:                             0,
		`tokenhub_requests_total{endpoint="keys",model="",plan="",status="201"}`:         1,
		`tokenhub_valkey_errors_total`:                                                   0,
		`tokenhub_access_log_dropped_total`:                                              0,
		`tokenhub_upstream_duration_seconds_bucket{endpoint="embeddings",le="+Inf"}`:     0,
		`tokenhub_gateway_duration_seconds_bucket{endpoint="completions",le="+Inf"}`:     0,
		`tokenhub_upstream_duration_seconds_bucket{endpoint="chat",le="+Inf"}`:           4,
		`tokenhub_tokens_total{model="flaky",plan="all",type="completion"}`:              4,
		`tokenhub_requests_total{endpoint="chat",model="mock",plan="all",status="401"}`:  -1, // absent
		`tokenhub_upstream_events_total{upstream="up",event="unreachable"}`:              -1,
		`tokenhub_key_cache_lookups_total{result="unavailable"}`:                         0,
		`tokenhub_key_cache_lookups_total{result="stale_hit"}`:                           0,
		`tokenhub_stream_ttfb_seconds_bucket{le="+Inf"}`:                                 1,
		`tokenhub_valkey_duration_seconds_count`:                                         0,
	}
	for series, v := range want {
		got, ok := m[series]
		switch {
		case v < 0 && ok:
			t.Errorf("%s present (%v), want absent", series, got)
		case v >= 0 && (!ok || got != v):
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, v)
		}
	}
	// Three requests of mock: 4 completion tokens each at $2/Mtok, prompts at $1/Mtok.
	prompt := m[`tokenhub_tokens_total{model="mock",plan="all",type="prompt"}`]
	if spend := m[`tokenhub_spend_usd_total{model="mock",plan="all"}`]; prompt == 0 || abs(spend-(prompt*1e-6+12*2e-6)) > 1e-12 {
		t.Errorf("spend %v for %v prompt and 12 completion tokens", spend, prompt)
	}
	for _, s := range []string{"go_memstats_mallocs_total", "process_resident_memory_bytes", "process_cpu_seconds_total"} {
		if _, ok := m[s]; !ok {
			t.Errorf("%s missing", s)
		}
	}
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

// logBuffer is a bytes.Buffer safe for the log writer and the test.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *logBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *logBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type accessLine struct {
	Level   string `json:"level"`
	Msg     string `json:"msg"`
	Request struct {
		ID          string  `json:"id"`
		Endpoint    string  `json:"endpoint"`
		Status      int     `json:"status"`
		KeyID       string  `json:"key_id"`
		Plan        string  `json:"plan"`
		Model       string  `json:"model"`
		Stream      bool    `json:"stream"`
		Upstream    string  `json:"upstream"`
		UpstreamMs  float64 `json:"upstream_ms"`
		GatewayMs   float64 `json:"gateway_ms"`
		TTFBMs      float64 `json:"ttfb_ms"`
		Prompt      int64   `json:"prompt_tokens"`
		Cached      int64   `json:"cached_tokens"`
		CacheWrite  int64   `json:"cache_write_tokens"`
		Completion  int64   `json:"completion_tokens"`
		CostUSD     string  `json:"cost_usd"`
		StreamError string  `json:"stream_error"`
		DurationMs  float64 `json:"duration_ms"`
	} `json:"request"`
}

// accessLines waits until the log holds n access lines and returns them.
func accessLines(t *testing.T, log *logBuffer, n int) []accessLine {
	t.Helper()
	var lines []accessLine
	eventually.True(t, fmt.Sprintf("%d access lines", n), func() bool {
		lines = lines[:0]
		for _, l := range strings.Split(strings.TrimSpace(log.String()), "\n") {
			var a accessLine
			if json.Unmarshal([]byte(l), &a) == nil && a.Msg == "request" {
				lines = append(lines, a)
			}
		}
		return len(lines) >= n
	})
	if len(lines) != n {
		t.Fatalf("%d access lines, want %d:\n%s", len(lines), n, log.String())
	}
	return lines
}

// TestAccessLog: a JSON line per request, written off the request path,
// with the request id the client got, the key id and never its secret, the
// model, upstream, tokens, cost and durations; a stream's line comes when it
// ends, with its time to first byte.
func TestAccessLog(t *testing.T) {
	_, up := startMock(t, mock.Options{Chunks: 3})
	var log logBuffer
	g := startNodeLogging(t, "store: {path: "+t.TempDir()+"}\n"+limitsConfig(up), &log)
	k := g.newKey("open")
	st, hdr, body := g.do("POST", "/v1/chat/completions", k.Key, []byte(`{"model":"mock","messages":[{"role":"user","content":"hi"}]}`))
	if st != 200 {
		t.Fatalf("%d %s", st, body)
	}
	rawStream(t, g.url, k.Key, `{"model":"mock","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	g.do("POST", "/v1/chat/completions", k.Key, []byte(`{"model":"nope","messages":[{"role":"user","content":"hi"}]}`))
	lines := accessLines(t, &log, 3)
	if strings.Contains(log.String(), k.Key) || strings.Contains(log.String(), k.Key[3:20]) {
		t.Fatal("the log holds the key's secret")
	}
	a := lines[0].Request
	if lines[0].Level != "INFO" || a.ID != hdr.Get("X-Request-Id") || a.Endpoint != "chat" || a.Status != 200 || a.KeyID != k.ID ||
		a.Plan != "open" || a.Model != "mock" || a.Upstream != "up" || a.Stream || a.Completion != 3 || a.Prompt == 0 ||
		a.CostUSD == "" || a.UpstreamMs <= 0 || a.GatewayMs <= 0 || a.DurationMs < a.UpstreamMs {
		t.Errorf("buffered request's line: %+v", lines[0])
	}
	s := lines[1].Request
	if !s.Stream || s.Status != 200 || s.Completion != 3 || s.TTFBMs <= 0 || s.StreamError != "" || s.DurationMs < s.TTFBMs {
		t.Errorf("stream's line: %+v", s)
	}
	if e := lines[2].Request; e.Status != 404 || e.Model != "" || e.KeyID != k.ID || e.Upstream != "" {
		t.Errorf("404's line: %+v", e)
	}
}

// TestAccessLogSampling: with sample 0 only errors are logged; a level the
// logger does not write turns the access log off.
func TestAccessLogSampling(t *testing.T) {
	_, up := startMock(t, mock.Options{})
	for _, tc := range []struct {
		access string
		want   int // of one success and one error
	}{
		{"{sample: 0}", 1},
		{"{sample: 0.5}", 1 + 1}, // the second success of two
		{"{level: debug}", 0},    // the logger writes info and up
		{"{enabled: false}", 0},
	} {
		t.Run(tc.access, func(t *testing.T) {
			var log logBuffer
			g := startNodeLogging(t, "log: {access: "+tc.access+"}\nstore: {path: \""+t.TempDir()+"\"}\n"+yamlModels(up), &log)
			k := g.newKey("all")
			n := 1
			if strings.Contains(tc.access, "0.5") {
				n = 2
			}
			for range n {
				g.do("POST", "/v1/chat/completions", k.Key, []byte(`{"model":"mock","messages":[{"role":"user","content":"hi"}]}`))
			}
			g.do("POST", "/v1/chat/completions", "", nil)
			// Lines are written by a goroutine of their own; stopping the
			// node writes what is queued and joins it, so the count is final.
			g.stop()
			if got := len(regexp.MustCompile(`"msg":"request"`).FindAllString(log.String(), -1)); got != tc.want {
				t.Fatalf("%d lines, want %d:\n%s", got, tc.want, log.String())
			}
		})
	}
}

// TestMetricsValkey: Valkey calls are timed, and failures counted, when
// the store is Valkey.
func TestMetricsValkey(t *testing.T) {
	v := valkeytest.Start(t)
	_, up := startMock(t, mock.Options{})
	g := startNode(t, fmt.Sprintf("store: {path: %q, valkey: {addrs: [%q], timeout: 200ms}}\n", t.TempDir(), v.Addr())+yamlModels(up))
	g.newKey("all")
	m := g.scrape()
	if m["tokenhub_valkey_duration_seconds_count"] == 0 || m["tokenhub_valkey_errors_total"] != 0 {
		t.Fatalf("with Valkey up: %v calls, %v errors", m["tokenhub_valkey_duration_seconds_count"], m["tokenhub_valkey_errors_total"])
	}
	v.Stop()
	// An unknown (well-formed) key must be read from the store, which is gone.
	unknown, err := keys.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	if st, _, body := g.do("POST", "/v1/chat/completions", unknown, []byte(`{"model":"mock"}`)); st != http.StatusServiceUnavailable {
		t.Fatalf("unknown key with Valkey down: %d %s", st, body)
	}
	if m = g.scrape(); m["tokenhub_valkey_errors_total"] == 0 {
		t.Fatal("Valkey down, yet no error counted")
	}
}

// TestResponsesCountedOnce: a Responses create counts itself, with its model
// and plan, like the other inference endpoints, and is not counted a second
// time among the other routes.
func TestResponsesCountedOnce(t *testing.T) {
	_, up := startMock(t, mock.Options{Chunks: 4})
	g := startGateway(t, responsesConfig(up), "")
	k := g.newKey("all")
	if st, _, body := g.do("POST", "/v1/responses", k.Key, []byte(`{"model":"mock","input":"hi","store":false}`)); st != 200 {
		t.Fatalf("%d %s", st, body)
	}
	total := 0.0
	for series, v := range g.scrape() {
		if strings.HasPrefix(series, "tokenhub_requests_total{") && strings.Contains(series, `status="200"`) {
			total += v
		}
	}
	if m := g.scrape(); total != 1 || m[`tokenhub_requests_total{endpoint="responses",model="mock",plan="all",status="200"}`] != 1 {
		t.Fatalf("one Responses request counted %v times in tokenhub_requests_total", total)
	}
}
