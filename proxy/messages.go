package proxy

import (
	"bytes"
	"strconv"
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

// Anthropic's Messages API, for Anthropic-native clients (the Anthropic
// SDKs, Claude Code with ANTHROPIC_BASE_URL): POST /v1/messages and
// /v1/messages/count_tokens, forwarded to the model's anthropic routes with
// the body and the stream passed through byte for byte (the model renamed
// per route), under the same keys, plans, limits and budgets as chat. Every
// error on these paths is Anthropic-shaped (see writeErrorParam).

var (
	pathMessages    = []byte("/v1/messages")
	pathCountTokens = []byte("/v1/messages/count_tokens")

	headerAPIKey           = []byte("x-api-key")
	headerAnthropicVersion = []byte("anthropic-version")
	headerAnthropicBeta    = []byte("anthropic-beta")
	// headerAnthropicRequestID is where the Anthropic SDKs read a request's
	// id (anthropic.Error.RequestID): the same id as x-request-id.
	headerAnthropicRequestID = []byte("request-id")
)

var (
	// errMissingKeyAnthropic is errMissingKey in the words an Anthropic
	// client needs: where its SDK puts the key.
	errMissingKeyAnthropic = &apiError{status: fasthttp.StatusUnauthorized, typ: typeInvalidRequest, code: "invalid_api_key",
		message: "You didn't provide an API key. Send your tokenhub key in an x-api-key header (or Authorization: Bearer)."}
	errMissingMaxTokens = &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, param: "max_tokens", code: "missing_required_parameter",
		message: "max_tokens: Field required"}
	// errMessagesToChat answers /v1/messages for a model on OpenAI-compatible
	// upstreams only: chat requests are translated to Messages, not the
	// reverse, since Messages' cache_control, thinking, citations and
	// document blocks have no chat form that could be answered and billed
	// faithfully.
	errMessagesToChat = &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, param: "model", code: "unsupported_model",
		message: "The model is served by an OpenAI-compatible upstream, and /v1/messages is served for models on Anthropic upstreams only; " +
			"use /v1/chat/completions for this model: "}
	errRepeatedModel = &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, param: "model", code: "duplicate_key",
		message: "Invalid body: the key 'model' appears more than 8 times."}
)

// isMessagesPath reports whether path is under /v1/messages, where answers
// and errors take Anthropic's shapes.
func isMessagesPath(path []byte) bool {
	return bytes.HasPrefix(path, pathMessages) && (len(path) == len(pathMessages) || path[len(pathMessages)] == '/')
}

// isMessagesURI is isMessagesPath of a request's raw URI (its path and
// query, as sent), for when only its header has been read.
func isMessagesURI(uri []byte) bool {
	if i := bytes.IndexByte(uri, '?'); i >= 0 {
		uri = uri[:i]
	}
	return isMessagesPath(uri)
}

// writeAnthropicError answers e (its message, detail and after) in
// Anthropic's shape, {"type":"error","error":{"type","message"}}, its type
// from the status (anthropic.ErrorType), with the request's id also in
// request-id, where the Anthropic SDKs read it.
func writeAnthropicError(ctx *fasthttp.RequestCtx, e *apiError, detail []byte) {
	if e == errMissingKey {
		e = errMissingKeyAnthropic
	}
	var scratch [512]byte
	h := &ctx.Response.Header
	h.SetCanonical(headerAnthropicRequestID, h.Peek(headerRequestID))
	ctx.SetStatusCode(e.status)
	ctx.SetContentTypeBytes(contentTypeJSON)
	ctx.SetBody(appendAnthropicError(scratch[:0], anthropic.ErrorType(e.status), e, detail))
}

// appendAnthropicError appends e as an Anthropic error body of type typ.
func appendAnthropicError(b []byte, typ string, e *apiError, detail []byte) []byte {
	b = append(b, `{"type":"error","error":{"type":"`...)
	b = append(b, typ...)
	b = append(b, `","message":"`...)
	b = appendEscaped(b, e.message)
	b = appendEscapedBytes(b, detail)
	b = appendEscaped(b, e.after)
	return append(b, `"}}`...)
}

