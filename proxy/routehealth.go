package proxy

import (
	"fmt"
	"io"
	"time"

	vm "github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/proxy/upstream"
)

// routeJSON is one route's health as GET /admin/upstreams shows it: this
// node's view, as every node judges its routes from its own traffic.
type routeJSON struct {
	Model    string `json:"model"`
	Upstream string `json:"upstream"`
	Weight   int    `json:"weight"`
	// State is healthy, ejected, cooling_down or half_open.
	State string `json:"state"`
	// Until is when an ejection or cool-down ends (unix seconds), else null.
	Until *int64 `json:"until"`
	// LatencyMS is the peak-EWMA latency (a stream's: to its headers), in
	// milliseconds; null before the route's first answer.
	LatencyMS           *float64 `json:"latency_ms"`
	InFlight            int64    `json:"in_flight"`
	Ejections           int64    `json:"ejections"`
	ConsecutiveFailures int      `json:"consecutive_failures"`
}

// eachRoute calls f with every route of the configuration in force, models
// by name and their routes in config order.
func (s *Server) eachRoute(f func(m *model, r *upstream.Route)) {
	for _, m := range s.routing.Load().models.sorted {
		for i := range m.routes.Len() {
			f(m, m.routes.Route(i))
		}
	}
}

// listUpstreams answers GET /admin/upstreams: every route's health.
func (s *Server) listUpstreams(ctx *fasthttp.RequestCtx) {
	now := time.Now()
	out := listJSON[routeJSON]{Object: "list", Data: []routeJSON{}}
	s.eachRoute(func(m *model, r *upstream.Route) {
		h := r.Health()
		j := routeJSON{Model: m.name, Upstream: r.Upstream().Name(), Weight: r.Weight(), State: h.State().String(),
			InFlight: max(h.InFlight(), 0), Ejections: h.Ejections(), ConsecutiveFailures: h.ConsecutiveFailures()}
		if u := h.Until(); !u.IsZero() {
			unix := u.Unix()
			j.Until = &unix
		}
		if l := h.Latency(now); l > 0 {
			ms := float64(l) / float64(time.Millisecond)
			j.LatencyMS = &ms
		}
		out.Data = append(out.Data, j)
	})
	writeJSON(ctx, fasthttp.StatusOK, out)
}

var routeStates = []upstream.State{upstream.Healthy, upstream.Ejected, upstream.CoolingDown, upstream.HalfOpen}

// writeRouteMetrics writes every route's health at a scrape: its state (1
// for the one it is in), latency, requests in flight and ejections.
func (s *Server) writeRouteMetrics(w io.Writer) {
	now := time.Now()
	family := func(name, typ string, value func(m *model, r *upstream.Route)) {
		vm.WriteMetadataIfNeeded(w, name, typ)
		s.eachRoute(value)
	}
	labels := func(m *model, r *upstream.Route) string {
		return fmt.Sprintf(`model="%s",upstream="%s"`, labelEscaper.Replace(m.name), labelEscaper.Replace(r.Upstream().Name()))
	}
	family("tokenhub_route_state", "gauge", func(m *model, r *upstream.Route) {
		cur := r.Health().State()
		for _, st := range routeStates {
			v := 0
			if st == cur {
				v = 1
			}
			fmt.Fprintf(w, "tokenhub_route_state{%s,state=\"%s\"} %d\n", labels(m, r), st, v)
		}
	})
	family("tokenhub_route_latency_seconds", "gauge", func(m *model, r *upstream.Route) {
		fmt.Fprintf(w, "tokenhub_route_latency_seconds{%s} %g\n", labels(m, r), r.Health().Latency(now).Seconds())
	})
	family("tokenhub_route_in_flight", "gauge", func(m *model, r *upstream.Route) {
		fmt.Fprintf(w, "tokenhub_route_in_flight{%s} %d\n", labels(m, r), max(r.Health().InFlight(), 0))
	})
	family("tokenhub_route_ejections_total", "counter", func(m *model, r *upstream.Route) {
		fmt.Fprintf(w, "tokenhub_route_ejections_total{%s} %d\n", labels(m, r), r.Health().Ejections())
	})
}
