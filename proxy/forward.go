package proxy

import (
	"bytes"
	"time"

	"github.com/bytedance/sonic"
	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/internal/usd"
	"github.com/tokenhub/tokenhub/keys"
	"github.com/tokenhub/tokenhub/limits"
	"github.com/tokenhub/tokenhub/proxy/anthropic"
	"github.com/tokenhub/tokenhub/proxy/openai"
	"github.com/tokenhub/tokenhub/proxy/upstream"
)

func (s *Server) chatCompletions(ctx *fasthttp.RequestCtx) { s.inference(ctx, upstream.Chat) }
func (s *Server) completions(ctx *fasthttp.RequestCtx)     { s.inference(ctx, upstream.Completions) }
func (s *Server) embeddings(ctx *fasthttp.RequestCtx)      { s.inference(ctx, upstream.Embeddings) }
func (s *Server) responses(ctx *fasthttp.RequestCtx)       { s.inference(ctx, upstream.Responses) }

var errStoredChatCompletions = &apiError{status: fasthttp.StatusNotFound, typ: typeInvalidRequest, code: "unsupported_endpoint",
	message: "Stored chat completions are not supported by this gateway: it keeps no chat completion after answering it, " +
		"since remembering every id would cost each chat request a write to the store. For answers stored and retrieved " +
		"by id, use the Responses API (POST /v1/responses), whose ids this gateway routes back to the upstream that made them. (",
	after: ")"}

// storedChatCompletions answers the stored chat completions API (get,
// update, delete and list chat completions, list a completion's messages)
// on every method, once the key authenticates: a 404 that says what is not
// supported and why, where a 405 with an Allow header would send the
// client looking for a method that does not exist.
func (s *Server) storedChatCompletions(ctx *fasthttp.RequestCtx) {
	if _, _, ok := s.authenticate(ctx); !ok {
		return
	}
	writeError(ctx, errStoredChatCompletions, methodAndPath(ctx))
}

// inference is the hot path: authenticate, read the few fields it needs from
// the body, check the plan, forward. It allocates nothing in steady state for
// buffered answers (see TestAllocsServeChat).
func (s *Server) inference(ctx *fasthttp.RequestCtx, ep upstream.Endpoint) {
	var c claim
	c.rec = requestRecord{start: ctx.Time(), ep: ep}
	s.beginTrace(ctx, &c.rec)
	defer s.finishHandler(ctx, &c)
	// fasthttp has read the body before this runs, and only for a key that
	// authenticates, within what the header hook reserved for it (see
	// admitBody); a refused body is empty and the key's error answers.
	key, plan, ok := s.authenticate(ctx)
	if !ok {
		return
	}
	c.rec.keyID, c.rec.plan = key.ID, plan.Name
	var f openai.Request
	var detail []byte
	var err error
	if ep.IsResponses() {
		detail, err = f.ParseResponses(ctx.PostBody())
	} else {
		detail, err = f.Parse(ctx.PostBody())
	}
	if err != nil {
		writeBodyError(ctx, &f, err, detail, minMaxTokens(ep))
		return
	}
	if f.Background {
		// A background response answers before it runs, without usage: the
		// gateway could not bill it.
		writeError(ctx, errBackground, nil)
		return
	}
	if ep == upstream.Compact && !compactable(ctx, &f) {
		return
	}
	m := s.routing.Load().models.lookup(f.Model)
	if m == nil {
		writeError(ctx, errModelNotFound, f.Model)
		return
	}
	c.rec.model = m.name
	if !plan.Allows(f.Model) {
		writeError(ctx, errModelNotAllowed, f.Model)
		return
	}
	if !restrictRoutes(ctx, ep, m, &f, &c) {
		return
	}
	if ep.IsResponses() {
		// The response it continues lives on one upstream, and may be
		// only this key's (followups.go).
		if !s.pinPrevious(ctx, key, m, &f, &c) {
			return
		}
		// A compaction is not a response a follow-up can name.
		c.remember = ep == upstream.Responses && !f.Unstored
	}
	var a limits.Admission
	prompt, out, ok := admission(ctx, ep, key, plan, m, &f, &a)
	if !ok {
		return
	}
	c.model, c.prompt, c.maxOutput, c.worst = m, prompt, out, a.Worst
	s.gate.Admit(s.callCtx(ctx), &a, time.Now(), &c.ticket)
	setRateHeaders(ctx, &c.ticket)
	if c.ticket.Refusal != limits.Admitted {
		refuse(ctx, &c.ticket)
		return
	}
	s.forward(ctx, ep, m, &f, &c)
}