// messagesToken returns the tokenhub key of a request to /v1/messages sent
// the Anthropic way, in x-api-key (the SDKs' APIKey; their AuthToken is an
// Authorization bearer, which bearerToken reads when there is no x-api-key).
func messagesToken(hdr *fasthttp.RequestHeader) []byte {
	token := bytes.TrimSpace(hdr.PeekBytes(headerAPIKey))
	if len(token) == 0 {
		return nil
	}
	return token
}

func (s *Server) messages(ctx *fasthttp.RequestCtx)    { s.serveMessages(ctx, upstream.Messages) }
func (s *Server) countTokens(ctx *fasthttp.RequestCtx) { s.serveMessages(ctx, upstream.CountTokens) }

// serveMessages serves POST /v1/messages (ep Messages) and
// /v1/messages/count_tokens (ep CountTokens), as inference serves chat:
// authenticate, read the few fields it needs, check the plan, admit
// (count_tokens costs nothing and is not admitted), forward. It allocates
// nothing in steady state for buffered answers (TestAllocsServeMessages).
func (s *Server) serveMessages(ctx *fasthttp.RequestCtx, ep upstream.Endpoint) {
	var c claim
	c.rec = requestRecord{start: ctx.Time(), ep: ep}
	s.beginTrace(ctx, &c.rec)
	defer s.finishHandler(ctx, &c)
	h := &ctx.Response.Header
	h.SetCanonical(headerAnthropicRequestID, h.Peek(headerRequestID))
	key, plan, ok := s.authenticate(ctx)
	if !ok {
		return
	}
	c.rec.keyID, c.rec.plan = key.ID, plan.Name
	var f anthropic.Request
	if detail, err := f.Parse(ctx.PostBody()); err != nil {
		writeMessagesBodyError(ctx, err, detail)
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
	if !hasAnthropicRoute(m) {
		writeError(ctx, errMessagesToChat, f.Model)
		return
	}
	if ep == upstream.CountTokens {
		s.forwardMessages(ctx, ep, m, &f, &c)
		return
	}
	var a limits.Admission
	if !messagesAdmission(ctx, key, plan, m, &f, &a, &c) {
		return
	}
	s.gate.Admit(s.callCtx(ctx), &a, time.Now(), &c.ticket)
	setRateHeaders(ctx, &c.ticket)
	if c.ticket.Refusal != limits.Admitted {
		refuse(ctx, &c.ticket)
		return
	}
	s.forwardMessages(ctx, ep, m, &f, &c)
}

// messagesAdmission fills a for a Messages request, as admission does for
// chat: max_tokens is required (Anthropic's rule) and from 1 to the model's
// max_output_tokens, the largest of its occurrences weighed; the prompt is
// bounded at a token a byte of the body, or by the model's context window
// when the body makes the upstream read more (anthropic.Request.External).
// It answers the 400s itself.
func messagesAdmission(ctx *fasthttp.RequestCtx, key *keys.Key, plan *keys.Plan, m *model, f *anthropic.Request, a *limits.Admission, c *claim) bool {
	switch {
	case f.MaxTokens < 0:
		writeError(ctx, errMissingMaxTokens, nil)
		return false
	case f.MaxTokens < 1 || f.MaxTokensBound > m.maxOutput:
		v := f.MaxTokens
		if v >= 1 {
			v = f.MaxTokensBound
		}
		var b [20]byte
		writeIntFieldError(ctx, errMaxTokens, anthropic.ParamMaxTokens, strconv.AppendInt(b[:0], v, 10), 1, m.maxOutput, maxOutputNote)
		return false
	}
	bodyLen := len(ctx.PostBody())
	out := f.MaxTokensBound
	prompt := openai.EstimatePrompt(bodyLen)
	promptBound := min(openai.BoundPrompt(bodyLen), openai.MaxBoundTokens)
	if f.External {
		// The upstream reads input the body does not hold (a PDF by URL, a
		// web search's results): the model's context window bounds it, when
		// configured; else nothing the gateway knows does, as for a chained
		// Responses request (see admission).
		promptBound = openai.MaxBoundTokens
		if m.contextWindow > 0 {
			promptBound = m.contextWindow
		}
	}
	*a = limits.Admission{
		KeyID: key.ID,
		Model: m.name,
		Limits: limits.Limits{
			RPM: keys.Limit(plan.RPM, key.RPM), TPM: keys.Limit(plan.TPM, key.TPM),
			MaxRequest: plan.MaxRequestUSD, Monthly: plan.MonthlyUSD,
		},
		Tokens: prompt + out,
		Worst:  m.price.Bound(promptBound, out),
	}
	if f.Stream {
		// Clients set max_tokens high (Claude Code asks for 32,000 on every
		// request): a stream reserves a step of output and extends its
		// reservation as it produces (streamRelay.covered), as an open-ended
		// chat stream does, so it holds no more of the monthly budget than it
		// is using, and is cut with an error event at the cap. The
		// per-request cap still weighs its worst case.
		a.Reserve = m.price.Bound(promptBound, min(out, streamReserveTokens))
	}
	c.model, c.prompt, c.maxOutput, c.worst = m, prompt, out, a.Worst
	return true
}

// writeMessagesBodyError answers a body anthropic.Request.Parse refused:
// the one place its refusals become answers, in the words chat's use.
func writeMessagesBodyError(ctx *fasthttp.RequestCtx, err error, detail []byte) {
	switch err {
	case anthropic.ErrMalformedJSON:
		writeError(ctx, errMalformedJSON, nil)
	case anthropic.ErrNotObject:
		writeError(ctx, errNotObject, nil)
	case anthropic.ErrMissingModel:
		writeError(ctx, errMissingModel, nil)
	case anthropic.ErrModelNotString:
		if len(detail) > 0 && detail[0] == '"' {
			writeError(ctx, errModelNotString, nil) // a string, but empty or not UTF-8
			return
		}
		writeTypeError(ctx, errModelNotString, anthropic.ParamModel, "a string", detail)
	case anthropic.ErrStreamNotBool:
		writeTypeError(ctx, errStreamNotBool, anthropic.ParamStream, "a boolean", detail)
	case anthropic.ErrMaxTokens:
		writeIntFieldError(ctx, errMaxTokens, anthropic.ParamMaxTokens, detail, 1, openai.MaxCount, "")
	case anthropic.ErrAmbiguousKey:
		writeErrorParam(ctx, errAmbiguousKey, detail, detail)
	case anthropic.ErrRepeatedModel:
		writeError(ctx, errRepeatedModel, nil)
	default:
		writeError(ctx, errInternal, nil)
	}
}

// hasAnthropicRoute reports whether any of m's routes is to an anthropic
// upstream; only those serve /v1/messages.
func hasAnthropicRoute(m *model) bool { return m.anthropicRoutes != 0 }

// openAIRoutes is the set of m's routes to OpenAI-compatible upstreams,
// which /v1/messages never takes.
func openAIRoutes(m *model) upstream.Tried {
	return m.routes.All() &^ m.anthropicRoutes
}

// forwardMessages sends a Messages (or count_tokens) request to one of the
// model's anthropic routes, and fails over as forward does: to the next
// route when the request provably never reached the upstream, or it
// answered 429 or 5xx (Anthropic's 529 overloaded_error among them), while
// nothing was sent to the client, the deadline has time left and the
// retry budget allows.
func (s *Server) forwardMessages(ctx *fasthttp.RequestCtx, ep upstream.Endpoint, m *model, f *anthropic.Request, c *claim) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	billable := ep == upstream.Messages
	defer func() {
		if !c.handedOff {
			fasthttp.ReleaseRequest(req)
			fasthttp.ReleaseResponse(resp)
			if billable && !c.billed {
				s.gate.Settle(&c.ticket, usd.Tokens{}, m.price, time.Now())
			}
		}
	}()
	stream := f.Stream && billable
	c.exclude = openAIRoutes(m)
	u, _ := s.sendToRoutes(ctx, req, resp, m, c, stream, f.Model, func(r *upstream.Route) error {
		buildMessagesRequest(req, ctx, ep, r, f)
		return nil
	})
	if u == nil {
		return
	}
	if stream && resp.StatusCode() == fasthttp.StatusOK && isEventStream(resp.Header.ContentType()) {
		c.handedOff = true
		// The relay reserves a step of output per choice: a Messages
		// answer has one.
		s.stream(ctx, req, resp, &openai.Request{N: 1}, c, false)
		return
	}
	if s.answerMessages(ctx, u, resp, f.Model) && billable {
		used, known := messagesUsage(ctx.Response.Body())
		if !known {
			used.Completion = min(c.maxOutput, int64(len(ctx.Response.Body())/4))
		}
		s.settle(c, used, known, ctx.Response.Header.Peek(headerRequestID))
	}
}

