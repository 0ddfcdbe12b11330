package proxy

import (
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/internal/tracing"
	"github.com/tokenhub/tokenhub/proxy/upstream"
)

// The request's side of tracing (see internal/tracing): three hooks on the
// inference path, each a nil check when tracing is off, and none
// allocating when it is on.

const (
	traceparent = "Traceparent"
	tracestate  = "Tracestate"
)

var (
	headerTraceparent = []byte(traceparent)
	headerTracestate  = []byte(tracestate)
)

// beginTrace decides the request's trace context from the client's
// traceparent, before anything can fail: a refused request is traced too.
func (s *Server) beginTrace(ctx *fasthttp.RequestCtx, rec *requestRecord) {
	if s.traces == nil {
		return
	}
	rec.trace = s.traces.Begin(ctx.Request.Header.PeekAll(traceparent))
}

// traceAttempt tells the upstream of route r the trace the request belongs
// to, the gateway span as its parent, and the client's tracestate when the
// trace is the client's (the vendors' entries in it are theirs to read);
// and notes the route's names for the span. It runs after the upstream
// request is built, so it overrides a traceparent the upstream's configured
// headers set.
func (s *Server) traceAttempt(req *fasthttp.Request, ctx *fasthttp.RequestCtx, r *upstream.Route, rec *requestRecord) {
	// A request with no trace of its own (a follow-up) sends none: an
	// all-zero trace id is invalid.
	if s.traces == nil || rec.trace.TraceID == ([16]byte{}) {
		return
	}
	u := r.Upstream()
	rec.provider, rec.routeModel = u.Kind(), r.Model()
	var tp [tracing.TraceparentLen]byte
	req.Header.SetCanonical(headerTraceparent, tracing.AppendTraceparent(tp[:0], &rec.trace))
	req.Header.DelBytes(headerTracestate)
	if rec.trace.Remote {
		for _, ts := range ctx.Request.Header.PeekAll(tracestate) {
			req.Header.AddBytesKV(headerTracestate, ts)
		}
	}
}

// traceFinished hands a finished request's span to the exporter, when
// tracing is on and the request is sampled. It copies the record; nothing
// of the request's content is in it.
func (s *Server) traceFinished(rec *requestRecord, status int, requestID []byte, total time.Duration) {
	if s.traces == nil || !rec.trace.Sampled {
		return
	}
	sp := tracing.Span{
		Context: rec.trace, Start: rec.start, End: rec.start.Add(total),
		Endpoint: endpointNames[rec.ep], Operation: operationNames[rec.ep],
		Model: rec.model, RouteModel: rec.routeModel, Provider: rec.provider, Upstream: rec.upstream,
		KeyID: rec.keyID, Plan: rec.plan, Status: status, Stream: rec.stream,
		GatewayDur: rec.gatewayDur, UpstreamDur: rec.upstreamDur, TTFB: rec.ttfb,
		Prompt: rec.prompt, Completion: rec.completion, Cached: rec.cached, CacheWrite: rec.cacheWrite,
		CostUSD: float64(rec.cost) / picoPerUSD, Estimated: rec.estimated, StreamError: rec.streamError,
	}
	sp.RequestIDN = uint8(copy(sp.RequestID[:], requestID))
	s.traces.Send(&sp)
}

// picoPerUSD converts usd.Pico to the dollars of tokenhub.cost_usd.
const picoPerUSD = 1e12

// operationNames are the GenAI semantic conventions' gen_ai.operation.name
// of each endpoint: a Responses create and an Anthropic message generate a
// chat turn; counting tokens and compacting have no name of theirs.
var operationNames = [upstream.NumEndpoints]string{"chat", "text_completion", "embeddings", "chat", "chat", "count_tokens",
	"compact"}
