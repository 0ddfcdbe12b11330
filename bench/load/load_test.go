package load

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/internal/mock"
)

// startMock serves a mock with o on 127.0.0.1 until the test ends.
func startMock(t *testing.T, o mock.Options) (*mock.Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := mock.New(o)
	srv := &fasthttp.Server{Handler: s.Handler}
	go srv.Serve(ln) // ends at shutdown
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.ShutdownWithContext(ctx)
	})
	return s, ln.Addr().String()
}

func chatConfig(t *testing.T, addr string) Config {
	t.Helper()
	sc, err := NewScenario("chat", "mock-bench", 16)
	if err != nil {
		t.Fatal(err)
	}
	sc.Request.Headers = []Header{{"Authorization", "Bearer sk-test"}}
	return Config{Addr: addr, Request: sc.Request, Conns: 4, Warmup: 50 * time.Millisecond, Duration: 300 * time.Millisecond}
}

func TestRunAgainstMock(t *testing.T) {
	_, addr := startMock(t, mock.Options{})
	res, err := Run(context.Background(), chatConfig(t, addr))
	if err != nil {
		t.Fatal(err)
	}
	// How many fit in the window is the machine's business; that all are
	// correct and the window is kept is the generator's.
	if res.OK == 0 || res.Errors != 0 || res.Requests != res.OK || res.ErrorsByKind != nil {
		t.Fatalf("result %+v: want correct answers and no errors", res)
	}
	if res.Elapsed < 300*time.Millisecond || res.Elapsed > 30*time.Second {
		t.Fatalf("elapsed %v, want the 300ms window (and far less than 30s)", res.Elapsed)
	}
	if want := float64(res.OK) / res.Elapsed.Seconds(); res.Throughput != want {
		t.Fatalf("throughput %v, want %v", res.Throughput, want)
	}
	l := res.Latency
	if !(0 < l.Min && l.Min <= l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max && l.Mean <= l.Max) {
		t.Fatalf("latencies out of order: %+v", l)
	}
	if _, err := json.Marshal(res); err != nil {
		t.Fatalf("marshal: %v", err)
	}
}

func TestRunScenarios(t *testing.T) {
	_, addr := startMock(t, mock.Options{EmbeddingDims: 8})
	for _, name := range ScenarioNames() {
		sc, err := NewScenario(name, "m", 4)
		if err != nil {
			t.Fatal(err)
		}
		res, err := Run(context.Background(), Config{Addr: addr, Request: sc.Request, Conns: 2, Requests: 20, Duration: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if res.OK != 20 || res.Errors != 0 {
			t.Fatalf("%s: %+v, want 20 correct answers", name, res)
		}
	}
	if _, err := NewScenario("nope", "m", 4); err == nil || !strings.Contains(err.Error(), "chat, stream, embeddings") {
		t.Fatalf("unknown scenario: %v", err)
	}
}

func TestRunRequestCount(t *testing.T) {
	s, addr := startMock(t, mock.Options{})
	c := chatConfig(t, addr)
	c.Warmup, c.Duration, c.Requests = 0, 10*time.Second, 250
	res, err := Run(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 250 || res.OK != 250 || s.Requests() != 250 {
		t.Fatalf("requests %d, ok %d, mock saw %d: want exactly 250", res.Requests, res.OK, s.Requests())
	}
}

func TestRunErrors(t *testing.T) {
	f := func(name string, o mock.Options, expect string, wantKind string) {
		t.Helper()
		_, addr := startMock(t, o)
		c := chatConfig(t, addr)
		c.Warmup, c.Requests = 0, 40
		if expect != "" {
			c.Request.Expect = []byte(expect)
		}
		res, err := Run(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		if res.OK != 0 || res.Errors != 40 || len(res.ErrorsByKind) != 1 || res.ErrorsByKind[wantKind] != 40 || res.Throughput != 0 {
			t.Fatalf("%s: %+v, want 40 errors of kind %s", name, res, wantKind)
		}
	}
	f("status", mock.Options{Status: 503}, "", "503")
	f("wrong body", mock.Options{}, `"object":"text_completion"`, "bad_body")
}

func TestRunRefused(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	c := chatConfig(t, addr)
	c.Warmup, c.Duration = 0, 100*time.Millisecond
	res, err := Run(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 0 || res.Errors == 0 || res.ErrorsByKind["conn_refused"] != res.Errors {
		t.Fatalf("%+v, want only conn_refused errors", res)
	}
}

func TestRunCancel(t *testing.T) {
	_, addr := startMock(t, mock.Options{})
	c := chatConfig(t, addr)
	c.Duration = time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	begin := time.Now()
	res, err := Run(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	// Stopping "at once" is judged against the minute the run would last.
	if took := time.Since(begin); took > 30*time.Second || res.OK == 0 {
		t.Fatalf("took %v with %d answers: a cancelled run must stop at once with what it has", took, res.OK)
	}

	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	c.Warmup = time.Minute
	if _, err := Run(ctx, c); err == nil || !strings.Contains(err.Error(), "warmup") {
		t.Fatalf("cancelled in the warmup: %v", err)
	}
}

func TestConfigCheck(t *testing.T) {
	f := func(c Config, want string) {
		t.Helper()
		_, err := Run(context.Background(), c)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%+v: error %v, want one containing %q", c, err, want)
		}
	}
	ok := Config{Addr: "127.0.0.1:1", Conns: 1, Duration: time.Second, Request: Request{Path: "/v1/models"}}
	c := ok
	c.Addr = "10.1.2.3:80"
	f(c, "only loopback")
	c.Addr = "example.com:80"
	f(c, "only loopback")
	c.Addr = "127.0.0.1"
	f(c, "missing port")
	c = ok
	c.Conns = 0
	f(c, "conns 0")
	c = ok
	c.Duration = 0
	f(c, "set a duration")
	c = ok
	c.Request.Path = "v1"
	f(c, "absolute path")
}
