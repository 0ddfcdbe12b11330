package proxy

import (
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	vm "github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/internal/tracing"
	"github.com/tokenhub/tokenhub/internal/usd"
	"github.com/tokenhub/tokenhub/keys"
	"github.com/tokenhub/tokenhub/proxy/upstream"
)

// gatewayMetrics is what /metrics shows. Every series a request touches is
// resolved once, on its first use, and kept in a map keyed by its labels, so
// counting a request costs a read-locked map lookup and atomic adds: no
// allocation, no string building on the request path. Label values come
// from the config (model and plan names, upstreams) or fixed sets, never
// from what a client sent, so the series stay few.
type gatewayMetrics struct {
	set *vm.Set

	requests  seriesMap[requestLabels, *vm.Counter]
	usage     seriesMap[usageLabels, *usageSeries]
	upstreams seriesMap[upstreamLabels, *vm.Counter]

	// gateway is the time tokenhub itself added to a request (all of it but
	// the upstream's), upstream the upstream's until its answer (a stream's:
	// until its headers), by endpoint.
	gateway, upstream [upstream.NumEndpoints]*vm.PrometheusHistogram
	ttfb              *vm.PrometheusHistogram
	valkey            *vm.PrometheusHistogram
	valkeyErrors      *vm.Counter
	openStreams       atomic.Int64
	accessDropped     *vm.Counter
	// spansDropped counts the spans lost, by tracing's drop reason.
	spansDroppedQueueFull, spansDroppedExportFailed *vm.Counter
}

type requestLabels struct {
	endpoint, model, plan string
	status                int
}

type usageLabels struct{ model, plan string }

type usageSeries struct {
	prompt, cached, completion *vm.Counter
	cacheWrite                 *vm.Counter
	spend                      *vm.FloatCounter
	estimated                  *vm.Counter
	overBound                  *vm.Counter
	cachedClamped              *vm.Counter
}

type upstreamLabels struct{ upstream, event string }

// Upstream events counted by tokenhub_upstream_events_total.
const (
	upstreamFailover    = "failover"           // a route failed and the next was tried
	upstreamUnreachable = "unreachable"        // never reached: refused, or closed before the request was written
	upstreamDropped     = "dropped"            // closed or reset after the request was written, without an answer
	upstreamTimeout     = "timeout"            // no answer within the deadlines
	upstreamStatus5xx   = "status_5xx"         // answered 5xx
	upstreamStatus429   = "status_429"         // answered 429
	upstreamAuthRefused = "auth_refused"       // answered 401 or 403: the gateway's provider key was refused
	upstreamStreamCut   = "stream_cut"         // a stream broke off or stalled
	upstreamBadAnswer   = "bad_response"       // an answer that could not be read
	upstreamBudgetSpent = "retry_budget_spent" // a failover to it refused: its retry budget was spent
)

var endpointNames = [upstream.NumEndpoints]string{"chat", "completions", "embeddings", "responses", "messages", "count_tokens",
	"responses_compact"}

// Bucket bounds, in seconds: the gateway's own time is microseconds, an
// upstream's is up to minutes.
var (
	gatewayBuckets  = vm.ExponentialBuckets(10e-6, 2, 18)  // 10µs … 1.3s
	upstreamBuckets = vm.ExponentialBuckets(1e-3, 2, 20)   // 1ms … 524s
	valkeyBuckets   = vm.ExponentialBuckets(50e-6, 2, 16)  // 50µs … 1.6s
	ttfbBuckets     = vm.ExponentialBuckets(100e-6, 2, 20) // 100µs … 52s
)

