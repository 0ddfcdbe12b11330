package upstream

import (
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/config"
)

// healthRoutes builds, inside a synctest bubble, a model with one route to
// each of the upstreams names, with health opts (defaults for zero fields).
func healthRoutes(t *testing.T, opts config.Health, names ...string) Routes {
	t.Helper()
	def := config.Health{ConsecutiveFailures: 3, Ejection: 10 * time.Second, MaxEjection: 60 * time.Second,
		MaxCoolDown: 30 * time.Second, RetryRatio: 0.1, MinRetries: 2}
	if opts == (config.Health{}) {
		opts = def
	}
	var ups []config.Upstream
	var routes []config.Route
	for _, n := range names {
		ups = append(ups, config.Upstream{Name: n, BaseURL: "http://127.0.0.1:1/v1", Health: opts})
		routes = append(routes, config.Route{Upstream: n})
	}
	set, err := NewSet(ups, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, u := range set.All() {
			u.Release()
		}
	})
	rs, err := NewRoutes("m", routes, set)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// attempt sends one attempt to route i (counting it in flight as Pick
// does) with outcome o, now.
func attempt(rs *Routes, i int, o Outcome) (Change, bool) {
	h := rs.Route(i).Health()
	h.begin()
	o.Sent = time.Now()
	return h.Done(o, time.Now())
}

var failed = Outcome{Failed: true, Latency: time.Second}

// pickNext is where a request's first attempt goes now; the attempt ends
// at once with outcome o.
func pickNext(t *testing.T, rs *Routes, o Outcome) (i int, trial bool) {
	t.Helper()
	i, trial, ok := rs.Pick(0, time.Now())
	if !ok {
		t.Fatal("a first attempt found no route")
	}
	o.Trial, o.Sent = trial, time.Now()
	rs.Route(i).Health().Done(o, time.Now())
	return i, trial
}

// TestHealthEjectsAfterConsecutiveFailures: consecutive_failures failures
// in a row eject a route; a success in between starts the count again.
// While ejected it gets no first attempt.
func TestHealthEjectsAfterConsecutiveFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rs := healthRoutes(t, config.Health{}, "bad", "good")
		bad := rs.Route(0).Health()
		attempt(&rs, 0, failed)
		attempt(&rs, 0, failed)
		attempt(&rs, 0, Outcome{Latency: time.Millisecond})
		attempt(&rs, 0, failed)
		attempt(&rs, 0, failed)
		if bad.State() != Healthy {
			t.Fatalf("2 failures after a success: %s, want healthy", bad.State())
		}
		ch, changed := attempt(&rs, 0, failed)
		if !changed || ch != (Change{To: Ejected, For: 10 * time.Second}) || bad.State() != Ejected || bad.Ejections() != 1 {
			t.Fatalf("3rd failure in a row: change %+v (%v), state %s, ejections %d; want ejected for 10s",
				ch, changed, bad.State(), bad.Ejections())
		}
		if want := time.Now().Add(10 * time.Second); !bad.Until().Equal(want) {
			t.Fatalf("ejected until %v, want %v", bad.Until(), want)
		}
		for range 100 {
			if i, _ := pickNext(t, &rs, Outcome{Latency: time.Millisecond}); i != 0+1 {
				t.Fatalf("an ejected route got a first attempt")
			}
		}
	})
}

