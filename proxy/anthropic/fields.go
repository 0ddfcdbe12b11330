package anthropic

import (
	"bytes"
	"errors"
	"unicode/utf8"

	"github.com/bytedance/sonic"

	"github.com/tokenhub/tokenhub/internal/jsonscan"
)

// Request holds the top-level fields of a Messages request (POST
// /v1/messages or /v1/messages/count_tokens) that the gateway acts on. They
// are read in one pass over the body after a validation pass, never by
// decoding it: a prompt can be megabytes of base64.
//
// A repeated key reads as Anthropic's server (Python) and Go's
// encoding/json read it: the last one wins. So that no parser can read the
// body otherwise, what the gateway weighs covers every occurrence: each
// model is renamed to the route's (AppendRenamed), every max_tokens must be
// a count and the largest bounds the answer (MaxTokensBound), and any
// stream true makes it a stream. A key that Go reads as one of these and
// Python does not (a case or Unicode variant, "Model") is refused.
type Request struct {
	// Model is the last model, unescaped. It points into the body parsed
	// (or, when the name has escapes, into a copy) and lives as long as it.
	Model []byte
	// Stream: some stream key is true.
	Stream bool
	// MaxTokens is the last max_tokens, -1 when there is none;
	// MaxTokensBound the largest of them all.
	MaxTokens      int64
	MaxTokensBound int64
	// External: the body may make the upstream read input it does not
	// hold (see external), so its length does not bound the prompt.
	External bool

	// models delimit the value tokens of every model key (quotes
	// included), so they can be replaced without re-encoding.
	models  [maxModelKeys][2]int
	nModels int
}

// maxModelKeys bounds the model keys a body may repeat: no client repeats
// one, and the bound keeps the renaming's bookkeeping on the stack.
const maxModelKeys = 8

// maxTokensCount bounds max_tokens (15 digits, as counts are read
// elsewhere): products with prices cannot overflow.
const maxTokensCount = 999_999_999_999_999

// What Parse refuses a Messages body for: sentinels, so a refusal
// allocates nothing; the server maps each to its answer.
var (
	ErrMalformedJSON  = errors.New("anthropic: the body is not valid JSON")
	ErrMissingModel   = errors.New("anthropic: the body has no model")
	ErrModelNotString = errors.New("anthropic: model is not a non-empty string of valid UTF-8")
	ErrStreamNotBool  = errors.New("anthropic: stream is not a boolean")
	// ErrMaxTokens: a max_tokens is not an integer from 0 to 15 digits.
	ErrMaxTokens = errors.New("anthropic: max_tokens is not a non-negative integer")
	// ErrAmbiguousKey: a key is a variant of one the gateway reads that
	// Go's encoding/json takes for it and Python's json does not.
	ErrAmbiguousKey = errors.New("anthropic: a key reads differently in different JSON parsers")
	// ErrRepeatedModel: model is repeated more than maxModelKeys times.
	ErrRepeatedModel = errors.New("anthropic: model is repeated too many times")
)

var (
	keyModel     = []byte("model")
	keyStream    = []byte("stream")
	keyMaxTokens = []byte("max_tokens")
	readKeys     = [...][]byte{keyModel, keyStream, keyMaxTokens}
)

// ParamModel, ParamStream and ParamMaxTokens name the fields Parse reads,
// for the errors that name them.
var (
	ParamModel     = keyModel
	ParamStream    = keyStream
	ParamMaxTokens = keyMaxTokens
)

// Parse reads r from body. On failure it returns one of the Err values of
// this package and a detail: for ErrAmbiguousKey the name of the key it
// is a variant of; for ErrModelNotString, ErrStreamNotBool and ErrMaxTokens
// the value's token as the client sent it (untrusted, of any length). It
// allocates nothing unless the model's name has escapes.
func (r *Request) Parse(body []byte) (detail []byte, err error) {
	*r = Request{MaxTokens: -1, MaxTokensBound: -1}
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
		i = skipSpace(body, skipSpace(body, keyEnd)+1) // past the ':'
		valEnd := jsonscan.SkipValue(body, i)
		if detail, err = r.field(key, body, i, valEnd); err != nil {
			return detail, err
		}
		i = skipSpace(body, valEnd)
		if body[i] == '}' {
			break
		}
		i = skipSpace(body, i+1) // the ','
	}
	if r.nModels == 0 {
		return nil, ErrMissingModel
	}
	// Only the last model is read; it must be one.
	start, end := r.models[r.nModels-1][0], r.models[r.nModels-1][1]
	if body[start] != '"' || end-start < 3 {
		return body[start:end], ErrModelNotString
	}
	r.Model = body[start+1 : end-1]
	if bytes.IndexByte(r.Model, '\\') >= 0 {
		dec, ok := jsonscan.AppendUnescaped(nil, body[start:end])
		if !ok {
			return nil, ErrMalformedJSON
		}
		r.Model = dec
	}
	if !utf8.Valid(r.Model) || len(r.Model) == 0 {
		return body[start:end], ErrModelNotString
	}
	r.External = external(body)
	return nil, nil
}

