//go:build !race

package mock

import (
	"testing"

	"github.com/valyala/fasthttp"
)

// The Messages API is the upstream of the benchmark's Claude scenarios: a
// buffered answer, an error and a count must not allocate once the pools are
// warm.
func TestAllocsAnthropicHandler(t *testing.T) {
	f := func(path, body string, wantStatus int, headers ...string) {
		t.Helper()
		s := New(Options{Anthropic: AnthropicOptions{APIKey: testAnthropicKey}})
		ctx := newRequestCtx(fasthttp.MethodPost, path, body,
			append([]string{"x-api-key", testAnthropicKey, anthropicVersionHeader, "2023-06-01"}, headers...)...)
		s.Handler(ctx) // warm the pools and the response buffer
		if ctx.Response.StatusCode() != wantStatus {
			t.Fatalf("%s: status %d: %s", path, ctx.Response.StatusCode(), ctx.Response.Body())
		}
		n := testing.AllocsPerRun(200, func() {
			ctx.Response.Reset()
			s.Handler(ctx)
		})
		if n != 0 {
			t.Fatalf("%s %s: %v allocations per request, want 0", path, body, n)
		}
	}
	f("/v1/messages", benchMessagesBody, 200)
	f("/v1/messages", benchMessagesToolBody, 200)
	f("/v1/messages", `{"model":"mock","max_tokens":8,"stop_sequences":["s\u0069t"],"messages":[{"role":"user","content":"hi"}]}`, 200)
	f("/v1/messages/count_tokens", `{"model":"mock","messages":[{"role":"user","content":"hi"}]}`, 200)
	f("/v1/messages", `{"model":"claude-nope","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`, 404)
	f("/v1/messages", `{"model":"mock","max_tokens":8,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"x"}]}]}`, 400)
	f("/v1/messages", benchMessagesBody, 529, HeaderStatus, "529")
}
