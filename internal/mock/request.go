package mock

import (
	"github.com/bytedance/sonic"

	"github.com/tokenhub/tokenhub/internal/jsonscan"
)

// request holds what the mock reads from a request body. Byte slices point
// into the body and are valid only while the handler runs.
type request struct {
	model        []byte // the model's JSON string literal, quotes included, echoed as is
	stream       bool
	includeUsage bool // stream_options.include_usage
	maxTokens    int  // max_tokens or max_completion_tokens; 0 when absent
	n            int  // choices per prompt
	bestOf       int  // legacy completions: completions generated per prompt, billed, of which n are returned
	prompts      int  // legacy completions: how many prompts (one choice each, times n)
	promptTokens int  // the deterministic estimate reported as usage.prompt_tokens
	input        []byte
	base64       bool
	dims         int
	// The Responses API's fields, echoed in its answer as JSON literals
	// (nil when absent): max_output_tokens is read into maxTokens.
	instructions       []byte
	previousResponseID []byte
	store              bool
}

// parse reads r from body for endpoint ep. It returns the error to answer, or nil.
func (r *request) parse(body []byte, ep endpoint, defaultDims int) *apiError {
	*r = request{n: 1, prompts: 1, dims: defaultDims, store: true}
	// A repeated key overwrites what an earlier one set (null included), as
	// in the providers' parsers, where the last of repeated keys wins.
	// Validation first, with sonic's SIMD validator, so the scanners may assume
	// well-formed JSON.
	if !sonic.Valid(body) {
		return errMalformedJSON
	}
	i := jsonscan.SkipSpace(body, 0)
	if body[i] != '{' {
		return errNotObject
	}
	var prompt []byte
	messages := -1 // where the messages array starts, once read
	var messagesErr *apiError
	m := newMembers(body, i)
	for {
		key, ok := m.next()
		if !ok {
			break
		}
		switch string(key) {
		case "model":
			switch val := m.value(); {
			case val[0] == 'n': // null: as if absent
				r.model = nil
			case val[0] != '"':
				return errModelNotString
			case len(val) > 2:
				r.model = val
			}
		case "stream":
			r.stream = m.value()[0] == 't'
		case "stream_options":
			r.includeUsage = false
			so := newMembers(body, m.val)
			for {
				k, ok := so.next()
				if !ok {
					break
				}
				if string(k) == "include_usage" {
					r.includeUsage = so.value()[0] == 't'
				}
			}
			m.consumed(so.end())
		case "max_output_tokens":
			if ep != epResponses {
				break
			}
			n, e := intParam(m.value(), minOutputTokens, maxInt, errBadMaxOutputTokens)
			if e != nil {
				return e
			}
			r.maxTokens = n
		case "instructions":
			r.instructions = nullAsNil(m.value())
		case "previous_response_id":
			r.previousResponseID = nullAsNil(m.value())
		case "store":
			r.store = m.value()[0] != 'f'
		case "max_tokens", "max_completion_tokens":
			if ep == epResponses {
				break
			}
			n, e := intParam(m.value(), 1, maxInt, errBadMaxTokens)
			if e != nil {
				if key[3] == 'c' {
					e = errBadMaxCompletionTokens
				}
				return e
			}
			r.maxTokens = n
		case "n":
			n, e := intParam(m.value(), 1, maxChoices, errBadN)
			if e != nil {
				return e
			}
			r.n = max(n, 1)
		case "best_of":
			n, e := intParam(m.value(), 1, maxChoices, errBadBestOf)
			if e != nil {
				return e
			}
			r.bestOf = n
		case "messages":
			if ep != epChat {
				break
			}
			messages, messagesErr = m.val, nil
			end, e := r.parseMessages(body, m.val)
			if e != nil {
				// Reported after the model, as OpenAI checks that first.
				messagesErr, end = e, jsonscan.SkipValue(body, m.val)
			}
			m.consumed(end)
		case "prompt":
			prompt = m.value()
		case "input":
			r.input = m.value()
		case "encoding_format":
			switch string(m.value()) {
			case `"float"`, "null":
				r.base64 = false
			case `"base64"`:
				r.base64 = true
			default:
				return errBadEncodingFormat
			}
		case "dimensions":
			n, e := intParam(m.value(), 1, maxEmbeddingDims, errBadDimensions)
			if e != nil {
				return e
			}
			r.dims = defaultDims
			if n > 0 {
				r.dims = n
			}
		}
	}
	if r.model == nil {
		return errMissingModel
	}
	switch ep {
	case epChat:
		if messages < 0 {
			return errMissingMessages
		}
		return messagesErr
	case epCompletions:
		if prompt == nil {
			return errMissingPrompt
		}
		items, tokens, ok := countInputs(prompt)
		if !ok {
			return errBadPrompt
		}
		r.prompts, r.promptTokens = max(items, 1), tokens
		if r.bestOf == 0 {
			r.bestOf = r.n
		}
		if r.bestOf < r.n {
			return errBestOfBelowN
		}
		if r.prompts*r.bestOf > maxChoices {
			return errTooManyChoices
		}
	case epEmbeddings:
		if r.input == nil {
			return errMissingInput
		}
		items, tokens, ok := countInputs(r.input)
		if !ok || items == 0 {
			return errBadInput
		}
		if items > maxInputs {
			return errTooManyInputs
		}
		if items*r.dims > maxEmbeddingValues {
			return errEmbeddingsTooLarge
		}
		r.promptTokens = tokens
	case epResponses:
		// A quarter of the bytes of the input's text and the instructions,
		// rounded up; of an array of input items, its JSON's bytes.
		r.promptTokens = (textLen(r.input)+3)/4 + (textLen(r.instructions)+3)/4
	}
	return nil
}

