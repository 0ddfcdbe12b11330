package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/internal/eventually"
	"github.com/tokenhub/tokenhub/internal/mock"
)

// TestRequestCtxOfHeader pins what the body budget's header hook relies on:
// fasthttp calls HeaderReceived with the header of the RequestCtx its
// handler then gets, so requestCtxOf finds the request's connection.
func TestRequestCtxOfHeader(t *testing.T) {
	var fromHook atomic.Pointer[fasthttp.RequestCtx]
	var conns atomic.Int64
	srv := &fasthttp.Server{
		HeaderReceived: func(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
			fromHook.Store(requestCtxOf(h))
			return fasthttp.RequestConfig{}
		},
		Handler: func(ctx *fasthttp.RequestCtx) {
			got := fromHook.Swap(nil)
			if got != ctx || got.Conn() != ctx.Conn() || ctx.Conn() == nil {
				ctx.Error("the hook found another RequestCtx", fasthttp.StatusInternalServerError)
				return
			}
			ctx.SetBodyString(ctx.Conn().RemoteAddr().String())
		},
		ConnState: func(_ net.Conn, s fasthttp.ConnState) {
			if s == fasthttp.StateNew {
				conns.Add(1)
			}
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	for range 2 { // two connections, two requests each (keep-alive)
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		for _, body := range []string{"", "{}"} {
			fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			resp, got := readAnswer(t, c, br)
			if resp.StatusCode != http.StatusOK || got != c.LocalAddr().String() {
				t.Fatalf("%d %q, want 200 %q", resp.StatusCode, got, c.LocalAddr())
			}
		}
		c.Close()
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections served, want 2", n)
	}
}

// TestBodyCap pins bodyCap to what fasthttp allocates to read a body of a
// given length: the budget reserves it before fasthttp allocates.
func TestBodyCap(t *testing.T) {
	f := func(n int, want int64) {
		t.Helper()
		if got := bodyCap(int64(n)); got != want {
			t.Fatalf("bodyCap(%d) = %d, want %d", n, got, want)
		}
		// fasthttp takes body buffers from a sync.Pool: two collections
		// empty it, so the read below allocates.
		runtime.GC()
		runtime.GC()
		raw := fmt.Sprintf("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", n, strings.Repeat("a", n))
		var req fasthttp.Request
		if err := req.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
			t.Fatal(err)
		}
		if c := int64(cap(req.Body())); c > want || len(req.Body()) != n {
			t.Fatalf("fasthttp read %d bytes into a buffer of %d, over bodyCap(%d) = %d", len(req.Body()), c, n, want)
		}
	}
	f(1, 1)
	f(1000, 1024)
	f(1024, 1024)
	f(300<<10, 512<<10)
	f(5<<20+1, 8<<20)
	f(16<<20, 16<<20)
	if got := bodyCap(200 << 20); got != 200<<20 {
		t.Fatalf("bodyCap(200 MiB) = %d, want it unrounded", got)
	}
}

// writeFails is a connection whose writes fail: the client went away before
// the server's first write.
type writeFails struct {
	fakeConn
	inUseAtWrite int64
	budget       *bodyBudget
}

func (c *writeFails) Write([]byte) (int, error) {
	c.inUseAtWrite = c.budget.inUse()
	return 0, errors.New("connection reset by peer")
}

// acceptOnce is a listener with one connection to accept.
type acceptOnce struct {
	net.Listener
	c net.Conn
}

func (l acceptOnce) Accept() (net.Conn, error) { return l.c, nil }

// TestBodyReleasedOnClose: a request whose handler and error handler never
// run, here an "Expect: 100-continue" whose "100 Continue" cannot be
// written, gives back its reservation when fasthttp closes its connection.
func TestBodyReleasedOnClose(t *testing.T) {
	_, up := startMock(t, mock.Options{})
	g := startGateway(t, yamlModels(up), "")
	key := g.newKey("all").Key
	inner := &writeFails{budget: &g.srv.bodies}
	inner.reset([]byte("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key +
		"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n"))
	// The connection as the server's listener gives it.
	c, _ := g.srv.listener(acceptOnce{c: inner}).Accept()
	if err := g.srv.http.ServeConn(c); err == nil {
		t.Fatal("ServeConn succeeded though every write fails")
	}
	if inner.inUseAtWrite != 1024 {
		t.Fatalf("%d bytes reserved when 100 Continue was written, want 1024", inner.inUseAtWrite)
	}
	if got := g.srv.bodies.inUse(); got != 0 {
		t.Fatalf("%d bytes still reserved after the connection closed", got)
	}
}

// TestBodySlotAfterStream: a connection a stream relay handed back to
// fasthttp still finds its slot: a keyed body after a stream, on the same
// connection, is served and gives its reservation back.
func TestBodySlotAfterStream(t *testing.T) {
	_, up := startMock(t, mock.Options{})
	g := startGateway(t, yamlModels(up), "")
	key := g.newKey("all").Key
	c, err := net.Dial("tcp", strings.TrimPrefix(g.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for _, stream := range []bool{true, false, true, false} {
		body := fmt.Sprintf(`{"model":"mock","stream":%v,"messages":[{"role":"user","content":"hi"}]}`, stream)
		fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", key, len(body), body)
		resp, got := readAnswer(t, c, br)
		if resp.StatusCode != http.StatusOK || resp.Close {
			t.Fatalf("stream %v: %d close %v %s", stream, resp.StatusCode, resp.Close, got)
		}
		if stream && !strings.Contains(got, "data: [DONE]") {
			t.Fatalf("stream without its end: %s", got)
		}
		eventually.True(t, "the budget whole", func() bool { return g.srv.bodies.inUse() == 0 })
	}
}
