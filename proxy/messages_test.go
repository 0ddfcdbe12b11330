package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	anthropicoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/internal/eventually"
	"github.com/tokenhub/tokenhub/internal/mock"
	"github.com/tokenhub/tokenhub/internal/usd"
)

// providerKey is the gateway's own key for the mock Anthropic upstream: it
// must reach the upstream and never a client or a log.
const providerKey = "sk-ant-provider-secret-0123456789"

// yamlClaude is a config with an anthropic upstream at anthURL (the mock,
// keyed with providerKey) and an openai one at openaiURL.
func yamlClaude(anthURL, openaiURL string) string {
	return fmt.Sprintf(`
upstreams:
  - {name: anth, kind: anthropic, base_url: %q, api_key: %q}
  - {name: oai, base_url: %q}
models:
  - name: claude
    max_output_tokens: 8000
    context_window_tokens: 200000
    routes: [{upstream: anth, model: claude-sonnet-4-6}]
    price: `+claudePriceYAML+`
  - {name: mock, routes: [{upstream: anth}]}
  - {name: gpt, routes: [{upstream: oai, model: mock}]}
  - {name: mixed, routes: [{upstream: oai, model: mock}, {upstream: anth, model: mock}]}
plans:
  - {name: all, models: ["*"]}
  - {name: gptonly, models: ["gpt"]}
  - {name: slow, models: ["*"], rpm: 1}
  - {name: poor, models: ["*"], max_request_usd: 0.000001}
  - {name: month, models: ["*"], monthly_usd: 0.05}
  - {name: capped, models: ["*"], max_request_usd: 0.10}
`, anthURL, providerKey, openaiURL)
}

// startClaude runs the mock Anthropic upstream with o and a gateway in
// front of it, and returns the gateway and the mock.
func startClaude(t *testing.T, o mock.AnthropicOptions) (*gateway, *mock.Server) {
	t.Helper()
	o.APIKey = providerKey
	m, up := startMock(t, mock.Options{Anthropic: o})
	_, oai := startMock(t, mock.Options{})
	return startGateway(t, yamlClaude(up, oai), ""), m
}

// anthropicClient is the official Anthropic SDK pointed at the gateway,
// never retrying; opts add to it (the key).
func (g *gateway) anthropicClient(opts ...anthropicoption.RequestOption) *anthropic.Client {
	base := []anthropicoption.RequestOption{
		anthropicoption.WithBaseURL(g.url + "/"),
		anthropicoption.WithMaxRetries(0),
		anthropicoption.WithRequestTimeout(20 * time.Second),
	}
	c := anthropic.NewClient(append(base, opts...)...)
	return &c
}

func claudeRequest(model string, maxTokens int64) anthropic.MessageNewParams {
	return anthropic.MessageNewParams{
		Model:     anthropic.Model(model),
		MaxTokens: maxTokens,
		System:    []anthropic.TextBlockParam{{Text: "Be brief."}},
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Hello there"))},
	}
}

// usageDetail is a key's month to date with its spend.
type usageDetail struct {
	Requests   int64       `json:"requests"`
	Prompt     int64       `json:"prompt_tokens"`
	Cached     int64       `json:"cached_tokens"`
	Completion int64       `json:"completion_tokens"`
	SpendUSD   json.Number `json:"spend_usd"`
}

func (g *gateway) usageDetail(id string) usageDetail {
	var u usageDetail
	g.admin("GET", "/v1/keys/"+id+"/usage", nil, http.StatusOK, &u)
	return u
}

// billOf is the exact price of an Anthropic usage at claudePrice.
func billOf(u anthropic.Usage) usd.Pico {
	return claudePrice.Bill(usd.Tokens{Prompt: u.InputTokens + u.CacheReadInputTokens + u.CacheCreationInputTokens,
		Cached: u.CacheReadInputTokens, CacheWrite: u.CacheCreationInputTokens, Completion: u.OutputTokens})
}

