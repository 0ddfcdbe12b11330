package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/eventually"
	"github.com/tokenhub/tokenhub/internal/mock"
)

// floodConns is how many connections the attacker's tests open at once.
const floodConns = 200

// dialDeclaring opens a connection that sends a POST's headers declaring
// contentLength body bytes (chunked when negative), then the first bytes
// of its body, and nothing more: a trickling client.
func dialDeclaring(t *testing.T, url, auth string, contentLength int, first string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	h := "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
	if auth != "" {
		h += "Authorization: " + auth + "\r\n"
	}
	if contentLength < 0 {
		h += "Transfer-Encoding: chunked\r\n"
	} else {
		h += fmt.Sprintf("Content-Length: %d\r\n", contentLength)
	}
	if _, err := io.WriteString(c, h+"\r\n"+first); err != nil {
		t.Fatal(err)
	}
	return c, bufio.NewReader(c)
}

// readAnswer reads one response off br, with a deadline far above any honest
// answer and below the tests' read_timeout, so a hang fails.
func readAnswer(t *testing.T, c net.Conn, br *bufio.Reader) (*http.Response, string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestBodyFloodWithoutKey: connections declaring 16 MiB bodies without a key
// (or with a junk one) and trickling are answered 401 from their headers,
// without the gateway waiting for, or holding, their bodies; the connection
// closes (its unread body is not parsed as a next request).
func TestBodyFloodWithoutKey(t *testing.T) {
	_, up := startMock(t, mock.Options{})
	g := startGateway(t, "server: {read_timeout: 10m}\n"+yamlModels(up), "")
	before := heapInUse()
	type conn struct {
		c  net.Conn
		br *bufio.Reader
	}
	conns := make([]conn, floodConns)
	auths := []string{"", "Bearer junk", "Bearer sk-" + strings.Repeat("A", 49), "Basic Zm9vOmJhcg=="}
	for i := range conns {
		conns[i].c, conns[i].br = dialDeclaring(t, g.url, auths[i%len(auths)], 16<<20, "{")
	}
	for i, c := range conns {
		resp, body := readAnswer(t, c.c, c.br)
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `"invalid_api_key"`) {
			t.Fatalf("conn %d (%q): %d %s, want 401 invalid_api_key", i, auths[i%len(auths)], resp.StatusCode, body)
		}
		if !resp.Close {
			t.Fatalf("conn %d: 401 without Connection: close; the unread body would be read as the next request", i)
		}
	}
	grew := int64(heapInUse()) - int64(before)
	t.Logf("heap in use grew %.1f MiB for %d keyless connections declaring 16 MiB", float64(grew)/(1<<20), floodConns)
	if grew > 64<<20 {
		t.Fatalf("heap grew %d MiB for %d keyless connections", grew>>20, floodConns)
	}
}

// TestBodyFloodWithKey: with a valid key, 200 connections declaring 16 MiB
// and trickling hold at most server.max_body_bytes_in_flight (64 MiB by
// default): those that fit reserve it, every other one is answered 503
// server_busy with retry-after from its headers, /healthz answers meanwhile,
// and once the clients go the budget is whole again.
func TestBodyFloodWithKey(t *testing.T) {
	_, up := startMock(t, mock.Options{})
	g := startGateway(t, "server: {read_timeout: 10m}\n"+yamlModels(up), "")
	key := g.newKey("all").Key
	const declared = 16 << 20
	budget := g.srv.bodies.size
	fit := int(budget / declared)
	before := heapInUse()
	answers := make(chan string, floodConns)
	conns := make([]net.Conn, floodConns)
	for i := range conns {
		c, br := dialDeclaring(t, g.url, "Bearer "+key, declared, `{"model":"mock","messages":[`+strings.Repeat(" ", 10<<10))
		conns[i] = c
		go func() {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				answers <- "no answer: " + err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			answers <- fmt.Sprintf("%d retry-after=%s close=%v %s", resp.StatusCode, resp.Header.Get("Retry-After"), resp.Close, b)
		}()
	}
	timeout := time.After(60 * time.Second)
	for i := range floodConns - fit {
		select {
		case a := <-answers:
			if !strings.HasPrefix(a, "503 retry-after=1 close=true ") || !strings.Contains(a, `"code":"server_busy"`) {
				t.Fatalf("answer %d past the budget: %s, want 503 server_busy, retry-after 1, Connection: close", i, a)
			}
		case <-timeout:
			t.Fatalf("after 60s %d of the %d connections past the budget are answered (%d of %d bytes reserved)",
				i, floodConns-fit, g.srv.bodies.inUse(), budget)
		}
	}
	if got := g.srv.bodies.inUse(); got != int64(fit)*declared {
		t.Fatalf("%d body bytes reserved, want %d (%d bodies of 16 MiB)", got, int64(fit)*declared, fit)
	}
	if status, _, b := g.do("GET", "/healthz", "", nil); status != http.StatusOK {
		t.Fatalf("/healthz during the flood: %d %s", status, b)
	}
	grew := int64(heapInUse()) - int64(before)
	t.Logf("heap in use grew %.1f MiB for %d keyed connections declaring 16 MiB (budget %d MiB)", float64(grew)/(1<<20), floodConns, budget>>20)
	if grew > 128<<20 {
		t.Fatalf("heap grew %d MiB for %d keyed connections declaring 16 MiB", grew>>20, floodConns)
	}
	// The clients that fit leave mid-body: what they reserved comes back.
	for _, c := range conns {
		c.Close()
	}
	eventually.True(t, "the budget whole after the clients left", func() bool { return g.srv.bodies.inUse() == 0 })
}
