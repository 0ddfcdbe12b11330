package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"

	"github.com/tokenhub/tokenhub/internal/mock"
	"github.com/tokenhub/tokenhub/internal/usd"
)

// cachedUsage is GET /v1/keys/{id}/usage with what cached-token billing
// shows: cached tokens apart, and spend exact.
type cachedUsage struct {
	Requests   int64       `json:"requests"`
	Prompt     int64       `json:"prompt_tokens"`
	Cached     int64       `json:"cached_tokens"`
	Completion int64       `json:"completion_tokens"`
	SpendUSD   json.Number `json:"spend_usd"`
	Models     []struct {
		Model      string      `json:"model"`
		Requests   int64       `json:"requests"`
		Prompt     int64       `json:"prompt_tokens"`
		Cached     int64       `json:"cached_tokens"`
		Completion int64       `json:"completion_tokens"`
		SpendUSD   json.Number `json:"spend_usd"`
	} `json:"models"`
}

func (g *gateway) cachedUsageOf(id string) cachedUsage {
	g.t.Helper()
	var u cachedUsage
	g.admin("GET", "/v1/keys/"+id+"/usage", nil, http.StatusOK, &u)
	return u
}

// cachedPriceYAML serves the mock at gpt-4o-mini's prices: $0.15 input,
// $0.075 cached input, $0.60 output per million tokens.
func cachedPriceYAML(upstreamURL, price string) string {
	return fmt.Sprintf(`
upstreams:
  - {name: up, base_url: %q}
models:
  - {name: mock, routes: [{upstream: up}], price: %s}
plans:
  - {name: all, models: ["*"]}
`, upstreamURL, price)
}

var miniPrice = usd.Price{InputPerMTok: 150_000, CachedInputPerMTok: 75_000, OutputPerMTok: 600_000}

const miniPriceYAML = "{input_per_mtok: 0.15, cached_input_per_mtok: 0.075, output_per_mtok: 0.60}"

