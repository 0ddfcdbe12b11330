package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/internal/eventually"
	"github.com/tokenhub/tokenhub/internal/mock"
	"github.com/tokenhub/tokenhub/internal/usd"
)

// claudeKey is the provider key the gateway holds for the Anthropic mock:
// long enough to be redacted, distinctive enough to be found in a log.
const claudeKey = "sk-ant-test-PROVIDERKEY-0123456789abcdef"

// messagesSeen is what an Anthropic mock received: each Messages request's
// headers and body, in order.
type messagesSeen struct {
	mu      sync.Mutex
	headers []http.Header
	bodies  [][]byte
}

func (s *messagesSeen) last(t *testing.T) (http.Header, []byte) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.bodies) == 0 {
		t.Fatal("the Anthropic upstream got no request")
	}
	return s.headers[len(s.headers)-1], s.bodies[len(s.bodies)-1]
}

func (s *messagesSeen) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.bodies)
}

// startClaudeMock serves internal/mock's Anthropic Messages API, which
// checks x-api-key (claudeKey) and anthropic-version as Anthropic does, and
// records what it was sent.
func startClaudeMock(t testing.TB, o mock.Options) (*mock.Server, string, *messagesSeen) {
	t.Helper()
	o.Anthropic.APIKey = claudeKey
	m := mock.New(o)
	seen := &messagesSeen{}
	url := startUpstream(t, func(ctx *fasthttp.RequestCtx) {
		if bytes.HasPrefix(ctx.Path(), []byte("/v1/messages")) {
			h := http.Header{}
			for k, v := range ctx.Request.Header.All() {
				h.Add(string(k), string(v))
			}
			seen.mu.Lock()
			seen.headers = append(seen.headers, h)
			seen.bodies = append(seen.bodies, append([]byte(nil), ctx.PostBody()...))
			seen.mu.Unlock()
		}
		m.Handler(ctx)
	})
	return m, url, seen
}

// claudePrice has four distinct prices, so that a token billed at the
// wrong one shows: $3 input, $0.30 cache reads, $3.75 cache writes, $15
// output per million tokens.
var claudePrice = usd.Price{InputPerMTok: 3_000_000, CachedInputPerMTok: 300_000, CacheWritePerMTok: 3_750_000, OutputPerMTok: 15_000_000}

const claudePriceYAML = "{input_per_mtok: 3, cached_input_per_mtok: 0.30, cache_write_per_mtok: 3.75, output_per_mtok: 15}"

// claudeYAML routes the model "claude" to the Anthropic mock at url as
// claude-sonnet-4-6, with claudePrice and 64 output tokens at most.
func claudeYAML(url string) string {
	return fmt.Sprintf(`
upstreams:
  - {name: anthropic, kind: anthropic, base_url: %q, api_key: %q}
models:
  - {name: claude, routes: [{upstream: anthropic, model: claude-sonnet-4-6}], price: %s, max_output_tokens: 64}
plans:
  - {name: all, models: ["*"]}
`, url, claudeKey, claudePriceYAML)
}

func sdkTokens(u openai.CompletionUsage) usd.Tokens {
	return usd.Tokens{Prompt: u.PromptTokens, Cached: u.PromptTokensDetails.CachedTokens, Completion: u.CompletionTokens}
}

// wantBilled asserts that key id was billed exactly used (of which
// cacheWrite prompt tokens were cache writes), priced at claudePrice to the
// pico-dollar, once.
func wantBilled(t *testing.T, g *gateway, id string, used usd.Tokens) {
	t.Helper()
	want := claudePrice.Bill(used)
	var u cachedUsage
	eventually.True(t, "the request billed", func() bool {
		u = g.cachedUsageOf(id)
		return u.Requests == 1
	})
	if u.Prompt != used.Prompt || u.Cached != used.Cached || u.Completion != used.Completion || u.SpendUSD.String() != want.String() {
		t.Fatalf("usage API shows %+v; want %+v billed %s", u, used, want)
	}
}

