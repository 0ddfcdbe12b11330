package mock

import (
	"bytes"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// AnthropicOptions shape the answers of the Anthropic Messages API
// (POST /v1/messages and /v1/messages/count_tokens). Latency, Chunks,
// ChunkInterval, Status, FailAfterChunks and OverReportTokens of [Options]
// (and their X-Mock headers) apply there too: Status 529 is Anthropic's
// overloaded_error, the failover case.
type AnthropicOptions struct {
	// APIKey, when set, is the key every request must carry, in x-api-key or
	// as an Authorization bearer token (the official SDKs send the latter).
	APIKey string
	// Models are the model ids the mock serves; any other is Anthropic's 404
	// not_found_error. Nil means [DefaultAnthropicModels].
	Models []string
	// CacheReadInputTokens and CacheCreationInputTokens are reported in every
	// usage, on top of input_tokens (Anthropic's total input is the sum of
	// the three), and counted by count_tokens. The mock keeps no cache: its
	// answers depend on the request alone, so cache_control markers are
	// accepted and change nothing.
	CacheReadInputTokens     int
	CacheCreationInputTokens int
	// ToolUse makes the mock call a tool whenever the request offers tools
	// (and tool_choice is not none) and its last message is not tool
	// results. Without it a tool is called when tool_choice is any or names
	// it, or when the last user message mentions a tool by name.
	ToolUse bool
	// StreamErrorAfter, when positive, ends every stream after that many
	// content deltas with an "event: error" of type overloaded_error, as
	// Anthropic does when it is overloaded mid-answer.
	StreamErrorAfter int
}

// DefaultAnthropicModels are the models the mock serves unless
// [AnthropicOptions.Models] says otherwise: "mock" and Claude's current ids.
var DefaultAnthropicModels = []string{
	"mock",
	"claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5",
	"claude-opus-5", "claude-sonnet-5",
	"claude-opus-4-8", "claude-opus-4-7", "claude-opus-4-6", "claude-sonnet-4-6",
	"claude-haiku-4-5", "claude-haiku-4-5-20251001",
	"claude-opus-4-5", "claude-opus-4-5-20251101",
	"claude-sonnet-4-5", "claude-sonnet-4-5-20250929",
}

// Override headers of the Anthropic API, each replacing the
// [AnthropicOptions] field of the same meaning for one request.
const (
	HeaderCacheRead     = "X-Mock-Cache-Read"
	HeaderCacheCreation = "X-Mock-Cache-Creation"
)

const anthropicPath = "/v1/messages"

// isAnthropicPath reports whether path belongs to the Messages API.
func isAnthropicPath(path []byte) bool {
	return bytes.HasPrefix(path, []byte(anthropicPath)) &&
		(len(path) == len(anthropicPath) || path[len(anthropicPath)] == '/')
}

// anthropicCall is the state of one Messages request, pooled: the parsed
// request, then the answer, kept for the stream that is written after the
// handler has returned (and the body is gone).
type anthropicCall struct {
	req       messagesRequest
	out       []byte // the buffered answer, or the stream's events back to back
	events    []anthropicEvent
	toolInput []byte
	latency   time.Duration
	interval  time.Duration
	failAfter int
	errAfter  int
	errEvent  []byte // the error event StreamErrorAfter sends
	head      []byte // the response head of a hijacked stream
}

// serveAnthropic answers a request under /v1/messages, with Anthropic's
// checks and error shapes.
func (s *Server) serveAnthropic(ctx *fasthttp.RequestCtx) {
	var set settings
	if e := s.settings(ctx, &set); e != nil {
		s.writeAnthropicError(ctx, &anthropicError{status: e.status, typ: anthropicInvalidRequest, message: e.message}, nil, nil)
		return
	}
	path := ctx.Path()
	countTokens := false
	switch string(path) {
	case anthropicPath:
	case anthropicPath + "/count_tokens":
		countTokens = true
	default:
		s.writeAnthropicError(ctx, errAnthropicNotFound, nil, nil)
		return
	}
	if !ctx.IsPost() {
		s.writeAnthropicError(ctx, errAnthropicMethod, nil, nil)
		return
	}
	if e := s.checkAnthropicHeaders(ctx); e != nil {
		s.writeAnthropicError(ctx, e, nil, nil)
		return
	}
	if set.status != 0 {
		sleep(set.latency)
		s.writeAnthropicStatusError(ctx, set.status)
		return
	}
	cacheRead, cacheCreation, e := s.cacheTokens(ctx)
	if e != nil {
		s.writeAnthropicError(ctx, e, nil, nil)
		return
	}

	call := s.anthropicCalls.Get().(*anthropicCall)
	defer func() {
		if call != nil {
			s.putAnthropicCall(call)
		}
	}()
	r := &call.req
	body := ctx.PostBody()
	if e, me := r.parse(body, countTokens); e != nil || me != nil {
		if me != nil {
			s.writeMessageError(ctx, me)
		} else {
			s.writeAnthropicError(ctx, e, nil, nil)
		}
		return
	}
	if r.sampling != nil && refusesSampling(ctx.Request.Header.Peek("anthropic-version")) {
		s.writeAnthropicError(ctx, r.sampling, nil, nil)
		return
	}
	if !s.servesModel(r.modelName) {
		s.writeAnthropicError(ctx, errAnthropicUnknownModel, r.modelName, nil)
		return
	}
	usage := anthropicUsage{input: r.inputTokens(), cacheRead: cacheRead, cacheCreation: cacheCreation}
	if countTokens {
		sleep(set.latency)
		b := append(call.out[:0], `{"input_tokens":`...)
		b = strconv.AppendInt(b, int64(usage.input+usage.cacheRead+usage.cacheCreation), 10)
		b = append(b, '}')
		call.out = b
		s.writeAnthropicJSON(ctx, b)
		return
	}
	var a anthropicAnswer
	s.decideAnswer(call, body, set.chunks, &a)
	usage.output = a.output + s.opts.OverReportTokens
	if r.stream {
		s.startAnthropicStream(ctx, call, &set, &a, usage)
		call = nil // the stream owns it now
		return
	}
	sleep(set.latency)
	call.out = s.appendMessage(call.out[:0], call, &a, usage)
	s.writeAnthropicJSON(ctx, call.out)
}

func (s *Server) putAnthropicCall(call *anthropicCall) {
	if cap(call.out) > maxPooledBuffer || cap(call.req.arena) > maxPooledBuffer {
		return
	}
	s.anthropicCalls.Put(call)
}

// writeAnthropicJSON answers b with a request-id header, as Anthropic does.
func (s *Server) writeAnthropicJSON(ctx *fasthttp.RequestCtx, b []byte) {
	var id [32]byte
	ctx.Response.Header.SetBytesV("request-id", s.appendID(id[:0], "req_mock"))
	ctx.SetContentTypeBytes(contentTypeJSON)
	ctx.SetBody(b)
}

// checkAnthropicHeaders checks the key, when the mock has one, and the
// anthropic-version header, in that order, as Anthropic does. Any version
// is accepted: the SDKs send dates newer than any list the mock could keep.
func (s *Server) checkAnthropicHeaders(ctx *fasthttp.RequestCtx) *anthropicError {
	h := &ctx.Request.Header
	if key := s.opts.Anthropic.APIKey; key != "" {
		got := h.Peek("x-api-key")
		if got == nil {
			if auth := h.Peek(fasthttp.HeaderAuthorization); len(auth) > 7 && string(auth[:7]) == "Bearer " {
				got = auth[7:]
			}
		}
		switch {
		case got == nil:
			return errAnthropicNoAPIKey
		case string(got) != key:
			return errAnthropicBadAPIKey
		}
	}
	if len(h.Peek("anthropic-version")) == 0 {
		return errAnthropicNoVersion
	}
	return nil
}

var (
	errBadCacheRead     = anthropicBadRequest("X-Mock-Cache-Read must be an integer between 0 and 999999999.")
	errBadCacheCreation = anthropicBadRequest("X-Mock-Cache-Creation must be an integer between 0 and 999999999.")
)

// cacheTokens returns the cache numbers in force for the request.
func (s *Server) cacheTokens(ctx *fasthttp.RequestCtx) (read, creation int, e *anthropicError) {
	read, creation = s.opts.Anthropic.CacheReadInputTokens, s.opts.Anthropic.CacheCreationInputTokens
	h := &ctx.Request.Header
	if v := h.Peek(HeaderCacheRead); v != nil {
		n, err := fasthttp.ParseUint(v)
		if err != nil || n > maxInt {
			return 0, 0, errBadCacheRead
		}
		read = n
	}
	if v := h.Peek(HeaderCacheCreation); v != nil {
		n, err := fasthttp.ParseUint(v)
		if err != nil || n > maxInt {
			return 0, 0, errBadCacheCreation
		}
		creation = n
	}
	return read, creation, nil
}

func (s *Server) servesModel(name []byte) bool {
	models := s.opts.Anthropic.Models
	if models == nil {
		models = DefaultAnthropicModels
	}
	for _, m := range models {
		if string(name) == m {
			return true
		}
	}
	return false
}

// Stop reasons.
const (
	stopEndTurn      = "end_turn"
	stopMaxTokens    = "max_tokens"
	stopStopSequence = "stop_sequence"
	stopToolUse      = "tool_use"
)

// anthropicAnswer is what the mock answers a Messages request with.
type anthropicAnswer struct {
	words      int    // words of the text block; no text block when 0 and a tool is called
	stopReason string // one of the stop reasons above
	stopSeq    []byte // the stop sequence's JSON literal, when stopReason is stop_sequence
	tool       int    // the index of the tool called, or -1
	output     int    // output tokens
}

// anthropicUsage is the token counts of an answer.
type anthropicUsage struct {
	input, cacheRead, cacheCreation, output int
}

// decideAnswer chooses the answer: a tool call when one is asked for (and
// fits in max_tokens), else words from the word list, cut at max_tokens or
// at the first word that contains a stop sequence (the stop sequence is
// generated and billed, not returned, as with Anthropic).
func (s *Server) decideAnswer(call *anthropicCall, body []byte, chunks int, a *anthropicAnswer) {
	r := &call.req
	*a = anthropicAnswer{tool: -1}
	if t := s.chosenTool(r, body); t >= 0 {
		call.toolInput = appendToolInput(call.toolInput[:0], body, r.tools[t].schema)
		if tokens := (len(call.toolInput) + 3) / 4; tokens <= r.maxTokens {
			a.tool, a.output, a.stopReason = t, tokens, stopToolUse
			return
		}
	}
	a.words, a.stopReason = chunks, stopEndTurn
	if r.maxTokens < a.words {
		a.words, a.stopReason = r.maxTokens, stopMaxTokens
	}
	a.output = a.words
	for k := range a.words {
		for _, stop := range r.stops {
			if containsBytes(words[k%len(words)], stop.text) {
				a.words, a.output, a.stopReason, a.stopSeq = k, k+1, stopStopSequence, stop.literal
				return
			}
		}
	}
}

// containsBytes reports whether sub is within s, without converting either.
func containsBytes(s string, sub []byte) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == string(sub) {
			return true
		}
	}
	return false
}