func newGatewayMetrics() *gatewayMetrics {
	// # HELP and # TYPE lines on every series (see withHelp). The switch is
	// the library's, process-wide and atomic; every gateway wants it on.
	vm.ExposeMetadata(true)
	m := &gatewayMetrics{set: vm.NewSet()}
	for ep, name := range endpointNames {
		m.gateway[ep] = m.set.NewPrometheusHistogramExt(`tokenhub_gateway_duration_seconds{endpoint="`+name+`"}`, gatewayBuckets)
		m.upstream[ep] = m.set.NewPrometheusHistogramExt(`tokenhub_upstream_duration_seconds{endpoint="`+name+`"}`, upstreamBuckets)
	}
	m.ttfb = m.set.NewPrometheusHistogramExt("tokenhub_stream_ttfb_seconds", ttfbBuckets)
	m.valkey = m.set.NewPrometheusHistogramExt("tokenhub_valkey_duration_seconds", valkeyBuckets)
	m.valkeyErrors = m.set.NewCounter("tokenhub_valkey_errors_total")
	m.accessDropped = m.set.NewCounter("tokenhub_access_log_dropped_total")
	m.spansDroppedQueueFull = m.set.NewCounter(`tokenhub_trace_spans_dropped_total{reason="` + tracing.DropQueueFull + `"}`)
	m.spansDroppedExportFailed = m.set.NewCounter(`tokenhub_trace_spans_dropped_total{reason="` + tracing.DropExportFailed + `"}`)
	m.set.NewGauge("tokenhub_open_streams", func() float64 { return float64(m.openStreams.Load()) })
	return m
}

// watchRegistry adds the key cache's counts.
func (m *gatewayMetrics) watchRegistry(reg *keys.Registry) {
	m.set.RegisterMetricsWriter(func(w io.Writer) {
		s := reg.Stats()
		vm.WriteCounterUint64(w, `tokenhub_key_cache_lookups_total{result="hit"}`, s.Hits)
		vm.WriteCounterUint64(w, `tokenhub_key_cache_lookups_total{result="negative_hit"}`, s.NegativeHits)
		vm.WriteCounterUint64(w, `tokenhub_key_cache_lookups_total{result="miss"}`, s.Misses)
		vm.WriteCounterUint64(w, `tokenhub_key_cache_lookups_total{result="stale_hit"}`, s.StaleHits)
		vm.WriteCounterUint64(w, `tokenhub_key_cache_lookups_total{result="unavailable"}`, s.Unavailable)
	})
}

// write renders every series, then the process's and the Go runtime's
// (go_memstats_*, process_cpu_seconds_total, process_resident_memory_bytes…).
func (m *gatewayMetrics) write(w io.Writer) {
	withHelp(w, func(w io.Writer) {
		m.set.WritePrometheus(w)
		vm.WriteProcessMetrics(w)
	})
}

// seriesMap maps labels to their series. A lookup loads a map nobody
// writes: no lock, and no write to memory other cores read (a read-locked
// RWMutex would bounce its cache line between cores on every request). A
// new series, rare, copies the map.
type seriesMap[K comparable, V any] struct {
	mu sync.Mutex
	m  atomic.Pointer[map[K]V]
}

func (s *seriesMap[K, V]) lookup(k K) (V, bool) {
	if m := s.m.Load(); m != nil {
		v, ok := (*m)[k]
		return v, ok
	}
	var zero V
	return zero, false
}

// add stores v for k, unless a series got there first, and returns the
// series for k.
func (s *seriesMap[K, V]) add(k K, v V) V {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.m.Load()
	if old != nil {
		if got, ok := (*old)[k]; ok {
			return got
		}
	}
	next := make(map[K]V, 1+len(ptrMap(old)))
	for k, v := range ptrMap(old) {
		next[k] = v
	}
	next[k] = v
	s.m.Store(&next)
	return v
}

func ptrMap[K comparable, V any](m *map[K]V) map[K]V {
	if m == nil {
		return nil
	}
	return *m
}

// request counts one answered request.
func (m *gatewayMetrics) request(endpoint, model, plan string, status int) {
	l := requestLabels{endpoint, model, plan, status}
	c, ok := m.requests.lookup(l)
	if !ok {
		c = m.requests.add(l, m.set.GetOrCreateCounter(series("tokenhub_requests_total",
			"endpoint", l.endpoint, "model", l.model, "plan", l.plan, "status", strconv.Itoa(l.status))))
	}
	c.Inc()
}

