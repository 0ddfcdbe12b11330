package proxy

import (
	"errors"
	"math/bits"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/internal/usd"
	"github.com/tokenhub/tokenhub/proxy/anthropic"
	"github.com/tokenhub/tokenhub/proxy/openai"
	"github.com/tokenhub/tokenhub/proxy/upstream"
)

// Chat completions for a model on an anthropic upstream (issue 14): each
// attempt to such a route sends the chat request translated into a Messages
// request (anthropic.ChatToMessages) and answers the client with the
// Messages answer translated back (anthropic.MessageToChat, or, for a
// stream, anthropic.StreamTranslator in the relay: claude_stream.go). A
// model may mix openai and anthropic routes: each attempt builds the body
// its route speaks, so failover crosses kinds.

var (
	errAnthropicOnly = &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, param: "model", code: "unsupported_model",
		message: "The model is served by Anthropic's Messages API, which this endpoint cannot be translated to: " +
			"use POST /v1/chat/completions or POST /v1/messages. Model: "}
	errUntranslatable = &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, code: "unsupported_parameter",
		message: "The request cannot be translated for the model, which is served by Anthropic's Messages API: "}
)

// restrictRoutes keeps the requests of endpoints other than chat
// completions off m's anthropic routes, which only chat can be translated
// for: with no other route the request is answered 400 here (ok false);
// else the anthropic routes are excluded from its choice (c.exclude).
func restrictRoutes(ctx *fasthttp.RequestCtx, ep upstream.Endpoint, m *model, f *openai.Request, c *claim) (ok bool) {
	if ep == upstream.Chat || m.anthropicRoutes == 0 {
		return true
	}
	if bits.OnesCount64(uint64(m.anthropicRoutes)) == m.routes.Len() {
		writeError(ctx, errAnthropicOnly, f.Model)
		return false
	}
	c.exclude = m.anthropicRoutes
	return true
}

// pickFirst picks the route of a request's first attempt among m's routes
// not in exclude. Routes.Pick treats a non-empty set as a failover's, which
// gives up when no candidate is Healthy; a first attempt instead goes to
// the least bad candidate, the one back soonest, as Pick's own does.
func pickFirst(m *model, exclude upstream.Tried, now time.Time) (i int, trial bool) {
	if exclude == 0 {
		i, trial, _ = m.routes.Pick(0, now)
		return i, trial
	}
	if i, trial, ok := m.routes.Pick(exclude, now); ok {
		return i, trial
	}
	best := -1
	for j := range m.routes.Len() {
		if exclude.Has(j) {
			continue
		}
		if best < 0 || m.routes.Route(j).Health().Until().Before(m.routes.Route(best).Health().Until()) {
			best = j
		}
	}
	m.routes.Route(best).Health().Begin()
	return best, false
}

// buildClaudeRequest writes the upstream request for route r, an anthropic
// one: the chat body translated into a Messages request for the route's
// model name, the upstream's API version and the model's max_output_tokens
// as the default max_tokens; the gateway's x-api-key and the upstream's
// anthropic-version (never the client's); the client's anthropic-beta
// headers, which opt into features the client knows it wants. The body is
// built in the request's own pooled buffer. It notes in c what the
// translation learnt; an error is the client's (*anthropic.FieldError).
func buildClaudeRequest(req *fasthttp.Request, ctx *fasthttp.RequestCtx, r *upstream.Route, m *model, c *claim) error {
	u := r.Upstream()
	setAnthropicRequest(req, ctx, u, upstream.Messages, u.TranslationVersion())
	body, info, err := anthropic.ChatToMessages(req.SwapBody(nil)[:0], ctx.PostBody(), anthropic.RequestOptions{
		Model: r.Model(), APIVersion: b2s(u.TranslationVersion()), DefaultMaxTokens: m.maxOutput})
	req.SwapBody(body)
	if err != nil {
		// c keeps describing the attempt before, whose answer may be the
		// one relayed (sendToRoutes).
		return err
	}
	c.claude, c.claudeInfo = true, info
	return nil
}

// writeTranslationError answers a chat request that cannot be translated
// for an Anthropic model: 400, naming the field as OpenAI's param.
func writeTranslationError(ctx *fasthttp.RequestCtx, err error) {
	var fe *anthropic.FieldError
	if !errors.As(err, &fe) {
		writeError(ctx, errNotObject, nil) // openai.Request.Parse refuses these first
		return
	}
	var param, detail []byte
	if fe.Param != "" {
		param = []byte(fe.Param)
		detail = append(append(append(detail, '\''), fe.Param...), "': "...)
	}
	writeErrorParam(ctx, errUntranslatable, param, append(detail, fe.Reason...))
}

// answerClaude relays a buffered answer of an anthropic upstream: a
// Messages response translated into a chat completion and billed from its
// usage (cache reads and writes priced apart); a client error (4xx but 401
// and 403) as OpenAI's shape with the same status, type and words, less any
// fragment of the gateway's credentials; anything else as the gateway's
// own errors, as for every upstream (answer). buf is a free pooled buffer
// to translate into, which it returns.
func (s *Server) answerClaude(ctx *fasthttp.RequestCtx, u *upstream.Upstream, resp *fasthttp.Response, f *openai.Request, c *claim, buf []byte) []byte {
	status := resp.StatusCode()
	body := resp.Body()
	switch {
	case status >= 200 && status < 300:
		out, used, err := anthropic.MessageToChat(buf[:0], body, anthropic.ResponseOptions{Model: c.model.name, Created: c.rec.start.Unix()})
		if err != nil {
			writeError(ctx, errUpstreamUnreadable, f.Model)
			return out
		}
		ctx.SetStatusCode(fasthttp.StatusOK)
		ctx.SetContentTypeBytes(contentTypeJSON)
		ctx.SetBody(out)
		known := used != (anthropic.Usage{})
		if !known {
			_, _, known = anthropic.BodyUsage(body)
		}
		tokens := claudeTokens(used)
		if !known {
			tokens.Completion = min(c.maxOutput, int64(len(out)/4))
		}
		s.settle(c, tokens, known, ctx.Response.Header.Peek(headerRequestID))
		return out
	case status >= 400 && status < 500 && status != fasthttp.StatusUnauthorized && status != fasthttp.StatusForbidden:
		out := anthropic.ErrorToOpenAI(buf[:0], status, body)
		// Anthropic's words never quote the key, but a proxy in front of it
		// might: the same care as for any upstream's words.
		redactedOut := out
		for _, secret := range upstreamSecrets(u.APIKey(), u.Headers()) {
			redactedOut = redact(redactedOut, secret)
		}
		ctx.SetStatusCode(status)
		ctx.SetContentTypeBytes(contentTypeJSON)
		ctx.SetBody(redactedOut)
		return out
	}
	s.answer(ctx, u, resp, f)
	return buf
}

// claudeTokens is what an Anthropic usage bills: the prompt is input,
// cache reads and cache writes together, each priced apart by usd.Price.Bill.
func claudeTokens(u anthropic.Usage) usd.Tokens {
	return usd.Tokens{Prompt: u.PromptTokens(), Cached: u.CacheReadInputTokens, CacheWrite: u.CacheCreationInputTokens,
		Completion: u.OutputTokens}
}
