package proxy

import (
	"bytes"
	"net/url"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/internal/affinity"
	"github.com/tokenhub/tokenhub/internal/usd"
	"github.com/tokenhub/tokenhub/keys"
	"github.com/tokenhub/tokenhub/limits"
	"github.com/tokenhub/tokenhub/proxy/openai"
	"github.com/tokenhub/tokenhub/proxy/upstream"
)

// The Responses API's follow-ups: GET and DELETE /v1/responses/{id},
// POST /v1/responses/{id}/cancel, GET /v1/responses/{id}/input_items, a
// create that names previous_response_id, and POST
// /v1/responses/input_tokens. A stored response lives on the upstream that
// created it, so each follow-up goes there, and only for the key that
// created it: the store remembers id -> (upstream, model, route model, key)
// when the id becomes known (rememberResponse), on every node alike
// (affinity.Store). Another key, an unknown id, one past the retention or
// forgotten for room, all answer the same 404, so a key learns nothing of
// ids that are not its own. None is billed; each is counted and
// rate-limited as a request (requests and tokens per minute, no tokens).

var (
	errResponseNotFound = &apiError{status: fasthttp.StatusNotFound, typ: typeInvalidRequest, code: "not_found",
		message: "No response found with id: "}
	errPreviousResponseNotFound = &apiError{status: fasthttp.StatusNotFound, typ: typeInvalidRequest,
		param: "previous_response_id", code: "previous_response_not_found",
		message: "No response found with id: "}
	errPreviousResponseElsewhere = &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest,
		param: "previous_response_id", code: "invalid_value",
		message: "The previous response is held by an upstream that does not serve this model: "}
	errResponseUpstreamGone = &apiError{status: fasthttp.StatusNotFound, typ: typeInvalidRequest, code: "not_found",
		message: "The upstream that holds the response is no longer configured; response: "}
	errResponsesStoreDown = &apiError{status: fasthttp.StatusServiceUnavailable, typ: typeServer, code: "store_unavailable",
		message: "The store of response ids is unavailable; retry shortly."}
	errStreamStoredResponse = &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, param: "stream",
		code: "unsupported_parameter", message: "Streaming a stored response again is not supported by this gateway; get it without stream."}
)

func (s *Server) getResponse(ctx *fasthttp.RequestCtx) {
	s.responseFollowUp(ctx, fasthttp.MethodGet, "")
}

func (s *Server) deleteResponse(ctx *fasthttp.RequestCtx) {
	s.responseFollowUp(ctx, fasthttp.MethodDelete, "")
}

func (s *Server) cancelResponse(ctx *fasthttp.RequestCtx) {
	s.responseFollowUp(ctx, fasthttp.MethodPost, "/cancel")
}

func (s *Server) responseInputItems(ctx *fasthttp.RequestCtx) {
	s.responseFollowUp(ctx, fasthttp.MethodGet, "/input_items")
}

