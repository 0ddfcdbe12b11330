//go:build !race

package proxy

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// fakeConn feeds one request to fasthttp's ServeConn and keeps what it writes,
// as fasthttp's own TestAllocationServeConn does, so the whole server path is
// measured, not just the handler.
type fakeConn struct {
	net.Conn
	r bytes.Reader
	w bytes.Buffer
}

var fakeAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1234}

func (c *fakeConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *fakeConn) Write(p []byte) (int, error)      { return c.w.Write(p) }
func (c *fakeConn) Close() error                     { return nil }
func (c *fakeConn) LocalAddr() net.Addr              { return fakeAddr }
func (c *fakeConn) RemoteAddr() net.Addr             { return fakeAddr }
func (c *fakeConn) SetDeadline(time.Time) error      { return nil }
func (c *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fakeConn) SetWriteDeadline(time.Time) error { return nil }
func (c *fakeConn) reset(req []byte)                 { c.r.Reset(req); c.w.Reset() }
func (c *fakeConn) status() []byte                   { return c.w.Bytes()[:min(12, c.w.Len())] }
func (c *fakeConn) body() []byte                     { return c.w.Bytes()[bytes.Index(c.w.Bytes(), []byte("\r\n\r\n"))+4:] }

// staticChat is an upstream that allocates nothing, so the count below is the
// gateway's alone (AllocsPerRun counts every goroutine).
var staticChatBody = []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"mock","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}`)

func staticChat(ctx *fasthttp.RequestCtx) {
	ctx.SetContentTypeBytes(contentTypeJSON)
	ctx.SetBody(staticChatBody)
}

func TestAllocsServeChat(t *testing.T) {
	g := startGateway(t, yamlModels(startUpstream(t, staticChat)), "")
	key := g.newKey("all").Key
	for _, model := range []string{"mock", "alias"} { // as is, and renamed for the upstream
		body := bytes.Replace(benchBody, []byte(`"gpt-4o-mini"`), []byte(`"`+model+`"`), 1)
		req := []byte("POST /v1/chat/completions HTTP/1.1\r\nHost: tokenhub\r\nContent-Type: application/json\r\n" +
			"Authorization: Bearer " + key + "\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + string(body))
		var c fakeConn
		serve := func() {
			c.reset(req)
			if err := g.srv.http.ServeConn(&c); err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(c.status(), []byte("HTTP/1.1 200")) || !bytes.Equal(c.body(), staticChatBody) {
				t.Fatalf("answer: %s", c.w.Bytes())
			}
		}
		for range 200 { // warm pools, the key cache (ristretto applies sets asynchronously) and upstream conns
			serve()
		}
		time.Sleep(50 * time.Millisecond)
		if n := testing.AllocsPerRun(2000, serve); n != 0 {
			t.Errorf("model %s: %v allocations per request, want 0", model, n)
		}
	}
}

func itoa(n int) string { return string(fasthttp.AppendUint(nil, n)) }
