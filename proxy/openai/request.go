package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode/utf8"

	"github.com/bytedance/sonic"

	"github.com/tokenhub/tokenhub/internal/jsonscan"
)

// Request holds the top-level fields of an inference request (chat
// completion, legacy completion, embedding) that the gateway acts on. They
// are read in one pass over the body after a validation pass, never by
// decoding the whole body: prompts can be megabytes.
type Request struct {
	// Model is the model name, unescaped. It points into the body parsed
	// (or, when the name has escapes, into a copy) and lives as long as it.
	Model []byte
	// Stream is true when the client asked for a stream.
	Stream bool
	// MaxTokens is max_completion_tokens, else max_tokens; -1 when neither
	// is given. MaxTokensParam is the name of the field it was read from
	// (or, after ErrMaxTokens, the field refused), nil when neither. N is
	// how many choices are asked for (default 1).
	MaxTokens      int64
	MaxTokensParam []byte
	N              int64
	// Prompts is how many prompts a legacy completion's prompt holds (1 for
	// a string or one array of token ids), BestOf its best_of (0 when
	// absent): the upstream generates, and bills, best_of completions per
	// prompt. Echo: the prompt is returned with each completion.
	Prompts int64
	BestOf  int64
	Echo    bool

	// The Responses API's own fields (ParseResponses); MaxTokens holds its
	// max_output_tokens. PreviousResponseID is the response this one
	// continues, unescaped (nil when absent or null). Chained: the request
	// names an earlier response, a conversation, a stored prompt or an
	// earlier item (an input item_reference), which the upstream adds to the
	// input, so the body no longer bounds the prompt.
	// Background: the response runs after the answer, which carries no usage.
	PreviousResponseID []byte
	Chained            bool
	Background         bool
	// Unstored: store is false, so the upstream keeps no copy of the
	// response, and there is nothing to follow up on.
	Unstored bool

	// responses: the body is a Responses API request (ParseResponses).
	responses bool

	// modelStart and modelEnd delimit the model's JSON string token (quotes
	// included) in the body, so it can be replaced without re-encoding.
	modelStart, modelEnd int
	seenModel            bool
	seenStream           bool
	seenMax              uint8 // 1: max_tokens, 2: max_completion_tokens
	seenN                bool
	seenPrompt           bool
	seenBestOf           bool
	seenEcho             bool
	seenPrevious         bool
	seenConversation     bool
	seenStore            bool
	seenBackground       bool
	seenInput            bool
	// soStart and soEnd delimit the stream_options value token (0, 0 when
	// absent); objEnd is the index of the body's closing '}'. When
	// stream_options is an object, soFirst is where its first member (or its
	// '}') starts, and usageStart, usageEnd delimit include_usage's value
	// (0, 0 when absent).
	soStart, soEnd       int
	soFirst              int
	usageStart, usageEnd int
	objEnd               int
}

// Parse reads f from body. On failure it returns one of the Err values of
// this package and a detail: for ErrDuplicateField, ErrDuplicateKey and
// ErrAmbiguousKey, the name of the key at fault (one the gateway reads, never
// the client's bytes); for ErrModelNotString, ErrStreamNotBool, ErrMaxTokens,
// ErrChoices and ErrBestOf, the value's JSON token as the client sent it
// (in body; untrusted, of any length), for the error to say what it got.
func (f *Request) Parse(body []byte) (detail []byte, err error) {
	return f.parse(body, false)
}

// ParseResponses reads f from body, a Responses API request (POST
// /v1/responses), under the same rules as Parse: a repeated or ambiguous key
// the gateway reads is refused, since upstreams take the last of repeated
// keys. It reads model, stream, max_output_tokens (into MaxTokens),
// previous_response_id, conversation, store and background.
func (f *Request) ParseResponses(body []byte) (detail []byte, err error) {
	return f.parse(body, true)
}

