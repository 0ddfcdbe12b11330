package proxy

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/tokenhub/tokenhub/internal/eventually"
	"github.com/tokenhub/tokenhub/internal/mock"
)

// chunked encodes parts as a chunked body, ended when last.
func chunked(last bool, parts ...string) string {
	var b strings.Builder
	for _, p := range parts {
		fmt.Fprintf(&b, "%x\r\n%s\r\n", len(p), p)
	}
	if last {
		b.WriteString("0\r\n\r\n")
	}
	return b.String()
}

// TestBodyBudget: a keyed request reserves its body from
// server.max_body_bytes_in_flight from its headers, as much as fasthttp will
// allocate for it (its length rounded up to a power of two; a chunked body,
// max_body_bytes so rounded); past the budget it is answered 503
// server_busy with retry-after, unread; and the reservation comes back on
// every path: the handler's end, 413, the client gone mid-body.
func TestBodyBudget(t *testing.T) {
	_, up := startMock(t, mock.Options{})
	g := startGateway(t, "max_body_bytes: 512KiB\nserver: {read_timeout: 10m, max_body_bytes_in_flight: 1MiB}\n"+yamlModels(up), "")
	key := g.newKey("all").Key
	inUse := func(want int64) func() bool { return func() bool { return g.srv.bodies.inUse() == want } }
	if got := g.srv.bodies.size; got != 1<<20 {
		t.Fatalf("budget %d, want 1 MiB", got)
	}

	// Two trickling clients declaring 300 KiB hold 512 KiB each: all of it.
	first, _ := dialDeclaring(t, g.url, "Bearer "+key, 300<<10, strings.Repeat(" ", 1<<10))
	eventually.True(t, "the first body reserved (512 KiB)", inUse(512<<10))
	second, _ := dialDeclaring(t, g.url, "Bearer "+key, 300<<10, strings.Repeat(" ", 1<<10))
	eventually.True(t, "both bodies reserved (1 MiB)", inUse(1<<20))

	c, br := dialDeclaring(t, g.url, "Bearer "+key, 1<<10, strings.Repeat(" ", 1<<10))
	resp, body := readAnswer(t, c, br)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" || !resp.Close ||
		!strings.Contains(body, `"type":"server_error"`) || !strings.Contains(body, `"code":"server_busy"`) {
		t.Fatalf("past the budget: %d retry-after %q close %v %s, want 503 server_busy, retry-after 1, Connection: close",
			resp.StatusCode, resp.Header.Get("Retry-After"), resp.Close, body)
	}
	// A request without a body needs none of the budget.
	if status, _, b := g.do("GET", "/v1/models", key, nil); status != http.StatusOK {
		t.Fatalf("GET /v1/models with the budget spent: %d %s", status, b)
	}

	second.Close()
	eventually.True(t, "the second client's reservation back after it left mid-body", inUse(512<<10))

	// Served requests give theirs back when the handler ends, before the
	// answer is written; several on one keep-alive connection.
	chat := []byte(`{"model":"mock","messages":[{"role":"user","content":"hi"}]}`)
	for range 3 {
		if status, _, b := g.do("POST", "/v1/chat/completions", key, chat); status != http.StatusOK {
			t.Fatalf("a small body beside the held one: %d %s", status, b)
		}
		if got := g.srv.bodies.inUse(); got != 512<<10 {
			t.Fatalf("after a served request %d bytes are reserved, want %d", got, 512<<10)
		}
	}
	// Declared over max_body_bytes: 413 from the headers, nothing reserved.
	c, br = dialDeclaring(t, g.url, "Bearer "+key, 600<<10, "{")
	if resp, body := readAnswer(t, c, br); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("declared over max_body_bytes: %d %s, want 413", resp.StatusCode, body)
	}
	if got := g.srv.bodies.inUse(); got != 512<<10 {
		t.Fatalf("after a 413 from the headers %d bytes are reserved, want %d", got, 512<<10)
	}

	first.Close()
	eventually.True(t, "the budget whole after the first client left", inUse(0))

	// A chunked body reserves max_body_bytes rounded up (1 MiB here): it
	// is refused while anything else is held...
	held, _ := dialDeclaring(t, g.url, "Bearer "+key, 1, "")
	eventually.True(t, "a 1-byte body reserved", inUse(1))
	c, br = dialDeclaring(t, g.url, "Bearer "+key, -1, chunked(true, "{}"))
	if resp, body := readAnswer(t, c, br); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("chunked body with 1 byte of the budget held: %d %s, want 503", resp.StatusCode, body)
	}
	held.Close()
	eventually.True(t, "the budget whole", inUse(0))
	// ... is 413 past max_body_bytes, and gives its reservation back...
	big := strings.Repeat("a", 64<<10)
	c, br = dialDeclaring(t, g.url, "Bearer "+key, -1, chunked(false, big, big, big, big, big, big, big, big, big, big))
	if resp, body := readAnswer(t, c, br); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked body over max_body_bytes: %d %s, want 413", resp.StatusCode, body)
	}
	eventually.True(t, "the budget whole after a chunked 413", inUse(0))
	// ... and is served when it fits.
	c, br = dialDeclaring(t, g.url, "Bearer "+key, -1, chunked(true, `{"model":`, `"mock","messages":[{"role":`, `"user","content":"hi"}]}`))
	if resp, body := readAnswer(t, c, br); resp.StatusCode != http.StatusOK {
		t.Fatalf("a small chunked body: %d %s", resp.StatusCode, body)
	}
	eventually.True(t, "the budget whole after a chunked request", inUse(0))
}

