package proxy

import (
	"bytes"
	"net"
	"time"

	"github.com/valyala/fasthttp"
)

// fakeConn feeds one request to fasthttp's ServeConn and keeps what it writes,
// as fasthttp's own TestAllocationServeConn does, so the whole server path is
// measured, not just the handler. Like a connection of the server's
// listener, it has a slot in the body budget (see clientConn).
type fakeConn struct {
	net.Conn
	r    bytes.Reader
	w    bytes.Buffer
	slot bodySlot
}

func newFakeConn(s *Server) *fakeConn { return &fakeConn{slot: bodySlot{budget: &s.bodies}} }

var fakeAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1234}

func (c *fakeConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *fakeConn) Write(p []byte) (int, error)      { return c.w.Write(p) }
func (c *fakeConn) Close() error                     { c.slot.close(); return nil }
func (c *fakeConn) bodySlot() *bodySlot              { return &c.slot }
func (c *fakeConn) LocalAddr() net.Addr              { return fakeAddr }
func (c *fakeConn) RemoteAddr() net.Addr             { return fakeAddr }
func (c *fakeConn) SetDeadline(time.Time) error      { return nil }
func (c *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fakeConn) SetWriteDeadline(time.Time) error { return nil }
func (c *fakeConn) reset(req []byte)                 { c.r.Reset(req); c.w.Reset(); c.slot.closed.Store(false) }
func (c *fakeConn) status() []byte                   { return c.w.Bytes()[:min(12, c.w.Len())] }
func (c *fakeConn) body() []byte                     { return c.w.Bytes()[bytes.Index(c.w.Bytes(), []byte("\r\n\r\n"))+4:] }

// staticChat is an upstream that allocates nothing, so the count below is the
// gateway's alone (AllocsPerRun counts every goroutine).
var staticChatBody = []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"mock","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}`)

func staticChat(ctx *fasthttp.RequestCtx) {
	ctx.SetContentTypeBytes(contentTypeJSON)
	ctx.SetBody(staticChatBody)
}

func itoa(n int) string { return string(fasthttp.AppendUint(nil, n)) }

// staticMessagesBody is an Anthropic Messages answer, served by
// staticMessages without allocating.
var staticMessagesBody = []byte(`{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-6",` +
	`"content":[{"type":"text","text":"Hello!"}],"stop_reason":"end_turn","stop_sequence":null,` +
	`"usage":{"input_tokens":9,"cache_read_input_tokens":0,"cache_creation_input_tokens":0,"output_tokens":2}}`)

func staticMessages(ctx *fasthttp.RequestCtx) {
	ctx.SetContentTypeBytes(contentTypeJSON)
	ctx.SetBody(staticMessagesBody)
}

// claudeStaticYAML routes "claude" to an anthropic upstream at url on API
// version 2023-06-01, which takes benchBody's temperature.
func claudeStaticYAML(url string) string {
	return `
upstreams:
  - {name: anthropic, kind: anthropic, base_url: "` + url + `", api_key: sk-ant-bench, anthropic_version: "2023-06-01"}
models:
  - {name: claude, routes: [{upstream: anthropic, model: claude-sonnet-4-6}], max_output_tokens: 4096}
plans:
  - {name: all, models: ["*"]}
`
}
