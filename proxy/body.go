package proxy

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"

	"github.com/tokenhub/tokenhub/internal/jsonscan"

	"github.com/bytedance/sonic"
)

// requestFields are the top-level fields of an inference request that the
// gateway needs. They are read in one pass over the body after a validation
// pass, never by decoding the whole body: prompts can be megabytes.
type requestFields struct {
	model []byte // the model name, unescaped
	// modelStart and modelEnd delimit the model's JSON string token (quotes
	// included) in the body, so it can be replaced without re-encoding.
	modelStart, modelEnd int
	stream               bool
	// maxTokens is max_completion_tokens, else max_tokens; -1 when neither is
	// given. n is how many choices are asked for (default 1).
	maxTokens  int64
	n          int64
	seenModel  bool
	seenStream bool
	seenMax    uint8 // 1: max_tokens, 2: max_completion_tokens
	seenN      bool
	// streamOptions delimits the stream_options value token (0, 0 when
	// absent); objEnd is the index of the body's closing '}'.
	soStart, soEnd int
	objEnd         int
}

// parse reads f from body. On failure it returns the error to answer and, for
// a duplicate key, the key's name as detail.
func (f *requestFields) parse(body []byte) (*apiError, []byte) {
	*f = requestFields{maxTokens: -1, n: 1}
	// Validation first, with sonic's SIMD validator (about 135 ns for a typical
	// chat body, 4x faster than encoding/json): the scan below may then assume
	// well-formed JSON. The check is structural: raw control characters, invalid
	// UTF-8 and unknown escapes inside strings pass (except in the fields read
	// here), as they cannot change what the gateway reads; the upstream judges
	// them as it would from any client.
	if !sonic.Valid(body) {
		return errMalformedJSON, nil
	}
	i := skipSpace(body, 0)
	if body[i] != '{' {
		return errNotObject, nil
	}
	i = skipSpace(body, i+1)
	if body[i] == '}' {
		return errMissingModel, nil
	}
	for {
		keyStart := i
		keyEnd := jsonscan.SkipString(body, i)
		key := body[keyStart+1 : keyEnd-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			// An escaped key ("mod\u0065l") means "model" to the upstream, so it
			// must mean the same here, or the whitelist could be bypassed.
			var ok bool
			if key, ok = unescapeString(body[keyStart:keyEnd]); !ok {
				return errMalformedJSON, nil
			}
		}
		i = skipSpace(body, keyEnd)
		i = skipSpace(body, i+1) // the ':'
		valStart := i
		valEnd := jsonscan.SkipValue(body, i)
		if e := f.field(key, body, valStart, valEnd); e != nil {
			return e, key
		}
		i = skipSpace(body, valEnd)
		if body[i] == '}' {
			f.objEnd = i
			break
		}
		i = skipSpace(body, i+1) // the ','
	}
	if !f.seenModel {
		return errMissingModel, nil
	}
	return nil, nil
}

var (
	keyModel               = []byte("model")
	keyStream              = []byte("stream")
	keyMaxTokens           = []byte("max_tokens")
	keyMaxCompletionTokens = []byte("max_completion_tokens")
	keyN                   = []byte("n")
	keyStreamOptions       = []byte("stream_options")
	keyIncludeUsage        = []byte("include_usage")
)

// maxChoices bounds n, as OpenAI does.
const maxChoices = 128

func (f *requestFields) field(key, body []byte, start, end int) *apiError {
	switch {
	case bytes.Equal(key, keyModel):
		if f.seenModel {
			// Upstreams take the last of repeated keys; the gateway would have
			// checked the first. Refuse rather than guess.
			return errDuplicateField
		}
		f.seenModel = true
		if body[start] != '"' || end-start < 3 {
			return errModelNotString
		}
		f.modelStart, f.modelEnd = start, end
		f.model = body[start+1 : end-1]
		if bytes.IndexByte(f.model, '\\') >= 0 {
			var ok bool
			if f.model, ok = unescapeString(body[start:end]); !ok {
				return errMalformedJSON
			}
		}
		if !utf8.Valid(f.model) {
			// Upstreams would read U+FFFD where the gateway reads raw bytes.
			return errModelNotString
		}
	case bytes.Equal(key, keyStream):
		if f.seenStream {
			return errDuplicateField
		}
		f.seenStream = true
		switch body[start] {
		case 't':
			f.stream = true
		case 'f', 'n':
		default:
			return errStreamNotBool
		}
	case bytes.Equal(key, keyMaxTokens), bytes.Equal(key, keyMaxCompletionTokens):
		bit := uint8(1)
		if len(key) == len(keyMaxCompletionTokens) {
			bit = 2
		}
		if f.seenMax&bit != 0 {
			return errDuplicateField
		}
		f.seenMax |= bit
		if body[start] == 'n' { // null: as if absent
			return nil
		}
		v, ok := parseCount(body[start:end])
		if !ok || v < 1 {
			return errMaxTokens
		}
		// max_completion_tokens supersedes the older max_tokens.
		if bit == 2 || f.seenMax&2 == 0 {
			f.maxTokens = v
		}
	case bytes.Equal(key, keyStreamOptions):
		if f.soEnd != 0 {
			return errDuplicateField
		}
		f.soStart, f.soEnd = start, end
	case bytes.Equal(key, keyN):
		if f.seenN {
			return errDuplicateField
		}
		f.seenN = true
		if body[start] == 'n' {
			return nil
		}
		v, ok := parseCount(body[start:end])
		if !ok || v < 1 || v > maxChoices {
			return errChoices
		}
		f.n = v
	}
	return nil
}

