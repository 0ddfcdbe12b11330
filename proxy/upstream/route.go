package upstream

import (
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/tokenhub/tokenhub/config"
	"github.com/tokenhub/tokenhub/internal/jsonscan"
)

// Route is one way to answer a model: an upstream and its name for the
// model, with the route's health and latency.
type Route struct {
	upstream *Upstream
	// quotedModel is the upstream's model name as a JSON string literal, ready
	// to splice into the body; nil when the client's name can pass unchanged.
	quotedModel []byte
	// model is the upstream's name for the model, as the route calls it.
	model  string
	weight int
	health *Health
}

// Upstream is where the route sends.
func (r *Route) Upstream() *Upstream { return r.upstream }

// QuotedModel is the upstream's name for the model as a JSON string
// literal, to splice into the body in place of the client's; nil when the
// client's name can pass unchanged.
func (r *Route) QuotedModel() []byte { return r.quotedModel }

// Model is the upstream's name for the model: the route's, else the name
// clients call it.
func (r *Route) Model() string { return r.model }

// Health is the route's passive health and latency.
func (r *Route) Health() *Health { return r.health }

// Weight is the route's configured share of the model's traffic.
func (r *Route) Weight() int { return r.weight }

// Routes are the routes of one model. Each attempt of a request picks one
// (Pick) among the healthy routes it has not tried, by the power of two
// choices on latency and load with the weights as a prior.
type Routes struct {
	list []Route
	// healthy counts the Healthy routes, which their Health keeps up to date.
	healthy *atomic.Int32
}

// NewRoutes builds the routes cfgs declares for the model the clients call
// model, into the upstreams of set. Each route starts healthy, with no
// latency known.
func NewRoutes(model string, cfgs []config.Route, set *Set) (Routes, error) {
	rs := Routes{healthy: new(atomic.Int32)}
	if len(cfgs) > config.MaxRoutes {
		return Routes{}, fmt.Errorf("upstream: model %s: %d routes, at most %d", model, len(cfgs), config.MaxRoutes)
	}
	for _, rc := range cfgs {
		up := set.Lookup(rc.Upstream)
		if up == nil {
			return Routes{}, fmt.Errorf("upstream: model %s: no upstream %q", model, rc.Upstream)
		}
		r := Route{upstream: up, model: model, weight: max(rc.Weight, 1), health: newHealth(up.config.Health, rs.healthy)}
		if rc.Model != "" && rc.Model != model {
			r.model, r.quotedModel = rc.Model, appendQuoted(nil, rc.Model)
		}
		rs.list = append(rs.list, r)
	}
	if len(rs.list) == 0 {
		return Routes{}, fmt.Errorf("upstream: model %s has no routes", model)
	}
	return rs, nil
}

// Same reports whether rs are the routes NewRoutes would build for model
// from cfgs into set: each to the same Upstream (which a reload reuses only
// while its config, health options included, is unchanged) under the same
// model name and weight. A reload keeps such routes as they are, with their
// health, latency and requests in flight: reloading to rotate a key must
// not put an ejected route back into the choice.
func (rs *Routes) Same(model string, cfgs []config.Route, set *Set) bool {
	if len(cfgs) != len(rs.list) {
		return false
	}
	for i, rc := range cfgs {
		r := &rs.list[i]
		name := model
		if rc.Model != "" {
			name = rc.Model
		}
		if r.upstream != set.Lookup(rc.Upstream) || r.model != name || r.weight != max(rc.Weight, 1) {
			return false
		}
	}
	return true
}

// Len is how many routes there are: the most attempts a request makes.
func (rs *Routes) Len() int { return len(rs.list) }

// Route is route i, from 0 to Len in config order.
func (rs *Routes) Route(i int) *Route { return &rs.list[i] }

// All is the set of every route.
func (rs *Routes) All() Tried { return Tried(1)<<uint(len(rs.list)) - 1 }

// Tried is the set of routes a request has attempted, by index.
type Tried uint64

// Add puts route i in the set.
func (t *Tried) Add(i int) { *t |= 1 << uint(i) }

// Has reports whether route i is in the set.
func (t Tried) Has(i int) bool { return t&(1<<uint(i)) != 0 }

// Pick chooses the route of a request's next attempt among those not in
// tried, at now, and counts the request in flight on it: the caller must
// report the attempt's outcome with the route's Health().Done.
//
// A first attempt (tried empty) goes to a route whose ejection or
// cool-down is up, as its half-open trial (trial is set): only an answer
// tells whether it is back. Otherwise, among the Healthy routes, two are
// drawn by weight and the one of lower cost (peak-EWMA latency times
// in-flight requests plus one, over its weight) wins. With no Healthy
// route left, a first attempt goes to the least bad route, the one back
// soonest, and a later attempt gets ok false: a failover is not worth a
// route known to be bad, nor its trial.
func (rs *Routes) Pick(tried Tried, now time.Time) (i int, trial, ok bool) {
	if len(rs.list) == 1 {
		if tried.Has(0) {
			return 0, false, false
		}
		h := rs.list[0].health
		h.begin()
		t := h.clock(now)
		return 0, h.trialDue(t) && h.claimTrial(t), true
	}
	if tried == 0 {
		// A route whose time out is up gets its trial at once, whatever
		// its latency was: only an answer can tell it is back.
		for j := range rs.list {
			h := rs.list[j].health
			if t := h.clock(now); h.trialDue(t) && h.claimTrial(t) {
				h.begin()
				return j, true, true
			}
		}
	}
	if a, b := rs.draw(tried); a >= 0 {
		if b >= 0 {
			ha, hb := rs.list[a].health, rs.list[b].health
			if hb.cost(hb.clock(now), rs.list[b].weight) < ha.cost(ha.clock(now), rs.list[a].weight) {
				a = b
			}
		}
		rs.list[a].health.begin()
		return a, false, true
	}
	if tried != 0 {
		return 0, false, false
	}
	best := 0
	for j := 1; j < len(rs.list); j++ {
		if rs.list[j].health.until.Load() < rs.list[best].health.until.Load() {
			best = j
		}
	}
	rs.list[best].health.begin()
	return best, false, true
}

// draw picks two distinct Healthy routes outside out by weight, a first;
// b is -1 when only one is Healthy, a too when none is.
func (rs *Routes) draw(out Tried) (a, b int) {
	var usable Tried
	total := 0
	for j := range rs.list {
		if out.Has(j) {
			continue
		}
		if rs.list[j].health.State() == Healthy {
			usable.Add(j)
			total += rs.list[j].weight
		}
	}
	if total == 0 {
		return -1, -1
	}
	a = rs.weighted(usable, total)
	usable &^= 1 << uint(a)
	if total -= rs.list[a].weight; total == 0 {
		return a, -1
	}
	return a, rs.weighted(usable, total)
}

// weighted draws one route of set by weight; total is their weights' sum.
func (rs *Routes) weighted(set Tried, total int) int {
	n := rand.IntN(total)
	last := 0
	for j := range rs.list {
		if !set.Has(j) {
			continue
		}
		last = j
		if n -= rs.list[j].weight; n < 0 {
			return j
		}
	}
	return last
}

// appendQuoted appends s as a JSON string literal, escaped as the gateway
// escapes every string it writes (jsonscan.AppendEscaped).
func appendQuoted(b []byte, s string) []byte {
	return append(jsonscan.AppendEscaped(append(b, '"'), s), '"')
}