// chosenTool returns the index of the tool the answer calls, or -1.
func (s *Server) chosenTool(r *messagesRequest, body []byte) int {
	if len(r.tools) == 0 {
		return -1
	}
	switch r.choice {
	case choiceNone:
		return -1
	case choiceTool:
		for t, tool := range r.tools {
			if bytes.Equal(tool.name, r.choiceName) {
				return t
			}
		}
		return -1
	case choiceAny:
		return max(r.mentionedTool(body), 0)
	}
	if r.lastHasResult {
		return -1 // the tool has answered: time to answer the user
	}
	if t := r.mentionedTool(body); t >= 0 {
		return t
	}
	if s.opts.Anthropic.ToolUse {
		return 0
	}
	return -1
}

// maxToolInputProperties bounds the input object of a tool call.
const maxToolInputProperties = 64

// appendToolInput appends the input of a call to the tool whose input_schema
// is at body[schema]: an object with a value for each of the schema's
// properties, chosen by its type ("lorem" for a string, 1 for a number,
// true, [] or {}).
func appendToolInput(b, body []byte, schema int) []byte {
	b = append(b, '{')
	n := 0
	props := -1
	if schema >= 0 {
		fields := newMembers(body, schema)
		for {
			k, ok := fields.next()
			if !ok {
				break
			}
			if string(k) == "properties" {
				props = fields.val
			}
		}
	}
	if props >= 0 {
		m := newMembers(body, props)
		for n < maxToolInputProperties {
			k, ok := m.next()
			if !ok {
				break
			}
			var typ []byte
			fields := newMembers(body, m.val)
			for {
				fk, ok := fields.next()
				if !ok {
					break
				}
				if string(fk) == "type" {
					typ = fields.value()
				}
			}
			if n > 0 {
				b = append(b, ',')
			}
			b = append(b, '"')
			b = appendEscaped(b, k)
			b = append(b, `":`...)
			switch string(typ) {
			case `"integer"`, `"number"`:
				b = append(b, '1')
			case `"boolean"`:
				b = append(b, "true"...)
			case `"array"`:
				b = append(b, "[]"...)
			case `"object"`:
				b = append(b, "{}"...)
			case `"null"`:
				b = append(b, "null"...)
			default:
				b = append(b, `"lorem"`...)
			}
			n++
		}
	}
	return append(b, '}')
}

