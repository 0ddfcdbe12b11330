package proxy

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/mock"
	"github.com/tokenhub/tokenhub/keys"
)

// errorsConfig serves models whose upstreams fail in every way there is.
func errorsConfig(t *testing.T) string {
	_, ok := startMock(t, mock.Options{})
	_, e500 := startMock(t, mock.Options{Status: 500})
	_, e429 := startMock(t, mock.Options{Status: 429})
	_, e400 := startMock(t, mock.Options{Status: 400})
	_, slow := startMock(t, mock.Options{Latency: 3 * time.Second})
	return fmt.Sprintf(`
max_body_bytes: 65536
upstreams:
  - {name: ok, base_url: %q}
  - {name: e500, base_url: %q}
  - {name: e429, base_url: %q}
  - {name: e400, base_url: %q}
  - {name: slow, base_url: %q, timeout: 300ms}
  - {name: dead, base_url: %q, connect_timeout: 500ms}
models:
  - {name: mock, routes: [{upstream: ok}]}
  - {name: secret-model, routes: [{upstream: ok}]}
  - {name: failing, routes: [{upstream: e500}]}
  - {name: limited, routes: [{upstream: e429}]}
  - {name: refused, routes: [{upstream: e400}]}
  - {name: slow, routes: [{upstream: slow}]}
  - {name: dead, routes: [{upstream: dead}]}
plans:
  - {name: basic, models: ["mock", "failing", "limited", "refused", "slow", "dead"]}
`, ok, e500, e429, e400, slow, deadURL(t))
}

func TestErrorsThroughSDK(t *testing.T) {
	g := startGateway(t, errorsConfig(t), "")
	ctx := context.Background()
	key := g.newKey("basic")
	revoked := g.newKey("basic")
	g.admin("DELETE", "/v1/keys/"+revoked.ID, nil, http.StatusOK, nil)
	unknown, err := keys.NewSecret()
	if err != nil {
		t.Fatal(err)
	}

	f := func(name, secret, model string, status int, typ, code string) {
		t.Run(name, func(t *testing.T) {
			_, err := g.client(secret).Chat.Completions.New(ctx, chatParams(model, "hi"))
			wantAPIError(t, err, status, typ, code)
		})
	}
	f("malformed key", "sk-not-a-real-key", "mock", 401, "invalid_request_error", "invalid_api_key")
	f("unknown key", unknown, "mock", 401, "invalid_request_error", "invalid_api_key")
	f("revoked key", revoked.Key, "mock", 401, "invalid_request_error", "invalid_api_key")
	f("admin key is not a user key", g.adminKey, "mock", 401, "invalid_request_error", "invalid_api_key")
	f("model outside plan", key.Key, "secret-model", 403, "invalid_request_error", "model_not_allowed")
	f("unknown model", key.Key, "no-such-model", 404, "invalid_request_error", "model_not_found")
	f("upstream 5xx", key.Key, "failing", 502, "server_error", "upstream_error")
	f("upstream unreachable", key.Key, "dead", 502, "server_error", "upstream_error")
	f("upstream timeout", key.Key, "slow", 504, "server_error", "upstream_timeout")
	// Upstream 4xx answers pass through with their status and body (the mock's).
	f("upstream 429 passes", key.Key, "limited", 429, "requests", "rate_limit_exceeded")
	f("upstream 400 passes", key.Key, "refused", 400, "invalid_request_error", "")
}

