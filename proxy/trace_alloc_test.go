//go:build !race

package proxy

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/tokenhub/tokenhub/internal/otlptest"
)

// TestAllocsServeChatTraced: with tracing on, the request's side of it
// (reading the client's traceparent, deciding the trace context, writing
// the upstream's traceparent and tracestate) allocates nothing. The request
// is not sampled: a sampled one's span is built and exported by the
// tracer's goroutine, whose allocations AllocsPerRun would count too (its
// hand-over, Send, is proved in internal/tracing's TestAllocsRequestSide).
func TestAllocsServeChatTraced(t *testing.T) {
	col := otlptest.Start(t)
	g := startGateway(t, fmt.Sprintf("telemetry: {traces: {endpoint: %q, sample: 0}}\n", col.URL)+yamlModels(startUpstream(t, staticChat)), "")
	key := g.newKey("all").Key
	for _, traceHeaders := range []string{
		"",
		"Traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00\r\nTracestate: vendor=abc\r\n",
	} {
		req := []byte("POST /v1/chat/completions HTTP/1.1\r\nHost: tokenhub\r\nContent-Type: application/json\r\nAccept: application/json\r\n" +
			traceHeaders + "Authorization: Bearer " + key + "\r\nContent-Length: " + itoa(len(chatBody)) + "\r\n\r\n" + string(chatBody))
		c := newFakeConn(g.srv)
		serve := func() {
			c.reset(req)
			if err := g.srv.http.ServeConn(c); err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(c.status(), []byte("HTTP/1.1 200")) || !bytes.Equal(c.body(), staticChatBody) {
				t.Fatalf("answer: %s", c.w.Bytes())
			}
		}
		warmServe(t, g, serve)
		if n := testing.AllocsPerRun(2000, serve); n != 0 {
			t.Errorf("trace headers %q: %v allocations per request, want 0", traceHeaders, n)
		}
	}
	if n := len(col.Spans()); n != 0 {
		t.Fatalf("%d spans exported at sample 0 for unsampled requests", n)
	}
}