// claim is an admitted request's ticket with what settling it needs, and
// the record its metrics and access log line are made from.
type claim struct {
	ticket    limits.Ticket
	model     *model
	prompt    int64 // the prompt estimate charged at admission
	maxOutput int64 // the most output admitted, all choices together
	// worst is admission's bound of what the upstream can bill.
	worst     usd.Pico
	rec       requestRecord
	handedOff bool // a stream relay took the request over
	billed    bool // settle ran
	// pin, when pinned, is the index of the only route the request may take
	// (the one holding its previous_response_id); route is the route it took.
	pin    int
	pinned bool
	route  *upstream.Route
	// remember: a Responses create the upstream stores, whose id is
	// remembered for its follow-ups (rememberResponse).
	remember bool
	// exclude are routes the request may not take: a model's anthropic
	// routes, for endpoints that cannot be translated to them.
	exclude upstream.Tried
	// claude: the attempt's route is an anthropic one, for which the chat
	// request was translated (claude.go); claudeInfo is what the
	// translation learnt.
	claude     bool
	claudeInfo anthropic.RequestInfo
}

// settle records what the request used; with no usage from the upstream, the
// estimate stands in (none of it read from or written to a cache) and the log
// says so. Cache counts past the prompt count are clamped to it (usd.Tokens.
// Clamped), counted and logged.
func (s *Server) settle(c *claim, used usd.Tokens, known bool, requestID []byte) {
	if !known {
		used.Prompt, used.Cached, used.CacheWrite = c.prompt, 0, 0
		s.log.Warn("upstream sent no usage; billed an estimate", "usage_estimated", true,
			"model", c.model.name, "prompt_tokens", used.Prompt, "completion_tokens", used.Completion, "request_id", string(requestID))
	}
	used, clamped := used.Clamped()
	if clamped {
		s.log.Warn("upstream reported more cache tokens (read and written) than prompt tokens; billed no more than the prompt", "model", c.model.name,
			"prompt_tokens", used.Prompt, "request_id", string(requestID))
	}
	prompt, completion := used.Prompt, used.Completion
	c.billed = true
	r := &c.rec
	r.prompt, r.cached, r.cacheWrite, r.completion, r.estimated = prompt, used.Cached, used.CacheWrite, completion, !known
	r.cost = s.gate.Settle(&c.ticket, used, c.model.price, time.Now())
	// What the upstream reports is billed, even past admission's worst case;
	// but a bill past it means the bound was wrong (a multiplier it does not
	// know), and a cap may have been passed: count it and say so.
	overBound := known && r.cost > c.worst
	if overBound {
		s.log.Warn("upstream billed more than admission's worst case; billed what it reported", "model", c.model.name,
			"prompt_tokens", prompt, "completion_tokens", completion, "cost_usd", r.cost.String(),
			"worst_usd", c.worst.String(), "request_id", string(requestID))
	}
	s.metrics.used(r.model, r.plan, used, r.cost, !known, overBound, clamped)
}

var bearerPrefix = []byte("bearer ")

// authenticate resolves the request's bearer key and its plan, answering the
// error itself when there is none.
func (s *Server) authenticate(ctx *fasthttp.RequestCtx) (*keys.Key, *keys.Plan, bool) {
	token := bearerToken(ctx)
	if token == nil {
		writeError(ctx, errMissingKey, nil)
		return nil, nil, false
	}
	k, p, err := s.keyOf(ctx, token)
	if err != nil {
		e := authError(err)
		if e == errStoreDown {
			s.log.Error("authenticate", "err", err, "request_id", string(ctx.Response.Header.Peek(headerRequestID)))
		}
		writeError(ctx, e, nil)
		return nil, nil, false
	}
	return k, p, true
}

// keyOf authenticates the request's key token: with the header hook's check
// when it made one for this request less than keyCheckFor ago (a request
// with a body), else with a lookup now.
func (s *Server) keyOf(ctx *fasthttp.RequestCtx, token []byte) (*keys.Key, *keys.Plan, error) {
	if slot := bodySlotOf(ctx.Conn()); slot != nil {
		c := slot.check
		slot.check = keyCheck{}
		if !c.at.IsZero() && ctx.Time().Sub(c.at) < keyCheckFor {
			return c.key, c.plan, c.err
		}
	}
	return s.registry.Authenticate(s.callCtx(ctx), token)
}

// bearerToken returns the token of an "Authorization: Bearer <token>" header;
// on /v1/messages, that of an x-api-key header first, as Anthropic's API
// reads a request carrying both (the SDKs send one or the other); nil when
// there is none.
func bearerToken(ctx *fasthttp.RequestCtx) []byte {
	if isMessagesPath(ctx.Path()) {
		if token := messagesToken(&ctx.Request.Header); token != nil {
			return token
		}
	}
	return bearerTokenOf(&ctx.Request.Header)
}