func TestMessagesSDK(t *testing.T) {
	g, _ := startClaude(t, mock.AnthropicOptions{CacheReadInputTokens: 1000, CacheCreationInputTokens: 200})
	k := g.newKey("all")
	ctx := context.Background()
	// Both ways the SDKs send a key: x-api-key (APIKey) and a bearer (AuthToken).
	for _, opt := range []anthropicoption.RequestOption{anthropicoption.WithAPIKey(k.Key), anthropicoption.WithAuthToken(k.Key)} {
		c := g.anthropicClient(opt)
		msg, err := c.Messages.New(ctx, claudeRequest("claude", 7))
		if err != nil {
			t.Fatal(err)
		}
		// The route's name for the model is what the upstream answered for.
		if msg.Model != "claude-sonnet-4-6" || msg.Usage.OutputTokens != 7 || msg.Usage.CacheReadInputTokens != 1000 ||
			msg.Usage.CacheCreationInputTokens != 200 || len(msg.Content) == 0 {
			t.Fatalf("answer %s", msg.RawJSON())
		}
		s := c.Messages.NewStreaming(ctx, claudeRequest("claude", 5))
		var acc anthropic.Message
		for s.Next() {
			if err := acc.Accumulate(s.Current()); err != nil {
				t.Fatal(err)
			}
		}
		if s.Err() != nil || acc.Usage.OutputTokens != 5 || acc.Content[0].Text == "" || acc.StopReason != anthropic.StopReasonMaxTokens {
			t.Fatalf("stream: %v %s", s.Err(), acc.RawJSON())
		}
		n, err := c.Messages.CountTokens(ctx, anthropic.MessageCountTokensParams{
			Model:    "claude",
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Hello there"))},
		})
		if err != nil || n.InputTokens <= 1200 {
			t.Fatalf("count_tokens: %v %+v", err, n)
		}
	}
	// Two buffered answers and two streams, billed exactly: each token at
	// its own price; count_tokens not at all.
	u := g.usageDetail(k.ID)
	one := anthropic.Usage{InputTokens: u.Prompt/4 - 1200, CacheReadInputTokens: 1000, CacheCreationInputTokens: 200}
	want := usd.Pico(0)
	for _, out := range []int64{7, 5, 7, 5} {
		one.OutputTokens = out
		want += billOf(one)
	}
	if u.Requests != 4 || u.Cached != 4000 || u.Completion != 24 || u.SpendUSD.String() != want.String() {
		t.Fatalf("usage %+v, want 4 requests, 4000 cached, 24 completion, $%s", u, want)
	}
}

// TestMessagesTypedErrors: the gateway's own refusals on /v1/messages are
// Anthropic-shaped, so the SDK types them, with the request's id.
func TestMessagesTypedErrors(t *testing.T) {
	g, m := startClaude(t, mock.AnthropicOptions{})
	ctx := context.Background()
	f := func(name string, c *anthropic.Client, p anthropic.MessageNewParams, status int, typ, message string) {
		t.Helper()
		_, err := c.Messages.New(ctx, p)
		var apiErr *anthropic.Error
		if !errors.As(err, &apiErr) {
			t.Fatalf("%s: got %v, want an *anthropic.Error", name, err)
		}
		if apiErr.StatusCode != status || string(apiErr.Type()) != typ || !strings.Contains(apiErr.Message, message) ||
			!strings.HasPrefix(apiErr.RequestID, "req_") && apiErr.RequestID == "" {
			t.Fatalf("%s: got %d %q %q (request id %q), want %d %q %q", name, apiErr.StatusCode, apiErr.Type(), apiErr.Message,
				apiErr.RequestID, status, typ, message)
		}
		if strings.Contains(apiErr.RawJSON(), providerKey) {
			t.Fatalf("%s: the provider key in an answer", name)
		}
	}
	all := g.anthropicClient(anthropicoption.WithAPIKey(g.newKey("all").Key))
	f("unknown key", g.anthropicClient(anthropicoption.WithAPIKey("sk-th-nope")), claudeRequest("claude", 5), 401, "authentication_error", "")
	f("bearer unknown", g.anthropicClient(anthropicoption.WithAuthToken("sk-th-nope")), claudeRequest("claude", 5), 401, "authentication_error", "")
	f("not in plan", g.anthropicClient(anthropicoption.WithAPIKey(g.newKey("gptonly").Key)), claudeRequest("claude", 5),
		403, "permission_error", "claude")
	f("unknown model", all, claudeRequest("nope", 5), 404, "not_found_error", "nope")
	f("openai model", all, claudeRequest("gpt", 5), 400, "invalid_request_error", "/v1/chat/completions")
	f("max_tokens 0", all, claudeRequest("claude", 0), 400, "invalid_request_error", "max_tokens")
	f("max_tokens over the model's", all, claudeRequest("claude", 8001), 400, "invalid_request_error", "max_output_tokens")
	f("per-request cap", g.anthropicClient(anthropicoption.WithAPIKey(g.newKey("poor").Key)), claudeRequest("claude", 5),
		402, "billing_error", "per-request cap")
	slow := g.anthropicClient(anthropicoption.WithAPIKey(g.newKey("slow").Key))
	if _, err := slow.Messages.New(ctx, claudeRequest("claude", 5)); err != nil {
		t.Fatal(err)
	}
	f("rate limit", slow, claudeRequest("claude", 5), 429, "rate_limit_error", "Rate limit")
	// Without a key (the SDK will not send one): Anthropic's 401, with the
	// request's id where the SDKs read it.
	status, hdr, b := g.do("POST", "/v1/messages", "", []byte(`{}`))
	if status != 401 || !bytes.HasPrefix(b, []byte(`{"type":"error","error":{"type":"authentication_error","message":"You didn't provide an API key.`)) ||
		hdr.Get("Request-Id") == "" || hdr.Get("Request-Id") != hdr.Get("X-Request-Id") {
		t.Fatalf("%d %s: request-id %q, x-request-id %q", status, b, hdr.Get("Request-Id"), hdr.Get("X-Request-Id"))
	}
	if m.Requests() != 1 {
		t.Fatalf("the upstream served %d requests, want the one admitted", m.Requests())
	}
}

