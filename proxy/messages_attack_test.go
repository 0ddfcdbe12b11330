package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/tokenhub/tokenhub/internal/eventually"
	"github.com/tokenhub/tokenhub/internal/mock"
	"github.com/tokenhub/tokenhub/internal/upstreamtest"
)

// wantAnthropicError fails t unless an answer is Anthropic's error shape
// with status and type, and the request-id the SDKs report.
func wantAnthropicError(t *testing.T, status int, hdr http.Header, body []byte, wantStatus int, wantType string) {
	t.Helper()
	prefix := `{"type":"error","error":{"type":"` + wantType + `","message":"`
	if status != wantStatus || !strings.HasPrefix(string(body), prefix) || hdr.Get("Request-Id") == "" {
		t.Fatalf("got %d %s (request-id %q), want %d %s with a request-id", status, body, hdr.Get("Request-Id"), wantStatus, prefix)
	}
}

// TestMessagesTakenRequestIsNotSentAgain: an Anthropic upstream that reads
// the whole Messages request and closes without answering may have run it:
// the client gets a 502 api_error, the request reaches no upstream a
// second time (the next route included), and nothing is billed for it.
func TestMessagesTakenRequestIsNotSentAgain(t *testing.T) {
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprint("stream=", stream), func(t *testing.T) {
			dropper := upstreamtest.Start(t, upstreamtest.Drop)
			good, goodURL := startMock(t, mock.Options{Anthropic: mock.AnthropicOptions{APIKey: providerKey}})
			g := startGateway(t, fmt.Sprintf(`
upstreams:
  - {name: dropper, kind: anthropic, base_url: %q, api_key: %q}
  - {name: good, kind: anthropic, base_url: %q, api_key: %q}
models:
  - {name: claude, routes: [{upstream: dropper, model: mock, weight: 1000}, {upstream: good, model: mock, weight: 1}]}
plans:
  - {name: all, models: ["*"]}
`, dropper.URL, providerKey, goodURL, providerKey), "")
			k := g.newKey("all")
			body := []byte(fmt.Sprintf(`{"model":"claude","max_tokens":3,"stream":%v,"messages":[{"role":"user","content":"bill me once"}]}`, stream))
			dropped, served := 0, 0
			for i := range 10 {
				before, beforeGood := dropper.Receipts(), good.Requests()
				st, hdr, b := g.do("POST", "/v1/messages", k.Key, body)
				toDropper, toGood := dropper.Receipts()-before, good.Requests()-beforeGood
				switch {
				case toDropper == 1 && toGood == 0:
					wantAnthropicError(t, st, hdr, b, http.StatusBadGateway, "api_error")
					dropped++
				case toDropper == 0 && toGood == 1 && st == http.StatusOK:
					served++
				default:
					t.Fatalf("request %d: %d %s; reached the dropper %d times and the next route %d times, want one upstream once",
						i, st, b[:min(len(b), 200)], toDropper, toGood)
				}
			}
			if dropped == 0 {
				t.Fatal("no request started on the dropping route (weight 1000 to 1)")
			}
			if u := g.usageDetail(k.ID); u.Completion != int64(3*served) {
				t.Fatalf("billed %d completion tokens for %d answered and %d dropped requests, want %d", u.Completion, served, dropped, 3*served)
			}
		})
	}
}

// TestMessagesBodyTooLarge: a Messages body past max_body_bytes is a 413
// request_too_large in Anthropic's shape, whether declared or sent chunked,
// and reaches no upstream.
func TestMessagesBodyTooLarge(t *testing.T) {
	m, up := startMock(t, mock.Options{Anthropic: mock.AnthropicOptions{APIKey: providerKey}})
	_, oai := startMock(t, mock.Options{})
	g := startGateway(t, "max_body_bytes: 64KiB\n"+yamlClaude(up, oai), "")
	k := g.newKey("all").Key
	big := []byte(`{"model":"claude","max_tokens":3,"messages":[{"role":"user","content":"` + strings.Repeat("a", 80<<10) + `"}]}`)
	st, hdr, b := g.do("POST", "/v1/messages", "", big, "x-api-key", k)
	wantAnthropicError(t, st, hdr, b, http.StatusRequestEntityTooLarge, "request_too_large")

	req, err := http.NewRequest("POST", g.url+"/v1/messages", strings.NewReader(string(big)))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = -1 // chunked
	req.Header.Set("x-api-key", k)
	req.Header.Set("content-type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	wantAnthropicError(t, resp.StatusCode, resp.Header, b, http.StatusRequestEntityTooLarge, "request_too_large")
	if m.Requests() != 0 {
		t.Fatalf("the upstream got %d requests, want none", m.Requests())
	}
}

// TestMessagesSlowBody: a Messages client that stops sending its body is
// cut at read_timeout with a 408 in Anthropic's shape (the beta client's
// ?beta=true too), and what its body reserved comes back.
func TestMessagesSlowBody(t *testing.T) {
	m, up := startMock(t, mock.Options{Anthropic: mock.AnthropicOptions{APIKey: providerKey}})
	_, oai := startMock(t, mock.Options{})
	g := startGateway(t, "server: {read_timeout: 1s}\n"+yamlClaude(up, oai), "")
	k := g.newKey("all").Key
	c, err := net.Dial("tcp", strings.TrimPrefix(g.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "POST /v1/messages?beta=true HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nx-api-key: "+k+
		"\r\nContent-Length: 1000\r\n\r\n{"); err != nil {
		t.Fatal(err)
	}
	resp, body := readAnswer(t, c, bufio.NewReader(c))
	wantAnthropicError(t, resp.StatusCode, resp.Header, []byte(body), http.StatusRequestTimeout, "invalid_request_error")
	eventually.True(t, "the budget whole after the read timeout", func() bool { return g.srv.bodies.inUse() == 0 })
	if m.Requests() != 0 {
		t.Fatalf("the upstream got %d requests, want none", m.Requests())
	}
}
