package proxy

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/openai/openai-go/v3/option"
	"github.com/valyala/fasthttp"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/tokenhub/tokenhub/internal/eventually"
	"github.com/tokenhub/tokenhub/internal/mock"
	"github.com/tokenhub/tokenhub/internal/otlptest"
)

// seenHeaders records the trace headers of each request an upstream got.
type seenHeaders struct {
	mu           sync.Mutex
	traceparents []string
	tracestates  [][]string
}

func (s *seenHeaders) wrap(h fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		var states []string
		for _, v := range ctx.Request.Header.PeekAll("Tracestate") {
			states = append(states, string(v))
		}
		s.mu.Lock()
		s.traceparents = append(s.traceparents, string(ctx.Request.Header.Peek("Traceparent")))
		s.tracestates = append(s.tracestates, states)
		s.mu.Unlock()
		h(ctx)
	}
}

func (s *seenHeaders) last(t *testing.T) (traceparent string, tracestates []string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.traceparents) == 0 {
		t.Fatal("the upstream got no request")
	}
	return s.traceparents[len(s.traceparents)-1], s.tracestates[len(s.tracestates)-1]
}

// tracedGateway runs a gateway whose upstream up records its trace headers
// and whose spans go to a collector, at the sample ratio given.
func tracedGateway(t *testing.T, up fasthttp.RequestHandler, sample string) (*gateway, *otlptest.Collector, *seenHeaders) {
	t.Helper()
	col := otlptest.Start(t)
	seen := &seenHeaders{}
	url := startUpstream(t, seen.wrap(up))
	g := startGateway(t, fmt.Sprintf("telemetry: {traces: {endpoint: %q, headers: {authorization: \"Bearer otlp-token\"}, sample: %s}}\n", col.URL, sample)+
		yamlModels(url), "")
	return g, col, seen
}

// onlySpan waits for the collector to hold n spans and returns the last.
func onlySpan(t *testing.T, col *otlptest.Collector, n int) otlptest.Span {
	t.Helper()
	eventually.True(t, fmt.Sprintf("%d spans at the collector", n), func() bool { return len(col.Spans()) >= n })
	spans := col.Spans()
	if len(spans) != n {
		t.Fatalf("%d spans at the collector, want %d: %+v", len(spans), n, spans)
	}
	if p := col.Problems(); len(p) > 0 {
		t.Fatalf("the collector refused exports: %q", p)
	}
	return spans[n-1]
}

// wantAttrs fails unless span has each attribute of want, with its value;
// a nil value means the attribute must be absent.
func wantAttrs(t *testing.T, span otlptest.Span, want map[string]any) {
	t.Helper()
	for k, v := range want {
		got, ok := span.Attrs[k]
		if v == nil {
			if ok {
				t.Errorf("%s = %#v, want it absent", k, got)
			}
			continue
		}
		if got != v {
			t.Errorf("%s = %#v, want %#v", k, got, v)
		}
	}
}

var traceparentRE = regexp.MustCompile(`^00-([0-9a-f]{32})-([0-9a-f]{16})-0([01])$`)