// buildMessagesRequest writes the upstream request for route r: the
// gateway's own x-api-key (never the client's key), the client's
// anthropic-version (else the upstream's) and anthropic-beta headers, its
// Accept, and the body as sent, with the model renamed for the route (every
// occurrence of it, so that no parser reads a name the gateway did not
// check).
func buildMessagesRequest(req *fasthttp.Request, ctx *fasthttp.RequestCtx, ep upstream.Endpoint, r *upstream.Route, f *anthropic.Request) {
	u := r.Upstream()
	in := &ctx.Request.Header
	version := in.PeekBytes(headerAnthropicVersion)
	if len(version) == 0 {
		version = u.AnthropicVersion()
	}
	setAnthropicRequest(req, ctx, u, ep, version)
	for _, a := range in.PeekAll(fasthttp.HeaderAccept) {
		req.Header.AddBytesKV(headerAccept, a)
	}
	body := ctx.PostBody()
	quoted := r.QuotedModel()
	if quoted == nil && f.ModelRepeated() {
		quoted = appendQuoted(nil, r.Model())
	}
	if quoted == nil {
		// The client's body lives until the handler returns, and the
		// upstream call (even a stream's start) happens before that.
		req.SetBodyRaw(body)
		return
	}
	req.SwapBody(f.AppendRenamed(req.SwapBody(nil)[:0], body, quoted))
}

