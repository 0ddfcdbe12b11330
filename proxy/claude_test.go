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
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"
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
			if h.Get("X-Api-Key") != claudeKey || h.Get("Anthropic-Version") != "2023-06-01" ||
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

func weatherTool() openai.ChatCompletionToolUnionParam {
	return openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{
		Name:        "get_weather",
		Description: openai.String("The weather in a city"),
		Parameters: shared.FunctionParameters{"type": "object", "required": []string{"city"},
			"properties": map[string]any{"city": map[string]any{"type": "string"}}},
	})
}

// TestClaudeToolRoundTrip: the model's tool_use comes back as the SDK's
// tool_calls with finish_reason tool_calls (buffered and streamed); the
// assistant's tool_calls and the tool's answer sent back become a
// tool_use block and the tool_result that follows it, which the mock (as
// Anthropic does) checks, and the model answers in text.
func TestClaudeToolRoundTrip(t *testing.T) {
	_, up, seen := startClaudeMock(t, mock.Options{Chunks: 4, Anthropic: mock.AnthropicOptions{ToolUse: true}})
	g := startGateway(t, claudeYAML(up), "")
	c := g.client(g.newKey("all").Key)
	ctx := context.Background()
	p := chatParams("claude", "what is the weather in Paris?")
	p.Tools = []openai.ChatCompletionToolUnionParam{weatherTool()}

	for _, stream := range []bool{false, true} {
		var msg openai.ChatCompletionMessage
		var finish string
		if !stream {
			r, err := c.Chat.Completions.New(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			msg, finish = r.Choices[0].Message, r.Choices[0].FinishReason
		} else {
			s := c.Chat.Completions.NewStreaming(ctx, p)
			var acc openai.ChatCompletionAccumulator
			for s.Next() {
				acc.AddChunk(s.Current())
			}
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
			msg, finish = acc.Choices[0].Message, acc.Choices[0].FinishReason
		}
		if finish != "tool_calls" || len(msg.ToolCalls) != 1 || msg.ToolCalls[0].Function.Name != "get_weather" ||
			!strings.HasPrefix(msg.ToolCalls[0].ID, "toolu_") || !json.Valid([]byte(msg.ToolCalls[0].Function.Arguments)) {
			t.Fatalf("stream %v: finish %q, tool calls %+v; want one get_weather call", stream, finish, msg.ToolCalls)
		}
		var args map[string]any
		if err := json.Unmarshal([]byte(msg.ToolCalls[0].Function.Arguments), &args); err != nil || args["city"] == nil {
			t.Fatalf("stream %v: arguments %q do not follow the schema", stream, msg.ToolCalls[0].Function.Arguments)
		}

		next := p
		next.Messages = append(append([]openai.ChatCompletionMessageParamUnion(nil), p.Messages...),
			msg.ToParam(), openai.ToolMessage("18C and sunny", msg.ToolCalls[0].ID))
		r, err := c.Chat.Completions.New(ctx, next)
		if err != nil {
			t.Fatal(err)
		}
		if r.Choices[0].FinishReason != "stop" || r.Choices[0].Message.Content == "" || len(r.Choices[0].Message.ToolCalls) != 0 {
			t.Fatalf("after the tool's answer: %+v", r.Choices[0])
		}
		_, body := seen.last(t)
		var sent struct {
			Messages []struct {
				Role    string `json:"role"`
				Content []struct {
					Type      string `json:"type"`
					ID        string `json:"id"`
					Name      string `json:"name"`
					ToolUseID string `json:"tool_use_id"`
				} `json:"content"`
			} `json:"messages"`
		}
		if err := json.Unmarshal(body, &sent); err != nil || len(sent.Messages) != 3 {
			t.Fatalf("the upstream got %s (%v)", body, err)
		}
		a, u := sent.Messages[1], sent.Messages[2]
		if a.Role != "assistant" || len(a.Content) != 1 || a.Content[0].Type != "tool_use" || a.Content[0].ID != msg.ToolCalls[0].ID ||
			a.Content[0].Name != "get_weather" || u.Role != "user" || u.Content[0].Type != "tool_result" || u.Content[0].ToolUseID != msg.ToolCalls[0].ID {
			t.Fatalf("the tool round trip reached the upstream as %s", body)
		}
	}
}

// TestClaudeStopReasons: Anthropic's stop reasons read as chat's finish
// reasons, buffered and streamed.
func TestClaudeStopReasons(t *testing.T) {
	_, up, _ := startClaudeMock(t, mock.Options{Chunks: 8})
	g := startGateway(t, claudeYAML(up), "")
	c := g.client(g.newKey("all").Key)
	f := func(name string, edit func(p *openai.ChatCompletionNewParams), want string) {
		t.Helper()
		p := chatParams("claude", "go")
		edit(&p)
		r, err := c.Chat.Completions.New(context.Background(), p)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := r.Choices[0].FinishReason; got != want {
			t.Fatalf("%s: finish_reason %q, want %q", name, got, want)
		}
		s := c.Chat.Completions.NewStreaming(context.Background(), p)
		var acc openai.ChatCompletionAccumulator
		for s.Next() {
			acc.AddChunk(s.Current())
		}
		if err := s.Err(); err != nil {
			t.Fatalf("%s stream: %v", name, err)
		}
		if got := acc.Choices[0].FinishReason; got != want {
			t.Fatalf("%s stream: finish_reason %q, want %q", name, got, want)
		}
	}
	f("end_turn", func(*openai.ChatCompletionNewParams) {}, "stop")
	f("max_tokens", func(p *openai.ChatCompletionNewParams) { p.MaxTokens = openai.Int(3) }, "length")
	f("max_completion_tokens", func(p *openai.ChatCompletionNewParams) { p.MaxCompletionTokens = openai.Int(2) }, "length")
	f("stop_sequence", func(p *openai.ChatCompletionNewParams) {
		p.Stop = openai.ChatCompletionNewParamsStopUnion{OfStringArray: []string{"dolor"}}
	}, "stop")
	f("tool_use", func(p *openai.ChatCompletionNewParams) {
		p.Tools = []openai.ChatCompletionToolUnionParam{weatherTool()}
		p.ToolChoice = openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("required")}
	}, "tool_calls")
}