func (f *Request) parse(body []byte, responses bool) (detail []byte, err error) {
	*f = Request{MaxTokens: -1, N: 1, Prompts: 1, responses: responses}
	// Validation first, with sonic's SIMD validator (about 135 ns for a typical
	// chat body, 4x faster than encoding/json): the scan below may then assume
	// well-formed JSON. The check is structural: raw control characters, invalid
	// UTF-8 and unknown escapes inside strings pass (except in the fields read
	// here), as they cannot change what the gateway reads; the upstream judges
	// them as it would from any client.
	if !sonic.Valid(body) {
		return nil, ErrMalformedJSON
	}
	i := skipSpace(body, 0)
	if body[i] != '{' {
		return nil, ErrNotObject
	}
	i = skipSpace(body, i+1)
	if body[i] == '}' {
		return nil, ErrMissingModel
	}
	var buf [keyBufLen]byte
	for {
		keyEnd := jsonscan.SkipString(body, i)
		key, ok := keyName(&buf, body[i:keyEnd])
		if !ok {
			return nil, ErrMalformedJSON
		}
		i = skipSpace(body, keyEnd)
		i = skipSpace(body, i+1) // the ':'
		valStart := i
		valEnd := jsonscan.SkipValue(body, i)
		var name []byte
		if responses {
			name, err = f.responsesField(key, body, valStart, valEnd)
		} else {
			name, err = f.field(key, body, valStart, valEnd)
		}
		if err != nil {
			return name, err
		}
		i = skipSpace(body, valEnd)
		if body[i] == '}' {
			f.objEnd = i
			break
		}
		i = skipSpace(body, i+1) // the ','
	}
	if !f.seenModel {
		return nil, ErrMissingModel
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
	keyPrompt              = []byte("prompt")
	keyBestOf              = []byte("best_of")
	keyEcho                = []byte("echo")
	keyIncludeUsage        = []byte("include_usage")
	// readKeys are the top-level keys the gateway reads.
	readKeys = [...][]byte{keyModel, keyStream, keyMaxTokens, keyMaxCompletionTokens, keyN,
		keyStreamOptions, keyPrompt, keyBestOf, keyEcho}
	nameIncludeUsage = []byte("stream_options.include_usage")
)

// What Parse refuses a body for. They are sentinels, compared by identity,
// so a refusal allocates nothing; proxy maps each to its HTTP answer.
var (
	ErrMalformedJSON  = errors.New("openai: the body is not valid JSON")
	ErrNotObject      = errors.New("openai: the body is not a JSON object")
	ErrMissingModel   = errors.New("openai: the body has no model")
	ErrModelNotString = errors.New("openai: model is not a non-empty string of valid UTF-8")
	ErrStreamNotBool  = errors.New("openai: stream is not a boolean")
	// ErrMaxTokens: max_tokens or max_completion_tokens (MaxTokensParam says
	// which) is not an integer from 0 to MaxCount. 0 is the least the
	// legacy completions take; the endpoints that take at least 1 refuse 0
	// themselves.
	ErrMaxTokens = errors.New("openai: max_tokens or max_completion_tokens is not an integer from 0 to MaxCount")
	ErrChoices   = errors.New("openai: n is not an integer from 1 to 128")
	ErrBestOf    = errors.New("openai: best_of is not an integer from 1 to 128")
	// ErrDuplicateField: a top-level key the gateway reads is repeated.
	ErrDuplicateField = errors.New("openai: a top-level key is repeated")
	// ErrDuplicateKey: a nested key the gateway reads is repeated.
	ErrDuplicateKey = errors.New("openai: a key is repeated")
	// ErrAmbiguousKey: a key is a variant of one the gateway reads that
	// some JSON parsers take for it and others do not.
	ErrAmbiguousKey = errors.New("openai: a key reads differently in different JSON parsers")
)

// keyBufLen bounds the decoded length of an escaped key compared with the
// keys the gateway reads; a longer one cannot be one of them.
const keyBufLen = 32

// keyName returns the name of the key whose string literal is lit: the bytes
// between its quotes, or, when it has escapes, those decoded into buf (a
// decoded name longer than buf is returned as written, since it cannot be a
// name the gateway reads). An escaped key ("mod\u0065l") means "model" to
// every upstream, so it must mean the same here, or the model whitelist and
// the stream's usage could be bypassed. ok is false for an escape JSON does
// not define.
func keyName(buf *[keyBufLen]byte, lit []byte) (name []byte, ok bool) {
	name = lit[1 : len(lit)-1]
	if bytes.IndexByte(name, '\\') < 0 {
		return name, true
	}
	if len(name) > 6*keyBufLen {
		return name, true // each decoded byte takes at most six written
	}
	dec, ok := jsonscan.AppendUnescaped(buf[:0], lit)
	if !ok {
		return nil, false
	}
	if len(dec) > keyBufLen {
		return name, true
	}
	return dec, true
}

// variantOf returns the key of keys that name is not, but that Go's
// encoding/json would read it as: it matches names case-insensitively under
// Unicode simple folding ("Model", "include_uſage"), where Python's json and
// most others compare exactly. nil when there is none.
func variantOf(name []byte, keys ...[]byte) []byte {
	plain := true
	for _, c := range name {
		if (c < 'a' || c > 'z') && c != '_' {
			plain = false
			break
		}
	}
	if plain {
		// Lower-case ASCII letters fold only to upper-case ones and to the
		// non-ASCII K (Kelvin) and ſ (long s), none of which name has.
		return nil
	}
	for _, k := range keys {
		if bytes.EqualFold(name, k) {
			return k
		}
	}
	return nil
}

// maxChoices bounds n and best_of, as OpenAI does, and so the choices
// ContentBytes reads, and the time one odd chunk can cost.
const maxChoices = 128

// MaxChoices is the most n and best_of may ask for.
const MaxChoices = maxChoices

// MaxCount is the largest count (max_tokens) Parse reads: 15 digits, so
// that products with prices cannot overflow.
const MaxCount = 999_999_999_999_999

// field reads one top-level member. On failure it returns the error and the
// name to detail it with (a key of the gateway's, never the client's bytes).
func (f *Request) field(key, body []byte, start, end int) (name []byte, err error) {
	switch {
	case bytes.Equal(key, keyModel):
		if f.seenModel {
			// Upstreams take the last of repeated keys; the gateway would have
			// checked the first. Refuse rather than guess.
			return keyModel, ErrDuplicateField
		}
		f.seenModel = true
		if body[start] != '"' || end-start < 3 {
			return body[start:end], ErrModelNotString
		}
		f.modelStart, f.modelEnd = start, end
		f.Model = body[start+1 : end-1]
		if bytes.IndexByte(f.Model, '\\') >= 0 {
			var ok bool
			if f.Model, ok = unescapeString(body[start:end]); !ok {
				return nil, ErrMalformedJSON
			}
		}
		if !utf8.Valid(f.Model) {
			// Upstreams would read U+FFFD where the gateway reads raw bytes.
			return body[start:end], ErrModelNotString
		}
	case bytes.Equal(key, keyStream):
		if f.seenStream {
			return keyStream, ErrDuplicateField
		}
		f.seenStream = true
		switch body[start] {
		case 't':
			f.Stream = true
		case 'f', 'n':
		default:
			return body[start:end], ErrStreamNotBool
		}
	case bytes.Equal(key, keyMaxTokens), bytes.Equal(key, keyMaxCompletionTokens):
		bit := uint8(1)
		if len(key) == len(keyMaxCompletionTokens) {
			bit = 2
		}
		if f.seenMax&bit != 0 {
			if bit == 2 {
				return keyMaxCompletionTokens, ErrDuplicateField
			}
			return keyMaxTokens, ErrDuplicateField
		}
		f.seenMax |= bit
		if body[start] == 'n' { // null: as if absent
			return nil, nil
		}
		v, ok := parseCount(body[start:end])
		if !ok || v < 0 {
			if bit == 2 {
				f.MaxTokensParam = keyMaxCompletionTokens
			} else {
				f.MaxTokensParam = keyMaxTokens
			}
			return body[start:end], ErrMaxTokens
		}
		// max_completion_tokens supersedes the older max_tokens.
		if bit == 2 {
			f.MaxTokens, f.MaxTokensParam = v, keyMaxCompletionTokens
		} else if f.seenMax&2 == 0 {
			f.MaxTokens, f.MaxTokensParam = v, keyMaxTokens
		}
	case bytes.Equal(key, keyStreamOptions):
		if f.soEnd != 0 {
			return keyStreamOptions, ErrDuplicateField
		}
		return f.streamOptions(body, start, end)
	case bytes.Equal(key, keyN):
		return choicesField(keyN, body[start:end], &f.seenN, &f.N, ErrChoices)
	case bytes.Equal(key, keyPrompt):
		if f.seenPrompt {
			return keyPrompt, ErrDuplicateField
		}
		f.seenPrompt = true
		f.Prompts = countPrompts(body[start:end])
	case bytes.Equal(key, keyBestOf):
		return choicesField(keyBestOf, body[start:end], &f.seenBestOf, &f.BestOf, ErrBestOf)
	case bytes.Equal(key, keyEcho):
		if f.seenEcho {
			return keyEcho, ErrDuplicateField
		}
		f.seenEcho = true
		// Anything but false or null may read as true somewhere (pydantic
		// takes 1 and "true"): bound it as true.
		f.Echo = body[start] != 'f' && body[start] != 'n'
	default:
		if k := variantOf(key, readKeys[:]...); k != nil {
			return k, ErrAmbiguousKey
		}
	}
	return nil, nil
}

// streamOptions reads the stream_options value at body[start:end]: where
// include_usage is, refusing it repeated, spelled as a variant, or escaped
// into a repeat, since upstreams take the last of repeated keys and the
// gateway edits one.
func (f *Request) streamOptions(body []byte, start, end int) (name []byte, err error) {
	f.soStart, f.soEnd = start, end
	if body[start] != '{' {
		return nil, nil
	}
	i := skipSpace(body, start+1)
	f.soFirst = i
	if body[i] == '}' {
		return nil, nil
	}
	var buf [keyBufLen]byte
	for {
		keyEnd := jsonscan.SkipString(body, i)
		key, ok := keyName(&buf, body[i:keyEnd])
		if !ok {
			return nil, ErrMalformedJSON
		}
		i = skipSpace(body, skipSpace(body, keyEnd)+1)
		valEnd := jsonscan.SkipValue(body, i)
		switch {
		case bytes.Equal(key, keyIncludeUsage):
			if f.usageEnd != 0 {
				return nameIncludeUsage, ErrDuplicateKey
			}
			f.usageStart, f.usageEnd = i, valEnd
		case variantOf(key, keyIncludeUsage) != nil:
			return nameIncludeUsage, ErrAmbiguousKey
		}
		i = skipSpace(body, valEnd)
		if body[i] == '}' {
			return nil, nil
		}
		i = skipSpace(body, i+1)
	}
}

// countPrompts returns how many prompts a legacy completion's prompt holds,
// at most: a string or an array of token ids is one, any other array has one
// per element. An element that is not a number counts, so that no mix an
// upstream might accept is undercounted.
func countPrompts(v []byte) int64 {
	if v[0] != '[' {
		return 1
	}
	var n int64
	i := skipSpace(v, 1)
	for i < len(v)-1 && v[i] != ']' {
		if c := v[i]; c != '-' && (c < '0' || c > '9') {
			n++
		}
		i = skipSpace(v, jsonscan.SkipValue(v, i))
		if v[i] == ',' {
			i = skipSpace(v, i+1)
		}
	}
	return max(n, 1)
}

// choicesField reads a count of choices (n, best_of) from its value token
// tok into *v: null leaves the default, a repeat is refused, and anything
// but an integer from 1 to maxChoices is bad.
func choicesField(key, tok []byte, seen *bool, v *int64, bad error) ([]byte, error) {
	if *seen {
		return key, ErrDuplicateField
	}
	*seen = true
	if tok[0] == 'n' {
		return nil, nil
	}
	n, ok := parseCount(tok)
	if !ok || n < 1 || n > maxChoices {
		return tok, bad
	}
	*v = n
	return nil, nil
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

// Edit replaces body[at:end] with with (an insertion when at == end).
type Edit struct {
	at, end int
	with    []byte
}

// ModelEdit is the edit that renames the model: quoted is the new name as a
// JSON string literal, quotes included.
func (f *Request) ModelEdit(quoted []byte) Edit {
	return Edit{at: f.modelStart, end: f.modelEnd, with: quoted}
}

var (
	addStreamOptions = []byte(`,"stream_options":{"include_usage":true}`)
	setStreamOptions = []byte(`{"include_usage":true}`)
	addIncludeUsage  = []byte(`"include_usage":true,`)
	addOnlyUsage     = []byte(`"include_usage":true`)
	valueTrue        = []byte("true")
)

// UsageEdit returns the edit that makes a streaming request ask the upstream
// for its final usage chunk (stream_options.include_usage), and whether one
// is needed: false when the client asked for usage itself, or when
// stream_options is not an object the gateway can amend.
func (f *Request) UsageEdit(body []byte) (Edit, bool) {
	if f.soEnd == 0 {
		return Edit{at: f.objEnd, end: f.objEnd, with: addStreamOptions}, true
	}
	switch body[f.soStart] {
	case 'n': // null
		return Edit{at: f.soStart, end: f.soEnd, with: setStreamOptions}, true
	case '{':
	default:
		return Edit{}, false // not an object: the upstream will say so
	}
	switch {
	case f.usageEnd != 0 && body[f.usageStart] == 't':
		return Edit{}, false // asked for by the client: it gets the chunk
	case f.usageEnd != 0:
		// Parse refused a second include_usage, in any spelling: this one is
		// the one every upstream reads.
		return Edit{at: f.usageStart, end: f.usageEnd, with: valueTrue}, true
	case body[f.soFirst] == '}':
		return Edit{at: f.soFirst, end: f.soFirst, with: addOnlyUsage}, true
	}
	return Edit{at: f.soFirst, end: f.soFirst, with: addIncludeUsage}, true
}

// AppendEdits appends body to dst with edits applied; they must not overlap.
// body must be the one the edits were made for.
func AppendEdits(dst, body []byte, edits ...Edit) []byte {
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
