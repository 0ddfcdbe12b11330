package proxy

import (
	"bytes"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/internal/mock"
)

// BenchmarkServeChat serves a whole non-streaming chat request through
// fasthttp's ServeConn, the key cache, the body reader and the upstream client
// to a loopback upstream: the gateway's cost per request, round trip included.
func BenchmarkServeChat(b *testing.B) {
	g := startGateway(b, yamlModels(startUpstream(b, staticChat)), "")
	key := g.newKey("all").Key
	req := []byte("POST /v1/chat/completions HTTP/1.1\r\nHost: tokenhub\r\nContent-Type: application/json\r\n" +
		"Authorization: Bearer " + key + "\r\nContent-Length: " + itoa(len(chatBody)) + "\r\n\r\n" + string(chatBody))
	b.ReportAllocs()
	serveParallel(b, g, req)
}

// serveParallel serves req, a whole HTTP/1.1 request, through g's server
// on fake connections from every benchmark goroutine, failing on any answer
// but 200.
func serveParallel(b *testing.B, g *gateway, req []byte) {
	b.RunParallel(func(pb *testing.PB) {
		c := newFakeConn(g.srv)
		for pb.Next() {
			c.reset(req)
			if err := g.srv.http.ServeConn(c); err != nil {
				b.Fatal(err)
			}
			if !bytes.HasPrefix(c.status(), []byte("HTTP/1.1 200")) {
				b.Fatalf("answer: %s", c.w.Bytes())
			}
		}
	})
}

// BenchmarkServeChatClaude is BenchmarkServeChat to a model on an
// anthropic upstream: the same body translated into a Messages request,
// the answer translated back, billed from Anthropic's usage.
func BenchmarkServeChatClaude(b *testing.B) {
	g := startGateway(b, claudeStaticYAML(startUpstream(b, staticMessages)), "")
	key := g.newKey("all").Key
	body := bytes.Replace(benchBody, []byte(`"gpt-4o-mini"`), []byte(`"claude"`), 1)
	req := []byte("POST /v1/chat/completions HTTP/1.1\r\nHost: tokenhub\r\nContent-Type: application/json\r\n" +
		"Authorization: Bearer " + key + "\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + string(body))
	b.ReportAllocs()
	serveParallel(b, g, req)
}

// BenchmarkServeMessages is BenchmarkServeChat for POST /v1/messages: a
// buffered Messages request with its key in x-api-key, renamed for its
// anthropic route, to a loopback upstream that answers a fixed message.
func BenchmarkServeMessages(b *testing.B) {
	g := startGateway(b, yamlClaude(startUpstream(b, staticMessages), deadURL(b)), "")
	key := g.newKey("all").Key
	body := `{"model":"claude","max_tokens":64,"messages":[{"role":"user","content":"Say something short about the mock."}]}`
	req := []byte("POST /v1/messages HTTP/1.1\r\nHost: tokenhub\r\nContent-Type: application/json\r\nanthropic-version: 2023-06-01\r\n" +
		"x-api-key: " + key + "\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + body)
	b.ReportAllocs()
	// The gateway's start (its store, its five plans) is not the request's.
	b.ResetTimer()
	serveParallel(b, g, req)
}

var chatBody = bytes.Replace(benchBody, []byte(`"gpt-4o-mini"`), []byte(`"mock"`), 1)

// BenchmarkStream: whole streams of 20 events (16 words, the role, the
// finish, [DONE]) through the gateway over loopback sockets, with the
// upstream's usage requested and stripped; per stream.
func BenchmarkStream(b *testing.B) {
	_, up := startMock(b, mock.Options{Chunks: 16})
	g := startGateway(b, yamlModels(up), "")
	key := g.newKey("all").Key
	body := []byte(`{"model":"mock","stream":true,"messages":[{"role":"user","content":"count"}]}`)
	c := &fasthttp.Client{}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		for pb.Next() {
			req.Reset()
			req.SetRequestURI(g.url + "/v1/chat/completions")
			req.Header.SetMethod("POST")
			req.Header.Set("Authorization", "Bearer "+key)
			req.SetBodyRaw(body)
			if err := c.Do(req, resp); err != nil {
				b.Fatal(err)
			}
			if resp.StatusCode() != 200 || !bytes.HasSuffix(resp.Body(), []byte("data: [DONE]\n\n")) {
				b.Fatalf("%d %q", resp.StatusCode(), resp.Body())
			}
		}
	})
}
