package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkServeChatTraced is BenchmarkServeChat with every request traced
// and exported to a loopback collector that reads and discards what it gets:
// the cost of tracing on, the span's building and export by the tracer's
// goroutine included (in ns/op, and in B/op and allocs/op, which count
// every goroutine's).
func BenchmarkServeChatTraced(b *testing.B) {
	col := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
	}))
	defer col.Close()
	g := startGateway(b, fmt.Sprintf("telemetry: {traces: {endpoint: %q}}\n", col.URL)+yamlModels(startUpstream(b, staticChat)), "")
	key := g.newKey("all").Key
	req := []byte("POST /v1/chat/completions HTTP/1.1\r\nHost: tokenhub\r\nContent-Type: application/json\r\n" +
		"Authorization: Bearer " + key + "\r\nContent-Length: " + itoa(len(chatBody)) + "\r\n\r\n" + string(chatBody))
	b.ReportAllocs()
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
	b.StopTimer()
	// Spans dropped are spans not paid for: say how many.
	b.ReportMetric(float64(g.srv.metrics.spansDroppedQueueFull.Get())/float64(b.N), "dropped/op")
}
