//go:build !race

package mock

import (
	"testing"

	"github.com/valyala/fasthttp"
)

// The mock is the benchmark's ceiling and the gateway's in-process upstream:
// a buffered answer must not allocate once the pools are warm.
func TestAllocsMockHandler(t *testing.T) {
	f := func(method, path, body string) {
		t.Helper()
		s := New(Options{EmbeddingDims: 256})
		ctx := newRequestCtx(method, path, body)
		s.Handler(ctx) // warm the pools and the response buffer
		if ctx.Response.StatusCode() != 200 {
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
	f(fasthttp.MethodPost, "/v1/chat/completions", benchChatBody)
	f(fasthttp.MethodPost, "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"x"}],"n":4}`)
	f(fasthttp.MethodPost, "/v1/completions", `{"model":"m","prompt":["a","b"],"max_tokens":4}`)
	f(fasthttp.MethodPost, "/v1/embeddings", `{"model":"m","input":["a","b"]}`)
	f(fasthttp.MethodPost, "/v1/embeddings", `{"model":"m","input":"a","encoding_format":"base64"}`)
	f(fasthttp.MethodPost, "/v1/responses", `{"model":"m","input":"x","max_output_tokens":16,"instructions":"Be terse."}`)
	f(fasthttp.MethodPost, "/v1/responses/compact", `{"model":"m","input":[{"role":"user","content":"x"},{"role":"assistant","content":"y"}]}`)
	f(fasthttp.MethodGet, "/v1/models", "")
}

func TestAllocsMockError(t *testing.T) {
	s := New(Options{})
	ctx := newRequestCtx(fasthttp.MethodPost, "/v1/chat/completions", `{"model":`)
	n := testing.AllocsPerRun(200, func() {
		ctx.Response.Reset()
		s.Handler(ctx)
	})
	if n != 0 || ctx.Response.StatusCode() != 400 {
		t.Fatalf("malformed JSON: status %d, %v allocations, want 400 and 0", ctx.Response.StatusCode(), n)
	}
}
