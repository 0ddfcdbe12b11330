package openai

import (
	"bytes"
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/bytedance/sonic/ast"

	"github.com/tokenhub/tokenhub/internal/jsonscan"
	"github.com/tokenhub/tokenhub/internal/usd"
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
		f.MaxTokensParam = keyMaxOutputTokens
		if !ok || v < 1 {
			return body[start:end], ErrMaxTokens
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

// ResponseUsage reads the usage of a Responses API answer: the top-level
// usage of a whole response, or response.usage of a stream's final event
// (response.completed, response.incomplete, response.failed). It reports
// false when there is none or input_tokens is not a count; output_tokens
// absent or not a count reads as 0, and so does cached_tokens. A repeated key
// counts as its last, as the client's SDK reads it. Reasoning tokens are
// part of output_tokens and billed with them.
func ResponseUsage(data []byte) (usd.Tokens, bool) {
	if !isObject(data) || !mayHaveUsage(data) {
		return usd.Tokens{}, false
	}
	var top [2][]byte
	members(data, responseTop[:], top[:])
	u := top[0]
	if u == nil || u[0] != '{' {
		var in [1][]byte
		members(top[1], usageKey[:], in[:])
		if u = in[0]; u == nil || u[0] != '{' {
			return usd.Tokens{}, false
		}
	}
	return responseTokens(u)
}

// The members ResponseUsage reads, at each level.
var (
	responseTop    = [...]string{"usage", "response"}
	responseCounts = [...]string{"input_tokens", "output_tokens", "input_tokens_details"}
)

// responseTokens reads a Responses usage object, u.
func responseTokens(u []byte) (usd.Tokens, bool) {
	var counts [len(responseCounts)][]byte
	members(u, responseCounts[:], counts[:])
	var used usd.Tokens
	var ok bool
	if used.Prompt, ok = tokenCount(counts[0]); !ok {
		return usd.Tokens{}, false
	}
	if used.Completion, ok = tokenCount(counts[1]); !ok {
		used.Completion = 0
	}
	if d := counts[2]; d != nil && d[0] == '{' {
		var cached [1][]byte
		members(d, cachedKey[:], cached[:])
		if used.Cached, ok = tokenCount(cached[0]); !ok {
			used.Cached = 0
		}
	}
	return used, true
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
