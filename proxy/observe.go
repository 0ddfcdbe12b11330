package proxy

import (
	"bytes"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/proxy/upstream"
)

// finishHandler records an inference request when its handler returns,
// unless a stream took it over (the relay records it when the stream ends).
func (s *Server) finishHandler(ctx *fasthttp.RequestCtx, c *claim) {
	if c.handedOff {
		return
	}
	total := time.Since(c.rec.start)
	c.rec.gatewayDur = total - c.rec.upstreamDur
	s.finish(&c.rec, ctx.Response.StatusCode(), ctx.Response.Header.Peek(headerRequestID), total)
}

// finish records a finished inference request: its metrics and, when
// sampled, its access log line and its span. It does not allocate.
func (s *Server) finish(rec *requestRecord, status int, requestID []byte, total time.Duration) {
	m := s.metrics
	m.request(endpointNames[rec.ep], rec.model, rec.plan, status)
	m.gateway[rec.ep].Update(rec.gatewayDur.Seconds())
	if rec.upstream != "" {
		m.upstream[rec.ep].Update(rec.upstreamDur.Seconds())
	}
	if rec.stream && rec.ttfb > 0 {
		m.ttfb.Update(rec.ttfb.Seconds())
	}
	if s.access.wants(status) {
		e := accessEntry{requestRecord: *rec, status: status, duration: total}
		e.idLen = uint8(copy(e.requestID[:], requestID))
		s.access.send(&e)
	}
	s.traceFinished(rec, status, requestID, total)
}

// countOther counts a request to anything but the inference endpoints, which
// count themselves with their model and plan.
func (s *Server) countOther(ctx *fasthttp.RequestCtx) {
	path := ctx.Path()
	if ctx.IsPost() {
		for _, p := range inferencePaths {
			if bytes.Equal(path, p) {
				return
			}
		}
	}
	s.metrics.request(routeClass(path), "", "", ctx.Response.StatusCode())
}

var (
	pathChat        = []byte("/v1/chat/completions")
	pathCompletions = []byte("/v1/completions")
	pathEmbeddings  = []byte("/v1/embeddings")
	pathResponses   = []byte("/v1/responses")
	pathCompact     = []byte("/v1/responses/compact")
	// inferencePaths are the routes whose handler counts its own requests
	// (finishHandler), one per upstream.Endpoint.
	inferencePaths = [upstream.NumEndpoints][]byte{
		upstream.Chat: pathChat, upstream.Completions: pathCompletions,
		upstream.Embeddings: pathEmbeddings, upstream.Responses: pathResponses,
		upstream.Messages: pathMessages, upstream.CountTokens: pathCountTokens,
		upstream.Compact: pathCompact,
	}
)

// routeClasses name the other endpoints for the endpoint label, by path
// prefix, so the label's values are a fixed set whatever URLs clients try.
var routeClasses = [...]struct {
	prefix []byte
	name   string
}{
	{pathChat, "chat"},
	{pathCompletions, "completions"},
	{pathEmbeddings, "embeddings"},
	// A Responses follow-up (a stored response's get, delete, cancel or
	// input items; input_tokens); creates and compactions count
	// themselves.
	{[]byte("/v1/responses/"), "responses_followup"},
	{pathMessages, "messages"},
	{[]byte("/v1/models"), "models"},
	{[]byte("/v1/keys"), "keys"},
	{[]byte("/v1/plans"), "plans"},
	{[]byte("/admin/"), "admin"},
	{[]byte("/dashboard"), "dashboard"},
	{[]byte("/healthz"), "health"},
	{[]byte("/readyz"), "health"},
	{[]byte("/metrics"), "metrics"},
	{[]byte("/debug/pprof"), "pprof"},
}

func routeClass(path []byte) string {
	for _, c := range routeClasses {
		if bytes.HasPrefix(path, c.prefix) {
			if c.name == "keys" && bytes.HasSuffix(path, []byte("/usage")) {
				return "usage"
			}
			return c.name
		}
	}
	return "other"
}