// TestTraceChat: a chat request whose client sent a traceparent is one
// span in the client's trace, a child of the client's span, with the GenAI
// attributes, the key's id and the request's numbers; the upstream is told
// the gateway span as its parent and gets the client's tracestate. Neither
// the key's secret nor the prompt or completion is in the span.
func TestTraceChat(t *testing.T) {
	g, col, seen := tracedGateway(t, staticChat, "1")
	k := g.newKey("all")
	const clientTrace, clientSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	var resp *http.Response
	const prompt = "the-prompt-text-that-must-not-leave"
	_, err := g.client(k.Key).Chat.Completions.New(context.Background(), chatParams("alias", prompt),
		option.WithHeader("traceparent", "00-"+clientTrace+"-"+clientSpan+"-01"),
		option.WithHeader("tracestate", "vendor=abc,other=1"), option.WithResponseInto(&resp))
	if err != nil {
		t.Fatal(err)
	}
	span := onlySpan(t, col, 1)
	if span.TraceID != clientTrace || span.ParentSpanID != clientSpan || span.SpanID == clientSpan {
		t.Fatalf("span %s/%s parent %s: not a child of the client's span", span.TraceID, span.SpanID, span.ParentSpanID)
	}
	tp, ts := seen.last(t)
	if want := "00-" + clientTrace + "-" + span.SpanID + "-01"; tp != want {
		t.Fatalf("upstream's traceparent %q, want %q: the gateway span as its parent", tp, want)
	}
	if len(ts) != 1 || ts[0] != "vendor=abc,other=1" {
		t.Fatalf("upstream's tracestate %q", ts)
	}
	if span.Name != "chat alias" || span.Kind != tracepb.Span_SPAN_KIND_SERVER || span.StatusCode != tracepb.Status_STATUS_CODE_UNSET ||
		span.EndUnixNano <= span.StartUnixNano {
		t.Fatalf("span %+v", span)
	}
	wantAttrs(t, span, map[string]any{
		"gen_ai.operation.name": "chat", "gen_ai.request.model": "alias", "gen_ai.response.model": "upstream-name",
		"gen_ai.provider.name": "openai", "gen_ai.usage.input_tokens": int64(9), "gen_ai.usage.output_tokens": int64(2),
		"tokenhub.key_id": k.ID, "tokenhub.plan": "all", "tokenhub.upstream": "up", "tokenhub.endpoint": "chat",
		"http.response.status_code": int64(200), "tokenhub.stream": false, "tokenhub.request_id": resp.Header.Get("X-Request-Id"),
		"error.type": nil, "tokenhub.stream.ttfb_ms": nil, "gen_ai.usage.cache_read.input_tokens": nil,
	})
	for _, k := range []string{"tokenhub.gateway.duration_ms", "tokenhub.upstream.duration_ms"} {
		if d, ok := span.Attrs[k].(float64); !ok || d <= 0 {
			t.Errorf("%s = %#v, want a duration", k, span.Attrs[k])
		}
	}
	if _, ok := span.Attrs["tokenhub.cost_usd"].(float64); !ok {
		t.Errorf("no cost: %v", span.Attrs)
	}
	for _, secret := range []string{k.Key, k.Key[len(k.Key)-8:], prompt, "Hello!", testAdminKey} {
		if strings.Contains(span.Encoded, secret) {
			t.Fatalf("the span holds %q", secret)
		}
	}
	if id, _ := span.Resource["service.instance.id"].(string); span.Resource["service.name"] != "tokenhub" || id == "" {
		t.Errorf("resource %v: no service, or no node id", span.Resource)
	}
	if h := col.Headers()[0]; h.Get("Authorization") != "Bearer otlp-token" || h.Get("Content-Type") != "application/x-protobuf" {
		t.Fatalf("export headers %v", h)
	}
}

// TestTraceStream: a stream's span ends when the stream does, and carries
// its time to first byte and the usage the upstream reported at its end.
func TestTraceStream(t *testing.T) {
	m := mock.New(mock.Options{Chunks: 8})
	g, col, seen := tracedGateway(t, m.Handler, "1")
	k := g.newKey("all")
	stream := g.client(k.Key).Chat.Completions.NewStreaming(context.Background(), chatParams("mock", "count"))
	for stream.Next() {
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	span := onlySpan(t, col, 1)
	tp, _ := seen.last(t)
	if m := traceparentRE.FindStringSubmatch(tp); m == nil || m[1] != span.TraceID || m[2] != span.SpanID || m[3] != "1" {
		t.Fatalf("upstream's traceparent %q does not name span %s/%s", tp, span.TraceID, span.SpanID)
	}
	if span.ParentSpanID != "" {
		t.Fatalf("a request without traceparent has a root span; parent %q", span.ParentSpanID)
	}
	wantAttrs(t, span, map[string]any{"tokenhub.stream": true, "http.response.status_code": int64(200), "gen_ai.operation.name": "chat"})
	ttfb, ok := span.Attrs["tokenhub.stream.ttfb_ms"].(float64)
	if !ok || ttfb <= 0 || float64(span.EndUnixNano-span.StartUnixNano)/1e6 < ttfb {
		t.Fatalf("ttfb %v over a span of %dns", span.Attrs["tokenhub.stream.ttfb_ms"], span.EndUnixNano-span.StartUnixNano)
	}
	if out, ok := span.Attrs["gen_ai.usage.output_tokens"].(int64); !ok || out <= 0 {
		t.Fatalf("output tokens %v", span.Attrs["gen_ai.usage.output_tokens"])
	}
}

// TestTraceFailedRequests: refused and failed requests are traced with
// their status; a failure of the gateway or its upstream (5xx) is an error
// span, a refusal (4xx) is not; a key that does not authenticate leaves no
// key id.
func TestTraceFailedRequests(t *testing.T) {
	g, col, _ := tracedGateway(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(500)
		ctx.SetBodyString(`{"error":{"message":"boom","type":"server_error","param":null,"code":null}}`)
	}, "1")
	k := g.newKey("mockonly")
	f := func(n int, key, model string, wantStatus int, wantCode tracepb.Status_StatusCode, wantKeyID any) {
		t.Helper()
		st, _, body := g.do("POST", "/v1/chat/completions", key, []byte(`{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`))
		if st != wantStatus {
			t.Fatalf("status %d, want %d: %s", st, wantStatus, body)
		}
		span := onlySpan(t, col, n)
		if span.StatusCode != wantCode {
			t.Fatalf("status %d: span status %v, want %v", st, span.StatusCode, wantCode)
		}
		wantAttrs(t, span, map[string]any{"http.response.status_code": int64(wantStatus), "error.type": strconv.Itoa(wantStatus), "tokenhub.key_id": wantKeyID})
	}
	f(1, k.Key, "mock", 502, tracepb.Status_STATUS_CODE_ERROR, k.ID)         // the upstream failed
	f(2, k.Key, "other", 403, tracepb.Status_STATUS_CODE_UNSET, k.ID)        // the plan refuses the model
	f(3, k.Key, "nope", 404, tracepb.Status_STATUS_CODE_UNSET, k.ID)         // no such model
	f(4, "sk-not-a-key", "mock", 401, tracepb.Status_STATUS_CODE_UNSET, nil) // no key
}