// TestClaudeRefusedField: a chat field Anthropic cannot honour is a 400
// naming it, in OpenAI's shape, and nothing reaches the upstream.
func TestClaudeRefusedField(t *testing.T) {
	_, up, seen := startClaudeMock(t, mock.Options{})
	g := startGateway(t, claudeYAML(up), "")
	k := g.newKey("all")
	f := func(body, param string) {
		t.Helper()
		status, hdr, b := g.do("POST", "/v1/chat/completions", k.Key, []byte(body))
		wantErrorBody(t, status, hdr, b, http.StatusBadRequest, "unsupported_parameter")
		var e struct {
			Error struct {
				Param   *string `json:"param"`
				Message string  `json:"message"`
				Type    string  `json:"type"`
			} `json:"error"`
		}
		if err := json.Unmarshal(b, &e); err != nil || e.Error.Param == nil || *e.Error.Param != param ||
			e.Error.Type != "invalid_request_error" || !strings.Contains(e.Error.Message, "'"+param+"'") || !strings.Contains(e.Error.Message, "Anthropic") {
			t.Fatalf("%s: %s; want param %q named in the message", body, b, param)
		}
	}
	f(`{"model":"claude","n":2,"messages":[{"role":"user","content":"hi"}]}`, "n")
	f(`{"model":"claude","logprobs":true,"messages":[{"role":"user","content":"hi"}]}`, "logprobs")
	f(`{"model":"claude","messages":[{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"[1]"}}]}]}`,
		"messages[0].tool_calls[0].function.arguments")
	if n := seen.count(); n != 0 {
		t.Fatalf("the upstream got %d requests", n)
	}
	// Through the SDK: its typed error carries the param.
	p := chatParams("claude", "hi")
	p.N = openai.Int(2)
	_, err := g.client(k.Key).Chat.Completions.New(context.Background(), p)
	wantAPIError(t, err, http.StatusBadRequest, "invalid_request_error", "unsupported_parameter")
	var apiErr *openai.Error
	if asAPIError(err, &apiErr); apiErr.Param != "n" {
		t.Fatalf("param %q, want n", apiErr.Param)
	}
}

