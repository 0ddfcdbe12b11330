package mock

import (
	"testing"

	"github.com/valyala/fasthttp"
)

// benchChatBody is a realistic small chat request of about 400 bytes.
const benchChatBody = `{"model":"mock-bench","messages":[{"role":"system","content":"You are a helpful assistant that answers briefly and precisely."},` +
	`{"role":"user","content":"Summarise the main differences between TCP and UDP for a network engineering interview, in three bullet points, with one example each."},` +
	`{"role":"assistant","content":"Sure."},{"role":"user","content":"Go on, please."}],"max_tokens":16,"temperature":0.2,"stream":false}`

// newRequestCtx returns a RequestCtx holding a request, as fasthttp's own
// benchmarks build them.
func newRequestCtx(method, path, body string) *fasthttp.RequestCtx {
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod(method)
	ctx.Request.SetRequestURI(path)
	ctx.Request.Header.SetContentType("application/json")
	ctx.Request.SetBodyString(body)
	return &ctx
}

func benchmarkHandler(b *testing.B, path, body string) {
	s := New(Options{})
	ctx := newRequestCtx(fasthttp.MethodPost, path, body)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		ctx.Response.Reset()
		s.Handler(ctx)
	}
	if ctx.Response.StatusCode() != 200 {
		b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
}

func BenchmarkHandler(b *testing.B) {
	benchmarkHandler(b, "/v1/chat/completions", benchChatBody)
}

func BenchmarkHandlerParallel(b *testing.B) {
	s := New(Options{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := newRequestCtx(fasthttp.MethodPost, "/v1/chat/completions", benchChatBody)
		for pb.Next() {
			ctx.Response.Reset()
			s.Handler(ctx)
		}
	})
}

func BenchmarkHandlerCompletions(b *testing.B) {
	benchmarkHandler(b, "/v1/completions", `{"model":"mock-bench","prompt":"Summarise the main differences between TCP and UDP.","max_tokens":16}`)
}

func BenchmarkHandlerEmbeddings(b *testing.B) {
	benchmarkHandler(b, "/v1/embeddings", `{"model":"mock-bench","input":"The quick brown fox jumps over the lazy dog."}`)
}

func BenchmarkHandlerEmbeddingsBase64(b *testing.B) {
	benchmarkHandler(b, "/v1/embeddings", `{"model":"mock-bench","input":"The quick brown fox jumps over the lazy dog.","encoding_format":"base64"}`)
}

func BenchmarkParse(b *testing.B) {
	body := []byte(benchChatBody)
	var r request
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if e := r.parse(body, epChat, DefaultEmbeddingDims); e != nil {
			b.Fatal(e.message)
		}
	}
}