// bearerTokenOf is bearerToken from the request's headers alone.
func bearerTokenOf(hdr *fasthttp.RequestHeader) []byte {
	h := hdr.Peek(fasthttp.HeaderAuthorization)
	if len(h) <= len(bearerPrefix) {
		return nil
	}
	for i, c := range bearerPrefix {
		if h[i]|0x20 != c && !(c == ' ' && h[i] == ' ') {
			return nil
		}
	}
	token := bytes.TrimSpace(h[len(bearerPrefix):])
	if len(token) == 0 {
		return nil
	}
	return token
}

var (
	methodPost       = []byte(fasthttp.MethodPost)
	headerAccept     = []byte(fasthttp.HeaderAccept)
	headerXRequestID = []byte(headerRequestID)
)

// forward sends the request to one of the model's routes, failing over as
// sendToRoutes does, each route's attempt in the protocol it speaks (a
// Claude route's translated, claude.go), and relays, translates or answers
// what the upstream that took it sent.
func (s *Server) forward(ctx *fasthttp.RequestCtx, ep upstream.Endpoint, m *model, f *openai.Request, c *claim) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer func() {
		if !c.handedOff {
			fasthttp.ReleaseRequest(req)
			fasthttp.ReleaseResponse(resp)
			// A request that failed before an answer used nothing; this
			// releases its reservation.
			if !c.billed {
				s.gate.Settle(&c.ticket, usd.Tokens{}, m.price, time.Now())
			}
		}
	}()

	var injected bool // the relay strips the usage chunk the gateway asked for
	u, err := s.sendToRoutes(ctx, req, resp, m, c, f.Stream, f.Model, func(r *upstream.Route) error {
		if r.Upstream().Anthropic() {
			if err := buildClaudeRequest(req, ctx, r, m, c); err != nil {
				return err
			}
			injected = false
			return nil
		}
		c.claude = false
		injected = buildUpstreamRequest(req, ctx, ep, r, f)
		return nil
	})
	if err != nil {
		writeTranslationError(ctx, err)
		return
	}
	if u == nil {
		return
	}
	if f.Stream && resp.StatusCode() == fasthttp.StatusOK && isEventStream(resp.Header.ContentType()) {
		c.handedOff = true
		s.stream(ctx, req, resp, f, c, injected)
		return
	}
	if c.claude {
		req.SwapBody(s.answerClaude(ctx, u, resp, f, c, req.SwapBody(nil)))
		return
	}
	if s.answer(ctx, u, resp, f) {
		if c.remember {
			// Before the handler returns, so before the client reads the id.
			s.rememberResponse(c, ctx.Response.Body(), ctx.Response.Header.Peek(headerRequestID))
		}
		used, known := readUsage(ep, ctx.Response.Body())
		if !known {
			used.Completion = min(c.maxOutput, int64(len(ctx.Response.Body())/4))
		}
		s.settle(c, used, known, ctx.Response.Header.Peek(headerRequestID))
	}
}

// failureLatency is the latency a failed attempt counts as in its route's
// peak-EWMA, whatever it took: a fast 500 must not make a route look fast.
// The average decays back from it in about 45 seconds to a fast route's
// tens of milliseconds, so a route that failed once gets traffic again
// when the others are loaded, or after a while.
const failureLatency = 5 * time.Second

// failover picks the route to try after a failed attempt at now, among the
// routes not tried: none when the request's deadline (from its first
// attempt, started) has passed for it or its upstream's retry budget is
// spent.
func (s *Server) failover(m *model, c *claim, tried upstream.Tried, started, now time.Time) (i int, trial, ok bool) {
	if c.pinned {
		return 0, false, false
	}
	i, trial, ok = m.routes.Pick(tried, now)
	if !ok {
		return 0, false, false
	}
	r := m.routes.Route(i)
	u := r.Upstream()
	if !now.Before(started.Add(u.Timeout())) {
		r.Health().Abandon(trial)
		return 0, false, false
	}
	if !u.Failover(now) {
		r.Health().Abandon(trial)
		s.metrics.upstreamEvent(u.Name(), upstreamBudgetSpent)
		return 0, false, false
	}
	return i, trial, true
}

// routeDone reports an attempt's outcome to its route's health, and logs
// the state change it made, if any: once per change, never per request.
func (s *Server) routeDone(m *model, r *upstream.Route, o upstream.Outcome, now time.Time) {
	ch, changed := r.Health().Done(o, now)
	if !changed {
		return
	}
	if ch.To == upstream.Healthy {
		s.log.Info("route healthy again", "model", m.name, "upstream", r.Upstream().Name())
		return
	}
	s.log.Warn("route out of the choice", "model", m.name, "upstream", r.Upstream().Name(), "state", ch.To.String(), "for", ch.For.String())
}

