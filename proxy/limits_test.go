package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/internal/mock"
)

// limitsConfig serves mock (priced $1/$2 per million tokens) on plans with
// each kind of limit.
func limitsConfig(up string) string {
	return fmt.Sprintf(`
upstreams:
  - {name: up, base_url: %[1]q}
  - {name: anth, kind: anthropic, base_url: %[1]q, api_key: %[2]q}
models:
  - {name: mock, routes: [{upstream: up}], price: {input_per_mtok: 1, output_per_mtok: 2}, max_output_tokens: 1000}
  - {name: claude, routes: [{upstream: anth, model: mock}], price: {input_per_mtok: 1, output_per_mtok: 2}, max_output_tokens: 1000}
plans:
  - {name: rpm3, models: ["*"], rpm: 3, tpm: 100000}
  - {name: rpm60, models: ["*"], rpm: 60}
  - {name: capped, models: ["*"], max_request_usd: 0.001}
  - {name: monthly, models: ["*"], monthly_usd: 0.02}
  - {name: open, models: ["*"]}
`, up, providerKey)
}

// countingClient is the SDK with n counting its HTTP attempts.
func (g *gateway) countingClient(key string, retries int, n *atomic.Int64) *openai.Client {
	c := openai.NewClient(option.WithBaseURL(g.url+"/v1"), option.WithAPIKey(key), option.WithMaxRetries(retries),
		option.WithMiddleware(func(r *http.Request, next option.MiddlewareNext) (*http.Response, error) {
			n.Add(1)
			return next(r)
		}))
	return &c
}

const smallChat = `{"model":"mock","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`

func TestRateLimitHeadersAnd429(t *testing.T) {
	_, up := startMock(t, mock.Options{})
	g := startGateway(t, limitsConfig(up), "")
	key := g.newKey("rpm3").Key
	for i := range 3 {
		st, hdr, body := g.do("POST", "/v1/chat/completions", key, []byte(smallChat))
		if st != 200 {
			t.Fatalf("request %d: %d %s", i, st, body)
		}
		if got := hdr.Get("X-Ratelimit-Remaining-Requests"); got != strconv.Itoa(2-i) {
			t.Fatalf("request %d: remaining %q", i, got)
		}
		if hdr.Get("X-Ratelimit-Limit-Requests") != "3" || hdr.Get("X-Ratelimit-Limit-Tokens") != "100000" ||
			hdr.Get("X-Ratelimit-Reset-Requests") == "" || hdr.Get("X-Ratelimit-Remaining-Tokens") == "" {
			t.Fatalf("request %d: headers %v", i, hdr)
		}
	}
	st, hdr, body := g.do("POST", "/v1/chat/completions", key, []byte(smallChat))
	wantErrorBody(t, st, hdr, body, 429, "rate_limit_exceeded")
	if !strings.Contains(string(body), `"type":"requests"`) {
		t.Fatalf("429 body %s", body)
	}
	secs, _ := strconv.Atoi(hdr.Get("Retry-After"))
	ms, _ := strconv.Atoi(hdr.Get("Retry-After-Ms"))
	if secs < 1 || ms < 19000 || ms > 20000 || secs != (ms+999)/1000 {
		t.Fatalf("retry-after %q, retry-after-ms %q; want about 20s", hdr.Get("Retry-After"), hdr.Get("Retry-After-Ms"))
	}
}

