package openai

import (
	"bytes"
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/bytedance/sonic/ast"

	"github.com/tokenhub/tokenhub/internal/jsonscan"
)

var (
	keyMaxOutputTokens    = []byte("max_output_tokens")
	keyPreviousResponseID = []byte("previous_response_id")
	keyConversation       = []byte("conversation")
	keyStore              = []byte("store")
	keyBackground         = []byte("background")
	keyInput              = []byte("input")
	keyType               = []byte("type")
	keyContent            = []byte("content")
	// responsesReadKeys are the top-level keys the gateway reads in a
	// Responses API request.
	responsesReadKeys = [...][]byte{keyModel, keyStream, keyMaxOutputTokens, keyPreviousResponseID,
		keyConversation, keyStore, keyBackground, keyInput, keyPrompt}
	typeItemReference = []byte("item_reference")
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
	case bytes.Equal(key, keyPrompt):
		// A stored prompt's template is expanded by the upstream, from
		// nothing the body shows.
		if f.seenPrompt {
			return keyPrompt, ErrDuplicateField
		}
		f.seenPrompt = true
		f.Chained = f.Chained || body[start] != 'n'
	case bytes.Equal(key, keyInput):
		// Read so that a repeat is refused: the upstream takes the last.
		if f.seenInput {
			return keyInput, ErrDuplicateField
		}
		f.seenInput = true
		if body[start] == '[' {
			refs, ok := referencesItems(body, start)
			if !ok {
				return nil, ErrMalformedJSON
			}
			f.Chained = f.Chained || refs
		}
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

// referencesItems reports whether the input array at body[start] may hold
// an item reference ({"type":"item_reference","id":…}, whose type is
// optional): an item whose type is item_reference, in any spelling the
// upstream decodes as that, or an object without a type and without content,
// which only a reference is. The upstream replaces a reference with the
// earlier item, which the body does not bound. ok is false for an escape
// JSON does not define in a key.
func referencesItems(body []byte, start int) (refs, ok bool) {
	i := skipSpace(body, start+1)
	var buf [keyBufLen]byte
	for body[i] != ']' {
		end := jsonscan.SkipValue(body, i)
		if body[i] == '{' {
			var hasType, hasContent bool
			j := skipSpace(body, i+1)
			for body[j] != '}' {
				keyEnd := jsonscan.SkipString(body, j)
				key, ok := keyName(&buf, body[j:keyEnd])
				if !ok {
					return false, false
				}
				j = skipSpace(body, skipSpace(body, keyEnd)+1)
				valEnd := jsonscan.SkipValue(body, j)
				switch {
				// null is as if absent, as for every optional field.
				case bytes.Equal(key, keyType), variantOf(key, keyType) != nil:
					hasType = hasType || body[j] != 'n'
					if body[j] == '"' && isItemReference(body[j:valEnd]) {
						return true, true
					}
				case bytes.Equal(key, keyContent), variantOf(key, keyContent) != nil:
					hasContent = hasContent || body[j] != 'n'
				}
				j = skipSpace(body, valEnd)
				if body[j] == ',' {
					j = skipSpace(body, j+1)
				}
			}
			if !hasType && !hasContent {
				return true, true
			}
		}
		i = skipSpace(body, end)
		if body[i] == ',' {
			i = skipSpace(body, i+1)
		}
	}
	return false, true
}

// isItemReference reports whether lit, a JSON string literal, decodes to
// item_reference.
func isItemReference(lit []byte) bool {
	if bytes.IndexByte(lit, '\\') < 0 {
		return bytes.Equal(lit[1:len(lit)-1], typeItemReference)
	}
	var buf [keyBufLen]byte
	dec, ok := jsonscan.AppendUnescaped(buf[:0], lit)
	return ok && bytes.Equal(dec, typeItemReference)
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
