//go:build !race

package proxy

import (
	"bytes"
	"io"
	"os"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/internal/mock"
	"github.com/tokenhub/tokenhub/sse"
)

// TestAllocsServeMessages: a buffered /v1/messages request costs the
// gateway no allocation, as a chat completion does (TestAllocsServeChat):
// the model as is and renamed for the route, the key in x-api-key and as a
// bearer. The upstream is the mock, in this process, which allocates
// nothing for a buffered message.
func TestAllocsServeMessages(t *testing.T) {
	up := startUpstream(t, mock.New(mock.Options{Chunks: 8, Anthropic: mock.AnthropicOptions{APIKey: providerKey}}).Handler)
	g := startGateway(t, yamlClaude(up, deadURL(t)), "")
	key := g.newKey("all").Key
	for _, model := range []string{"mock", "claude"} {
		for _, auth := range []string{"x-api-key: ", "Authorization: Bearer "} {
			body := `{"model":"` + model + `","max_tokens":64,"messages":[{"role":"user","content":"Say something short about the mock."}]}`
			req := []byte("POST /v1/messages HTTP/1.1\r\nHost: tokenhub\r\nContent-Type: application/json\r\nanthropic-version: 2023-06-01\r\n" +
				auth + key + "\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + body)
			c := newFakeConn(g.srv)
			serve := func() {
				c.reset(req)
				if err := g.srv.http.ServeConn(c); err != nil {
					t.Fatal(err)
				}
				if !bytes.HasPrefix(c.status(), []byte("HTTP/1.1 200")) || !bytes.Contains(c.body(), []byte(`"output_tokens":8`)) {
					t.Fatalf("answer: %s", c.w.Bytes())
				}
				if n := g.srv.bodies.inUse(); n != 0 {
					t.Fatalf("%d body bytes still reserved after the request", n)
				}
			}
			warmServe(t, g, serve)
			if n := testing.AllocsPerRun(2000, serve); n != 0 {
				t.Errorf("model %s, %s: %v allocations per request, want 0", model, auth, n)
			}
		}
	}
}

// TestAllocsMessageEvents: the relay's reader of a native Messages stream
// reads every event of a recorded stream without allocating.
func TestAllocsMessageEvents(t *testing.T) {
	stream, err := os.ReadFile("anthropic/testdata/stream/tool-use.sse")
	if err != nil {
		t.Fatal(err)
	}
	sc := sse.NewScanner(1 << 20)
	var datas [][]byte
	sc.Fill(bytes.NewReader(stream), len(stream))
	sc.End()
	for {
		ev, ok, err := sc.Next()
		if err != nil || !ok {
			break
		}
		if ev.HasData {
			datas = append(datas, append([]byte(nil), ev.Data...))
		}
	}
	if len(datas) < 5 {
		t.Fatalf("%d events recorded", len(datas))
	}
	var m messageEvents
	run := func() {
		m = messageEvents{maxOutput: 1000}
		for _, d := range datas {
			m.Read(d)
		}
	}
	run()
	if n := testing.AllocsPerRun(500, run); n != 0 {
		t.Fatalf("%v allocations per stream of %d events, want 0", n, len(datas))
	}
	if !m.final || m.tokens().Completion == 0 {
		t.Fatalf("the stream's usage was not read: %+v", m)
	}
}

// TestAllocsMessagesStreamPerEvent: a longer native stream costs the
// gateway no more allocations than a short one: the relay allocates per
// stream, never per event. Both run whole through real sockets, the
// client reading into a fixed buffer.
func TestAllocsMessagesStreamPerEvent(t *testing.T) {
	_, up := startMock(t, mock.Options{Chunks: 1000, Anthropic: mock.AnthropicOptions{APIKey: providerKey}})
	g := startGateway(t, yamlClaude(up, deadURL(t)), "")
	key := g.newKey("all").Key
	c := &fasthttp.Client{}
	buf := make([]byte, 64<<10)
	streamOf := func(tokens int) func() {
		body := []byte(`{"model":"mock","stream":true,"max_tokens":` + itoa(tokens) + `,"messages":[{"role":"user","content":"count"}]}`)
		return func() {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI(g.url + "/v1/messages")
			req.Header.SetMethod("POST")
			req.Header.Set("x-api-key", key)
			req.SetBodyRaw(body)
			resp.StreamBody = true
			if err := c.Do(req, resp); err != nil {
				t.Fatal(err)
			}
			// The stream's last bytes, across reads.
			var tail [64]byte
			tn := 0
			r := resp.BodyStream()
			for {
				n, err := r.Read(buf)
				if data := buf[:n]; len(data) >= len(tail) {
					tn = copy(tail[:], data[len(data)-len(tail):])
				} else if n > 0 {
					keep := min(tn, len(tail)-len(data))
					copy(tail[:keep], tail[tn-keep:tn])
					tn = keep + copy(tail[keep:], data)
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if resp.StatusCode() != 200 || !bytes.HasSuffix(tail[:tn], []byte("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")) {
				t.Fatalf("%d %q", resp.StatusCode(), tail[:tn])
			}
		}
	}
	short, long := streamOf(10), streamOf(1000)
	for range 20 {
		short()
		long()
	}
	a, b := testing.AllocsPerRun(50, short), testing.AllocsPerRun(50, long)
	t.Logf("allocations per stream: %v for 10 events of text, %v for 1000", a, b)
	// A per-event allocation would add some thousand; a margin of ten
	// keeps the test blind to the rare allocation of a background goroutine
	// during the longer stream.
	if b > a+10 {
		t.Fatalf("a stream of 1000 text events allocates %v, one of 10 %v: the relay allocates per event", b, a)
	}
}