// A Messages body makes the upstream read input that it does not hold,
// billed as input tokens, when it has a source by URL ("type":"url", an
// image or a PDF of any length) or from the Files API ("type":"file",
// file_id); a server tool, whose results are read back as input
// (web_search_*, web_fetch_*, code_execution_*, bash_code_execution_*,
// text_editor_code_execution_*); an MCP server (mcp_servers, mcp_toolset);
// or a container (skills, uploaded files).
var (
	externalTypes = [...][]byte{[]byte("url"), []byte("file")}
	// externalTypePrefixes are those of the server tools' types.
	externalTypePrefixes = [...][]byte{[]byte("web_search"), []byte("web_fetch"), []byte("code_execution"),
		[]byte("bash_code_execution"), []byte("text_editor_code_execution"), []byte("mcp_toolset")}
	externalKeys = [...][]byte{[]byte(`"file_id"`), []byte(`"mcp_servers"`), []byte(`"container"`)}
	keyType      = []byte(`"type"`)
)

// external reports whether body, valid JSON, may make the upstream read
// input it does not hold. Every key of the body that is written without
// escapes appears in it as its literal, quotes included, so every "type"
// member and every key above is found by searching for its literal (an
// escaped quote inside a string may add a false match, never hide a real
// one); a body with an ASCII letter or underscore written as an escape
// (\u0041 to \u007f), which could spell any of them unseen and which no
// honest encoder writes (they escape control characters, non-ASCII, and
// at most <, > and &), is taken to. A false positive costs the request a
// wider worst case, never a refusal by itself.
func external(body []byte) bool {
	for _, k := range externalKeys {
		if isKeyAt(body, k) {
			return true
		}
	}
	for b := body; ; {
		i := bytes.Index(b, keyType)
		if i < 0 {
			break
		}
		b = b[i+len(keyType):]
		j := jsonscan.SkipSpace(b, 0)
		if j >= len(b) || b[j] != ':' {
			continue
		}
		j = jsonscan.SkipSpace(b, j+1)
		if j >= len(b) || b[j] != '"' {
			continue
		}
		v := b[j+1:]
		if end := bytes.IndexByte(v, '"'); end >= 0 {
			v = v[:end]
		}
		for _, t := range externalTypes {
			if bytes.Equal(v, t) {
				return true
			}
		}
		for _, p := range externalTypePrefixes {
			if bytes.HasPrefix(v, p) {
				return true
			}
		}
	}
	for b := body; ; {
		i := bytes.Index(b, escapePrefix)
		if i < 0 || i+len(escapePrefix) >= len(b) {
			return false
		}
		if c := b[i+len(escapePrefix)]; c >= '4' && c <= '7' {
			return true
		}
		b = b[i+len(escapePrefix):]
	}
}

// isKeyAt reports whether the literal lit occurs in body followed by a ':'.
func isKeyAt(body, lit []byte) bool {
	for b := body; ; {
		i := bytes.Index(b, lit)
		if i < 0 {
			return false
		}
		b = b[i+len(lit):]
		if j := jsonscan.SkipSpace(b, 0); j < len(b) && b[j] == ':' {
			return true
		}
	}
}

var escapePrefix = []byte(`\u00`)

// field reads one top-level member whose value is body[start:end].
func (r *Request) field(key, body []byte, start, end int) ([]byte, error) {
	switch {
	case bytes.Equal(key, keyModel):
		if r.nModels == maxModelKeys {
			return nil, ErrRepeatedModel
		}
		r.models[r.nModels] = [2]int{start, end}
		r.nModels++
	case bytes.Equal(key, keyStream):
		switch body[start] {
		case 't':
			r.Stream = true
		case 'f', 'n':
		default:
			return body[start:end], ErrStreamNotBool
		}
	case bytes.Equal(key, keyMaxTokens):
		v, ok := parseCount(b2s(body[start:end]))
		if !ok || v > maxTokensCount {
			return body[start:end], ErrMaxTokens
		}
		r.MaxTokens = v
		r.MaxTokensBound = max(r.MaxTokensBound, v)
	default:
		if k := variantOf(key, readKeys[:]...); k != nil {
			return k, ErrAmbiguousKey
		}
	}
	return nil, nil
}

// ModelRepeated reports whether the body has more than one model key.
func (r *Request) ModelRepeated() bool { return r.nModels > 1 }

// AppendRenamed appends body, the one r was parsed from, to dst with every
// model value replaced by quoted (a JSON string literal, quotes included).
func (r *Request) AppendRenamed(dst, body, quoted []byte) []byte {
	last := 0
	for _, m := range r.models[:r.nModels] {
		dst = append(dst, body[last:m[0]]...)
		dst = append(dst, quoted...)
		last = m[1]
	}
	return append(dst, body[last:]...)
}

// keyBufLen bounds the decoded length of an escaped key compared with the
// keys the gateway reads; a longer one cannot be one of them.
const keyBufLen = 32

// keyName returns the name of the key whose string literal is lit: the bytes
// between its quotes or, when it has escapes, those decoded into buf (a
// decoded name longer than buf cannot be a key the gateway reads). An
// escaped key ("mod\u0065l") means "model" to every upstream, so it must
// here too. ok is false for an escape JSON does not define.
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

// variantOf returns the key of keys that name is not but that Go's
// encoding/json would read it as (case-insensitive under Unicode simple
// folding: "Model", "max_tokenſ"), where Python's json compares exactly;
// nil when there is none.
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

// skipSpace is jsonscan.SkipSpace kept in bounds: valid JSON never ends
// where a token is expected, and the clamp keeps that true of anything else.
func skipSpace(b []byte, i int) int { return min(jsonscan.SkipSpace(b, i), len(b)-1) }