// TestSDKWaitsOutA429: the official SDK retries a 429 after the advertised
// time and then succeeds. What is checked is the order of events each
// attempt saw (a 429 advertising a wait, then a success sent no sooner than
// that wait), not how long the whole call took.
func TestSDKWaitsOutA429(t *testing.T) {
	_, up := startMock(t, mock.Options{})
	g := startGateway(t, limitsConfig(up), "")
	key := g.newKey("rpm60").Key
	// The whole minute's burst, and the tokens refilled while it went: on a
	// loaded machine sending 60 requests can take more than the second a
	// token takes to refill.
	for sent := 1; ; sent++ {
		st, _, body := g.do("POST", "/v1/chat/completions", key, []byte(smallChat))
		if st == 429 {
			break
		}
		if st != 200 || sent > 1000 {
			t.Fatalf("request %d: %d %s; want 200s until the burst is spent, then a 429", sent, st, body)
		}
	}
	type attempt struct {
		sent, answered time.Time
		status         int
		retryAfterMs   int
	}
	var mu sync.Mutex
	var attempts []attempt
	c := openai.NewClient(option.WithBaseURL(g.url+"/v1"), option.WithAPIKey(key), option.WithMaxRetries(2),
		option.WithMiddleware(func(r *http.Request, next option.MiddlewareNext) (*http.Response, error) {
			a := attempt{sent: time.Now()}
			resp, err := next(r)
			a.answered = time.Now()
			if err == nil {
				a.status = resp.StatusCode
				a.retryAfterMs, _ = strconv.Atoi(resp.Header.Get("Retry-After-Ms"))
			}
			mu.Lock()
			attempts = append(attempts, a)
			mu.Unlock()
			return resp, err
		}))
	// A token can still refill between the burst and the call (it is one
	// request, but a loaded machine may pause for a second): a call that
	// succeeds at once spent it, so the next one meets the 429.
	for range 3 {
		mu.Lock()
		attempts = attempts[:0]
		mu.Unlock()
		if _, err := c.Chat.Completions.New(context.Background(), chatParams("mock", "hi")); err != nil {
			t.Fatalf("after retrying: %v", err)
		}
		mu.Lock()
		n := len(attempts)
		mu.Unlock()
		if n != 1 {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(attempts) != 2 || attempts[0].status != 429 || attempts[1].status != 200 {
		t.Fatalf("attempts %+v; want a 429 then a 200", attempts)
	}
	// One token refills per second; the 429 said how long and the SDK waited
	// it out: a lower bound set by the SDK's timer, which load only lengthens.
	wait := time.Duration(attempts[0].retryAfterMs) * time.Millisecond
	if wait <= 0 || wait > time.Second {
		t.Fatalf("retry-after-ms %d; want up to the second a token takes", attempts[0].retryAfterMs)
	}
	if gap := attempts[1].sent.Sub(attempts[0].answered); gap < wait {
		t.Fatalf("retried %v after the 429, before the advertised %v", gap, wait)
	}
}

func TestPerRequestCap402NotRetried(t *testing.T) {
	m, up := startMock(t, mock.Options{})
	g := startGateway(t, limitsConfig(up), "")
	key := g.newKey("capped").Key // $0.001 per request: 500 output tokens at $2/M
	var attempts atomic.Int64
	c := g.countingClient(key, 2, &attempts)
	p := chatParams("mock", "hi")
	p.MaxTokens = openai.Int(600)
	_, err := c.Chat.Completions.New(context.Background(), p)
	wantAPIError(t, err, 402, "insufficient_quota", "budget_exceeded")
	if attempts.Load() != 1 || m.Requests() != 0 {
		t.Fatalf("%d attempts, %d upstream requests; want 1 and 0", attempts.Load(), m.Requests())
	}
	p.MaxTokens = openai.Int(400)
	if _, err := c.Chat.Completions.New(context.Background(), p); err != nil {
		t.Fatalf("within the cap: %v", err)
	}
	// n scales the worst case: 3 choices of 400 tokens are over the cap.
	p.N = openai.Int(3)
	_, err = c.Chat.Completions.New(context.Background(), p)
	wantAPIError(t, err, 402, "insufficient_quota", "budget_exceeded")
	// Without max_tokens the model's maximum (1000) counts.
	_, err = c.Chat.Completions.New(context.Background(), chatParams("mock", "hi"))
	wantAPIError(t, err, 402, "insufficient_quota", "budget_exceeded")
}

func TestBadLimitsInput(t *testing.T) {
	_, up := startMock(t, mock.Options{})
	g := startGateway(t, limitsConfig(up), "")
	key := g.newKey("open").Key
	f := func(body string, status int, code string) {
		t.Helper()
		st, hdr, b := g.do("POST", "/v1/chat/completions", key, []byte(body))
		wantErrorBody(t, st, hdr, b, status, code)
	}
	f(`{"model":"mock","max_tokens":-1,"messages":[]}`, 400, "invalid_value")
	f(`{"model":"mock","max_tokens":1e9,"messages":[]}`, 400, "invalid_value")
	f(`{"model":"mock","max_tokens":1001,"messages":[]}`, 400, "invalid_value")
	f(`{"model":"mock","n":500,"messages":[]}`, 400, "invalid_value")
}

// TestMonthlyCapUnderConcurrency: 100 requests at once against a budget with
// room for a few: the recorded spend ends at or under the cap, and those
// refused get 402 with the reset time.
func TestMonthlyCapUnderConcurrency(t *testing.T) {
	_, up := startMock(t, mock.Options{Chunks: 1000})
	g := startGateway(t, limitsConfig(up), "")
	k := g.newKey("monthly") // $0.02; each request's worst case is about $0.002
	var wg sync.WaitGroup
	var ok, refused atomic.Int64
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, _, body := g.do("POST", "/v1/chat/completions", k.Key,
				[]byte(`{"model":"mock","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}`))
			switch {
			case st == 200:
				ok.Add(1)
			case st == 402 && strings.Contains(string(body), "resets at "+time.Now().UTC().AddDate(0, 1, 1-time.Now().UTC().Day()).Format("2006-01-02")):
				refused.Add(1)
			default:
				t.Errorf("%d %s", st, body)
			}
		}()
	}
	wg.Wait()
	var u struct {
		Requests     int64   `json:"requests"`
		SpendUSD     float64 `json:"spend_usd"`
		ReservedUSD  float64 `json:"reserved_usd"`
		MonthlyUSD   float64 `json:"monthly_usd"`
		RemainingUSD float64 `json:"remaining_usd"`
		Models       []struct {
			Model    string  `json:"model"`
			Requests int64   `json:"requests"`
			SpendUSD float64 `json:"spend_usd"`
		} `json:"models"`
	}
	g.admin("GET", "/v1/keys/"+k.ID+"/usage", nil, http.StatusOK, &u)
	if ok.Load()+refused.Load() != 100 || ok.Load() == 0 || u.Requests != ok.Load() {
		t.Fatalf("%d served, %d refused, %d recorded", ok.Load(), refused.Load(), u.Requests)
	}
	if u.SpendUSD > 0.02 || u.SpendUSD < 0.016 || u.ReservedUSD != 0 || u.MonthlyUSD != 0.02 {
		t.Fatalf("spend $%v reserved $%v of $%v: want at most the cap and close to it", u.SpendUSD, u.ReservedUSD, u.MonthlyUSD)
	}
	if len(u.Models) != 1 || u.Models[0].Model != "mock" || u.Models[0].Requests != u.Requests {
		t.Fatalf("by model: %+v", u.Models)
	}
}