// textLen is the length of the string v, a JSON value, or of v itself
// when it is not a string; 0 for nil.
func textLen(v []byte) int {
	if v == nil {
		return 0
	}
	if n, ok := stringLen(v); ok {
		return n
	}
	return len(v)
}

// nullAsNil returns v, a JSON value, or nil for null.
func nullAsNil(v []byte) []byte {
	if v[0] == 'n' {
		return nil
	}
	return v
}

// generated is how many completions the request makes the upstream generate,
// and bill, for what it returns: best_of per prompt for legacy completions.
func (r *request) generated() int {
	return r.prompts * max(r.n, r.bestOf)
}

// parseMessages checks the chat messages array at body[i] and estimates its
// tokens as ceil(content bytes / 4) + 3 per message, the per-message overhead
// of OpenAI's own token-counting guide. Text parts of array contents count
// too. It returns the index just past the array.
func (r *request) parseMessages(body []byte, i int) (int, *apiError) {
	if body[i] != '[' {
		return 0, errMessagesNotArray
	}
	count, contentBytes := 0, 0
	els := newElements(body, i)
	for {
		msg, ok := els.next()
		if !ok {
			break
		}
		if body[msg] != '{' {
			return 0, errMessagesNotArray
		}
		count++
		fields := newMembers(body, msg)
		for {
			k, ok := fields.next()
			if !ok {
				break
			}
			if string(k) == "content" {
				n, end := contentLen(body, fields.val)
				contentBytes += n
				fields.consumed(end)
			}
		}
		els.consumed(fields.end())
	}
	if count == 0 {
		return 0, errEmptyMessages
	}
	r.promptTokens = (contentBytes+3)/4 + 3*count
	return els.end(), nil
}

// contentLen returns the text length of the message content at body[i] (a
// string, or an array of parts whose "text" fields count) and the index just
// past it.
func contentLen(body []byte, i int) (n, end int) {
	switch body[i] {
	case '"':
		end = jsonscan.SkipString(body, i)
		return end - i - 2, end
	case '[':
	default:
		return 0, jsonscan.SkipValue(body, i)
	}
	parts := newElements(body, i)
	for {
		part, ok := parts.next()
		if !ok {
			return n, parts.end()
		}
		fields := newMembers(body, part)
		for {
			k, ok := fields.next()
			if !ok {
				break
			}
			if string(k) == "text" {
				if l, ok := stringLen(fields.value()); ok {
					n += l
				}
			}
		}
		parts.consumed(fields.end())
	}
}

// intParam reads an optional integer parameter in [lo, hi]; null reads as 0.
func intParam(v []byte, lo, hi int, bad *apiError) (int, *apiError) {
	if v[0] == 'n' {
		return 0, nil
	}
	n, ok := parseInt(v)
	if !ok || n < lo || n > hi {
		return 0, bad
	}
	return n, nil
}

// countInputs reads a prompt or embedding input, which OpenAI accepts as a
// string, an array of strings, an array of token ids, or an array of token-id
// arrays. It returns how many separate inputs it holds and the estimated
// tokens: a quarter of a string's bytes, rounded up, or the count of ids.
func countInputs(v []byte) (items, tokens int, ok bool) {
	if n, ok := stringLen(v); ok {
		return 1, (n + 3) / 4, true
	}
	if v[0] != '[' {
		return 0, 0, false
	}
	if isTokenArray(v) {
		return 1, countElements(v), true
	}
	els := newElements(v, 0)
	for {
		at, ok := els.next()
		if !ok {
			return items, tokens, true
		}
		switch el := els.value(); {
		case v[at] == '"':
			n, _ := stringLen(el)
			tokens += (n + 3) / 4
		case v[at] == '[':
			if countElements(el) > 0 && !isTokenArray(el) {
				return 0, 0, false
			}
			tokens += countElements(el)
		default:
			return 0, 0, false
		}
		items++
	}
}

// isTokenArray reports whether the array v starts with a number, which makes
// it one input of token ids rather than a list of inputs.
func isTokenArray(v []byte) bool {
	els := newElements(v, 0)
	at, ok := els.next()
	return ok && (v[at] == '-' || v[at] >= '0' && v[at] <= '9')
}

func countElements(v []byte) int {
	n := 0
	els := newElements(v, 0)
	for {
		if _, ok := els.next(); !ok {
			return n
		}
		n++
	}
}
