package mock

import (
	"testing"

	"github.com/bytedance/sonic"
	"github.com/valyala/fasthttp"
)

// FuzzAnthropicHandler feeds arbitrary bodies to the Messages API: the mock
// must never panic, must answer 200, 400 or 404, and must always answer
// valid JSON.
func FuzzAnthropicHandler(f *testing.F) {
	for _, seed := range []string{
		benchMessagesBody, benchMessagesToolBody,
		`{"model":"mock","max_tokens":3,"stop_sequences":["\u0064olor"],"messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"mock","max_tokens":9,"messages":[{"role":"user","content":"x"},{"role":"assistant","content":[{"type":"tool_use","id":"t\u0031","name":"f","input":{}}]},` +
			`{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"r"}]}]}]}`,
		`{"model":"mock","max_tokens":9,"tool_choice":{"type":"tool","name":"f"},"tools":[{"name":"f","input_schema":{"properties":{"\u00e9":{"type":"boolean"},"b":{"type":["x"]}}}}],"messages":[{"role":"user","content":"f"}]}`,
		`{"model":"mock","messages":[{"role":"system","content":[{"type":"text","text":"s"}]}]}`,
		`{"model":"mock","max_tokens":1,"messages":[1]}`, `[]`, `{}`, `"x"`, `{"model":`,
	} {
		f.Add(false, seed)
		f.Add(true, seed)
	}
	s := New(Options{Chunks: 4})
	f.Fuzz(func(t *testing.T, countTokens bool, body string) {
		path := "/v1/messages"
		if countTokens {
			path += "/count_tokens"
		}
		// Streams answer from another goroutine once the handler returns;
		// their bytes are covered by the stream tests.
		var r messagesRequest
		if e, me := r.parse([]byte(body), countTokens); e == nil && me == nil && r.stream {
			return
		}
		ctx := newRequestCtx(fasthttp.MethodPost, path, body, anthropicVersionHeader, "2023-06-01")
		s.Handler(ctx)
		switch status := ctx.Response.StatusCode(); status {
		case 200, 400, 404:
		default:
			t.Fatalf("status %d for %q", status, body)
		}
		if !sonic.Valid(ctx.Response.Body()) {
			t.Fatalf("invalid JSON answer %q for %q", ctx.Response.Body(), body)
		}
	})
}