// appendMessageHead appends a message object up to its content:
// {"id":...,"type":"message","role":"assistant","model":...,"content":[
func (s *Server) appendMessageHead(b []byte, model []byte) []byte {
	b = append(b, `{"id":"`...)
	b = s.appendID(b, "msg_mock")
	b = append(b, `","type":"message","role":"assistant","model":`...)
	b = append(b, model...)
	return append(b, `,"content":[`...)
}

// appendTextBlock appends a text block of n words, or the one a stream
// starts with when n is 0.
func appendTextBlock(b []byte, n int) []byte {
	b = append(b, `{"type":"text","text":"`...)
	b = appendWords(b, n)
	return append(b, `"}`...)
}

// appendToolUseBlock appends a tool_use block calling tool with input.
func (s *Server) appendToolUseBlock(b []byte, name, input []byte) []byte {
	b = append(b, `{"type":"tool_use","id":"`...)
	b = s.appendID(b, "toolu_mock")
	b = append(b, `","name":"`...)
	b = appendEscaped(b, name)
	b = append(b, `","input":`...)
	b = append(b, input...)
	return append(b, '}')
}

// appendStop appends "stop_reason":...,"stop_sequence":...
func appendStop(b []byte, a *anthropicAnswer) []byte {
	b = append(b, `"stop_reason":"`...)
	b = append(b, a.stopReason...)
	b = append(b, `","stop_sequence":`...)
	if a.stopReason == stopStopSequence {
		return append(b, a.stopSeq...)
	}
	return append(b, "null"...)
}

