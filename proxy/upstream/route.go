package upstream

import (
	"fmt"
	"math/rand/v2"

	"github.com/tokenhub/tokenhub/config"
)

// Route is one way to answer a model: an upstream and its name for the model.
type Route struct {
	upstream *Upstream
	// quotedModel is the upstream's model name as a JSON string literal, ready
	// to splice into the body; nil when the client's name can pass unchanged.
	quotedModel []byte
	weight      int
}

// Upstream is where the route sends.
func (r *Route) Upstream() *Upstream { return r.upstream }

// QuotedModel is the upstream's name for the model as a JSON string
// literal, to splice into the body in place of the client's; nil when the
// client's name can pass unchanged.
func (r *Route) QuotedModel() []byte { return r.quotedModel }

// Routes are the routes of one model: where a request starts is a weighted
// choice (First), and failover then walks the others in config order from
// there (Attempt).
type Routes struct {
	list        []Route
	totalWeight int
}

// NewRoutes builds the routes cfgs declares for the model the clients call
// model, into the upstreams of set.
func NewRoutes(model string, cfgs []config.Route, set *Set) (Routes, error) {
	var rs Routes
	for _, rc := range cfgs {
		up := set.Lookup(rc.Upstream)
		if up == nil {
			return Routes{}, fmt.Errorf("upstream: model %s: no upstream %q", model, rc.Upstream)
		}
		r := Route{upstream: up, weight: max(rc.Weight, 1)}
		if rc.Model != "" && rc.Model != model {
			r.quotedModel = appendQuoted(nil, rc.Model)
		}
		rs.list = append(rs.list, r)
		rs.totalWeight += r.weight
	}
	if len(rs.list) == 0 {
		return Routes{}, fmt.Errorf("upstream: model %s has no routes", model)
	}
	return rs, nil
}

// Len is how many routes there are: the most attempts a request makes.
func (rs *Routes) Len() int { return len(rs.list) }

// First picks where a request starts, by weight.
func (rs *Routes) First() int {
	if len(rs.list) == 1 {
		return 0
	}
	n := rand.IntN(rs.totalWeight)
	for i := range rs.list {
		n -= rs.list[i].weight
		if n < 0 {
			return i
		}
	}
	return 0
}

// Attempt is the route of attempt n (from 0, below Len) of a request that
// started at route first: failover walks the routes in config order.
func (rs *Routes) Attempt(first, n int) *Route {
	return &rs.list[(first+n)%len(rs.list)]
}

// appendQuoted appends s as a JSON string literal, escaped as the gateway
// escapes every string it writes (proxy's error bodies too): < > & as
// \u00XX as well, so that no byte of it can form markup.
func appendQuoted(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		case c < 0x20 || c == '<' || c == '>' || c == '&':
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"
