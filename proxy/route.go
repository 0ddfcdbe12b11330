package proxy

import (
	"fmt"
	"math/rand/v2"
	"sort"

	"github.com/tokenhub/tokenhub/config"
	"github.com/tokenhub/tokenhub/limits"
)

// model is a model the gateway serves, with the routes that can answer it.
type model struct {
	name        string
	ownedBy     string
	created     int64
	routes      []route
	totalWeight int
	price       limits.Price
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
			price: limits.Price{InputPerMTok: mc.Price.InputPerMTok, OutputPerMTok: mc.Price.OutputPerMTok}}
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
