package proxy

import (
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/config"
	"github.com/tokenhub/tokenhub/proxy/upstream"
)

// TestReloadKeepsRouteHealth: a reload that leaves a model's routes as they
// were (same upstreams, unchanged, same names and weights) keeps their
// health, so an ejected route stays out of the choice; a reload that
// changes a route, or its upstream's config, starts it afresh. Before,
// every reload, even one that only rotated a plan, put every ejected route
// back into traffic.
func TestReloadKeepsRouteHealth(t *testing.T) {
	base := func() *config.Config {
		ups := []config.Upstream{
			{Name: "a", Kind: config.KindOpenAI, BaseURL: "http://127.0.0.1:1/v1", MaxConns: 1, Timeout: time.Minute, Health: config.Health{ConsecutiveFailures: 2, Ejection: time.Hour, MaxEjection: time.Hour}},
			{Name: "b", Kind: config.KindOpenAI, BaseURL: "http://127.0.0.1:2/v1", MaxConns: 1, Timeout: time.Minute, Health: config.Health{ConsecutiveFailures: 2, Ejection: time.Hour, MaxEjection: time.Hour}},
		}
		return &config.Config{Upstreams: ups, Models: []config.Model{
			{Name: "m", Routes: []config.Route{{Upstream: "a", Weight: 1}, {Upstream: "b", Weight: 1}}, MaxOutputTokens: 10},
			{Name: "other", Routes: []config.Route{{Upstream: "b", Weight: 1}}, MaxOutputTokens: 10},
		}}
	}
	first, err := newRouting(base(), nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, u := range first.upstreams.All() {
			u.Release()
		}
	}()
	eject := func(r *routing) {
		t.Helper()
		h := r.models.lookupName("m").routes.Route(0).Health()
		for range 2 {
			h.Begin()
			h.Done(upstream.Outcome{Failed: true, Latency: time.Second, Sent: time.Now()}, time.Now())
		}
		if h.State() == upstream.Healthy {
			t.Fatal("route a of m not ejected after 2 failures")
		}
	}
	eject(first)
	stateOf := func(r *routing) upstream.State { return r.models.lookupName("m").routes.Route(0).Health().State() }

	for _, tc := range []struct {
		name  string
		edit  func(c *config.Config)
		fresh bool
	}{
		{"price changed", func(c *config.Config) { c.Models[0].Price.InputPerMTok = 5 }, false},
		{"another model changed", func(c *config.Config) { c.Models[1].MaxOutputTokens = 20 }, false},
		{"weight changed", func(c *config.Config) { c.Models[0].Routes[0].Weight = 2 }, true},
		{"upstream model renamed", func(c *config.Config) { c.Models[0].Routes[0].Model = "m-2026" }, true},
		{"upstream config changed", func(c *config.Config) { c.Upstreams[0].Timeout = 2 * time.Minute }, true},
		{"route added", func(c *config.Config) {
			c.Models[0].Routes = append(c.Models[0].Routes, config.Route{Upstream: "b", Model: "m2", Weight: 1})
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base()
			tc.edit(cfg)
			next, err := newRouting(cfg, first, 2)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				for _, u := range next.upstreams.NotIn(first.upstreams) {
					u.Release()
				}
			}()
			got := stateOf(next)
			if tc.fresh && got != upstream.Healthy {
				t.Fatalf("state after reload %s, want a fresh healthy route", got)
			}
			if !tc.fresh && got == upstream.Healthy {
				t.Fatal("the reload put the ejected route back into the choice")
			}
		})
	}
}