// TestClaudeFailover: an overloaded Anthropic upstream (529) fails over
// like a 5xx, to another anthropic route or to an openai one, and an
// openai route's 500 fails over to an anthropic one: each attempt sends
// the body its route speaks. The failed route's health counts the failure.
func TestClaudeFailover(t *testing.T) {
	for _, tc := range []struct {
		name             string
		failKind, okKind string
	}{{"anthropic to anthropic", "anthropic", "anthropic"}, {"anthropic to openai", "anthropic", "openai"}, {"openai to anthropic", "openai", "anthropic"}} {
		t.Run(tc.name, func(t *testing.T) {
			start := func(kind string, status int) (*mock.Server, string) {
				if kind == "anthropic" {
					m, url, _ := startClaudeMock(t, mock.Options{Chunks: 5, Status: status})
					return m, url
				}
				return startMock(t, mock.Options{Chunks: 5, Status: status})
			}
			failStatus := map[string]int{"anthropic": mock.StatusOverloaded, "openai": http.StatusInternalServerError}[tc.failKind]
			bad, badURL := start(tc.failKind, failStatus)
			good, goodURL := start(tc.okKind, 0)
			g := startGateway(t, badFirstYAML(tc.failKind, badURL, tc.okKind, goodURL), "")
			c := g.client(g.newKey("all").Key)
			sent := 0
			for bad.Requests() == 0 && sent < 50 {
				sent++
				r, err := c.Chat.Completions.New(context.Background(), chatParams("claude", "hello"))
				if err != nil {
					t.Fatalf("request %d: %v", sent, err)
				}
				// (An openai route's answer names the model as its upstream does.)
				if n := len(strings.Fields(r.Choices[0].Message.Content)); n != 5 || (tc.okKind == "anthropic" && r.Model != "claude") {
					t.Fatalf("request %d: model %q, content %q", sent, r.Model, r.Choices[0].Message.Content)
				}
			}
			if bad.Requests() == 0 || good.Requests() != uint64(sent) {
				t.Fatalf("%d requests: the failing upstream got %d, the good one %d; want every request answered by the good one after a failover",
					sent, bad.Requests(), good.Requests())
			}
			if n := g.srv.routing.Load().models.lookup([]byte("claude")).routes.Route(0).Health().ConsecutiveFailures(); n < 1 {
				t.Fatalf("the failing route's health counts %d failures", n)
			}
		})
	}
}

// badFirstYAML is the config of a model "claude" with two routes, "bad"
// and "good", of the given kinds and URLs; the bad one's weight makes it
// the usual first pick.
func badFirstYAML(badKind, badURL, goodKind, goodURL string) string {
	return fmt.Sprintf(`
upstreams:
  - {name: bad, kind: %s, base_url: %q, api_key: %q}
  - {name: good, kind: %s, base_url: %q, api_key: %q}
models:
  - name: claude
    routes: [{upstream: bad, model: claude-sonnet-4-6, weight: 100}, {upstream: good, model: claude-sonnet-4-6}]
    max_output_tokens: 64
plans:
  - {name: all, models: ["*"]}
`, badKind, badURL, claudeKey, goodKind, goodURL, claudeKey)
}