// used counts a settled request's tokens and spend.
func (m *gatewayMetrics) used(model, plan string, used usd.Tokens, cost usd.Pico, estimated, overBound, cachedClamped bool) {
	l := usageLabels{model, plan}
	u, ok := m.usage.lookup(l)
	if !ok {
		u = m.usage.add(l, &usageSeries{
			prompt:     m.set.GetOrCreateCounter(series("tokenhub_tokens_total", "model", l.model, "plan", l.plan, "type", "prompt")),
			completion: m.set.GetOrCreateCounter(series("tokenhub_tokens_total", "model", l.model, "plan", l.plan, "type", "completion")),
			// Families of their own, not types of tokenhub_tokens_total:
			// cached and cache-write tokens are part of the prompt's, and a
			// sum over type would count them twice.
			cached:        m.set.GetOrCreateCounter(series("tokenhub_cached_tokens_total", "model", l.model, "plan", l.plan)),
			cacheWrite:    m.set.GetOrCreateCounter(series("tokenhub_cache_write_tokens_total", "model", l.model, "plan", l.plan)),
			cachedClamped: m.set.GetOrCreateCounter(series("tokenhub_usage_cached_clamped_total", "model", l.model, "plan", l.plan)),
			spend:         m.set.GetOrCreateFloatCounter(series("tokenhub_spend_usd_total", "model", l.model, "plan", l.plan)),
			estimated:     m.set.GetOrCreateCounter(series("tokenhub_usage_estimated_total", "model", l.model, "plan", l.plan)),
			overBound:     m.set.GetOrCreateCounter(series("tokenhub_usage_over_bound_total", "model", l.model, "plan", l.plan)),
		})
	}
	u.prompt.Add(int(used.Prompt))
	u.cached.Add(int(used.Cached))
	u.cacheWrite.Add(int(used.CacheWrite))
	u.completion.Add(int(used.Completion))
	u.spend.Add(float64(cost) / 1e12)
	if estimated {
		u.estimated.Inc()
	}
	if overBound {
		u.overBound.Inc()
	}
	if cachedClamped {
		u.cachedClamped.Inc()
	}
}

// upstreamEvent counts a failover or a failure of an upstream.
func (m *gatewayMetrics) upstreamEvent(upstream, event string) {
	l := upstreamLabels{upstream, event}
	c, ok := m.upstreams.lookup(l)
	if !ok {
		c = m.upstreams.add(l, m.set.GetOrCreateCounter(series("tokenhub_upstream_events_total", "upstream", upstream, "event", event)))
	}
	c.Inc()
}

// Metrics are a Server's series, made apart from it so that the node can
// hand their Valkey hook to the store before the Server exists.
type Metrics struct{ gateway *gatewayMetrics }

// NewMetrics makes the series a Server serves on GET /metrics.
func NewMetrics() *Metrics { return &Metrics{gateway: newGatewayMetrics()} }

// ObserveValkey is valkeyx.Options.Observe: it times each Valkey call and
// counts its errors.
func (m *Metrics) ObserveValkey(d time.Duration, err error) { m.gateway.observeValkey(d, err) }

// SpansDropped is tracing.Options.Dropped: it counts the spans lost, by
// reason.
func (m *Metrics) SpansDropped(reason string, n int) {
	if reason == tracing.DropQueueFull {
		m.gateway.spansDroppedQueueFull.Add(n)
		return
	}
	m.gateway.spansDroppedExportFailed.Add(n)
}

// observeValkey is valkeyx.Options.Observe.
func (m *gatewayMetrics) observeValkey(d time.Duration, err error) {
	m.valkey.Update(d.Seconds())
	if err != nil {
		m.valkeyErrors.Inc()
	}
}

// series writes a series name with its labels, escaped as the text format
// wants.
func series(name string, labels ...string) string {
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte('{')
	for i := 0; i+1 < len(labels); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(labels[i])
		b.WriteString(`="`)
		b.WriteString(labelEscaper.Replace(labels[i+1]))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

var contentTypeMetrics = []byte("text/plain; version=0.0.4; charset=utf-8")

// serveMetrics answers GET /metrics in the Prometheus text format.
func (s *Server) serveMetrics(ctx *fasthttp.RequestCtx) {
	ctx.SetContentTypeBytes(contentTypeMetrics)
	s.metrics.write(ctx)
}
