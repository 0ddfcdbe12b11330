package openai

import (
	"bytes"
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/bytedance/sonic/ast"
)

var (
	keyMaxOutputTokens    = []byte("max_output_tokens")
	keyPreviousResponseID = []byte("previous_response_id")
	keyConversation       = []byte("conversation")
	keyStore              = []byte("store")
	keyBackground         = []byte("background")
	// responsesReadKeys are the top-level keys the gateway reads in a
	// Responses API request.
	responsesReadKeys = [...][]byte{keyModel, keyStream, keyMaxOutputTokens, keyPreviousResponseID,
		keyConversation, keyStore, keyBackground}
)

// What ParseResponses refuses a body for, beside Parse's refusals.
var (
	ErrMaxOutputTokens    = errors.New("openai: max_output_tokens is not a positive integer")
	ErrPreviousResponseID = errors.New("openai: previous_response_id is not a string")
)

// responsesField reads one top-level member of a Responses API request. On
// failure it returns the error and the name to detail it with.
func (f *Request) responsesField(key, body []byte, start, end int) (name []byte, err error) {
	switch {
	case bytes.Equal(key, keyModel), bytes.Equal(key, keyStream):
		return f.field(key, body, start, end)
	case bytes.Equal(key, keyMaxOutputTokens):
		if f.seenMax != 0 {
			return keyMaxOutputTokens, ErrDuplicateField
		}
		f.seenMax = 1
		if body[start] == 'n' { // null: as if absent
			return nil, nil
		}
		v, ok := parseCount(body[start:end])
		if !ok || v < 1 {
			return nil, ErrMaxOutputTokens
		}
		f.MaxTokens = v
	case bytes.Equal(key, keyPreviousResponseID):
		if f.seenPrevious {
			return keyPreviousResponseID, ErrDuplicateField
		}
		f.seenPrevious = true
		switch body[start] {
		case 'n':
			return nil, nil
		case '"':
		default:
			return nil, ErrPreviousResponseID
		}
		f.Chained = true
		f.PreviousResponseID = body[start+1 : end-1]
		if bytes.IndexByte(f.PreviousResponseID, '\\') >= 0 {
			var ok bool
			if f.PreviousResponseID, ok = unescapeString(body[start:end]); !ok {
				return nil, ErrMalformedJSON
			}
		}
		if !utf8.Valid(f.PreviousResponseID) {
			return nil, ErrPreviousResponseID
		}
	case bytes.Equal(key, keyConversation):
		if f.seenConversation {
			return keyConversation, ErrDuplicateField
		}
		f.seenConversation = true
		// A conversation's items are prepended like a previous response's;
		// whatever its shape, anything but null may name one somewhere.
		f.Chained = f.Chained || body[start] != 'n'
	case bytes.Equal(key, keyStore):
		if f.seenStore {
			return keyStore, ErrDuplicateField
		}
		f.seenStore = true
		f.Unstored = body[start] == 'f'
	case bytes.Equal(key, keyBackground):
		if f.seenBackground {
			return keyBackground, ErrDuplicateField
		}
		f.seenBackground = true
		// As for echo: anything but false or null may read as true somewhere.
		f.Background = body[start] != 'f' && body[start] != 'n'
	default:
		if k := variantOf(key, responsesReadKeys[:]...); k != nil {
			return k, ErrAmbiguousKey
		}
	}
	return nil, nil
}

// Tokens is the usage an upstream reports for one answer. Input counts every
// prompt token, Cached among them; Output every generated token, Reasoning
// among them (OpenAI's usage counts both details inside the totals).
type Tokens struct {
	Input, Output     int64
	Cached, Reasoning int64
}

// ResponseUsage reads the usage of a Responses API answer: the top-level
// usage of a whole response, or response.usage of a stream's final event
// (response.completed, response.incomplete, response.failed). It reports
// false when there is none or input_tokens is not a count; output_tokens
// absent or not a count reads as 0, and so do the details.
func ResponseUsage(data []byte) (Tokens, bool) {
	if !isObject(data) || !mayHaveUsage(data) {
		return Tokens{}, false
	}
	n := nodes.Get().(*ast.Node)
	defer release(n)
	js := b2s(data)
	u, t := find(n, js, "usage")
	if t != ast.V_OBJECT {
		if u, t = find(n, js, "response", "usage"); t != ast.V_OBJECT {
			return Tokens{}, false
		}
	}
	return responseTokens(n, u)
}

// responseTokens reads a Responses usage object, u.
func responseTokens(n *ast.Node, u string) (Tokens, bool) {
	var tk Tokens
	var ok bool
	if tk.Input, ok = count(u, "input_tokens"); !ok {
		return Tokens{}, false
	}
	tk.Output, _ = count(u, "output_tokens")
	if d, t := find(n, u, "input_tokens_details"); t == ast.V_OBJECT {
		tk.Cached, _ = count(d, "cached_tokens")
	}
	if d, t := find(n, u, "output_tokens_details"); t == ast.V_OBJECT {
		tk.Reasoning, _ = count(d, "reasoning_tokens")
	}
	return tk, true
}

// ResponseID returns the id of the response data carries: the top-level id
// of a whole response (a non-stream answer's body), or response.id of a
// stream event that carries the response (response.created first of all).
// The id points into data; false when there is none, or it is not a plain
// string (ids have no escapes).
func ResponseID(data []byte) ([]byte, bool) {
	if !isObject(data) {
		return nil, false
	}
	n := nodes.Get().(*ast.Node)
	defer release(n)
	js := b2s(data)
	id, t := find(n, js, "response", "id")
	if t != ast.V_STRING {
		if id, t = find(n, js, "id"); t != ast.V_STRING {
			return nil, false
		}
	}
	if len(id) < 3 || strings.IndexByte(id, '\\') >= 0 {
		return nil, false
	}
	off := len(js) - len(after(js, id)) - len(id)
	return data[off+1 : off+len(id)-1], true
}
