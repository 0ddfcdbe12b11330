package mock

import (
	"strconv"

	"github.com/valyala/fasthttp"
)

// Error types as OpenAI names them.
const (
	typeInvalidRequest = "invalid_request_error"
	typeServer         = "server_error"
)

// apiError is one fixed OpenAI-shaped error answer. The values below are
// never modified; being package-level makes writing them allocation-free.
type apiError struct {
	status  int
	typ     string
	param   string // "" renders as null
	code    string // "" renders as null
	message string
}

func badRequest(param, code, message string) *apiError {
	return &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, param: param, code: code, message: message}
}

// The messages follow OpenAI's own where it has one, so clients that match on
// them behave as they would against OpenAI.
var (
	errMalformedJSON = badRequest("", "",
		"We could not parse the JSON body of your request. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.")
	errNotObject = badRequest("", "invalid_type",
		"Invalid type for request body: expected an object.")
	errMissingModel = badRequest("", "",
		"you must provide a model parameter")
	errModelNotString = badRequest("model", "invalid_type",
		"Invalid type for 'model': expected a string.")
	errMissingMessages = badRequest("messages", "missing_required_parameter",
		"Missing required parameter: 'messages'.")
	errMessagesNotArray = badRequest("messages", "invalid_type",
		"Invalid type for 'messages': expected an array of objects.")
	errEmptyMessages = badRequest("messages", "empty_array",
		"Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.")
	errMissingPrompt = badRequest("prompt", "missing_required_parameter",
		"Missing required parameter: 'prompt'.")
	errBadPrompt = badRequest("prompt", "invalid_type",
		"Invalid type for 'prompt': expected a string, an array of strings, an array of tokens or an array of token arrays.")
	errMissingInput = badRequest("input", "missing_required_parameter",
		"Missing required parameter: 'input'.")
	errBadInput = badRequest("input", "invalid_type",
		"Invalid type for 'input': expected a string, an array of strings, an array of tokens or an array of token arrays.")
	errTooManyInputs = badRequest("input", "array_above_max_length",
		"Invalid 'input': array too long. Expected an array with maximum length 2048.")
	errBadMaxTokens = badRequest("max_tokens", "invalid_value",
		"Invalid 'max_tokens': expected an integer >= 1.")
	errBadMaxCompletionTokens = badRequest("max_completion_tokens", "invalid_value",
		"Invalid 'max_completion_tokens': expected an integer >= 1.")
	errBadMaxOutputTokens = badRequest("max_output_tokens", "integer_below_min_value",
		"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16.")
	errBadN = badRequest("n", "invalid_value",
		"Invalid 'n': expected an integer between 1 and 128.")
	errTooManyChoices = badRequest("n", "invalid_value",
		"Invalid 'n': the number of prompts times best_of (or n) must be at most 128.")
	errBadBestOf = badRequest("best_of", "invalid_value",
		"Invalid 'best_of': expected an integer between 1 and 128.")
	errBestOfBelowN = badRequest("best_of", "invalid_value",
		"Invalid 'best_of': it must be greater than or equal to n.")
	errBadDimensions = badRequest("dimensions", "invalid_value",
		"Invalid 'dimensions': expected an integer between 1 and 16384.")
	errBadEncodingFormat = badRequest("encoding_format", "invalid_value",
		"Invalid value for 'encoding_format': expected one of 'float' or 'base64'.")

	errAnswerTooLong = badRequest("", "answer_too_long",
		"The answer would exceed the mock's limit of 1048576 words (choices times words per choice).")
	errEmbeddingsTooLarge = badRequest("input", "answer_too_long",
		"The answer would exceed the mock's limit of 4194304 embedding values (inputs times dimensions).")

	errBadLatency   = badRequest("", "invalid_mock_header", "X-Mock-Latency must be a Go duration between 0 and 10m.")
	errBadInterval  = badRequest("", "invalid_mock_header", "X-Mock-Interval must be a Go duration between 0 and 10m.")
	errBadChunks    = badRequest("", "invalid_mock_header", "X-Mock-Chunks must be an integer between 1 and 65536.")
	errBadStatus    = badRequest("", "invalid_mock_header", "X-Mock-Status must be 0 or an HTTP status between 400 and 599.")
	errBadFailAfter = badRequest("", "invalid_mock_header", "X-Mock-Fail-After must be an integer between 0 and 65536.")
)

var contentTypeJSON = []byte("application/json")

// writeError answers ctx with e without allocating.
func writeError(ctx *fasthttp.RequestCtx, e *apiError) {
	var scratch [512]byte
	writeErrorBody(ctx, e.status, appendError(scratch[:0], e.message, e.typ, e.param, e.code))
}

func writeErrorBody(ctx *fasthttp.RequestCtx, status int, body []byte) {
	ctx.SetStatusCode(status)
	ctx.SetContentTypeBytes(contentTypeJSON)
	ctx.SetBody(body)
}

// writeUnknownURL answers a path or method the mock does not serve, naming
// them as OpenAI does: "Invalid URL (POST /v1/nope)".
func writeUnknownURL(ctx *fasthttp.RequestCtx, status int, method, path []byte) {
	var scratch [512]byte
	b := append(scratch[:0], `{"error":{"message":"Invalid URL (`...)
	b = appendEscaped(b, method)
	b = append(b, ' ')
	b = appendEscaped(b, path)
	b = append(b, `)","type":"invalid_request_error","param":null,"code":null}}`...)
	writeErrorBody(ctx, status, b)
}

// writeStatusError answers the status a test asked for with the error body
// OpenAI sends with it, so that clients classify it as they would OpenAI's.
func writeStatusError(ctx *fasthttp.RequestCtx, status int) {
	typ, code := typeInvalidRequest, ""
	switch {
	case status == fasthttp.StatusUnauthorized:
		code = "invalid_api_key"
	case status == fasthttp.StatusNotFound:
		code = "model_not_found"
	case status == fasthttp.StatusTooManyRequests:
		typ, code = "requests", "rate_limit_exceeded"
	case status >= 500:
		typ = typeServer
	}
	var msg [64]byte
	m := append(msg[:0], "The mock upstream was told to fail with status "...)
	m = strconv.AppendInt(m, int64(status), 10)
	m = append(m, '.')
	var scratch [512]byte
	writeErrorBody(ctx, status, appendError(scratch[:0], string(m), typ, "", code))
}

// appendError appends {"error":{"message","type","param","code"}} to b.
func appendError(b []byte, message, typ, param, code string) []byte {
	b = append(b, `{"error":{"message":"`...)
	b = appendEscaped(b, message)
	b = append(b, `","type":"`...)
	b = append(b, typ...)
	b = append(b, `","param":`...)
	b = appendNullable(b, param)
	b = append(b, `,"code":`...)
	b = appendNullable(b, code)
	return append(b, "}}"...)
}

func appendNullable(b []byte, s string) []byte {
	if s == "" {
		return append(b, "null"...)
	}
	b = append(b, '"')
	b = appendEscaped(b, s)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

// appendEscaped appends s as the inside of a JSON string literal.
func appendEscaped[T string | []byte](b []byte, s T) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return b
}