// TestHealthHalfOpenTrial: when its ejection is up, exactly one request is
// the trial; a failed trial ejects the route for twice as long, and so on up
// to max_ejection; a successful one brings it back.
func TestHealthHalfOpenTrial(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rs := healthRoutes(t, config.Health{}, "bad", "good")
		bad := rs.Route(0).Health()
		for range 3 {
			attempt(&rs, 0, failed)
		}
		for _, want := range []time.Duration{20 * time.Second, 40 * time.Second, 60 * time.Second, 60 * time.Second} {
			time.Sleep(time.Until(bad.Until()) - time.Millisecond)
			if i, trial := pickNext(t, &rs, Outcome{Latency: time.Millisecond}); i != 1 || trial {
				t.Fatalf("1ms before the ejection ends: route %d (trial %v), want the good one", i, trial)
			}
			time.Sleep(time.Millisecond)
			i, trial, _ := rs.Pick(0, time.Now())
			if i != 0 || !trial || bad.State() != HalfOpen {
				t.Fatalf("the ejection over: route %d (trial %v, state %s), want the trial on the bad route", i, trial, bad.State())
			}
			// While the trial is in flight, the others go elsewhere.
			for range 10 {
				if j, again := pickNext(t, &rs, Outcome{Latency: time.Millisecond}); j != 1 || again {
					t.Fatalf("during the trial: route %d (trial %v)", j, again)
				}
			}
			ch, _ := rs.Route(0).Health().Done(Outcome{Failed: true, Latency: time.Second, Trial: true, Sent: time.Now()}, time.Now())
			if ch != (Change{To: Ejected, For: want}) {
				t.Fatalf("failed trial: %+v, want ejected for %s", ch, want)
			}
		}
		time.Sleep(time.Until(bad.Until()))
		i, trial := pickNext(t, &rs, Outcome{Latency: time.Millisecond})
		if i != 0 || !trial || bad.State() != Healthy {
			t.Fatalf("successful trial on route %d (trial %v): state %s, want healthy", i, trial, bad.State())
		}
	})
}

// TestHealthStreakResets: a route healthy for max_ejection after its
// ejections starts again from the shortest ejection.
func TestHealthStreakResets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rs := healthRoutes(t, config.Health{}, "bad", "good")
		bad := rs.Route(0).Health()
		eject := func() Change {
			var ch Change
			for range 3 {
				ch, _ = attempt(&rs, 0, failed)
			}
			time.Sleep(time.Until(bad.Until()))
			h := rs.Route(0).Health()
			if i, trial, _ := rs.Pick(0, time.Now()); i != 0 || !trial {
				t.Fatal("no trial when the ejection ended")
			}
			h.Done(Outcome{Latency: time.Millisecond, Trial: true, Sent: time.Now()}, time.Now())
			return ch
		}
		if ch := eject(); ch.For != 10*time.Second {
			t.Fatalf("first ejection for %s", ch.For)
		}
		if ch := eject(); ch.For != 20*time.Second {
			t.Fatalf("second ejection soon after for %s, want 20s", ch.For)
		}
		time.Sleep(60 * time.Second)
		attempt(&rs, 0, Outcome{Latency: time.Millisecond})
		if ch := eject(); ch.For != 10*time.Second {
			t.Fatalf("ejection after a minute healthy for %s, want 10s again", ch.For)
		}
	})
}

// TestHealthCoolDown: a retry-after on a 429 or 503 takes the route out for
// that long, bounded by max_cool_down; then one trial decides.
func TestHealthCoolDown(t *testing.T) {
	f := func(retryAfter, want time.Duration) {
		t.Helper()
		synctest.Test(t, func(t *testing.T) {
			rs := healthRoutes(t, config.Health{}, "limited", "good")
			h := rs.Route(0).Health()
			ch, changed := attempt(&rs, 0, Outcome{Failed: true, Latency: time.Second, CoolDown: retryAfter})
			if !changed || ch != (Change{To: CoolingDown, For: want}) {
				t.Fatalf("retry-after %s: %+v, want cooling down for %s", retryAfter, ch, want)
			}
			time.Sleep(want - time.Millisecond)
			if i, _ := pickNext(t, &rs, Outcome{Latency: time.Millisecond}); i != 1 {
				t.Fatal("a cooling route got a first attempt")
			}
			time.Sleep(time.Millisecond)
			if i, trial := pickNext(t, &rs, Outcome{Latency: time.Millisecond}); i != 0 || !trial || h.State() != Healthy {
				t.Fatalf("after the cool-down: route %d, trial %v, state %s", i, trial, h.State())
			}
		})
	}
	f(3*time.Second, 3*time.Second)
	f(time.Hour, 30*time.Second) // max_cool_down
}

