package mock

import (
	"strconv"

	"github.com/valyala/fasthttp"
)

// Error types as Anthropic names them.
const (
	anthropicInvalidRequest = "invalid_request_error"
	anthropicAuthentication = "authentication_error"
	anthropicPermission     = "permission_error"
	anthropicNotFound       = "not_found_error"
	anthropicTooLarge       = "request_too_large"
	anthropicRateLimit      = "rate_limit_error"
	anthropicAPI            = "api_error"
	anthropicOverloaded     = "overloaded_error"
)

// StatusOverloaded is the status Anthropic answers overloaded_error with.
const StatusOverloaded = 529

// anthropicError is one fixed Anthropic-shaped error answer. The values below
// are never modified; being package-level makes writing them allocation-free.
// A message ending in ": " is completed per request (a path, a model).
type anthropicError struct {
	status  int
	typ     string
	message string
}

func anthropicBadRequest(message string) *anthropicError {
	return &anthropicError{status: fasthttp.StatusBadRequest, typ: anthropicInvalidRequest, message: message}
}

// The messages are Anthropic's own where it is known, so clients and
// gateways that match on them behave as they would against Anthropic.
var (
	errAnthropicNoAPIKey = &anthropicError{status: fasthttp.StatusUnauthorized, typ: anthropicAuthentication,
		message: "x-api-key header is required"}
	errAnthropicBadAPIKey = &anthropicError{status: fasthttp.StatusUnauthorized, typ: anthropicAuthentication,
		message: "invalid x-api-key"}
	errAnthropicNoVersion = anthropicBadRequest("anthropic-version: header is required")
	// errAnthropicSampling are API version 2026-10-21's refusals of the
	// sampling parameters, which it rejects even at their defaults.
	errAnthropicSampling = map[string]*anthropicError{
		"temperature": anthropicBadRequest("temperature: Extra inputs are not permitted"),
		"top_p":       anthropicBadRequest("top_p: Extra inputs are not permitted"),
		"top_k":       anthropicBadRequest("top_k: Extra inputs are not permitted"),
	}
	errAnthropicNotFound = &anthropicError{status: fasthttp.StatusNotFound, typ: anthropicNotFound, message: "Not Found"}
	errAnthropicMethod   = &anthropicError{status: fasthttp.StatusMethodNotAllowed, typ: anthropicInvalidRequest,
		message: "Method Not Allowed"}
	// errAnthropicUnknownModel is completed with the model's name.
	errAnthropicUnknownModel = &anthropicError{status: fasthttp.StatusNotFound, typ: anthropicNotFound, message: "model: "}

	errAnthropicMalformedJSON  = anthropicBadRequest("There was an issue with the JSON body of your request: it is not valid JSON.")
	errAnthropicNotObject      = anthropicBadRequest("Input should be a valid dictionary or object to extract fields from")
	errAnthropicNoModel        = anthropicBadRequest("model: Field required")
	errAnthropicModelType      = anthropicBadRequest("model: Input should be a valid string")
	errAnthropicNoMaxTokens    = anthropicBadRequest("max_tokens: Field required")
	errAnthropicMaxTokensType  = anthropicBadRequest("max_tokens: Input should be a valid integer")
	errAnthropicMaxTokensRange = anthropicBadRequest("max_tokens: Input should be greater than or equal to 0")
	errAnthropicNoMessages     = anthropicBadRequest("messages: Field required")
	errAnthropicMessagesType   = anthropicBadRequest("messages: Input should be a valid list")
	errAnthropicEmptyMessages  = anthropicBadRequest("messages: at least one message is required")
	errAnthropicSystemType     = anthropicBadRequest("system: Input should be a valid string or a list of text blocks")
	errAnthropicStopsType      = anthropicBadRequest("stop_sequences: Input should be a valid list of strings")
	errAnthropicToolsType      = anthropicBadRequest("tools: Input should be a valid list")
	errAnthropicToolName       = anthropicBadRequest("tools: every tool needs a name: a non-empty string")
	errAnthropicToolChoice     = anthropicBadRequest("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
	errAnthropicToolChoiceName = anthropicBadRequest("tool_choice.name: Field required")
	errAnthropicStreamType     = anthropicBadRequest("stream: Input should be a valid boolean")
)

// messageError is a validation error about one message or content block:
// Anthropic prefixes it with where it was found ("messages.2.content.0: ")
// and some name a tool_use id.
type messageError struct {
	e       *anthropicError
	message int // index in messages
	block   int // index in content, or -1 when the error is about the message
	id      []byte
}

var (
	errAnthropicRole = anthropicBadRequest(
		"Input should be 'user', 'assistant' or 'system'")
	errAnthropicMessageType = anthropicBadRequest(
		"Input should be a valid dictionary")
	errAnthropicContentType = anthropicBadRequest(
		"Input should be a valid string or a list of content blocks")
	errAnthropicBlockType = anthropicBadRequest(
		"Input should be a valid dictionary with a string 'type'")
	errAnthropicEmptyContent = anthropicBadRequest(
		"all messages must have non-empty content except for the optional final assistant message")
	errAnthropicEmptyText = anthropicBadRequest(
		"text content blocks must be non-empty")
	errAnthropicSystemBlock = anthropicBadRequest(
		"system messages may only contain text blocks")
	errAnthropicToolResultRole = anthropicBadRequest(
		"`tool_result` blocks can only be in `user` messages")
	errAnthropicToolUseRole = anthropicBadRequest(
		"`tool_use` blocks can only be in `assistant` messages")
	errAnthropicToolUseID = anthropicBadRequest(
		"`tool_use` blocks need an `id` and a `name`: non-empty strings")
	// Completed with the id, then errAnthropicOrphanResultTail.
	errAnthropicOrphanResult = anthropicBadRequest(
		"unexpected `tool_use_id` found in `tool_result` blocks: ")
	// Completed with the id, then errAnthropicMissingResultTail.
	errAnthropicMissingResult = anthropicBadRequest(
		"`tool_use` ids were found without `tool_result` blocks immediately after: ")
)

const (
	orphanResultTail  = ". Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
	missingResultTail = ". Each `tool_use` block must have a corresponding `tool_result` block in the next message."
)

// appendAnthropicError appends {"type":"error","error":{"type","message"},
// "request_id"} to b; message is written escaped, then tail as is.
func (s *Server) appendAnthropicError(b []byte, typ string, message, tail []byte) []byte {
	b = append(b, `{"type":"error","error":{"type":"`...)
	b = append(b, typ...)
	b = append(b, `","message":"`...)
	b = appendEscaped(b, message)
	b = appendEscaped(b, tail)
	b = append(b, `"},"request_id":"`...)
	b = s.appendID(b, "req_mock")
	return append(b, `"}`...)
}

// appendID appends prefix and the next 16-hex-digit sequence number: ids
// that are unique within the server and look like Anthropic's.
func (s *Server) appendID(b []byte, prefix string) []byte {
	b = append(b, prefix...)
	seq := s.ids.Add(1)
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, hexDigits[(seq>>uint(shift))&0xf])
	}
	return b
}