// responseFollowUp forwards a follow-up on the response the path names to
// the upstream that created it: method on <base>/responses/<id><suffix>,
// with the client's query string. No failover: no other upstream holds it.
func (s *Server) responseFollowUp(ctx *fasthttp.RequestCtx, method, suffix string) {
	key, plan, ok := s.authenticate(ctx)
	if !ok {
		return
	}
	id, _ := ctx.UserValue("id").(string)
	if method == fasthttp.MethodGet && suffix == "" && bytes.Equal(ctx.QueryArgs().Peek("stream"), []byte("true")) {
		writeError(ctx, errStreamStoredResponse, nil)
		return
	}
	rec, ok := s.ownedResponse(ctx, key, id, errResponseNotFound)
	if !ok {
		return
	}
	u := s.routing.Load().upstreams.Lookup(rec.Upstream)
	if u == nil {
		writeError(ctx, errResponseUpstreamGone, detailID(id))
		return
	}
	var t limits.Ticket
	if !s.admitRequest(ctx, key, plan, rec.Model, &t) {
		return
	}
	defer s.gate.Settle(&t, usd.Tokens{}, usd.Price{}, time.Now())

	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	uri := append(append([]byte(nil), u.URI(upstream.Responses)...), '/')
	uri = append(uri, url.PathEscape(id)...)
	uri = append(uri, suffix...)
	if q := ctx.URI().QueryString(); len(q) > 0 {
		uri = append(append(uri, '?'), q...)
	}
	setUpstreamHeaders(req, ctx, u)
	req.Header.SetMethod(method)
	req.SetRequestURIBytes(uri)
	if !s.sendFollowUp(ctx, u, req, resp, []byte(rec.Model)) {
		return
	}
	if method == fasthttp.MethodDelete && suffix == "" {
		// The upstream deleted it: its id may be forgotten. Failing that,
		// a later follow-up reaches the upstream, which answers 404.
		if err := s.responseIDs.Forget(s.callCtx(ctx), id); err != nil {
			s.log.Warn("could not forget a deleted response's id", "err", err,
				"request_id", string(ctx.Response.Header.Peek(headerRequestID)))
		}
	}
}

// ownedResponse returns the record of response id when key created it;
// else it answers notFound (or 503 when the store cannot say) and false.
func (s *Server) ownedResponse(ctx *fasthttp.RequestCtx, key *keys.Key, id string, notFound *apiError) (affinity.Record, bool) {
	if s.responseIDs == nil {
		writeError(ctx, notFound, detailID(id))
		return affinity.Record{}, false
	}
	rec, found, err := s.responseIDs.Lookup(s.callCtx(ctx), id)
	if err != nil {
		s.log.Error("look up a response id", "err", err, "request_id", string(ctx.Response.Header.Peek(headerRequestID)))
		writeError(ctx, errResponsesStoreDown, nil)
		return affinity.Record{}, false
	}
	// Another key's response answers as an unknown one does.
	if !found || rec.KeyID != key.ID {
		writeError(ctx, notFound, detailID(id))
		return affinity.Record{}, false
	}
	return rec, true
}

// detailID is id as an error's detail, cut to what an id may be.
func detailID(id string) []byte {
	return []byte(id[:min(len(id), affinity.MaxIDLen)])
}

// pinPrevious routes a create (or an input_tokens count) that names
// previous_response_id to the route of m on the upstream that holds that
// response, after checking that the key created it; it answers the error
// itself and returns false when it did not, before anything is sent.
func (s *Server) pinPrevious(ctx *fasthttp.RequestCtx, key *keys.Key, m *model, f *openai.Request, c *claim) bool {
	if f.PreviousResponseID == nil {
		return true
	}
	rec, ok := s.ownedResponse(ctx, key, string(f.PreviousResponseID), errPreviousResponseNotFound)
	if !ok {
		return false
	}
	for i := range m.routes.Len() {
		if m.routes.Route(i).Upstream().Name() == rec.Upstream {
			c.pin, c.pinned = i, true
			return true
		}
	}
	writeError(ctx, errPreviousResponseElsewhere, f.Model)
	return false
}

// admitRequest admits a request that is not billed (a follow-up, a token
// count) under the key's request and token rates, as a request of no
// tokens; it answers the refusal itself.
func (s *Server) admitRequest(ctx *fasthttp.RequestCtx, key *keys.Key, plan *keys.Plan, model string, t *limits.Ticket) bool {
	a := limits.Admission{KeyID: key.ID, Model: model,
		Limits: limits.Limits{RPM: keys.Limit(plan.RPM, key.RPM), TPM: keys.Limit(plan.TPM, key.TPM)}}
	s.gate.Admit(s.callCtx(ctx), &a, time.Now(), t)
	setRateHeaders(ctx, t)
	if t.Refusal != limits.Admitted {
		refuse(ctx, t)
		return false
	}
	return true
}

