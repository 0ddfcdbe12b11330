package load

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/internal/mock"
)

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// startCountingMock serves a mock with o on 127.0.0.1 until the test ends,
// counting its connections.
func startCountingMock(t *testing.T, o mock.Options) (*countingListener, string) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	cl := &countingListener{Listener: ln}
	srv := &fasthttp.Server{Handler: mock.New(o).Handler}
	go srv.Serve(cl) // ends at shutdown
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.ShutdownWithContext(ctx)
	})
	return cl, ln.Addr().String()
}

func streamScenario(t *testing.T, chunks int) Request {
	t.Helper()
	sc, err := NewScenario("stream", "mock-bench", chunks)
	if err != nil {
		t.Fatal(err)
	}
	sc.Request.Headers = []Header{{"Authorization", "Bearer sk-test"}}
	return sc.Request
}

func TestRunStreamsAgainstMock(t *testing.T) {
	const latency, interval = 5 * time.Millisecond, 2 * time.Millisecond
	ln, addr := startCountingMock(t, mock.Options{Chunks: 8, ChunkInterval: interval, Latency: latency})
	res, err := RunStreams(context.Background(), Config{Addr: addr, Request: streamScenario(t, 8), Conns: 2, Requests: 20, Duration: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Streams != 20 || res.OK != 20 || res.Errors != 0 || res.ErrorsByKind != nil {
		t.Fatalf("result %+v: want 20 correct streams", res)
	}
	// The role, 8 words, the finish, the usage and [DONE].
	if res.Events != 12 {
		t.Fatalf("%v events per stream, want 12", res.Events)
	}
	if n := ln.accepted.Load(); n != 2 {
		t.Fatalf("%d connections for 2 workers: a worker must keep its connection from stream to stream", n)
	}
	// The first event follows the latency; the stream has 8 intervals more,
	// before the 7 words after the first and before the finish.
	f, s := res.FirstEvent, res.Stream
	// Across streams only what holds for each one holds for the aggregates:
	// a stream's first event comes before its end, so the least and the
	// greatest first event come before the least and greatest end. (A busy
	// machine may delay one stream's first event past another's end.)
	if f.Min < latency || f.Min > s.Min || f.Max > s.Max || s.Min < latency+8*interval {
		t.Fatalf("first event %+v, stream %+v: want the first event after %v and the stream after %v", f, s, latency, latency+8*interval)
	}
	if !(f.Min <= f.P50 && f.P50 <= f.P99 && f.P99 <= f.Max && s.Min <= s.P50 && s.P50 <= s.P99 && s.P99 <= s.Max) {
		t.Fatalf("latencies out of order: first event %+v, stream %+v", f, s)
	}
	if want := time.Duration(float64(s.Mean) / 12); res.PerEvent != want {
		t.Fatalf("per event %v, want %v", res.PerEvent, want)
	}
	if want := float64(20) / res.Elapsed.Seconds(); res.Throughput != want {
		t.Fatalf("throughput %v, want %v", res.Throughput, want)
	}
	if _, err := json.Marshal(res); err != nil {
		t.Fatalf("marshal: %v", err)
	}
}

func TestRunStreamsErrors(t *testing.T) {
	f := func(name string, o mock.Options, req Request, wantKind string) {
		t.Helper()
		_, addr := startCountingMock(t, o)
		res, err := RunStreams(context.Background(), Config{Addr: addr, Request: req, Conns: 2, Requests: 10, Duration: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if res.OK != 0 || res.Errors != 10 || len(res.ErrorsByKind) != 1 || res.ErrorsByKind[wantKind] != 10 || res.Throughput != 0 || res.Events != 0 {
			t.Fatalf("%s: %+v, want 10 errors of kind %s", name, res, wantKind)
		}
	}
	stream := streamScenario(t, 4)
	f("status", mock.Options{Status: 503}, stream, "503")
	f("cut mid-stream", mock.Options{FailAfterChunks: 2}, stream, "conn_closed")
	chat, err := NewScenario("chat", "m", 4)
	if err != nil {
		t.Fatal(err)
	}
	f("not a stream", mock.Options{}, chat.Request, "bad_body")
}

// serveRaw answers every request on 127.0.0.1 by calling answer with the
// connection, until the test ends.
func serveRaw(t *testing.T, answer func(w io.Writer)) (addr string, accepted *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = new(atomic.Int64)
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			wg.Go(func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body) // the test fails on the answer if not
					answer(c)
					if req.Close {
						return
					}
				}
			})
		}
	})
	return ln.Addr().String(), accepted
}