// TestBodyBudgetReadTimeout: a client that stops sending its body is cut at
// read_timeout (408) and its reservation comes back.
func TestBodyBudgetReadTimeout(t *testing.T) {
	_, up := startMock(t, mock.Options{})
	g := startGateway(t, "server: {read_timeout: 1s}\n"+yamlModels(up), "")
	key := g.newKey("all").Key
	c, br := dialDeclaring(t, g.url, "Bearer "+key, 100<<10, "{")
	eventually.True(t, "the body reserved (128 KiB)", func() bool { return g.srv.bodies.inUse() == 128<<10 })
	if resp, body := readAnswer(t, c, br); resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("a body stopped halfway: %d %s, want 408", resp.StatusCode, body)
	}
	eventually.True(t, "the budget whole after the read timeout", func() bool { return g.srv.bodies.inUse() == 0 })
}

// TestAdminBodyBounded: the Keys API's bodies are bounded and reserved like
// inference's: a chunked body past max_body_bytes is 413, a small one works,
// the log says nothing of what was sent, and the budget is whole afterwards.
func TestAdminBodyBounded(t *testing.T) {
	var log logBuffer
	_, up := startMock(t, mock.Options{})
	g := startNodeLogging(t, "max_body_bytes: 64KiB\nstore: {path: "+t.TempDir()+"}\n"+yamlModels(up), &log)
	send := func(raw string) (*http.Response, string) {
		c, err := net.Dial("tcp", strings.TrimPrefix(g.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "POST /v1/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n%s", g.adminKey, raw)
		return readAnswer(t, c, bufio.NewReader(c))
	}
	big := strings.Repeat("a", 16<<10)
	if resp, body := send(chunked(false, big, big, big, big, big, big, big, big)); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked 128 KiB to the Keys API: %d %s, want 413", resp.StatusCode, body)
	}
	if resp, body := send(chunked(true, `{"name":"c","plan":"all"}`)); resp.StatusCode != http.StatusCreated {
		t.Fatalf("small chunked create: %d %s", resp.StatusCode, body)
	}
	eventually.True(t, "the budget whole", func() bool { return g.srv.bodies.inUse() == 0 })
	if l := log.String(); strings.Contains(l, "aaaa") || strings.Contains(l, g.adminKey) {
		t.Fatalf("the log quotes a request:\n%s", l)
	}
}