func TestErrorsRaw(t *testing.T) {
	g := startGateway(t, errorsConfig(t), "")
	key := g.newKey("basic").Key
	f := func(name, method, path, secret, body string, status int, code string) {
		t.Run(name, func(t *testing.T) {
			st, hdr, b := g.do(method, path, secret, []byte(body))
			wantErrorBody(t, st, hdr, b, status, code)
		})
	}
	f("no key", "POST", "/v1/chat/completions", "", `{"model":"mock"}`, 401, "invalid_api_key")
	f("malformed JSON", "POST", "/v1/chat/completions", key, `{"model":"mock",`, 400, "invalid_json")
	f("not an object", "POST", "/v1/chat/completions", key, `[1,2]`, 400, "invalid_json")
	f("missing model", "POST", "/v1/chat/completions", key, `{"messages":[]}`, 400, "missing_required_parameter")
	f("empty body", "POST", "/v1/embeddings", key, ``, 400, "invalid_json")
	f("duplicate model", "POST", "/v1/chat/completions", key, `{"model":"mock","model":"secret-model"}`, 400, "duplicate_key")
	f("unknown path", "POST", "/v1/nope", key, `{}`, 404, "unknown_url")
	// GET /v1/chat/completions lists stored chat completions: see TestStoredChatCompletionsAreUnsupported.
	f("method not allowed", "GET", "/v1/embeddings", key, ``, 405, "method_not_allowed")
	f("body too large", "POST", "/v1/chat/completions", key, `{"model":"mock","x":"`+strings.Repeat("a", 70000)+`"}`, 413, "request_too_large")
	// Far over: the client is still sending when the gateway answers, and must
	// still read the 413 rather than a reset (lingering close).
	f("body far too large", "POST", "/v1/chat/completions", key, `{"model":"mock","x":"`+strings.Repeat("a", 8<<20)+`"}`, 413, "request_too_large")
	f("user key on admin API", "GET", "/v1/keys", key, ``, 403, "admin_key_required")
	f("bad key on admin API", "GET", "/v1/keys", "wrong", ``, 401, "invalid_api_key")
}

func TestExpiredKey(t *testing.T) {
	_, up := startMock(t, mock.Options{})
	g := startGateway(t, yamlModels(up), "")
	var k apiKey
	g.admin("POST", "/v1/keys", map[string]any{"name": "short", "plan": "all", "expires_in": 1}, http.StatusCreated, &k)
	if k.ExpiresAt == nil {
		t.Fatalf("expires_at not set: %+v", k)
	}
	c := g.client(k.Key)
	if _, err := c.Chat.Completions.New(context.Background(), chatParams("mock", "hi")); err != nil {
		t.Fatalf("fresh key: %v", err)
	}
	time.Sleep(time.Until(time.Unix(*k.ExpiresAt, 0)) + 50*time.Millisecond)
	_, err := c.Chat.Completions.New(context.Background(), chatParams("mock", "hi"))
	wantAPIError(t, err, 401, "invalid_request_error", "invalid_api_key")
}

func TestRequestID(t *testing.T) {
	_, up := startMock(t, mock.Options{})
	g := startGateway(t, yamlModels(up), "")
	key := g.newKey("all").Key
	body := []byte(`{"model":"mock","messages":[{"role":"user","content":"hi"}]}`)

	_, hdr, _ := g.do("POST", "/v1/chat/completions", key, body, "X-Request-Id", "trace-42")
	if got := hdr.Get("X-Request-Id"); got != "trace-42" {
		t.Fatalf("sane incoming id not propagated: %q", got)
	}
	_, hdr, _ = g.do("POST", "/v1/chat/completions", key, body, "X-Request-Id", "bad id with spaces")
	got := hdr.Get("X-Request-Id")
	if !strings.HasPrefix(got, "req_") || len(got) != 32 {
		t.Fatalf("generated id %q", got)
	}
	_, hdr2, _ := g.do("POST", "/v1/chat/completions", "", body)
	if id := hdr2.Get("X-Request-Id"); id == "" || id == got {
		t.Fatalf("error answer id %q (previous %q)", id, got)
	}
}

func TestFailover(t *testing.T) {
	good, goodURL := startMock(t, mock.Options{})
	bad500, bad500URL := startMock(t, mock.Options{Status: 503})
	bad429, bad429URL := startMock(t, mock.Options{Status: 429})
	// Heavy weights on the failing routes make almost every request start there.
	g := startGateway(t, fmt.Sprintf(`
upstreams:
  - {name: good, base_url: %q}
  - {name: dead, base_url: %q}
  - {name: e503, base_url: %q}
  - {name: e429, base_url: %q}
models:
  - name: m
    routes: [{upstream: dead, weight: 1000}, {upstream: e503, weight: 1000}, {upstream: e429, weight: 1000}, {upstream: good, weight: 1}]
plans:
  - {name: all, models: ["*"]}
`, goodURL, deadURL(t), bad500URL, bad429URL), "")
	c := g.client(g.newKey("all").Key)
	const n = 20
	for i := range n {
		if _, err := c.Chat.Completions.New(context.Background(), chatParams("m", "hi")); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if good.Requests() != n {
		t.Fatalf("good upstream served %d of %d", good.Requests(), n)
	}
	if bad500.Requests() == 0 || bad429.Requests() == 0 {
		t.Fatalf("failing routes were never tried: 503 %d, 429 %d", bad500.Requests(), bad429.Requests())
	}
}