func TestStreamFraming(t *testing.T) {
	// Events split across chunks, as a proxy may relay them, a chunk
	// extension, a trailer, and Connection: close.
	const gap = 30 * time.Millisecond
	addr, accepted := serveRaw(t, func(w io.Writer) {
		io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"+
			"6\r\ndata: \r\n")
		time.Sleep(gap)
		io.WriteString(w, "a;x=y\r\n1\n\ndata: 2\r\n")
		io.WriteString(w, "10\r\n\n\ndata: [DONE]\n\n\r\n0\r\nX-Trailer: t\r\n\r\n")
	})
	res, err := RunStreams(context.Background(), Config{Addr: addr, Request: streamScenario(t, 2), Conns: 1, Requests: 3, Duration: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 3 || res.Errors != 0 || res.Events != 3 {
		t.Fatalf("%+v: want 3 correct streams of 3 events", res)
	}
	if res.FirstEvent.Min < gap || res.FirstEvent.Max > 5*time.Second {
		t.Fatalf("first event %+v: the first event is complete only after %v", res.FirstEvent, gap)
	}
	if n := accepted.Load(); n != 3 {
		t.Fatalf("%d connections: an answer with Connection: close must not be reused", n)
	}
}

func TestStreamNotChunked(t *testing.T) {
	addr, _ := serveRaw(t, func(w io.Writer) {
		io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 14\r\n\r\ndata: [DONE]\n\n")
	})
	res, err := RunStreams(context.Background(), Config{Addr: addr, Request: streamScenario(t, 2), Conns: 1, Requests: 2, Duration: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 0 || res.ErrorsByKind["bad_body"] != 2 {
		t.Fatalf("%+v: an answer of known length is not a relayed stream", res)
	}
}

func TestHold(t *testing.T) {
	// Each stream stays open about 600ms after its first event, far longer
	// than opening 50 on loopback takes.
	ln, addr := startCountingMock(t, mock.Options{Chunks: 3, ChunkInterval: 200 * time.Millisecond})
	calls := 0
	res, err := Hold(context.Background(), HoldConfig{Addr: addr, Request: streamScenario(t, 3), Streams: 50, Openers: 8, Timeout: 10 * time.Second},
		func(open int) {
			calls++
			if open != 50 {
				t.Errorf("%d streams open when all were opened, want 50", open)
			}
		})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 1 || res.Streams != 50 || res.Opened != 50 || res.Open != 50 || res.OK != 50 || res.Errors != 0 {
		t.Fatalf("%d calls, %+v: want one call and 50 streams opened and ended", calls, res)
	}
	if n := ln.accepted.Load(); n != 50 {
		t.Fatalf("%d connections, want one per stream", n)
	}
	if res.OpenTime <= 0 || res.OpenTime > 5*time.Second || res.FirstEvent.Max > res.OpenTime {
		t.Fatalf("open time %v, first event %+v", res.OpenTime, res.FirstEvent)
	}
}

func TestHoldErrors(t *testing.T) {
	_, addr := startCountingMock(t, mock.Options{Status: 429})
	res, err := Hold(context.Background(), HoldConfig{Addr: addr, Request: streamScenario(t, 3), Streams: 10}, func(open int) {
		if open != 0 {
			t.Errorf("%d open, want 0", open)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Opened != 0 || res.OK != 0 || res.Errors != 10 || res.ErrorsByKind["429"] != 10 {
		t.Fatalf("%+v: want 10 refusals", res)
	}
}

func TestHoldCancel(t *testing.T) {
	// Streams that would last a minute, cancelled as soon as they are open.
	// (The mock's own goroutines still sleep out their interval.)
	_, addr := startCountingMock(t, mock.Options{Chunks: 1, ChunkInterval: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	begin := time.Now()
	_, err := Hold(ctx, HoldConfig{Addr: addr, Request: streamScenario(t, 2), Streams: 20, Timeout: time.Minute}, func(int) { cancel() })
	if err == nil || !strings.Contains(err.Error(), "holding streams") {
		t.Fatalf("cancelled hold: %v", err)
	}
	if took := time.Since(begin); took > 30*time.Second {
		t.Fatalf("took %v: a cancelled hold must close its streams at once", took)
	}
}

func TestHoldCheck(t *testing.T) {
	f := func(c HoldConfig, want string) {
		t.Helper()
		_, err := Hold(context.Background(), c, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%+v: error %v, want one containing %q", c, err, want)
		}
	}
	ok := HoldConfig{Addr: "127.0.0.1:1", Streams: 1, Request: Request{Path: "/v1/chat/completions"}}
	c := ok
	c.Addr = "10.1.2.3:80"
	f(c, "only loopback")
	c = ok
	c.Streams = 0
	f(c, "streams 0")
	c = ok
	c.Streams = MaxHeld + 1
	f(c, "want 1 to")
	c = ok
	c.Request.Headers = []Header{{"X-Bad", "a\r\nb"}}
	f(c, "without line breaks")
}

func TestRawRequest(t *testing.T) {
	b, err := rawRequest("127.0.0.1:9", &Request{Path: "/v1/x", Headers: []Header{{"Authorization", "Bearer k"}}, Body: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	want := "POST /v1/x HTTP/1.1\r\nHost: 127.0.0.1:9\r\nAuthorization: Bearer k\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
	if string(b) != want {
		t.Fatalf("request %q, want %q", b, want)
	}
}