// TestClaudeChat: the official SDK's chat completion, buffered and
// streamed (with and without the usage chunk), to a model on an anthropic
// upstream: the mock got a valid Messages request with the gateway's
// x-api-key, the upstream's anthropic-version and the client's
// anthropic-beta; the client read a chat completion whose usage counts
// cache reads and writes in the prompt and reads as cached; the key was
// billed that usage exactly, each part at its own price.
func TestClaudeChat(t *testing.T) {
	_, up, seen := startClaudeMock(t, mock.Options{Chunks: 6, Anthropic: mock.AnthropicOptions{CacheReadInputTokens: 7, CacheCreationInputTokens: 11}})
	g := startGateway(t, claudeYAML(up), "")
	ctx := context.Background()
	beta := option.WithHeader("anthropic-beta", "prompt-caching-2024-07-31")
	for _, tc := range []struct {
		name         string
		stream       bool
		includeUsage bool
	}{{"buffered", false, false}, {"stream", true, false}, {"stream with usage", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			k := g.newKey("all")
			c := g.client(k.Key)
			p := chatParams("claude", "say six words")
			var content, finish string
			var used usd.Tokens
			if !tc.stream {
				r, err := c.Chat.Completions.New(ctx, p, beta)
				if err != nil {
					t.Fatal(err)
				}
				if r.Object != "chat.completion" || r.Model != "claude" || len(r.Choices) != 1 {
					t.Fatalf("answer object %q model %q, %d choices", r.Object, r.Model, len(r.Choices))
				}
				content, finish, used = r.Choices[0].Message.Content, r.Choices[0].FinishReason, sdkTokens(r.Usage)
			} else {
				if tc.includeUsage {
					p.StreamOptions.IncludeUsage = openai.Bool(true)
				}
				s := c.Chat.Completions.NewStreaming(ctx, p, beta)
				var acc openai.ChatCompletionAccumulator
				usageChunks := 0
				for s.Next() {
					ch := s.Current()
					if ch.Object != "chat.completion.chunk" || ch.Model != "claude" {
						t.Fatalf("chunk object %q model %q", ch.Object, ch.Model)
					}
					if ch.JSON.Usage.Valid() && ch.Usage.PromptTokens > 0 {
						usageChunks++
						used = sdkTokens(ch.Usage)
					}
					acc.AddChunk(ch)
				}
				if err := s.Err(); err != nil {
					t.Fatal(err)
				}
				if want := map[bool]int{false: 0, true: 1}[tc.includeUsage]; usageChunks != want {
					t.Fatalf("%d usage chunks, want %d", usageChunks, want)
				}
				content, finish = acc.Choices[0].Message.Content, acc.Choices[0].FinishReason
			}
			if n := len(strings.Fields(content)); n != 6 || finish != "stop" {
				t.Fatalf("content %q (%d words), finish %q; want 6 words and stop", content, n, finish)
			}
			h, body := seen.last(t)
			if h.Get("X-Api-Key") != claudeKey || h.Get("Anthropic-Version") != "2026-10-21" ||
				h.Get("Anthropic-Beta") != "prompt-caching-2024-07-31" || h.Get("Authorization") != "" {
				t.Fatalf("the upstream got headers %v", h)
			}
			var sent struct {
				Model     string `json:"model"`
				MaxTokens int64  `json:"max_tokens"`
				Stream    bool   `json:"stream"`
			}
			if err := json.Unmarshal(body, &sent); err != nil || sent.Model != "claude-sonnet-4-6" || sent.MaxTokens != 64 || sent.Stream != tc.stream {
				t.Fatalf("the upstream got %s (%v); want the route's model, the model's max_output_tokens as max_tokens", body, err)
			}
			if !tc.stream || tc.includeUsage {
				if used.Cached != 7 || used.Prompt <= 18 || used.Completion != 6 {
					t.Fatalf("the client read usage %+v; want a prompt with 7 cache reads and 11 cache writes in it, 6 output", used)
				}
			} else {
				// Same body, same count: the buffered answer's prompt.
				used = usd.Tokens{Prompt: anthropicPromptTokens(t, g, "say six words"), Cached: 7, Completion: 6}
			}
			used.CacheWrite = 11
			if claudePrice.Bill(used) == claudePrice.Bill(usd.Tokens{Prompt: used.Prompt, Cached: 7, Completion: 6}) {
				t.Fatal("cache writes cost the input price here: the test proves nothing")
			}
			wantBilled(t, g, k.ID, used)
		})
	}
}

// anthropicPromptTokens is the prompt_tokens the gateway's buffered answer
// reports for prompt, on a key of its own.
func anthropicPromptTokens(t *testing.T, g *gateway, prompt string) int64 {
	t.Helper()
	r, err := g.client(g.newKey("all").Key).Chat.Completions.New(context.Background(), chatParams("claude", prompt))
	if err != nil {
		t.Fatal(err)
	}
	return r.Usage.PromptTokens
}
