package proxy

import (
	"errors"
	"net"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/internal/jsonscan"
	"github.com/tokenhub/tokenhub/keys"
)

// Error types, as OpenAI names them, so SDKs classify our errors like theirs.
const (
	typeInvalidRequest = "invalid_request_error"
	typeServer         = "server_error"
)

// apiError is one OpenAI-shaped error answer. The fixed ones are package-level
// values so writing them allocates nothing; detail, when set, is appended to the
// message (a model name, a field) and JSON-escaped, and after follows it.
type apiError struct {
	status  int
	typ     string
	code    string // "" renders as null
	param   string // "" renders as null
	message string
	after   string
}

var (
	errMissingKey = &apiError{status: fasthttp.StatusUnauthorized, typ: typeInvalidRequest, code: "invalid_api_key",
		message: "You didn't provide an API key. Send it in an Authorization header using Bearer auth (Authorization: Bearer sk-...)."}
	errMalformedKey = &apiError{status: fasthttp.StatusUnauthorized, typ: typeInvalidRequest, code: "invalid_api_key",
		message: "Incorrect API key provided: it is not a well-formed tokenhub key."}
	errUnknownKey = &apiError{status: fasthttp.StatusUnauthorized, typ: typeInvalidRequest, code: "invalid_api_key",
		message: "Incorrect API key provided."}
	errRevokedKey = &apiError{status: fasthttp.StatusUnauthorized, typ: typeInvalidRequest, code: "invalid_api_key",
		message: "This API key has been revoked or rotated."}
	errExpiredKey = &apiError{status: fasthttp.StatusUnauthorized, typ: typeInvalidRequest, code: "invalid_api_key",
		message: "This API key has expired."}
	errPlanMissing = &apiError{status: fasthttp.StatusForbidden, typ: typeInvalidRequest, code: "plan_not_found",
		message: "This API key's plan no longer exists; ask the operator to assign it a plan."}
	errAdminOnly = &apiError{status: fasthttp.StatusForbidden, typ: typeInvalidRequest, code: "admin_key_required",
		message: "This endpoint needs the admin key."}
	errStoreDown = &apiError{status: fasthttp.StatusServiceUnavailable, typ: typeServer, code: "store_unavailable",
		message: "The key store is unavailable; retry shortly."}
	errInternal = &apiError{status: fasthttp.StatusInternalServerError, typ: typeServer, code: "internal_error",
		message: "The gateway failed to handle the request."}

	errMalformedJSON = &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, code: "invalid_json",
		message: "We could not parse the JSON body of your request: it is not valid JSON."}
	errNotObject = &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, code: "invalid_json",
		message: "The request body must be a JSON object."}
	errMissingModel = &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, param: "model", code: "missing_required_parameter",
		message: "You must provide a model parameter."}
	// The field errors' messages are written whole by writeFieldError, in
	// OpenAI's words; message here is what a field error says without them.
	errModelNotString = &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, param: "model", code: "invalid_type",
		message: "Invalid 'model': expected a non-empty string of valid UTF-8."}
	errStreamNotBool = &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, param: "stream", code: "invalid_type",
		message: "Invalid type for 'stream': expected a boolean."}
	errMaxTokens = &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, param: "max_tokens", code: "invalid_value",
		message: "Invalid 'max_tokens': expected an integer."}
	errPreviousResponseID = &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, param: "previous_response_id", code: "invalid_type",
		message: "Invalid type for 'previous_response_id': expected a string of valid UTF-8."}
	errBackground = &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, param: "background", code: "unsupported_parameter",
		message: "Unsupported parameter: 'background' responses are not supported by this gateway: their usage is known only after the answer, so they could not be billed."}
	errChoices = &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, param: "n", code: "invalid_value",
		message: "Invalid 'n': expected an integer from 1 to 128."}
	errDuplicateField = &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, code: "duplicate_key",
		message: "Invalid body: the key '", after: "' appears more than once. Upstreams read the last and the gateway would check another, so send it once."}
	errModelNotFound = &apiError{status: fasthttp.StatusNotFound, typ: typeInvalidRequest, param: "model", code: "model_not_found",
		message: "The model does not exist: "}
	errModelNotAllowed = &apiError{status: fasthttp.StatusForbidden, typ: typeInvalidRequest, param: "model", code: "model_not_allowed",
		message: "Your plan does not include the model: "}
	errBodyTooLarge = &apiError{status: fasthttp.StatusRequestEntityTooLarge, typ: typeInvalidRequest, code: "request_too_large",
		message: "The request body is larger than this gateway accepts (max_body_bytes)."}
	errBodiesBusy = &apiError{status: fasthttp.StatusServiceUnavailable, typ: typeServer, code: "server_busy",
		message: "The gateway is holding as many request bodies as it may at once (server.max_body_bytes_in_flight); retry shortly."}
	errHeaderTooLarge = &apiError{status: fasthttp.StatusRequestHeaderFieldsTooLarge, typ: typeInvalidRequest, code: "headers_too_large",
		message: "The request headers are too large."}
	errRequestTimeout = &apiError{status: fasthttp.StatusRequestTimeout, typ: typeInvalidRequest, code: "request_timeout",
		message: "The request was not received in time."}
	errBadRequest = &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, code: "invalid_request",
		message: "The HTTP request could not be parsed."}
	errBareLFRequest = &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, code: "invalid_request",
		message: "The HTTP request could not be parsed: header lines must end with CRLF."}
	errUnknownURL = &apiError{status: fasthttp.StatusNotFound, typ: typeInvalidRequest, code: "unknown_url",
		message: "Invalid URL: "}
	errMethodNotAllowed = &apiError{status: fasthttp.StatusMethodNotAllowed, typ: typeInvalidRequest, code: "method_not_allowed",
		message: "Method not allowed: "}

	errUpstreamUnreachable = &apiError{status: fasthttp.StatusBadGateway, typ: typeServer, code: "upstream_error",
		message: "No upstream could be reached for the model: "}
	errUpstreamFailed = &apiError{status: fasthttp.StatusBadGateway, typ: typeServer, code: "upstream_error",
		message: "The upstream failed to answer for the model: "}
	errUpstreamCredentials = &apiError{status: fasthttp.StatusBadGateway, typ: typeServer, code: "upstream_error",
		message: "The upstream refused the gateway's own provider credentials (not your API key); the operator must fix them. Model: "}
	errUpstreamDropped = &apiError{status: fasthttp.StatusBadGateway, typ: typeServer, code: "upstream_error",
		message: "The upstream closed the connection without answering; it may have processed the request, so the gateway did not send it again. Model: "}
	errUpstreamUnreadable = &apiError{status: fasthttp.StatusBadGateway, typ: typeServer, code: "upstream_error",
		message: "The upstream sent an unreadable answer for the model: "}
	errUpstreamTimeout = &apiError{status: fasthttp.StatusGatewayTimeout, typ: typeServer, code: "upstream_timeout",
		message: "The upstream did not answer in time for the model: "}
)

