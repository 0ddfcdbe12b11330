package proxy

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/valyala/fasthttp"
)

// negotiatingUpstream answers like a provider that honours Accept: a stream
// only to a client that accepts text/event-stream (or sends no Accept, which
// accepts anything), else 406 in OpenAI's shape. It records the Accept
// header lines each request carried ("<none>" for none).
func negotiatingUpstream(t *testing.T) (url string, seen func() string) {
	var mu sync.Mutex
	var last string
	url = startUpstream(t, func(ctx *fasthttp.RequestCtx) {
		accepts := ctx.Request.Header.PeekAll(fasthttp.HeaderAccept)
		got := "<none>"
		if len(accepts) > 0 {
			parts := make([]string, len(accepts))
			for i, a := range accepts {
				parts[i] = string(a)
			}
			got = strings.Join(parts, " | ")
		}
		mu.Lock()
		last = got
		mu.Unlock()
		stream := strings.Contains(string(ctx.PostBody()), `"stream":true`)
		ok := len(accepts) == 0
		for _, a := range accepts {
			s := string(a)
			want := "application/json"
			if stream {
				want = "text/event-stream"
			}
			ok = ok || strings.Contains(s, want) || strings.Contains(s, "*/*") || strings.Contains(s, strings.Split(want, "/")[0]+"/*")
		}
		if !ok {
			ctx.SetStatusCode(fasthttp.StatusNotAcceptable)
			ctx.SetContentType("application/json")
			ctx.SetBodyString(`{"error":{"message":"Not Acceptable: the client must accept the answer's type","type":"invalid_request_error","param":null,"code":"not_acceptable"}}`)
			return
		}
		if !stream {
			ctx.SetContentType("application/json")
			ctx.SetBodyString(`{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`)
			return
		}
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyString("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n" +
			"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2}}\n\n" +
			"data: [DONE]\n\n")
	})
	return url, func() string {
		mu.Lock()
		defer mu.Unlock()
		return last
	}
}

// TestAcceptIsForwardedAsSent: the upstream gets the client's Accept header
// lines as sent, on streams and buffered answers alike, and none when the
// client sent none: the gateway adds nothing the client did not ask for, so
// an upstream that negotiates on Accept answers the client as it would
// answer it directly.
func TestAcceptIsForwardedAsSent(t *testing.T) {
	up, seen := negotiatingUpstream(t)
	g := startGateway(t, fmt.Sprintf(`
upstreams: [{name: up, base_url: %q}]
models: [{name: m, routes: [{upstream: up}]}]
plans: [{name: all, models: ["*"]}]
`, up), "")
	key := g.newKey("all").Key
	const stream, buffered = `{"model":"m","stream":true}`, `{"model":"m"}`
	f := func(body string, accepts []string, wantStatus int, wantSeen string) {
		t.Helper()
		req, err := http.NewRequest("POST", g.url+"/v1/chat/completions", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+key)
		for _, a := range accepts {
			req.Header.Add("Accept", a)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != wantStatus || seen() != wantSeen {
			t.Fatalf("%s with Accept %q: status %d, upstream saw Accept %q; want %d, %q\n%s",
				body, accepts, resp.StatusCode, seen(), wantStatus, wantSeen, b)
		}
		if wantStatus == http.StatusOK && strings.Contains(body, "stream") && !strings.HasSuffix(string(b), "data: [DONE]\n\n") {
			t.Fatalf("stream not relayed: %q", b)
		}
	}
	f(stream, nil, 200, "<none>")
	f(stream, []string{"text/event-stream"}, 200, "text/event-stream")
	f(stream, []string{"text/event-stream;q=0.9, application/json;q=0.1"}, 200, "text/event-stream;q=0.9, application/json;q=0.1")
	f(stream, []string{"*/*"}, 200, "*/*")
	f(stream, []string{"application/json", "text/event-stream"}, 200, "application/json | text/event-stream")
	// What the client asked for is what the upstream judges, as it would
	// judge the client directly.
	f(stream, []string{"application/json"}, 406, "application/json")
	f(buffered, nil, 200, "<none>")
	f(buffered, []string{"application/json"}, 200, "application/json")
	f(buffered, []string{"text/event-stream"}, 406, "text/event-stream")
}