// setAnthropicRequest starts req as a POST of JSON to endpoint ep of u, an
// anthropic upstream, with what every such request carries: the gateway's
// x-api-key, the anthropic-version given, the client's anthropic-beta
// headers (opting into a feature is the client's choice), the request id
// and the configured headers.
func setAnthropicRequest(req *fasthttp.Request, ctx *fasthttp.RequestCtx, u *upstream.Upstream, ep upstream.Endpoint, version []byte) {
	startUpstreamPost(req, u, ep)
	if len(version) > 0 {
		req.Header.SetCanonical(headerAnthropicVersion, version)
	}
	for _, b := range ctx.Request.Header.PeekAll("anthropic-beta") {
		req.Header.AddBytesKV(headerAnthropicBeta, b)
	}
	endUpstreamHeaders(req, ctx, u)
}

// answerMessages relays a buffered answer from u to a Messages client:
// success and Anthropic-shaped errors pass through with their status; the
// upstream refusing the gateway's own key is the gateway's credential
// error; another error keeps its status and the upstream's words in
// Anthropic's shape; a 5xx is the gateway's upstream error. It reports
// whether the answer was a success, which is billed.
func (s *Server) answerMessages(ctx *fasthttp.RequestCtx, u *upstream.Upstream, resp *fasthttp.Response, model []byte) bool {
	status := resp.StatusCode()
	body := resp.Body()
	switch {
	case status == fasthttp.StatusUnauthorized || status == fasthttp.StatusForbidden:
		// The upstream refused the gateway's provider key, not the
		// client's: neither relayed nor logged (it may quote the key).
		s.metrics.upstreamEvent(u.Name(), upstreamAuthRefused)
		s.log.Error("upstream refused the gateway's credentials", "upstream", u.Name(), "status", status)
		var detail [64]byte
		writeError(ctx, errUpstreamCredentials, appendStatus(append(detail[:0], model...), status))
		return false
	case status >= 200 && status < 300:
		if !sonic.Valid(body) {
			writeError(ctx, errUpstreamUnreadable, model)
			return false
		}
	case status >= 400 && status < 500, status == anthropic.StatusOverloaded:
		if !anthropic.IsError(body) {
			detail := appendStatus(append(make([]byte, 0, 128), model...), status)
			detail = appendUpstreamWords(detail, body, resp.Header.ContentType(), upstreamSecrets(u.APIKey(), u.Headers()))
			writeError(ctx, &apiError{status: status, typ: typeInvalidRequest, code: "upstream_error",
				message: "The upstream refused the request for the model: "}, detail)
			return false
		}
		if status == anthropic.StatusOverloaded || status == fasthttp.StatusTooManyRequests {
			// The last route's: the SDKs retry it after its retry-after.
			if v := resp.Header.Peek(fasthttp.HeaderRetryAfter); len(v) > 0 {
				ctx.Response.Header.SetCanonical(headerRetryAfter, v)
			}
		}
	case status >= 500:
		var detail [64]byte
		writeError(ctx, errUpstreamFailed, appendStatus(append(detail[:0], model...), status))
		return false
	default:
		writeError(ctx, errUpstreamUnreadable, model)
		return false
	}
	ctx.SetStatusCode(status)
	ctx.SetContentTypeBytes(contentTypeJSON)
	// Copied rather than swapped, for the reason answer gives.
	ctx.SetBody(body)
	return status < 300
}