// writeAnthropicError answers ctx with e, its message followed by detail
// (a model name, an id), and a request-id header as Anthropic sends, without
// allocating.
func (s *Server) writeAnthropicError(ctx *fasthttp.RequestCtx, e *anthropicError, detail, tail []byte) {
	var msg [512]byte
	m := append(append(msg[:0], e.message...), detail...)
	var scratch [1024]byte
	b := s.appendAnthropicError(scratch[:0], e.typ, m, tail)
	s.writeAnthropicErrorBody(ctx, e.status, b)
}

func (s *Server) writeAnthropicErrorBody(ctx *fasthttp.RequestCtx, status int, body []byte) {
	// The request id is the one the body carries: "req_mock" and 16 digits
	// right after `"request_id":"`, at the end of the body.
	id := body[len(body)-2-len("req_mock")-16 : len(body)-2]
	ctx.Response.Header.SetBytesV("request-id", id)
	ctx.Response.Header.Set("x-should-retry", shouldRetry(status))
	writeErrorBody(ctx, status, body)
}

// shouldRetry is Anthropic's x-should-retry header: true for the statuses
// its SDKs retry.
func shouldRetry(status int) string {
	if status == fasthttp.StatusTooManyRequests || status == fasthttp.StatusConflict || status >= 500 {
		return "true"
	}
	return "false"
}

// writeMessageError answers a validation error about one message, prefixed
// with its path as Anthropic does: "messages.2.content.0: ...".
func (s *Server) writeMessageError(ctx *fasthttp.RequestCtx, me *messageError) {
	var prefix [96]byte
	p := append(prefix[:0], "messages."...)
	p = strconv.AppendInt(p, int64(me.message), 10)
	if me.block >= 0 {
		p = append(p, ".content."...)
		p = strconv.AppendInt(p, int64(me.block), 10)
	}
	p = append(p, ": "...)
	var msg [512]byte
	m := append(append(msg[:0], p...), me.e.message...)
	var tail []byte
	switch me.e {
	case errAnthropicOrphanResult:
		m = append(m, me.id...)
		tail = []byte(orphanResultTail)
	case errAnthropicMissingResult:
		m = append(m, me.id...)
		tail = []byte(missingResultTail)
	}
	var scratch [1024]byte
	s.writeAnthropicErrorBody(ctx, me.e.status, s.appendAnthropicError(scratch[:0], me.e.typ, m, tail))
}

// writeAnthropicStatusError answers the status a test asked for (an
// [Options.Status] or X-Mock-Status) with the error type Anthropic sends with
// it, so that clients classify it as they would Anthropic's: 529 is
// overloaded_error, the failover case.
func (s *Server) writeAnthropicStatusError(ctx *fasthttp.RequestCtx, status int) {
	typ := anthropicErrorType(status)
	var msg [64]byte
	m := append(msg[:0], "The mock upstream was told to fail with status "...)
	m = strconv.AppendInt(m, int64(status), 10)
	m = append(m, '.')
	if status == StatusOverloaded {
		m = append(msg[:0], "Overloaded"...)
	}
	var scratch [512]byte
	s.writeAnthropicErrorBody(ctx, status, s.appendAnthropicError(scratch[:0], typ, m, nil))
}

// anthropicErrorType is the error type Anthropic answers a status with.
func anthropicErrorType(status int) string {
	switch {
	case status == fasthttp.StatusUnauthorized:
		return anthropicAuthentication
	case status == fasthttp.StatusForbidden:
		return anthropicPermission
	case status == fasthttp.StatusNotFound:
		return anthropicNotFound
	case status == fasthttp.StatusRequestEntityTooLarge:
		return anthropicTooLarge
	case status == fasthttp.StatusTooManyRequests:
		return anthropicRateLimit
	case status == StatusOverloaded:
		return anthropicOverloaded
	case status >= 500:
		return anthropicAPI
	}
	return anthropicInvalidRequest
}
