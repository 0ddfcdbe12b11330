package proxy

import (
	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/proxy/openai"
)

var (
	errDuplicateKey = &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, code: "duplicate_key",
		message: "The request body repeats a key: "}
	errAmbiguousKey = &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, code: "ambiguous_key",
		message: "The request body has a key that JSON parsers read differently (Go's encoding/json matches names " +
			"case-insensitively, others exactly); spell it exactly: "}
	errBestOf = &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, param: "best_of", code: "invalid_value",
		message: "best_of must be an integer from 1 to 128."}
)

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
	case openai.ErrMaxOutputTokens:
		return errMaxOutputTokens
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