// TestMessagesRateLimitHeaders: a 429 on /v1/messages carries retry-after,
// which the Anthropic SDKs wait for.
func TestMessagesRateLimitHeaders(t *testing.T) {
	g, _ := startClaude(t, mock.AnthropicOptions{})
	k := g.newKey("slow")
	body := []byte(`{"model":"claude","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`)
	if status, _, b := g.do("POST", "/v1/messages", "", body, "x-api-key", k.Key, "anthropic-version", "2023-06-01"); status != 200 {
		t.Fatalf("%d %s", status, b)
	}
	status, hdr, b := g.do("POST", "/v1/messages", "", body, "x-api-key", k.Key)
	if status != 429 || hdr.Get("Retry-After") == "" || !bytes.HasPrefix(b, []byte(`{"type":"error","error":{"type":"rate_limit_error","message":"Rate limit`)) {
		t.Fatalf("%d %v %s", status, hdr, b)
	}
}

// TestMessagesKeylessBodyNotRead: a request without a key (in either
// header) is refused from its headers: a body declared 16 MiB is never
// waited for.
func TestMessagesKeylessBodyNotRead(t *testing.T) {
	g, _ := startClaude(t, mock.AnthropicOptions{})
	f := func(name, auth string, want string) {
		t.Helper()
		conn := dialGateway(t, g)
		defer conn.Close()
		fmt.Fprintf(conn, "POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%sContent-Length: 16000000\r\n\r\n{", auth)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		resp.Body.Close()
		if got := fmt.Sprint(resp.StatusCode); got != want {
			t.Fatalf("%s: status %s, want %s", name, got, want)
		}
	}
	f("no key", "", "401")
	f("bad x-api-key", "x-api-key: sk-th-forged\r\n", "401")
	f("bad bearer", "Authorization: Bearer sk-th-forged\r\n", "401")
	// A good key in x-api-key has its body read (TestMessagesSDK's
	// WithAPIKey requests are answered from their bodies).
}