// TestClaudeErrorsMapped: an Anthropic client error keeps its status, and
// its type and words reach the client in OpenAI's shape, which the SDK
// types; the last route's 529 is the gateway's upstream failure, as any
// 5xx; the upstream's 401 (the gateway's key refused) is the gateway's
// credential error, never the client's invalid_api_key.
func TestClaudeErrorsMapped(t *testing.T) {
	f := func(name string, o mock.Options, key, routeModel string, status int, typ, code, words string) {
		t.Helper()
		o.Chunks = 3
		_, up, _ := startClaudeMock(t, o)
		yaml := strings.Replace(claudeYAML(up), claudeKey, key, 1)
		yaml = strings.Replace(yaml, "model: claude-sonnet-4-6", "model: "+routeModel, 1)
		g := startGateway(t, yaml, "")
		k := g.newKey("all").Key
		for _, stream := range []bool{false, true} {
			var err error
			if stream {
				s := g.client(k).Chat.Completions.NewStreaming(context.Background(), chatParams("claude", "hi"))
				for s.Next() {
				}
				err = s.Err()
			} else {
				_, err = g.client(k).Chat.Completions.New(context.Background(), chatParams("claude", "hi"))
			}
			wantAPIError(t, err, status, typ, code)
			var apiErr *openai.Error
			asAPIError(err, &apiErr)
			if !strings.Contains(apiErr.Message, words) {
				t.Fatalf("%s: message %q, want it to say %q", name, apiErr.Message, words)
			}
		}
	}
	f("400", mock.Options{Status: 400}, claudeKey, "claude-sonnet-4-6", 400, "invalid_request_error", "invalid_request_error", "told to fail with status 400")
	f("404 model", mock.Options{}, claudeKey, "claude-nonexistent", 404, "not_found_error", "not_found_error", "model")
	f("429", mock.Options{Status: 429}, claudeKey, "claude-sonnet-4-6", 429, "rate_limit_error", "rate_limit_error", "status 429")
	f("529", mock.Options{Status: mock.StatusOverloaded}, claudeKey, "claude-sonnet-4-6", 502, "server_error", "upstream_error", "upstream status 529")
	f("401", mock.Options{}, "sk-ant-wrong-key-0000000000000000", "claude-sonnet-4-6", 502, "server_error", "upstream_error", "provider credentials")
}

// TestClaudeOtherEndpoints: completions, embeddings and responses cannot
// be translated to Anthropic's Messages API. A model served only there is
// a 400 that says so and where to go; a model that also has an openai
// route is served by it alone on those endpoints, whatever the weights.
func TestClaudeOtherEndpoints(t *testing.T) {
	claude, claudeURL, _ := startClaudeMock(t, mock.Options{})
	openaiMock, openaiURL := startMock(t, mock.Options{Chunks: 3})
	g := startGateway(t, fmt.Sprintf(`
upstreams:
  - {name: anthropic, kind: anthropic, base_url: %q, api_key: %q}
  - {name: openai, base_url: %q}
models:
  - {name: claude, routes: [{upstream: anthropic, model: claude-sonnet-4-6}]}
  - {name: mixed, routes: [{upstream: anthropic, model: claude-sonnet-4-6, weight: 1000}, {upstream: openai, model: mock}]}
plans:
  - {name: all, models: ["*"]}
`, claudeURL, claudeKey, openaiURL), "")
	k := g.newKey("all").Key
	bodies := map[string]string{
		"/v1/completions": `{"model":%q,"prompt":"hi","max_tokens":3}`,
		"/v1/embeddings":  `{"model":%q,"input":"hi"}`,
		"/v1/responses":   `{"model":%q,"input":"hi"}`,
		// A follow-up or a compaction cannot take an anthropic route either.
		"/v1/responses/input_tokens": `{"model":%q,"input":"hi"}`,
		"/v1/responses/compact":      `{"model":%q,"input":"hi"}`,
	}
	for path, body := range bodies {
		status, hdr, b := g.do("POST", path, k, []byte(fmt.Sprintf(body, "claude")))
		wantErrorBody(t, status, hdr, b, http.StatusBadRequest, "unsupported_model")
		if !strings.Contains(string(b), "Anthropic's Messages API") || !strings.Contains(string(b), "/v1/chat/completions") ||
			!strings.Contains(string(b), "/v1/messages") {
			t.Fatalf("%s: %s; want it to say where the model is served", path, b)
		}
		for range 5 {
			if status, _, b := g.do("POST", path, k, []byte(fmt.Sprintf(body, "mixed"))); status != http.StatusOK {
				t.Fatalf("%s to the mixed model: %d %s", path, status, b)
			}
		}
	}
	if claude.Requests() != 0 || openaiMock.Requests() != 25 {
		t.Fatalf("the anthropic upstream got %d requests, the openai one %d; want 0 and 25", claude.Requests(), openaiMock.Requests())
	}
	// Chat completions to the mixed model may take either route.
	if _, err := g.client(k).Chat.Completions.New(context.Background(), chatParams("mixed", "hi")); err != nil {
		t.Fatal(err)
	}
}

