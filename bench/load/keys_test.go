package load

import (
	"context"
	"fmt"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/internal/mock"
)

func secrets(n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf("sk-%06d", i)
	}
	return s
}

// draw returns how often each of n keys is drawn in draws picks.
func draw(k *Keys, draws int) []int {
	var cycle atomic.Uint64
	p := newKeyPicker(k, k.bearers(), &cycle, 1)
	counts := make([]int, len(k.Secrets))
	for range draws {
		counts[p.index()]++
	}
	return counts
}

func TestKeyDistributions(t *testing.T) {
	const n, draws = 1000, 200_000
	f := func(name string, k Keys, check func(counts []int) string) {
		t.Helper()
		k.Secrets = secrets(n)
		if err := k.check(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if msg := check(draw(&k, draws)); msg != "" {
			t.Fatalf("%s: %s", name, msg)
		}
	}
	// Zipf's expected share of the first key: 1 / sum over k of (k+1)^-s.
	zipfFirst := func(s float64) float64 {
		h := 0.0
		for k := range n {
			h += math.Pow(float64(k+1), -s)
		}
		return 1 / h
	}

	f("cycle sends each key in turn", Keys{Dist: Cycle}, func(c []int) string {
		for i, got := range c {
			if got != draws/n {
				return fmt.Sprintf("key %d drawn %d times, want %d", i, got, draws/n)
			}
		}
		return ""
	})
	f("uniform draws every key alike", Keys{Dist: Uniform}, func(c []int) string {
		// 200 expected per key; 5.5 standard deviations is about 80.
		for i, got := range c {
			if got < 120 || got > 280 {
				return fmt.Sprintf("key %d drawn %d times, want about %d", i, got, draws/n)
			}
		}
		return ""
	})
	for _, s := range []float64{0, 1.5} {
		want := zipfFirst(s)
		if s == 0 {
			want = zipfFirst(DefaultZipfS)
		}
		f(fmt.Sprintf("zipf %v crowds onto the first keys", s), Keys{Dist: Zipf, ZipfS: s}, func(c []int) string {
			first := float64(c[0]) / draws
			if math.Abs(first-want) > want/20 {
				return fmt.Sprintf("first key has %.3f of the draws, want %.3f", first, want)
			}
			if !(c[0] > c[1] && c[1] > c[9] && c[9] > c[99]) {
				return fmt.Sprintf("counts not falling: key 0 %d, 1 %d, 9 %d, 99 %d", c[0], c[1], c[9], c[99])
			}
			return ""
		})
	}
}

func TestKeysCheck(t *testing.T) {
	f := func(k Keys, want string) {
		t.Helper()
		err := k.check()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%+v: %v, want an error containing %q", k, err, want)
		}
	}
	f(Keys{}, "0 secrets")
	f(Keys{Secrets: secrets(2), Dist: Zipf, ZipfS: 1}, "zipf exponent 1")
	f(Keys{Secrets: secrets(2), Dist: Zipf, ZipfS: math.NaN()}, "zipf exponent NaN")
	f(Keys{Secrets: secrets(2), Dist: Dist(7)}, "Dist(7)")
}

