//go:build !race

package upstream

import (
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/config"
)

// TestAllocsRouteChoice: choosing a route, failing over once and reporting
// both outcomes, with the retry budget, allocates nothing: the request path
// pays atomics, not garbage.
func TestAllocsRouteChoice(t *testing.T) {
	rs := healthRoutes(t, config.Health{}, "a", "b", "c")
	u := rs.Route(0).Upstream()
	n := testing.AllocsPerRun(1000, func() { routeChoiceOnce(&rs, u) })
	if n != 0 {
		t.Fatalf("%v allocations per request, want 0", n)
	}
}

// routeChoiceOnce is one request's route work: a first attempt that
// fails, a failover within the budget, and its success.
func routeChoiceOnce(rs *Routes, u *Upstream) {
	now := time.Now()
	var tried Tried
	i, trial, _ := rs.Pick(tried, now)
	tried.Add(i)
	u.FirstAttempt(now)
	rs.Route(i).Health().Done(Outcome{Latency: time.Millisecond, Trial: trial, Sent: now}, now)
	j, trial, ok := rs.Pick(tried, now)
	if ok && u.Failover(now) {
		rs.Route(j).Health().Done(Outcome{Latency: time.Millisecond, Trial: trial, Sent: now}, now)
	} else if ok {
		rs.Route(j).Health().Abandon(trial)
	}
}

func BenchmarkRouteChoice(b *testing.B) {
	set, err := NewSet([]config.Upstream{
		{Name: "a", BaseURL: "http://127.0.0.1:1/v1", Health: config.Health{ConsecutiveFailures: 5, Ejection: time.Second, MaxEjection: time.Minute, RetryRatio: 0.1, MinRetries: 10}},
		{Name: "b", BaseURL: "http://127.0.0.1:1/v1", Health: config.Health{ConsecutiveFailures: 5, Ejection: time.Second, MaxEjection: time.Minute, RetryRatio: 0.1, MinRetries: 10}},
	}, nil)
	if err != nil {
		b.Fatal(err)
	}
	rs, err := NewRoutes("m", []config.Route{{Upstream: "a"}, {Upstream: "b"}}, set)
	if err != nil {
		b.Fatal(err)
	}
	u := rs.Route(0).Upstream()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			routeChoiceOnce(&rs, u)
		}
	})
}