// setUpstreamHeaders writes the headers every upstream request carries: the
// gateway's credentials (never the client's), the request id, the
// upstream's own headers; JSON asked for.
func setUpstreamHeaders(req *fasthttp.Request, ctx *fasthttp.RequestCtx, u *upstream.Upstream) {
	req.Reset()
	setUpstreamAuth(req, u)
	req.Header.SetCanonical(headerAccept, contentTypeJSON)
	endUpstreamHeaders(req, ctx, u)
}

// sendFollowUp sends req to u and relays its answer as forward relays a
// buffered one; it reports whether the answer was a success.
func (s *Server) sendFollowUp(ctx *fasthttp.RequestCtx, u *upstream.Upstream, req *fasthttp.Request, resp *fasthttp.Response, model []byte) bool {
	if err := u.Do(req, resp, false, time.Now()); err != nil {
		s.answerUpstreamError(ctx, u, err, model)
		return false
	}
	return s.answer(ctx, u, resp, &openai.Request{Model: model})
}

// inputTokens forwards POST /v1/responses/input_tokens to a route of its
// model (the one holding previous_response_id, when it names one), failing
// over as a create does; not billed, counted as a request.
func (s *Server) inputTokens(ctx *fasthttp.RequestCtx) {
	key, plan, ok := s.authenticate(ctx)
	if !ok {
		return
	}
	var f openai.Request
	if detail, err := f.ParseResponses(ctx.PostBody()); err != nil {
		writeError(ctx, bodyError(err), detail)
		return
	}
	m := s.routing.Load().models.lookup(f.Model)
	if m == nil {
		writeError(ctx, errModelNotFound, f.Model)
		return
	}
	if !plan.Allows(f.Model) {
		writeError(ctx, errModelNotAllowed, f.Model)
		return
	}
	var c claim
	if !restrictRoutes(ctx, upstream.Responses, m, &f, &c) || !s.pinPrevious(ctx, key, m, &f, &c) {
		return
	}
	var t limits.Ticket
	if !s.admitRequest(ctx, key, plan, m.name, &t) {
		return
	}
	defer s.gate.Settle(&t, usd.Tokens{}, usd.Price{}, time.Now())

	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	f.Stream = false // a count is never streamed; Accept asks for JSON
	u, _ := s.sendToRoutes(ctx, req, resp, m, &c, false, f.Model, func(r *upstream.Route) error {
		buildUpstreamRequest(req, ctx, upstream.Responses, r, &f)
		var uri [256]byte // longer URIs grow onto the heap
		req.SetRequestURIBytes(append(append(uri[:0], r.Upstream().URI(upstream.Responses)...), "/input_tokens"...))
		return nil
	})
	if u != nil {
		s.answer(ctx, u, resp, &f)
	}
}

// rememberResponse remembers the response data names (a whole response, or
// a stream's response.created) as c's: its upstream and route, and its key.
// It runs before the client can learn the id, so that a follow-up on any
// node finds it. A failure is logged, not answered: the upstream has made
// (and billed) the response, and the client is better served by it than by
// an error that would make it create another; its follow-ups answer 404.
func (s *Server) rememberResponse(c *claim, data []byte, requestID []byte) {
	if s.responseIDs == nil || c.route == nil {
		return
	}
	id, ok := openai.ResponseID(data)
	if !ok {
		s.log.Warn("upstream response without an id; its follow-ups will answer 404",
			"upstream", c.rec.upstream, "request_id", string(requestID))
		return
	}
	rec := affinity.Record{Upstream: c.route.Upstream().Name(), Model: c.model.name, RouteModel: c.route.Model(), KeyID: c.rec.keyID}
	if err := s.responseIDs.Remember(s.callCtx(nil), string(id), rec); err != nil {
		s.log.Error("could not remember a response's id; its follow-ups will answer 404", "err", err,
			"upstream", rec.Upstream, "request_id", string(requestID))
	}
}
