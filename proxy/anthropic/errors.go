package anthropic

import (
	"github.com/bytedance/sonic"
	"github.com/bytedance/sonic/ast"
)

// StatusOverloaded is Anthropic's status for overloaded_error: the API is
// temporarily overloaded. It is not a standard HTTP status.
const StatusOverloaded = 529

// FailsOver reports whether an upstream's answer with status should be
// retried on another upstream, as a 5xx is: 529 (overloaded_error) is a
// 5xx by its number, and the one Anthropic sends most under load.
func FailsOver(status int) bool { return status >= 500 && status <= 599 }

// ErrorType is the Anthropic error type for an HTTP status, as Anthropic's
// API answers it: 400 invalid_request_error, 401 authentication_error, 402
// billing_error, 403 permission_error, 404 not_found_error, 413
// request_too_large, 429 rate_limit_error, 504 timeout_error, 529
// overloaded_error; any other 4xx invalid_request_error and 5xx api_error.
func ErrorType(status int) string {
	switch status {
	case 401:
		return "authentication_error"
	case 402:
		return "billing_error"
	case 403:
		return "permission_error"
	case 404:
		return "not_found_error"
	case 413:
		return "request_too_large"
	case 429:
		return "rate_limit_error"
	case 504:
		return "timeout_error"
	case StatusOverloaded:
		return "overloaded_error"
	}
	if status >= 500 {
		return "api_error"
	}
	return "invalid_request_error"
}

// AppendError appends an Anthropic error body,
// {"type":"error","error":{"type":...,"message":...}}.
func AppendError(dst []byte, typ, message string) []byte {
	dst = append(dst, `{"type":"error","error":{"type":`...)
	dst = appendString(dst, typ)
	dst = append(dst, `,"message":`...)
	dst = appendString(dst, message)
	return append(dst, "}}"...)
}

// AppendErrorEvent appends an Anthropic stream's error event (event: error),
// for a stream cut by the gateway (a budget spent, an upstream lost).
func AppendErrorEvent(dst []byte, typ, message string) []byte {
	dst = append(dst, "event: error\ndata: "...)
	dst = AppendError(dst, typ, message)
	return append(dst, "\n\n"...)
}

// ErrorToOpenAI appends the OpenAI-shaped error body for an Anthropic error
// answer body with status: {"error":{"message","type","param","code"}},
// type and code both the Anthropic error type (the OpenAI SDKs read both),
// so a client sees overloaded_error as it was sent. A body that is not an
// Anthropic error reads as the type its status implies, with a message
// saying so (the body itself is not copied: it may echo the request).
func ErrorToOpenAI(dst []byte, status int, body []byte) []byte {
	typ, msg := ErrorType(status), "the upstream answered with an error"
	var scratch []byte
	if isObject(body) && sonic.Valid(body) {
		n := nodes.Get().(*ast.Node)
		defer release(n)
		js := b2s(body)
		if raw, t := find(n, js, "error", "type"); t == ast.V_STRING {
			typ = decodeString(raw, &scratch)
		}
		if raw, t := find(n, js, "error", "message"); t == ast.V_STRING {
			msg = decodeString(raw, &scratch)
		}
	}
	dst = append(dst, `{"error":{"message":`...)
	dst = appendString(dst, msg)
	dst = append(dst, `,"type":`...)
	dst = appendString(dst, typ)
	dst = append(dst, `,"param":null,"code":`...)
	dst = appendString(dst, typ)
	return append(dst, "}}"...)
}

// ErrorFromOpenAI appends the Anthropic error body for an OpenAI or
// tokenhub error answer with status (for /v1/messages clients, whose SDKs
// type errors by status and error.type): the type is ErrorType(status), the
// message error.message when there is one.
func ErrorFromOpenAI(dst []byte, status int, body []byte) []byte {
	msg := "the upstream answered with an error"
	var scratch []byte
	if isObject(body) && sonic.Valid(body) {
		n := nodes.Get().(*ast.Node)
		defer release(n)
		if raw, t := find(n, b2s(body), "error", "message"); t == ast.V_STRING {
			msg = decodeString(raw, &scratch)
		}
	}
	return AppendError(dst, ErrorType(status), msg)
}

// decodeString decodes a JSON string literal into a new string; "" when it
// has an escape JSON does not define.
func decodeString(raw string, scratch *[]byte) string {
	var ok bool
	if *scratch, ok = appendUnescaped((*scratch)[:0], raw); !ok {
		return ""
	}
	return string(*scratch)
}