// writeError answers ctx with e, appending detail (JSON-escaped) to its message.
// It replaces whatever body was set, keeps the x-request-id header, and does
// not allocate.
func writeError(ctx *fasthttp.RequestCtx, e *apiError, detail []byte) {
	writeErrorParam(ctx, e, nil, detail)
}

// writeErrorParam is writeError with param, when not nil, in place of e's.
// On /v1/messages the answer is Anthropic-shaped (writeAnthropicError), so
// that the Anthropic SDKs type it: one switch here rather than a second
// copy of every error.
func writeErrorParam(ctx *fasthttp.RequestCtx, e *apiError, param, detail []byte) {
	if isMessagesPath(ctx.Path()) {
		writeAnthropicError(ctx, e, detail)
		return
	}
	var scratch [512]byte
	ctx.SetStatusCode(e.status)
	ctx.SetContentTypeBytes(contentTypeJSON)
	ctx.SetBody(appendErrorParam(scratch[:0], e, param, detail))
}

// appendError appends e's JSON body, {"error":{"message","type","param","code"}}, to b.
func appendError(b []byte, e *apiError, detail []byte) []byte {
	return appendErrorParam(b, e, nil, detail)
}

// appendErrorParam is appendError with param, when not nil, in place of e's.
func appendErrorParam(b []byte, e *apiError, param, detail []byte) []byte {
	b = append(b, `{"error":{"message":"`...)
	b = appendEscaped(b, e.message)
	b = appendEscapedBytes(b, detail)
	b = appendEscaped(b, e.after)
	b = append(b, `","type":"`...)
	b = append(b, e.typ...)
	b = append(b, `","param":`...)
	if param != nil {
		b = append(b, '"')
		b = appendEscapedBytes(b, param)
		b = append(b, '"')
	} else {
		b = appendNullableString(b, e.param)
	}
	b = append(b, `,"code":`...)
	b = appendNullableString(b, e.code)
	return append(b, "}}"...)
}

