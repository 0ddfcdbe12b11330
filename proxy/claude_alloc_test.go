//go:build !race

package proxy

import (
	"bytes"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/proxy/anthropic"
)

// TestAllocsServeChatClaude: a chat request translated for an anthropic
// route allocates exactly what the two translations allocate on their own
// (anthropic.ChatToMessages decodes the request, MessageToChat the answer:
// they run once per request, BenchmarkChatToMessages) and nothing more:
// building the upstream request, its headers, relaying and billing the
// answer add no allocation to the gateway's 0 (TestAllocsServeChat).
func TestAllocsServeChatClaude(t *testing.T) {
	g := startGateway(t, claudeStaticYAML(startUpstream(t, staticMessages)), "")
	key := g.newKey("all").Key
	body := bytes.Replace(benchBody, []byte(`"gpt-4o-mini"`), []byte(`"claude"`), 1)
	req := []byte("POST /v1/chat/completions HTTP/1.1\r\nHost: tokenhub\r\nContent-Type: application/json\r\nAccept: application/json\r\n" +
		"anthropic-beta: prompt-caching-2024-07-31\r\n" +
		"Authorization: Bearer " + key + "\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + string(body))
	c := newFakeConn(g.srv)
	serve := func() {
		c.reset(req)
		if err := g.srv.http.ServeConn(c); err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(c.status(), []byte("HTTP/1.1 200")) || !bytes.Contains(c.body(), []byte(`"content":"Hello!"`)) {
			t.Fatalf("answer: %s", c.w.Bytes())
		}
	}
	warmServe(t, g, serve)
	served := testing.AllocsPerRun(2000, serve)

	buf := make([]byte, 0, 4096)
	opts := anthropic.RequestOptions{Model: "claude-sonnet-4-6", APIVersion: anthropic.Version20230601, DefaultMaxTokens: 4096}
	translate := func() {
		var err error
		if buf, _, err = anthropic.ChatToMessages(buf[:0], body, opts); err != nil {
			t.Fatal(err)
		}
		if buf, _, err = anthropic.MessageToChat(buf[:0], staticMessagesBody, anthropic.ResponseOptions{Model: "claude", Created: 1}); err != nil {
			t.Fatal(err)
		}
	}
	translate()
	translations := testing.AllocsPerRun(2000, translate)
	t.Logf("%v allocations per request, of which the translations' %v", served, translations)
	if served != translations {
		t.Errorf("%v allocations per request, want the translations' %v alone", served, translations)
	}
}

// TestAllocsClaudeStreamPerEvent: a translated stream allocates nothing
// per event: over real sockets, a stream of 4000 text deltas (400 KB, a
// hundred upstream reads and client writes) costs the gateway, with the
// loopback client and upstream around it, what one of 4 does within a
// couple of allocations, which a chat stream of 4000 chunks shows as well
// (the pools of per-read buffers, shared across the relay's goroutines,
// now and then make one): 4000 allocations would be one an event.
func TestAllocsClaudeStreamPerEvent(t *testing.T) {
	short, long := staticMessagesStream(4), staticMessagesStream(4000)
	up := startUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentTypeBytes(contentTypeSSE)
		if bytes.Equal(ctx.Request.Header.Peek("anthropic-beta"), []byte("long")) {
			ctx.SetBody(long)
			return
		}
		ctx.SetBody(short)
	})
	g := startGateway(t, claudeStaticYAML(up), "")
	key := g.newKey("all").Key
	body := []byte(`{"model":"claude","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"count"}]}`)
	c := &fasthttp.Client{}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	stream := func(beta string, deltas int) func() {
		return func() {
			req.Reset()
			req.SetRequestURI(g.url + "/v1/chat/completions")
			req.Header.SetMethod("POST")
			req.Header.Set("Authorization", "Bearer "+key)
			req.Header.Set("anthropic-beta", beta)
			req.SetBodyRaw(body)
			if err := c.Do(req, resp); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode() != 200 || !bytes.HasSuffix(resp.Body(), []byte("data: [DONE]\n\n")) ||
				bytes.Count(resp.Body(), []byte(`"content":" word"`)) != deltas {
				t.Fatalf("%d %q", resp.StatusCode(), resp.Body())
			}
		}
	}
	shortRun, longRun := stream("short", 4), stream("long", 4000)
	for range 50 {
		shortRun()
		longRun()
	}
	a, b := testing.AllocsPerRun(100, shortRun), testing.AllocsPerRun(100, longRun)
	t.Logf("%v allocations per stream of 4 deltas, %v per stream of 4000", a, b)
	if b-a > 3 {
		t.Errorf("%v allocations per stream of 4000 deltas, %v per stream of 4: want none per event", b, a)
	}
}

// staticMessagesStream is a Messages stream of n text deltas, as Anthropic
// sends it.
func staticMessagesStream(n int) []byte {
	b := []byte("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\"," +
		"\"model\":\"claude-sonnet-4-6\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":9," +
		"\"cache_read_input_tokens\":0,\"cache_creation_input_tokens\":0,\"output_tokens\":1}}}\n\n" +
		"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n")
	for range n {
		b = append(b, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" word\"}}\n\n"...)
	}
	b = append(b, "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"+
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":"...)
	b = append(b, itoa(n)...)
	return append(b, "}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"...)
}
