package proxy

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/mock"
)

// startTwoRoutes runs a gateway whose model "m" has two routes of equal
// weight: to a mock upstream "bad" with the faults of o, and to a healthy
// mock "good" that answers after goodLatency. bad's requests time out after
// a second.
func startTwoRoutes(t *testing.T, o mock.Options, goodLatency time.Duration) (g *gateway, key string, bad, good *mock.Server) {
	t.Helper()
	bad, badURL := startMock(t, o)
	t.Cleanup(bad.Close) // before the mock's server shuts down: a hung request ends
	good, goodURL := startMock(t, mock.Options{Latency: goodLatency})
	g = startGateway(t, fmt.Sprintf(`
upstreams:
  - {name: bad, base_url: %q, timeout: 1s}
  - {name: good, base_url: %q}
models:
  - {name: m, routes: [{upstream: bad}, {upstream: good}]}
plans:
  - {name: all, models: ["*"]}
`, badURL, goodURL), "")
	return g, g.newKey("all").Key, bad, good
}

// TestTrafficLeavesTheBadRoute: with one of a model's two routes hung (it
// reads requests and never answers), failing half its requests with 500,
// ten times slower, or answering 429 with a retry-after, the first few
// requests may meet it, and then every request succeeds on the healthy
// route, which takes nearly all of them. Before routes knew their health,
// a request went to either route by weight alone: half of them timed out
// on the hung route, a quarter failed on the 500s when both routes did, and
// half waited ten times longer.
func TestTrafficLeavesTheBadRoute(t *testing.T) {
	f := func(name string, o mock.Options, goodLatency time.Duration) {
		t.Run(name, func(t *testing.T) {
			g, key, bad, _ := startTwoRoutes(t, o, goodLatency)
			const warmup, measured = 6, 40
			for range warmup {
				g.do("POST", "/v1/chat/completions", key, resendBody("m", false))
			}
			before := bad.Requests()
			for i := range measured {
				st, _, body := g.do("POST", "/v1/chat/completions", key, resendBody("m", false))
				if st != http.StatusOK {
					t.Fatalf("request %d after the first %d: %d %s", i, warmup, st, body)
				}
			}
			// The decayed latency of the bad route may win it a request
			// now and then on a slow machine; nearly all go to the good one.
			if n := bad.Requests() - before; n > 4 {
				t.Fatalf("the bad route got %d of the %d requests after the first %d, want at most 4", n, measured, warmup)
			}
		})
	}
	f("hung", mock.Options{Hang: true}, 0)
	f("half 500", mock.Options{ErrorRate: 0.5}, 0)
	f("10x latency", mock.Options{Latency: 200 * time.Millisecond}, 20*time.Millisecond)
	f("429 retry-after", mock.Options{Status: http.StatusTooManyRequests, RetryAfter: time.Minute}, 0)
}

// TestRouteHealthIsVisible: GET /admin/upstreams (admin key only) and
// /metrics show each route's state, latency, in-flight requests and
// ejections: here a route cooling down after a 429 with a retry-after,
// beside a healthy one that took the failover.
func TestRouteHealthIsVisible(t *testing.T) {
	g, key, bad, _ := startTwoRoutes(t, mock.Options{Status: http.StatusTooManyRequests, RetryAfter: time.Minute}, 0)
	for bad.Requests() == 0 {
		if st, _, body := g.do("POST", "/v1/chat/completions", key, resendBody("m", false)); st != http.StatusOK {
			t.Fatalf("%d %s", st, body)
		}
	}
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			Model, Upstream, State string
			Weight                 int
			Until                  *int64
			LatencyMS              *float64 `json:"latency_ms"`
			InFlight               int64    `json:"in_flight"`
			Ejections              int64
			ConsecutiveFailures    int `json:"consecutive_failures"`
		}
	}
	g.admin("GET", "/admin/upstreams", nil, http.StatusOK, &list)
	if list.Object != "list" || len(list.Data) != 2 {
		t.Fatalf("GET /admin/upstreams: %+v", list)
	}
	b, g0 := list.Data[0], list.Data[1]
	inAMinute := time.Now().Add(time.Minute).Unix()
	if b.Model != "m" || b.Upstream != "bad" || b.State != "cooling_down" || b.Ejections != 1 || b.InFlight != 0 ||
		b.Until == nil || *b.Until < inAMinute-5 || *b.Until > inAMinute+1 || b.LatencyMS == nil || *b.LatencyMS < 4000 {
		t.Fatalf("the 429 route: %+v, want cooling down for a minute with a failure's 5s latency", b)
	}
	if g0.Upstream != "good" || g0.State != "healthy" || g0.Until != nil || g0.LatencyMS == nil || g0.Ejections != 0 || g0.Weight != 1 {
		t.Fatalf("the good route: %+v", g0)
	}
	st, hdr, body := g.do("GET", "/admin/upstreams", key, nil)
	wantErrorBody(t, st, hdr, body, http.StatusForbidden, "admin_key_required")

	_, _, metrics := g.do("GET", "/metrics", "", nil)
	for _, want := range []string{
		`tokenhub_route_state{model="m",upstream="bad",state="cooling_down"} 1`,
		`tokenhub_route_state{model="m",upstream="bad",state="healthy"} 0`,
		`tokenhub_route_state{model="m",upstream="good",state="healthy"} 1`,
		`tokenhub_route_ejections_total{model="m",upstream="bad"} 1`,
		`tokenhub_route_in_flight{model="m",upstream="good"} 0`,
		`tokenhub_route_latency_seconds{model="m",upstream="bad"} `,
		"# TYPE tokenhub_route_state gauge",
		"# HELP tokenhub_route_ejections_total Times a route",
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestRetryBudgetBoundsFailovers: when every route fails, failovers stop
// once each upstream's retry budget is spent (here min_retries 2 and no
// ratio), so a model whose providers are all down does not multiply its
// load on them; the failure is answered as the upstream gave it. Before the
// budget, every request tried every route: 20 requests here.
func TestRetryBudgetBoundsFailovers(t *testing.T) {
	a, aURL := startMock(t, mock.Options{Status: http.StatusInternalServerError})
	b, bURL := startMock(t, mock.Options{Status: http.StatusInternalServerError})
	g := startGateway(t, fmt.Sprintf(`
upstreams:
  - {name: a, base_url: %q, health: {retry_ratio: 0, min_retries: 2, consecutive_failures: 1000}}
  - {name: b, base_url: %q, health: {retry_ratio: 0, min_retries: 2, consecutive_failures: 1000}}
models:
  - {name: m, routes: [{upstream: a}, {upstream: b}]}
plans:
  - {name: all, models: ["*"]}
`, aURL, bURL), "")
	key := g.newKey("all").Key
	for range 10 {
		st, hdr, body := g.do("POST", "/v1/chat/completions", key, resendBody("m", false))
		wantErrorBody(t, st, hdr, body, http.StatusBadGateway, "upstream_error")
	}
	if n := a.Requests() + b.Requests(); n < 10 || n > 14 {
		t.Fatalf("10 requests reached the upstreams %d times, want 10 first attempts and at most 2 failovers to each", n)
	}
	_, _, metrics := g.do("GET", "/metrics", "", nil)
	if !strings.Contains(string(metrics), `event="retry_budget_spent"`) {
		t.Fatal("/metrics counts no failover refused by the retry budget")
	}
}