// TestTraceSampling: at sample 0, requests without a traceparent export
// nothing, and their upstream is told they are not sampled; a client's
// sampled traceparent still decides for its own request, and an unsampled
// one for its.
func TestTraceSampling(t *testing.T) {
	g, col, seen := tracedGateway(t, staticChat, "0")
	k := g.newKey("all")
	for range 20 {
		if st, _, b := g.do("POST", "/v1/chat/completions", k.Key, chatBody); st != 200 {
			t.Fatalf("%d %s", st, b)
		}
		tp, _ := seen.last(t)
		if m := traceparentRE.FindStringSubmatch(tp); m == nil || m[3] != "0" {
			t.Fatalf("upstream's traceparent %q, want one not sampled", tp)
		}
	}
	const unsampled = "00-11111111111111111111111111111111-2222222222222222-00"
	if st, _, b := g.do("POST", "/v1/chat/completions", k.Key, chatBody, "traceparent", unsampled); st != 200 {
		t.Fatalf("%d %s", st, b)
	}
	const sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if st, _, b := g.do("POST", "/v1/chat/completions", k.Key, chatBody, "traceparent", sampled); st != 200 {
		t.Fatalf("%d %s", st, b)
	}
	// Spans are exported in the order requests finish: once the last one
	// is at the collector, any of the others would be too.
	span := onlySpan(t, col, 1)
	if span.TraceID != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("the span exported is %s's", span.TraceID)
	}
}