// buildUpstreamRequest writes the upstream request for route r: the gateway's
// own credentials (never the client's), the client's Accept, and the body
// with the model renamed when the route calls it something else. A chat or
// completion stream always asks for the upstream's usage
// (stream_options.include_usage), so it can be billed exactly; it reports
// whether the gateway added that on the client's behalf.
func buildUpstreamRequest(req *fasthttp.Request, ctx *fasthttp.RequestCtx, ep upstream.Endpoint, r *upstream.Route, f *openai.Request) (injected bool) {
	u := r.Upstream()
	startUpstreamPost(req, u, ep)
	// The client's Accept, as sent, and nothing it did not send: an upstream
	// that negotiates on it must judge what the client asked for (the
	// SDKs send application/json even for streams, and providers serve them
	// the stream), not a header of the gateway's (TestAcceptIsForwardedAsSent).
	for _, a := range ctx.Request.Header.PeekAll(fasthttp.HeaderAccept) {
		req.Header.AddBytesKV(headerAccept, a)
	}
	endUpstreamHeaders(req, ctx, u)
	body := ctx.PostBody()
	var edits [2]openai.Edit
	n := 0
	if quoted := r.QuotedModel(); quoted != nil {
		edits[n] = f.ModelEdit(quoted)
		n++
	}
	// A Responses stream always ends with its usage.
	if f.Stream && (ep == upstream.Chat || ep == upstream.Completions) {
		if e, ok := f.UsageEdit(body); ok {
			edits[n] = e
			n++
			injected = true
		}
	}
	if n == 0 {
		// The client's body lives until the handler returns, and the upstream
		// call (even a stream's start) happens before that: no copy needed.
		req.SetBodyRaw(body)
		return false
	}
	// Build into the request's own pooled buffer: no allocation once warm.
	req.SwapBody(openai.AppendEdits(req.SwapBody(nil)[:0], body, edits[:n]...))
	return injected
}

// answer relays a buffered upstream answer from u: success and OpenAI-shaped
// client errors pass through untouched; another client error keeps its
// status and the upstream's words; anything else becomes a gateway error.
// It reports whether the answer was a success, which is billed.
func (s *Server) answer(ctx *fasthttp.RequestCtx, u *upstream.Upstream, resp *fasthttp.Response, f *openai.Request) bool {
	status := resp.StatusCode()
	body := resp.Body()
	switch {
	case status == fasthttp.StatusUnauthorized || status == fasthttp.StatusForbidden:
		// The upstream refused the gateway's own provider key, not the
		// client's: passed through, its invalid_api_key would make SDKs
		// blame the client's key, and its message quotes a fragment of ours.
		// The body is neither relayed nor logged.
		s.metrics.upstreamEvent(u.Name(), upstreamAuthRefused)
		s.log.Error("upstream refused the gateway's credentials", "upstream", u.Name(), "status", status)
		var detail [64]byte
		writeError(ctx, errUpstreamCredentials, appendStatus(append(detail[:0], f.Model...), status))
		return false
	case status >= 200 && status < 300:
		if !sonic.Valid(body) {
			writeError(ctx, errUpstreamUnreadable, f.Model)
			return false
		}
	case status >= 400 && status < 500:
		if !isOpenAIError(body) {
			// Its status stands, and its words go inside OpenAI's shape
			// (see appendUpstreamWords).
			detail := appendStatus(append(make([]byte, 0, 128), f.Model...), status)
			detail = appendUpstreamWords(detail, body, resp.Header.ContentType(), upstreamSecrets(u.APIKey(), u.Headers()))
			writeError(ctx, &apiError{status: status, typ: typeInvalidRequest, code: "upstream_error",
				message: "The upstream refused the request for the model: "}, detail)
			return false
		}
	case status >= 500:
		var detail [64]byte
		writeError(ctx, errUpstreamFailed, appendStatus(append(detail[:0], f.Model...), status))
		return false
	default:
		writeError(ctx, errUpstreamUnreadable, f.Model)
		return false
	}
	ctx.SetStatusCode(status)
	ctx.SetContentTypeBytes(contentTypeJSON)
	// Copy rather than swap buffers: swapped, each pooled buffer would carry
	// the other's slice back to fasthttp's pool, whose calibration drops
	// buffers that grew past its usual size, and under load every request
	// would allocate a new one. Copied, each keeps a slice that fits.
	ctx.SetBody(resp.Body())
	return status < 300
}

// readUsage reads the usage of an answer from endpoint ep with targeted
// lookups that skip, without validating again, what answer has validated.
func readUsage(ep upstream.Endpoint, body []byte) (usd.Tokens, bool) {
	if ep.IsResponses() {
		return openai.ResponseUsage(body)
	}
	return openai.Usage(body)
}

// isOpenAIError reports whether body is an OpenAI error object, which clients'
// SDKs can parse and so may pass through as it is.
func isOpenAIError(body []byte) bool { return sonic.Valid(body) && openai.HasError(body) }

func isEventStream(ct []byte) bool {
	return bytes.HasPrefix(ct, contentTypeSSE)
}