// dialGateway opens a raw connection to g.
func dialGateway(t *testing.T, g *gateway) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(g.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestMessagesHeadersForwarded: the upstream gets the gateway's key (not
// the client's), the client's anthropic-version and anthropic-beta, and the
// upstream's own anthropic-version when the client sends none.
func TestMessagesHeadersForwarded(t *testing.T) {
	m := mock.New(mock.Options{Anthropic: mock.AnthropicOptions{APIKey: providerKey}})
	var mu sync.Mutex
	var seen []http.Header
	up := startUpstream(t, func(ctx *fasthttp.RequestCtx) {
		h := http.Header{}
		for k, v := range ctx.Request.Header.All() {
			h.Add(string(k), string(v))
		}
		mu.Lock()
		seen = append(seen, h)
		mu.Unlock()
		m.Handler(ctx)
	})
	_, oai := startMock(t, mock.Options{})
	g := startGateway(t, yamlClaude(up, oai), "")
	k := g.newKey("all")
	body := []byte(`{"model":"claude","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`)
	if status, _, b := g.do("POST", "/v1/messages", "", body, "x-api-key", k.Key, "anthropic-version", "2023-01-01",
		"anthropic-beta", "prompt-caching-2024-07-31,files-api-2025-04-14"); status != 200 {
		t.Fatalf("%d %s", status, b)
	}
	if status, _, b := g.do("POST", "/v1/messages", k.Key, body); status != 200 {
		t.Fatalf("%d %s", status, b)
	}
	mu.Lock()
	defer mu.Unlock()
	first, second := seen[0], seen[1]
	if first.Get("X-Api-Key") != providerKey || first.Get("Authorization") != "" || first.Get("Anthropic-Version") != "2023-01-01" ||
		first.Get("Anthropic-Beta") != "prompt-caching-2024-07-31,files-api-2025-04-14" {
		t.Fatalf("first request's headers %v", first)
	}
	if second.Get("X-Api-Key") != providerKey || second.Get("Authorization") != "" || second.Get("Anthropic-Version") == "" ||
		second.Get("Anthropic-Beta") != "" {
		t.Fatalf("second request's headers %v", second)
	}
}

// TestMessagesPassThrough: the body reaches the upstream byte for byte but
// for the model's name, and the answer comes back as the upstream sent it.
func TestMessagesPassThrough(t *testing.T) {
	m := mock.New(mock.Options{Anthropic: mock.AnthropicOptions{APIKey: providerKey}})
	var mu sync.Mutex
	var bodies [][]byte
	var answers [][]byte
	up := startUpstream(t, func(ctx *fasthttp.RequestCtx) {
		mu.Lock()
		bodies = append(bodies, append([]byte(nil), ctx.PostBody()...))
		mu.Unlock()
		m.Handler(ctx)
		mu.Lock()
		answers = append(answers, append([]byte(nil), ctx.Response.Body()...))
		mu.Unlock()
	})
	_, oai := startMock(t, mock.Options{})
	g := startGateway(t, yamlClaude(up, oai), "")
	k := g.newKey("all")
	f := func(name, body, wantUpstream string) {
		t.Helper()
		status, _, got := g.do("POST", "/v1/messages", k.Key, []byte(body))
		if status != 200 {
			t.Fatalf("%s: %d %s", name, status, got)
		}
		mu.Lock()
		defer mu.Unlock()
		if string(bodies[len(bodies)-1]) != wantUpstream {
			t.Fatalf("%s: upstream got\n%s\nwant\n%s", name, bodies[len(bodies)-1], wantUpstream)
		}
		if !bytes.Equal(got, answers[len(answers)-1]) {
			t.Fatalf("%s: client got\n%s\nupstream sent\n%s", name, got, answers[len(answers)-1])
		}
	}
	const rest = ` , "max_tokens" : 5,"messages":[{"role":"user","content":[{"type":"text","text":"h\u00e9","cache_control":{"type":"ephemeral"}}]}]}`
	f("renamed", `{"model":"claude"`+rest, `{"model":"claude-sonnet-4-6"`+rest)
	f("as is", `{"model":"mock"`+rest, `{"model":"mock"`+rest)
	f("escaped key", `{"mod\u0065l":"claude"`+rest, `{"mod\u0065l":"claude-sonnet-4-6"`+rest)
	// Repeated, every model is the route's, so that whichever one a parser
	// reads, it reads the one the gateway checked.
	f("repeated", `{"model":"gpt","model":"mock"`+rest, `{"model":"mock","model":"mock"`+rest)
	f("repeated renamed", `{"model":"nope","model":"claude"`+rest, `{"model":"claude-sonnet-4-6","model":"claude-sonnet-4-6"`+rest)
}

// TestMessagesDuplicateKeys: a repeated model or max_tokens reads as the
// upstream (and Go's encoding/json) reads it, the last; the largest
// max_tokens is what admission weighs; a variant Go would read and Python
// would not is refused.
func TestMessagesDuplicateKeys(t *testing.T) {
	g, m := startClaude(t, mock.AnthropicOptions{})
	k := g.newKey("gptonly")
	all := g.newKey("all")
	const msgs = `"messages":[{"role":"user","content":"hi"}]}`
	f := func(name, key, body string, wantStatus int, wantType string) {
		t.Helper()
		status, _, b := g.do("POST", "/v1/messages", key, []byte(body))
		var e struct {
			Type  string `json:"type"`
			Error struct {
				Type string `json:"type"`
			} `json:"error"`
		}
		json.Unmarshal(b, &e)
		if status != wantStatus || (wantType != "" && e.Error.Type != wantType) {
			t.Fatalf("%s: %d %s, want %d %s", name, status, b, wantStatus, wantType)
		}
	}
	before := m.Requests()
	// The last model is what the whitelist judges: gpt is allowed, claude is not.
	f("last model not allowed", k.Key, `{"model":"gpt","model":"claude","max_tokens":5,`+msgs, 403, "permission_error")
	f("first model not read", k.Key, `{"model":"claude","model":"gpt","max_tokens":5,`+msgs, 400, "invalid_request_error") // gpt: an openai model
	f("last max_tokens over", all.Key, `{"model":"claude","max_tokens":5,"max_tokens":8001,`+msgs, 400, "invalid_request_error")
	f("an earlier max_tokens over", all.Key, `{"model":"claude","max_tokens":8001,"max_tokens":5,`+msgs, 400, "invalid_request_error")
	f("last max_tokens read", all.Key, `{"model":"claude","max_tokens":1,"max_tokens":5,`+msgs, 200, "")
	f("variant model", all.Key, `{"Model":"claude","model":"mock","max_tokens":5,`+msgs, 400, "invalid_request_error")
	f("variant max_tokens", all.Key, `{"model":"claude","MAX_TOKENS":5000,"max_tokens":5,`+msgs, 400, "invalid_request_error")
	f("null model last", all.Key, `{"model":"claude","model":null,"max_tokens":5,`+msgs, 400, "invalid_request_error")
	f("no max_tokens", all.Key, `{"model":"claude",`+msgs, 400, "invalid_request_error")
	f("stream not bool", all.Key, `{"model":"claude","max_tokens":5,"stream":"yes",`+msgs, 400, "invalid_request_error")
	if got := m.Requests() - before; got != 1 {
		t.Fatalf("the upstream served %d requests, want 1", got)
	}
	// The answer to "last max_tokens read" had the last max_tokens' output.
	if u := g.usageDetail(all.ID); u.Completion != 5 {
		t.Fatalf("billed %d completion tokens, want 5", u.Completion)
	}
}

// TestMessagesDisconnectBilledExactly: a client that leaves a stream after
// its first events is billed what the upstream reports at the end, its
// cache reads and writes at their own prices, to the pico-dollar.
func TestMessagesDisconnectBilledExactly(t *testing.T) {
	// 40 tokens 10ms apart: the client leaves some 370ms before the end.
	slow, up := startMock(t, mock.Options{Chunks: 40, ChunkInterval: 10 * time.Millisecond,
		Anthropic: mock.AnthropicOptions{APIKey: providerKey, CacheReadInputTokens: 3000, CacheCreationInputTokens: 700}})
	g2 := startGateway(t, yamlClaude(up, deadURL(t)), "")
	k2 := g2.newKey("all")
	// The same request buffered gives its exact usage (the mock's answers
	// depend on the request alone).
	body := `{"model":"claude","max_tokens":40,"messages":[{"role":"user","content":"Hello there"}]}`
	status, _, b := g2.do("POST", "/v1/messages", k2.Key, []byte(body))
	if status != 200 {
		t.Fatalf("%d %s", status, b)
	}
	var msg anthropic.Message
	if err := json.Unmarshal(b, &msg); err != nil {
		t.Fatal(err)
	}
	if msg.Usage.OutputTokens != 40 {
		t.Fatalf("usage %s", msg.Usage.RawJSON())
	}
	want := 2 * billOf(msg.Usage)
	// The client leaves mid-stream, after three deltas.
	g2.leaveStream("/v1/messages", "x-api-key", k2.Key,
		strings.Replace(body, `"max_tokens"`, `"stream":true,"max_tokens"`, 1), "event: content_block_delta", 3)
	eventually.True(t, "the stream billed once the upstream ended it", func() bool {
		return g2.usageDetail(k2.ID).Requests == 2
	})
	u := g2.usageDetail(k2.ID)
	if u.SpendUSD.String() != want.String() || u.Cached != 6000 || u.Completion != 2*msg.Usage.OutputTokens {
		t.Fatalf("billed %+v, want $%s (two of %+v)", u, want, msg.Usage)
	}
	if slow.Requests() != 2 {
		t.Fatalf("upstream served %d requests", slow.Requests())
	}
}

// TestMessagesBudgetCut: a stream reserves a step of its output and
// extends it as it goes; one that runs past the monthly budget is cut with
// an Anthropic error event, which the SDK reports as billing_error, and
// what was relayed is billed, within the cap.
func TestMessagesBudgetCut(t *testing.T) {
	_, up := startMock(t, mock.Options{Chunks: 6000, Anthropic: mock.AnthropicOptions{APIKey: providerKey}})
	_, oai := startMock(t, mock.Options{})
	g := startGateway(t, yamlClaude(up, oai), "")
	k := g.newKey("month")
	c := g.anthropicClient(anthropicoption.WithAPIKey(k.Key))
	// $0.05 buys some 3,300 output tokens at $15 a million: the first
	// step is admitted, the 6,000 cannot all be.
	s := c.Messages.NewStreaming(context.Background(), claudeRequest("claude", 8000))
	events := 0
	for s.Next() {
		events++
	}
	var apiErr *anthropic.Error
	if err := s.Err(); !errors.As(err, &apiErr) || apiErr.Type() != "billing_error" {
		t.Fatalf("after %d events: %v, want the stream cut with billing_error", events, err)
	}
	u := g.usageDetail(k.ID)
	spend, err := u.SpendUSD.Float64()
	if err != nil {
		t.Fatal(err)
	}
	if u.Requests != 1 || u.Completion < 3000 || u.Completion > 3400 || spend > 0.05 {
		t.Fatalf("usage %+v after %d events, want about 3,300 completion tokens within $0.05", u, events)
	}
	raw := rawMessages(t, g.url, k.Key, `{"model":"claude","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	if !strings.HasPrefix(raw, "{\"type\":\"error\",\"error\":{\"type\":\"billing_error\"") {
		t.Fatalf("the spent key's next stream: %q", raw)
	}
}

// rawMessages posts body to /v1/messages and returns the answer as sent.
func rawMessages(t *testing.T, url, key, body string) string {
	t.Helper()
	req, _ := http.NewRequest("POST", url+"/v1/messages", strings.NewReader(body))
	req.Header.Set("x-api-key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return b.String()
}

// TestMessagesProviderKeyNeverShown: the upstream refusing the gateway's
// key is the gateway's credential error, without the key, in answers and
// logs.
func TestMessagesProviderKeyNeverShown(t *testing.T) {
	_, up := startMock(t, mock.Options{Anthropic: mock.AnthropicOptions{APIKey: "sk-ant-another-key"}})
	_, oai := startMock(t, mock.Options{})
	var logs bytes.Buffer
	var mu sync.Mutex
	g := startNodeLogging(t, "store: {path: "+t.TempDir()+"}\nlog: {level: info}\n"+yamlClaude(up, oai), lockedWriter{&mu, &logs})
	k := g.newKey("all")
	c := g.anthropicClient(anthropicoption.WithAPIKey(k.Key))
	_, err := c.Messages.New(context.Background(), claudeRequest("claude", 5))
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 502 || apiErr.Type() != "api_error" ||
		!strings.Contains(apiErr.Message, "provider credentials") || strings.Contains(apiErr.RawJSON(), providerKey) {
		t.Fatalf("got %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Contains(logs.String(), providerKey) || strings.Contains(logs.String(), k.Key) {
		t.Fatal("a key in the log")
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestMessagesMixedRoutes: a model with an openai and an anthropic route
// sends /v1/messages only to the anthropic one.
func TestMessagesMixedRoutes(t *testing.T) {
	g, m := startClaude(t, mock.AnthropicOptions{})
	k := g.newKey("all")
	c := g.anthropicClient(anthropicoption.WithAPIKey(k.Key))
	for range 20 {
		if _, err := c.Messages.New(context.Background(), claudeRequest("mixed", 3)); err != nil {
			t.Fatal(err)
		}
	}
	if m.Requests() != 20 {
		t.Fatalf("the anthropic upstream served %d of 20", m.Requests())
	}
}

// TestMessagesUpstreamErrors: Anthropic's own errors pass through with
// their status and type; an overloaded upstream (529) fails over to the
// next route, and when it is the last its overloaded_error reaches the
// client, which the SDKs retry.
func TestMessagesUpstreamErrors(t *testing.T) {
	over, overURL := startMock(t, mock.Options{Status: 529, Anthropic: mock.AnthropicOptions{APIKey: providerKey}})
	good, goodURL := startMock(t, mock.Options{Anthropic: mock.AnthropicOptions{APIKey: providerKey}})
	g := startGateway(t, fmt.Sprintf(`
upstreams:
  - {name: over, kind: anthropic, base_url: %q, api_key: %q}
  - {name: good, kind: anthropic, base_url: %q, api_key: %q}
models:
  - {name: both, routes: [{upstream: over, model: mock, weight: 100}, {upstream: good, model: mock, weight: 1}]}
  - {name: overloaded, routes: [{upstream: over, model: mock}]}
  - {name: unknown, routes: [{upstream: good, model: not-a-claude}]}
plans:
  - {name: all, models: ["*"]}
`, overURL, providerKey, goodURL, providerKey), "")
	c := g.anthropicClient(anthropicoption.WithAPIKey(g.newKey("all").Key))
	ctx := context.Background()
	// The overloaded route weighs 100 to 1: the first request all but
	// surely tries it first; whichever it tries, every request is answered.
	sent := uint64(0)
	for over.Requests() == 0 && sent < 20 {
		msg, err := c.Messages.New(ctx, claudeRequest("both", 3))
		if err != nil || msg.Usage.OutputTokens != 3 {
			t.Fatalf("failover: %v", err)
		}
		sent++
	}
	if over.Requests() != 1 || good.Requests() != sent {
		t.Fatalf("overloaded upstream served %d, the good one %d of %d", over.Requests(), good.Requests(), sent)
	}
	f := func(name string, p anthropic.MessageNewParams, status int, typ, message string) {
		t.Helper()
		_, err := c.Messages.New(ctx, p)
		var apiErr *anthropic.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != status || string(apiErr.Type()) != typ || !strings.Contains(apiErr.Message, message) {
			t.Fatalf("%s: got %v, want %d %s %q", name, err, status, typ, message)
		}
	}
	f("overloaded, no other route", claudeRequest("overloaded", 3), 529, "overloaded_error", "Overloaded")
	f("the upstream's own 404", claudeRequest("unknown", 3), 404, "not_found_error", "not-a-claude")
	bad := claudeRequest("unknown", 3)
	bad.Messages = nil
	bad.Model = "both"
	f("the upstream's own 400", bad, 400, "invalid_request_error", "messages")
}

// TestMessagesStreamCuts: an upstream that breaks off mid-stream ends the
// client's stream with an Anthropic api_error event, and what was relayed
// is billed; an upstream's own error event passes through.
func TestMessagesStreamCuts(t *testing.T) {
	f := func(name string, o mock.Options, wantType string) {
		t.Helper()
		o.Chunks = 30
		o.Anthropic.APIKey = providerKey
		_, up := startMock(t, o)
		g := startGateway(t, yamlClaude(up, deadURL(t)), "")
		k := g.newKey("all")
		c := g.anthropicClient(anthropicoption.WithAPIKey(k.Key))
		s := c.Messages.NewStreaming(context.Background(), claudeRequest("claude", 30))
		var text string
		for s.Next() {
			if ev := s.Current(); ev.Type == "content_block_delta" {
				text += ev.Delta.Text
			}
		}
		var apiErr *anthropic.Error
		if err := s.Err(); !errors.As(err, &apiErr) || string(apiErr.Type()) != wantType {
			t.Fatalf("%s: %v, want an %s event", name, s.Err(), wantType)
		}
		u := g.usageDetail(k.ID)
		// Five words relayed of some 4 to 6 bytes: an estimate of 5 to 9
		// tokens, and the input counts message_start gave.
		if u.Requests != 1 || u.Completion < 5 || u.Completion > 9 || u.Prompt == 0 || len(text) == 0 {
			t.Fatalf("%s: billed %+v for %q", name, u, text)
		}
	}
	f("connection cut", mock.Options{FailAfterChunks: 5}, "api_error")
	f("upstream's error event", mock.Options{Anthropic: mock.AnthropicOptions{StreamErrorAfter: 5}}, "overloaded_error")
}

// TestMessagesExternalInputBounded: a body that makes the upstream read
// input it does not hold (an image or PDF by URL, a server tool's results)
// is weighed at the model's context window, not at its own length: a
// per-request cap that a small body fits refuses it, before the upstream.
func TestMessagesExternalInputBounded(t *testing.T) {
	g, m := startClaude(t, mock.AnthropicOptions{})
	k := g.newKey("capped")
	f := func(name, content string, want int, wantType string) {
		t.Helper()
		body := `{"model":"claude","max_tokens":5,"messages":[{"role":"user","content":` + content + `}]}`
		status, _, b := g.do("POST", "/v1/messages", k.Key, []byte(body))
		if status != want || !strings.Contains(string(b), wantType) {
			t.Fatalf("%s: %d %s, want %d %s", name, status, b, want, wantType)
		}
	}
	before := m.Requests()
	f("text", `"Describe https://example.com/a.pdf"`, 200, `"type":"message"`)
	// 200,000 tokens at the cache-write price of $3.75 a million: $0.75.
	f("PDF by URL", `[{"type":"document","source":{"type":"url","url":"https://example.com/a.pdf"}},{"type":"text","text":"Summarize"}]`,
		402, "billing_error")
	f("escaped", `[{"type":"document","source":{"type":"\u0075rl","url":"https://example.com/a.pdf"}}]`, 402, "billing_error")
	if got := m.Requests() - before; got != 1 {
		t.Fatalf("the upstream served %d requests, want the text one", got)
	}
}

// TestMessagesUpstreamRetryAfter: the last route's 429 or 529 reaches the
// client with its retry-after, which the Anthropic SDKs wait for.
func TestMessagesUpstreamRetryAfter(t *testing.T) {
	for _, status := range []int{429, 529} {
		up := startUpstream(t, func(ctx *fasthttp.RequestCtx) {
			ctx.Response.Header.Set("Retry-After", "7")
			ctx.SetStatusCode(status)
			ctx.SetContentType("application/json")
			ctx.SetBodyString(`{"type":"error","error":{"type":"rate_limit_error","message":"Slow down."}}`)
		})
		g := startGateway(t, yamlClaude(up, deadURL(t)), "")
		got, hdr, b := g.do("POST", "/v1/messages", g.newKey("all").Key, []byte(`{"model":"claude","max_tokens":5,"messages":[]}`))
		if got != status || hdr.Get("Retry-After") != "7" || string(b) != `{"type":"error","error":{"type":"rate_limit_error","message":"Slow down."}}` {
			t.Fatalf("%d: got %d %v %s", status, got, hdr, b)
		}
	}
}

// TestMessagesBetaQuery: the SDKs' beta client (Claude Code's) posts to
// /v1/messages?beta=true; its key in x-api-key has its body read there too.
func TestMessagesBetaQuery(t *testing.T) {
	g, _ := startClaude(t, mock.AnthropicOptions{})
	k := g.newKey("all")
	c := g.anthropicClient(anthropicoption.WithAPIKey(k.Key))
	msg, err := c.Beta.Messages.New(context.Background(), anthropic.BetaMessageNewParams{
		Model:     "claude",
		MaxTokens: 4,
		Messages:  []anthropic.BetaMessageParam{anthropic.NewBetaUserMessage(anthropic.NewBetaTextBlock("Hello"))},
		Betas:     []anthropic.AnthropicBeta{"prompt-caching-2024-07-31"},
	})
	if err != nil || msg.Usage.OutputTokens != 4 {
		t.Fatalf("beta: %v", err)
	}
	status, _, b := g.do("POST", "/v1/messages?beta=true", "", []byte(`{"model":"claude","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`),
		"x-api-key", k.Key)
	if status != 200 || !strings.Contains(string(b), `"output_tokens":3`) {
		t.Fatalf("%d %s", status, b)
	}
}

// TestMessagesKeyPrecedence: a request to /v1/messages carrying both
// x-api-key and a bearer token is judged by x-api-key, as Anthropic's API
// judges it, so a client with both set gets the same answer from the
// gateway and from Anthropic; and the 401 for no key says where an
// Anthropic client puts it.
func TestMessagesKeyPrecedence(t *testing.T) {
	g, _ := startClaude(t, mock.AnthropicOptions{})
	k := g.newKey("all")
	body := []byte(`{"model":"claude","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`)
	forged := "sk-th-forged"
	if status, _, b := g.do("POST", "/v1/messages", forged, body, "x-api-key", k.Key, "anthropic-version", "2023-06-01"); status != http.StatusOK {
		t.Fatalf("good x-api-key, forged bearer: %d %s; want 200", status, b)
	}
	status, _, b := g.do("POST", "/v1/messages", k.Key, body, "x-api-key", forged, "anthropic-version", "2023-06-01")
	if status != http.StatusUnauthorized || !strings.Contains(string(b), `"authentication_error"`) {
		t.Fatalf("forged x-api-key, good bearer: %d %s; want 401 authentication_error", status, b)
	}
	status, _, b = g.do("POST", "/v1/messages", "", body, "anthropic-version", "2023-06-01")
	if status != http.StatusUnauthorized || !strings.Contains(string(b), "x-api-key") {
		t.Fatalf("no key: %d %s; want 401 naming x-api-key", status, b)
	}
}