func TestUsageAPI(t *testing.T) {
	_, up := startMock(t, mock.Options{Chunks: 7})
	g := startGateway(t, limitsConfig(up), "")
	k := g.newKey("open")
	other := g.newKey("open")
	c := g.client(k.Key)
	res, err := c.Chat.Completions.New(context.Background(), chatParams("mock", "Tell me"))
	if err != nil {
		t.Fatal(err)
	}
	// Streams bill too: with include_usage the upstream's count is exact.
	p := chatParams("mock", "Tell me")
	p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	s := c.Chat.Completions.NewStreaming(context.Background(), p)
	for s.Next() {
	}
	if s.Err() != nil {
		t.Fatal(s.Err())
	}
	// The key itself may read its own usage, not another key's.
	var u map[string]json.RawMessage
	st, _, body := g.do("GET", "/v1/keys/"+k.ID+"/usage", k.Key, nil)
	if st != 200 || json.Unmarshal(body, &u) != nil {
		t.Fatalf("own usage: %d %s", st, body)
	}
	want := fmt.Sprintf(`%d`, 2*res.Usage.CompletionTokens)
	if string(u["requests"]) != "2" || string(u["completion_tokens"]) != want || string(u["monthly_usd"]) != "null" {
		t.Fatalf("usage %s; want 2 requests and %s completion tokens", body, want)
	}
	cost := float64(res.Usage.PromptTokens)*1e-6 + float64(res.Usage.CompletionTokens)*2e-6
	if got, _ := strconv.ParseFloat(string(u["spend_usd"]), 64); got < 2*cost*0.999 || got > 2*cost*1.001 {
		t.Fatalf("spend %s, want %v", u["spend_usd"], 2*cost)
	}
	st, hdr, body := g.do("GET", "/v1/keys/"+other.ID+"/usage", k.Key, nil)
	wantErrorBody(t, st, hdr, body, 403, "admin_key_required")
}