// messagesUsage is the usage of a Messages answer body as the gateway
// bills it: Anthropic's three input counts summed into Prompt, the cache's
// apart.
func messagesUsage(body []byte) (usd.Tokens, bool) {
	u, _, ok := anthropic.BodyUsage(body)
	return tokensOf(u), ok
}

func tokensOf(u anthropic.Usage) usd.Tokens {
	return usd.Tokens{Prompt: u.PromptTokens(), Cached: u.CacheReadInputTokens,
		CacheWrite: u.CacheCreationInputTokens, Completion: u.OutputTokens}
}

// messageEvents reads the events of a native Messages stream for the
// relay. Anthropic reports usage in pieces: message_start the input counts
// (and an output count of a token or so), message_delta the cumulative
// output count (and, in recent API versions, the input counts again), so
// it keeps the stream's usage and hands the relay the whole each time.
// Until message_delta's count, the output is the larger of what was
// reported and an estimate from the text relayed (a token an event or four
// bytes, within max_tokens), so that a stream cut before its end bills
// what the client got.
type messageEvents struct {
	usage          anthropic.Usage
	started, final bool
	events, bytes  int64
	maxOutput      int64
}

// Read reads the data of one event.
func (m *messageEvents) Read(data []byte) openai.Event {
	var e openai.Event
	ev := anthropic.ReadEvent(data)
	switch ev.Kind {
	case anthropic.EventMessageStart:
		if m.started {
			return e // a second message_start would restart the count
		}
		m.started = true
		m.usage.Update(ev.Usage, ev.Has)
	case anthropic.EventMessageDelta:
		if ev.HasUsage {
			m.usage.Update(ev.Usage, ev.Has)
			m.final = m.final || ev.Has&anthropic.HasOutput != 0
		}
	case anthropic.EventContentDelta:
		if ev.ContentBytes > 0 {
			e.ContentBytes = ev.ContentBytes
			m.events++
			m.bytes += int64(ev.ContentBytes)
		}
	case anthropic.EventMessageStop:
		e.Done = true
	case anthropic.EventError:
		// An upstream's error event ends its stream as message_stop does:
		// the client's SDK stops there and may ask for its usage at once,
		// so the relay bills before relaying it.
		e.Done = true
	}
	if m.started || m.final {
		e.Usage, e.HasUsage = m.tokens(), true
	}
	return e
}

// tokens is the stream's usage so far.
func (m *messageEvents) tokens() usd.Tokens {
	t := tokensOf(m.usage)
	if !m.final {
		t.Completion = max(t.Completion, min(max(m.events, (m.bytes+3)/4), m.maxOutput))
	}
	return t
}

// appendAnthropicErrorEvent appends the event: error that ends a Messages
// stream the gateway cuts: the budget spent (billing_error), the upstream
// stalled (timeout_error) or broken off (api_error).
func appendAnthropicErrorEvent(b []byte, e *apiError, model []byte) []byte {
	typ := anthropic.ErrorType(fasthttp.StatusBadGateway)
	switch e {
	case errStreamBudget:
		typ = anthropic.ErrorType(fasthttp.StatusPaymentRequired)
	case errStreamEventTimed:
		typ = anthropic.ErrorType(fasthttp.StatusGatewayTimeout)
	}
	b = append(b, "event: error\ndata: "...)
	b = appendAnthropicError(b, typ, e, model)
	return append(b, "\n\n"...)
}
