package proxy

import (
	"bufio"
	"context"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/internal/mock"
	"github.com/tokenhub/tokenhub/internal/upstreamtest"
)

// TestUsageIsSettledBeforeTheStreamEnds: a client that reads its usage the
// moment its stream is over finds the stream counted, however it ended and
// however it decides that it ended: the SDK stops at data: [DONE], a raw
// client at the end of the body, which is the error event when the
// upstream broke off.
func TestUsageIsSettledBeforeTheStreamEnds(t *testing.T) {
	// An upstream that finishes its body a while after [DONE], as a provider
	// does when it flushes events and closes the response later.
	slowFinish := startUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			w.WriteString(upstreamtest.StreamBody)
			w.Flush()
			time.Sleep(50 * time.Millisecond)
		})
	})
	_, clean := startMock(t, mock.Options{Chunks: 5})
	_, cut := startMock(t, mock.Options{Chunks: 5, FailAfterChunks: 3})
	f := func(name, up string, stream func(g *gateway, key string)) {
		t.Run(name, func(t *testing.T) {
			g := startGateway(t, yamlModels(up), "")
			k := g.newKey("all")
			for i := range 30 {
				stream(g, k.Key)
				if n, _, completion := g.usageOf(k.ID); n != int64(i+1) || completion == 0 {
					t.Fatalf("right after stream %d: %d requests, %d completion tokens counted", i+1, n, completion)
				}
			}
		})
	}
	sdk := func(g *gateway, key string) {
		s := g.client(key).Chat.Completions.NewStreaming(context.Background(), chatParams("mock", "hi"))
		for s.Next() {
		}
		if err := s.Err(); err != nil {
			g.t.Fatal(err)
		}
	}
	raw := func(g *gateway, key string) {
		rawStream(g.t.(*testing.T), g.url, key, `{"model":"mock","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	}
	f("the SDK stops at [DONE]", slowFinish, sdk)
	f("a raw client reads to the end", clean, raw)
	f("the upstream broke off: the end is an error event", cut, raw)
}