// TestHealthKeepsTheLastRoute: the last healthy route of a model is never
// ejected nor cooled down, however it fails: requests go to the least bad
// route rather than fail for want of one.
func TestHealthKeepsTheLastRoute(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rs := healthRoutes(t, config.Health{}, "a", "b")
		for range 3 {
			attempt(&rs, 0, failed)
		}
		for range 10 {
			attempt(&rs, 1, failed)
		}
		attempt(&rs, 1, Outcome{Failed: true, CoolDown: time.Minute})
		if a, b := rs.Route(0).Health().State(), rs.Route(1).Health().State(); a != Ejected || b != Healthy {
			t.Fatalf("both failing: states %s and %s, want the first ejected and the last kept", a, b)
		}
		if i, _ := pickNext(t, &rs, failed); i != 1 {
			t.Fatalf("first attempt on route %d, want the last healthy one", i)
		}

		one := healthRoutes(t, config.Health{}, "only")
		for range 10 {
			attempt(&one, 0, failed)
		}
		if s := one.Route(0).Health().State(); s != Healthy {
			t.Fatalf("a model's only route: %s", s)
		}
	})
}

// TestHealthSuccessOfOldRequestKeepsEjection: a request sent before the
// route was ejected and answered after says nothing of the route since; a
// request sent while it was out, and answered, does.
func TestHealthSuccessOfOldRequestKeepsEjection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rs := healthRoutes(t, config.Health{}, "bad", "good")
		h := rs.Route(0).Health()
		h.begin()
		sentBefore := time.Now()
		time.Sleep(time.Second)
		for range 3 {
			attempt(&rs, 0, failed)
		}
		time.Sleep(time.Second)
		h.Done(Outcome{Latency: 2 * time.Second, Sent: sentBefore}, time.Now())
		if h.State() != Ejected {
			t.Fatalf("an old request's success: %s, want still ejected", h.State())
		}
		if _, changed := attempt(&rs, 0, Outcome{Latency: time.Millisecond}); !changed || h.State() != Healthy {
			t.Fatalf("a success sent while ejected: %s, want healthy", h.State())
		}
	})
}

// TestPickByLatencyAndLoad: among healthy routes the choice goes to the
// lower peak-EWMA latency times in-flight requests; a slow route gets
// traffic again once the fast one is loaded enough; a route with requests
// in flight and no answer yet (it may be hung) is avoided; an abandoned
// pick leaves no trace.
func TestPickByLatencyAndLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rs := healthRoutes(t, config.Health{}, "fast", "slow")
		attempt(&rs, 0, Outcome{Latency: 10 * time.Millisecond})
		attempt(&rs, 1, Outcome{Latency: 105 * time.Millisecond})
		var held []int
		for n := range 10 {
			i, _, _ := rs.Pick(0, time.Now())
			if i != 0 {
				t.Fatalf("with %d in flight on the fast route: picked the slow one", n)
			}
			held = append(held, i)
		}
		// 10 in flight: 10ms × 11 > 105ms × 1.
		if i, _, _ := rs.Pick(0, time.Now()); i != 1 {
			t.Fatalf("with 10 in flight on the fast route: route %d, want the slow one", i)
		}
		rs.Route(1).Health().Abandon(false)
		for _, i := range held {
			rs.Route(i).Health().Abandon(false)
		}
		if a, b := rs.Route(0).Health().InFlight(), rs.Route(1).Health().InFlight(); a != 0 || b != 0 {
			t.Fatalf("in flight after abandoning: %d, %d", a, b)
		}

		hung := healthRoutes(t, config.Health{}, "hung", "ok")
		hung.Route(0).Health().begin() // sent, never answered
		for range 20 {
			if i, _ := pickNext(t, &hung, Outcome{Latency: 50 * time.Millisecond}); i != 1 {
				t.Fatal("a route with a request in flight and no answer yet was preferred")
			}
		}
	})
}

