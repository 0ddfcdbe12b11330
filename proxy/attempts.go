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
//
// build may refuse a route with an error (a chat request that cannot be
// translated for a Claude route). Nothing was sent, so the request goes to
// another route: as a first attempt when it is one, else as the failover.
// When no route takes it, the client gets what an earlier attempt met, as
// if there were no other route (so a client whose request one route failed
// gets that retryable failure, not a 400), or else sendToRoutes returns
// build's error with the client not answered yet.
//
// Otherwise it returns the upstream whose answer resp holds (with stream,
// possibly still being read), or nil when it has answered the client: an
// upstream failure no route recovered. detail is the model name an error
// answer quotes.
func (s *Server) sendToRoutes(ctx *fasthttp.RequestCtx, req *fasthttp.Request, resp *fasthttp.Response, m *model, c *claim,
	stream bool, detail []byte, build func(r *upstream.Route) error) (*upstream.Upstream, error) {
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
	// failed is the last attempt's upstream when it failed with an answer
	// resp still holds (failedErr nil) or with failedErr, until another
	// route takes the request.
	var failed *upstream.Upstream
	var failedErr error
	for {
		r := m.routes.Route(i)
		tried.Add(i)
		if err := build(r); err != nil {
			r.Health().Abandon(trial)
			var ok bool
			if i, trial, ok = s.another(m, c, tried, started); ok {
				continue
			}
			switch {
			case failed == nil:
				return nil, err
			case failedErr != nil:
				// Counted and logged when it happened.
				e, _, _ := upstreamErrorOf(failedErr)
				writeError(ctx, e, detail)
				return nil, nil
			}
			return failed, nil
		}
		if failed != nil {
			s.metrics.upstreamEvent(failed.Name(), upstreamFailover)
			if failedErr == nil {
				resp.CloseBodyStream() //nolint:errcheck // the connection is discarded on error
			}
			failed = nil
		}
		c.route = r
		u := r.Upstream()
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
			if next, nextTrial, ok := s.failover(m, c, tried, started, now); ok {
				if err != nil {
					s.metrics.upstreamEvent(u.Name(), upstreamUnreachable)
					s.log.Warn("upstream unreachable", "upstream", u.Name(), "err", err, "failover", true)
				} else {
					s.log.Warn("upstream failed", "upstream", u.Name(), "status", resp.StatusCode(), "failover", true)
				}
				// Dropped once the next route takes the request.
				failed, failedErr = u, err
				i, trial = next, nextTrial
				continue
			}
		}
		if err != nil {
			s.answerUpstreamError(ctx, u, err, detail)
			return nil, nil
		}
		return u, nil
	}
}

// another picks the route to try after build refused one: a first attempt
// among the routes not tried when nothing was sent yet (started zero), else
// a failover (the request is then a retry of the attempt that failed).
func (s *Server) another(m *model, c *claim, tried upstream.Tried, started time.Time) (i int, trial, ok bool) {
	now := time.Now()
	switch {
	case c.pinned || tried == m.routes.All():
		return 0, false, false
	case started.IsZero():
		i, trial = pickFirst(m, tried, now)
		return i, trial, true
	}
	return s.failover(m, c, tried, started, now)
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
	e, ev, words := upstreamErrorOf(err)
	s.metrics.upstreamEvent(u.Name(), ev)
	// A timeout is the operator's setting meeting a slow upstream: the
	// metric counts it, a log line per request would flood.
	if ev != upstreamTimeout {
		s.log.Warn(words, "upstream", u.Name(), "err", err)
	}
	writeError(ctx, e, detail)
}

// upstreamErrorOf is the gateway's error for an upstream call's failure,
// the event it counts as and the words it is logged with.
func upstreamErrorOf(err error) (e *apiError, event, words string) {
	switch {
	case upstream.IsTimeout(err):
		return errUpstreamTimeout, upstreamTimeout, "upstream timed out"
	case upstream.IsDropped(err):
		return errUpstreamDropped, upstreamDropped, "upstream dropped the request"
	case upstream.NeverSent(err):
		return errUpstreamUnreachable, upstreamUnreachable, "upstream unreachable"
	}
	return errUpstreamUnreadable, upstreamBadAnswer, "upstream answer unreadable"
}