func appendNullableString(b []byte, s string) []byte {
	if s == "" {
		return append(b, "null"...)
	}
	return appendQuoted(b, s)
}

const hexDigits = "0123456789abcdef"

// appendEscaped and appendEscapedBytes append s escaped for the inside of a
// JSON string literal (jsonscan.AppendEscaped).
func appendEscaped(b []byte, s string) []byte { return jsonscan.AppendEscaped(b, s) }
func appendEscapedBytes(b, s []byte) []byte   { return jsonscan.AppendEscaped(b, s) }

// authError maps the keys package's sentinel errors to answers: the one place
// where key failures become HTTP statuses.
func authError(err error) *apiError {
	switch {
	case errors.Is(err, keys.ErrMalformedKey):
		return errMalformedKey
	case errors.Is(err, keys.ErrUnknownKey):
		return errUnknownKey
	case errors.Is(err, keys.ErrRevoked):
		return errRevokedKey
	case errors.Is(err, keys.ErrExpired):
		return errExpiredKey
	case errors.Is(err, keys.ErrPlanNotFound):
		return errPlanMissing
	}
	return errStoreDown
}

// serverError answers errors fasthttp meets before a handler runs: a body over
// MaxRequestBodySize, oversized headers, a client too slow to send its
// request; in Anthropic's shape when anthropic (the request was to
// /v1/messages: fasthttp resets it before calling its error handler, so its
// path is known only from its headers, see bodySlot.anthropic).
func serverError(ctx *fasthttp.RequestCtx, err error, anthropic bool) {
	var e *apiError
	var small *fasthttp.ErrSmallBuffer
	var netErr net.Error
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		e = errBodyTooLarge
		lingerDrain(ctx.Conn())
	case errors.As(err, &small):
		e = errHeaderTooLarge
	case errors.As(err, &netErr) && netErr.Timeout():
		e = errRequestTimeout
	case errors.Is(err, errBareLF):
		e = errBareLFRequest
	default:
		e = errBadRequest
	}
	if anthropic {
		writeAnthropicError(ctx, e, nil)
		return
	}
	writeError(ctx, e, nil)
}

var contentTypeJSON = []byte("application/json")

// Lingering close, as nginx does it: a client still sending a body the
// gateway refused would, when the connection closes with its bytes unread,
// get a TCP reset that can destroy the 413 before it is read. So what it is
// still sending is read and dropped first, for as long as it keeps coming
// (up to lingerIdle apart), bounded by lingerTotal and lingerMax.
const (
	lingerIdle  = 100 * time.Millisecond
	lingerTotal = 2 * time.Second
	lingerMax   = 256 << 20
)

func lingerDrain(c net.Conn) {
	if c == nil {
		return
	}
	buf := make([]byte, 32<<10)
	end := time.Now().Add(lingerTotal)
	for n := 0; n < lingerMax; {
		d := time.Now().Add(lingerIdle)
		if d.After(end) {
			d = end
		}
		if c.SetReadDeadline(d) != nil {
			return
		}
		k, err := c.Read(buf)
		n += k
		if err != nil {
			return
		}
	}
}

// appendStatus appends " (status N)" for upstream failure messages.
func appendStatus(b []byte, status int) []byte {
	b = append(b, " (upstream status "...)
	b = strconv.AppendInt(b, int64(status), 10)
	return append(b, ')')
}
