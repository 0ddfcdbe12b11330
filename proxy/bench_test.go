package proxy

import (
	"bytes"
	"testing"
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
	b.RunParallel(func(pb *testing.PB) {
		var c fakeConn
		for pb.Next() {
			c.reset(req)
			if err := g.srv.http.ServeConn(&c); err != nil {
				b.Fatal(err)
			}
			if !bytes.HasPrefix(c.status(), []byte("HTTP/1.1 200")) {
				b.Fatalf("answer: %s", c.w.Bytes())
			}
		}
	})
}

var chatBody = bytes.Replace(benchBody, []byte(`"gpt-4o-mini"`), []byte(`"mock"`), 1)