// TestMissingUpstreamUsageIsEstimated: an upstream that reports no usage is
// billed an estimate, never nothing.
func TestMissingUpstreamUsageIsEstimated(t *testing.T) {
	up := startUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"` + strings.Repeat("word ", 40) + `"},"finish_reason":"stop"}]}`)
	})
	g := startGateway(t, limitsConfig(up), "")
	k := g.newKey("open")
	if st, _, body := g.do("POST", "/v1/chat/completions", k.Key, []byte(smallChat)); st != 200 {
		t.Fatalf("%d %s", st, body)
	}
	var u struct {
		Requests   int64   `json:"requests"`
		Prompt     int64   `json:"prompt_tokens"`
		Completion int64   `json:"completion_tokens"`
		Spend      float64 `json:"spend_usd"`
	}
	g.admin("GET", "/v1/keys/"+k.ID+"/usage", nil, http.StatusOK, &u)
	if u.Requests != 1 || u.Prompt == 0 || u.Completion == 0 || u.Completion > 10 || u.Spend == 0 {
		t.Fatalf("estimated usage %+v", u)
	}
}

// TestKeyOverridesLowerThePlan: a key's own rpm applies when lower than its
// plan's, and is shown by the Keys API; 0 returns to the plan's.
func TestKeyOverridesLowerThePlan(t *testing.T) {
	_, up := startMock(t, mock.Options{})
	g := startGateway(t, limitsConfig(up), "")
	var k apiKey
	var raw map[string]any
	g.admin("POST", "/v1/keys", map[string]any{"name": "slow", "plan": "rpm3", "rpm": 1}, http.StatusCreated, &k)
	g.admin("GET", "/v1/keys/"+k.ID, nil, http.StatusOK, &raw)
	if raw["rpm"] != float64(1) || raw["tpm"] != nil {
		t.Fatalf("key shows rpm %v tpm %v", raw["rpm"], raw["tpm"])
	}
	if st, hdr, _ := g.do("POST", "/v1/chat/completions", k.Key, []byte(smallChat)); st != 200 || hdr.Get("X-Ratelimit-Limit-Requests") != "1" {
		t.Fatalf("first: %d, limit %q", st, hdr.Get("X-Ratelimit-Limit-Requests"))
	}
	if st, _, _ := g.do("POST", "/v1/chat/completions", k.Key, []byte(smallChat)); st != 429 {
		t.Fatalf("second at rpm 1: %d", st)
	}
	g.admin("PATCH", "/v1/keys/"+k.ID, map[string]any{"rpm": 0}, http.StatusOK, &raw)
	if raw["rpm"] != nil {
		t.Fatalf("after clearing: rpm %v", raw["rpm"])
	}
	if st, hdr, _ := g.do("POST", "/v1/chat/completions", k.Key, []byte(smallChat)); st != 200 || hdr.Get("X-Ratelimit-Limit-Requests") != "3" {
		t.Fatalf("back on the plan's 3 rpm: %d, limit %q", st, hdr.Get("X-Ratelimit-Limit-Requests"))
	}
	g.admin("PATCH", "/v1/keys/"+k.ID, map[string]any{"rpm": -1}, http.StatusBadRequest, nil)
}
