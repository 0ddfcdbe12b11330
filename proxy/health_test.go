package proxy

import (
	"fmt"
	"net/http"
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
