package mock

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/valyala/fasthttp"
)

// testServer is a mock served on a real loopback socket.
type testServer struct {
	*Server
	addr string // host:port
}

// start serves a mock with o on 127.0.0.1 until the test ends.
func start(t *testing.T, o Options) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := New(o)
	srv := &fasthttp.Server{Handler: s.Handler, NoDefaultServerHeader: true}
	go srv.Serve(ln) // ends at shutdown
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.ShutdownWithContext(ctx)
	})
	return &testServer{Server: s, addr: ln.Addr().String()}
}

// client returns an official SDK client for ts that never retries, so that
// every request the test makes reaches the mock exactly once.
func (ts *testServer) client(opts ...option.RequestOption) *openai.Client {
	base := []option.RequestOption{
		option.WithBaseURL("http://" + ts.addr + "/v1"),
		option.WithAPIKey("x"),
		option.WithMaxRetries(0),
		option.WithRequestTimeout(10 * time.Second),
	}
	c := openai.NewClient(append(base, opts...)...)
	return &c
}

// do sends a raw request to ts and returns the status and body.
func (ts *testServer) do(t *testing.T, method, path, body string, headers ...string) (int, string) {
	t.Helper()
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + ts.addr + path)
	req.Header.SetMethod(method)
	req.Header.SetContentType("application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	if body != "" {
		req.SetBodyString(body)
	}
	if err := fasthttp.DoTimeout(req, resp, 10*time.Second); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp.StatusCode(), string(resp.Body())
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestMentionsMock(t *testing.T) {
	f := func(raw string, want bool) {
		t.Helper()
		if got := mentionsMock([]byte(raw)); got != want {
			t.Fatalf("mentionsMock(%q) = %v, want %v", raw, got, want)
		}
	}
	f("Host: x\r\nContent-Type: a\r\nX-Mock-Latency: 1s\r\n", true)
	f("host: x\r\nx-mock-chunks: 3\r\n", true)
	f("X-MOCK-STATUS: 500\r\n", true)
	f("Host: x\r\nContent-Type: application/json\r\nUser-Agent: a-mock\r\n", false)
	f("Accept-Encoding: gzip\r\n", false)
	f("X-Mock", false)
	f("", false)
	f("-", false)
}