// parseCount reads a JSON integer token (no fraction or exponent, at most 15
// digits so products with prices cannot overflow).
func parseCount(tok []byte) (int64, bool) {
	if len(tok) == 0 || len(tok) > 15 {
		return 0, false
	}
	neg := tok[0] == '-'
	if neg {
		tok = tok[1:]
	}
	var v int64
	for _, c := range tok {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	if neg {
		v = -v
	}
	return v, len(tok) > 0
}

// edit replaces body[at:end] with with (an insertion when at == end).
type edit struct {
	at, end int
	with    []byte
}

// modelEdit is the edit that renames the model: quoted is the new name as a
// JSON string literal, quotes included.
func (f *requestFields) modelEdit(quoted []byte) edit {
	return edit{at: f.modelStart, end: f.modelEnd, with: quoted}
}

var (
	addStreamOptions = []byte(`,"stream_options":{"include_usage":true}`)
	setStreamOptions = []byte(`{"include_usage":true}`)
	addIncludeUsage  = []byte(`"include_usage":true,`)
	addOnlyUsage     = []byte(`"include_usage":true`)
	valueTrue        = []byte("true")
)

// usageEdit returns the edit that makes a streaming request ask the upstream
// for its final usage chunk (stream_options.include_usage), and whether one
// is needed: false when the client asked for usage itself, or when
// stream_options is not an object the gateway can amend.
func (f *requestFields) usageEdit(body []byte) (edit, bool) {
	if f.soEnd == 0 {
		return edit{at: f.objEnd, end: f.objEnd, with: addStreamOptions}, true
	}
	switch body[f.soStart] {
	case 'n': // null
		return edit{at: f.soStart, end: f.soEnd, with: setStreamOptions}, true
	case '{':
	default:
		return edit{}, false // not an object: the upstream will say so
	}
	at := skipSpace(body, f.soStart+1)
	if body[at] == '}' {
		return edit{at: at, end: at, with: addOnlyUsage}, true
	}
	for i := at; ; {
		keyEnd := jsonscan.SkipString(body, i)
		key := body[i+1 : keyEnd-1]
		i = skipSpace(body, skipSpace(body, keyEnd)+1)
		valEnd := jsonscan.SkipValue(body, i)
		if bytes.Equal(key, keyIncludeUsage) {
			if body[i] == 't' {
				return edit{}, false // asked for by the client: it gets the chunk
			}
			return edit{at: i, end: valEnd, with: valueTrue}, true
		}
		i = skipSpace(body, valEnd)
		if body[i] == '}' {
			return edit{at: at, end: at, with: addIncludeUsage}, true
		}
		i = skipSpace(body, i+1)
	}
}

// appendEdits appends body to dst with edits applied; they must not overlap.
func appendEdits(dst, body []byte, edits ...edit) []byte {
	if len(edits) == 2 && edits[1].at < edits[0].at {
		edits[0], edits[1] = edits[1], edits[0]
	}
	last := 0
	for _, e := range edits {
		dst = append(dst, body[last:e.at]...)
		dst = append(dst, e.with...)
		last = e.end
	}
	return append(dst, body[last:]...)
}

// unescapeString decodes a JSON string literal that contains escapes, strictly
// (sonic.Valid lets an invalid escape such as \0 through). Such names are rare,
// so this path may allocate.
func unescapeString(lit []byte) ([]byte, bool) {
	var s string
	if err := json.Unmarshal(lit, &s); err != nil {
		return nil, false
	}
	return []byte(s), true
}

// skipSpace is jsonscan.SkipSpace kept in bounds: valid JSON never ends where
// a token is expected, and the clamp keeps that true of anything else.
func skipSpace(b []byte, i int) int { return min(jsonscan.SkipSpace(b, i), len(b)-1) }
