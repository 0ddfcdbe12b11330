package mock

import (
	"bytes"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/internal/jsonscan"
)

// POST /v1/responses/compact, as OpenAI serves it: a conversation (input,
// instructions, and the stored response previous_response_id names)
// compacted into its user messages followed by one compaction item, with the
// usage of the pass: the conversation's tokens as input, the compaction's as
// output.

// compactParams are the only body fields a compaction takes; OpenAI refuses
// any other as an unknown parameter.
var compactParams = [...]string{"model", "input", "instructions", "previous_response_id",
	"prompt_cache_key", "prompt_cache_options", "prompt_cache_retention", "service_tier"}

var pathCompact = []byte("compact")

// compactionTokens is the output a compaction of prompt tokens reports: an
// eighth of them, at least 16.
func compactionTokens(prompt int) int { return max(16, prompt/8) }

func (s *Server) compact(ctx *fasthttp.RequestCtx) {
	body := ctx.PostBody()
	var r request
	if e := r.parse(body, epResponses, s.opts.EmbeddingDims); e != nil {
		writeError(ctx, e)
		return
	}
	if !compactParamsKnown(ctx, body) {
		return
	}
	if r.input == nil && r.previousResponseID == nil {
		writeError(ctx, errMissingInput)
		return
	}
	prompt := r.promptTokens
	if r.previousResponseID != nil {
		// What it continues is compacted too.
		sl := s.lookup(ctx, bytes.Trim(r.previousResponseID, `"`))
		if sl == nil {
			return
		}
		prompt += sl.prompt + sl.output
		s.slots.Put(sl)
	}
	seq := s.ids.Add(1)
	rs := response{seq: seq, prompt: prompt, output: compactionTokens(prompt) + s.opts.OverReportTokens}
	buf := s.getBuffer()
	b := append(buf.b[:0], `{"id":"cmp_mock`...)
	b = appendSeq(b, seq)
	b = append(b, `","object":"response.compaction","created_at":`...)
	b = strconv.AppendInt(b, time.Now().Unix(), 10)
	b = append(b, `,"output":[`...)
	b = appendUserMessages(b, r.input, seq)
	b = append(b, `{"id":"cmp_mockitem`...)
	b = appendSeq(b, seq)
	b = append(b, `","type":"compaction","encrypted_content":"bW9jayBjb21wYWN0aW9u"}],"usage":`...)
	b = rs.appendUsage(b)
	b = append(b, '}')
	ctx.SetContentTypeBytes(contentTypeJSON)
	ctx.SetBody(b)
	buf.b = b
	s.putBuffer(buf)
}

// appendUserMessages appends, each followed by a comma, the user messages
// of input (a JSON value, nil when absent): a string is one, with that
// text; of an array, its items whose role is user, as they were sent.
func appendUserMessages(b, input []byte, seq uint64) []byte {
	switch {
	case len(input) > 0 && input[0] == '"':
		b = append(b, `{"id":"msg_mockin`...)
		b = appendSeq(b, seq)
		b = append(b, `","type":"message","role":"user","status":"completed","content":[{"type":"input_text","text":`...)
		b = append(b, input...)
		return append(b, `}]},`...)
	case len(input) > 0 && input[0] == '[':
		els := newElements(input, 0)
		for {
			start, ok := els.next()
			if !ok {
				break
			}
			item := els.value()
			if isUserItem(input, start) {
				b = append(append(b, item...), ',')
			}
		}
	}
	return b
}

// isUserItem reports whether the array element at b[i] is an object whose
// role is "user".
func isUserItem(b []byte, i int) bool {
	m := newMembers(b, i)
	user := false
	for {
		key, ok := m.next()
		if !ok {
			return user
		}
		if string(key) == "role" {
			user = string(m.value()) == `"user"`
		}
	}
}

// compactParamsKnown reports whether every top-level key of body, a JSON
// object, is one a compaction takes; else it answers the first that is not.
// (It answers rather than return the key, which may point into the
// scanner's own buffer: returned, that would move to the heap.)
func compactParamsKnown(ctx *fasthttp.RequestCtx, body []byte) bool {
	m := newMembers(body, jsonscan.SkipSpace(body, 0))
	for {
		key, ok := m.next()
		if !ok {
			return true
		}
		known := false
		for _, p := range compactParams {
			known = known || string(key) == p
		}
		if !known {
			writeUnknownParameter(ctx, key)
			return false
		}
	}
}

// writeUnknownParameter answers OpenAI's 400 for a body field the endpoint
// does not take.
func writeUnknownParameter(ctx *fasthttp.RequestCtx, key []byte) {
	var scratch [512]byte
	key = key[:min(len(key), 128)]
	b := append(scratch[:0], `{"error":{"message":"Unknown parameter: '`...)
	b = appendEscaped(b, key)
	b = append(b, `'.","type":"invalid_request_error","param":"`...)
	b = appendEscaped(b, key)
	b = append(b, `","code":"unknown_parameter"}}`...)
	writeErrorBody(ctx, fasthttp.StatusBadRequest, b)
}
