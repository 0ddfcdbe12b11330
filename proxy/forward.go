package proxy

import (
	"bytes"
	"time"

	"github.com/bytedance/sonic"
	"github.com/bytedance/sonic/ast"
	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/keys"
)

func (s *Server) chatCompletions(ctx *fasthttp.RequestCtx) { s.inference(ctx, epChat) }
func (s *Server) completions(ctx *fasthttp.RequestCtx)     { s.inference(ctx, epCompletions) }
func (s *Server) embeddings(ctx *fasthttp.RequestCtx)      { s.inference(ctx, epEmbeddings) }

// inference is the hot path: authenticate, read the few fields it needs from
// the body, check the plan, forward. It allocates nothing in steady state for
// buffered answers (see TestAllocsServeChat).
func (s *Server) inference(ctx *fasthttp.RequestCtx, ep endpoint) {
	_, plan, ok := s.authenticate(ctx)
	if !ok {
		return
	}
	var f requestFields
	if e, detail := f.parse(ctx.PostBody()); e != nil {
		writeError(ctx, e, detail)
		return
	}
	m := s.models.lookup(f.model)
	if m == nil {
		writeError(ctx, errModelNotFound, f.model)
		return
	}
	if !plan.Allows(f.model) {
		writeError(ctx, errModelNotAllowed, f.model)
		return
	}
	s.forward(ctx, ep, m, &f)
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
	k, p, err := s.registry.Authenticate(ctx, token)
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

// bearerToken returns the token of an "Authorization: Bearer <token>" header,
// or nil when there is none.
func bearerToken(ctx *fasthttp.RequestCtx) []byte {
	h := ctx.Request.Header.Peek(fasthttp.HeaderAuthorization)
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
	methodPost          = []byte(fasthttp.MethodPost)
	acceptEventStream   = []byte("text/event-stream")
	headerAuthorization = []byte(fasthttp.HeaderAuthorization)
	headerAccept        = []byte(fasthttp.HeaderAccept)
	headerXRequestID    = []byte(headerRequestID)
)

// forward sends the request to the model's routes, starting from a weighted
// choice and failing over to the next route on a connection failure, a 429 or
// a 5xx, as long as nothing has been sent to the client yet.
func (s *Server) forward(ctx *fasthttp.RequestCtx, ep endpoint, m *model, f *requestFields) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	handedOff := false
	defer func() {
		if !handedOff {
			fasthttp.ReleaseRequest(req)
			fasthttp.ReleaseResponse(resp)
		}
	}()

	start := m.firstRoute()
	for n := range len(m.routes) {
		r := &m.routes[(start+n)%len(m.routes)]
		u := r.upstream
		buildUpstreamRequest(req, ctx, ep, r, f)
		client := u.client
		if f.stream {
			client = u.streamClient
			resp.StreamBody = true
		}
		err := client.DoDeadline(req, resp, time.Now().Add(u.timeout))
		last := n == len(m.routes)-1
		if err != nil {
			if isTimeout(err) {
				writeError(ctx, errUpstreamTimeout, f.model)
				return
			}
			if !isConnFailure(err) {
				s.log.Warn("upstream answer unreadable", "upstream", u.name, "err", err)
				writeError(ctx, errUpstreamUnreadable, f.model)
				return
			}
			s.log.Warn("upstream unreachable", "upstream", u.name, "err", err, "failover", !last)
			if last {
				writeError(ctx, errUpstreamUnreachable, f.model)
				return
			}
			continue
		}
		status := resp.StatusCode()
		if (status == fasthttp.StatusTooManyRequests || status >= 500) && !last {
			s.log.Warn("upstream failed", "upstream", u.name, "status", status, "failover", true)
			resp.CloseBodyStream() //nolint:errcheck // the connection is discarded on error
			continue
		}
		if f.stream && status == fasthttp.StatusOK && isEventStream(resp.Header.ContentType()) {
			handedOff = true
			s.stream(ctx, req, resp, f)
			return
		}
		s.answer(ctx, resp, f)
		return
	}
}

// buildUpstreamRequest writes the upstream request for route r: the gateway's
// own credentials (never the client's), and the body with the model renamed
// when the route calls it something else.
func buildUpstreamRequest(req *fasthttp.Request, ctx *fasthttp.RequestCtx, ep endpoint, r *route, f *requestFields) {
	u := r.upstream
	req.Reset()
	req.Header.SetMethodBytes(methodPost)
	req.SetRequestURIBytes(u.uris[ep])
	req.Header.SetContentTypeBytes(contentTypeJSON)
	if u.auth != nil {
		req.Header.SetCanonical(headerAuthorization, u.auth)
	}
	if f.stream {
		req.Header.SetCanonical(headerAccept, acceptEventStream)
	} else {
		req.Header.SetCanonical(headerAccept, contentTypeJSON)
	}
	req.Header.SetCanonical(headerXRequestID, ctx.Response.Header.Peek(headerRequestID))
	for _, h := range u.headers {
		req.Header.SetBytesKV(h[0], h[1])
	}
	body := ctx.PostBody()
	if r.quotedModel == nil {
		// The client's body lives until the handler returns, and the upstream
		// call (even a stream's start) happens before that: no copy needed.
		req.SetBodyRaw(body)
		return
	}
	req.AppendBody(body[:f.modelStart])
	req.AppendBody(r.quotedModel)
	req.AppendBody(body[f.modelEnd:])
}

// answer relays a buffered upstream answer: success and OpenAI-shaped client
// errors pass through untouched; anything else becomes a gateway error.
func (s *Server) answer(ctx *fasthttp.RequestCtx, resp *fasthttp.Response, f *requestFields) {
	status := resp.StatusCode()
	body := resp.Body()
	switch {
	case status >= 200 && status < 300:
		if !sonic.Valid(body) {
			writeError(ctx, errUpstreamUnreadable, f.model)
			return
		}
	case status >= 400 && status < 500:
		if !isOpenAIError(body) {
			var detail [64]byte
			writeError(ctx, &apiError{status: status, typ: typeInvalidRequest, code: "upstream_error",
				message: "The upstream refused the request for the model: "}, appendStatus(append(detail[:0], f.model...), status))
			return
		}
	case status >= 500:
		var detail [64]byte
		writeError(ctx, errUpstreamFailed, appendStatus(append(detail[:0], f.model...), status))
		return
	default:
		writeError(ctx, errUpstreamUnreadable, f.model)
		return
	}
	ctx.SetStatusCode(status)
	ctx.SetContentTypeBytes(contentTypeJSON)
	// Swap buffers rather than copy: the client's response takes the upstream
	// body and the pooled upstream response keeps the old buffer for reuse.
	ctx.Response.SwapBody(resp.SwapBody(ctx.Response.SwapBody(nil)))
}

// isOpenAIError reports whether body is an OpenAI error object, which clients'
// SDKs can parse and so may pass through as it is.
func isOpenAIError(body []byte) bool {
	if !sonic.Valid(body) {
		return false
	}
	n, err := sonic.GetFromString(b2s(body), "error")
	return err == nil && n.TypeSafe() == ast.V_OBJECT
}

func isEventStream(ct []byte) bool {
	return bytes.HasPrefix(ct, acceptEventStream)
}
