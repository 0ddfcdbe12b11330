package mock

import (
	"testing"

	"github.com/valyala/fasthttp"
)

// benchMessagesBody is a typical Messages request: a system prompt and two
// turns, as a Claude client sends them.
const benchMessagesBody = `{"model":"claude-sonnet-4-6","max_tokens":16,"system":"You are a helpful assistant.",` +
	`"messages":[{"role":"user","content":"Say something."},{"role":"assistant","content":"Something."},` +
	`{"role":"user","content":[{"type":"text","text":"Say more, please."}]}]}`

// benchMessagesToolBody asks for a tool call.
const benchMessagesToolBody = `{"model":"claude-sonnet-4-6","max_tokens":64,` +
	`"tools":[{"name":"get_weather","description":"The weather","input_schema":{"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"}}}}],` +
	`"messages":[{"role":"user","content":"Use get_weather for Paris."}]}`

func benchmarkAnthropic(b *testing.B, body string) {
	s := New(Options{})
	ctx := newRequestCtx(fasthttp.MethodPost, "/v1/messages", body, anthropicVersionHeader, "2023-06-01")
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

func BenchmarkAnthropicMessage(b *testing.B) { benchmarkAnthropic(b, benchMessagesBody) }

func BenchmarkAnthropicToolUse(b *testing.B) { benchmarkAnthropic(b, benchMessagesToolBody) }
