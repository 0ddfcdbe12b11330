package proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkServeChatTraced is BenchmarkServeChat with tracing on, exporting
// to a loopback collector that reads and discards what it gets: at sample 1
// every request's span is built and exported by the tracer's goroutine,
// whose cost is in ns/op, B/op and allocs/op (they count every goroutine's);
// at sample 0 only the request's side runs (trace context in and out).
func BenchmarkServeChatTraced(b *testing.B) {
	for _, sample := range []string{"1", "0"} {
		b.Run("sample="+sample, func(b *testing.B) { benchmarkServeChatTraced(b, sample) })
	}
}

func benchmarkServeChatTraced(b *testing.B, sample string) {
	col := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
	}))
	// Closed after the node (cleanups run last-in first-out), which flushes
	// its spans to it on Close.
	b.Cleanup(col.Close)
	g := startGateway(b, fmt.Sprintf("telemetry: {traces: {endpoint: %q, sample: %s}}\n", col.URL, sample)+yamlModels(startUpstream(b, staticChat)), "")
	key := g.newKey("all").Key
	req := []byte("POST /v1/chat/completions HTTP/1.1\r\nHost: tokenhub\r\nContent-Type: application/json\r\n" +
		"Authorization: Bearer " + key + "\r\nContent-Length: " + itoa(len(chatBody)) + "\r\n\r\n" + string(chatBody))
	b.ReportAllocs()
	serveParallel(b, g, req)
	b.StopTimer()
	// Spans dropped are spans not paid for: say how many.
	b.ReportMetric(float64(g.srv.metrics.spansDroppedQueueFull.Get())/float64(b.N), "dropped/op")
}