// TestTraceparentFromClientIsChecked: what a client sends as trace context
// is taken only when it is valid: a malformed traceparent, or two of them,
// start a new trace, and then the client's tracestate is not passed on.
func TestTraceparentFromClientIsChecked(t *testing.T) {
	g, col, seen := tracedGateway(t, staticChat, "1")
	k := g.newKey("all")
	const trace, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	f := func(n int, headers ...string) {
		t.Helper()
		req, err := http.NewRequest("POST", g.url+"/v1/chat/completions", strings.NewReader(string(chatBody)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+k.Key)
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Add(headers[i], headers[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%v: status %d", headers, resp.StatusCode)
		}
		span := onlySpan(t, col, n)
		if span.TraceID == trace || span.ParentSpanID != "" {
			t.Fatalf("%v: the span continues the client's trace: %s parent %s", headers, span.TraceID, span.ParentSpanID)
		}
		tp, ts := seen.last(t)
		if m := traceparentRE.FindStringSubmatch(tp); m == nil || m[1] != span.TraceID || len(ts) != 0 {
			t.Fatalf("%v: upstream got traceparent %q tracestate %q", headers, tp, ts)
		}
	}
	f(1, "traceparent", "00-"+strings.ToUpper(trace)+"-"+parent+"-01", "tracestate", "vendor=1")
	f(2, "traceparent", "00-"+trace+"-"+parent+"-01", "traceparent", "00-"+trace+"-"+parent+"-01", "tracestate", "vendor=1")
	f(3, "traceparent", "00-"+trace+"-0000000000000000-01")
	f(4, "traceparent", "ff-"+trace+"-"+parent+"-01")
	f(5, "traceparent", strings.Repeat("0", 2000))
}

// TestTracingOffSendsNoTraceparent: with tracing off the upstream request
// is as before: no trace header of the gateway's, none of the client's.
func TestTracingOffSendsNoTraceparent(t *testing.T) {
	seen := &seenHeaders{}
	g := startGateway(t, yamlModels(startUpstream(t, seen.wrap(staticChat))), "")
	k := g.newKey("all")
	st, _, b := g.do("POST", "/v1/chat/completions", k.Key, chatBody,
		"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate", "vendor=1")
	if st != 200 {
		t.Fatalf("%d %s", st, b)
	}
	if tp, ts := seen.last(t); tp != "" || len(ts) != 0 {
		t.Fatalf("upstream got traceparent %q tracestate %q with tracing off", tp, ts)
	}
}

// TestTraceDeadCollector: a collector that refuses connections costs the
// requests nothing (every one answers), and its spans are counted as
// dropped on /metrics.
func TestTraceDeadCollector(t *testing.T) {
	up := startUpstream(t, staticChat)
	dead := strings.TrimSuffix(deadURL(t), "/v1")
	g := startGateway(t, fmt.Sprintf("telemetry: {traces: {endpoint: %q}}\n", dead)+yamlModels(up), "")
	k := g.newKey("all")
	const n = 50
	for range n {
		if st, _, b := g.do("POST", "/v1/chat/completions", k.Key, chatBody); st != 200 {
			t.Fatalf("%d %s", st, b)
		}
	}
	dropped := regexp.MustCompile(`(?m)^tokenhub_trace_spans_dropped_total\{reason="export_failed"\} (\d+)$`)
	eventually.True(t, fmt.Sprintf("%d spans counted as dropped", n), func() bool {
		_, _, metrics := g.do("GET", "/metrics", "", nil)
		m := dropped.FindSubmatch(metrics)
		if m == nil {
			return false
		}
		got, _ := strconv.Atoi(string(m[1]))
		return got == n
	})
}

// TestTraceparentOverridesConfiguredHeader: an upstream's configured
// headers do not replace the trace context the gateway sends.
func TestTraceparentOverridesConfiguredHeader(t *testing.T) {
	col := otlptest.Start(t)
	seen := &seenHeaders{}
	up := startUpstream(t, seen.wrap(staticChat))
	g := startGateway(t, fmt.Sprintf(`telemetry: {traces: {endpoint: %q}}
upstreams: [{name: up, base_url: %q, headers: {traceparent: "00-11111111111111111111111111111111-2222222222222222-01"}}]
models: [{name: mock, routes: [{upstream: up}]}]
plans: [{name: all, models: ["*"]}]
`, col.URL, up), "")
	k := g.newKey("all")
	if st, _, b := g.do("POST", "/v1/chat/completions", k.Key, chatBody); st != 200 {
		t.Fatalf("%d %s", st, b)
	}
	span := onlySpan(t, col, 1)
	if tp, _ := seen.last(t); tp != "00-"+span.TraceID+"-"+span.SpanID+"-01" {
		t.Fatalf("upstream's traceparent %q, span %s/%s", tp, span.TraceID, span.SpanID)
	}
}

// TestTraceMessages: a /v1/messages request to an anthropic upstream is a
// chat span with Anthropic as its provider and both cache counts, and the
// upstream gets the gateway span's traceparent.
func TestTraceMessages(t *testing.T) {
	m := mock.New(mock.Options{Anthropic: mock.AnthropicOptions{APIKey: providerKey, CacheReadInputTokens: 300, CacheCreationInputTokens: 70}})
	col := otlptest.Start(t)
	seen := &seenHeaders{}
	up := startUpstream(t, seen.wrap(m.Handler))
	g := startGateway(t, fmt.Sprintf("telemetry: {traces: {endpoint: %q, sample: 1}}\n", col.URL)+yamlClaude(up, deadURL(t)), "")
	k := g.newKey("all")
	body := `{"model":"claude","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`
	req, err := http.NewRequest("POST", g.url+"/v1/messages", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("x-api-key", k.Key)
	req.Header.Set("anthropic-version", "2023-06-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	span := onlySpan(t, col, 1)
	wantAttrs(t, span, map[string]any{
		"gen_ai.operation.name": "chat", "gen_ai.request.model": "claude", "gen_ai.response.model": "claude-sonnet-4-6",
		"gen_ai.provider.name": "anthropic", "tokenhub.endpoint": "messages",
		"gen_ai.usage.cache_read.input_tokens": int64(300), "gen_ai.usage.cache_creation.input_tokens": int64(70),
	})
	if tp, _ := seen.last(t); !strings.Contains(tp, span.SpanID) {
		t.Fatalf("upstream's traceparent %q does not name the gateway span %s", tp, span.SpanID)
	}
}
