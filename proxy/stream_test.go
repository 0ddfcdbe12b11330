package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/internal/eventually"
	"github.com/tokenhub/tokenhub/internal/mock"
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

// TestStreamConnectionLivesOn: after a stream, the same connection serves the
// next requests (a buffered one, then another stream), as fasthttp would have
// served it; an HTTP/1.0 or Connection: close client gets the stream
// unframed and the connection closed after it.
func TestStreamConnectionLivesOn(t *testing.T) {
	_, up := startMock(t, mock.Options{Chunks: 3})
	g := startGateway(t, yamlModels(up), "")
	key := g.newKey("all").Key
	addr := strings.TrimPrefix(g.url, "http://")
	request := func(proto, extra, body string) string {
		return "POST /v1/chat/completions " + proto + "\r\nHost: x\r\nAuthorization: Bearer " + key +
			"\r\nContent-Type: application/json\r\n" + extra + "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	}
	stream := `{"model":"mock","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	plain := `{"model":"mock","messages":[{"role":"user","content":"hi"}]}`

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	for i, body := range []string{stream, plain, stream} {
		if _, err := c.Write([]byte(request("HTTP/1.1", "", body))); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("request %d on the connection: %v", i, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || resp.Close {
			t.Fatalf("request %d: %d close=%v %v %q", i, resp.StatusCode, resp.Close, err, b)
		}
		if body == stream && (resp.Header.Get("Content-Type") != "text/event-stream" || len(resp.TransferEncoding) == 0 ||
			!strings.HasSuffix(string(b), "data: [DONE]\n\n") || resp.Header.Get("X-Request-Id") == "") {
			t.Fatalf("stream %d: %v %v %q", i, resp.Header, resp.TransferEncoding, b)
		}
	}

	for _, tc := range []struct{ proto, extra string }{{"HTTP/1.0", ""}, {"HTTP/1.1", "Connection: close\r\n"}} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte(request(tc.proto, tc.extra, stream)))
		all, err := io.ReadAll(c) // to the close
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		head, body, _ := strings.Cut(string(all), "\r\n\r\n")
		if !strings.Contains(head, "\r\nConnection: close") || strings.Contains(head, "Transfer-Encoding") ||
			!strings.HasPrefix(body, "data: ") || !strings.HasSuffix(body, "data: [DONE]\n\n") {
			t.Fatalf("%s %q: unframed stream and a close wanted:\n%s\n\n%q", tc.proto, tc.extra, head, body)
		}
	}
}

// TestShutdownClosesConnectionsIdleAfterAStream: a client that keeps its
// connection after a stream, as SDKs do, does not hold shutdown up (fasthttp
// alone would wait 5s for a first request on a connection it counts as new).
func TestShutdownClosesConnectionsIdleAfterAStream(t *testing.T) {
	_, up := startMock(t, mock.Options{Chunks: 3})
	g := startGateway(t, yamlModels(up), "")
	key := g.newKey("all").Key
	body := `{"model":"mock","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	c, err := net.Dial("tcp", strings.TrimPrefix(g.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key +
		"\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	eventually.True(t, "the connection handed back to fasthttp and idle", func() bool {
		return g.srv.conns.idleHandedCount() == 1
	})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := g.node.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// fasthttp's own wait is a 5s timer, so it never ends sooner; closing the
	// idle connection takes milliseconds. 4s tells them apart however loaded
	// the machine: a bound on fasthttp's timer, not a speed claim.
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("shutdown took %v with one idle connection after a stream: it waited for fasthttp's 5s", d)
	}
}

// idleHandedCount is how many connections a stream handed back to fasthttp
// are idle, waiting for their next request.
func (cs *connSet) idleHandedCount() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	n := 0
	for c := range cs.m {
		if hc, ok := c.(*handedConn); ok && hc.idle.Load() {
			n++
		}
	}
	return n
}
