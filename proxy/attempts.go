package proxy

import (
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/proxy/anthropic"
	"github.com/tokenhub/tokenhub/proxy/upstream"
)

// sendToRoutes sends req to one of m's routes, chosen by health, latency
// and load (upstream.Routes.Pick) among those c may take, and fails over to
// the next best route when the request provably never reached the upstream
// (upstream.NeverSent) or it answered 429 or 5xx (upstream.FailsOver), as
// long as the request's deadline (its first attempt's) has time left and
// the next upstream's retry budget allows. A request the upstream may have
// read is never sent again: a 502 costs the client a retry it decides on, a
// second send may cost it a second bill. It is the one attempt loop of every
// protocol the gateway speaks; what differs is build, which writes the
// upstream request for a route into req, in the protocol that route speaks.
// build may refuse a route (false), having answered the client.
//
// It returns the upstream whose answer resp holds (with stream, possibly
// still being read), or nil when the client has been answered: an upstream
// failure no route recovered, or build's refusal. detail is the model name
// an error answer quotes.
func (s *Server) sendToRoutes(ctx *fasthttp.RequestCtx, req *fasthttp.Request, resp *fasthttp.Response, m *model, c *claim,
	stream bool, detail []byte, build func(r *upstream.Route) bool) *upstream.Upstream {
	tried := c.exclude
	var started time.Time // the first attempt's send, where the deadline runs from
	var i int
	var trial bool
	if c.pinned {
		// No other upstream holds what it continues: no choice, no failover.
		i = c.pin
		m.routes.Route(i).Health().Begin()
	} else {
		i, trial = pickFirst(m, c.exclude, time.Now())
	}
	for {
		r := m.routes.Route(i)
		c.route = r
		u := r.Upstream()
		tried.Add(i)
		if !build(r) {
			r.Health().Abandon(trial)
			return nil
		}
		s.traceAttempt(req, ctx, r, &c.rec)
		sent := time.Now()
		if started.IsZero() {
			started = sent
			u.FirstAttempt(sent)
		}
		err := u.Do(req, resp, stream, started)
		now := time.Now()
		c.rec.upstream = u.Name()
		c.rec.upstreamDur += now.Sub(sent)
		o := upstream.Outcome{Trial: trial, Sent: sent, Latency: now.Sub(sent)}
		var retry bool
		if err != nil {
			// A timeout, a dropped connection or an unreadable answer may
			// come after the upstream read the request and ran it: sending
			// it again, here or to the next route, could bill it twice.
			retry = upstream.NeverSent(err) && !upstream.IsTimeout(err) && !upstream.IsDropped(err)
		} else {
			status := resp.StatusCode()
			s.countStatus(u, status)
			retry = upstream.FailsOver(status)
			if retry && coolsDown(status) {
				o.CoolDown = upstream.RetryAfter(&resp.Header, now)
			}
		}
		if err != nil || retry {
			o.Failed, o.Latency = true, max(o.Latency, failureLatency)
		}
		s.routeDone(m, r, o, now)
		if retry {
			next, nextTrial, ok := s.failover(m, c, tried, started, now)
			if ok {
				if err != nil {
					s.metrics.upstreamEvent(u.Name(), upstreamUnreachable)
					s.log.Warn("upstream unreachable", "upstream", u.Name(), "err", err, "failover", true)
				} else {
					s.log.Warn("upstream failed", "upstream", u.Name(), "status", resp.StatusCode(), "failover", true)
					resp.CloseBodyStream() //nolint:errcheck // the connection is discarded on error
				}
				s.metrics.upstreamEvent(u.Name(), upstreamFailover)
				i, trial = next, nextTrial
				continue
			}
		}
		if err != nil {
			s.answerUpstreamError(ctx, u, err, detail)
			return nil
		}
		return u
	}
}

// countStatus counts an upstream's 429 and 5xx answers.
func (s *Server) countStatus(u *upstream.Upstream, status int) {
	switch {
	case status == fasthttp.StatusTooManyRequests:
		s.metrics.upstreamEvent(u.Name(), upstreamStatus429)
	case status >= 500:
		s.metrics.upstreamEvent(u.Name(), upstreamStatus5xx)
	}
}

// coolsDown reports whether a failed attempt's status is one whose
// retry-after the route waits out: 429, 503, and Anthropic's 529
// overloaded_error, whatever the protocol of the request that met it.
func coolsDown(status int) bool {
	return status == fasthttp.StatusTooManyRequests || status == fasthttp.StatusServiceUnavailable ||
		status == anthropic.StatusOverloaded
}

// answerUpstreamError answers err, an upstream call's failure that no
// route recovered, with the gateway's error for its cause.
func (s *Server) answerUpstreamError(ctx *fasthttp.RequestCtx, u *upstream.Upstream, err error, detail []byte) {
	e, ev, words := errUpstreamUnreadable, upstreamBadAnswer, "upstream answer unreadable"
	switch {
	case upstream.IsTimeout(err):
		e, ev, words = errUpstreamTimeout, upstreamTimeout, "upstream timed out"
	case upstream.IsDropped(err):
		e, ev, words = errUpstreamDropped, upstreamDropped, "upstream dropped the request"
	case upstream.NeverSent(err):
		e, ev, words = errUpstreamUnreachable, upstreamUnreachable, "upstream unreachable"
	}
	s.metrics.upstreamEvent(u.Name(), ev)
	// A timeout is the operator's setting meeting a slow upstream: the
	// metric counts it, a log line per request would flood.
	if ev != upstreamTimeout {
		s.log.Warn(words, "upstream", u.Name(), "err", err)
	}
	writeError(ctx, e, detail)
}
