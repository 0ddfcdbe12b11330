package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// TestStreamTimeouts: a stream that stalls between events longer than
// event_timeout ends with an upstream_timeout error event, while one whose
// events keep coming may run longer than that in total; an upstream that
// never starts answering is a 504.
func TestStreamTimeouts(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop) // before the cleanups, which wait for the upstream's handlers
	up := startUpstream(t, func(ctx *fasthttp.RequestCtx) {
		mode := string(ctx.Request.Header.Peek("X-Request-Id"))
		if mode == "never" {
			select {
			case <-stop:
			case <-time.After(5 * time.Second):
			}
			return
		}
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			for i := range 6 {
				fmt.Fprintf(w, "data: {\"i\":%d}\n\n", i)
				w.Flush()
				gap := 200 * time.Millisecond // 6 x 200ms: longer than event_timeout in total
				if mode == "stall" && i == 1 {
					gap = 3 * time.Second
				}
				select {
				case <-stop:
					return
				case <-time.After(gap):
				}
			}
			w.WriteString("data: [DONE]\n\n")
		})
	})
	g := startGateway(t, fmt.Sprintf(`
upstreams:
  - {name: up, base_url: %q, event_timeout: 800ms, first_byte_timeout: 800ms}
models:
  - {name: m, routes: [{upstream: up}]}
plans:
  - {name: all, models: ["*"]}
`, up), "")
	key := g.newKey("all").Key
	stream := func(mode string) (int, string) {
		req, _ := http.NewRequest("POST", g.url+"/v1/chat/completions", strings.NewReader(`{"model":"m","stream":true}`))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("X-Request-Id", mode)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	if status, body := stream("steady"); status != 200 || !strings.HasSuffix(body, "data: {\"i\":5}\n\ndata: [DONE]\n\n") {
		t.Fatalf("steady stream: %d %q", status, body)
	}
	status, body := stream("stall")
	want := "data: {\"i\":0}\n\ndata: {\"i\":1}\n\ndata: {\"error\":{\"message\":\"The upstream stream stalled for the model: m\",\"type\":\"server_error\",\"param\":null,\"code\":\"upstream_timeout\"}}\n\n"
	if status != 200 || body != want {
		t.Fatalf("stalled stream: %d\n got %q\nwant %q", status, body, want)
	}
	status, body = stream("never")
	if status != 504 || !strings.Contains(body, `"upstream_timeout"`) {
		t.Fatalf("silent upstream: %d %s", status, body)
	}
}
