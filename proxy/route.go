package proxy

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"sort"

	"github.com/tokenhub/tokenhub/config"
	"github.com/tokenhub/tokenhub/internal/usd"
)

// routing is what a reload replaces in one step: the served models and the
// upstreams their routes point into. It is immutable once published; a
// request loads it once (Server.routing) and keeps using that snapshot, so it
// never sees a model of one configuration routed to an upstream of another.
type routing struct {
	models    *modelTable
	upstreams []*Upstream
}

// newRouting builds the upstreams and models of cfg. An upstream of prev
// (nil at start) whose config is unchanged is reused, warm connections and
// all, and a model that prev served keeps its created time. On error, the
// upstreams it made are closed and prev is untouched.
func newRouting(cfg *config.Config, prev *routing, now int64) (_ *routing, err error) {
	old := make(map[string]*Upstream)
	if prev != nil {
		for _, u := range prev.upstreams {
			old[u.name] = u
		}
	}
	r := &routing{}
	var made []*Upstream
	defer func() {
		if err != nil {
			for _, u := range made {
				u.release()
			}
		}
	}()
	byName := make(map[string]*Upstream, len(cfg.Upstreams))
	for i := range cfg.Upstreams {
		c := &cfg.Upstreams[i]
		u := old[c.Name]
		if u == nil || !reflect.DeepEqual(u.config, *c) {
			if u, err = newUpstream(c); err != nil {
				return nil, err
			}
			made = append(made, u)
		}
		byName[u.name] = u
		r.upstreams = append(r.upstreams, u)
	}
	if r.models, err = newModelTable(cfg.Models, byName, now); err != nil {
		return nil, err
	}
	if prev != nil {
		for _, m := range r.models.sorted {
			if pm := prev.models.byName[m.name]; pm != nil {
				m.created = pm.created
			}
		}
	}
	return r, nil
}

// retired returns the upstreams of r that next no longer uses.
func (r *routing) retired(next *routing) []*Upstream {
	var out []*Upstream
	for _, u := range r.upstreams {
		kept := false
		for _, n := range next.upstreams {
			kept = kept || n == u
		}
		if !kept {
			out = append(out, u)
		}
	}
	return out
}

// model is a model the gateway serves, with the routes that can answer it.
type model struct {
	name        string
	ownedBy     string
	created     int64
	routes      []route
	totalWeight int
	price       usd.Price
	maxOutput   int64 // most completion tokens one request may produce
}

// route is one way to answer a model: an upstream and its name for the model.
type route struct {
	upstream *Upstream
	// quotedModel is the upstream's model name as a JSON string literal, ready
	// to splice into the body; nil when the client's name can pass unchanged.
	quotedModel []byte
	weight      int
}

// modelTable is the immutable set of served models, looked up per request.
type modelTable struct {
	byName map[string]*model
	sorted []*model // by name, for /v1/models
}

func newModelTable(models []config.Model, upstreams map[string]*Upstream, created int64) (*modelTable, error) {
	t := &modelTable{byName: make(map[string]*model, len(models))}
	for i := range models {
		mc := &models[i]
		m := &model{name: mc.Name, ownedBy: mc.OwnedBy, created: created, maxOutput: mc.MaxOutputTokens,
			price: usd.Price{InputPerMTok: mc.Price.InputPerMTok, OutputPerMTok: mc.Price.OutputPerMTok}}
		for _, rc := range mc.Routes {
			up := upstreams[rc.Upstream]
			if up == nil {
				return nil, fmt.Errorf("proxy: model %s: no upstream %q", mc.Name, rc.Upstream)
			}
			r := route{upstream: up, weight: max(rc.Weight, 1)}
			if rc.Model != "" && rc.Model != mc.Name {
				r.quotedModel = appendQuoted(nil, rc.Model)
			}
			m.routes = append(m.routes, r)
			m.totalWeight += r.weight
		}
		if len(m.routes) == 0 {
			return nil, fmt.Errorf("proxy: model %s has no routes", mc.Name)
		}
		if m.ownedBy == "" {
			m.ownedBy = m.routes[0].upstream.name
		}
		t.byName[m.name] = m
		t.sorted = append(t.sorted, m)
	}
	sort.Slice(t.sorted, func(i, j int) bool { return t.sorted[i].name < t.sorted[j].name })
	return t, nil
}

// lookup finds a model by the client's name for it without allocating.
func (t *modelTable) lookup(name []byte) *model {
	return t.byName[string(name)]
}

// firstRoute picks where a request starts, by weight; failover then walks the
// other routes in order from there.
func (m *model) firstRoute() int {
	if len(m.routes) == 1 {
		return 0
	}
	n := rand.IntN(m.totalWeight)
	for i := range m.routes {
		n -= m.routes[i].weight
		if n < 0 {
			return i
		}
	}
	return 0
}

// appendQuoted appends s as a JSON string literal.
func appendQuoted(b []byte, s string) []byte {
	b = append(b, '"')
	b = appendEscaped(b, s)
	return append(b, '"')
}