// appendAnthropicUsage appends a usage object as a Message carries it.
func appendAnthropicUsage(b []byte, u anthropicUsage) []byte {
	b = append(b, `{"input_tokens":`...)
	b = strconv.AppendInt(b, int64(u.input), 10)
	b = append(b, `,"cache_creation_input_tokens":`...)
	b = strconv.AppendInt(b, int64(u.cacheCreation), 10)
	b = append(b, `,"cache_read_input_tokens":`...)
	b = strconv.AppendInt(b, int64(u.cacheRead), 10)
	b = append(b, `,"cache_creation":{"ephemeral_5m_input_tokens":`...)
	b = strconv.AppendInt(b, int64(u.cacheCreation), 10)
	b = append(b, `,"ephemeral_1h_input_tokens":0},"output_tokens":`...)
	b = strconv.AppendInt(b, int64(u.output), 10)
	return append(b, `,"service_tier":"standard"}`...)
}

// appendMessage appends the buffered answer.
func (s *Server) appendMessage(b []byte, call *anthropicCall, a *anthropicAnswer, u anthropicUsage) []byte {
	r := &call.req
	b = s.appendMessageHead(b, r.model)
	switch {
	case a.tool >= 0:
		b = s.appendToolUseBlock(b, r.tools[a.tool].name, call.toolInput)
	case a.words > 0:
		b = appendTextBlock(b, a.words)
	}
	b = append(b, "],"...)
	b = appendStop(b, a)
	b = append(b, `,"usage":`...)
	b = appendAnthropicUsage(b, u)
	return append(b, '}')
}

// refusesSampling reports whether API version (a date, YYYY-MM-DD) is
// 2026-10-21 or later, which refuses temperature, top_p and top_k.
func refusesSampling(version []byte) bool {
	return len(version) == len("2026-10-21") && string(version) >= "2026-10-21"
}
