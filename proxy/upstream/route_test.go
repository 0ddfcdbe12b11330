package upstream

import (
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/config"
)

// testSet is a Set of upstreams named names that nothing listens behind
// (building one dials nothing).
func testSet(t *testing.T, names ...string) *Set {
	t.Helper()
	var cfgs []config.Upstream
	for _, n := range names {
		cfgs = append(cfgs, config.Upstream{Name: n, BaseURL: "http://127.0.0.1:1/v1"})
	}
	s, err := NewSet(cfgs, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, u := range s.All() {
			u.Release()
		}
	})
	return s
}

// TestRoutesQuotedModel: a route that renames the model carries the
// upstream's name as a JSON string literal escaped like every string the
// gateway writes; a route that keeps the client's name carries none.
func TestRoutesQuotedModel(t *testing.T) {
	set := testSet(t, "a")
	f := func(upstreamModel, want string) {
		t.Helper()
		rs, err := NewRoutes("m", []config.Route{{Upstream: "a", Model: upstreamModel}}, set)
		if err != nil {
			t.Fatal(err)
		}
		got := rs.Route(0).QuotedModel()
		if want == "" && got != nil || string(got) != want {
			t.Fatalf("model %q: quoted %q, want %q", upstreamModel, got, want)
		}
	}
	f("", "")
	f("m", "")
	f("gpt-4o", `"gpt-4o"`)
	f(`a"b\c`, `"a\"b\\c"`)
	f("a\nb\tc\rd\x01", `"a\nb\tc\rd\u0001"`)
	f("<b>&", `"\u003cb\u003e\u0026"`)
	f("modèle", `"modèle"`)
}

// TestRoutesRefused: a route into an upstream the set does not hold, and a
// model without routes, are refused with the model named.
func TestRoutesRefused(t *testing.T) {
	set := testSet(t, "a")
	f := func(routes []config.Route, want string) {
		t.Helper()
		if _, err := NewRoutes("m", routes, set); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%v: err %v, want one saying %q", routes, err, want)
		}
	}
	f([]config.Route{{Upstream: "a"}, {Upstream: "nowhere"}}, `model m: no upstream "nowhere"`)
	f(nil, "model m has no routes")
}

// TestRoutesPickEachOnce: a request's attempts take each route at most
// once, whatever the order, and then Pick has none left.
func TestRoutesPickEachOnce(t *testing.T) {
	set := testSet(t, "a", "b", "c")
	rs, err := NewRoutes("m", []config.Route{{Upstream: "a"}, {Upstream: "b"}, {Upstream: "c"}}, set)
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		var tried Tried
		for n := range rs.Len() {
			i, trial, ok := rs.Pick(tried, time.Now())
			if !ok || trial || tried.Has(i) {
				t.Fatalf("attempt %d: route %d (trial %v, ok %v) after %b", n, i, trial, ok, tried)
			}
			tried.Add(i)
			rs.Route(i).Health().Done(Outcome{Sent: time.Now()}, time.Now())
		}
		if i, _, ok := rs.Pick(tried, time.Now()); ok {
			t.Fatalf("a fourth attempt got route %d", i)
		}
	}
}

// TestRoutesFirstByWeight: with nothing known of the routes' latency and
// nothing in flight, the first route is drawn by weight (a weight under 1
// counts as 1). The bounds are 10 standard deviations wide: the test does
// not fail by chance.
func TestRoutesFirstByWeight(t *testing.T) {
	set := testSet(t, "a", "b", "c")
	rs, err := NewRoutes("m", []config.Route{{Upstream: "a", Weight: 6}, {Upstream: "b", Weight: 3}, {Upstream: "c"}}, set)
	if err != nil {
		t.Fatal(err)
	}
	const draws = 10000
	var got [3]int
	for range draws {
		i, _, _ := rs.Pick(0, time.Now())
		rs.Route(i).Health().Abandon(false)
		got[i]++
	}
	for i, want := range []int{6000, 3000, 1000} {
		if d := got[i] - want; d < -500 || d > 500 {
			t.Fatalf("route %d started %d of %d requests, want about %d (draws by route: %v)", i, got[i], draws, want, got)
		}
	}
	one, err := NewRoutes("m", []config.Route{{Upstream: "a", Weight: 5}}, set)
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if i, _, ok := one.Pick(0, time.Now()); i != 0 || !ok {
			t.Fatalf("a single route: first %d, ok %v", i, ok)
		}
		one.Route(0).Health().Abandon(false)
	}
}

// TestSetKeepsUnchangedUpstreams: a set built over the previous one keeps
// each upstream whose config is unchanged (the same *Upstream, with its
// connections) and builds anew a changed or new one; NotIn names what a
// reload retires and what it made.
func TestSetKeepsUnchangedUpstreams(t *testing.T) {
	cfg := func(name, url string) config.Upstream { return config.Upstream{Name: name, BaseURL: url} }
	prev, err := NewSet([]config.Upstream{cfg("same", "http://127.0.0.1:1/v1"), cfg("changed", "http://127.0.0.1:2/v1"), cfg("gone", "http://127.0.0.1:3/v1")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	next, err := NewSet([]config.Upstream{cfg("same", "http://127.0.0.1:1/v1"), cfg("changed", "http://127.0.0.1:4/v1"), cfg("new", "http://127.0.0.1:5/v1")}, prev)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, u := range append(prev.All(), next.NotIn(prev)...) {
			u.Release()
		}
	})
	if next.Lookup("same") != prev.Lookup("same") {
		t.Fatal("the unchanged upstream was rebuilt")
	}
	if next.Lookup("changed") == prev.Lookup("changed") {
		t.Fatal("the changed upstream was kept")
	}
	if got := string(next.Lookup("changed").URI(Chat)); got != "http://127.0.0.1:4/v1/chat/completions" {
		t.Fatalf("changed upstream's chat URI %s", got)
	}
	names := func(us []*Upstream) (s string) {
		for _, u := range us {
			s += u.Name() + " "
		}
		return s
	}
	if got := names(prev.NotIn(next)); got != "changed gone " {
		t.Fatalf("retired: %s", got)
	}
	if got := names(next.NotIn(prev)); got != "changed new " {
		t.Fatalf("made: %s", got)
	}
	if got := names(next.NotIn(nil)); got != "same changed new " {
		t.Fatalf("not in nil: %s", got)
	}
	if next.Lookup("gone") != nil || (*Set)(nil).Lookup("same") != nil {
		t.Fatal("lookup found an upstream the set does not hold")
	}
}

// TestFailsOver: only 429 and 5xx answers may be given up for the next
// route; a success, a redirect or a client error is the answer.
func TestFailsOver(t *testing.T) {
	f := func(status int, want bool) {
		t.Helper()
		if got := FailsOver(status); got != want {
			t.Fatalf("FailsOver(%d) = %v, want %v", status, got, want)
		}
	}
	f(200, false)
	f(201, false)
	f(302, false)
	f(400, false)
	f(401, false)
	f(404, false)
	f(428, false)
	f(429, true)
	f(499, false)
	f(500, true)
	f(502, true)
	f(503, true)
	f(504, true)
}