// TestPeakEWMA: a slower sample counts at once, a faster one is averaged in
// with the time since the last as weight, and an idle route's latency
// decays towards nothing, so it gets a request again.
func TestPeakEWMA(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rs := healthRoutes(t, config.Health{}, "a")
		h := rs.Route(0).Health()
		attempt(&rs, 0, Outcome{Latency: 100 * time.Millisecond})
		attempt(&rs, 0, Outcome{Latency: 400 * time.Millisecond})
		if l := h.Latency(time.Now()); l != 400*time.Millisecond {
			t.Fatalf("after a slower sample: %s, want 400ms", l)
		}
		time.Sleep(latencyDecay)
		// exp(-1) of 400ms is 147ms.
		if l := h.Latency(time.Now()); l < 146*time.Millisecond || l > 148*time.Millisecond {
			t.Fatalf("after %s idle: %s, want 147ms", latencyDecay, l)
		}
		attempt(&rs, 0, Outcome{Latency: 10 * time.Millisecond})
		// 147ms × exp(-1) + 10ms × (1 - exp(-1)) is 60ms.
		if l := h.Latency(time.Now()); l < 59*time.Millisecond || l > 61*time.Millisecond {
			t.Fatalf("a faster sample after %s: %s, want 60ms", latencyDecay, l)
		}
	})
}

// TestRetryBudget: an upstream takes at most min_retries failovers per
// window plus retry_ratio of the requests it got first, over the window
// and the one before; the budget comes back as windows pass.
func TestRetryBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newRetryBudget(0.1, 2)
		allowed := func() int {
			n := 0
			for b.retry(time.Now()) {
				n++
			}
			return n
		}
		if n := allowed(); n != 2 {
			t.Fatalf("no traffic: %d failovers allowed, want the floor of 2", n)
		}
		for range 50 {
			b.first(time.Now())
		}
		if n := allowed(); n != 5 {
			t.Fatalf("after 50 first attempts: %d more failovers, want 5", n)
		}
		time.Sleep(budgetWindow)
		// The window before still counts: its 7 failovers, its 50 requests.
		if n := allowed(); n != 0 {
			t.Fatalf("next window: %d failovers, want 0", n)
		}
		time.Sleep(budgetWindow)
		if n := allowed(); n != 2 {
			t.Fatalf("two windows on: %d failovers, want the floor of 2", n)
		}
	})
}

// TestRetryAfter: the pause an answer asks for, from retry-after-ms first,
// else retry-after in seconds or as an HTTP date; nothing for what cannot
// be read, and at most a day.
func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f := func(want time.Duration, kv ...string) {
		t.Helper()
		var h fasthttp.ResponseHeader
		for i := 0; i+1 < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		if got := RetryAfter(&h, now); got != want {
			t.Fatalf("%q: %s, want %s", kv, got, want)
		}
	}
	f(0)
	f(7*time.Second, "Retry-After", "7")
	f(1500*time.Millisecond, "Retry-After-Ms", "1500")
	f(1500*time.Millisecond, "Retry-After-Ms", "1500", "Retry-After", "2")
	f(30*time.Second, "Retry-After", now.Add(30*time.Second).Format(http.TimeFormat))
	f(0, "Retry-After", now.Add(-time.Minute).Format(http.TimeFormat))
	f(0, "Retry-After", "soon")
	f(0, "Retry-After", "-1")
	f(0, "Retry-After-Ms", "NaN")
	f(24*time.Hour, "Retry-After", "99999999")
	f(24*time.Hour, "Retry-After-Ms", "1e300")
}
