package proxy

import (
	"sort"

	"github.com/tokenhub/tokenhub/config"
	"github.com/tokenhub/tokenhub/internal/usd"
	"github.com/tokenhub/tokenhub/proxy/upstream"
)

// routing is what a reload replaces in one step: the served models and the
// upstreams their routes point into. It is immutable once published; a
// request loads it once (Server.routing) and keeps using that snapshot, so it
// never sees a model of one configuration routed to an upstream of another.
type routing struct {
	models    *modelTable
	upstreams *upstream.Set
}

// newRouting builds the upstreams and models of cfg. An upstream of prev
// (nil at start) whose config is unchanged is reused, warm connections and
// all, and a model that prev served keeps its created time. On error, the
// upstreams it made are closed and prev is untouched.
func newRouting(cfg *config.Config, prev *routing, now int64) (_ *routing, err error) {
	var prevSet *upstream.Set
	if prev != nil {
		prevSet = prev.upstreams
	}
	r := &routing{}
	if r.upstreams, err = upstream.NewSet(cfg.Upstreams, prevSet); err != nil {
		return nil, err
	}
	var prevModels *modelTable
	if prev != nil {
		prevModels = prev.models
	}
	if r.models, err = newModelTable(cfg.Models, r.upstreams, prevModels, now); err != nil {
		for _, u := range r.upstreams.NotIn(prevSet) {
			u.Release()
		}
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
func (r *routing) retired(next *routing) []*upstream.Upstream {
	return r.upstreams.NotIn(next.upstreams)
}

// model is a model the gateway serves, with the routes that can answer it.
type model struct {
	name      string
	ownedBy   string
	created   int64
	routes    upstream.Routes
	price     usd.Price
	maxOutput int64 // most completion tokens one request may produce
	// contextWindow is the most tokens one request takes, input and output;
	// 0 when not configured.
	contextWindow int64
	// anthropicRoutes are the routes whose upstream speaks Anthropic's
	// Messages API, by index: only chat completions can be translated for
	// them (claude.go).
	anthropicRoutes upstream.Tried
}

// modelTable is the immutable set of served models, looked up per request.
type modelTable struct {
	byName map[string]*model
	sorted []*model // by name, for /v1/models
}

// newModelTable builds the models of a configuration. A model of prev (nil
// at start) whose routes are unchanged keeps them, health and all (see
// upstream.Routes.Same).
func newModelTable(models []config.Model, upstreams *upstream.Set, prev *modelTable, created int64) (*modelTable, error) {
	t := &modelTable{byName: make(map[string]*model, len(models))}
	for i := range models {
		mc := &models[i]
		m := &model{name: mc.Name, ownedBy: mc.OwnedBy, created: created, maxOutput: mc.MaxOutputTokens, contextWindow: mc.ContextWindowTokens,
			price: mc.Price.USD()}
		if pm := prev.lookupName(mc.Name); pm != nil && pm.routes.Same(mc.Name, mc.Routes, upstreams) {
			m.routes = pm.routes
		} else {
			var err error
			if m.routes, err = upstream.NewRoutes(mc.Name, mc.Routes, upstreams); err != nil {
				return nil, err
			}
		}
		if m.ownedBy == "" {
			m.ownedBy = m.routes.Route(0).Upstream().Name()
		}
		for j := range m.routes.Len() {
			if m.routes.Route(j).Upstream().Anthropic() {
				m.anthropicRoutes.Add(j)
			}
		}
		t.byName[m.name] = m
		t.sorted = append(t.sorted, m)
	}
	sort.Slice(t.sorted, func(i, j int) bool { return t.sorted[i].name < t.sorted[j].name })
	return t, nil
}

// lookupName finds a model by name in t, which may be nil.
func (t *modelTable) lookupName(name string) *model {
	if t == nil {
		return nil
	}
	return t.byName[name]
}

// lookup finds a model by the client's name for it without allocating.
func (t *modelTable) lookup(name []byte) *model {
	return t.byName[string(name)]
}

// appendQuoted appends s as a JSON string literal.
func appendQuoted(b []byte, s string) []byte {
	b = append(b, '"')
	b = appendEscaped(b, s)
	return append(b, '"')
}