// TestCachedTokensBilledToThePico: through a real node, the usage the
// official SDK reads (prompt, of it cached, completion) is what the usage
// API shows, cached tokens apart, and the spend is that usage at the
// model's prices to the pico-dollar, cached tokens at the cached price: on
// chat and legacy completions, buffered and streamed, with the usage chunk
// the client asked for or the one the gateway asked for on its behalf.
func TestCachedTokensBilledToThePico(t *testing.T) {
	_, up := startMock(t, mock.Options{Chunks: 5, CachedTokens: 3})
	g := startGateway(t, cachedPriceYAML(up, miniPriceYAML), "")
	ctx := context.Background()
	type call func(c *openai.Client) usd.Tokens
	fromSDK := func(u openai.CompletionUsage) usd.Tokens {
		return usd.Tokens{Prompt: u.PromptTokens, Cached: u.PromptTokensDetails.CachedTokens, Completion: u.CompletionTokens}
	}
	chat := func(c *openai.Client) usd.Tokens {
		r, err := c.Chat.Completions.New(ctx, chatParams("mock", "what is cached?"))
		if err != nil {
			t.Fatal(err)
		}
		return fromSDK(r.Usage)
	}
	chatStream := func(c *openai.Client) usd.Tokens {
		p := chatParams("mock", "stream what is cached")
		p.StreamOptions.IncludeUsage = openai.Bool(true)
		s := c.Chat.Completions.NewStreaming(ctx, p)
		var used usd.Tokens
		for s.Next() {
			if ch := s.Current(); ch.Usage.PromptTokens > 0 {
				used = fromSDK(ch.Usage)
			}
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		return used
	}
	legacy := func(c *openai.Client) usd.Tokens {
		r, err := c.Completions.New(ctx, openai.CompletionNewParams{Model: "mock",
			Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("complete what is cached")}, MaxTokens: openai.Int(4)})
		if err != nil {
			t.Fatal(err)
		}
		return fromSDK(r.Usage)
	}
	legacyStream := func(c *openai.Client) usd.Tokens {
		s := c.Completions.NewStreaming(ctx, openai.CompletionNewParams{Model: "mock",
			Prompt:        openai.CompletionNewParamsPromptUnion{OfString: openai.String("stream a completion")},
			MaxTokens:     openai.Int(4),
			StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}})
		var used usd.Tokens
		for s.Next() {
			if ch := s.Current(); ch.Usage.PromptTokens > 0 {
				used = fromSDK(ch.Usage)
			}
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		return used
	}
	for _, tc := range []struct {
		name string
		call call
	}{
		{"chat", chat}, {"chat stream", chatStream}, {"completions", legacy}, {"completions stream", legacyStream},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := g.newKey("all")
			used := tc.call(g.client(k.Key))
			if used.Cached != 3 || used.Prompt <= 3 || used.Completion == 0 {
				t.Fatalf("the client read %+v; want a prompt of which 3 are cached", used)
			}
			want := miniPrice.Bill(used)
			if want == miniPrice.Cost(used.Prompt, used.Completion) {
				t.Fatal("the cached price makes no difference here: the test proves nothing")
			}
			u := g.cachedUsageOf(k.ID)
			if u.Requests != 1 || u.Prompt != used.Prompt || u.Cached != 3 || u.Completion != used.Completion || u.SpendUSD.String() != want.String() {
				t.Fatalf("usage API shows %+v; want %+v billed %s", u, used, want)
			}
			if len(u.Models) != 1 || u.Models[0].Cached != 3 || u.Models[0].Prompt != used.Prompt || u.Models[0].SpendUSD.String() != want.String() {
				t.Fatalf("by model: %+v", u.Models)
			}
		})
	}
	// A stream the client did not ask usage of: the gateway asks for it,
	// strips it, and bills its cached tokens all the same.
	t.Run("chat stream, usage asked by the gateway", func(t *testing.T) {
		k := g.newKey("all")
		out := rawStream(t, g.url, k.Key, `{"model":"mock","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
		if strings.Contains(out, `"usage":{`) {
			t.Fatalf("the client got the usage chunk it did not ask for:\n%s", out)
		}
		u := g.cachedUsageOf(k.ID)
		used := usd.Tokens{Prompt: u.Prompt, Cached: 3, Completion: u.Completion}
		if u.Requests != 1 || u.Cached != 3 || u.SpendUSD.String() != miniPrice.Bill(used).String() {
			t.Fatalf("usage API shows %+v; want 3 cached billed %s", u, miniPrice.Bill(used))
		}
	})
}

// TestLyingCachedCountIsClampedAndCounted: an upstream that reports more
// cached tokens than prompt tokens is billed its whole prompt at the cached
// price, no less, and the clamp is counted in
// tokenhub_usage_cached_clamped_total.
func TestLyingCachedCountIsClampedAndCounted(t *testing.T) {
	_, up := startMock(t, mock.Options{Chunks: 5, CachedTokens: 1_000_000})
	g := startGateway(t, cachedPriceYAML(up, miniPriceYAML), "")
	k := g.newKey("all")
	r, err := g.client(k.Key).Chat.Completions.New(context.Background(), chatParams("mock", "lie to me"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Usage.PromptTokensDetails.CachedTokens != 1_000_000 {
		t.Fatalf("the mock reported %d cached tokens", r.Usage.PromptTokensDetails.CachedTokens)
	}
	prompt := r.Usage.PromptTokens
	want := miniPrice.Bill(usd.Tokens{Prompt: prompt, Cached: prompt, Completion: r.Usage.CompletionTokens})
	u := g.cachedUsageOf(k.ID)
	if u.Prompt != prompt || u.Cached != prompt || u.SpendUSD.String() != want.String() {
		t.Fatalf("usage API shows %+v; want all %d prompt tokens cached, billed %s", u, prompt, want)
	}
	if got := g.scrape()[`tokenhub_usage_cached_clamped_total{model="mock",plan="all"}`]; got != 1 {
		t.Fatalf("tokenhub_usage_cached_clamped_total = %v, want 1", got)
	}
	if got := g.scrape()[`tokenhub_cached_tokens_total{model="mock",plan="all"}`]; got != float64(prompt) {
		t.Fatalf("tokenhub_cached_tokens_total = %v, want %d", got, prompt)
	}
}

// TestWorstCaseUsesTheDearerCachedPrice: config lets the cached price be
// above the input price (a provider's cache-write price, a typo); the
// per-request cap must then weigh the prompt at the cached price, since the
// upstream may report every prompt token cached. The same request is
// admitted when the cached price is the lower.
func TestWorstCaseUsesTheDearerCachedPrice(t *testing.T) {
	_, up := startMock(t, mock.Options{Chunks: 2, CachedTokens: 1_000_000})
	yaml := fmt.Sprintf(`
upstreams:
  - {name: up, base_url: %q}
models:
  - {name: cheapcache, routes: [{upstream: up}], price: {input_per_mtok: 1, cached_input_per_mtok: 0.5, output_per_mtok: 0}}
  - {name: dearcache, routes: [{upstream: up}], price: {input_per_mtok: 1, cached_input_per_mtok: 4, output_per_mtok: 0}}
plans:
  - {name: capped, models: ["*"], max_request_usd: 0.0004}
`, up)
	g := startGateway(t, yaml, "")
	k := g.newKey("capped")
	// 136 and 137 bytes: bounded at 200 and 201 prompt tokens, $0.0002 at
	// $1 a million and $0.0008 at $4, either side of the $0.0004 cap.
	body := func(model string) []byte {
		return []byte(`{"model":"` + model + `","max_tokens":2,"messages":[{"role":"user","content":"a prompt the upstream may say it found cached, every token"}]}`)
	}
	if status, _, b := g.do("POST", "/v1/chat/completions", k.Key, body("cheapcache")); status != http.StatusOK {
		t.Fatalf("cheapcache: %d %s", status, b)
	}
	status, hdr, b := g.do("POST", "/v1/chat/completions", k.Key, body("dearcache"))
	wantErrorBody(t, status, hdr, b, http.StatusPaymentRequired, "budget_exceeded")
	// What was admitted is billed within its bound: all of it cached.
	u := g.cachedUsageOf(k.ID)
	if u.Requests != 1 || u.Cached != u.Prompt {
		t.Fatalf("usage %+v", u)
	}
}

// TestAccessLogShowsCachedTokens: the access line of a request whose prompt
// was partly cached says how many tokens, buffered and streamed, beside
// the prompt tokens they are part of.
func TestAccessLogShowsCachedTokens(t *testing.T) {
	_, up := startMock(t, mock.Options{Chunks: 3, CachedTokens: 2})
	var log logBuffer
	g := startNodeLogging(t, "store: {path: "+t.TempDir()+"}\n"+cachedPriceYAML(up, miniPriceYAML), &log)
	k := g.newKey("all")
	if st, _, body := g.do("POST", "/v1/chat/completions", k.Key, []byte(`{"model":"mock","messages":[{"role":"user","content":"hi"}]}`)); st != 200 {
		t.Fatalf("%d %s", st, body)
	}
	rawStream(t, g.url, k.Key, `{"model":"mock","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	for i, l := range accessLines(t, &log, 2) {
		if a := l.Request; a.Cached != 2 || a.Prompt <= 2 || a.Stream != (i == 1) {
			t.Errorf("line %d: %+v", i, a)
		}
	}
}