// TestRunKeys: every request carries its drawn key, in place of the
// request's own Authorization.
func TestRunKeys(t *testing.T) {
	var mu sync.Mutex
	seen := make(map[string]int)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		mu.Lock()
		seen[string(ctx.Request.Header.Peek("Authorization"))]++
		mu.Unlock()
		ctx.SetBodyString("ok")
	}}
	go srv.Serve(ln) // ends at shutdown
	t.Cleanup(func() { _ = srv.Shutdown() })

	keys := &Keys{Secrets: secrets(10), Dist: Cycle}
	res, err := Run(context.Background(), Config{
		Addr: ln.Addr().String(), Conns: 3, Requests: 100, Duration: 10 * time.Second,
		Request: Request{Method: "GET", Path: "/", Headers: []Header{{"Authorization", "Bearer sk-test"}}, Keys: keys},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 100 || len(seen) != 10 {
		t.Fatalf("%d answers, keys seen %v: want 100 over the 10 keys", res.OK, seen)
	}
	for _, s := range keys.Secrets {
		if n := seen["Bearer "+s]; n != 10 {
			t.Fatalf("key %s sent %d times, want 10: %v", s, n, seen)
		}
	}
	if _, err := RunStreams(context.Background(), Config{Addr: ln.Addr().String(), Conns: 1, Requests: 1,
		Request: Request{Path: "/", Keys: keys}}); err == nil {
		t.Fatal("RunStreams accepted Request.Keys")
	}
}

// TestRunAddrs: with several targets the workers are dealt out among them.
func TestRunAddrs(t *testing.T) {
	c := Config{Addrs: []string{"127.0.0.1:1", "127.0.0.1:2"}, Conns: 5}
	r := newRun(&c)
	if len(r.clients) != 2 || r.clients[0].MaxConns != 3 || r.clients[1].MaxConns != 2 {
		t.Fatalf("5 workers over 2 targets: clients %d, connections %d and %d; want 3 and 2",
			len(r.clients), r.clients[0].MaxConns, r.clients[1].MaxConns)
	}
	ws := r.workers()
	defer releaseWorkers(ws)
	for i, w := range ws {
		if w.client != r.clients[i%2] {
			t.Fatalf("worker %d sends to %s", i, w.client.Addr)
		}
	}

	s1, addr1 := startMock(t, mock.Options{})
	s2, addr2 := startMock(t, mock.Options{})
	c = chatConfig(t, "")
	c.Addr, c.Addrs, c.Warmup, c.Duration = "", []string{addr1, addr2}, 0, 300*time.Millisecond
	res, err := Run(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	n1, n2 := s1.Requests(), s2.Requests()
	// Each target has half the workers; how many requests each answers
	// depends on the scheduler, but neither goes without.
	if res.OK == 0 || res.Errors != 0 || n1+n2 != res.Requests || n1 < res.Requests/5 || n2 < res.Requests/5 {
		t.Fatalf("%d answers, targets saw %d and %d: want them split between the two", res.OK, n1, n2)
	}
	c.Conns = 1
	if _, err := Run(context.Background(), c); err == nil || !strings.Contains(err.Error(), "want 2 (one per target)") {
		t.Fatalf("one worker for two targets: %v", err)
	}
}

// TestRunRefusals: expected refusals are counted apart from errors, and only
// if they have what the Refusal asks for.
func TestRunRefusals(t *testing.T) {
	_, addr := startMock(t, mock.Options{Status: 429})
	f := func(name string, r Refusal, wantRefused uint64, wantKind string) {
		t.Helper()
		c := chatConfig(t, addr)
		c.Warmup, c.Requests, c.Request.Refusal = 0, 40, r
		res, err := Run(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		if res.Requests != 40 || res.OK != 0 || res.Refused != wantRefused || res.Throughput != 0 {
			t.Fatalf("%s: %+v, want %d refused", name, res, wantRefused)
		}
		if wantKind == "" && (res.Errors != 0 || res.RefusedLatency == nil || res.RefusedLatency.P50 <= 0) {
			t.Fatalf("%s: %+v, want no errors and the refusals' latencies", name, res)
		}
		if wantKind != "" && (res.ErrorsByKind[wantKind] != 40 || res.RefusedLatency != nil) {
			t.Fatalf("%s: %+v, want 40 errors of kind %s", name, res, wantKind)
		}
	}
	shape := [][]byte{[]byte(`"type":"requests"`), []byte(`"code":"rate_limit_exceeded"`)}
	f("a refusal is not an error", Refusal{Status: 429, Expect: shape}, 40, "")
	f("without a refusal, a 429 is", Refusal{}, 0, "429")
	f("another status is", Refusal{Status: 402}, 0, "429")
	f("a refusal without its body", Refusal{Status: 429, Expect: [][]byte{[]byte(`"code":"insufficient_quota"`)}}, 0, "bad_refusal")
	f("a refusal without its headers", Refusal{Status: 429, Expect: shape, Headers: []string{"Retry-After"}}, 0, "bad_refusal")
}