// claudeStreamUsage streams body on a key of its own to the end, with the
// usage chunk, and returns the usage the client read.
func claudeStreamUsage(t *testing.T, g *gateway, prompt string) usd.Tokens {
	t.Helper()
	p := chatParams("claude", prompt)
	p.StreamOptions.IncludeUsage = openai.Bool(true)
	s := g.client(g.newKey("all").Key).Chat.Completions.NewStreaming(context.Background(), p)
	var used usd.Tokens
	for s.Next() {
		if ch := s.Current(); ch.Usage.PromptTokens > 0 {
			used = sdkTokens(ch.Usage)
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	return used
}

// TestClaudeDisconnectBilledExactly: a client that leaves a translated
// stream after three events is billed what Anthropic finally reports (the
// gateway drains the stream): the input, cache reads and cache writes of
// message_start and message_delta's cumulative output, each at its price,
// to the pico-dollar.
func TestClaudeDisconnectBilledExactly(t *testing.T) {
	m, up, _ := startClaudeMock(t, mock.Options{Chunks: 40, ChunkInterval: 5 * time.Millisecond,
		Anthropic: mock.AnthropicOptions{CacheReadInputTokens: 700, CacheCreationInputTokens: 1100}})
	g := startGateway(t, claudeYAML(up), "")
	full := claudeStreamUsage(t, g, "go")
	if full.Completion != 40 || full.Cached != 700 || full.Prompt <= 1800 {
		t.Fatalf("a whole stream reads usage %+v", full)
	}
	k := g.newKey("all")
	// The client leaves mid-stream.
	g.leaveStream("/v1/chat/completions", "Authorization", "Bearer "+k.Key,
		`{"model":"claude","stream":true,"messages":[{"role":"user","content":"go"}]}`, "data: ", 3)
	full.CacheWrite = 1100
	wantBilled(t, g, k.ID, full)
	if m.Requests() != 2 {
		t.Fatalf("upstream served %d requests", m.Requests())
	}
}

// TestClaudeStreamCuts: a translated stream that breaks ends with an
// OpenAI-shaped error event, as a chat stream does, and is billed the
// input Anthropic reported with an estimate of the output relayed: an
// upstream connection cut mid-stream, an Anthropic error event (overloaded
// mid-answer) passed on with its type, and the monthly budget running out.
func TestClaudeStreamCuts(t *testing.T) {
	t.Run("upstream cut", func(t *testing.T) {
		_, up, _ := startClaudeMock(t, mock.Options{Chunks: 30, FailAfterChunks: 5})
		g := startGateway(t, claudeYAML(up), "")
		k := g.newKey("all")
		got := rawStream(t, g.url, k.Key, `{"model":"claude","stream":true,"messages":[{"role":"user","content":"go"}]}`)
		if !strings.HasSuffix(got, `"type":"server_error","param":null,"code":"upstream_error"}}`+"\n\n") || strings.Contains(got, "[DONE]") {
			t.Fatalf("stream does not end with the error event: %q", got)
		}
		u := g.cachedUsageOf(k.ID)
		prompt := anthropicPromptTokens(t, g, "go")
		if u.Requests != 1 || u.Prompt != prompt || u.Completion < 5 || u.Completion > 9 {
			t.Fatalf("billed %+v; want the prompt's %d tokens and an estimate of the 5 words produced", u, prompt)
		}
	})
	t.Run("error event", func(t *testing.T) {
		_, up, _ := startClaudeMock(t, mock.Options{Chunks: 30, Anthropic: mock.AnthropicOptions{StreamErrorAfter: 3}})
		g := startGateway(t, claudeYAML(up), "")
		k := g.newKey("all")
		s := g.client(k.Key).Chat.Completions.NewStreaming(context.Background(), chatParams("claude", "go"))
		chunks := 0
		for s.Next() {
			chunks++
		}
		if err := s.Err(); err == nil || !strings.Contains(err.Error(), "overloaded_error") || chunks != 4 {
			t.Fatalf("after %d chunks: %v; want the role chunk, 3 words and then the overloaded_error", chunks, err)
		}
		if u := g.cachedUsageOf(k.ID); u.Requests != 1 || u.Prompt == 0 || u.Completion < 3 || u.Completion > 6 {
			t.Fatalf("billed %+v; want the prompt and an estimate of the 3 words", u)
		}
	})
	t.Run("budget", func(t *testing.T) {
		m, up, _ := startClaudeMock(t, mock.Options{Chunks: 20000})
		// At $2 of output per million tokens, $0.01 buys 5000 tokens.
		yaml := strings.Replace(claudeYAML(up), "max_output_tokens: 64", "max_output_tokens: 100000", 1)
		yaml = strings.Replace(yaml, claudePriceYAML, "{input_per_mtok: 1, output_per_mtok: 2}", 1)
		yaml = strings.Replace(yaml, `{name: all, models: ["*"]}`, `{name: month, models: ["*"], monthly_usd: 0.01}`, 1)
		g := startGateway(t, yaml, "")
		k := g.newKey("month")
		s := g.client(k.Key).Chat.Completions.NewStreaming(context.Background(), chatParams("claude", "go on forever"))
		var acc openai.ChatCompletionAccumulator
		chunks := 0
		for s.Next() {
			acc.AddChunk(s.Current())
			chunks++
		}
		if err := s.Err(); err == nil || !strings.Contains(err.Error(), "budget_exceeded") {
			t.Fatalf("after %d chunks: err %v, want the budget_exceeded error event", chunks, err)
		}
		// Words are estimated at 4 bytes a token (the mock's are 3-13).
		words := len(strings.Fields(acc.Choices[0].Message.Content))
		if words < 2500 || words >= 5000 || words != chunks-1 {
			t.Fatalf("got %d chunks (%d words); want the ~3000 a $0.01 budget buys", chunks, words)
		}
		var u struct {
			SpendUSD    float64 `json:"spend_usd"`
			ReservedUSD float64 `json:"reserved_usd"`
			Completion  int64   `json:"completion_tokens"`
		}
		g.admin("GET", "/v1/keys/"+k.ID+"/usage", nil, http.StatusOK, &u)
		if u.SpendUSD > 0.01 || u.SpendUSD < 0.01-0.0001 || u.ReservedUSD != 0 || u.Completion < int64(words) {
			t.Fatalf("billed $%v (%d tokens) with $%v reserved; want the %d words relayed, within a chunk of the $0.01 cap",
				u.SpendUSD, u.Completion, u.ReservedUSD, words)
		}
		if m.Requests() != 1 {
			t.Fatalf("upstream saw %d requests", m.Requests())
		}
	})
}

// TestClaudeProviderKeyNeverShown: the gateway's Anthropic key reaches the
// upstream in x-api-key and nowhere else: not in any answer to the client
// (success, a translated error, the credential error when Anthropic
// refuses it, a stream) nor in any log line.
func TestClaudeProviderKeyNeverShown(t *testing.T) {
	_, good, _ := startClaudeMock(t, mock.Options{Chunks: 3})
	_, refusing, _ := startClaudeMock(t, mock.Options{Chunks: 3})
	const wrongKey = "sk-ant-ours-but-REVOKED-9876543210fedcba"
	var logs logBuffer
	g := startNodeLogging(t, fmt.Sprintf(`log: {level: debug}
store: {path: %s}
upstreams:
  - {name: anthropic, kind: anthropic, base_url: %q, api_key: %q}
  - {name: revoked, kind: anthropic, base_url: %q, api_key: %q}
models:
  - {name: claude, routes: [{upstream: anthropic, model: claude-sonnet-4-6}], max_output_tokens: 64}
  - {name: missing, routes: [{upstream: anthropic, model: claude-nonexistent}], max_output_tokens: 64}
  - {name: revoked, routes: [{upstream: revoked, model: claude-sonnet-4-6}], max_output_tokens: 64}
plans:
  - {name: all, models: ["*"]}
`, t.TempDir(), good, claudeKey, refusing, wrongKey), &logs)
	k := g.newKey("all").Key
	var answers []string
	for _, body := range []string{
		`{"model":"claude","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"missing","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"revoked","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"revoked","stream":true,"messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"claude","n":3,"messages":[{"role":"user","content":"hi"}]}`,
	} {
		status, hdr, b := g.do("POST", "/v1/chat/completions", k, []byte(body))
		answers = append(answers, fmt.Sprint(status, hdr, string(b)))
	}
	answers = append(answers, rawStream(t, g.url, k, `{"model":"claude","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	if !strings.Contains(answers[2], "provider credentials") {
		t.Fatalf("the refused key's answer: %s", answers[2])
	}
	g.stop() // flushes the log
	for _, secret := range []string{claudeKey, wrongKey, "PROVIDERKEY", "REVOKED-9876"} {
		for i, a := range answers {
			if strings.Contains(a, secret) {
				t.Fatalf("answer %d quotes the provider key: %s", i, a)
			}
		}
		if strings.Contains(logs.String(), secret) {
			t.Fatalf("the log quotes the provider key: %s", logs.String())
		}
	}
	if !strings.Contains(logs.String(), "upstream refused the gateway's credentials") {
		t.Fatalf("the log does not say the key was refused: %s", logs.String())
	}
}

// TestClaudeErrorWordsNeverQuoteTheKey: an upstream (or a proxy in front of
// Anthropic) whose 4xx error message quotes the x-api-key it was sent:
// the client gets the status, the type and the words, the key redacted.
func TestClaudeErrorWordsNeverQuoteTheKey(t *testing.T) {
	up := startUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(http.StatusBadRequest)
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"type":"error","error":{"type":"invalid_request_error","message":"key ` +
			string(ctx.Request.Header.Peek("x-api-key")) + ` may not ask this"}}`)
	})
	g := startGateway(t, claudeYAML(up), "")
	status, hdr, b := g.do("POST", "/v1/chat/completions", g.newKey("all").Key, []byte(`{"model":"claude","messages":[{"role":"user","content":"hi"}]}`))
	wantErrorBody(t, status, hdr, b, http.StatusBadRequest, "invalid_request_error")
	if strings.Contains(string(b), "PROVIDERKEY") || !strings.Contains(string(b), "[redacted]") || !strings.Contains(string(b), "may not ask this") {
		t.Fatalf("answer %s: want the upstream's words with the key redacted", b)
	}
}

// TestClaudeSamplingParameters: temperature and top_p, which OpenAI clients
// send routinely, reach Claude: a translated request goes as API version
// 2023-06-01, which takes them (2026-10-21, the SDKs' current version,
// refuses them even at their defaults, and the mock does too). An operator
// who pins anthropic_version: 2026-10-21 gets a 400 naming the field, and
// nothing is sent.
func TestClaudeSamplingParameters(t *testing.T) {
	_, up, seen := startClaudeMock(t, mock.Options{})
	pinned := strings.Replace(claudeYAML(up), `kind: anthropic,`, `kind: anthropic, anthropic_version: "2026-10-21",`, 1)
	body := []byte(`{"model":"claude","temperature":0.5,"top_p":0.9,"messages":[{"role":"user","content":"hi"}]}`)

	g := startGateway(t, claudeYAML(up), "")
	status, _, b := g.do("POST", "/v1/chat/completions", g.newKey("all").Key, body)
	if status != http.StatusOK {
		t.Fatalf("default version: %d %s; want the sampling parameters taken", status, b)
	}
	if n := seen.count(); n != 1 {
		t.Fatalf("the upstream got %d requests, want 1", n)
	}
	seen.mu.Lock()
	version, sent := seen.headers[0].Get("anthropic-version"), string(seen.bodies[0])
	seen.mu.Unlock()
	if version != "2023-06-01" || !strings.Contains(sent, `"temperature":0.5`) || !strings.Contains(sent, `"top_p":0.9`) {
		t.Fatalf("sent anthropic-version %q with %s; want 2023-06-01 and both parameters", version, sent)
	}

	g2 := startGateway(t, pinned, "")
	status, hdr, b := g2.do("POST", "/v1/chat/completions", g2.newKey("all").Key, body)
	wantErrorBody(t, status, hdr, b, http.StatusBadRequest, "unsupported_parameter")
	if !strings.Contains(string(b), `"param":"temperature"`) {
		t.Fatalf("pinned 2026-10-21: %s; want param temperature", b)
	}
	if n := seen.count(); n != 1 {
		t.Fatalf("the upstream got %d requests, want none more", n-1)
	}
}
