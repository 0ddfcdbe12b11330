package mock

import (
	"bufio"
	"strconv"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// benchChatBody is a realistic small chat request of about 400 bytes.
const benchChatBody = `{"model":"mock-bench","messages":[{"role":"system","content":"You are a helpful assistant that answers briefly and precisely."},` +
	`{"role":"user","content":"Summarise the main differences between TCP and UDP for a network engineering interview, in three bullet points, with one example each."},` +
	`{"role":"assistant","content":"Sure."},{"role":"user","content":"Go on, please."}],"max_tokens":16,"temperature":0.2,"stream":false}`

// newRequestCtx returns a RequestCtx holding a request read from the wire
// form a typical client sends, as the server would have it.
func newRequestCtx(method, path, body string, headers ...string) *fasthttp.RequestCtx {
	raw := method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1:9100\r\nUser-Agent: OpenAI/Go 3.0\r\n" +
		"Authorization: Bearer sk-test\r\nContent-Type: application/json\r\nAccept: application/json\r\n"
	for i := 0; i+1 < len(headers); i += 2 {
		raw += headers[i] + ": " + headers[i+1] + "\r\n"
	}
	raw += "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	var ctx fasthttp.RequestCtx
	if err := ctx.Request.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		panic("newRequestCtx: " + err.Error())
	}
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

func BenchmarkHandlerWithOverride(b *testing.B) {
	s := New(Options{})
	ctx := newRequestCtx(fasthttp.MethodPost, "/v1/chat/completions", benchChatBody, HeaderChunks, "16")
	b.ReportAllocs()
	for b.Loop() {
		ctx.Response.Reset()
		s.Handler(ctx)
	}
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
