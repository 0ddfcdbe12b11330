package mock

import (
	"testing"

	"github.com/bytedance/sonic"
	"github.com/valyala/fasthttp"
)

// FuzzHandler feeds arbitrary bodies to every endpoint: the mock must never
// panic, must answer 200 or 400, and must always answer valid JSON.
func FuzzHandler(f *testing.F) {
	for _, seed := range []string{
		benchChatBody,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"}]}],"n":2,"max_tokens":3}`,
		`{"model":"m","prompt":[[1,2],[3]],"max_tokens":1}`,
		`{"model":"m","input":["a",[1]],"dimensions":3,"encoding_format":"base64"}`,
		`{"model":"m\u0022","messages":[{}],"max_completion_tokens":null,"n":null}`,
		`{"model":"m","messages":[1]}`, `[]`, `{}`, `"x"`, `{"model":`,
		`{"model":"m","input":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}],"instructions":"c"}`,
		`{"model":"m","previous_response_id":"resp_mock0000000000000001"}`,
	} {
		for ep := range 4 {
			f.Add(uint8(ep), seed)
		}
	}
	s := New(Options{Chunks: 4, EmbeddingDims: 4})
	paths := [...]string{"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses/compact"}
	f.Fuzz(func(t *testing.T, ep uint8, body string) {
		// Streams answer from another goroutine once the handler returns;
		// their bytes are covered by the stream tests.
		if r := (request{}); r.parse([]byte(body), endpointOf([]byte(paths[int(ep)%len(paths)])), 4) == nil && r.stream {
			return
		}
		ctx := newRequestCtx(fasthttp.MethodPost, paths[int(ep)%len(paths)], body)
		s.Handler(ctx)
		status := ctx.Response.StatusCode()
		// A compaction of a previous response the mock does not hold is 404.
		if status != 200 && status != 400 && !(status == 404 && int(ep)%len(paths) == 3) {
			t.Fatalf("status %d for %q", status, body)
		}
		if !sonic.Valid(ctx.Response.Body()) {
			t.Fatalf("invalid JSON answer %q for %q", ctx.Response.Body(), body)
		}
	})
}
