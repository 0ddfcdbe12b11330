package proxy

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/internal/mock"
	"github.com/tokenhub/tokenhub/proxy/upstream"
)

// TestOverloadedRouteWaitsOutRetryAfter: an Anthropic upstream's 529
// overloaded_error with a retry-after fails the request over and cools its
// route down for that long, whichever protocol the request came in: a
// translated chat completion or a native Messages request take one attempt
// loop. Before it was one, chat only failed over: the route was back in
// traffic at once.
func TestOverloadedRouteWaitsOutRetryAfter(t *testing.T) {
	for _, path := range []string{"/v1/chat/completions", "/v1/messages"} {
		t.Run(path, func(t *testing.T) {
			var overloaded atomic.Int64
			bad := startUpstream(t, func(ctx *fasthttp.RequestCtx) {
				overloaded.Add(1)
				ctx.Response.Header.Set("Retry-After", "60")
				ctx.SetStatusCode(mock.StatusOverloaded)
				ctx.SetContentType("application/json")
				ctx.SetBodyString(`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`)
			})
			good, goodURL, _ := startClaudeMock(t, mock.Options{Chunks: 3})
			g := startGateway(t, badFirstYAML("anthropic", bad, "anthropic", goodURL), "")
			k := g.newKey("all").Key
			body := []byte(`{"model":"claude","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`)
			sent := 0
			for overloaded.Load() == 0 && sent < 50 {
				sent++
				if st, _, b := g.do("POST", path, k, body); st != http.StatusOK {
					t.Fatalf("request %d: %d %s", sent, st, b)
				}
			}
			if overloaded.Load() != 1 || good.Requests() != uint64(sent) {
				t.Fatalf("%d requests: the overloaded upstream got %d, the good one %d; want one, and every request answered by the good one",
					sent, overloaded.Load(), good.Requests())
			}
			h := g.srv.routing.Load().models.lookup([]byte("claude")).routes.Route(0).Health()
			if until := time.Until(h.Until()); h.State() != upstream.CoolingDown || until < 50*time.Second || until > 61*time.Second {
				t.Fatalf("the overloaded route is %v for %v more, want cooling down for the minute it asked", h.State(), until)
			}
		})
	}
}

// TestUntranslatableRequestTakesAnotherRoute: a chat request that cannot be
// translated for a model's Claude route (n: 2) goes to its OpenAI route,
// however much the Claude route weighs, rather than answering 400 for a
// request the model can serve; the Claude upstream never sees it. When the
// OpenAI route failed it first, the client gets that failure (retryable),
// not a 400 it would never retry. Before, most of these were 400s.
func TestUntranslatableRequestTakesAnotherRoute(t *testing.T) {
	claude, claudeURL, _ := startClaudeMock(t, mock.Options{Chunks: 3})
	openaiMock, openaiURL := startMock(t, mock.Options{Chunks: 3})
	failing, failingURL := startMock(t, mock.Options{Status: http.StatusInternalServerError})
	g := startGateway(t, fmt.Sprintf(`
upstreams:
  - {name: anthropic, kind: anthropic, base_url: %q, api_key: %q}
  - {name: openai, base_url: %q}
  - {name: failing, base_url: %q}
  - {name: dead, base_url: %q}
models:
  - {name: mixed, routes: [{upstream: anthropic, model: claude-sonnet-4-6, weight: 1000}, {upstream: openai, model: mock}]}
  - {name: failing-first, routes: [{upstream: failing, model: mock, weight: 1000}, {upstream: anthropic, model: claude-sonnet-4-6}]}
  - {name: dead-first, routes: [{upstream: dead, model: mock, weight: 1000}, {upstream: anthropic, model: claude-sonnet-4-6}]}
plans:
  - {name: all, models: ["*"]}
`, claudeURL, claudeKey, openaiURL, failingURL, deadURL(t)), "")
	k := g.newKey("all").Key
	body := func(model string) []byte {
		return []byte(`{"model":"` + model + `","n":2,"messages":[{"role":"user","content":"hi"}]}`)
	}
	for i := range 10 {
		st, _, b := g.do("POST", "/v1/chat/completions", k, body("mixed"))
		if st != http.StatusOK || strings.Count(string(b), `"finish_reason"`) != 2 {
			t.Fatalf("request %d to the mixed model: %d %s, want two choices from the OpenAI route", i, st, b)
		}
	}
	for _, model := range []string{"failing-first", "dead-first"} {
		before := failing.Requests()
		st, hdr, b := g.do("POST", "/v1/chat/completions", k, body(model))
		wantErrorBody(t, st, hdr, b, http.StatusBadGateway, "upstream_error")
		if model == "failing-first" && failing.Requests()-before != 1 {
			t.Fatalf("%s: the failing route got %d requests, want 1", model, failing.Requests()-before)
		}
	}
	if claude.Requests() != 0 || openaiMock.Requests() != 10 {
		t.Fatalf("the Claude upstream got %d requests and the OpenAI one %d, want 0 and 10", claude.Requests(), openaiMock.Requests())
	}
	// A request the Claude route takes still goes to it.
	if st, _, b := g.do("POST", "/v1/chat/completions", k, []byte(`{"model":"dead-first","messages":[{"role":"user","content":"hi"}]}`)); st != http.StatusOK {
		t.Fatalf("a translatable request after the dead route: %d %s", st, b)
	}
}
