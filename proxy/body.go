package proxy

import (
	"math"
	"strconv"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/proxy/openai"
)

var (
	errDuplicateKey = &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, code: "duplicate_key",
		message: errDuplicateField.message, after: errDuplicateField.after}
	errAmbiguousKey = &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, code: "ambiguous_key",
		message: "Invalid body: a key is a case or Unicode variant of '",
		after:   "', which Go's encoding/json reads as that key and other JSON parsers do not; spell it exactly."}
	errBestOf = &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, param: "best_of", code: "invalid_value",
		message: "Invalid 'best_of': expected an integer from 1 to 128."}
)

var (
	paramModel  = []byte("model")
	paramStream = []byte("stream")
	paramN      = []byte("n")
	paramBestOf = []byte("best_of")
)

// writeBodyError answers a body that openai.Request.Parse refused with err
// and detail; minMaxTokens is the least max_tokens the endpoint takes. A
// field's refusal names the field, in param and once in the message, and
// says what it expected and what it got, in OpenAI's words; a key's
// refusal names the key the same way.
func writeBodyError(ctx *fasthttp.RequestCtx, f *openai.Request, err error, detail []byte, minMaxTokens int64) {
	e := bodyError(err)
	switch err {
	case openai.ErrMaxTokens:
		writeIntFieldError(ctx, e, f.MaxTokensParam, detail, minMaxTokens, openai.MaxCount, "")
	case openai.ErrChoices:
		writeIntFieldError(ctx, e, paramN, detail, 1, openai.MaxChoices, "")
	case openai.ErrBestOf:
		writeIntFieldError(ctx, e, paramBestOf, detail, 1, openai.MaxChoices, "")
	case openai.ErrStreamNotBool:
		writeTypeError(ctx, e, paramStream, "a boolean", detail)
	case openai.ErrModelNotString:
		if len(detail) > 0 && detail[0] == '"' {
			writeError(ctx, e, nil) // a string, but empty or not UTF-8
			return
		}
		writeTypeError(ctx, e, paramModel, "a string", detail)
	case openai.ErrDuplicateField, openai.ErrDuplicateKey, openai.ErrAmbiguousKey:
		writeErrorParam(ctx, e, detail, detail)
	default:
		writeError(ctx, e, detail)
	}
}

// writeIntFieldError answers e for the integer field name whose value token
// tok is not an integer from least to most: "Invalid 'n': integer above
// maximum value. Expected a value <= 128, but got 129 instead." The token is
// quoted only when it is an integer of at most maxQuotedDigits digits;
// mostNote follows the maximum.
func writeIntFieldError(ctx *fasthttp.RequestCtx, e *apiError, name, tok []byte, least, most int64, mostNote string) {
	v, digits, isInt := readInteger(tok)
	if !isInt {
		writeTypeError(ctx, e, name, "an integer", tok)
		return
	}
	var buf [256]byte
	b := append(buf[:0], "Invalid '"...)
	b = append(b, name...)
	if v < least {
		b = append(b, "': integer below minimum value. Expected a value >= "...)
		b = strconv.AppendInt(b, least, 10)
	} else {
		b = append(b, "': integer above maximum value. Expected a value <= "...)
		b = strconv.AppendInt(b, most, 10)
		b = append(b, mostNote...)
	}
	b = append(b, ", but got "...)
	if digits <= maxQuotedDigits {
		b = append(b, tok...)
	} else {
		b = append(b, "an integer of "...)
		b = strconv.AppendInt(b, int64(digits), 10)
		b = append(b, " digits"...)
	}
	b = append(b, " instead."...)
	writeErrorParam(ctx, &apiError{status: e.status, typ: e.typ, code: e.code}, name, b)
}

// maxQuotedDigits bounds the integers an error quotes back.
const maxQuotedDigits = 24

// writeTypeError answers e for the field name whose value token tok is not
// of the type want: "Invalid type for 'stream': expected a boolean, but got
// a string instead." The token itself is never quoted.
func writeTypeError(ctx *fasthttp.RequestCtx, e *apiError, name []byte, want string, tok []byte) {
	var buf [160]byte
	b := append(buf[:0], "Invalid type for '"...)
	b = append(b, name...)
	b = append(b, "': expected "...)
	b = append(b, want...)
	b = append(b, ", but got "...)
	b = append(b, jsonKind(tok)...)
	b = append(b, " instead."...)
	writeErrorParam(ctx, &apiError{status: e.status, typ: e.typ, code: e.code}, name, b)
}

// jsonKind names the type of a JSON value token as OpenAI's errors do.
func jsonKind(tok []byte) string {
	if len(tok) == 0 {
		return "nothing"
	}
	switch tok[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	if _, _, isInt := readInteger(tok); isInt {
		return "an integer"
	}
	return "a decimal number"
}

// readInteger reads a JSON number token as an integer: its value (saturated
// past 18 digits), its count of digits, and whether it is an integer at all
// (no fraction or exponent, as Python reads 1e3 as a float).
func readInteger(tok []byte) (v int64, digits int, ok bool) {
	neg := len(tok) > 0 && tok[0] == '-'
	if neg {
		tok = tok[1:]
	}
	if len(tok) == 0 {
		return 0, 0, false
	}
	for _, c := range tok {
		if c < '0' || c > '9' {
			return 0, 0, false
		}
		if digits < 18 {
			v = v*10 + int64(c-'0')
		} else {
			v = math.MaxInt64
		}
		digits++
	}
	if neg {
		v = -v
	}
	return v, digits, true
}

// bodyError is the answer to a body openai.Request.Parse refused with err:
// the one place its refusals become the API's status, type, code and param.
// The detail Parse returns with err completes the message.
func bodyError(err error) *apiError {
	switch err {
	case openai.ErrMalformedJSON:
		return errMalformedJSON
	case openai.ErrNotObject:
		return errNotObject
	case openai.ErrMissingModel:
		return errMissingModel
	case openai.ErrModelNotString:
		return errModelNotString
	case openai.ErrStreamNotBool:
		return errStreamNotBool
	case openai.ErrMaxTokens:
		return errMaxTokens
	case openai.ErrPreviousResponseID:
		return errPreviousResponseID
	case openai.ErrChoices:
		return errChoices
	case openai.ErrBestOf:
		return errBestOf
	case openai.ErrDuplicateField:
		return errDuplicateField
	case openai.ErrDuplicateKey:
		return errDuplicateKey
	case openai.ErrAmbiguousKey:
		return errAmbiguousKey
	}
	// A refusal added to openai without its answer here: TestBodyError
	// lists them all, so this is a bug, answered as one.
	return errInternal
}
