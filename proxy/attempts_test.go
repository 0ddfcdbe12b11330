package proxy

import (
	"net/http"
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
